//! Clean and robust evaluation, with checks that catch a fooled evaluation.
//!
//! For every batch the clean logits and each requested attack's adversarial logits are
//! collected; metrics come from [`metrics`]. The checks (none of the popular libraries has
//! them) compare the attacks with each other and with baselines: more PGD steps must not
//! help the model, APGD must not be weaker than PGD, accuracy must collapse at a huge eps,
//! random noise of the same size must hurt less than the attack, and the attack's loss must
//! rise. A failed check names the likely cause.

pub mod metrics;
pub mod run;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::attack::{AttackConfig, AttackGoal, AttackMethod, Classify, run_attack};
use crate::error::{Result, TriscopeError};
use crate::inference::probabilities;
use crate::io::data::Label;
use crate::io::imaging::PixelImage;
use crate::model::host::logit_rows;
use crate::util::numeric::argmax;
use crate::util::rng::SplitMix64;
use metrics::{
    ClassMetrics, MelanomaMetrics, MultiLabelMetrics, class_metrics, multi_label_metrics,
};

/// An evaluation column: clean data or one attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalAttack {
    Clean,
    Fgsm,
    Pgd10,
    Pgd20,
    ApgdCe,
    ApgdT,
    /// Square Attack on every image (gradient-free; `square_queries` queries).
    Square,
    /// FAB-T on every image (`apgd_iterations` iterations per target).
    FabT,
    /// AutoAttack's standard cascade: APGD-CE and APGD-T (their worst case per sample is the
    /// column `aa-apgd`), then FAB-T on the samples both left correct, then Square on those
    /// FAB-T left.
    Aa,
}

impl EvalAttack {
    pub fn name(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Fgsm => "fgsm",
            Self::Pgd10 => "pgd10",
            Self::Pgd20 => "pgd20",
            Self::ApgdCe => "apgd-ce",
            Self::ApgdT => "apgd-t",
            Self::Square => "square",
            Self::FabT => "fab-t",
            Self::Aa => "aa",
        }
    }

    /// Parse `clean,fgsm,pgd10,...` (see [`EvalAttack::columns`]).
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let parsed = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(crate::util::choice::parse)
            .collect::<Result<Vec<Self>>>()?;
        Ok(Self::columns(&parsed))
    }

    /// The evaluation's columns: clean first (every evaluation has it), then each attack once
    /// in the order given.
    pub fn columns(attacks: &[Self]) -> Vec<Self> {
        let mut out = vec![Self::Clean];
        for &a in attacks {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

impl crate::util::choice::Choice for EvalAttack {
    const KIND: &'static str = "attack";
    const ALL: &'static [Self] = &[
        Self::Clean,
        Self::Fgsm,
        Self::Pgd10,
        Self::Pgd20,
        Self::ApgdCe,
        Self::ApgdT,
        Self::Square,
        Self::FabT,
        Self::Aa,
    ];
    fn name(self) -> &'static str {
        EvalAttack::name(self)
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Aa => &["autoattack"],
            _ => &[],
        }
    }
}

impl std::str::FromStr for EvalAttack {
    type Err = TriscopeError;
    fn from_str(s: &str) -> Result<Self> {
        crate::util::choice::parse(s)
    }
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub attacks: Vec<EvalAttack>,
    /// L-inf radius in pixel units.
    pub eps_linf: f32,
    /// PGD-10 accuracy at each of these radii (empty: no sweep).
    pub eps_sweep: Vec<f32>,
    pub batch_size: usize,
    /// APGD iterations, and FAB-T's per target class (AutoAttack standard: 100).
    pub apgd_iterations: usize,
    /// Square's queries per image (AutoAttack standard: 5,000).
    pub square_queries: usize,
    pub seed: u64,
    /// Run the fooled-evaluation checks (adds PGD-10 at 64/255 and a noise baseline) when an
    /// attack is evaluated ([`EvalOptions::runs_checks`]).
    pub checks: bool,
}

impl EvalOptions {
    /// Whether the fooled-evaluation checks run: when asked for and an attack is evaluated
    /// (a column besides clean, or a sweep radius above 0). A clean-only evaluation checks
    /// nothing about attacks, so it runs none of their PGD passes.
    pub fn runs_checks(&self) -> bool {
        self.checks
            && (self.attacks.iter().any(|a| *a != EvalAttack::Clean)
                || self.eps_sweep.iter().any(|e| *e > 0.0))
    }

    /// The one check of the options, before any compute (the CLI calls it before it opens
    /// the dataset; `evaluate` again, for library callers). Messages name the CLI's flag too.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        if !(0.0..=1.0).contains(&self.eps_linf) {
            return bad(format!(
                "eps (--eps) must be in [0, 1] pixel units (8/255 = 0.031), got {}",
                self.eps_linf
            ));
        }
        if let Some(e) = self.eps_sweep.iter().find(|e| !(0.0..=1.0).contains(*e)) {
            return bad(format!("sweep eps (--eps-sweep) {e} is outside [0, 1]"));
        }
        if self.batch_size == 0 {
            return bad("batch size (--batch-size) must be at least 1".into());
        }
        if self.square_queries == 0 {
            return bad("square needs at least 1 query (--square-queries)".into());
        }
        Ok(())
    }
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            attacks: vec![EvalAttack::Clean, EvalAttack::Pgd10],
            eps_linf: 8.0 / 255.0,
            eps_sweep: Vec::new(),
            batch_size: 16,
            apgd_iterations: 100,
            square_queries: 5000,
            seed: 0,
            checks: true,
        }
    }
}

/// Results of one column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackEval {
    pub attack: String,
    pub eps_linf: f32,
    /// Accuracy (single-label) or mean AUROC (multi-label): the number the checks compare.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ClassMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<MultiLabelMetrics>,
    /// Share of initially correct samples the attack made wrong (single-label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_success_rate: Option<f64>,
    /// Melanoma against the rest, for models with a `mel` class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub melanoma: Option<MelanomaMetrics>,
    /// Mean over samples of the attack loss at each step.
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub mean_loss_per_step: Vec<f64>,
}

/// One point of an eps sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    pub eps_linf: f32,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub score: f64,
}

/// One fooled-evaluation check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// Filled when the check fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likely_cause: Option<String>,
}

/// Everything an evaluation produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub n: usize,
    pub class_names: Vec<String>,
    pub multi_label: bool,
    pub eps_linf: f32,
    pub results: Vec<AttackEval>,
    pub sweep: Vec<SweepPoint>,
    pub checks: Vec<Check>,
    /// The failed checks' messages.
    pub warnings: Vec<String>,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub elapsed_secs: f64,
}

impl EvalReport {
    pub fn result(&self, attack: &str) -> Option<&AttackEval> {
        self.results.iter().find(|r| r.attack == attack)
    }
}

/// Per-column accumulators.
struct Column {
    name: String,
    eps: f32,
    scores: Vec<Vec<f32>>,
    loss_sum: Vec<f64>,
    loss_count: usize,
}

impl Column {
    fn new(name: &str, eps: f32) -> Self {
        Self {
            name: name.to_string(),
            eps,
            scores: Vec::new(),
            loss_sum: Vec::new(),
            loss_count: 0,
        }
    }

    fn add_losses(&mut self, loss_per_step: &[Vec<f32>]) {
        if self.loss_sum.len() < loss_per_step.len() {
            self.loss_sum.resize(loss_per_step.len(), 0.0);
        }
        for (acc, step) in self.loss_sum.iter_mut().zip(loss_per_step) {
            *acc += step.iter().map(|&v| v as f64).sum::<f64>();
        }
        self.loss_count += loss_per_step.first().map(|s| s.len()).unwrap_or(0);
    }
}

/// Each label's class (0 for a multi-label one, which has none).
pub fn classes_of(labels: &[Label]) -> Vec<usize> {
    labels
        .iter()
        .map(|l| match l {
            Label::Class(k) => *k,
            Label::Findings(_) => 0,
        })
        .collect()
}

fn logits_rows(model: &dyn Classify, x: Tensor<4>) -> Result<Vec<Vec<f32>>> {
    logit_rows(model.logits(x))
}

/// Evaluate `model` on `n` samples: `load(i)` gives sample i's pixels, `labels[i]` its label
/// (class indices already in the model's order). `progress(done, total)` after each batch.
pub fn evaluate(
    model: &dyn Classify,
    device: &Device,
    labels: &[Label],
    load: &mut dyn FnMut(usize) -> Result<PixelImage>,
    options: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> Result<EvalReport> {
    let started = Instant::now();
    let n = labels.len();
    if n == 0 {
        return Err(TriscopeError::InvalidArgument(
            "no samples to evaluate".into(),
        ));
    }
    options.validate()?;
    let multi_label = matches!(labels[0], Label::Findings(_));
    let num_classes = model.num_classes();
    let eps = options.eps_linf;
    let wants = |a: EvalAttack| options.attacks.contains(&a);
    let need_apgd_ce = wants(EvalAttack::ApgdCe) || wants(EvalAttack::Aa);
    let need_apgd_t = (wants(EvalAttack::ApgdT) || wants(EvalAttack::Aa)) && !multi_label;
    let mut warnings = Vec::new();
    if multi_label && (wants(EvalAttack::ApgdT) || wants(EvalAttack::Aa)) {
        warnings.push(
            "apgd-t (and so aa) needs single-label classes; multi-label models get apgd-ce only"
                .to_string(),
        );
    }
    if multi_label && wants(EvalAttack::FabT) {
        warnings.push("fab-t needs single-label classes; it is left out".to_string());
    }

    let mut columns: Vec<Column> = Vec::new();
    let col = |name: &str, e: f32, columns: &mut Vec<Column>| -> usize {
        if let Some(i) = columns.iter().position(|c| c.name == name && c.eps == e) {
            return i;
        }
        columns.push(Column::new(name, e));
        columns.len() - 1
    };
    let clean_ix = col("clean", 0.0, &mut columns);
    let mut attack_cols: Vec<(usize, AttackConfig)> = Vec::new();
    let mut add = |name: &str, cfg: AttackConfig, columns: &mut Vec<Column>| {
        let i = col(name, cfg.eps_linf, columns);
        attack_cols.push((i, cfg));
    };
    let with = |mut c: AttackConfig, e: f32, seed: u64| {
        c.eps_linf = e;
        c.seed = seed;
        c
    };
    if wants(EvalAttack::Fgsm) {
        add(
            "fgsm",
            with(AttackConfig::fgsm(), eps, options.seed),
            &mut columns,
        );
    }
    let checks = options.runs_checks();
    if wants(EvalAttack::Pgd10) || checks {
        add(
            "pgd10",
            with(AttackConfig::pgd(10), eps, options.seed),
            &mut columns,
        );
    }
    if wants(EvalAttack::Pgd20) {
        add(
            "pgd20",
            with(AttackConfig::pgd(20), eps, options.seed),
            &mut columns,
        );
    }
    let apgd = |method| {
        let mut c = AttackConfig::apgd(method);
        c.steps = options.apgd_iterations;
        with(c, eps, options.seed)
    };
    if need_apgd_ce {
        add("apgd-ce", apgd(AttackMethod::ApgdCe), &mut columns);
    }
    if need_apgd_t {
        add("apgd-t", apgd(AttackMethod::ApgdT), &mut columns);
    }
    let square = AttackConfig {
        steps: options.square_queries,
        ..with(AttackConfig::square(), eps, options.seed)
    };
    if wants(EvalAttack::Square) {
        add("square", square.clone(), &mut columns);
    }
    let fab_t = AttackConfig {
        steps: options.apgd_iterations,
        ..with(AttackConfig::fab_t(), eps, options.seed)
    };
    if wants(EvalAttack::FabT) && !multi_label {
        add("fab-t", fab_t.clone(), &mut columns);
    }
    for &e in &options.eps_sweep {
        if e > 0.0 && e != eps {
            add(
                "pgd10",
                with(AttackConfig::pgd(10), e, options.seed),
                &mut columns,
            );
        }
    }
    const HUGE_EPS: f32 = 64.0 / 255.0;
    if checks {
        add(
            "pgd10",
            with(AttackConfig::pgd(10), HUGE_EPS, options.seed),
            &mut columns,
        );
    }
    let noise_ix = checks.then(|| col("uniform-noise", eps, &mut columns));
    // The cascade's stages: after APGD-CE and APGD-T, after FAB-T, and after Square (`aa`).
    let aa_ix = (wants(EvalAttack::Aa) && need_apgd_t).then(|| {
        (
            col("aa-apgd", eps, &mut columns),
            [
                col("aa-fab-t", eps, &mut columns),
                col("aa", eps, &mut columns),
            ],
        )
    });
    let ce_ix = columns
        .iter()
        .position(|c| c.name == "apgd-ce" && c.eps == eps);
    let t_ix = columns
        .iter()
        .position(|c| c.name == "apgd-t" && c.eps == eps);

    let mut noise_rng = SplitMix64::new(options.seed ^ crate::util::rng::offset::EVAL_NOISE);
    let mut done = 0usize;
    for start in (0..n).step_by(options.batch_size) {
        let end = (start + options.batch_size).min(n);
        let images: Vec<PixelImage> = (start..end).map(&mut *load).collect::<Result<_>>()?;
        let (c, h, w) = (images[0].channels, images[0].height, images[0].width);
        let flat: Vec<f32> = images
            .iter()
            .flat_map(|im| im.data.iter().copied())
            .collect();
        let b = end - start;
        let x = Tensor::<4>::from_data(TensorData::new(flat.clone(), [b, c, h, w]), device);
        let batch_labels = &labels[start..end];
        let goal = match &batch_labels[0] {
            Label::Class(_) => AttackGoal::Untargeted(
                batch_labels
                    .iter()
                    .map(|l| match l {
                        Label::Class(k) => Ok(*k),
                        Label::Findings(_) => {
                            Err(TriscopeError::InvalidArgument("mixed label kinds".into()))
                        }
                    })
                    .collect::<Result<_>>()?,
            ),
            Label::Findings(_) => AttackGoal::MultiLabel(
                batch_labels
                    .iter()
                    .map(|l| match l {
                        Label::Findings(f) => Ok(f.clone()),
                        Label::Class(_) => {
                            Err(TriscopeError::InvalidArgument("mixed label kinds".into()))
                        }
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        columns[clean_ix]
            .scores
            .extend(logits_rows(model, x.clone())?);
        for (ix, cfg) in &attack_cols {
            let out = run_attack(model, x.clone(), &goal, cfg, &mut |_| {}, cancel)?;
            columns[*ix].add_losses(&out.loss_per_step);
            columns[*ix]
                .scores
                .extend(logits_rows(model, out.adversarial)?);
        }
        if let Some(ix) = noise_ix {
            let noisy: Vec<f32> = flat
                .iter()
                .map(|&p| (p + (noise_rng.next_f32() * 2.0 - 1.0) * eps).clamp(0.0, 1.0))
                .collect();
            let xn = Tensor::<4>::from_data(TensorData::new(noisy, [b, c, h, w]), device);
            columns[ix].scores.extend(logits_rows(model, xn)?);
        }
        if let (Some((pair, stages)), Some(ce), Some(t)) = (aa_ix, ce_ix, t_ix) {
            // Worst case per sample: the APGD-CE point if it fools, else APGD-T's; then
            // FAB-T and Square in turn on the samples all before them left correct, each
            // one's point where it fools.
            let from = columns[ce].scores.len() - b;
            let ys = classes_of(batch_labels);
            let mut rows = Vec::with_capacity(b);
            for (i, &y) in ys.iter().enumerate() {
                let ce_row = columns[ce].scores[from + i].clone();
                let t_row = columns[t].scores[from + i].clone();
                rows.push(if argmax(&ce_row) != y { ce_row } else { t_row });
            }
            columns[pair].scores.extend(rows.iter().cloned());
            let per = c * h * w;
            for (stage, column) in [&fab_t, &square].into_iter().zip(stages) {
                let left: Vec<usize> = (0..b).filter(|&i| argmax(&rows[i]) == ys[i]).collect();
                if left.is_empty() {
                    columns[column].scores.extend(rows.iter().cloned());
                    continue;
                }
                let pixels: Vec<f32> = left
                    .iter()
                    .flat_map(|&i| flat[i * per..(i + 1) * per].iter().copied())
                    .collect();
                let xs =
                    Tensor::<4>::from_data(TensorData::new(pixels, [left.len(), c, h, w]), device);
                let goal = AttackGoal::Untargeted(left.iter().map(|&i| ys[i]).collect());
                let out = run_attack(model, xs, &goal, stage, &mut |_| {}, cancel)?;
                for (k, row) in logits_rows(model, out.adversarial)?.into_iter().enumerate() {
                    let i = left[k];
                    if argmax(&row) != ys[i] {
                        rows[i] = row;
                    }
                }
                columns[column].scores.extend(rows.iter().cloned());
            }
        }
        done = end;
        progress(done, n);
    }
    debug_assert_eq!(done, n);

    // Metrics per column.
    let truth_classes = classes_of(labels);
    let truth_findings: Vec<Vec<f32>> = labels
        .iter()
        .map(|l| match l {
            Label::Findings(f) => f.clone(),
            Label::Class(_) => Vec::new(),
        })
        .collect();
    let clean_correct: Vec<bool> = columns[clean_ix]
        .scores
        .iter()
        .zip(&truth_classes)
        .map(|(row, &y)| argmax(row) == y)
        .collect();
    let mut all = Vec::new();
    for column in &columns {
        let probs: Vec<Vec<f32>> = column
            .scores
            .iter()
            .map(|r| probabilities(r, multi_label))
            .collect();
        let mean_loss_per_step = column
            .loss_sum
            .iter()
            .map(|s| s / column.loss_count.max(1) as f64)
            .collect();
        let eval = if multi_label {
            let m = multi_label_metrics(&probs, &truth_findings);
            AttackEval {
                attack: column.name.clone(),
                eps_linf: column.eps,
                score: m.mean_auroc,
                metrics: None,
                multi_label: Some(m),
                attack_success_rate: None,
                melanoma: None,
                mean_loss_per_step,
            }
        } else {
            let m = class_metrics(&probs, &truth_classes, num_classes);
            let initially = clean_correct.iter().filter(|c| **c).count();
            let fooled = column
                .scores
                .iter()
                .zip(&truth_classes)
                .zip(&clean_correct)
                .filter(|((row, y), ok)| **ok && argmax(row) != **y)
                .count();
            AttackEval {
                attack: column.name.clone(),
                eps_linf: column.eps,
                score: m.accuracy,
                metrics: Some(m),
                attack_success_rate: (column.name != "clean" && initially > 0)
                    .then(|| fooled as f64 / initially as f64),
                multi_label: None,
                melanoma: None,
                mean_loss_per_step,
            }
        };
        all.push(eval);
    }

    let mut sweep: Vec<SweepPoint> = options
        .eps_sweep
        .iter()
        .filter_map(|&e| {
            let name = if e == 0.0 { "clean" } else { "pgd10" };
            all.iter()
                .find(|r| r.attack == name && (r.eps_linf == e || e == 0.0))
                .map(|r| SweepPoint {
                    eps_linf: e,
                    score: r.score,
                })
        })
        .collect();
    sweep.sort_by(|a, b| a.eps_linf.total_cmp(&b.eps_linf));

    let checks = if checks {
        run_checks(&all, eps, HUGE_EPS, n, multi_label, num_classes)
    } else {
        Vec::new()
    };
    warnings.extend(checks.iter().filter(|c| !c.passed).map(|c| {
        format!(
            "{}: {} (likely cause: {})",
            c.name,
            c.detail,
            c.likely_cause.clone().unwrap_or_default()
        )
    }));
    // Report the requested columns (and the check columns, which the checks cite).
    Ok(EvalReport {
        n,
        class_names: Vec::new(),
        multi_label,
        eps_linf: eps,
        results: all,
        sweep,
        checks,
        warnings,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

fn run_checks(
    all: &[AttackEval],
    eps: f32,
    huge: f32,
    n: usize,
    multi_label: bool,
    num_classes: usize,
) -> Vec<Check> {
    let get = |name: &str, e: f32| all.iter().find(|r| r.attack == name && r.eps_linf == e);
    // One sample's worth of slack: equal counts are not a failure.
    let slack = 1.0 / n as f64 + 1e-9;
    let mut checks = Vec::new();
    let clean = get("clean", 0.0).map(|r| r.score).unwrap_or(f64::NAN);
    let pgd10 = get("pgd10", eps);
    // An attack never makes a model more accurate; when it does, its gradients point nowhere.
    let raised: Vec<String> = all
        .iter()
        .filter(|r| r.attack != "clean" && r.attack != "uniform-noise" && r.score > clean + slack)
        .map(|r| {
            format!(
                "{} at {:.0}/255: {:.4}",
                r.attack,
                r.eps_linf * 255.0,
                r.score
            )
        })
        .collect();
    checks.push(Check {
        name: "no attack raises accuracy above clean".into(),
        passed: raised.is_empty(),
        detail: if raised.is_empty() {
            format!("clean {clean:.4}; every attack at or below it")
        } else {
            format!("clean {clean:.4}; {}", raised.join(", "))
        },
        likely_cause: (!raised.is_empty()).then(|| {
            "shattered or noisy gradients (an untrained or gradient-masked model), or labels misaligned with the model's classes".into()
        }),
    });
    if let (Some(p10), Some(p20)) = (pgd10, get("pgd20", eps)) {
        let ok = p20.score <= p10.score + slack;
        checks.push(Check {
            name: "more steps do not help the model".into(),
            passed: ok,
            detail: format!("PGD-20 {:.4} vs PGD-10 {:.4}", p20.score, p10.score),
            likely_cause: (!ok).then(|| "gradient masking or an attack that has not converged (too few steps, step size too large)".into()),
        });
    }
    if let Some(p10) = pgd10 {
        for name in ["apgd-ce", "apgd-t", "aa"] {
            if let Some(a) = get(name, eps) {
                let ok = a.score <= p10.score + slack;
                checks.push(Check {
                    name: format!("{name} is at least as strong as PGD-10"),
                    passed: ok,
                    detail: format!("{name} {:.4} vs PGD-10 {:.4}", a.score, p10.score),
                    likely_cause: (!ok).then(|| "gradient masking (APGD's adaptive steps should beat fixed-step PGD) or too few APGD iterations".into()),
                });
            }
        }
        let rising = p10.mean_loss_per_step.last().copied().unwrap_or(f64::NAN)
            > p10.mean_loss_per_step.first().copied().unwrap_or(f64::NAN);
        checks.push(Check {
            name: "the attack loss rises over the steps".into(),
            passed: rising,
            detail: format!(
                "PGD-10 mean loss {:.4} at step 1, {:.4} at step {}",
                p10.mean_loss_per_step.first().copied().unwrap_or(f64::NAN),
                p10.mean_loss_per_step.last().copied().unwrap_or(f64::NAN),
                p10.mean_loss_per_step.len()
            ),
            likely_cause: (!rising).then(|| "zero or uninformative gradients (gradient masking, non-differentiable preprocessing) or a step size far too large".into()),
        });
        if let Some(noise) = get("uniform-noise", eps) {
            let ok = p10.score <= noise.score + slack;
            checks.push(Check {
                name: "the attack hurts more than random noise of the same eps".into(),
                passed: ok,
                detail: format!(
                    "PGD-10 {:.4} vs uniform noise {:.4} (clean {clean:.4})",
                    p10.score, noise.score
                ),
                likely_cause: (!ok).then(|| {
                    "the attack's gradients are useless: gradient masking or a broken attack".into()
                }),
            });
        }
    }
    if let Some(h) = get("pgd10", huge) {
        // At 64/255 a working attack leaves almost nothing: at most chance level (or, for
        // multi-label AUROC, at most 0.6).
        let limit = if multi_label {
            0.6
        } else {
            (1.0 / num_classes as f64).max(0.1)
        };
        let ok = h.score <= limit;
        checks.push(Check {
            name: "accuracy collapses at a huge eps".into(),
            passed: ok,
            detail: format!("PGD-10 at eps {:.0}/255: {:.4} (limit {limit:.2})", huge * 255.0, h.score),
            likely_cause: (!ok).then(|| "gradient masking, too few steps, or a wrong eps scale (eps must be in [0, 1] pixel units)".into()),
        });
    }
    checks
}
