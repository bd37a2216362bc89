//! Batch mixing for clean training: MixUp (Zhang et al., ICLR 2018) and CutMix (Yun et al.,
//! ICCV 2019), as torchvision's `transforms.v2.MixUp` / `CutMix`: one `lam ~ Beta(alpha,
//! alpha)` per batch, each image mixed with the one before it in the batch (`roll(1, 0)`).
//! With both on, each batch takes one of the two with probability 1/2 (torchvision's
//! `RandomChoice`, timm's `switch_prob`). The loss is `lam * CE(z, y) + (1 - lam) *
//! CE(z, roll(y))` ([`super::loss::mixed_cross_entropy`]).

use crate::util::rng::SplitMix64;

use super::config::AugmentationSection;

/// One batch's mixing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// The weight of each image's own label; `1 - lam` goes to the label of the image before it.
    pub lam: f32,
    /// CutMix's pasted box `[x1, y1, x2, y2]` (pixels, end exclusive); `None` for MixUp.
    pub cut: Option<[usize; 4]>,
}

impl Mix {
    /// The mixing of one batch of `height` x `width` images, drawn from `rng`; `None` when both
    /// alphas are 0.
    pub fn draw(
        aug: &AugmentationSection,
        height: usize,
        width: usize,
        rng: &mut SplitMix64,
    ) -> Option<Self> {
        let (mixup, cutmix) = (f64::from(aug.mixup_alpha), f64::from(aug.cutmix_alpha));
        let use_cutmix = match (mixup > 0.0, cutmix > 0.0) {
            (false, false) => return None,
            (true, true) => rng.next_f32() >= 0.5,
            (_, c) => c,
        };
        if use_cutmix {
            let lam = sample_beta(cutmix, rng);
            let rx = (rng.next_u64() % width as u64) as usize;
            let ry = (rng.next_u64() % height as u64) as usize;
            Some(Self::cutmix(lam, rx, ry, height, width))
        } else {
            Some(Self {
                lam: sample_beta(mixup, rng) as f32,
                cut: None,
            })
        }
    }

    /// CutMix's box for `lam` centred at (`rx`, `ry`), and `lam` adjusted to the box's clipped
    /// area (torchvision `v2.CutMix._transform`).
    pub fn cutmix(lam: f64, rx: usize, ry: usize, height: usize, width: usize) -> Self {
        let r = 0.5 * (1.0 - lam).sqrt();
        let half_w = (r * width as f64) as usize;
        let half_h = (r * height as f64) as usize;
        let x1 = rx.saturating_sub(half_w);
        let y1 = ry.saturating_sub(half_h);
        let x2 = (rx + half_w).min(width);
        let y2 = (ry + half_h).min(height);
        let area = ((x2 - x1) * (y2 - y1)) as f64 / (width * height) as f64;
        Self {
            lam: (1.0 - area) as f32,
            cut: Some([x1, y1, x2, y2]),
        }
    }

    /// `pixels` (`[b, C, H, W]` = `shape`, row-major) mixed: each image with the one before it.
    pub fn apply(&self, pixels: &[f32], shape: [usize; 4]) -> Vec<f32> {
        let [b, c, h, w] = shape;
        let image = c * h * w;
        let rolled = |i: usize| (i + b - 1) % b;
        let mut out = pixels.to_vec();
        match self.cut {
            None => {
                let lam = self.lam;
                for i in 0..b {
                    let (own, other) = (i * image, rolled(i) * image);
                    for k in 0..image {
                        out[own + k] = lam * pixels[own + k] + (1.0 - lam) * pixels[other + k];
                    }
                }
            }
            Some([x1, y1, x2, y2]) => {
                for i in 0..b {
                    for ch in 0..c {
                        for y in y1..y2 {
                            let row = y * w;
                            let own = (i * c + ch) * h * w + row;
                            let other = (rolled(i) * c + ch) * h * w + row;
                            out[own + x1..own + x2]
                                .copy_from_slice(&pixels[other + x1..other + x2]);
                        }
                    }
                }
            }
        }
        out
    }
}

/// Each label's partner in a mixed batch: the label of the image before it (`roll(1, 0)`).
pub fn rolled<T: Clone>(v: &[T]) -> Vec<T> {
    let b = v.len();
    (0..b).map(|i| v[(i + b - 1) % b].clone()).collect()
}

/// `Beta(alpha, alpha)`: `G1 / (G1 + G2)` of two `Gamma(alpha, 1)` draws.
pub fn sample_beta(alpha: f64, rng: &mut SplitMix64) -> f64 {
    let g1 = sample_gamma(alpha, rng);
    let g2 = sample_gamma(alpha, rng);
    if g1 + g2 > 0.0 { g1 / (g1 + g2) } else { 0.5 }
}

/// `Gamma(shape, 1)`, Marsaglia and Tsang (2000); for `shape < 1`, `Gamma(shape + 1) *
/// U^(1 / shape)`.
fn sample_gamma(shape: f64, rng: &mut SplitMix64) -> f64 {
    // Uniform in (0, 1]: the logarithm below needs it above 0.
    let uniform = |rng: &mut SplitMix64| 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    if shape < 1.0 {
        let u = uniform(rng);
        return sample_gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = f64::from(rng.next_normal());
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = uniform(rng);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::tensor::{Device, Tensor, TensorData};
    use serde_json::Value;

    use crate::train::loss::mixed_cross_entropy;

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    fn usizes(v: &Value) -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    }

    /// `tests/fixtures/mix_torchvision.json` (`tools/make_mix_fixture.py`, torch 2.15,
    /// torchvision 0.29): torchvision's MixUp and CutMix on a [3, 2, 4, 6] batch, their draws,
    /// outputs, and the cross-entropy against their soft labels.
    #[test]
    fn mixup_and_cutmix_match_torchvision() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/mix_torchvision.json"
        );
        let f: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let x = floats(&f["input"]);
        let s = usizes(&f["shape"]);
        let shape = [s[0], s[1], s[2], s[3]];
        let labels = usizes(&f["labels"]);
        let device = Device::flex();
        let logits = TensorData::new(floats(&f["logits"]), [labels.len(), 3]);
        let cases = f["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let lam = case["lam"].as_f64().unwrap();
            let mix = match case["kind"].as_str().unwrap() {
                "mixup" => Mix {
                    lam: lam as f32,
                    cut: None,
                },
                _ => {
                    let rx = case["rx"].as_u64().unwrap() as usize;
                    let ry = case["ry"].as_u64().unwrap() as usize;
                    let m = Mix::cutmix(lam, rx, ry, shape[2], shape[3]);
                    let want = case["lam_adjusted"].as_f64().unwrap() as f32;
                    assert!((m.lam - want).abs() < 1e-6, "{case:?}: lam {}", m.lam);
                    m
                }
            };
            let got = mix.apply(&x, shape);
            let want = floats(&case["output"]);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-6, "{} [{i}]: {g} vs {w}", case["kind"]);
            }
            let z = Tensor::<2>::from_data(logits.clone(), &device);
            let ce = mixed_cross_entropy(z, &labels, mix.lam, None, 0.0)
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap()[0];
            let want = case["cross_entropy"].as_f64().unwrap() as f32;
            assert!(
                (ce - want).abs() < 1e-5,
                "{}: CE {ce} vs {want}",
                case["kind"]
            );
        }
    }

    #[test]
    fn beta_draws_have_the_beta_mean_and_variance() {
        for alpha in [0.2, 1.0, 2.5] {
            let mut rng = SplitMix64::new(7);
            let n = 40_000;
            let v: Vec<f64> = (0..n).map(|_| sample_beta(alpha, &mut rng)).collect();
            assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            // Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
            let want = 1.0 / (4.0 * (2.0 * alpha + 1.0));
            assert!((mean - 0.5).abs() < 0.01, "alpha {alpha}: mean {mean}");
            assert!(
                (var - want).abs() < 0.01 * want.max(0.1),
                "alpha {alpha}: var {var} vs {want}"
            );
        }
    }

    #[test]
    fn rolled_pairs_each_item_with_the_one_before() {
        assert_eq!(rolled(&[0, 1, 2, 3]), vec![3, 0, 1, 2]);
        assert_eq!(rolled(&[5]), vec![5]);
    }

    #[test]
    fn draw_is_none_without_alphas_and_picks_both_kinds_with_both() {
        let mut aug = AugmentationSection::default();
        let mut rng = SplitMix64::new(1);
        assert_eq!(Mix::draw(&aug, 8, 8, &mut rng), None);
        aug.mixup_alpha = 0.2;
        aug.cutmix_alpha = 1.0;
        let kinds: Vec<bool> = (0..200)
            .map(|_| {
                Mix::draw(&aug, 8, 8, &mut rng)
                    .map(|m| m.cut.is_some())
                    .unwrap()
            })
            .collect();
        let cut = kinds.iter().filter(|&&c| c).count();
        assert!((70..=130).contains(&cut), "{cut} of 200 CutMix");
        aug.cutmix_alpha = 0.0;
        assert!((0..50).all(|_| Mix::draw(&aug, 8, 8, &mut rng).unwrap().cut.is_none()));
    }
}
