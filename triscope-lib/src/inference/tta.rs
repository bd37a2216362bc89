//! Test-time augmentation: a model's probabilities averaged over the eight symmetries of the
//! square (four quarter turns, each mirrored), as the ISIC challenge entries averaged flips and
//! rotations. Dermoscopy has no up or down, so every view is a photograph the clinic could have
//! taken; a chest radiograph has both, so this is for dermoscopy models.
//!
//! [`Dihedral`] is itself a [`Classify`]: its logits are the log of the mean probability (a
//! softmax of them gives the mean of the views' softmaxes), differentiable, so an attack or an
//! evaluation run against it measures the averaged model, not the single view.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, sigmoid};

use crate::attack::Classify;
use crate::model::ResNet50;

/// The number of views.
pub const VIEWS: usize = 8;

/// The eight views of a batch of square images, view-major: `[b, C, S, S]` -> `[8b, C, S, S]`,
/// the identity first, then the turns by 90, 180 and 270 degrees, then those four mirrored
/// left to right.
pub fn dihedral_views(x: Tensor<4>) -> Tensor<4> {
    // A quarter turn counter-clockwise: transpose, then flip the rows.
    let turn = |t: Tensor<4>| t.swap_dims(2, 3).flip([2]);
    let r0 = x;
    let r1 = turn(r0.clone());
    let r2 = turn(r1.clone());
    let r3 = turn(r2.clone());
    let turns = [r0, r1, r2, r3];
    let mirrored: Vec<Tensor<4>> = turns.iter().map(|t| t.clone().flip([3])).collect();
    Tensor::cat(turns.into_iter().chain(mirrored).collect(), 0)
}

/// A ResNet-50 whose answer is the mean over [`dihedral_views`] of its probabilities.
pub struct Dihedral<'a> {
    pub model: &'a ResNet50,
}

impl Classify for Dihedral<'_> {
    /// `[b, C, S, S]` -> `[b, classes]`: log of the mean softmax (single-label) or the logit of
    /// the mean sigmoid (multi-label).
    fn logits(&self, pixels: Tensor<4>) -> Tensor<2> {
        let [b, _, h, w] = pixels.dims();
        debug_assert_eq!(h, w, "quarter turns need square inputs");
        let k = self.model.config.num_classes;
        let z = self
            .model
            .forward(dihedral_views(pixels))
            .reshape([VIEWS, b, k]); // [8, b, k]
        if self.model.config.multi_label {
            let p = sigmoid(z)
                .mean_dim(0)
                .reshape([b, k])
                .clamp(1e-7, 1.0 - 1e-7); // [b, k]
            return p.clone().log() - p.neg().add_scalar(1.0).log();
        }
        // log mean_v softmax(z_v) = logsumexp_v(log_softmax(z_v)) - ln 8, shifted by the
        // (constant) maximum for stability.
        let l = log_softmax(z, 2); // [8, b, k]
        let top = l.clone().max_dim(0).detach(); // [1, b, k]
        let lse = (l - top.clone()).exp().sum_dim(0).log() + top; // [1, b, k]
        lse.reshape([b, k]).sub_scalar((VIEWS as f32).ln())
    }

    fn num_classes(&self) -> usize {
        self.model.config.num_classes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test's panic is its failure report
mod tests {
    use burn::module::Module;
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::model::ModelConfig;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.inner().into_data().try_into_vec_as::<f32>().unwrap()
    }

    fn model(multi_label: bool) -> ResNet50 {
        let mut config = ModelConfig::generic(if multi_label { 14 } else { 7 }, 3);
        config.base_width = 4;
        config.resolution = 32;
        config.multi_label = multi_label;
        ResNet50::init(&config, 7, &Device::flex()).unwrap().valid()
    }

    fn image(seed: u64) -> Tensor<4> {
        let mut rng = crate::util::rng::SplitMix64::new(seed);
        let v: Vec<f32> = (0..2 * 3 * 32 * 32).map(|_| rng.next_f32()).collect();
        Tensor::from_data(TensorData::new(v, [2, 3, 32, 32]), &Device::flex())
    }

    #[test]
    fn the_eight_views_by_hand() {
        // [[a, b], [c, d]] with a..d = 1..4.
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2., 3., 4.], [1, 1, 2, 2]),
            &Device::flex(),
        );
        let got = values(dihedral_views(x));
        let want = [
            [1., 2., 3., 4.], // identity
            [2., 4., 1., 3.], // 90 degrees counter-clockwise
            [4., 3., 2., 1.], // 180
            [3., 1., 4., 2.], // 270
            [2., 1., 4., 3.], // mirrored
            [4., 2., 3., 1.],
            [3., 4., 1., 2.],
            [1., 3., 2., 4.],
        ];
        assert_eq!(got, want.concat());
    }

    #[test]
    fn probabilities_are_the_mean_over_the_views_and_turns_change_nothing() {
        for multi_label in [false, true] {
            let m = model(multi_label);
            let x = image(3);
            let tta = Dihedral { model: &m };
            let probs = |z: Tensor<2>| {
                if multi_label {
                    values(sigmoid(z))
                } else {
                    values(burn::tensor::activation::softmax(z, 1))
                }
            };
            let k = m.config.num_classes;
            let got = probs(tta.logits(x.clone())); // [2 * k]
            // Each view on its own, through the plain model.
            let views = dihedral_views(x.clone());
            let mut want = vec![0.0f32; 2 * k];
            for v in 0..VIEWS {
                let view = views.clone().slice([v * 2..v * 2 + 2, 0..3, 0..32, 0..32]);
                for (w, p) in want.iter_mut().zip(probs(m.forward(view))) {
                    *w += p / VIEWS as f32;
                }
            }
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{multi_label}: {got:?} vs {want:?}");
            }
            // A turned or mirrored image has the same eight views, so the same answer; the
            // single view does not.
            let turned = x.clone().swap_dims(2, 3).flip([3]);
            let again = probs(tta.logits(turned.clone()));
            let d = got
                .iter()
                .zip(&again)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(d < 1e-5, "{multi_label}: turned image differs by {d}");
            let single = probs(m.forward(x.clone()))
                .iter()
                .zip(probs(m.forward(turned)))
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(single > 1e-5, "the plain model is not invariant ({single})");
        }
    }
}
