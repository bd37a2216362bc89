//! One optimisation step: the batch's targets, the loss of the configured kind (clean with
//! MixUp / CutMix, PGD-AT, TRADES) with the map penalty, and the update.

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use burn::module::Module;

use super::Trainer;
use super::checkpoint::LAST_FILE;
use crate::attack::{AttackGoal, Classify};
use crate::error::{Result, TriscopeError};
use crate::eval::metrics::{class_metrics, multi_label_metrics};
use crate::inference::probabilities;
use crate::io::data::Label;
use crate::model::ResNet50;
use crate::model::host::logit_rows;
use crate::train::config::LossType;
use crate::train::events::TrainControl;
use crate::train::loader::HostBatch;
use crate::train::loss::{self, InnerAttack, LossParts};
use crate::train::mix::Mix;
use crate::util::numeric::argmax;
use crate::util::rng::{keyed_rng, stream};

impl Trainer {
    pub(super) fn labels(&self, batch: &HostBatch) -> Targets {
        if self.model_config.multi_label {
            Targets::Multi(
                batch
                    .labels
                    .iter()
                    .map(|l| match l {
                        Label::Findings(f) => f.clone(),
                        Label::Class(c) => {
                            let mut v = vec![0.0; self.model_config.num_classes];
                            v[self.class_map[*c]] = 1.0;
                            v
                        }
                    })
                    .collect(),
            )
        } else {
            Targets::Single(
                batch
                    .labels
                    .iter()
                    .map(|l| match l {
                        Label::Class(c) => self.class_map[*c],
                        Label::Findings(_) => 0,
                    })
                    .collect(),
            )
        }
    }

    /// One optimisation step on `batch`.
    pub(super) fn step(
        &mut self,
        batch: &HostBatch,
        lr: f64,
        control: &TrainControl,
    ) -> Result<StepOutcome> {
        let plain = self.device.device.clone();
        let ad = plain.clone().autodiff();
        let data = || TensorData::new(batch.pixels.clone(), batch.shape);
        let targets = self.labels(batch);
        let weights = self.state.class_weights.clone();
        let w = weights.as_deref();
        let smoothing = self.config.training.label_smoothing as f32;
        let r = &self.config.robustness;
        let inner = InnerAttack {
            eps_linf: r.attack.eps_linf,
            steps: r.attack.steps,
            alpha: r.attack.alpha,
        };
        let step_key = self.state.global_step as u64;
        if self.model_config.dropout > 0.0 {
            ad.seed(keyed_rng(self.config.training.seed, stream::DROPOUT, step_key, 0).next_u64());
        }
        // The model in inference mode: the attacks' target, and a frozen backbone's.
        let eval = self.model.valid();
        let frozen = FrozenBackbone {
            backbone: &eval,
            plain: plain.clone(),
            head: &self.model,
        };
        let model: &dyn Classify = if self.config.training.freeze_backbone {
            &frozen
        } else {
            &self.model
        };
        // MixUp / CutMix (clean single-label runs only, as the config and `new` check).
        let [_, _, height, width] = batch.shape;
        let mix = if self.config.training.augment && r.loss_type == LossType::Clean {
            let mut rng = keyed_rng(self.config.training.seed, stream::MIX, step_key, 0);
            Mix::draw(&self.config.training.augmentation, height, width, &mut rng)
        } else {
            None
        };
        let (parts, clean_acc, robust_acc) = match (r.loss_type, &targets) {
            (LossType::Clean, _) => {
                let x = match &mix {
                    Some(m) => TensorData::new(m.apply(&batch.pixels, batch.shape), batch.shape),
                    None => data(),
                };
                let (logits, cam) =
                    self.logits_and_cam(model, Tensor::from_data(x, &ad), batch, &targets)?;
                let loss = match (&mix, &targets) {
                    (Some(m), Targets::Single(y)) => {
                        loss::mixed_cross_entropy(logits.clone(), y, m.lam, w, smoothing)
                    }
                    _ => targets.loss(logits.clone(), w, smoothing),
                };
                // On a mixed batch: against each image's own label.
                let acc = targets.accuracy(&logit_rows(logits)?);
                (self.with_cam(loss, cam), acc, None)
            }
            (LossType::PgdAt, _) => {
                let x = Tensor::<4>::from_data(data(), &plain);
                let clean_acc = targets.accuracy(&logit_rows(eval.forward(x.clone()))?);
                let goal = targets.goal();
                let seed =
                    keyed_rng(self.config.training.seed, stream::ATTACK, step_key, 0).next_u64();
                let x_adv =
                    loss::pgd_adversarial(&eval, &x, &goal, &inner, seed, control.cancel_flag())?;
                let x_adv = Tensor::<4>::from_data(x_adv.into_data(), &ad);
                let (logits_adv, cam) = self.logits_and_cam(model, x_adv, batch, &targets)?;
                let loss = targets.loss(logits_adv.clone(), w, smoothing);
                let robust_acc = targets.accuracy(&logit_rows(logits_adv)?);
                (self.with_cam(loss, cam), clean_acc, Some(robust_acc))
            }
            (LossType::Trades, Targets::Single(labels)) => {
                let x = Tensor::<4>::from_data(data(), &plain);
                let mut rng = keyed_rng(self.config.training.seed, stream::ATTACK, step_key, 0);
                let x_adv = loss::trades_adversarial(&eval, &x, &inner, &mut rng)?;
                let x_adv = Tensor::<4>::from_data(x_adv.into_data(), &ad);
                let x = Tensor::<4>::from_data(data(), &ad);
                let (parts, logits, logits_adv) =
                    loss::trades_outer(model, x, x_adv, labels, w, smoothing, r.beta as f32);
                let clean = targets.accuracy(&logit_rows(logits)?);
                let robust = targets.accuracy(&logit_rows(logits_adv)?);
                (parts, clean, Some(robust))
            }
            (LossType::Trades, Targets::Multi(_)) => {
                return Err(TriscopeError::BadConfig(
                    "robustness.loss_type trades needs single-label classes; use pgd_at for multi-label data"
                        .into(),
                ));
            }
        };
        let loss_value = scalar(parts.total.clone())?;
        let natural = scalar(parts.natural.clone())?;
        let robust = parts.robust.clone().map(scalar).transpose()?;
        let cam_outside = parts.cam_outside.clone().map(scalar).transpose()?;
        if !loss_value.is_finite() {
            let last = self.run_dir.join(LAST_FILE);
            return Err(TriscopeError::Compute(format!(
                "the loss became {loss_value} at epoch {} step {} (lr {lr:.3e}); the run stopped. \
                 The last good checkpoint is {}{}. Lower training.lr or check the data.",
                self.state.epoch + 1,
                self.state.global_step + 1,
                last.display(),
                if last.is_file() {
                    ""
                } else {
                    " (none written yet)"
                }
            )));
        }
        let grads = parts.total.backward();
        let grads = GradientsParams::from_grads(grads, &self.model);
        let model = self.model.clone();
        self.model = self.optimizer.step(lr, model, grads);
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model)?;
        }
        Ok(StepOutcome {
            loss: loss_value,
            natural,
            robust,
            cam_outside,
            clean_acc,
            robust_acc,
        })
    }

    /// The trained network's logits on `x` and, with `training.cam_mask_weight`, the share of
    /// each image's label map outside its lesion (`loss::cam_outside_share`, `[1]`).
    fn logits_and_cam(
        &self,
        model: &dyn Classify,
        x: Tensor<4>,
        batch: &HostBatch,
        targets: &Targets,
    ) -> Result<(Tensor<2>, Option<Tensor<1>>)> {
        if self.config.training.cam_mask_weight <= 0.0 {
            return Ok((model.logits(x), None));
        }
        let (Some(lesion), Targets::Single(labels)) = (&batch.lesion, targets) else {
            return Err(TriscopeError::Compute(
                "training.cam_mask_weight: a training batch came without its lesion masks or with multi-label targets".into(),
            ));
        };
        let taps = self.model.forward_taps(x, None);
        let [_, _, _, l4] = taps.layers;
        let [b, _, rows, cols] = l4.dims(); // [b, 32w, h, w]
        let [_, _, height, width] = batch.shape;
        let cells = loss::cell_shares(lesion, b, (height, width), (rows, cols));
        let inside = Tensor::<3>::from_data(TensorData::new(cells, [b, rows, cols]), &l4.device());
        let share = loss::cam_outside_share(
            l4,
            self.model.fc.weight.val(),
            labels,
            inside,
            self.config.training.cam_mask_map,
        );
        Ok((taps.logits, Some(share)))
    }

    /// `loss` plus `training.cam_mask_weight` times the map's share outside the lesion.
    fn with_cam(&self, loss: Tensor<1>, cam: Option<Tensor<1>>) -> LossParts {
        let weight = self.config.training.cam_mask_weight as f32;
        LossParts {
            total: match &cam {
                Some(c) => loss.clone() + c.clone().mul_scalar(weight),
                None => loss.clone(),
            },
            natural: loss,
            robust: None,
            cam_outside: cam,
        }
    }
}

pub(super) struct StepOutcome {
    pub(super) loss: f64,
    pub(super) natural: f64,
    pub(super) robust: Option<f64>,
    pub(super) cam_outside: Option<f64>,
    pub(super) clean_acc: f64,
    pub(super) robust_acc: Option<f64>,
}

/// `training.freeze_backbone`: features from the network in inference mode (no gradient, no
/// BatchNorm update), then the trained model's head, so that only `fc` gets a gradient.
struct FrozenBackbone<'a> {
    /// In inference mode, on `plain`.
    backbone: &'a ResNet50,
    plain: Device,
    head: &'a ResNet50,
}

impl Classify for FrozenBackbone<'_> {
    fn logits(&self, pixels: Tensor<4>) -> Tensor<2> {
        let trained = pixels.device();
        let pixels = Tensor::<4>::from_data(pixels.into_data(), &self.plain);
        let embedding = self.backbone.embedding(pixels); // [b, 32w]
        self.head
            .head(Tensor::from_data(embedding.into_data(), &trained))
    }

    fn num_classes(&self) -> usize {
        self.head.config.num_classes
    }
}

/// Labels of a batch in model outputs.
pub(super) enum Targets {
    Single(Vec<usize>),
    Multi(Vec<Vec<f32>>),
}

impl Targets {
    /// `smoothing` applies to single-label cross-entropy only (a run on multi-label data refuses
    /// it at its start).
    pub(super) fn loss(
        &self,
        logits: Tensor<2>,
        weights: Option<&[f32]>,
        smoothing: f32,
    ) -> Tensor<1> {
        match self {
            Self::Single(y) => loss::cross_entropy(logits, y, weights, smoothing),
            Self::Multi(t) => loss::binary_cross_entropy(logits, t, weights),
        }
    }

    pub(super) fn goal(&self) -> AttackGoal {
        match self {
            Self::Single(y) => AttackGoal::Untargeted(y.clone()),
            Self::Multi(t) => AttackGoal::MultiLabel(t.clone()),
        }
    }

    pub(super) fn take(&self, n: usize) -> Self {
        match self {
            Self::Single(y) => Self::Single(y[..n.min(y.len())].to_vec()),
            Self::Multi(t) => Self::Multi(t[..n.min(t.len())].to_vec()),
        }
    }

    pub(super) fn concat(parts: Vec<Self>) -> Self {
        let mut single = Vec::new();
        let mut multi = Vec::new();
        for p in parts {
            match p {
                Self::Single(y) => single.extend(y),
                Self::Multi(t) => multi.extend(t),
            }
        }
        if multi.is_empty() {
            Self::Single(single)
        } else {
            Self::Multi(multi)
        }
    }

    /// Share of correct predictions (multi-label: decisions at 0.5).
    fn accuracy(&self, rows: &[Vec<f32>]) -> f64 {
        let n = rows.len().max(1) as f64;
        match self {
            Self::Single(y) => {
                rows.iter().zip(y).filter(|(r, y)| argmax(r) == **y).count() as f64 / n
            }
            Self::Multi(t) => {
                let total: usize = t.iter().map(Vec::len).sum();
                let right = rows
                    .iter()
                    .zip(t)
                    .flat_map(|(r, t)| r.iter().zip(t).map(|(z, y)| (*z >= 0.0) == (*y > 0.5)))
                    .filter(|ok| *ok)
                    .count();
                right as f64 / total.max(1) as f64
            }
        }
    }

    /// (accuracy, balanced accuracy) — multi-label: (decision accuracy, mean AUROC).
    pub(super) fn metrics(&self, rows: &[Vec<f32>], classes: usize) -> (f64, f64) {
        let multi_label = matches!(self, Self::Multi(_));
        let probs: Vec<Vec<f32>> = rows.iter().map(|r| probabilities(r, multi_label)).collect();
        match self {
            Self::Single(y) => {
                let m = class_metrics(&probs, y, classes);
                (m.accuracy, m.balanced_accuracy)
            }
            Self::Multi(t) => {
                let m = multi_label_metrics(&probs, t);
                (m.label_accuracy, m.mean_auroc)
            }
        }
    }
}

pub(super) fn scalar(t: Tensor<1>) -> Result<f64> {
    let v = crate::model::host::values(t.inner(), "the loss")?;
    Ok(v.first().copied().unwrap_or(f32::NAN) as f64)
}
