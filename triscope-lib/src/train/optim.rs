//! Optimisers (burn's SGD with momentum / Nesterov / weight decay, Adam, AdamW) and the
//! learning-rate schedule: linear warmup from 1% of lr, then cosine annealing to eta_min.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};

use super::config::{OptimizerKind, SchedulerKind, TrainingSection};

/// Fraction of lr the warmup starts from.
pub const WARMUP_START_FRACTION: f64 = 0.01;

/// The learning rate at `progress_epochs` (fractional epochs done, e.g. step / steps_per_epoch).
///
/// Warmup: `lr * (0.01 + 0.99 * p / warmup)` for `p < warmup`; then cosine from lr to eta_min
/// over the remaining epochs (`Constant`: lr).
pub fn learning_rate(t: &TrainingSection, progress_epochs: f64) -> f64 {
    let p = progress_epochs.max(0.0);
    if t.warmup_epochs > 0.0 && p < t.warmup_epochs {
        return t.lr
            * (WARMUP_START_FRACTION + (1.0 - WARMUP_START_FRACTION) * p / t.warmup_epochs);
    }
    match t.scheduler {
        SchedulerKind::Constant => t.lr,
        SchedulerKind::Cosine => {
            let span = t.epochs as f64 - t.warmup_epochs;
            if span <= 0.0 {
                return t.lr;
            }
            let q = ((p - t.warmup_epochs) / span).clamp(0.0, 1.0);
            t.eta_min + (t.lr - t.eta_min) * 0.5 * (1.0 + (std::f64::consts::PI * q).cos())
        }
    }
}

/// burn's optimiser for the config. SGD follows PyTorch (dampening 0; Nesterov
/// `g + m * v`; L2 weight decay added to the gradient); AdamW decouples the decay.
pub fn build_optimizer(t: &TrainingSection) -> ModuleOptimizer {
    let decay = (t.weight_decay > 0.0).then(|| WeightDecayConfig::new(t.weight_decay as f32));
    match t.optimizer {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((t.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(t.momentum)
                    .with_dampening(0.0)
                    .with_nesterov(t.nesterov)
            }))
            .with_weight_decay(decay)
            .init(),
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        OptimizerKind::AdamW => AdamWConfig::new()
            .with_weight_decay(t.weight_decay as f32)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(warmup: f64, epochs: usize) -> TrainingSection {
        TrainingSection {
            lr: 0.1,
            eta_min: 1e-5,
            warmup_epochs: warmup,
            epochs,
            ..TrainingSection::default()
        }
    }

    #[test]
    fn warmup_then_cosine() {
        let t = section(5.0, 100);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(learning_rate(&t, 0.0), 0.001));
        assert!(close(learning_rate(&t, 2.5), 0.1 * (0.01 + 0.99 * 0.5)));
        assert!(close(learning_rate(&t, 5.0), 0.1));
        // Half-way through the cosine part: the mean of lr and eta_min.
        assert!(close(learning_rate(&t, 52.5), (0.1 + 1e-5) / 2.0));
        assert!(close(learning_rate(&t, 100.0), 1e-5));
        // q = 0.25: eta + (lr - eta) * (1 + cos(pi/4)) / 2
        let q = 0.25f64;
        let want = 1e-5 + (0.1 - 1e-5) * 0.5 * (1.0 + (std::f64::consts::PI * q).cos());
        assert!(close(learning_rate(&t, 5.0 + 95.0 * q), want));
        // Monotone decreasing after warmup.
        let mut prev = f64::INFINITY;
        for i in 0..=95 {
            let lr = learning_rate(&t, 5.0 + i as f64);
            assert!(lr <= prev);
            prev = lr;
        }
    }

    #[test]
    fn no_warmup_and_constant() {
        let t = section(0.0, 10);
        assert!((learning_rate(&t, 0.0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&t, 10.0) - 1e-5).abs() < 1e-12);
        let c = TrainingSection {
            scheduler: SchedulerKind::Constant,
            ..section(2.0, 10)
        };
        assert!((learning_rate(&c, 1.0) - 0.1 * 0.505).abs() < 1e-12);
        assert!((learning_rate(&c, 7.0) - 0.1).abs() < 1e-12);
    }
}
