//! Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR
//! 2021): a classifier trained on imbalanced data keeps the training prior in its logits;
//! subtracting `tau * log(prior)` moves decisions towards the rare classes. `tau` is chosen on
//! the validation split for the best balanced accuracy (0, no change, is always a candidate),
//! optionally among the candidates that keep a floor on accuracy (an operating point: the
//! adjustment trades majority-class hits for rare-class ones), and the shift goes into the
//! classifier's bias, so the adjusted model is a plain ResNet-50 that every part of Triscope
//! reads as before.

use std::sync::atomic::AtomicBool;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::eval::metrics::class_metrics;
use crate::eval::run::model_labels;
use crate::inference::Classifier;
use crate::io::data::{Dataset, Label};
use crate::model::ResNet50;
use crate::model::host::logit_rows;

/// The candidates for `tau`: 0 to 2 in steps of 0.05.
pub fn default_taus() -> Vec<f64> {
    (0..=40).map(|i| i as f64 * 0.05).collect()
}

/// One candidate and what it scores on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TauScore {
    pub tau: f64,
    pub balanced_accuracy: f64,
    pub accuracy: f64,
}

/// The chosen adjustment and how it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorAdjustment {
    pub tau: f64,
    /// Class frequencies of the training split, in the model's order.
    pub prior: Vec<f64>,
    /// Added to the classifier's bias: `-tau * ln(prior)`.
    pub bias_shift: Vec<f32>,
    /// `tau = 0` (the model as trained) and the chosen `tau`, on the validation split.
    pub before: TauScore,
    pub after: TauScore,
    pub grid: Vec<TauScore>,
}

fn check_accuracy_floor(min_accuracy: f64) -> Result<()> {
    if (0.0..=1.0).contains(&min_accuracy) {
        Ok(())
    } else {
        Err(TriscopeError::InvalidArgument(format!(
            "the accuracy floor must be in [0, 1], not {min_accuracy}"
        )))
    }
}

/// Choose `tau` among `taus` for the best balanced accuracy of `logits` (rows in the model's
/// class order) against `labels`, among the candidates whose accuracy is at least
/// `min_accuracy` (0 for no floor); ties go to the smaller `tau`. `prior` must be positive.
pub fn fit_prior_adjustment(
    logits: &[Vec<f32>],
    labels: &[usize],
    prior: &[f64],
    taus: &[f64],
    min_accuracy: f64,
) -> Result<PriorAdjustment> {
    check_accuracy_floor(min_accuracy)?;
    let k = prior.len();
    if prior.iter().any(|p| p.is_nan() || *p <= 0.0) {
        return Err(TriscopeError::InvalidArgument(format!(
            "every class needs training images for a logit adjustment; the prior is {prior:?}"
        )));
    }
    if logits.is_empty() || logits.len() != labels.len() || logits.iter().any(|r| r.len() != k) {
        return Err(TriscopeError::InvalidArgument(format!(
            "{} logit rows of {k} classes and {} labels do not fit",
            logits.len(),
            labels.len()
        )));
    }
    let log_prior: Vec<f64> = prior.iter().map(|p| p.ln()).collect();
    let score = |tau: f64| {
        let shifted: Vec<Vec<f32>> = logits
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&log_prior)
                    .map(|(l, lp)| (*l as f64 - tau * lp) as f32)
                    .collect()
            })
            .collect();
        let m = class_metrics(&shifted, labels, k);
        TauScore {
            tau,
            balanced_accuracy: m.balanced_accuracy,
            accuracy: m.accuracy,
        }
    };
    let before = score(0.0);
    let grid: Vec<TauScore> = taus.iter().map(|&t| score(t)).collect();
    let after = std::iter::once(before)
        .chain(grid.iter().copied())
        .filter(|s| s.accuracy >= min_accuracy)
        .reduce(|best, s| {
            if s.balanced_accuracy > best.balanced_accuracy
                || (s.balanced_accuracy == best.balanced_accuracy && s.tau < best.tau)
            {
                s
            } else {
                best
            }
        })
        .ok_or_else(|| {
            TriscopeError::InvalidArgument(format!(
                "no tau among {} candidates keeps the accuracy at {min_accuracy} or more (the \
                 model as trained has {:.4})",
                taus.len(),
                before.accuracy
            ))
        })?;
    Ok(PriorAdjustment {
        tau: after.tau,
        prior: prior.to_vec(),
        bias_shift: log_prior
            .iter()
            .map(|lp| (-after.tau * lp) as f32)
            .collect(),
        before,
        after,
        grid,
    })
}

/// The logits of every image of `dataset` (rows in the model's class order), in batches.
pub fn dataset_logits(
    classifier: &Classifier,
    dataset: &Dataset,
    batch_size: usize,
    cancel: &AtomicBool,
) -> Result<Vec<Vec<f32>>> {
    classifier.dataset_rows(dataset, batch_size, cancel, |c, refs| {
        logit_rows(c.model().forward(c.batch_tensor(refs)?)) // [b, classes]
    })
}

/// Fit the adjustment of `classifier` on `val` with the class frequencies of `train` (both
/// single-label, their labels mapped to the model's classes).
pub fn fit_on_datasets(
    classifier: &Classifier,
    train: &Dataset,
    val: &Dataset,
    taus: &[f64],
    min_accuracy: f64,
    cancel: &AtomicBool,
) -> Result<PriorAdjustment> {
    // Before the validation split's forward passes, not after them.
    check_accuracy_floor(min_accuracy)?;
    let cfg = classifier.config();
    if cfg.multi_label {
        return Err(TriscopeError::InvalidArgument(
            "a logit adjustment is for single-label models; this one has a sigmoid per finding"
                .into(),
        ));
    }
    let class_of = |labels: Vec<Label>| -> Vec<usize> {
        labels
            .into_iter()
            .filter_map(|l| match l {
                Label::Class(c) => Some(c),
                Label::Findings(_) => None,
            })
            .collect()
    };
    let train_labels = class_of(model_labels(train, cfg)?);
    let mut counts = vec![0usize; cfg.num_classes];
    for &c in &train_labels {
        counts[c] += 1;
    }
    let total = train_labels.len().max(1) as f64;
    let prior: Vec<f64> = counts.iter().map(|&n| n as f64 / total).collect();
    let val_labels = class_of(model_labels(val, cfg)?);
    let logits = dataset_logits(classifier, val, 32, cancel)?;
    fit_prior_adjustment(&logits, &val_labels, &prior, taus, min_accuracy)
}

/// `model` with `shift` added to its classifier's bias (`[num_classes]`).
pub fn shift_bias(mut model: ResNet50, shift: &[f32]) -> Result<ResNet50> {
    let k = model.config.num_classes;
    if shift.len() != k {
        return Err(TriscopeError::InvalidArgument(format!(
            "a bias shift of {} values for {k} classes",
            shift.len()
        )));
    }
    let bias = model.fc.bias.take().ok_or_else(|| {
        TriscopeError::InvalidArgument("the classifier has no bias to shift".into())
    })?;
    let b = bias.val(); // [num_classes]
    let delta = Tensor::<1>::from_data(TensorData::new(shift.to_vec(), [k]), &b.device());
    model.fc.bias = Some(Param::from_tensor(b + delta));
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_biased_to_the_majority_is_moved_towards_the_rare_class() {
        // Two classes, prior 0.9 / 0.1. The logits carry the prior: every rare image scores
        // just under its majority logit, so nothing is called rare before the adjustment.
        let prior = [0.9, 0.1];
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for i in 0..90 {
            logits.push(vec![1.0 + (i % 3) as f32 * 0.1, 0.0]);
            labels.push(0);
        }
        for i in 0..10 {
            logits.push(vec![0.5 + (i % 2) as f32 * 0.1, 0.0]);
            labels.push(1);
        }
        let a = fit_prior_adjustment(&logits, &labels, &prior, &default_taus(), 0.0).unwrap();
        assert!(
            (a.before.balanced_accuracy - 0.5).abs() < 1e-9,
            "{:?}",
            a.before
        );
        assert!(
            (a.after.balanced_accuracy - 1.0).abs() < 1e-9,
            "{:?}",
            a.after
        );
        assert!(a.tau > 0.0);
        // The shift favours the rare class by tau * ln(0.9 / 0.1).
        let gap = (a.bias_shift[1] - a.bias_shift[0]) as f64;
        assert!((gap - a.tau * (0.9f64 / 0.1).ln()).abs() < 1e-5, "{gap}");
        // The smallest tau that reaches the best score is kept.
        let first_best = a
            .grid
            .iter()
            .find(|s| s.balanced_accuracy == a.after.balanced_accuracy)
            .unwrap();
        assert_eq!(first_best.tau, a.tau);
    }

    #[test]
    fn an_accuracy_floor_keeps_the_best_tau_that_meets_it() {
        // Prior 0.9 / 0.1; logit margins (majority minus rare): 80 majority images at 1.0 and 10
        // at 0.2, 5 rare at 0.1 and 5 at 0.5. A shift of tau * ln 9 passes the rare ones at
        // tau 0.05 (margin 0.1) and 0.25 (0.5), and loses the close majority ones from tau 0.1.
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for (margin, label, n) in [(1.0f32, 0, 80), (0.2, 0, 10), (0.1, 1, 5), (0.5, 1, 5)] {
            for _ in 0..n {
                logits.push(vec![margin, 0.0]);
                labels.push(label);
            }
        }
        let prior = [0.9, 0.1];
        let free = fit_prior_adjustment(&logits, &labels, &prior, &default_taus(), 0.0).unwrap();
        assert!((free.tau - 0.25).abs() < 1e-9, "{:?}", free.after);
        assert!((free.after.accuracy - 0.90).abs() < 1e-9);
        // A floor of 0.92 rules that out: tau 0.05 (accuracy 0.95, balanced 0.75) is kept.
        let floor = fit_prior_adjustment(&logits, &labels, &prior, &default_taus(), 0.92).unwrap();
        assert!((floor.tau - 0.05).abs() < 1e-9, "{:?}", floor.after);
        assert!((floor.after.accuracy - 0.95).abs() < 1e-9);
        assert!((floor.after.balanced_accuracy - 0.75).abs() < 1e-9);
        // No candidate reaches 0.96: an error that says what the model as trained has.
        let err = fit_prior_adjustment(&logits, &labels, &prior, &default_taus(), 0.96)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.96") && err.contains("0.9000"), "{err}");
    }

    #[test]
    fn a_balanced_model_is_left_as_it_is_and_bad_inputs_are_refused() {
        let logits = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let a = fit_prior_adjustment(&logits, &[0, 1], &[0.5, 0.5], &default_taus(), 0.0).unwrap();
        assert_eq!(a.tau, 0.0);
        assert!(fit_prior_adjustment(&logits, &[0, 1], &[1.0, 0.0], &[0.0], 0.0).is_err());
        assert!(fit_prior_adjustment(&logits, &[0], &[0.5, 0.5], &[0.0], 0.0).is_err());
        assert!(fit_prior_adjustment(&logits, &[0, 1], &[0.5, 0.5], &[0.0], 1.5).is_err());
    }

    #[test]
    fn the_shift_is_added_to_the_classifier_bias() {
        let device = crate::model::device::ComputeDevice::cpu().device;
        let mut cfg = crate::model::ModelConfig::generic(3, 3);
        cfg.base_width = 4;
        cfg.resolution = 32;
        let bias = |m: &ResNet50| -> Vec<f32> {
            m.fc.bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let model = ResNet50::init(&cfg, 0, &device).unwrap();
        let before = bias(&model);
        let shifted = shift_bias(model.clone(), &[1.0, -2.0, 0.5]).unwrap();
        for (k, want) in [1.0f32, -2.0, 0.5].iter().enumerate() {
            assert!((bias(&shifted)[k] - before[k] - want).abs() < 1e-6);
        }
        assert!(shift_bias(model, &[1.0]).is_err());
    }
}
