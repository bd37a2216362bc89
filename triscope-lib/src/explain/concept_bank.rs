//! The seven-point checklist in a model's own features: for each criterion and layer, a
//! linear probe that reads the criterion's presence from the layer's pooled features, and the
//! concept activation vectors (CAVs) that TCAV scores. Built once per model from derm7pt's
//! train split (probes calibrated on val, measured on test), cached on disk under the model's
//! and the data's hashes ([`super::concept_cache`]), then used by the audit (TCAV over a data
//! set), `triscope concepts` and the app's Concepts tab (one image).
//!
//! - **Probe** (presence): logistic regression on the layer's channel means, standardised,
//!   classes weighted equally, its L2 penalty chosen on val by AUROC, then Platt-scaled on val
//!   so that its output reads as a probability. Its AUROC on derm7pt test says how well the
//!   model's features encode what the dermatologist checks.
//! - **CAVs** (TCAV): in each of `runs` runs, up to `per_set` images with the criterion
//!   against as many without it (derm7pt's own negatives, not random images), on the layer's
//!   whole activation; the null CAVs separate two random sets of train images. A CAV's
//!   held-out accuracy says whether the criterion is separable at all.
//! - **Push** (one image): the directional derivative of a class logit along the criterion's
//!   mean CAV, `grad_A logit_k . v`: positive when more of the criterion would raise the
//!   class. TCAV's score is the share of a class's images with a positive push.

use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::checklist::{ChecklistRow, ChecklistTable, SEVEN_POINT_CHECKLIST};
use super::tcav::{
    Cav, TcavResult, adjust_for_multiple_tests, fit_logistic, layer_activations_and_gradients,
    layer_gradients, score_cavs, train_cav,
};
use crate::error::{Result, TriscopeError, check_cancel};
use crate::eval::metrics::roc_auc;
use crate::inference::Classifier;
use crate::io::imaging::PixelImage;
use crate::model::LayerId;
use crate::util::rng::SplitMix64;

/// Significance level of the TCAV tests (Holm-adjusted over the whole family).
pub const TCAV_ALPHA: f64 = 0.05;
/// Images per class whose logit gradients TCAV scores.
pub const TCAV_IMAGES_PER_CLASS: usize = 40;
/// Images per batch through the model.
const BATCH: usize = 16;
/// The probe's L2 penalties tried on val.
const PROBE_L2: [f64; 4] = [1e-3, 1e-2, 1e-1, 1.0];
const PROBE_ITERATIONS: usize = 300;

/// What a concept bank is built with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankOptions {
    pub layers: Vec<LayerId>,
    /// CAV runs per criterion (and random-vs-random null CAVs per layer): at least 2.
    pub runs: usize,
    /// Images per side of one CAV (fewer when a criterion has fewer).
    pub per_set: usize,
    /// Train images a criterion needs on each side (with and without it); fewer and it is
    /// skipped, named in the bank's notes.
    pub min_images: usize,
    /// Train images with the criterion kept as its examples.
    pub examples: usize,
    pub seed: u64,
}

impl Default for BankOptions {
    fn default() -> Self {
        Self {
            layers: vec![LayerId::Layer3, LayerId::Layer4],
            runs: 10,
            per_set: 50,
            min_images: 20,
            examples: 6,
            seed: 0,
        }
    }
}

impl BankOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        if self.runs < 2 {
            return bad(format!(
                "concept CAVs need at least 2 runs for the t-test, got {}",
                self.runs
            ));
        }
        if self.min_images < 6 {
            return bad(format!(
                "a checklist concept needs at least 6 images on each side (a CAV holds a third \
                 out), got {}",
                self.min_images
            ));
        }
        if self.per_set < self.min_images {
            return bad(format!(
                "images per CAV set ({}) below the minimum per concept ({})",
                self.per_set, self.min_images
            ));
        }
        if self.layers.is_empty() {
            return bad("no layers for the concepts".into());
        }
        Ok(())
    }
}

/// A probe reading one criterion from one layer's channel means.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub layer: LayerId,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Per-channel standardisation, then division by sqrt(channels).
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// The L2 penalty chosen on val.
    pub l2: f64,
    /// Platt scaling fitted on val: presence = sigmoid(a * logit + b).
    pub platt_a: f64,
    pub platt_b: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub val_auroc: f64,
    /// AUROC on derm7pt test: how well the layer encodes the criterion.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub test_auroc: f64,
}

impl Probe {
    fn logit(&self, pooled: &[f32]) -> f64 {
        self.bias
            + pooled
                .iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.weights)
                .map(|(((&x, m), s), w)| (x as f64 - m) * s * w)
                .sum::<f64>()
    }

    /// Calibrated presence in [0, 1].
    pub fn presence(&self, pooled: &[f32]) -> f64 {
        sigmoid(self.platt_a * self.logit(pooled) + self.platt_b)
    }
}

/// One criterion at one layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriterionLayer {
    pub layer: LayerId,
    pub probe: Probe,
    /// Held-out accuracy of each run's CAV.
    pub cav_accuracies: Vec<f64>,
    /// The runs' CAVs (stored beside the JSON, not in it).
    #[serde(skip)]
    pub cavs: Vec<Cav>,
    /// Their normalised mean: the direction of the per-image push.
    #[serde(skip)]
    pub direction: Vec<f32>,
}

impl CriterionLayer {
    pub fn cav_accuracy(&self) -> f64 {
        crate::util::stats::mean_std(&self.cav_accuracies).0
    }
}

/// Image counts of one criterion in one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCounts {
    pub split_present: usize,
    pub split_absent: usize,
}

/// One criterion of the bank.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriterionConcept {
    pub name: String,
    pub title: String,
    pub points: u8,
    pub train: SetCounts,
    pub val: SetCounts,
    pub test: SetCounts,
    /// Images per side of each CAV.
    pub cav_images: usize,
    pub layers: Vec<CriterionLayer>,
    /// Train images with the criterion, those the last layer's probe reads most strongly
    /// first (ids under derm7pt's `images/`).
    pub examples: Vec<String>,
}

impl CriterionConcept {
    pub fn at(&self, layer: LayerId) -> Option<&CriterionLayer> {
        self.layers.iter().find(|l| l.layer == layer)
    }
}

/// The random-vs-random CAVs of one layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NullCavs {
    pub layer: LayerId,
    pub accuracies: Vec<f64>,
    #[serde(skip)]
    pub cavs: Vec<Cav>,
}

/// Every criterion's probes and CAVs for one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConceptBank {
    /// Hash of the model's configuration and weights.
    pub model_key: String,
    /// Hash of derm7pt's labels, image sizes and the options.
    pub data_key: String,
    pub model: String,
    pub data_root: String,
    pub options: BankOptions,
    pub criteria: Vec<CriterionConcept>,
    pub nulls: Vec<NullCavs>,
    /// Data-set TCAV of every criterion for every class the model shares with derm7pt, over
    /// derm7pt's val and test images by diagnosis (mel first), Holm-adjusted as one family.
    pub tcav: Vec<TcavResult>,
    /// Criteria left out and why, images without a diagnosis, and the like.
    pub notes: Vec<String>,
    pub build_secs: f64,
}

impl ConceptBank {
    pub fn criterion(&self, name: &str) -> Option<&CriterionConcept> {
        self.criteria.iter().find(|c| c.name == name)
    }

    pub fn nulls_at(&self, layer: LayerId) -> Option<&NullCavs> {
        self.nulls.iter().find(|n| n.layer == layer)
    }
}

/// Where a bank build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankStage {
    /// Images through the model (`done` of `total` images).
    Features,
    /// Probes and CAVs (`done` of `total` criteria).
    Concepts,
    /// TCAV over derm7pt's val and test images (`done` of `total` layers).
    Tcav,
}

impl BankStage {
    pub fn label(self) -> &'static str {
        match self {
            Self::Features => "features of derm7pt's images",
            Self::Concepts => "probes and CAVs",
            Self::Tcav => "TCAV",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankProgress {
    pub stage: BankStage,
    pub done: usize,
    pub total: usize,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Activations of a set of images at each bank layer: whole (for CAVs) or channel means.
struct Features {
    /// `[layer][image]`, `[C * h * w]` each (train only).
    full: Vec<Vec<Vec<f32>>>,
    /// `[layer][image]`, `[C]` each.
    pooled: Vec<Vec<Vec<f32>>>,
}

/// Load `rows` as the classifier loads images (every file that fails to decode is named in
/// one error) and take their activations at `layers`.
fn features(
    classifier: &Classifier,
    rows: &[&ChecklistRow],
    layers: &[LayerId],
    keep_full: bool,
    progress: &mut dyn FnMut(usize),
    cancel: &AtomicBool,
) -> Result<Features> {
    let mut full = vec![Vec::new(); layers.len()];
    let mut pooled = vec![Vec::new(); layers.len()];
    for (k, chunk) in rows.chunks(BATCH).enumerate() {
        check_cancel(cancel)?;
        let images = load_rows(classifier, chunk)?;
        let refs: Vec<&PixelImage> = images.iter().collect();
        let x = classifier.batch_tensor(&refs)?; // [b, C, R, R]
        let taps = classifier.model().forward_taps(x, None);
        for (li, layer) in layers.iter().enumerate() {
            let t = taps.layers[layer.index()].clone(); // [b, K, h, w]
            let [_, channels, h, w] = t.dims();
            for row in crate::model::host::rows(t, "activations")? {
                pooled[li].push(crate::model::host::channel_means(&row, channels, h * w));
                if keep_full {
                    full[li].push(row);
                }
            }
        }
        progress(k * BATCH + chunk.len());
    }
    Ok(Features { full, pooled })
}

/// The rows' images, or one error naming every file that cannot be used.
fn load_rows(classifier: &Classifier, rows: &[&ChecklistRow]) -> Result<Vec<PixelImage>> {
    let mut images = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for r in rows {
        match classifier.load_image(&r.path) {
            Ok(img) => images.push(img.pixels),
            Err(e) => bad.push(e.to_string()),
        }
    }
    if bad.is_empty() {
        Ok(images)
    } else {
        Err(TriscopeError::InvalidArgument(format!(
            "{} derm7pt image(s) cannot be used, so no concept was built:\n  {}",
            bad.len(),
            bad.join("\n  ")
        )))
    }
}

/// Fit a probe on train, choose its penalty and calibrate it on val, measure it on test.
fn fit_probe(
    layer: LayerId,
    train: (&[Vec<f32>], &[bool]),
    val: (&[Vec<f32>], &[bool]),
    test: (&[Vec<f32>], &[bool]),
) -> Probe {
    let dim = train.0.first().map(Vec::len).unwrap_or(0);
    let n = train.0.len().max(1) as f64;
    let mut mean = vec![0.0f64; dim];
    for v in train.0 {
        for (m, &x) in mean.iter_mut().zip(v) {
            *m += x as f64 / n;
        }
    }
    let mut var = vec![0.0f64; dim];
    for v in train.0 {
        for ((s, &x), m) in var.iter_mut().zip(v).zip(&mean) {
            *s += (x as f64 - m).powi(2) / n;
        }
    }
    // Unit variance per channel, then unit mean squared norm overall (the fit's step of 1
    // needs features of about unit norm).
    let root_dim = (dim.max(1) as f64).sqrt();
    let scale: Vec<f64> = var
        .iter()
        .map(|v| {
            if *v > 1e-12 {
                1.0 / (v.sqrt() * root_dim)
            } else {
                0.0
            }
        })
        .collect();
    let standardise = |v: &[f32]| -> Vec<f64> {
        v.iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((&x, m), s)| (x as f64 - m) * s)
            .collect()
    };
    let x: Vec<Vec<f64>> = train.0.iter().map(|v| standardise(v)).collect();
    let y: Vec<f64> = train.1.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
    // Classes weighted equally: a rare criterion is not learned as "always absent".
    let positives = train.1.iter().filter(|p| **p).count().max(1) as f64;
    let negatives = (train.1.len() as f64 - positives).max(1.0);
    let weights: Vec<f64> = train
        .1
        .iter()
        .map(|&p| if p { 0.5 / positives } else { 0.5 / negatives })
        .collect();
    let fit = |l2: f64| {
        let (w, b) = fit_logistic(&x, &y, &weights, l2, PROBE_ITERATIONS);
        let mut probe = Probe {
            layer,
            weights: w,
            bias: b,
            mean: mean.clone(),
            scale: scale.clone(),
            l2,
            platt_a: 1.0,
            platt_b: 0.0,
            val_auroc: f64::NAN,
            test_auroc: f64::NAN,
        };
        let scores: Vec<f32> = val.0.iter().map(|v| probe.logit(v) as f32).collect();
        probe.val_auroc = roc_auc(&scores, val.1);
        probe
    };
    // The penalty with the best val AUROC; a NaN (val without both sides) never wins.
    let mut probe = fit(PROBE_L2[0]);
    for l2 in &PROBE_L2[1..] {
        let other = fit(*l2);
        if other.val_auroc > probe.val_auroc {
            probe = other;
        }
    }
    let val_logits: Vec<f64> = val.0.iter().map(|v| probe.logit(v)).collect();
    (probe.platt_a, probe.platt_b) = platt(&val_logits, val.1);
    let test_scores: Vec<f32> = test.0.iter().map(|v| probe.logit(v) as f32).collect();
    probe.test_auroc = roc_auc(&test_scores, test.1);
    probe
}

/// Platt scaling: `a`, `b` minimising the log loss of `sigmoid(a * z + b)` on `labels`, by
/// Newton's method with Platt's smoothed targets; `(1, 0)` when a side is missing.
pub fn platt(logits: &[f64], labels: &[bool]) -> (f64, f64) {
    let pos = labels.iter().filter(|l| **l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return (1.0, 0.0);
    }
    let (t_pos, t_neg) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (&z, &l) in logits.iter().zip(labels) {
            let t = if l { t_pos } else { t_neg };
            let p = sigmoid(a * z + b);
            let d = p - t;
            let w = p * (1.0 - p);
            ga += d * z;
            gb += d;
            haa += w * z * z;
            hab += w * z;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    (a, b)
}

/// `k` distinct indices of `0..n` in a seeded random order.
fn draw(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// Build the bank of `classifier` from the derm7pt folder `table` (no cache: see
/// [`super::concept_cache::load_or_build`]).
pub fn build_bank(
    classifier: &Classifier,
    table: &ChecklistTable,
    options: &BankOptions,
    keys: (String, String),
    progress: &mut dyn FnMut(BankProgress),
    cancel: &AtomicBool,
) -> Result<ConceptBank> {
    options.validate()?;
    let started = std::time::Instant::now();
    let (train, val, test) = (
        table.split("train"),
        table.split("val"),
        table.split("test"),
    );
    for (name, rows) in [("train", &train), ("val", &val), ("test", &test)] {
        if rows.is_empty() {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} has no '{name}' images: the concepts are learned on train, calibrated on \
                 val and measured on test",
                table.labels.display()
            )));
        }
    }
    let mut notes = Vec::new();
    // Which criteria have enough images on both sides of train.
    let train_counts = table.counts("train");
    let mut kept = Vec::new();
    for (i, c) in SEVEN_POINT_CHECKLIST.iter().enumerate() {
        let (p, a) = train_counts[i];
        if p < options.min_images || a < options.min_images {
            notes.push(format!(
                "{} skipped: derm7pt train has {p} image(s) with it and {a} without; a \
                 checklist concept needs at least {} on each side",
                c.title, options.min_images
            ));
        } else {
            kept.push(i);
        }
    }
    if kept.is_empty() {
        return Err(TriscopeError::InvalidArgument(format!(
            "{}: no seven-point criterion can be learned:\n  {}",
            table.labels.display(),
            notes.join("\n  ")
        )));
    }
    let layers = &options.layers;
    let total = train.len() + val.len() + test.len();
    let mut report = |done: usize| {
        progress(BankProgress {
            stage: BankStage::Features,
            done,
            total,
        })
    };
    report(0);
    let train_f = features(classifier, &train, layers, true, &mut report, cancel)?;
    let offset = train.len();
    let val_f = features(
        classifier,
        &val,
        layers,
        false,
        &mut |d| report(offset + d),
        cancel,
    )?;
    let offset = offset + val.len();
    let test_f = features(
        classifier,
        &test,
        layers,
        false,
        &mut |d| report(offset + d),
        cancel,
    )?;

    let labels = |rows: &[&ChecklistRow], i: usize| -> Vec<bool> {
        rows.iter().map(|r| r.present[i]).collect()
    };
    let [val_counts, test_counts] = ["val", "test"].map(|split| table.counts(split));
    let counts = |c: (usize, usize)| SetCounts {
        split_present: c.0,
        split_absent: c.1,
    };
    let mut criteria = Vec::new();
    for (done, &i) in kept.iter().enumerate() {
        check_cancel(cancel)?;
        progress(BankProgress {
            stage: BankStage::Concepts,
            done,
            total: kept.len(),
        });
        let c = &SEVEN_POINT_CHECKLIST[i];
        let (y_train, y_val, y_test) = (labels(&train, i), labels(&val, i), labels(&test, i));
        let pos: Vec<usize> = (0..train.len()).filter(|&k| y_train[k]).collect();
        let neg: Vec<usize> = (0..train.len()).filter(|&k| !y_train[k]).collect();
        let per = options.per_set.min(pos.len()).min(neg.len());
        let mut per_layer = Vec::new();
        for (li, &layer) in layers.iter().enumerate() {
            let probe = fit_probe(
                layer,
                (&train_f.pooled[li], &y_train),
                (&val_f.pooled[li], &y_val),
                (&test_f.pooled[li], &y_test),
            );
            let acts = &train_f.full[li];
            let mut cavs = Vec::with_capacity(options.runs);
            for r in 0..options.runs {
                let seed = options.seed ^ ((i as u64) << 32) ^ ((li as u64) << 16) ^ r as u64;
                let mut rng = SplitMix64::new(seed);
                let p: Vec<Vec<f32>> = draw(pos.len(), per, &mut rng)
                    .into_iter()
                    .map(|k| acts[pos[k]].clone())
                    .collect();
                let n: Vec<Vec<f32>> = draw(neg.len(), per, &mut rng)
                    .into_iter()
                    .map(|k| acts[neg[k]].clone())
                    .collect();
                cavs.push(stored_precision(train_cav(&p, &n, seed)?));
            }
            let direction = mean_direction(&cavs);
            per_layer.push(CriterionLayer {
                layer,
                probe,
                cav_accuracies: cavs.iter().map(|c| c.accuracy).collect(),
                cavs,
                direction,
            });
        }
        // Examples: the train images with the criterion the deepest probe reads most strongly.
        let last = layers.len() - 1;
        let mut ranked: Vec<(f64, usize)> = pos
            .iter()
            .map(|&k| (per_layer[last].probe.presence(&train_f.pooled[last][k]), k))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        criteria.push(CriterionConcept {
            name: c.name.into(),
            title: c.title.into(),
            points: c.points,
            train: counts(train_counts[i]),
            val: counts(val_counts[i]),
            test: counts(test_counts[i]),
            cav_images: per,
            layers: per_layer,
            examples: ranked
                .iter()
                .take(options.examples)
                .map(|(_, k)| train[*k].id.clone())
                .collect(),
        });
    }
    // Null CAVs: two disjoint random sets of train images per run.
    let mut nulls = Vec::new();
    let per = options.per_set.min(train.len() / 2);
    for (li, &layer) in layers.iter().enumerate() {
        check_cancel(cancel)?;
        let acts = &train_f.full[li];
        let mut cavs = Vec::with_capacity(options.runs);
        for r in 0..options.runs {
            let seed = options.seed ^ 0x6e75_6c6c ^ ((li as u64) << 16) ^ r as u64;
            let mut rng = SplitMix64::new(seed);
            let idx = draw(train.len(), 2 * per, &mut rng);
            let a: Vec<Vec<f32>> = idx[..per].iter().map(|&k| acts[k].clone()).collect();
            let b: Vec<Vec<f32>> = idx[per..].iter().map(|&k| acts[k].clone()).collect();
            cavs.push(stored_precision(train_cav(&a, &b, seed)?));
        }
        nulls.push(NullCavs {
            layer,
            accuracies: cavs.iter().map(|c| c.accuracy).collect(),
            cavs,
        });
    }
    drop(train_f);
    let unlabelled = table.rows.iter().filter(|r| r.dx.is_none()).count();
    if unlabelled > 0 {
        notes.push(format!(
            "{unlabelled} derm7pt image(s) have no HAM10000 diagnosis (melanosis, \
             miscellaneous): they serve the concepts but no class in TCAV"
        ));
    }
    let (model_key, data_key) = keys;
    let mut bank = ConceptBank {
        model_key,
        data_key,
        model: classifier.source.to_string(),
        data_root: table.root.display().to_string(),
        options: options.clone(),
        criteria,
        nulls,
        tcav: Vec::new(),
        notes,
        build_secs: 0.0,
    };
    // TCAV over derm7pt's val and test images, by diagnosis.
    let held: Vec<&ChecklistRow> = val.iter().chain(&test).copied().collect();
    let class_images = derm7pt_class_images(classifier, &held, cancel)?;
    bank.tcav = checklist_tcav(
        classifier,
        &bank,
        &class_images,
        &mut |done, total| {
            progress(BankProgress {
                stage: BankStage::Tcav,
                done,
                total,
            })
        },
        cancel,
    )?;
    bank.build_secs = started.elapsed().as_secs_f64();
    Ok(bank)
}

/// A CAV rounded to the f32 the cache stores, so that a bank read back scores exactly as the
/// one built.
fn stored_precision(mut cav: Cav) -> Cav {
    cav.direction.iter_mut().for_each(|x| *x = *x as f32 as f64);
    cav
}

/// Normalised mean of the runs' unit CAVs.
pub(crate) fn mean_direction(cavs: &[Cav]) -> Vec<f32> {
    let dim = cavs.first().map(|c| c.direction.len()).unwrap_or(0);
    let mut sum = vec![0.0f64; dim];
    for c in cavs {
        for (s, d) in sum.iter_mut().zip(&c.direction) {
            *s += d;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    sum.iter()
        .map(|x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 })
        .collect()
}

/// Up to [`TCAV_IMAGES_PER_CLASS`] derm7pt images per model class, by their `dx`, mel first.
fn derm7pt_class_images(
    classifier: &Classifier,
    rows: &[&ChecklistRow],
    cancel: &AtomicBool,
) -> Result<Vec<(usize, Vec<PixelImage>)>> {
    let names = &classifier.config().class_names;
    let mut out = Vec::new();
    for k in class_order(names) {
        check_cancel(cancel)?;
        let chosen: Vec<&ChecklistRow> = rows
            .iter()
            .filter(|r| {
                r.dx.as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(&names[k]))
            })
            .take(TCAV_IMAGES_PER_CLASS)
            .copied()
            .collect();
        if !chosen.is_empty() {
            out.push((k, load_rows(classifier, &chosen)?));
        }
    }
    Ok(out)
}

/// The model's classes, `mel` first, then in the model's order.
pub fn class_order(names: &[String]) -> Vec<usize> {
    let mel = names.iter().position(|n| n.eq_ignore_ascii_case("mel"));
    mel.into_iter()
        .chain((0..names.len()).filter(|&k| Some(k) != mel))
        .collect()
}

/// TCAV of every criterion of `bank` for each class of `class_images` (class index, its
/// images) at every bank layer, Holm-adjusted over the whole family (rows whose CAVs are not
/// separable included, so that leaving them out cannot make the rest look better);
/// `progress(layers done, layers)`.
pub fn checklist_tcav(
    classifier: &Classifier,
    bank: &ConceptBank,
    class_images: &[(usize, Vec<PixelImage>)],
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> Result<Vec<TcavResult>> {
    let device = classifier.device().device.clone();
    let names = &classifier.config().class_names;
    let layers = &bank.options.layers;
    let mut results = Vec::new();
    for (done, &layer) in layers.iter().enumerate() {
        progress(done, layers.len());
        let Some(nulls) = bank.nulls_at(layer) else {
            continue;
        };
        let mut grads = Vec::new();
        for (k, images) in class_images {
            check_cancel(cancel)?;
            grads.push((
                names[*k].clone(),
                layer_gradients(classifier.model(), &device, images, layer, *k, BATCH)?,
            ));
        }
        for c in &bank.criteria {
            let Some(at) = c.at(layer) else { continue };
            results.extend(score_cavs(
                &c.name,
                layer,
                &at.cavs,
                &nulls.cavs,
                &grads,
                TCAV_ALPHA,
            )?);
        }
    }
    progress(layers.len(), layers.len());
    adjust_for_multiple_tests(&mut results, TCAV_ALPHA);
    Ok(results)
}

/// One criterion as the model reads it in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionReading {
    pub name: String,
    pub title: String,
    pub points: u8,
    /// The probe's calibrated presence in [0, 1].
    pub presence: f64,
    /// Directional derivative of the class logit along the criterion's mean CAV: positive
    /// when more of the criterion would raise the class.
    pub push: f64,
    /// The probe's AUROC on derm7pt test (how far to trust `presence`).
    pub probe_test_auroc: f64,
    /// Mean held-out accuracy of the criterion's CAVs.
    pub cav_accuracy: f64,
    /// The CAVs separate the criterion ([`super::tcav::MIN_CAV_ACCURACY`]); if not, `push`
    /// follows noise.
    pub cav_separable: bool,
}

/// The criteria of one image at one layer, most present first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReadout {
    pub layer: LayerId,
    pub readings: Vec<CriterionReading>,
    /// At layer4 the head is average pooling then a linear layer, so the gradient of a
    /// logit is the same for every image and so is `push`.
    pub push_same_for_every_image: bool,
}

/// What the model's features say about the checklist in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptReadout {
    /// The class the push is toward.
    pub class_index: usize,
    pub class_name: String,
    pub layers: Vec<LayerReadout>,
    /// Said wherever the read-out is shown.
    pub caveat: String,
}

/// Said beside every read-out.
pub const READOUT_CAVEAT: &str = "These are the model's readings of the seven-point criteria \
    from its own features (linear probes and concept vectors learned on derm7pt), not a \
    dermatologist's assessment and not a diagnosis.";

/// Read the checklist in `image` (at the model's input size) for `class`.
pub fn read_concepts(
    classifier: &Classifier,
    bank: &ConceptBank,
    image: &PixelImage,
    class: usize,
) -> Result<ConceptReadout> {
    let names = &classifier.config().class_names;
    if class >= names.len() {
        return Err(TriscopeError::InvalidArgument(format!(
            "class {class} does not exist: the model has {} classes",
            names.len()
        )));
    }
    let device = classifier.device().device.clone();
    let base_width = classifier.config().base_width;
    let mut layers = Vec::new();
    for &layer in &bank.options.layers {
        let (acts, grads) = layer_activations_and_gradients(
            classifier.model(),
            &device,
            std::slice::from_ref(image),
            layer,
            class,
            1,
        )?;
        let (acts, grad) = match (acts.into_iter().next(), grads.into_iter().next()) {
            (Some(a), Some(g)) => (a, g), // [K * h * w] each
            _ => {
                return Err(TriscopeError::Compute(format!(
                    "no activations at {layer} for the image"
                )));
            }
        };
        let channels = layer.channels(base_width);
        let pooled = crate::model::host::channel_means(&acts, channels, acts.len() / channels);
        let mut readings: Vec<CriterionReading> = bank
            .criteria
            .iter()
            .filter_map(|c| c.at(layer).map(|at| (c, at)))
            .map(|(c, at)| {
                let push = if at.direction.len() == grad.len() {
                    grad.iter()
                        .zip(&at.direction)
                        .map(|(&g, &d)| g as f64 * d as f64)
                        .sum::<f64>()
                } else {
                    f64::NAN
                };
                CriterionReading {
                    name: c.name.clone(),
                    title: c.title.clone(),
                    points: c.points,
                    presence: at.probe.presence(&pooled),
                    push,
                    probe_test_auroc: at.probe.test_auroc,
                    cav_accuracy: at.cav_accuracy(),
                    cav_separable: at.cav_accuracy() >= super::tcav::MIN_CAV_ACCURACY,
                }
            })
            .collect();
        readings.sort_by(|a, b| b.presence.total_cmp(&a.presence));
        layers.push(LayerReadout {
            layer,
            readings,
            push_same_for_every_image: layer == LayerId::Layer4,
        });
    }
    Ok(ConceptReadout {
        class_index: class,
        class_name: names[class].clone(),
        layers,
        caveat: READOUT_CAVEAT.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_known_sigmoid() {
        // Labels drawn from sigmoid(2z - 1): the fit lands near (2, -1).
        let mut rng = SplitMix64::new(5);
        let (mut z, mut y) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let v = rng.next_normal() as f64 * 2.0;
            z.push(v);
            y.push((rng.next_f32() as f64) < sigmoid(2.0 * v - 1.0));
        }
        let (a, b) = platt(&z, &y);
        assert!((a - 2.0).abs() < 0.2 && (b + 1.0).abs() < 0.2, "{a} {b}");
        assert_eq!(platt(&z, &vec![true; z.len()]), (1.0, 0.0));
    }

    #[test]
    fn mel_comes_first() {
        let names: Vec<String> = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(class_order(&names), vec![4, 0, 1, 2, 3, 5, 6]);
        let two = vec!["normal".to_string(), "pneumonia".to_string()];
        assert_eq!(class_order(&two), vec![0, 1]);
    }

    #[test]
    fn draws_are_distinct_and_seeded() {
        let a = draw(50, 20, &mut SplitMix64::new(1));
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 20);
        assert_eq!(a, draw(50, 20, &mut SplitMix64::new(1)));
        assert_ne!(a, draw(50, 20, &mut SplitMix64::new(2)));
    }
}
