//! FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
//! boundary attack"), L-inf and targeted, as AutoAttack's standard version runs it (`fab-t`:
//! one run without a random start, 100 iterations, the runner-up classes of the clean logits
//! as targets in turn, at most 9) and torchattacks' `FAB(multi_targeted=True)` implements it.
//!
//! Each iteration linearises the margin `z_t - z_y` at the current point, projects both the
//! current point and the clean image onto that hyperplane within the [0, 1] box (the smallest
//! L-inf step, [`project_linf`]), and moves to a convex combination of the two projections,
//! overshooting by `eta` and leaning towards the clean image by at most `alpha_max`. Once the
//! point is misclassified it is kept if it is the smallest such point so far, and pulled back
//! towards the clean image by `beta`. An image counts as fooled when that smallest point lies
//! within the eps-ball; the next target runs on the images no earlier one fooled. Nothing is
//! drawn at random, so one run is the whole attack.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Tensor, TensorData};

use super::{AttackOutput, Classify, StepReport, class_at_rank};
use crate::error::{Result, TriscopeError};
use crate::model::host::PerturbationNorms;
use crate::util::numeric::argmax;

/// FAB-T settings (AutoAttack's standard version).
#[derive(Debug, Clone, PartialEq)]
pub struct FabConfig {
    pub eps_linf: f32,
    /// Iterations per target class.
    pub iterations: usize,
    /// Runner-up classes tried, at most the model's classes less one.
    pub target_classes: usize,
    /// Largest weight of the step taken from the clean image's projection.
    pub alpha_max: f32,
    /// Overshoot of each projection step.
    pub eta: f32,
    /// Pull-back towards the clean image after a misclassified point.
    pub beta: f32,
}

impl FabConfig {
    pub fn standard(eps_linf: f32) -> Self {
        Self {
            eps_linf,
            iterations: 100,
            target_classes: 9,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
        }
    }
}

/// The smallest L-inf step `d` that brings `t` onto the hyperplane `w . (t + d) = b` while
/// `t + d` stays in [0, 1] (FAB's `projection_linf`, one row), or, when the box does not reach
/// the hyperplane, the step to the box's corner closest to it. Coordinates with `w = 0` do
/// not move. The step is `d_i = clamp(+-lambda)` towards the side that raises `w . t`; the
/// `lambda` is found by sorting the coordinates by how far they can move and searching the
/// cumulative sums.
pub fn project_linf(t: &[f32], w: &[f32], b: f32) -> Vec<f32> {
    let n = t.len();
    let dot = |u: &[f32], v: &[f32]| -> f32 {
        u.iter()
            .zip(v)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum::<f64>() as f32
    };
    // Orient the hyperplane so that `t` lies on its non-negative side.
    let sign = if dot(w, t) - b >= 0.0 { 1.0 } else { -1.0 };
    let w: Vec<f32> = w.iter().map(|v| v * sign).collect();
    let b = b * sign;
    let a: Vec<f32> = w.iter().map(|&v| f32::from(u8::from(v < 0.0))).collect();
    // The farthest each coordinate may move (to 0 or 1), and how far that is.
    let mut d: Vec<f32> = (0..n)
        .map(|i| if w[i] != 0.0 { a[i] - t[i] } else { 0.0 })
        .collect();
    let p: Vec<f32> = (0..n).map(|i| a[i] - t[i] * (2.0 * a[i] - 1.0)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let b = b - dot(&w, t);
    let b0 = dot(&w, &d);
    // Cumulative sums over the coordinates from the one that can move farthest.
    let mut s = vec![0.0f32; n];
    let mut sb = vec![0.0f32; n];
    let (mut acc_s, mut acc_sb) = (0.0f64, f64::from(b0));
    for k in 0..n {
        let i = order[n - 1 - k];
        acc_s += f64::from(w[i].abs());
        acc_sb += f64::from(-w[i] * d[i]);
        s[k] = acc_s as f32;
        sb[k] = acc_sb as f32;
    }
    let b2 = sb[n - 1] - s[n - 1] * p[order[0]];
    let corner = b - b2 > 0.0;
    let inside = (b - b0 > 0.0) && !corner;
    if corner {
        let lambda = ((b - sb[n - 1]) / (-s[n - 1])).max(0.0);
        for i in 0..n {
            d[i] = (2.0 * a[i] - 1.0) * lambda;
        }
    } else if inside {
        let (mut lb, mut ub) = (0usize, n - 1);
        for _ in 0..(n as f64).log2().ceil() as usize {
            let mid = (lb + ub) / 2;
            let b2 = sb[mid] - s[mid] * p[order[n - 1 - mid]];
            if b - b2 > 0.0 {
                lb = mid;
            } else {
                ub = mid;
            }
        }
        let lambda = ((b - sb[lb]) / (-s[lb])).max(0.0);
        for i in 0..n {
            d[i] = lambda.min(d[i]) * a[i] + (-lambda).max(d[i]) * (1.0 - a[i]);
        }
    }
    for i in 0..n {
        if w[i] == 0.0 {
            d[i] = 0.0;
        }
    }
    d
}

/// `z_t - z_y` of each image and its gradient at `x` (`[n * d]` pixels of `[n, C, H, W]`).
fn margin_and_gradient(
    model: &dyn Classify,
    x: &[f32],
    dims: [usize; 4],
    labels: &[usize],
    targets: &[usize],
    device: &burn::tensor::Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let [n, _, _, _] = dims;
    let k = model.num_classes();
    let leaf = Tensor::<4>::from_data(TensorData::new(x.to_vec(), dims), device)
        .autodiff()
        .require_grad();
    let mut pick = vec![0.0f32; n * k];
    for i in 0..n {
        pick[i * k + targets[i]] += 1.0;
        pick[i * k + labels[i]] -= 1.0;
    }
    let pick = Tensor::<2>::from_data(TensorData::new(pick, [n, k]), device);
    let margin = (model.logits(leaf.clone()) * pick).sum_dim(1).reshape([n]); // [n]
    let values = crate::model::host::values(margin.clone().inner(), "the margin")?;
    let grads = margin.sum().backward();
    let grad = leaf
        .grad(&grads)
        .ok_or_else(|| TriscopeError::Compute("no gradient reached the input".into()))?;
    Ok((values, crate::model::host::values(grad, "the gradient")?))
}

fn predicted(
    model: &dyn Classify,
    x: &[f32],
    dims: [usize; 4],
    device: &burn::tensor::Device,
) -> Result<Vec<usize>> {
    let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), dims), device);
    Ok(crate::model::host::logit_rows(model.logits(t))?
        .iter()
        .map(|r| argmax(r))
        .collect())
}

/// FAB-T on `x` (`[batch, C, H, W]` in [0, 1]) with the true classes `labels`. Returns, per
/// image, its smallest adversarial point found within the eps-ball, or the clean image where
/// none was; the step report carries each image's current margin `z_t - z_y`.
pub fn fab_targeted(
    model: &dyn Classify,
    x: Tensor<4>,
    labels: &[usize],
    config: &FabConfig,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<AttackOutput> {
    let dims = x.dims();
    let [batch, c, h, w] = dims;
    let classes = model.num_classes();
    if labels.len() != batch || labels.iter().any(|&y| y >= classes) {
        return Err(TriscopeError::InvalidArgument(format!(
            "fab-t needs one true class below {classes} per image ({} images, {} labels)",
            batch,
            labels.len()
        )));
    }
    if config.iterations == 0 {
        return Err(TriscopeError::InvalidArgument(
            "fab-t needs at least 1 iteration".into(),
        ));
    }
    let device = x.device();
    let per = c * h * w;
    let clean = crate::model::host::values(x.clone(), "the images")?; // [b*C*H*W]
    let clean_logits = crate::model::host::logit_rows(model.logits(x))?;
    let n_targets = config.target_classes.min(classes.saturating_sub(1));
    let mut adv = clean.clone();
    // Still to fool: correctly classified and not fooled within eps by an earlier target.
    let mut todo: Vec<bool> = clean_logits
        .iter()
        .zip(labels)
        .map(|(r, &y)| argmax(r) == y)
        .collect();
    let total_steps = n_targets * config.iterations;
    let mut loss_per_step = Vec::with_capacity(total_steps);
    let mut last_margin = vec![0.0f32; batch];
    for rank in 2..n_targets + 2 {
        let ids: Vec<usize> = (0..batch).filter(|&i| todo[i]).collect();
        let bs = ids.len();
        let sub = [bs, c, h, w];
        let ys: Vec<usize> = ids.iter().map(|&i| labels[i]).collect();
        let targets: Vec<usize> = ids
            .iter()
            .map(|&i| class_at_rank(&clean_logits[i], rank))
            .collect();
        let x0: Vec<f32> = ids
            .iter()
            .flat_map(|&i| clean[i * per..(i + 1) * per].iter().copied())
            .collect();
        let mut x1 = x0.clone();
        let mut best = x0.clone();
        let mut best_norm = vec![f32::INFINITY; bs];
        for it in 0..config.iterations {
            if bs == 0 {
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(TriscopeError::Cancelled);
            }
            let (margin, grad) = margin_and_gradient(model, &x1, sub, &ys, &targets, &device)?;
            for j in 0..bs {
                let rows = j * per..(j + 1) * per;
                let (g, p1, p0) = (&grad[rows.clone()], &x1[rows.clone()], &x0[rows.clone()]);
                // The margin's tangent plane: g . z = b at the boundary.
                let b = -margin[j] + g.iter().zip(p1).map(|(a, b)| a * b).sum::<f32>();
                let d1 = project_linf(p1, g, b);
                let d2 = project_linf(p0, g, b);
                let a1 = d1.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-8);
                let a2 = d2.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-8);
                let alpha = (a1 / (a1 + a2)).max(0.0).min(config.alpha_max);
                for (k, v) in x1[rows].iter_mut().enumerate() {
                    let from_current = (*v + config.eta * d1[k]) * (1.0 - alpha);
                    let from_clean = (p0[k] + config.eta * d2[k]) * alpha;
                    *v = (from_current + from_clean).clamp(0.0, 1.0);
                }
                last_margin[ids[j]] = margin[j];
            }
            let now = predicted(model, &x1, sub, &device)?;
            for j in 0..bs {
                if now[j] == ys[j] {
                    continue;
                }
                let rows = j * per..(j + 1) * per;
                let norm = PerturbationNorms::of(&x1[rows.clone()], &x0[rows.clone()]).linf;
                if norm < best_norm[j] {
                    best_norm[j] = norm;
                    best[rows.clone()].copy_from_slice(&x1[rows.clone()]);
                }
                for (v, o) in x1[rows.clone()].iter_mut().zip(&x0[rows]) {
                    *v = o + (*v - o) * config.beta;
                }
            }
            let report = StepReport {
                step: (rank - 2) * config.iterations + it + 1,
                total_steps,
                loss: last_margin.clone(),
            };
            on_step(&report);
            loss_per_step.push(report.loss);
        }
        for (j, &i) in ids.iter().enumerate() {
            if best_norm[j] <= config.eps_linf {
                adv[i * per..(i + 1) * per].copy_from_slice(&best[j * per..(j + 1) * per]);
                todo[i] = false;
            }
        }
    }
    Ok(AttackOutput {
        adversarial: Tensor::<4>::from_data(TensorData::new(adv, dims), &device),
        loss_per_step,
    })
}
