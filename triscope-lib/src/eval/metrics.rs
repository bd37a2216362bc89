//! Classification metrics on plain data: accuracy, top-2, balanced accuracy, macro-F1,
//! per-class recall, confusion matrices, AUROC and AUPRC.

use serde::{Deserialize, Serialize};

/// Single-label metrics of one evaluation (clean or under one attack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub n: usize,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub accuracy: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub top2_accuracy: f64,
    /// Mean per-class recall over classes present in the labels.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub balanced_accuracy: f64,
    /// Mean per-class F1 over classes present in the labels or predictions.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub macro_f1: f64,
    /// Recall per class (NaN where the class has no sample).
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// One-vs-rest AUROC per class from its probability (NaN where a class has no sample or
    /// every sample). With two classes both equal sklearn's `roc_auc_score(y, p[:, 1])`.
    #[serde(default, deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub per_class_auroc: Vec<f64>,
    /// Mean of the finite per-class AUROCs: sklearn's `roc_auc_score(multi_class="ovr")`.
    /// Reports written before it existed read as NaN.
    #[serde(
        default = "crate::util::stats::nan",
        deserialize_with = "crate::util::stats::f64_or_nan"
    )]
    pub macro_auroc: f64,
    /// One-vs-rest sensitivity at 80% specificity per class: the highest recall of a
    /// threshold on the class's probability that keeps at least 80% of the other classes'
    /// samples below it (sklearn: `max(tpr[fpr <= 0.2])` of `roc_curve`). NaN as the AUROC.
    #[serde(default, deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub per_class_sensitivity_at_80_specificity: Vec<f64>,
}

/// The melanoma-against-everything-else reading of a single-label evaluation, for models
/// with a `mel` class: the number a dermatologist compares across clinics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelanomaMetrics {
    /// Melanomas among the evaluated images.
    pub melanomas: usize,
    /// AUROC of p(mel) separating melanomas from every other image.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub mel_vs_rest_auroc: f64,
    /// Sensitivity for melanoma at 80% specificity, thresholding p(mel).
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub mel_sensitivity_at_80_specificity: f64,
    /// Recall of melanoma at the model's own decision (argmax).
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub mel_recall: f64,
}

/// [`MelanomaMetrics`] from `metrics` when one of `class_names` is `mel`.
pub fn melanoma_metrics(metrics: &ClassMetrics, class_names: &[String]) -> Option<MelanomaMetrics> {
    let mel = class_names
        .iter()
        .position(|c| c.eq_ignore_ascii_case("mel"))?;
    let at = |v: &[f64]| v.get(mel).copied().unwrap_or(f64::NAN);
    Some(MelanomaMetrics {
        melanomas: metrics
            .confusion
            .get(mel)
            .map(|r| r.iter().sum())
            .unwrap_or(0),
        mel_vs_rest_auroc: at(&metrics.per_class_auroc),
        mel_sensitivity_at_80_specificity: at(&metrics.per_class_sensitivity_at_80_specificity),
        mel_recall: at(&metrics.per_class_accuracy),
    })
}

/// Specificity at which [`ClassMetrics::per_class_sensitivity_at_80_specificity`] is read.
pub const SCREENING_SPECIFICITY: f64 = 0.8;

/// Metrics from per-sample probability rows (`probs[i][class]`, softmax outputs: the AUROCs
/// rank samples by them) and labels.
pub fn class_metrics(probs: &[Vec<f32>], labels: &[usize], num_classes: usize) -> ClassMetrics {
    let n = labels.len();
    let mut confusion = vec![vec![0usize; num_classes]; num_classes];
    let mut top2 = 0usize;
    for (row, &y) in probs.iter().zip(labels) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        confusion[y][order[0]] += 1;
        if order.iter().take(2).any(|&c| c == y) {
            top2 += 1;
        }
    }
    let correct: usize = (0..num_classes).map(|c| confusion[c][c]).sum();
    let mut per_class = Vec::with_capacity(num_classes);
    let mut f1s = Vec::new();
    for c in 0..num_classes {
        let support: usize = confusion[c].iter().sum();
        let predicted: usize = confusion.iter().map(|r| r[c]).sum();
        let tp = confusion[c][c] as f64;
        per_class.push(if support > 0 {
            tp / support as f64
        } else {
            f64::NAN
        });
        if support > 0 || predicted > 0 {
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            f1s.push(if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            });
        }
    }
    let per_class_auroc: Vec<f64> = (0..num_classes)
        .map(|c| {
            let s: Vec<f32> = probs.iter().map(|p| p[c]).collect();
            let y: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            roc_auc(&s, &y)
        })
        .collect();
    let per_class_sensitivity_at_80_specificity = (0..num_classes)
        .map(|c| {
            let s: Vec<f32> = probs.iter().map(|p| p[c]).collect();
            let y: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            sensitivity_at_specificity(&s, &y, SCREENING_SPECIFICITY)
        })
        .collect();
    ClassMetrics {
        n,
        accuracy: ratio(correct, n),
        top2_accuracy: ratio(top2, n),
        balanced_accuracy: finite_mean(&per_class),
        macro_f1: mean(&f1s),
        per_class_accuracy: per_class,
        confusion,
        macro_auroc: finite_mean(&per_class_auroc),
        per_class_auroc,
        per_class_sensitivity_at_80_specificity,
    }
}

/// Multi-label metrics: per-finding and mean AUROC and AUPRC (NaN where a finding has no
/// positive or no negative sample; means skip NaN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelMetrics {
    pub n: usize,
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub auroc: Vec<f64>,
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub auprc: Vec<f64>,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub mean_auroc: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub mean_auprc: f64,
    /// Share of (sample, finding) decisions right at threshold 0.5.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub label_accuracy: f64,
}

pub fn multi_label_metrics(probs: &[Vec<f32>], targets: &[Vec<f32>]) -> MultiLabelMetrics {
    let k = targets.first().map(|t| t.len()).unwrap_or(0);
    let mut auroc = Vec::with_capacity(k);
    let mut auprc = Vec::with_capacity(k);
    let mut right = 0usize;
    for j in 0..k {
        let s: Vec<f32> = probs.iter().map(|p| p[j]).collect();
        let y: Vec<bool> = targets.iter().map(|t| t[j] > 0.5).collect();
        auroc.push(roc_auc(&s, &y));
        auprc.push(average_precision(&s, &y));
        right += s
            .iter()
            .zip(&y)
            .filter(|(p, t)| (**p >= crate::inference::FINDING_THRESHOLD) == **t)
            .count();
    }
    MultiLabelMetrics {
        n: targets.len(),
        mean_auroc: finite_mean(&auroc),
        mean_auprc: finite_mean(&auprc),
        auroc,
        auprc,
        label_accuracy: ratio(right, targets.len() * k),
    }
}

/// Area under the ROC curve (Mann-Whitney U with ties counted half); NaN if one class is absent.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> f64 {
    let pos = positive.iter().filter(|p| **p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    let rank_sum_pos: f64 = crate::util::stats::average_ranks(scores)
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    (rank_sum_pos - pos as f64 * (pos as f64 + 1.0) / 2.0) / (pos as f64 * neg as f64)
}

/// The highest sensitivity (true-positive rate) of a threshold `score >= t` whose
/// specificity is at least `specificity`: sklearn's `max(tpr[fpr <= 1 - specificity])` over
/// `roc_curve`'s points, ties grouped. NaN if one class is absent.
pub fn sensitivity_at_specificity(scores: &[f32], positive: &[bool], specificity: f64) -> f64 {
    let pos = positive.iter().filter(|p| **p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    // A small slack so that exactly 20% of the negatives counts as 80% specificity.
    let max_fpr = 1.0 - specificity + 1e-12;
    threshold_counts(scores, positive)
        .into_iter()
        .filter(|&(_, fp)| fp as f64 / neg as f64 <= max_fpr)
        .map(|(tp, _)| tp as f64 / pos as f64)
        .fold(0.0, f64::max)
}

/// Average precision (sklearn's definition: sum over thresholds of (R_n - R_{n-1}) P_n,
/// ties grouped); NaN without positives.
pub fn average_precision(scores: &[f32], positive: &[bool]) -> f64 {
    let total_pos = positive.iter().filter(|p| **p).count();
    if total_pos == 0 {
        return f64::NAN;
    }
    let (mut ap, mut last_recall) = (0.0f64, 0.0f64);
    for (tp, fp) in threshold_counts(scores, positive) {
        let recall = tp as f64 / total_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
    }
    ap
}

/// The true and false positives of `score >= t` at each distinct score `t`, from the highest
/// down: samples tied at a score cross the threshold together (sklearn's ROC and PR points).
fn threshold_counts(scores: &[f32], positive: &[bool]) -> Vec<(usize, usize)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut out = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            if positive[k] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        out.push((tp, fp));
        i = j + 1;
    }
    out
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Mean over the values that are not NaN (a class or finding that could not be scored).
fn finite_mean(v: &[f64]) -> f64 {
    mean(
        &v.iter()
            .copied()
            .filter(|x| !x.is_nan())
            .collect::<Vec<_>>(),
    )
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_inverted_and_known_values() {
        let scores = vec![
            vec![0.9, 0.1, 0.0],
            vec![0.2, 0.7, 0.1],
            vec![0.1, 0.2, 0.7],
            vec![0.6, 0.3, 0.1],
        ];
        let labels = vec![0, 1, 2, 1];
        let m = class_metrics(&scores, &labels, 3);
        assert_eq!(
            m.confusion,
            vec![vec![1, 0, 0], vec![1, 1, 0], vec![0, 0, 1]]
        );
        assert!((m.accuracy - 0.75).abs() < 1e-12);
        assert!((m.top2_accuracy - 1.0).abs() < 1e-12);
        assert!((m.balanced_accuracy - (1.0 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
        // F1: class0 p=.5 r=1 -> 2/3; class1 p=1 r=.5 -> 2/3; class2 1.
        assert!((m.macro_f1 - (2.0 / 3.0 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn one_vs_rest_auroc_matches_sklearn() {
        // sklearn 1.9: roc_auc_score(y, p, multi_class="ovr") = 0.8958333333333334, per class
        // roc_auc_score(y == c, p[:, c]) = [0.875, 0.8125, 1.0].
        let probs = vec![
            vec![0.9, 0.1, 0.0],
            vec![0.2, 0.7, 0.1],
            vec![0.1, 0.2, 0.7],
            vec![0.6, 0.3, 0.1],
            vec![0.3, 0.3, 0.4],
            vec![0.5, 0.4, 0.1],
        ];
        let m = class_metrics(&probs, &[0, 1, 2, 1, 2, 0], 3);
        for (got, want) in m.per_class_auroc.iter().zip([0.875, 0.8125, 1.0]) {
            assert!((got - want).abs() < 1e-12, "{:?}", m.per_class_auroc);
        }
        assert!((m.macro_auroc - 0.895_833_333_333_333_4).abs() < 1e-12);
        // Binary: sklearn's roc_auc_score(y, p[:, 1]) = 0.8333333333333333.
        let probs = vec![
            vec![0.8, 0.2],
            vec![0.3, 0.7],
            vec![0.6, 0.4],
            vec![0.1, 0.9],
            vec![0.55, 0.45],
        ];
        let m = class_metrics(&probs, &[0, 1, 1, 1, 0], 2);
        assert!((m.macro_auroc - 0.833_333_333_333_333_3).abs() < 1e-12);
        // A class never seen has no AUROC and does not enter the mean.
        let m = class_metrics(&probs, &[0, 0, 0, 0, 0], 2);
        assert!(m.macro_auroc.is_nan() && m.per_class_auroc[0].is_nan());
    }

    #[test]
    fn sensitivity_at_specificity_matches_sklearn_with_ties() {
        // sklearn 1.9.1: fpr, tpr, _ = roc_curve(y, s); max(tpr[fpr <= 1 - spec + 1e-12]),
        // s = round(default_rng(3).random(40), 1) (many ties), y = its next 40 draws < 0.4:
        // 0.13333333333333333 at 80%, 0.06666666666666667 at 90%, 0.6 at 50%; and
        // average_precision_score(y, s) = 0.3931018282256672.
        let s: Vec<f32> = [
            1, 2, 8, 6, 1, 4, 5, 2, 7, 1, 4, 5, 4, 6, 7, 10, 3, 6, 7, 3, 0, 10, 3, 3, 9, 6, 5, 8,
            0, 7, 4, 1, 7, 9, 2, 6, 3, 7, 7, 2,
        ]
        .iter()
        .map(|&d| d as f32 / 10.0)
        .collect();
        let y: Vec<bool> = [
            0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0,
            0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0,
        ]
        .iter()
        .map(|&v| v == 1)
        .collect();
        for (spec, want) in [
            (0.8, 0.133_333_333_333_333_33),
            (0.9, 0.066_666_666_666_666_67),
            (0.5, 0.6),
        ] {
            let got = sensitivity_at_specificity(&s, &y, spec);
            assert!((got - want).abs() < 1e-12, "{spec}: {got}");
        }
        assert!((average_precision(&s, &y) - 0.393_101_828_225_667_2).abs() < 1e-12);
        assert!(sensitivity_at_specificity(&s, &[false; 40], 0.8).is_nan());
    }

    #[test]
    fn auroc_and_ap_reference_values() {
        // sklearn: roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.75
        let y = [false, false, true, true];
        let s = [0.1, 0.4, 0.35, 0.8];
        assert!((roc_auc(&s, &y) - 0.75).abs() < 1e-12);
        // sklearn: average_precision_score(...) = 0.8333...
        assert!((average_precision(&s, &y) - 0.833_333_333_333_333_4).abs() < 1e-12);
        // Perfect and inverted rankings.
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &y), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &y), 0.0);
        // All tied: 0.5.
        assert_eq!(roc_auc(&[0.5; 4], &y), 0.5);
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
    }
}
