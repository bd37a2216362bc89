//! Evaluating a classifier on a dataset, and the files an evaluation writes: `eval.json` (the
//! report with what was evaluated), `eval.csv` (one row per column) and the accuracy-against-eps
//! chart. `triscope eval` and the audit call these; the CLI only parses and prints.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::metrics::melanoma_metrics;
use super::{EvalOptions, EvalReport, evaluate};
use crate::error::{Result, TriscopeError};
use crate::inference::Classifier;
use crate::io::data::{Dataset, Label};
use crate::io::plot::{LineChart, PALETTE, Series, render_line_chart, write_png};
use crate::model::ModelConfig;
use crate::util::fsio::write_atomic;

/// The dataset's labels in the model's class order; an error when they cannot fit.
pub fn model_labels(dataset: &Dataset, cfg: &ModelConfig) -> Result<Vec<Label>> {
    if dataset.multi_label != cfg.multi_label {
        let kind = |m: bool| if m { "multi-label" } else { "single-label" };
        return Err(TriscopeError::InvalidArgument(format!(
            "{} is {} but the model is {}",
            dataset.root.display(),
            kind(dataset.multi_label),
            kind(cfg.multi_label)
        )));
    }
    let map = dataset.map_classes_to(&cfg.class_names)?;
    Ok(dataset
        .samples
        .iter()
        .map(|s| match &s.label {
            Label::Findings(f) => {
                let mut v = vec![0.0; cfg.num_classes];
                for (i, &m) in map.iter().enumerate() {
                    v[m] = f[i];
                }
                Label::Findings(v)
            }
            Label::Class(c) => Label::Class(map[*c]),
        })
        .collect())
}

/// Evaluate `classifier` on `dataset` (its labels in the model's order, from [`model_labels`]):
/// images are loaded as the classifier loads them; `progress(done, total)` after each batch.
pub fn evaluate_classifier(
    classifier: &Classifier,
    dataset: &Dataset,
    labels: &[Label],
    options: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> Result<EvalReport> {
    let cfg = classifier.config();
    let (channels, resolution, mode) = (cfg.in_channels, cfg.resolution, classifier.resize_mode);
    let mut report = evaluate(
        classifier.classify().as_ref(),
        &classifier.device().device,
        labels,
        &mut |i| dataset.load(i, channels, resolution, mode),
        options,
        progress,
        cancel,
    )?;
    report.class_names = cfg.class_names.clone();
    for r in &mut report.results {
        r.melanoma = r
            .metrics
            .as_ref()
            .and_then(|m| melanoma_metrics(m, &cfg.class_names));
    }
    Ok(report)
}

/// `eval.json`: the report and what it evaluated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    pub model: String,
    pub model_description: String,
    pub dataset: String,
    pub split: String,
    pub device: String,
    /// What opening the dataset left out and why ([`Dataset::notes`]).
    #[serde(default)]
    pub dataset_notes: Vec<String>,
    /// Every column is the mean over the eight dihedral views ([`crate::inference::tta`]).
    #[serde(default)]
    pub test_time_augmentation: bool,
    #[serde(flatten)]
    pub report: EvalReport,
}

impl EvalRecord {
    pub fn new(classifier: &Classifier, dataset: &Dataset, report: EvalReport) -> Self {
        Self {
            model: classifier.source.to_string(),
            model_description: classifier.metadata.description.clone(),
            dataset: dataset.root.display().to_string(),
            split: dataset.split.clone(),
            device: classifier.device().description.clone(),
            dataset_notes: dataset.notes.clone(),
            test_time_augmentation: classifier.tta,
            report,
        }
    }

    /// Write `eval.json`, `eval.csv` and, with a sweep, `accuracy_vs_eps.png` into `out`
    /// (created); each file whole or not at all. Returns the files written.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out).map_err(|source| TriscopeError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        let json_path = out.join("eval.json");
        write_atomic(&json_path, self.to_json()?.as_bytes())?;
        let csv_path = out.join("eval.csv");
        write_atomic(&csv_path, eval_csv(&self.report).as_bytes())?;
        let mut written = vec![json_path, csv_path];
        if !self.report.sweep.is_empty() {
            let png = out.join("accuracy_vs_eps.png");
            write_sweep_chart(&self.report, &png)?;
            written.push(png);
        }
        Ok(written)
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| TriscopeError::Compute(format!("writing the evaluation as JSON: {e}")))
    }
}

/// Accuracy (or mean AUROC) against eps under PGD-10, as a PNG.
pub fn write_sweep_chart(report: &EvalReport, png: &Path) -> Result<()> {
    let score = if report.multi_label {
        "mean AUROC"
    } else {
        "accuracy"
    };
    let chart = LineChart {
        title: format!("{score} under PGD-10 ({} images)", report.n),
        x_label: "eps (x/255)".into(),
        y_label: score.into(),
        series: vec![Series {
            name: "PGD-10".into(),
            points: report
                .sweep
                .iter()
                .map(|p| (p.eps_linf as f64 * 255.0, p.score))
                .collect(),
            color: PALETTE[0],
        }],
        y_range: Some((0.0, 1.0)),
        x_ticks: report
            .sweep
            .iter()
            .map(|p| {
                (
                    p.eps_linf as f64 * 255.0,
                    format!("{}", (p.eps_linf * 255.0 * 100.0).round() / 100.0),
                )
            })
            .collect(),
    };
    write_png(png, &render_line_chart(&chart, 900, 520)?)
}

/// One CSV row per column of the evaluation (per-class accuracy, or per-finding AUROC/AUPRC).
pub fn eval_csv(r: &EvalReport) -> String {
    let mut s = String::new();
    if r.multi_label {
        s.push_str("attack,eps_linf,n,mean_auroc,mean_auprc");
        for name in &r.class_names {
            s.push_str(&format!(",auroc_{name},auprc_{name}"));
        }
        s.push('\n');
        for res in &r.results {
            if let Some(m) = &res.multi_label {
                s.push_str(&format!(
                    "{},{},{},{},{}",
                    res.attack, res.eps_linf, m.n, m.mean_auroc, m.mean_auprc
                ));
                for (a, p) in m.auroc.iter().zip(&m.auprc) {
                    s.push_str(&format!(",{a},{p}"));
                }
                s.push('\n');
            }
        }
        return s;
    }
    s.push_str(
        "attack,eps_linf,n,accuracy,top2_accuracy,balanced_accuracy,macro_f1,macro_auroc,attack_success_rate",
    );
    for name in &r.class_names {
        s.push_str(&format!(",accuracy_{name}"));
    }
    s.push('\n');
    for res in &r.results {
        if let Some(m) = &res.metrics {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}",
                res.attack,
                res.eps_linf,
                m.n,
                m.accuracy,
                m.top2_accuracy,
                m.balanced_accuracy,
                m.macro_f1,
                m.macro_auroc,
                res.attack_success_rate
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            ));
            for v in &m.per_class_accuracy {
                s.push_str(&format!(",{v}"));
            }
            s.push('\n');
        }
    }
    s
}
