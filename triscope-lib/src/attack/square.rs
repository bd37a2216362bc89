//! Square Attack (Andriushchenko et al. 2020), L-inf, as AutoAttack's `square.py` and
//! torchattacks' `Square` run it: random search that needs no gradient, so it is the attack
//! that still works where a defence only breaks gradients (gradient masking). It starts from
//! vertical stripes of `+-eps` per image, channel and column, then each iteration draws one
//! square (position shared by the batch, one sign per channel), moves it to the other side
//! of the eps-ball and keeps it for the images whose margin loss fell or that were fooled.
//! The square's side follows the published schedule of `p` (the share of the image it
//! covers), halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000,
//! rescaled to the query budget. An image stops drawing queries once fooled.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Tensor, TensorData};

use super::{AttackGoal, AttackOutput, Classify, StepReport, check_goal, goal_reached};
use crate::error::{Result, TriscopeError};
use crate::util::rng::SplitMix64;

/// Square settings (AutoAttack's standard version: 5,000 queries, `p_init` 0.8, 1 restart).
#[derive(Debug, Clone, PartialEq)]
pub struct SquareConfig {
    pub eps_linf: f32,
    /// Queries per image and restart after the initial one (the iterations).
    pub queries: usize,
    /// The share of the image the first squares cover.
    pub p_init: f32,
    /// Independent runs, each on the images the earlier ones did not fool.
    pub restarts: usize,
    pub seed: u64,
}

impl SquareConfig {
    pub fn standard(eps_linf: f32) -> Self {
        Self {
            eps_linf,
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
            seed: 0,
        }
    }
}

/// The share of the image the square covers at iteration `it` (0-based) of `queries`.
pub fn square_share(p_init: f32, it: usize, queries: usize) -> f32 {
    // The schedule is written for 10,000 iterations; AutoAttack rescales it to the budget.
    let it = (it as f64 / queries.max(1) as f64 * 10_000.0) as usize;
    let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
        .iter()
        .filter(|&&at| it > at)
        .count();
    p_init / (1u32 << halvings) as f32
}

/// The margin the attack drives below zero, per row of logits: the true class's logit over
/// the best other (untargeted), the best other over the target's (targeted), or for
/// multi-label goals the smallest agreement `z` (finding present) / `-z` (absent) over the
/// findings, which is negative once any finding's decision flips.
fn margins(rows: &[Vec<f32>], goal: &AttackGoal, ids: &[usize]) -> Vec<f32> {
    let best_other = |r: &[f32], k: usize| {
        r.iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .fold(f32::NEG_INFINITY, |m, (_, v)| m.max(*v))
    };
    rows.iter()
        .zip(ids)
        .map(|(r, &i)| match goal {
            AttackGoal::Untargeted(y) => r[y[i]] - best_other(r, y[i]),
            AttackGoal::Targeted(t) => best_other(r, t[i]) - r[t[i]],
            AttackGoal::MultiLabel(truth) => r
                .iter()
                .zip(&truth[i])
                .map(|(z, y)| if *y > 0.5 { *z } else { -*z })
                .fold(f32::INFINITY, f32::min),
        })
        .collect()
}

/// The goal restricted to the images `ids`, in their order.
fn sub_goal(goal: &AttackGoal, ids: &[usize]) -> AttackGoal {
    match goal {
        AttackGoal::Untargeted(y) => AttackGoal::Untargeted(ids.iter().map(|&i| y[i]).collect()),
        AttackGoal::Targeted(t) => AttackGoal::Targeted(ids.iter().map(|&i| t[i]).collect()),
        AttackGoal::MultiLabel(m) => {
            AttackGoal::MultiLabel(ids.iter().map(|&i| m[i].clone()).collect())
        }
    }
}

/// Square Attack on `x` (`[batch, C, H, W]` pixels in [0, 1]; the model in inference mode).
/// `on_step` sees every iteration, with each image's best margin so far (the loss it
/// descends); `cancel` is checked before each. Every returned image is within `eps_linf` of
/// its input and in [0, 1].
pub fn square(
    model: &dyn Classify,
    x: Tensor<4>,
    goal: &AttackGoal,
    config: &SquareConfig,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<AttackOutput> {
    let [batch, channels, h, w] = x.dims();
    check_goal(goal, batch, model.num_classes())?;
    if config.queries == 0 || config.restarts == 0 {
        return Err(TriscopeError::InvalidArgument(
            "square needs at least 1 query and 1 restart".into(),
        ));
    }
    if !(config.p_init > 0.0 && config.p_init <= 1.0) {
        return Err(TriscopeError::InvalidArgument(format!(
            "square's p_init must be in (0, 1], got {}",
            config.p_init
        )));
    }
    let device = x.device();
    let clean = crate::model::host::values(x, "the images")?; // [b*C*H*W]
    let per = channels * h * w;
    let eps = config.eps_linf;
    let mut adv = clean.clone();
    // The images' margins and whether each is fooled, on `pixels` holding the images `ids`.
    let evaluate = |pixels: Vec<f32>, ids: &[usize]| -> Result<(Vec<f32>, Vec<bool>)> {
        let t = Tensor::<4>::from_data(
            TensorData::new(pixels, [ids.len(), channels, h, w]),
            &device,
        );
        let rows = crate::model::host::logit_rows(model.logits(t))?;
        Ok((
            margins(&rows, goal, ids),
            goal_reached(&rows, &sub_goal(goal, ids)),
        ))
    };
    let (mut margin, mut fooled) = evaluate(clean.clone(), &(0..batch).collect::<Vec<_>>())?;
    let mut loss_per_step = Vec::new();
    let total_steps = config.queries * config.restarts;
    for restart in 0..config.restarts {
        let mut rng = SplitMix64::new(config.seed.wrapping_add(restart as u64));
        let sign = |rng: &mut SplitMix64| if rng.next_f32() < 0.5 { -1.0f32 } else { 1.0 };
        // The start: `x + eps * sign` drawn per image, channel and column (vertical stripes).
        let mut best = adv.clone();
        let todo: Vec<usize> = (0..batch).filter(|&i| !fooled[i]).collect();
        for &i in &todo {
            for c in 0..channels {
                let stripe: Vec<f32> = (0..w).map(|_| sign(&mut rng) * eps).collect();
                for y in 0..h {
                    let row = i * per + (c * h + y) * w;
                    for (x, s) in stripe.iter().enumerate() {
                        best[row + x] = (clean[row + x] + s).clamp(0.0, 1.0);
                    }
                }
            }
        }
        let pixels: Vec<f32> = todo
            .iter()
            .flat_map(|&i| best[i * per..(i + 1) * per].iter().copied())
            .collect();
        let (m, f) = evaluate(pixels, &todo)?;
        let mut best_margin = margin.clone();
        let mut best_fooled = fooled.clone();
        for (k, &i) in todo.iter().enumerate() {
            best_margin[i] = m[k];
            best_fooled[i] = f[k];
        }
        for it in 0..config.queries {
            let active: Vec<usize> = todo.iter().copied().filter(|&i| !best_fooled[i]).collect();
            if active.is_empty() {
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(TriscopeError::Cancelled);
            }
            let share = square_share(config.p_init, it, config.queries);
            let side = ((share * (h * w) as f32).sqrt().round() as usize).clamp(1, h.min(w));
            let top = (rng.next_f32() * (h - side) as f32) as usize;
            let left = (rng.next_f32() * (w - side) as f32) as usize;
            let signs: Vec<f32> = (0..channels).map(|_| sign(&mut rng) * 2.0 * eps).collect();
            // [active, C, H, W]: the best image with the square moved across the ball.
            let mut pixels = Vec::with_capacity(active.len() * per);
            for &i in &active {
                let start = pixels.len();
                pixels.extend_from_slice(&best[i * per..(i + 1) * per]);
                for (c, s) in signs.iter().enumerate() {
                    for y in top..top + side {
                        for x in left..left + side {
                            let at = (c * h + y) * w + x;
                            let o = clean[i * per + at];
                            let v = &mut pixels[start + at];
                            *v = (*v + s).clamp(o - eps, o + eps).clamp(0.0, 1.0);
                        }
                    }
                }
            }
            let (m, f) = evaluate(pixels.clone(), &active)?;
            for (k, &i) in active.iter().enumerate() {
                if m[k] < best_margin[i] || f[k] {
                    best_margin[i] = m[k];
                    best_fooled[i] = f[k];
                    best[i * per..(i + 1) * per].copy_from_slice(&pixels[k * per..(k + 1) * per]);
                }
            }
            let report = StepReport {
                step: restart * config.queries + it + 1,
                total_steps,
                loss: best_margin.clone(),
            };
            on_step(&report);
            loss_per_step.push(report.loss);
        }
        // Keep this run's point where it fooled the image, or on the first run where
        // nothing did (the best margin found: what the attack returns for a robust image).
        for &i in &todo {
            if best_fooled[i] || restart == 0 {
                adv[i * per..(i + 1) * per].copy_from_slice(&best[i * per..(i + 1) * per]);
                margin[i] = best_margin[i];
                fooled[i] = best_fooled[i];
            }
        }
        if fooled.iter().all(|f| *f) {
            break;
        }
    }
    Ok(AttackOutput {
        adversarial: Tensor::<4>::from_data(TensorData::new(adv, [batch, channels, h, w]), &device),
        loss_per_step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_halves_at_the_published_iterations() {
        assert_eq!(square_share(0.8, 0, 10_000), 0.8);
        assert_eq!(square_share(0.8, 10, 10_000), 0.8);
        assert_eq!(square_share(0.8, 11, 10_000), 0.4);
        assert_eq!(square_share(0.8, 201, 10_000), 0.1);
        assert_eq!(square_share(0.8, 9_999, 10_000), 0.8 / 512.0);
        // Rescaled to the budget: iteration 100 of 1,000 is iteration 1,000 of 10,000.
        assert_eq!(
            square_share(0.8, 100, 1000),
            square_share(0.8, 1000, 10_000)
        );
    }

    #[test]
    fn margins_follow_the_goal() {
        let rows = vec![vec![2.0, 0.5, 1.0]];
        assert_eq!(
            margins(&rows, &AttackGoal::Untargeted(vec![0]), &[0]),
            vec![1.0]
        );
        assert_eq!(
            margins(&rows, &AttackGoal::Targeted(vec![2]), &[0]),
            vec![1.0]
        );
        let truth = AttackGoal::MultiLabel(vec![vec![1.0, 0.0, 1.0]]);
        // Agreements 2.0, -0.5 (a finding absent but its logit positive), 1.0.
        assert_eq!(margins(&rows, &truth, &[0]), vec![-0.5]);
    }
}
