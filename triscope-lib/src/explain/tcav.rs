//! Testing with Concept Activation Vectors (Kim et al., ICML 2018).
//!
//! A concept is a set of images (a folder). For a layer, a linear classifier separates the
//! concept's activations from those of a random image set; its unit normal pointing towards
//! the concept is the CAV. The TCAV score of a class is the share of that class's images whose
//! class logit increases along the CAV (positive directional derivative
//! `d logit_k / d activation . cav`). The test repeats this against several random sets and
//! compares the scores with those of random-vs-random CAVs by a two-sided Student t-test:
//! a concept matters to a class only when its scores differ significantly from chance.
//!
//! The classifier is an L2-regularised logistic regression trained by full-batch gradient
//! descent in f64 on activations centred on their mean and scaled to unit mean norm (a shift
//! and a uniform scale, so the direction is unchanged), with a third of the samples held out
//! to report the CAV's accuracy.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::io::imaging::PixelImage;
use crate::model::{LayerId, ResNet50};
use crate::util::rng::SplitMix64;
use crate::util::stats::{mean_std, ttest_ind};

/// A concept activation vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cav {
    /// Unit vector in activation space pointing towards the concept.
    #[serde(skip)]
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub direction: Vec<f64>,
    /// Accuracy of the linear classifier on the held-out third.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub accuracy: f64,
}

/// Train a CAV separating `concept` from `random` (flattened activations of equal length).
pub fn train_cav(concept: &[Vec<f32>], random: &[Vec<f32>], seed: u64) -> Result<Cav> {
    if concept.len() < 2 || random.len() < 2 {
        return Err(TriscopeError::InvalidArgument(format!(
            "a CAV needs at least 2 concept and 2 random examples (got {} and {})",
            concept.len(),
            random.len()
        )));
    }
    let dim = concept[0].len();
    if concept.iter().chain(random).any(|v| v.len() != dim) {
        return Err(TriscopeError::InvalidArgument(
            "activations of different lengths".into(),
        ));
    }
    let mut samples: Vec<(&[f32], f64)> = concept
        .iter()
        .map(|v| (v.as_slice(), 1.0))
        .chain(random.iter().map(|v| (v.as_slice(), 0.0)))
        .collect();
    // Seeded Fisher-Yates, then a stratified hold-out: every third sample of each label.
    let mut rng = SplitMix64::new(seed);
    for i in (1..samples.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        samples.swap(i, j);
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut seen = [0usize; 2];
    for s in samples {
        let k = s.1 as usize;
        seen[k] += 1;
        if seen[k] % 3 == 0 {
            test.push(s);
        } else {
            train.push(s);
        }
    }
    let features = Standardiser::fit(train.iter().map(|(v, _)| *v), dim);
    let x: Vec<Vec<f64>> = train.iter().map(|(v, _)| features.apply(v)).collect();
    let y: Vec<f64> = train.iter().map(|(_, y)| *y).collect();
    let (w, b) = fit_logistic(&x, &y, &vec![1.0; y.len()], CAV_L2, CAV_ITERATIONS);
    let predict = |v: &[f32]| {
        let z: f64 = b + features
            .apply(v)
            .iter()
            .zip(&w)
            .map(|(a, wi)| a * wi)
            .sum::<f64>();
        if z > 0.0 { 1.0 } else { 0.0 }
    };
    let held = if test.is_empty() { &train } else { &test };
    let accuracy = held.iter().filter(|(v, y)| predict(v) == *y).count() as f64 / held.len() as f64;
    let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    let direction = if norm > 0.0 {
        w.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; dim]
    };
    Ok(Cav {
        direction,
        accuracy,
    })
}

/// L2 penalty and gradient-descent steps of the CAV's logistic regression.
const CAV_L2: f64 = 0.01;
const CAV_ITERATIONS: usize = 500;

/// Centre on the training mean and scale to unit mean norm: post-ReLU activations share a
/// large common component that would otherwise swamp a concept's direction under the L2
/// penalty. Both are absorbed by the bias, so a direction found on the standardised features
/// keeps its meaning in activation space.
struct Standardiser {
    centre: Vec<f64>,
    scale: f64,
}

impl Standardiser {
    fn fit<'a>(samples: impl Iterator<Item = &'a [f32]> + Clone, dim: usize) -> Self {
        let mut centre = vec![0.0f64; dim];
        let mut n = 0usize;
        for v in samples.clone() {
            for (c, &x) in centre.iter_mut().zip(v.iter()) {
                *c += x as f64;
            }
            n += 1;
        }
        centre.iter_mut().for_each(|c| *c /= n.max(1) as f64);
        let mean_norm = samples
            .map(|v| {
                v.iter()
                    .zip(&centre)
                    .map(|(&x, c)| (x as f64 - c).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .sum::<f64>()
            / n.max(1) as f64;
        let scale = if mean_norm > 0.0 {
            1.0 / mean_norm
        } else {
            1.0
        };
        Self { centre, scale }
    }

    fn apply(&self, v: &[f32]) -> Vec<f64> {
        v.iter()
            .zip(&self.centre)
            .map(|(&x, c)| (x as f64 - c) * self.scale)
            .collect()
    }
}

/// Minimise the `weights`-weighted mean logistic loss + `l2 / 2 * |w|^2` by gradient descent
/// from zero (step 1: the loss is 1/4-smooth on features of unit mean norm).
///
/// Run in the dual: every iterate of gradient descent from zero lies in the span of the
/// samples, `w = X^T a`, and the update `w -= step * (X^T r + l2 * w)` is `a -= step * (r +
/// l2 * a)`, so the iterations need only the `n x n` Gram matrix, not the `d`-wide features
/// (layer3 has 51,200 values per image at width 32 and 160 px; CAVs have a few dozen
/// images). The iterates are the primal ones, up to rounding.
pub(crate) fn fit_logistic(
    x: &[Vec<f64>],
    y: &[f64],
    weights: &[f64],
    l2: f64,
    iterations: usize,
) -> (Vec<f64>, f64) {
    let n = x.len();
    let dim = x.first().map(Vec::len).unwrap_or(0);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut gram = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let k = dot(&x[i], &x[j]);
            gram[i * n + j] = k;
            gram[j * n + i] = k;
        }
    }
    let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let step = 1.0;
    let mut a = vec![0.0f64; n];
    let mut b = 0.0f64;
    let mut r = vec![0.0f64; n];
    for _ in 0..iterations {
        let mut grad_b = 0.0;
        for i in 0..n {
            let z = b + dot(&gram[i * n..(i + 1) * n], &a);
            let p = 1.0 / (1.0 + (-z).exp());
            r[i] = weights[i] * (p - y[i]) / total;
            grad_b += r[i];
        }
        for (ai, ri) in a.iter_mut().zip(&r) {
            *ai -= step * (ri + l2 * *ai);
        }
        b -= step * grad_b;
    }
    let mut w = vec![0.0f64; dim];
    for (xi, ai) in x.iter().zip(&a) {
        for (wj, xij) in w.iter_mut().zip(xi) {
            *wj += ai * xij;
        }
    }
    (w, b)
}

/// Share of `gradients` (d logit / d activation, one per image) with a positive directional
/// derivative along the CAV.
pub fn tcav_score(gradients: &[Vec<f32>], cav: &Cav) -> f64 {
    if gradients.is_empty() {
        return f64::NAN;
    }
    let positive = gradients
        .iter()
        .filter(|g| {
            g.iter()
                .zip(&cav.direction)
                .map(|(&a, b)| a as f64 * b)
                .sum::<f64>()
                > 0.0
        })
        .count();
    positive as f64 / gradients.len() as f64
}

/// One concept against one class at one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcavResult {
    pub concept: String,
    pub layer: LayerId,
    pub class_name: String,
    /// Images of the class the scores are over.
    pub class_images: usize,
    /// TCAV score against each random set.
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub scores: Vec<f64>,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub mean: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub std: f64,
    /// Scores of random-vs-random CAVs (the null distribution).
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub random_scores: Vec<f64>,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub random_mean: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub t: f64,
    /// The t-test's two-sided p-value, for this test alone.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub p_value: f64,
    /// Holm-Bonferroni adjusted p-value over the family the result was reported in (every
    /// concept, layer and class of one audit; see [`adjust_for_multiple_tests`]).
    #[serde(default = "nan", deserialize_with = "crate::util::stats::f64_or_nan")]
    pub p_holm: f64,
    /// `p_holm < alpha`: significant with the family-wise error held at `alpha`.
    pub significant: bool,
    /// Held-out accuracy of each concept CAV.
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub cav_accuracies: Vec<f64>,
    /// Mean held-out accuracy of the random-vs-random CAVs (chance: 0.5).
    #[serde(default = "nan", deserialize_with = "crate::util::stats::f64_or_nan")]
    pub random_cav_accuracy: f64,
    /// The concept CAVs separate the concept from its counter-set on held-out images (mean
    /// accuracy at least [`MIN_CAV_ACCURACY`]); when not, the CAV is noise and its score says
    /// nothing, whatever its p-value.
    #[serde(default = "yes")]
    pub cav_separable: bool,
}

impl TcavResult {
    /// Mean held-out accuracy of the concept CAVs.
    pub fn cav_accuracy(&self) -> f64 {
        mean_std(&self.cav_accuracies).0
    }
}

/// Mean held-out accuracy a concept's CAVs need before their TCAV scores are read: with a
/// third of 2 x 30 or more images held out in each of 5 or more runs, chance (0.5) stays
/// below it by about two standard errors.
pub const MIN_CAV_ACCURACY: f64 = 0.6;

fn yes() -> bool {
    true
}

/// The TCAV test of one concept for several classes: `random_sets` holds `runs + 1` random
/// activation sets (run `r` trains concept-vs-set `r` and, for the null, set `r` vs set
/// `r + 1`); `class_gradients[k]` are the gradients of class `k`'s logit for its images.
pub fn tcav_test(
    concept: &str,
    layer: LayerId,
    concept_acts: &[Vec<f32>],
    random_sets: &[Vec<Vec<f32>>],
    class_gradients: &[(String, Vec<Vec<f32>>)],
    alpha: f64,
    seed: u64,
) -> Result<Vec<TcavResult>> {
    if random_sets.len() < 3 {
        return Err(TriscopeError::InvalidArgument(format!(
            "TCAV needs at least 2 runs (3 random sets), got {} random sets",
            random_sets.len()
        )));
    }
    let runs = random_sets.len() - 1;
    let mut cavs = Vec::with_capacity(runs);
    let mut nulls = Vec::with_capacity(runs);
    for r in 0..runs {
        cavs.push(train_cav(concept_acts, &random_sets[r], seed ^ r as u64)?);
        nulls.push(train_cav(
            &random_sets[r],
            &random_sets[r + 1],
            seed ^ (1000 + r as u64),
        )?);
    }
    score_cavs(concept, layer, &cavs, &nulls, class_gradients, alpha)
}

/// TCAV scores of trained CAVs (one per run) against the random-vs-random `nulls`, for each
/// class's logit gradients, with the t-test of the scores against the nulls' scores.
pub fn score_cavs(
    concept: &str,
    layer: LayerId,
    cavs: &[Cav],
    nulls: &[Cav],
    class_gradients: &[(String, Vec<Vec<f32>>)],
    alpha: f64,
) -> Result<Vec<TcavResult>> {
    if cavs.len() < 2 || nulls.len() < 2 {
        return Err(TriscopeError::InvalidArgument(format!(
            "TCAV needs at least 2 runs, got {} concept and {} random CAVs",
            cavs.len(),
            nulls.len()
        )));
    }
    let cav_accuracies: Vec<f64> = cavs.iter().map(|c| c.accuracy).collect();
    let (cav_accuracy, _) = mean_std(&cav_accuracies);
    let (random_cav_accuracy, _) = mean_std(&nulls.iter().map(|c| c.accuracy).collect::<Vec<_>>());
    Ok(class_gradients
        .iter()
        .map(|(class_name, grads)| {
            let scores: Vec<f64> = cavs.iter().map(|c| tcav_score(grads, c)).collect();
            let random_scores: Vec<f64> = nulls.iter().map(|c| tcav_score(grads, c)).collect();
            let (mean, std) = mean_std(&scores);
            let (random_mean, _) = mean_std(&random_scores);
            let (t, p_value) = ttest_ind(&scores, &random_scores);
            TcavResult {
                concept: concept.to_string(),
                layer,
                class_name: class_name.clone(),
                class_images: grads.len(),
                scores,
                mean,
                std,
                random_scores,
                random_mean,
                t,
                p_value,
                // A family of one until the caller adjusts over all its tests.
                p_holm: p_value,
                significant: p_value < alpha,
                cav_accuracies: cav_accuracies.clone(),
                random_cav_accuracy,
                cav_separable: cav_accuracy >= MIN_CAV_ACCURACY,
            }
        })
        .collect())
}

/// Adjust the p-values of `results` as one family (Holm-Bonferroni) and mark as significant
/// those whose adjusted p-value is below `alpha`. An audit tests every concept against every
/// class at every layer: at 28 tests and alpha 0.05 about one and a half would pass by chance.
pub fn adjust_for_multiple_tests(results: &mut [TcavResult], alpha: f64) {
    let p: Vec<f64> = results.iter().map(|r| r.p_value).collect();
    for (r, adjusted) in results.iter_mut().zip(crate::util::stats::holm_adjust(&p)) {
        r.p_holm = adjusted;
        r.significant = adjusted < alpha;
    }
}

fn nan() -> f64 {
    f64::NAN
}

/// Flattened activations of `layer` for each image (`[K * h * w]` each), in batches.
pub fn layer_activations(
    model: &ResNet50,
    device: &Device,
    images: &[PixelImage],
    layer: LayerId,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let x = stack(chunk, device)?;
        let taps = model.forward_taps(x, None);
        out.extend(crate::model::host::rows(
            taps.layers[layer.index()].clone(),
            "activations",
        )?);
    }
    Ok(out)
}

/// Gradients of `class`'s logit with respect to `layer`'s activations, one flattened
/// `[K * h * w]` vector per image.
pub fn layer_gradients(
    model: &ResNet50,
    device: &Device,
    images: &[PixelImage],
    layer: LayerId,
    class: usize,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    gradients_at(model, device, images, layer, class, batch_size, None)
}

/// One flattened vector per image.
pub type Rows = Vec<Vec<f32>>;

/// [`layer_gradients`] and the activations they are taken at, one `[K * h * w]` pair per
/// image, from the same forward pass.
pub fn layer_activations_and_gradients(
    model: &ResNet50,
    device: &Device,
    images: &[PixelImage],
    layer: LayerId,
    class: usize,
    batch_size: usize,
) -> Result<(Rows, Rows)> {
    let mut activations = Vec::with_capacity(images.len());
    let gradients = gradients_at(
        model,
        device,
        images,
        layer,
        class,
        batch_size,
        Some(&mut activations),
    )?;
    Ok((activations, gradients))
}

/// The gradients of [`layer_gradients`]; the activations too when `activations` is given
/// (TCAV's class images need only the gradients, and those are many).
fn gradients_at(
    model: &ResNet50,
    device: &Device,
    images: &[PixelImage],
    layer: LayerId,
    class: usize,
    batch_size: usize,
    mut activations: Option<&mut Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    let n = model.config.num_classes;
    if class >= n {
        return Err(TriscopeError::InvalidArgument(format!(
            "class {class} does not exist: the model has {n} classes"
        )));
    }
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let b = chunk.len();
        let x = stack(chunk, device)?;
        let taps = model.forward_taps(x, Some(layer));
        let mut one_hot = vec![0.0f32; b * n];
        for i in 0..b {
            one_hot[i * n + class] = 1.0;
        }
        let mask = Tensor::<2>::from_data(TensorData::new(one_hot, [b, n]), device);
        // Images are independent in eval mode: the batch sum gives each its own gradient.
        let grads = (taps.logits * mask).sum().backward();
        let tapped = taps.layers[layer.index()].clone(); // [b, K, h, w]
        let grad = tapped
            .grad(&grads)
            .ok_or_else(|| TriscopeError::Compute(format!("no gradient reached {layer}")))?; // [b, K, h, w]
        out.extend(crate::model::host::rows(grad, "gradients")?);
        if let Some(acts) = activations.as_deref_mut() {
            acts.extend(crate::model::host::rows(tapped.detach(), "activations")?);
        }
    }
    Ok(out)
}

fn stack(images: &[PixelImage], device: &Device) -> Result<Tensor<4>> {
    let first = images
        .first()
        .ok_or_else(|| TriscopeError::InvalidArgument("no images".into()))?;
    let (c, h, w) = (first.channels, first.height, first.width);
    let mut data = Vec::with_capacity(images.len() * c * h * w);
    for img in images {
        if (img.channels, img.height, img.width) != (c, h, w) {
            return Err(TriscopeError::InvalidArgument(
                "images of different sizes in one batch".into(),
            ));
        }
        data.extend_from_slice(&img.data);
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), c, h, w]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points around +/- `offset` along axis 0, noise elsewhere.
    fn cloud(n: usize, dim: usize, offset: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|d| rng.next_normal() * 0.5 + if d == 0 { offset } else { 0.0 })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn cav_points_at_the_separating_direction() {
        let concept = cloud(30, 8, 2.0, 1);
        let random = cloud(30, 8, -2.0, 2);
        let cav = train_cav(&concept, &random, 0).unwrap();
        assert!(cav.accuracy > 0.95, "{}", cav.accuracy);
        assert!(cav.direction[0] > 0.9, "{:?}", cav.direction);
        let norm: f64 = cav.direction.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-9);
        // Swapping the sets flips the vector.
        let flipped = train_cav(&random, &concept, 0).unwrap();
        assert!(flipped.direction[0] < -0.9);
    }

    #[test]
    fn held_out_accuracy_tells_a_separable_concept_from_one_that_is_not() {
        // Separable: the concept sits at +2 on axis 0, its counter-set at -2.
        let separable: Vec<Cav> = (0..5)
            .map(|r| train_cav(&cloud(40, 16, 2.0, r), &cloud(40, 16, -2.0, 50 + r), r).unwrap())
            .collect();
        // Not separable: both sets drawn from one distribution.
        let noise: Vec<Cav> = (0..5)
            .map(|r| train_cav(&cloud(40, 16, 0.0, r), &cloud(40, 16, 0.0, 50 + r), r).unwrap())
            .collect();
        let mean = |c: &[Cav]| c.iter().map(|c| c.accuracy).sum::<f64>() / c.len() as f64;
        assert!(mean(&separable) > 0.95, "{}", mean(&separable));
        assert!((mean(&noise) - 0.5).abs() < 0.12, "{}", mean(&noise));
        let grads = vec![("k".to_string(), cloud(10, 16, 0.0, 9))];
        let nulls = noise.clone();
        let yes = score_cavs("s", LayerId::Layer3, &separable, &nulls, &grads, 0.05).unwrap();
        let no = score_cavs("n", LayerId::Layer3, &noise, &nulls, &grads, 0.05).unwrap();
        assert!(yes[0].cav_separable && !no[0].cav_separable);
        assert!((no[0].random_cav_accuracy - mean(&noise)).abs() < 1e-12);
    }

    #[test]
    fn the_dual_fit_is_the_primal_gradient_descent() {
        // Plain gradient descent on w, written out, against the Gram-matrix form.
        let x: Vec<Vec<f64>> = cloud(12, 5, 0.5, 3)
            .into_iter()
            .map(|v| v.into_iter().map(|a| a as f64 / 3.0).collect())
            .collect();
        let y: Vec<f64> = (0..12).map(|i| (i % 2) as f64).collect();
        let weights: Vec<f64> = (0..12).map(|i| 1.0 + (i % 3) as f64).collect();
        let (l2, iterations) = (0.05, 40);
        let (mut w, mut b) = (vec![0.0f64; 5], 0.0f64);
        let total: f64 = weights.iter().sum();
        for _ in 0..iterations {
            let mut g = vec![0.0f64; 5];
            let mut gb = 0.0;
            for ((xi, yi), wi) in x.iter().zip(&y).zip(&weights) {
                let z = b + xi.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>();
                let r = wi * (1.0 / (1.0 + (-z).exp()) - yi) / total;
                gb += r;
                for (gj, a) in g.iter_mut().zip(xi) {
                    *gj += r * a;
                }
            }
            for (wj, gj) in w.iter_mut().zip(&g) {
                *wj -= gj + l2 * *wj;
            }
            b -= gb;
        }
        let (dual_w, dual_b) = fit_logistic(&x, &y, &weights, l2, iterations);
        assert!((dual_b - b).abs() < 1e-12);
        for (a, c) in dual_w.iter().zip(&w) {
            assert!((a - c).abs() < 1e-12, "{dual_w:?} {w:?}");
        }
    }

    #[test]
    fn scores_count_positive_directional_derivatives() {
        let cav = Cav {
            direction: vec![1.0, 0.0],
            accuracy: 1.0,
        };
        let grads = vec![
            vec![1.0, 5.0],
            vec![-1.0, 5.0],
            vec![0.5, -3.0],
            vec![2.0, 0.0],
        ];
        assert_eq!(tcav_score(&grads, &cav), 0.75);
        assert!(tcav_score(&[], &cav).is_nan());
    }

    #[test]
    fn a_relevant_concept_is_significant_and_noise_is_not() {
        let dim = 6;
        let concept = cloud(20, dim, 2.0, 10);
        let random_sets: Vec<Vec<Vec<f32>>> =
            (0..6).map(|r| cloud(20, dim, 0.0, 100 + r)).collect();
        // Class "up": its logit grows along axis 0 for every image. Class "flat": random
        // gradient directions.
        let up: Vec<Vec<f32>> = cloud(40, dim, 0.0, 7)
            .into_iter()
            .map(|mut g| {
                g[0] = g[0].abs() + 1.0;
                g
            })
            .collect();
        let flat = cloud(40, dim, 0.0, 8);
        let results = tcav_test(
            "axis0",
            LayerId::Layer4,
            &concept,
            &random_sets,
            &[("up".into(), up), ("flat".into(), flat)],
            0.05,
            3,
        )
        .unwrap();
        let up = &results[0];
        assert!(up.mean > 0.95, "{up:?}");
        assert!(up.significant, "{up:?}");
        let flat = &results[1];
        assert!((flat.mean - 0.5).abs() < 0.25, "{flat:?}");
        assert_eq!(up.scores.len(), 5);
        // One family of 21 tests: p 0.001 stays significant (21 x 0.001 < 0.05); p 0.01,
        // significant alone, is not once 19 null tests (p >= 0.2) stand beside it.
        let with_p = |p: f64| {
            let mut r = results[0].clone();
            r.p_value = p;
            r
        };
        let mut family = vec![with_p(0.001)];
        family.extend((0..19).map(|i| with_p(0.2 + 0.04 * i as f64)));
        family.push(with_p(0.01));
        adjust_for_multiple_tests(&mut family, 0.05);
        assert!(family[0].significant, "{:?}", family[0]);
        assert!((family[0].p_holm - 0.021).abs() < 1e-12, "{:?}", family[0]);
        assert!(!family[20].significant, "{:?}", family[20]);
        assert!((family[20].p_holm - 0.2).abs() < 1e-12, "{:?}", family[20]);
        assert!(family[1..20].iter().all(|r| !r.significant));
        assert!(
            tcav_test(
                "x",
                LayerId::Layer4,
                &concept,
                &random_sets[..2],
                &[],
                0.05,
                0
            )
            .is_err()
        );
    }
}
