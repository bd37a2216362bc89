//! Validation after each epoch: clean and robust metrics, and the weight average with its
//! BatchNorm statistics recomputed.

use burn::tensor::{Tensor, TensorData};

use super::Trainer;
use super::step::{Targets, scalar};
use crate::error::Result;
use crate::model::ResNet50;
use crate::model::host::logit_rows;
use crate::train::config::LossType;
use crate::train::ema::{self, Ema};
use crate::train::events::TrainControl;
use crate::train::loss::{self, InnerAttack};
use crate::util::rng::{keyed_rng, stream};

/// Training batches (augmented as in training) on which the weight average's BatchNorm
/// statistics are recomputed before each validation: 2,048 images at batch 64.
const BN_RECALIBRATION_BATCHES: usize = 32;

impl Trainer {
    /// The weight average as it is validated and kept: its BatchNorm statistics recomputed on
    /// the first [`BN_RECALIBRATION_BATCHES`] batches of this epoch, augmented as in training
    /// (as torch's `update_bn` on the training loader). Un-augmented batches give statistics the
    /// weights were not trained with: `ham10000_w32_clean_ls`'s own weights score validation
    /// 0.693 / 0.534 with them, 0.739 / 0.580 with augmented ones, 0.741 / 0.580 as trained.
    pub(super) fn averaged_model(&self, ema: &Ema) -> Result<ResNet50> {
        let epoch = self.state.epoch;
        let mut batches = self.epoch_batches(epoch);
        batches.truncate(BN_RECALIBRATION_BATCHES);
        let loader = self.loader(&self.train, batches, Some(epoch), false);
        ema::recalibrate_batch_norm(&ema.apply(&self.model)?, loader)
    }

    /// Clean (and, when `robust` and the run is adversarial, robust) metrics of `eval` (in
    /// inference mode) on the validation split.
    pub(super) fn validate(
        &self,
        eval: &ResNet50,
        robust: bool,
        control: &TrainControl,
    ) -> Result<ValResult> {
        let plain = self.device.device.clone();
        let bs = self.config.training.batch_size;
        let idx: Vec<usize> = (0..self.val.len()).collect();
        let batches: Vec<Vec<usize>> = idx.chunks(bs).map(|c| c.to_vec()).collect();
        let loader = self.loader(&self.val, batches, None, false);
        let r = &self.config.robustness;
        let robust_wanted = if r.loss_type == LossType::Clean || !robust {
            0
        } else {
            r.val_robust_samples.min(self.val.len())
        };
        let inner = InnerAttack {
            eps_linf: r.attack.eps_linf,
            steps: r.attack.steps,
            alpha: r.attack.alpha,
        };
        let mut rows = Vec::new();
        let mut adv_rows = Vec::new();
        let mut all = Vec::new();
        let mut loss_sum = 0.0f64;
        for batch in loader {
            let batch = batch?;
            let targets = self.labels(&batch);
            let x =
                Tensor::<4>::from_data(TensorData::new(batch.pixels.clone(), batch.shape), &plain);
            let logits = eval.forward(x.clone()); // [b, classes]
            loss_sum += scalar(targets.loss(logits.clone(), None, 0.0))? * batch.shape[0] as f64;
            rows.extend(logit_rows(logits)?);
            let room = robust_wanted.saturating_sub(adv_rows.len());
            if room > 0 {
                let take = room.min(batch.shape[0]);
                let [_, c, h, w] = batch.shape;
                let x_part = x.clone().slice([0..take, 0..c, 0..h, 0..w]);
                let t_part = targets.take(take);
                let seed = keyed_rng(
                    self.config.training.seed,
                    stream::VAL_ATTACK,
                    batch.index as u64,
                    0,
                )
                .next_u64();
                let x_adv = loss::pgd_adversarial(
                    eval,
                    &x_part,
                    &t_part.goal(),
                    &inner,
                    seed,
                    control.cancel_flag(),
                )?;
                adv_rows.extend(logit_rows(eval.forward(x_adv))?);
            }
            all.push(targets);
        }
        let targets = Targets::concat(all);
        let n = rows.len().max(1) as f64;
        let (acc, balanced_acc) = targets.metrics(&rows, self.model_config.num_classes);
        let (robust_acc, robust_balanced_acc) = if adv_rows.is_empty() {
            (None, None)
        } else {
            let (a, b) = targets
                .take(adv_rows.len())
                .metrics(&adv_rows, self.model_config.num_classes);
            (Some(a), Some(b))
        };
        Ok(ValResult {
            loss: loss_sum / n,
            acc,
            balanced_acc,
            robust_acc,
            robust_balanced_acc,
            robust_samples: adv_rows.len(),
        })
    }
}

pub(super) struct ValResult {
    pub(super) loss: f64,
    pub(super) acc: f64,
    pub(super) balanced_acc: f64,
    pub(super) robust_acc: Option<f64>,
    pub(super) robust_balanced_acc: Option<f64>,
    pub(super) robust_samples: usize,
}
