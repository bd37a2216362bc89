//! Adversarial attacks in [0, 1] pixel space (normalisation is inside the model).
//!
//! FGSM and L-inf PGD follow torchattacks: FGSM is `clamp(x + eps * sign(grad), 0, 1)`; PGD
//! starts from `x + U(-eps, eps)` (optional), steps `alpha * sign(grad)`, projects onto the
//! eps-ball around `x` and clamps to [0, 1] after every step. The loss is the cross-entropy of
//! the true class (ascended), or of the target class (descended) for targeted attacks, or the
//! summed binary cross-entropy over findings for multi-label models.

pub mod apgd;
pub mod fab;
pub mod report;
pub mod square;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Tensor, TensorData};

use crate::model::host;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::model::ResNet50;
use crate::util::rng::SplitMix64;

/// A differentiable classifier of [0, 1] pixels: what attacks and evaluations run against.
/// [`ResNet50`] is one; tests wrap it (e.g. with an input quantisation that masks gradients).
pub trait Classify {
    /// `[batch, C, H, W]` pixels -> `[batch, classes]` logits.
    fn logits(&self, pixels: Tensor<4>) -> Tensor<2>;
    fn num_classes(&self) -> usize;
}

impl<T: Classify + ?Sized> Classify for &T {
    fn logits(&self, pixels: Tensor<4>) -> Tensor<2> {
        (**self).logits(pixels)
    }
    fn num_classes(&self) -> usize {
        (**self).num_classes()
    }
}

impl Classify for ResNet50 {
    fn logits(&self, pixels: Tensor<4>) -> Tensor<2> {
        self.forward(pixels)
    }
    fn num_classes(&self) -> usize {
        self.config.num_classes
    }
}

/// The class of `row`'s `rank`-th largest logit (1: the prediction, 2: the runner-up): the
/// targets APGD-T and FAB-T take in turn.
pub fn class_at_rank(row: &[f32], rank: usize) -> usize {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&p, &q| row[q].total_cmp(&row[p]));
    order[rank - 1]
}

/// Which attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackMethod {
    Fgsm,
    Pgd,
    /// APGD on the cross-entropy (AutoAttack's `apgd-ce`).
    #[serde(rename = "apgd-ce")]
    ApgdCe,
    /// APGD on the targeted DLR loss over the runner-up classes (AutoAttack's `apgd-t`).
    #[serde(rename = "apgd-t")]
    ApgdT,
    /// Square Attack: gradient-free random search on the margin (AutoAttack's `square`);
    /// `steps` is its query budget.
    Square,
    /// FAB-T: the smallest adversarial towards each runner-up class in turn (AutoAttack's
    /// `fab-t`); `steps` is its iterations per target.
    #[serde(rename = "fab-t")]
    FabT,
}

impl AttackMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fgsm => "fgsm",
            Self::Pgd => "pgd",
            Self::ApgdCe => "apgd-ce",
            Self::ApgdT => "apgd-t",
            Self::Square => "square",
            Self::FabT => "fab-t",
        }
    }

    /// Whether a request may name a target class: APGD-T and FAB-T choose their own (the
    /// runner-up classes). The one rule the CLI, the library and the app's menu follow.
    pub fn takes_target(self) -> bool {
        !matches!(self, Self::ApgdT | Self::FabT)
    }
}

impl crate::util::choice::Choice for AttackMethod {
    const KIND: &'static str = "attack";
    const ALL: &'static [Self] = &[
        Self::Fgsm,
        Self::Pgd,
        Self::ApgdCe,
        Self::ApgdT,
        Self::Square,
        Self::FabT,
    ];
    fn name(self) -> &'static str {
        AttackMethod::name(self)
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::ApgdCe => &["apgd"],
            Self::FabT => &["fab"],
            _ => &[],
        }
    }
}

impl std::str::FromStr for AttackMethod {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::util::choice::parse(s)
    }
}

/// Parameters of one attack run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackConfig {
    pub method: AttackMethod,
    /// L-inf radius in pixel units ([0, 1] scale): 8/255 = 0.0314.
    pub eps_linf: f32,
    /// PGD step size in pixel units.
    pub alpha: f32,
    /// PGD iterations (FGSM: ignored, always one step).
    pub steps: usize,
    /// Start PGD from a uniform point of the eps-ball.
    pub random_start: bool,
    /// Seed of the random start (host-side generator: identical on every backend).
    pub seed: u64,
    /// Threat model of PGD: L-inf (radius `eps_linf`) or L2 (radius `eps_l2`).
    #[serde(default)]
    pub norm: Norm,
    /// L2 radius in pixel units (used with `Norm::L2`), e.g. 0.5.
    #[serde(default)]
    pub eps_l2: f32,
    /// PGD runs from independent random starts; per sample the first that succeeds is kept.
    #[serde(default = "one")]
    pub restarts: usize,
    /// Stop PGD as soon as every sample of the batch is fooled.
    #[serde(default)]
    pub early_stop: bool,
}

fn one() -> usize {
    1
}

/// The norm of the perturbation budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    #[default]
    Linf,
    L2,
}

impl crate::util::choice::Choice for Norm {
    const KIND: &'static str = "norm";
    const ALL: &'static [Self] = &[Self::Linf, Self::L2];
    fn name(self) -> &'static str {
        match self {
            Self::Linf => "linf",
            Self::L2 => "l2",
        }
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Linf => &["inf"],
            _ => &[],
        }
    }
}

impl std::str::FromStr for Norm {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::util::choice::parse(s)
    }
}

impl AttackConfig {
    /// PGD with torchattacks' defaults: eps 8/255, alpha 2/255, 10 steps, random start.
    pub fn pgd(steps: usize) -> Self {
        Self {
            method: AttackMethod::Pgd,
            eps_linf: 8.0 / 255.0,
            alpha: 2.0 / 255.0,
            steps,
            random_start: true,
            seed: 0,
            norm: Norm::Linf,
            eps_l2: 0.5,
            restarts: 1,
            early_stop: false,
        }
    }

    /// APGD-CE or APGD-T with AutoAttack's standard 100 iterations at eps 8/255.
    pub fn apgd(method: AttackMethod) -> Self {
        Self {
            method,
            steps: 100,
            ..Self::pgd(100)
        }
    }

    /// Square with AutoAttack's standard 5,000 queries at eps 8/255.
    pub fn square() -> Self {
        Self {
            method: AttackMethod::Square,
            steps: 5000,
            random_start: false,
            ..Self::pgd(5000)
        }
    }

    /// FAB-T with AutoAttack's standard 100 iterations per target at eps 8/255.
    pub fn fab_t() -> Self {
        Self {
            method: AttackMethod::FabT,
            steps: 100,
            random_start: false,
            ..Self::pgd(100)
        }
    }

    /// The standard settings of `method` (the CLI's and the app's starting point).
    pub fn of_method(method: AttackMethod) -> Self {
        match method {
            AttackMethod::Fgsm => Self::fgsm(),
            AttackMethod::Pgd => Self::pgd(10),
            AttackMethod::Square => Self::square(),
            AttackMethod::FabT => Self::fab_t(),
            AttackMethod::ApgdCe | AttackMethod::ApgdT => Self::apgd(method),
        }
    }

    /// FGSM at eps 8/255.
    pub fn fgsm() -> Self {
        Self {
            method: AttackMethod::Fgsm,
            steps: 1,
            random_start: false,
            ..Self::pgd(1)
        }
    }

    /// Reject nonsense before any compute starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        if !(0.0..=1.0).contains(&self.eps_linf) || !self.eps_linf.is_finite() {
            return bad(format!(
                "eps must be in [0, 1] (pixel scale; 8/255 = 0.031), got {}",
                self.eps_linf
            ));
        }
        if self.method != AttackMethod::Fgsm && self.steps == 0 {
            return bad(format!("{} needs at least 1 step", self.method.name()));
        }
        if self.method == AttackMethod::Pgd && !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return bad(format!("alpha must be positive, got {}", self.alpha));
        }
        if self.norm == Norm::L2 {
            if self.method != AttackMethod::Pgd {
                return bad(format!(
                    "{} is L-inf only; the L2 threat model needs pgd",
                    self.method.name()
                ));
            }
            if !(self.eps_l2 >= 0.0 && self.eps_l2.is_finite()) {
                return bad(format!(
                    "the L2 radius must be finite and >= 0, got {}",
                    self.eps_l2
                ));
            }
        }
        if self.restarts == 0 {
            return bad("restarts must be at least 1".into());
        }
        Ok(())
    }
}

/// What the loss is computed against.
#[derive(Debug, Clone, PartialEq)]
pub enum AttackGoal {
    /// Push each sample away from its class (untargeted).
    Untargeted(Vec<usize>),
    /// Pull each sample towards this class (targeted).
    Targeted(Vec<usize>),
    /// Multi-label: push away from each sample's 0/1 finding vector (summed BCE).
    MultiLabel(Vec<Vec<f32>>),
}

/// Reported after every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// 1-based step.
    pub step: usize,
    pub total_steps: usize,
    /// Per-sample loss at the point where the gradient was taken (the attack ascends it).
    pub loss: Vec<f32>,
}

/// The adversarial batch and the loss curve.
#[derive(Debug, Clone)]
pub struct AttackOutput {
    /// `[batch, C, H, W]`, within the eps-ball of the input and within [0, 1].
    pub adversarial: Tensor<4>,
    /// One entry per step: per-sample loss.
    pub loss_per_step: Vec<Vec<f32>>,
}

/// Run an attack on `x` (`[batch, C, H, W]` pixels in [0, 1], plain device; the model in
/// inference mode). `on_step` sees every step; `cancel` is checked before each step.
pub fn run_attack(
    model: &dyn Classify,
    x: Tensor<4>,
    goal: &AttackGoal,
    config: &AttackConfig,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<AttackOutput> {
    config.validate()?;
    match config.method {
        AttackMethod::ApgdCe => {
            let apgd_config = apgd::ApgdConfig {
                iterations: config.steps,
                seed: config.seed,
                ..apgd::ApgdConfig::standard(config.eps_linf)
            };
            return apgd::apgd(
                model,
                x,
                goal,
                &apgd::ApgdLoss::CrossEntropy,
                &apgd_config,
                on_step,
                cancel,
            );
        }
        AttackMethod::ApgdT => {
            let AttackGoal::Untargeted(labels) = goal else {
                return Err(TriscopeError::InvalidArgument(
                    "apgd-t chooses its own targets: give the true classes (untargeted, single-label)".into(),
                ));
            };
            let apgd_config = apgd::ApgdConfig {
                iterations: config.steps,
                seed: config.seed,
                ..apgd::ApgdConfig::standard(config.eps_linf)
            };
            return apgd::apgd_targeted(model, x, labels, &apgd_config, on_step, cancel);
        }
        AttackMethod::Square => {
            let square_config = square::SquareConfig {
                queries: config.steps,
                restarts: config.restarts,
                seed: config.seed,
                ..square::SquareConfig::standard(config.eps_linf)
            };
            return square::square(model, x, goal, &square_config, on_step, cancel);
        }
        AttackMethod::FabT => {
            let AttackGoal::Untargeted(labels) = goal else {
                return Err(TriscopeError::InvalidArgument(
                    "fab-t chooses its own targets: give the true classes (untargeted, single-label)".into(),
                ));
            };
            let fab_config = fab::FabConfig {
                iterations: config.steps,
                ..fab::FabConfig::standard(config.eps_linf)
            };
            return fab::fab_targeted(model, x, labels, &fab_config, on_step, cancel);
        }
        AttackMethod::Fgsm | AttackMethod::Pgd => {}
    }
    let mut best: Option<(AttackOutput, Vec<bool>)> = None;
    for restart in 0..config.restarts {
        let mut run_config = config.clone();
        run_config.seed = config.seed.wrapping_add(restart as u64);
        let start = random_start(&x, &run_config);
        let out = run_attack_from(model, x.clone(), start, goal, &run_config, on_step, cancel)?;
        if config.restarts == 1 {
            return Ok(out);
        }
        let success = succeeded(model, &out.adversarial, goal)?;
        best = Some(match best {
            None => (out, success),
            Some((prev, prev_success)) => {
                // Keep each sample's first successful point; unsuccessful ones take the latest.
                let take: Vec<bool> = prev_success.iter().map(|p| !p).collect();
                let mask = bool_mask(&take, &x.device());
                let adversarial =
                    prev.adversarial.clone() * (mask.clone().neg() + 1.0) + out.adversarial * mask;
                let mut loss_per_step = prev.loss_per_step;
                loss_per_step.extend(out.loss_per_step);
                let merged: Vec<bool> = success
                    .iter()
                    .zip(&prev_success)
                    .map(|(s, p)| *s || *p)
                    .collect();
                (
                    AttackOutput {
                        adversarial,
                        loss_per_step,
                    },
                    merged,
                )
            }
        });
        if best.as_ref().is_some_and(|(_, s)| s.iter().all(|v| *v)) {
            break;
        }
    }
    best.map(|(out, _)| out)
        .ok_or_else(|| TriscopeError::InvalidArgument("restarts must be at least 1".into()))
}

/// `[batch, 1, 1, 1]` of 1.0 where `flags` is set: selects whole samples of a batch.
pub(crate) fn bool_mask(flags: &[bool], device: &burn::tensor::Device) -> Tensor<4> {
    let v: Vec<f32> = flags.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect();
    Tensor::from_data(TensorData::new(v, [flags.len(), 1, 1, 1]), device)
}

/// The starting point of a run: `x` (FGSM, no random start), a uniform point of the L-inf
/// ball, or a point of the L2 ball (random direction, radius uniform in [0, eps]).
pub(crate) fn random_start(x: &Tensor<4>, config: &AttackConfig) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    if config.method != AttackMethod::Pgd || !config.random_start {
        return x.clone();
    }
    let mut rng = SplitMix64::new(config.seed);
    let per = channels * h * w;
    let noise: Vec<f32> = match config.norm {
        Norm::Linf => {
            if config.eps_linf <= 0.0 {
                return x.clone();
            }
            let eps = config.eps_linf;
            (0..batch * per)
                .map(|_| (rng.next_f32() * 2.0 - 1.0) * eps)
                .collect()
        }
        Norm::L2 => {
            let mut v: Vec<f32> = (0..batch * per).map(|_| rng.next_normal()).collect();
            for s in 0..batch {
                let chunk = &mut v[s * per..(s + 1) * per];
                let norm = chunk.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                let radius = rng.next_f32() * config.eps_l2;
                for a in chunk.iter_mut() {
                    *a *= radius / norm;
                }
            }
            v
        }
    };
    let noise =
        Tensor::<4>::from_data(TensorData::new(noise, [batch, channels, h, w]), &x.device());
    (x.clone() + noise).clamp(0.0, 1.0)
}

/// Per sample: did the attack reach its goal at `adv`?
fn succeeded(model: &dyn Classify, adv: &Tensor<4>, goal: &AttackGoal) -> Result<Vec<bool>> {
    Ok(goal_reached(
        &host::logit_rows(model.logits(adv.clone()))?,
        goal,
    ))
}

/// Per sample: does this row of logits meet the attack's goal (untargeted: not the true
/// class; targeted: the target; multi-label: some finding's decision at 0.5 flipped)?
pub(crate) fn goal_reached(rows: &[Vec<f32>], goal: &AttackGoal) -> Vec<bool> {
    let argmax = crate::util::numeric::argmax;
    match goal {
        AttackGoal::Untargeted(y) => rows.iter().zip(y).map(|(r, &y)| argmax(r) != y).collect(),
        AttackGoal::Targeted(t) => rows.iter().zip(t).map(|(r, &t)| argmax(r) == t).collect(),
        AttackGoal::MultiLabel(truth) => rows
            .iter()
            .zip(truth)
            .map(|(r, t)| r.iter().zip(t).any(|(z, y)| (*z >= 0.0) != (*y > 0.5)))
            .collect(),
    }
}

/// As [`run_attack`], from a given starting point `start` (inside the eps-ball of `x`)
/// instead of `x` or a random start: resuming an attack, or checking one step in isolation.
pub fn run_attack_from(
    model: &dyn Classify,
    x: Tensor<4>,
    start: Tensor<4>,
    goal: &AttackGoal,
    config: &AttackConfig,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<AttackOutput> {
    config.validate()?;
    if matches!(
        config.method,
        AttackMethod::ApgdCe | AttackMethod::ApgdT | AttackMethod::Square | AttackMethod::FabT
    ) {
        return Err(TriscopeError::InvalidArgument(
            "a start point can be given to fgsm and pgd only".into(),
        ));
    }
    let [batch, _, _, _] = x.dims();
    if start.dims() != x.dims() {
        return Err(TriscopeError::InvalidArgument(format!(
            "start point {:?} and input {:?} differ in shape",
            start.dims(),
            x.dims()
        )));
    }
    check_goal(goal, batch, model.num_classes())?;
    let device = x.device();
    let eps = config.eps_linf;
    let (steps, step_size) = match config.method {
        AttackMethod::Fgsm => (1, eps),
        _ => (config.steps, config.alpha),
    };
    let mut adv = start;
    let lower = (x.clone() - eps).clamp_min(0.0); // [b, C, H, W]
    let upper = (x.clone() + eps).clamp_max(1.0);
    let mut loss_per_step = Vec::with_capacity(steps);
    for step in 1..=steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(TriscopeError::Cancelled);
        }
        let leaf = adv.clone().autodiff().require_grad();
        let logits = model.logits(leaf.clone()); // [b, classes]
        if config.early_stop
            && goal_reached(&host::logit_rows(logits.clone())?, goal)
                .iter()
                .all(|v| *v)
        {
            break;
        }
        let per_sample = objective(logits, goal, &device)?; // [b], ascended
        let loss = host::values(per_sample.clone().inner(), "the loss")?;
        let grads = per_sample.sum().backward();
        let grad = leaf
            .grad(&grads)
            .ok_or_else(|| TriscopeError::Compute("no gradient reached the input".into()))?;
        adv = match config.norm {
            // Sign step, then project onto the eps-ball intersected with [0, 1].
            Norm::Linf => (adv + grad.sign() * step_size)
                .max_pair(lower.clone())
                .min_pair(upper.clone()),
            // Normalised gradient step, then rescale delta into the L2 ball, then clamp.
            Norm::L2 => {
                let g_norm = grad.clone().powi_scalar(2).sum_dims(&[1, 2, 3]).sqrt() + 1e-10; // [b, 1, 1, 1]
                let stepped = adv + grad / g_norm * step_size;
                let delta = stepped - x.clone();
                let d_norm = delta.clone().powi_scalar(2).sum_dims(&[1, 2, 3]).sqrt(); // [b, 1, 1, 1]
                let factor = (d_norm + 1e-12)
                    .recip()
                    .mul_scalar(config.eps_l2)
                    .clamp_max(1.0);
                (x.clone() + delta * factor).clamp(0.0, 1.0)
            }
        };
        let report = StepReport {
            step,
            total_steps: steps,
            loss: loss.clone(),
        };
        on_step(&report);
        loss_per_step.push(loss);
    }
    Ok(AttackOutput {
        adversarial: adv,
        loss_per_step,
    })
}

pub(crate) fn check_goal(goal: &AttackGoal, batch: usize, num_classes: usize) -> Result<()> {
    let (n, classes): (usize, Vec<usize>) = match goal {
        AttackGoal::Untargeted(c) | AttackGoal::Targeted(c) => (c.len(), c.clone()),
        AttackGoal::MultiLabel(rows) => {
            if let Some(r) = rows.iter().find(|r| r.len() != num_classes) {
                return Err(TriscopeError::InvalidArgument(format!(
                    "a finding vector has {} entries, the model {num_classes}",
                    r.len()
                )));
            }
            (rows.len(), Vec::new())
        }
    };
    if n != batch {
        return Err(TriscopeError::InvalidArgument(format!(
            "{n} labels for a batch of {batch}"
        )));
    }
    if let Some(c) = classes.iter().find(|&&c| c >= num_classes) {
        return Err(TriscopeError::InvalidArgument(format!(
            "class {c} does not exist: the model has {num_classes} classes"
        )));
    }
    Ok(())
}

/// The per-sample quantity the attack ascends. `[batch, classes]` -> `[batch]`.
pub(crate) fn objective(
    logits: Tensor<2>,
    goal: &AttackGoal,
    device: &burn::tensor::Device,
) -> Result<Tensor<1>> {
    let [b, c] = logits.dims();
    let one_hot = |classes: &[usize]| {
        let mut v = vec![0.0f32; b * c];
        for (i, &k) in classes.iter().enumerate() {
            v[i * c + k] = 1.0;
        }
        Tensor::<2>::from_data(TensorData::new(v, [b, c]), device)
    };
    Ok(match goal {
        // CE(y) = -log p_y: ascend it.
        AttackGoal::Untargeted(y) => (log_softmax(logits, 1) * one_hot(y))
            .sum_dim(1)
            .neg()
            .reshape([b]),
        // Descend CE(t): ascend log p_t.
        AttackGoal::Targeted(t) => (log_softmax(logits, 1) * one_hot(t))
            .sum_dim(1)
            .reshape([b]),
        AttackGoal::MultiLabel(rows) => {
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            let y = Tensor::<2>::from_data(TensorData::new(flat, [b, c]), device);
            // BCE = -(y log s(z) + (1 - y) log s(-z)), summed over findings.
            let pos = log_sigmoid(logits.clone()) * y.clone();
            let neg = log_sigmoid(logits.neg()) * (y.neg() + 1.0);
            (pos + neg).sum_dim(1).neg().reshape([b])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(AttackConfig::pgd(10).validate().is_ok());
        let mut c = AttackConfig::pgd(10);
        c.eps_linf = -0.1;
        assert!(c.validate().unwrap_err().to_string().contains("eps"));
        c.eps_linf = 8.0;
        assert!(c.validate().is_err());
        let mut c = AttackConfig::pgd(0);
        assert!(c.validate().unwrap_err().to_string().contains("step"));
        c.steps = 3;
        c.alpha = 0.0;
        assert!(c.validate().is_err());
        assert!("bim".parse::<AttackMethod>().is_err());
        assert_eq!(
            "apgd-t".parse::<AttackMethod>().unwrap(),
            AttackMethod::ApgdT
        );
        let mut c = AttackConfig::apgd(AttackMethod::ApgdCe);
        assert_eq!(c.steps, 100);
        c.steps = 0;
        assert!(c.validate().is_err());
    }
}
