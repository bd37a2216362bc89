//! APGD (Croce & Hein 2020) as in AutoAttack's `autopgd_base.py`, L-inf, one restart:
//! step size 2 eps halved at checkpoints (p_0 = 0, p_1 = 0.22, ... shrinking by 0.03, never
//! below 0.06 of the iterations) when fewer than 75% of the steps since the last checkpoint
//! raised the loss or the best loss did not improve; momentum 0.75; restart from the best
//! point after a halving. APGD-CE ascends the cross-entropy; APGD-T ascends the targeted DLR
//! loss for each of the `min(9, C - 1)` runner-up classes of the clean prediction in turn.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Tensor, TensorData};

use super::{
    AttackGoal, AttackOutput, Classify, StepReport, bool_mask, check_goal, class_at_rank,
    goal_reached, objective,
};
use crate::error::{Result, TriscopeError};
use crate::util::rng::SplitMix64;

/// The loss APGD ascends.
#[derive(Debug, Clone, PartialEq)]
pub enum ApgdLoss {
    /// Cross-entropy of the true class (summed BCE for multi-label goals).
    CrossEntropy,
    /// Targeted DLR towards `targets[i]` (needs 4 or more classes).
    TargetedDlr { targets: Vec<usize> },
}

/// APGD settings (AutoAttack's standard version: 100 iterations, rho 0.75, one restart).
#[derive(Debug, Clone, PartialEq)]
pub struct ApgdConfig {
    pub eps_linf: f32,
    pub iterations: usize,
    pub rho: f32,
    pub seed: u64,
}

impl ApgdConfig {
    pub fn standard(eps_linf: f32) -> Self {
        Self {
            eps_linf,
            iterations: 100,
            rho: 0.75,
            seed: 0,
        }
    }
}

struct Eval {
    loss: Vec<f32>,
    logits: Vec<Vec<f32>>,
    grad: Tensor<4>,
}

fn blend(keep: Tensor<4>, take: Tensor<4>, mask: &Tensor<4>) -> Tensor<4> {
    keep * (mask.clone().neg() + 1.0) + take * mask.clone()
}

/// Loss per sample (ascended), logits and the input gradient at `x_adv`.
fn evaluate(
    model: &dyn Classify,
    x_adv: &Tensor<4>,
    goal: &AttackGoal,
    loss: &ApgdLoss,
) -> Result<Eval> {
    let device = x_adv.device();
    let leaf = x_adv.clone().autodiff().require_grad();
    let logits = model.logits(leaf.clone()); // [b, classes]
    let logit_values = crate::model::host::logit_rows(logits.clone())?;
    let per_sample = match (loss, goal) {
        (ApgdLoss::CrossEntropy, _) => objective(logits, goal, &device)?,
        (ApgdLoss::TargetedDlr { targets }, AttackGoal::Untargeted(labels)) => {
            dlr_targeted(logits, &logit_values, labels, targets, &device)
        }
        (ApgdLoss::TargetedDlr { .. }, _) => {
            return Err(TriscopeError::InvalidArgument(
                "targeted DLR needs the true classes (an untargeted, single-label goal)".into(),
            ));
        }
    };
    let loss_values = crate::model::host::values(per_sample.clone().inner(), "the loss")?;
    let grads = per_sample.sum().backward();
    let grad = leaf
        .grad(&grads)
        .ok_or_else(|| TriscopeError::Compute("no gradient reached the input".into()))?;
    Ok(Eval {
        loss: loss_values,
        logits: logit_values,
        grad,
    })
}

/// `-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12)` with z_(k) the k-th largest logit.
/// The order comes from the current logits, as torch's differentiable `sort` does.
fn dlr_targeted(
    logits: Tensor<2>,
    values: &[Vec<f32>],
    labels: &[usize],
    targets: &[usize],
    device: &Device,
) -> Tensor<1> {
    let [b, c] = logits.dims();
    let mut diff = vec![0.0f32; b * c];
    let mut denom = vec![0.0f32; b * c];
    for (i, row) in values.iter().enumerate() {
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&p, &q| row[q].total_cmp(&row[p]));
        diff[i * c + labels[i]] += 1.0;
        diff[i * c + targets[i]] -= 1.0;
        denom[i * c + order[0]] += 1.0;
        denom[i * c + order[2]] -= 0.5;
        denom[i * c + order[3]] -= 0.5;
    }
    let diff = Tensor::<2>::from_data(TensorData::new(diff, [b, c]), device);
    let denom = Tensor::<2>::from_data(TensorData::new(denom, [b, c]), device);
    let num = (logits.clone() * diff).sum_dim(1); // [b, 1]
    let den = (logits * denom).sum_dim(1) + 1e-12;
    (num / den).neg().reshape([b])
}

/// Still classified as the attack does not want (the negation of the goal).
fn predicted_correct(logits: &[Vec<f32>], goal: &AttackGoal) -> Vec<bool> {
    goal_reached(logits, goal).into_iter().map(|g| !g).collect()
}

/// One APGD run. Returns, per sample, the first adversarial point that fooled the model if
/// any was found, else the highest-loss point, and the loss of every iteration.
pub fn apgd(
    model: &dyn Classify,
    x: Tensor<4>,
    goal: &AttackGoal,
    loss: &ApgdLoss,
    config: &ApgdConfig,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<AttackOutput> {
    let [b, c, h, w] = x.dims();
    check_goal(goal, b, model.num_classes())?;
    if !(0.0..=1.0).contains(&config.eps_linf) {
        return Err(TriscopeError::InvalidArgument(format!(
            "eps must be in [0, 1], got {}",
            config.eps_linf
        )));
    }
    if config.iterations == 0 {
        return Err(TriscopeError::InvalidArgument(
            "APGD needs at least 1 iteration".into(),
        ));
    }
    let device = x.device();
    let eps = config.eps_linf;
    let n_iter = config.iterations;
    let n_iter_2 = ((0.22 * n_iter as f64) as usize).max(1);
    let n_iter_min = ((0.06 * n_iter as f64) as usize).max(1);
    let size_decr = ((0.03 * n_iter as f64) as usize).max(1);

    // Random start: x + eps * t / max|t| per sample, t uniform in [-1, 1].
    let mut rng = SplitMix64::new(config.seed);
    let per = c * h * w;
    let mut t: Vec<f32> = (0..b * per).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    for s in 0..b {
        let chunk = &mut t[s * per..(s + 1) * per];
        let m = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        for v in chunk.iter_mut() {
            *v *= eps / m;
        }
    }
    let lower = (x.clone() - eps).clamp_min(0.0);
    let upper = (x.clone() + eps).clamp_max(1.0);
    let project = |t: Tensor<4>| t.max_pair(lower.clone()).min_pair(upper.clone());
    let mut x_adv =
        (x.clone() + Tensor::from_data(TensorData::new(t, [b, c, h, w]), &device)).clamp(0.0, 1.0);

    let first = evaluate(model, &x_adv, goal, loss)?;
    let mut acc = predicted_correct(&first.logits, goal);
    let mut x_best = x_adv.clone();
    let mut x_best_adv = x_adv.clone();
    let mut grad = first.grad;
    let mut grad_best = grad.clone();
    let mut loss_best = first.loss.clone();
    let mut step_size = vec![2.0 * eps; b];
    let mut x_adv_old = x_adv.clone();
    let mut k = n_iter_2;
    let mut counter3 = 0usize;
    let mut loss_best_last_check = loss_best.clone();
    let mut reduced_last_check = vec![true; b];
    let mut loss_steps: Vec<Vec<f32>> = vec![vec![0.0; b]; n_iter];

    for i in 0..n_iter {
        if cancel.load(Ordering::Relaxed) {
            return Err(TriscopeError::Cancelled);
        }
        let grad2 = x_adv.clone() - x_adv_old.clone();
        x_adv_old = x_adv.clone();
        let a = if i > 0 { 0.75 } else { 1.0 };
        let steps =
            Tensor::<4>::from_data(TensorData::new(step_size.clone(), [b, 1, 1, 1]), &device);
        let x1 = project(x_adv.clone() + grad.clone().sign() * steps);
        let x1 = project(x_adv.clone() + (x1 - x_adv.clone()) * a + grad2 * (1.0 - a));
        x_adv = x1;

        let e = evaluate(model, &x_adv, goal, loss)?;
        grad = e.grad;
        let pred_ok = predicted_correct(&e.logits, goal);
        let newly_fooled: Vec<bool> = pred_ok.iter().map(|ok| !ok).collect();
        for (a, ok) in acc.iter_mut().zip(&pred_ok) {
            *a = *a && *ok;
        }
        x_best_adv = blend(
            x_best_adv,
            x_adv.clone(),
            &bool_mask(&newly_fooled, &device),
        );

        let improved: Vec<bool> = e
            .loss
            .iter()
            .zip(&loss_best)
            .map(|(l, best)| l > best)
            .collect();
        let m = bool_mask(&improved, &device);
        x_best = blend(x_best, x_adv.clone(), &m);
        grad_best = blend(grad_best, grad.clone(), &m);
        for s in 0..b {
            if improved[s] {
                loss_best[s] = e.loss[s];
            }
        }
        loss_steps[i] = e.loss.clone();
        on_step(&StepReport {
            step: i + 1,
            total_steps: n_iter,
            loss: e.loss,
        });

        counter3 += 1;
        if counter3 == k {
            // Oscillation: fewer than rho * k of the last k steps raised the loss.
            let mut reduce = vec![false; b];
            for s in 0..b {
                let mut raised = 0usize;
                for back in 0..k {
                    let now = loss_steps[i - back][s];
                    // AutoAttack indexes with j - k - 1 = -1 at the first checkpoint: the last,
                    // still zero, row.
                    let before = if i > back {
                        loss_steps[i - back - 1][s]
                    } else {
                        loss_steps[n_iter - 1][s]
                    };
                    if now > before {
                        raised += 1;
                    }
                }
                let oscillating = (raised as f32) <= k as f32 * config.rho;
                let no_improvement =
                    !reduced_last_check[s] && loss_best_last_check[s] >= loss_best[s];
                reduce[s] = oscillating || no_improvement;
            }
            reduced_last_check = reduce.clone();
            loss_best_last_check = loss_best.clone();
            if reduce.iter().any(|r| *r) {
                for s in 0..b {
                    if reduce[s] {
                        step_size[s] /= 2.0;
                    }
                }
                let m = bool_mask(&reduce, &device);
                x_adv = blend(x_adv, x_best.clone(), &m);
                grad = blend(grad, grad_best.clone(), &m);
            }
            k = k.saturating_sub(size_decr).max(n_iter_min);
            counter3 = 0;
        }
    }
    // Fooled samples keep the point that fooled; the others the highest-loss point.
    let robust = bool_mask(&acc, &device);
    let adversarial = blend(x_best_adv, x_best, &robust);
    Ok(AttackOutput {
        adversarial,
        loss_per_step: loss_steps,
    })
}

/// APGD-T: targeted DLR towards each of the `n_targets` runner-up classes of the clean
/// prediction in turn (AutoAttack: `min(9, C - 1)`), keeping for each sample the first run
/// that fools it. Models with fewer than 4 classes use the targeted cross-entropy instead.
pub fn apgd_targeted(
    model: &dyn Classify,
    x: Tensor<4>,
    labels: &[usize],
    config: &ApgdConfig,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<AttackOutput> {
    let classes = model.num_classes();
    let b = labels.len();
    let n_targets = 9.min(classes.saturating_sub(1));
    let clean = crate::model::host::logit_rows(model.logits(x.clone()))?;
    let device = x.device();
    let goal = AttackGoal::Untargeted(labels.to_vec());
    let mut best = x.clone();
    let mut fooled = vec![false; b];
    let mut curve = Vec::new();
    for rank in 2..n_targets + 2 {
        let targets: Vec<usize> = clean.iter().map(|row| class_at_rank(row, rank)).collect();
        let out = if classes >= 4 {
            apgd(
                model,
                x.clone(),
                &goal,
                &ApgdLoss::TargetedDlr { targets },
                config,
                on_step,
                cancel,
            )?
        } else {
            apgd(
                model,
                x.clone(),
                &AttackGoal::Targeted(targets),
                &ApgdLoss::CrossEntropy,
                config,
                on_step,
                cancel,
            )?
        };
        let now = crate::model::host::logit_rows(model.logits(out.adversarial.clone()))?;
        let newly: Vec<bool> = now
            .iter()
            .zip(labels)
            .zip(&fooled)
            .map(|((row, &y), &done)| !done && crate::util::numeric::argmax(row) != y)
            .collect();
        // Unfooled samples keep the latest run's point (highest loss of that run).
        let take: Vec<bool> = newly.iter().zip(&fooled).map(|(n, f)| *n || !*f).collect();
        best = blend(best, out.adversarial, &bool_mask(&take, &device));
        for (f, n) in fooled.iter_mut().zip(&newly) {
            *f |= *n;
        }
        curve.extend(out.loss_per_step);
        if fooled.iter().all(|f| *f) {
            break;
        }
    }
    Ok(AttackOutput {
        adversarial: best,
        loss_per_step: curve,
    })
}
