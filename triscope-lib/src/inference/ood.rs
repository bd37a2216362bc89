//! "This image is unlike the training data": the Mahalanobis score of Lee et al. (2018) with
//! their feature ensemble, on the channel means of layer1 to layer4. Per layer, each class's
//! mean and one covariance shared by the classes are fitted on the training split; an image's
//! distance at a layer is its squared Mahalanobis distance to the nearest class mean,
//! `min_k (f - mu_k)^T P (f - mu_k)` with `P` the inverse of the shrunk covariance. The early
//! layers see colour and texture (a greyscale radiograph is far from dermoscopy there), the
//! last one the classes. The score is the largest of the layers' distances, each divided by
//! its median on the validation split; the threshold is the 95th percentile of the validation
//! split's scores (in-distribution images the fit has not seen), so about 5% of images like
//! the training data are flagged too. The statistics travel inside the model's weights file,
//! under the reserved `triscope.ood*` names the weight loader skips.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::eval::classes_of;
use crate::eval::run::model_labels;
use crate::inference::Classifier;
use crate::io::data::Dataset;

/// The header entry (JSON of [`OodInfo`]); the blobs (little-endian f32) are
/// `triscope.ood.means.L` and `triscope.ood.precision.L` per layer `L` (0-based).
pub const INFO_KEY: &str = "triscope.ood";

fn means_key(layer: usize) -> String {
    format!("{INFO_KEY}.means.{layer}")
}

fn precision_key(layer: usize) -> String {
    format!("{INFO_KEY}.precision.{layer}")
}

/// Header entries and named byte blobs for a checkpoint's extras.
pub type Extras = (Vec<(String, String)>, Vec<(String, Vec<u8>)>);

/// What the statistics were fitted on, and the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodInfo {
    /// Groups (the classes; 1 for a multi-label model).
    pub classes: usize,
    /// The feature width of each layer, layer1 first.
    pub dims: Vec<usize>,
    /// Each layer's median distance on the validation split (its unit in the score).
    pub scales: Vec<f64>,
    /// Scores above it are flagged.
    pub threshold: f64,
    /// The share of the validation images at or under the threshold.
    pub quantile: f64,
    /// The covariances' shrinkage towards `trace / dim` times the identity.
    pub shrinkage: f64,
    pub dataset: String,
    pub train_images: usize,
    pub val_images: usize,
}

impl OodInfo {
    /// What a checkpoint's header says about its statistics (`None`: it carries none), read
    /// without the blobs (`triscope info`).
    pub fn from_header(header: &HashMap<String, String>) -> Result<Option<Self>> {
        header
            .get(INFO_KEY)
            .map(|json| {
                serde_json::from_str(json).map_err(|e| {
                    TriscopeError::InvalidArgument(format!("{INFO_KEY}: unreadable ({e})"))
                })
            })
            .transpose()
    }

    /// One line for a person: what the statistics describe and where the flag starts.
    pub fn describe(&self) -> String {
        format!(
            "fitted on {} {} training images (layer1..layer4); an image scoring above {:.2} is flagged (the {:.0}th percentile of {} validation images)",
            self.train_images,
            self.dataset,
            self.threshold,
            self.quantile * 100.0,
            self.val_images
        )
    }
}

/// One layer's class means and shared precision.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// `[classes][dim]`.
    pub means: Vec<Vec<f64>>,
    /// `[dim * dim]`, row-major, symmetric positive definite.
    pub precision: Vec<f64>,
}

/// The fitted statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct OodStats {
    pub info: OodInfo,
    /// One per layer, layer1 first.
    pub layers: Vec<Gaussian>,
}

/// One image's score against the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OodScore {
    /// The largest of the layers' distances in units of their validation medians.
    pub score: f64,
    pub threshold: f64,
    /// `score > threshold`: unlike the training data.
    pub flag: bool,
}

/// The default shrinkage (the pooled covariance of a few thousand 1,024-d features is close
/// to singular).
pub const SHRINKAGE: f64 = 0.1;
/// The share of validation images under the threshold.
pub const QUANTILE: f64 = 0.95;

impl Gaussian {
    /// Class means and the shared covariance, shrunk by [`SHRINKAGE`], of `rows` (`[n][dim]`)
    /// with their `classes`.
    pub fn fit(rows: &[Vec<f32>], classes: &[usize], num_classes: usize) -> Result<Self> {
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        let Some(dim) = rows.first().map(Vec::len) else {
            return bad("no training features to fit the out-of-distribution score on".into());
        };
        if rows.len() != classes.len() || rows.iter().any(|e| e.len() != dim) {
            return bad("training features and classes do not line up".into());
        }
        let mut means = vec![vec![0.0f64; dim]; num_classes];
        let mut counts = vec![0usize; num_classes];
        for (e, &k) in rows.iter().zip(classes) {
            if k >= num_classes {
                return bad(format!("class {k} of {num_classes}"));
            }
            counts[k] += 1;
            for (m, v) in means[k].iter_mut().zip(e) {
                *m += *v as f64;
            }
        }
        for (m, &n) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= n.max(1) as f64);
        }
        // Shared covariance of the centred features: sum_i c_i c_i^T / n. `[dim, dim]`.
        let mut cov = vec![0.0f64; dim * dim];
        let mut centred = vec![0.0f64; dim];
        for (e, &k) in rows.iter().zip(classes) {
            for (c, (v, m)) in centred.iter_mut().zip(e.iter().zip(&means[k])) {
                *c = *v as f64 - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                let row = &mut cov[i * dim..(i + 1) * dim];
                for (r, cj) in row[i..].iter_mut().zip(&centred[i..]) {
                    *r += ci * cj;
                }
            }
        }
        let n = rows.len() as f64;
        let trace: f64 = (0..dim).map(|i| cov[i * dim + i]).sum::<f64>() / n;
        for i in 0..dim {
            for j in i..dim {
                let v = (1.0 - SHRINKAGE) * cov[i * dim + j] / n
                    + if i == j {
                        SHRINKAGE * trace / dim as f64
                    } else {
                        0.0
                    };
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Self {
            means,
            precision: spd_inverse(&cov, dim)?,
        })
    }

    pub fn dim(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// Squared Mahalanobis distance of `features` to the nearest class mean.
    pub fn distance(&self, features: &[f32]) -> f64 {
        let dim = self.dim();
        let mut best = f64::INFINITY;
        let mut d = vec![0.0f64; dim];
        for mean in &self.means {
            for (x, (v, m)) in d.iter_mut().zip(features.iter().zip(mean)) {
                *x = *v as f64 - m;
            }
            let q: f64 = (0..dim)
                .map(|i| {
                    let row = &self.precision[i * dim..(i + 1) * dim];
                    d[i] * row.iter().zip(&d).map(|(p, x)| p * x).sum::<f64>()
                })
                .sum();
            best = best.min(q);
        }
        best
    }
}

/// The `q`-quantile of `values` (the smallest value with at least that share at or under it).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(at).copied().unwrap_or(f64::NAN)
}

impl OodStats {
    /// Fit each layer's Gaussian on `train` (`[image][layer][dim]`, with their classes), then
    /// the layers' scales and the threshold on `val`.
    pub fn fit(
        train: &[Vec<Vec<f32>>],
        classes: &[usize],
        num_classes: usize,
        val: &[Vec<Vec<f32>>],
        dataset: &str,
    ) -> Result<Self> {
        let layers = train.first().map_or(0, Vec::len);
        if layers == 0 || val.is_empty() {
            return Err(TriscopeError::InvalidArgument(
                "the out-of-distribution score needs training and validation features".into(),
            ));
        }
        if train.iter().chain(val).any(|f| f.len() != layers) {
            return Err(TriscopeError::InvalidArgument(
                "every image needs the same layers' features".into(),
            ));
        }
        let mut gaussians = Vec::with_capacity(layers);
        for l in 0..layers {
            let rows: Vec<Vec<f32>> = train.iter().map(|f| f[l].clone()).collect();
            gaussians.push(Gaussian::fit(&rows, classes, num_classes)?);
        }
        let dims: Vec<usize> = gaussians.iter().map(Gaussian::dim).collect();
        if val
            .iter()
            .any(|f| f.iter().zip(&dims).any(|(x, d)| x.len() != *d))
        {
            return Err(TriscopeError::InvalidArgument(
                "validation features of another width than the training ones".into(),
            ));
        }
        let scales: Vec<f64> = (0..layers)
            .map(|l| {
                let d: Vec<f64> = val.iter().map(|f| gaussians[l].distance(&f[l])).collect();
                quantile(&d, 0.5).max(f64::MIN_POSITIVE)
            })
            .collect();
        let mut stats = Self {
            info: OodInfo {
                classes: num_classes,
                dims,
                scales,
                threshold: f64::INFINITY,
                quantile: QUANTILE,
                shrinkage: SHRINKAGE,
                dataset: dataset.to_string(),
                train_images: train.len(),
                val_images: val.len(),
            },
            layers: gaussians,
        };
        let scores: Vec<f64> = val.iter().map(|f| stats.raw_score(f)).collect();
        stats.info.threshold = quantile(&scores, QUANTILE);
        Ok(stats)
    }

    fn raw_score(&self, features: &[Vec<f32>]) -> f64 {
        self.layers
            .iter()
            .zip(features)
            .zip(&self.info.scales)
            .map(|((g, f), s)| g.distance(f) / s)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The score of one image's features (`[layer][dim]`), or an error naming the widths it
    /// expected.
    pub fn score(&self, features: &[Vec<f32>]) -> Result<OodScore> {
        let widths: Vec<usize> = features.iter().map(Vec::len).collect();
        if widths != self.info.dims {
            return Err(TriscopeError::InvalidArgument(format!(
                "the out-of-distribution statistics are for features {:?} wide, these are {widths:?}",
                self.info.dims
            )));
        }
        let score = self.raw_score(features);
        Ok(OodScore {
            score,
            threshold: self.info.threshold,
            flag: score > self.info.threshold,
        })
    }

    /// The header entry and blobs that carry the statistics in a checkpoint.
    pub fn to_extras(&self) -> Result<Extras> {
        let bytes = |v: &mut dyn Iterator<Item = f64>| -> Vec<u8> {
            v.flat_map(|x| (x as f32).to_le_bytes()).collect()
        };
        let info = serde_json::to_string(&self.info)
            .map_err(|e| TriscopeError::Compute(format!("{INFO_KEY}: {e}")))?;
        let mut blobs = Vec::new();
        for (l, g) in self.layers.iter().enumerate() {
            blobs.push((means_key(l), bytes(&mut g.means.iter().flatten().copied())));
            blobs.push((precision_key(l), bytes(&mut g.precision.iter().copied())));
        }
        Ok((vec![(INFO_KEY.to_string(), info)], blobs))
    }

    /// The statistics in a checkpoint's extras, `None` where it has none (a model written
    /// before they existed, or never fitted). Blobs of the wrong size are an error.
    pub fn from_extras(
        header: &HashMap<String, String>,
        blobs: &HashMap<String, Vec<u8>>,
    ) -> Result<Option<Self>> {
        let Some(info) = OodInfo::from_header(header)? else {
            return Ok(None);
        };
        let bad = |m: String| TriscopeError::InvalidArgument(format!("{INFO_KEY}: {m}"));
        if info.scales.len() != info.dims.len() {
            return Err(bad("one scale per layer expected".into()));
        }
        let floats = |key: &str, len: usize| -> Result<Vec<f64>> {
            let b = blobs
                .get(key)
                .ok_or_else(|| bad(format!("{key} is missing")))?;
            if b.len() != len * 4 {
                return Err(bad(format!(
                    "{key} has {} bytes, {} expected",
                    b.len(),
                    len * 4
                )));
            }
            Ok(b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect())
        };
        let mut layers = Vec::with_capacity(info.dims.len());
        for (l, &dim) in info.dims.iter().enumerate() {
            let means = floats(&means_key(l), info.classes * dim)?
                .chunks(dim.max(1))
                .map(<[f64]>::to_vec)
                .collect();
            let precision = floats(&precision_key(l), dim * dim)?;
            layers.push(Gaussian { means, precision });
        }
        Ok(Some(Self { info, layers }))
    }
}

/// Fit `classifier`'s statistics on the features of `train` (its labels mapped to the
/// model's classes; a multi-label model's images form one group) with the scales and the
/// threshold from `val`.
pub fn fit_on_datasets(
    classifier: &Classifier,
    train: &Dataset,
    val: &Dataset,
    cancel: &AtomicBool,
) -> Result<OodStats> {
    let cfg = classifier.config();
    let classes = classes_of(&model_labels(train, cfg)?);
    let groups = if cfg.multi_label { 1 } else { cfg.num_classes };
    let features =
        |c: &Classifier, refs: &[&crate::io::imaging::PixelImage]| c.layer_features(refs);
    let train_features = classifier.dataset_rows(train, 32, cancel, features)?;
    let val_features = classifier.dataset_rows(val, 32, cancel, features)?;
    let dataset = classifier
        .metadata
        .dataset
        .clone()
        .unwrap_or_else(|| train.root.display().to_string());
    OodStats::fit(&train_features, &classes, groups, &val_features, &dataset)
}

/// Write `classifier`'s model and metadata to `path` with `stats` inside (atomically).
pub fn save_with_stats(classifier: &Classifier, stats: &OodStats, path: &Path) -> Result<()> {
    let (header, blobs) = stats.to_extras()?;
    crate::io::weights::save_checkpoint_with_extras(
        classifier.model(),
        &classifier.metadata,
        &header,
        &blobs,
        path,
    )
}

/// The inverse of a symmetric positive definite `[n, n]` matrix, by Cholesky.
fn spd_inverse(a: &[f64], n: usize) -> Result<Vec<f64>> {
    // a = L L^T, L lower triangular.
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return Err(TriscopeError::Compute(format!(
                "the embeddings' covariance is not positive definite (pivot {j}: {d})"
            )));
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / d;
        }
    }
    // L^-1 by forward substitution, then a^-1 = L^-T L^-1.
    let mut li = vec![0.0f64; n * n];
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                s -= l[i * n + k] * li[k * n + c];
            }
            li[i * n + c] = s / l[i * n + i];
        }
    }
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let s: f64 = (j..n).map(|k| li[k * n + i] * li[k * n + j]).sum();
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_2d() -> Gaussian {
        Gaussian {
            means: vec![vec![0.0, 0.0], vec![10.0, 0.0]],
            // Variances 4 and 1: precision diag(1/4, 1).
            precision: vec![0.25, 0.0, 0.0, 1.0],
        }
    }

    fn stats(layers: Vec<Gaussian>, scales: Vec<f64>) -> OodStats {
        OodStats {
            info: OodInfo {
                classes: 2,
                dims: layers.iter().map(Gaussian::dim).collect(),
                scales,
                threshold: 4.0,
                quantile: QUANTILE,
                shrinkage: 0.0,
                dataset: "synthetic".into(),
                train_images: 0,
                val_images: 0,
            },
            layers,
        }
    }

    #[test]
    fn the_distance_is_the_squared_mahalanobis_distance_to_the_nearest_mean() {
        let g = gaussian_2d();
        // (2, 1) from class 0: 4/4 + 1 = 2.
        assert!((g.distance(&[2.0, 1.0]) - 2.0).abs() < 1e-12);
        // (9, 0) is nearer class 1: 1/4.
        assert!((g.distance(&[9.0, 0.0]) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn the_score_is_the_largest_layer_distance_in_units_of_its_scale() {
        let one = Gaussian {
            means: vec![vec![0.0]],
            precision: vec![1.0],
        };
        let s = stats(vec![gaussian_2d(), one], vec![2.0, 0.5]);
        // Layer 0: (5, 3) -> min(25/4 + 9, 25/4 + 9) = 15.25, / 2; layer 1: 3^2 / 0.5 = 18.
        let f = s.score(&[vec![5.0, 3.0], vec![3.0]]).unwrap();
        assert!((f.score - 18.0).abs() < 1e-12 && f.flag);
        let near = s.score(&[vec![1.0, 1.0], vec![0.5]]).unwrap();
        assert!((near.score - 1.25 / 2.0).abs() < 1e-12 && !near.flag);
        let e = s.score(&[vec![1.0]]).unwrap_err().to_string();
        assert!(e.contains("[2, 1]"), "{e}");
    }

    #[test]
    fn fitting_recovers_a_known_gaussian_and_the_threshold_is_the_val_quantile() {
        // Class k at (3k, 0) with independent spreads 2 and 0.5: a grid of points with exactly
        // those means and variances.
        let mut train = Vec::new();
        let mut classes = Vec::new();
        for k in 0..2 {
            for a in [-2.0f32, 2.0] {
                for b in [-0.5f32, 0.5] {
                    train.push(vec![vec![3.0 * k as f32 + a, b]]);
                    classes.push(k);
                }
            }
        }
        let val: Vec<Vec<Vec<f32>>> = (0..20).map(|i| vec![vec![i as f32 * 0.1, 0.0]]).collect();
        let s = OodStats::fit(&train, &classes, 2, &val, "synthetic").unwrap();
        let g = &s.layers[0];
        assert_eq!(g.means, vec![vec![0.0, 0.0], vec![3.0, 0.0]]);
        // Covariance diag(4, 0.25), shrunk by 0.1 towards its mean variance 2.125.
        let (v0, v1) = (0.9 * 4.0 + 0.1 * 2.125, 0.9 * 0.25 + 0.1 * 2.125);
        assert!((g.precision[0] - 1.0 / v0).abs() < 1e-9);
        assert!((g.precision[3] - 1.0 / v1).abs() < 1e-9);
        assert!(g.precision[1].abs() < 1e-12);
        // Each val point's distance along x to the nearer mean: 0, 0.1, .., 1.5, then 1.4,
        // 1.3, 1.2, 1.1 past the midpoint. The median (10th of 20) is 0.9, the 19th 1.4.
        let scale = 0.9f64.powi(2) / v0;
        assert!(
            (s.info.scales[0] - scale).abs() < 1e-6,
            "{:?}",
            s.info.scales
        );
        let want = 1.4f64.powi(2) / v0 / scale;
        assert!(
            (s.info.threshold - want).abs() < 1e-5,
            "{}",
            s.info.threshold
        );
    }

    #[test]
    fn the_statistics_survive_the_checkpoint_extras_and_bad_blobs_are_named() {
        let s = stats(vec![gaussian_2d()], vec![1.0]);
        let (header, blobs) = s.to_extras().unwrap();
        let header: HashMap<_, _> = header.into_iter().collect();
        let mut blobs: HashMap<_, _> = blobs.into_iter().collect();
        let back = OodStats::from_extras(&header, &blobs).unwrap().unwrap();
        assert_eq!(back, s);
        assert!(
            OodStats::from_extras(&HashMap::new(), &blobs)
                .unwrap()
                .is_none()
        );
        blobs.get_mut(&precision_key(0)).unwrap().pop();
        let e = OodStats::from_extras(&header, &blobs)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&precision_key(0)) && e.contains("15 bytes"),
            "{e}"
        );
    }

    #[test]
    fn the_inverse_is_an_inverse() {
        let a = vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let inv = spd_inverse(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
    }
}
