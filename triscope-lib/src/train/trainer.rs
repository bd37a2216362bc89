//! The training loop: a prepared run ([`Trainer::new`], or [`Trainer::resume`] in
//! `checkpoint`), its thread and events, epochs, steps (`step`) and validation (`validate`).

mod checkpoint;
mod setup;
mod step;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::ModuleOptimizer;

use checkpoint::{
    BEST_FILE, CONFIG_FILE, LAST_FILE, METRICS_FILE, RunLock, StableIds, git_commit, initial_model,
};
pub use checkpoint::{
    EMA_KEY, EpochAccum, LOCK_FILE, OPTIMIZER_KEY, RngState, TRAIN_STATE_KEY, TrainState,
};
use setup::{check_classes, inverse_frequency, lesion_masks, open_split};
use step::StepOutcome;

use super::config::{ClassWeights, LossType, TrainConfig};
use super::ema::Ema;
use super::events::{
    CheckpointKind, EVENT_CAPACITY, EpochMetrics, MetricsLine, MetricsLog, RunInfo, StepMetrics,
    TrainControl, TrainEvent, TrainHandle, TrainSummary,
};
use super::explanation::ExplanationProbe;
use super::loader::{Loader, LoaderSpec, epoch_order};
use super::optim::{build_optimizer, learning_rate};
use crate::error::{Result, TriscopeError};
use crate::io::data::Dataset;
use crate::io::regions::RegionSource;
use crate::model::config::Precision;
use crate::model::device::{BackendKind, ComputeDevice};
use crate::model::{ModelConfig, ResNet50, fast};
use crate::util::fsio::write_error;
use crate::util::jobs::{event_channel, spawn_named};

/// A prepared run: datasets opened and checked, model and optimizer built.
pub struct Trainer {
    config: TrainConfig,
    run_dir: PathBuf,
    device: ComputeDevice,
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    /// Dataset class index -> model output (single-label).
    class_map: Vec<usize>,
    model_config: ModelConfig,
    model: ResNet50,
    optimizer: ModuleOptimizer,
    /// The weight average (`training.ema_decay` > 0).
    ema: Option<Ema>,
    /// The training images' lesion masks, for `training.augmentation.background_swap` and
    /// `training.cam_mask_weight`.
    lesion_masks: Option<RegionSource>,
    /// The validation images whose explanations each epoch scores.
    explanation_probe: Option<ExplanationProbe>,
    state: TrainState,
    resumed: bool,
    /// Held until the trainer is dropped (the end of `run`).
    _lock: RunLock,
}

impl Trainer {
    /// Prepare a new run in `run_dir` (created; it must not hold a run already).
    pub fn new(config: TrainConfig, run_dir: &Path, device: ComputeDevice) -> Result<Self> {
        let lock = RunLock::acquire(run_dir)?;
        if run_dir.join(LAST_FILE).exists() {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} already holds a run; continue it with --resume {} or choose another --out",
                run_dir.display(),
                run_dir.display()
            )));
        }
        let train = open_split(&config, &config.data.train_split, config.data.train_limit)?;
        let val = open_split(&config, &config.data.val_split, config.data.val_limit)?;
        let mut model_config = config.model_config(train.class_names.clone())?;
        model_config.multi_label = train.multi_label;
        if train.multi_label && config.training.label_smoothing > 0.0 {
            return Err(TriscopeError::BadConfig(
                "training.label_smoothing applies to the cross-entropy of single-label classes; this data is multi-label (BCE): set it to 0".into(),
            ));
        }
        if train.multi_label && config.training.augmentation.mixes() {
            return Err(TriscopeError::BadConfig(
                "training.augmentation.mixup_alpha / cutmix_alpha mix single-label classes; this data is multi-label (BCE): set them to 0".into(),
            ));
        }
        model_config
            .validate()
            .map_err(|e| TriscopeError::BadConfig(format!("{e}")))?;
        let class_map = check_classes(&train, &val, &model_config)?;
        let class_weights = match config.training.class_weights {
            ClassWeights::None => None,
            ClassWeights::InverseFrequency => {
                Some(inverse_frequency(&train, &class_map, &model_config, 1.0))
            }
            ClassWeights::SqrtInverseFrequency => {
                Some(inverse_frequency(&train, &class_map, &model_config, 0.5))
            }
        };
        let ad_device = device.device.clone().autodiff();
        let model = initial_model(&config, &model_config, &ad_device)?;
        let model = model.map(&mut StableIds { next: 0 });
        let optimizer = build_optimizer(&config.training);
        let ema =
            (config.training.ema_decay > 0.0).then(|| Ema::new(config.training.ema_decay as f32));
        // The run folder, checked for writing before any compute.
        std::fs::create_dir_all(run_dir).map_err(write_error(run_dir))?;
        crate::util::fsio::write_atomic(&run_dir.join(CONFIG_FILE), config.to_yaml()?.as_bytes())?;
        let metrics = run_dir.join(METRICS_FILE);
        std::fs::write(&metrics, b"").map_err(write_error(&metrics))?;
        let state = TrainState {
            format: 1,
            config: config.clone(),
            epoch: 0,
            batch_in_epoch: 0,
            global_step: 0,
            lr: learning_rate(&config.training, 0.0),
            best_score: None,
            best_epoch: None,
            accum: EpochAccum::default(),
            metrics_log_bytes: 0,
            rng: RngState {
                scheme: "splitmix64 keyed by (seed, stream, epoch | step, sample)".into(),
                seed: config.training.seed,
                epoch: 0,
                step: 0,
            },
            class_names: model_config.class_names.clone(),
            class_weights,
            git_commit: git_commit(),
            elapsed_s: 0.0,
        };
        Ok(Self {
            lesion_masks: lesion_masks(&config, &train)?,
            explanation_probe: ExplanationProbe::for_run(&config, &val, &class_map, &model_config)?,
            config,
            run_dir: run_dir.to_path_buf(),
            device,
            train: Arc::new(train),
            val: Arc::new(val),
            class_map,
            model_config,
            model,
            optimizer,
            ema,
            state,
            resumed: false,
            _lock: lock,
        })
    }

    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Batches per epoch: full batches only (the remainder is dropped; it changes with the
    /// shuffle), at least one.
    pub fn steps_per_epoch(&self) -> usize {
        (self.train.len() / self.config.training.batch_size.min(self.train.len())).max(1)
    }

    /// Run on a new thread; events arrive on the handle's channel.
    pub fn spawn(self) -> Result<TrainHandle> {
        self.spawn_with_wake(Box::new(|| {}))
    }

    /// As [`Self::spawn`], calling `wake` after each event (a UI passes its repaint request).
    /// The channel is bounded: per-step events are dropped while the receiver is
    /// [`EVENT_CAPACITY`] behind (the metrics log keeps them all); every other event waits
    /// for room, so epochs, checkpoints and the end of the run always arrive.
    pub fn spawn_with_wake(self, wake: Box<dyn Fn() + Send>) -> Result<TrainHandle> {
        Self::spawn_prepared(move || Ok(self), wake)
    }

    /// Build the trainer with `prepare` on the new thread (opening datasets takes time a UI
    /// must not wait for), then run it. A failing `prepare` ends the run with
    /// [`TrainEvent::Failed`].
    pub fn spawn_prepared(
        prepare: impl FnOnce() -> Result<Trainer> + Send + 'static,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<TrainHandle> {
        let (tx, rx) = event_channel(EVENT_CAPACITY, wake);
        let control = TrainControl::new();
        let c = control.clone();
        let thread = spawn_named("triscope-train", move || {
            let mut send = |e: TrainEvent| {
                tx.send(e);
            };
            match prepare() {
                Ok(trainer) => trainer.run(&c, &mut send),
                Err(e) => {
                    send(TrainEvent::Failed(e.to_string()));
                    Err(e)
                }
            }
        })?;
        Ok(TrainHandle {
            events: rx,
            control,
            thread,
        })
    }

    /// Train to the configured epoch count (or a stop), reporting to `on_event`.
    pub fn run(
        mut self,
        control: &TrainControl,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<TrainSummary> {
        let precision = self.precision().0;
        let result = fast::with_precision(precision, || self.run_inner(control, on_event));
        if let Err(e) = &result {
            on_event(TrainEvent::Failed(e.to_string()));
        }
        result
    }

    fn run_inner(
        &mut self,
        control: &TrainControl,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<TrainSummary> {
        let t = self.config.training.clone();
        if t.devices > 1 {
            return Err(TriscopeError::BadConfig(
                "training.devices > 1: multi-device data parallel training is not available in \
                 this build (see ARCHITECTURE.md, Training); use 1"
                    .into(),
            ));
        }
        let steps_per_epoch = self.steps_per_epoch();
        on_event(TrainEvent::Started(self.run_info(steps_per_epoch)));
        let mut log = MetricsLog::open(&self.run_dir.join(METRICS_FILE))?;
        let clock = RunClock {
            started: Instant::now(),
            before_s: self.state.elapsed_s,
        };
        let mut last_path = None;
        let mut best_path = self
            .run_dir
            .join(BEST_FILE)
            .is_file()
            .then(|| self.run_dir.join(BEST_FILE));
        while self.state.epoch < t.epochs {
            let epoch = self.state.epoch;
            let mut step_clock = Instant::now();
            for batch in self.epoch_loader(epoch, steps_per_epoch) {
                let batch = batch?;
                if control.is_paused() && !control.is_stop_requested() {
                    on_event(TrainEvent::Paused);
                    while control.is_paused() && !control.is_stop_requested() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    on_event(TrainEvent::Resumed);
                    step_clock = Instant::now();
                }
                if control.is_aborted() {
                    return Err(TriscopeError::Cancelled);
                }
                if control.is_stopping() {
                    self.state.elapsed_s = clock.secs();
                    let path = self.save_last(&log, BTreeMap::new())?;
                    on_event(TrainEvent::Checkpoint {
                        kind: CheckpointKind::Last,
                        path: path.clone(),
                    });
                    on_event(TrainEvent::Stopped {
                        checkpoint: Some(path.clone()),
                    });
                    return Ok(self.summary(Some(path), best_path, true));
                }
                let progress = self.state.global_step as f64 / steps_per_epoch as f64;
                let lr = learning_rate(&t, progress);
                let outcome = self.step(&batch, lr, control)?;
                let step_time_s = step_clock.elapsed().as_secs_f64();
                step_clock = Instant::now();
                let metrics = self.record_step(
                    &outcome,
                    batch.shape[0],
                    lr,
                    step_time_s,
                    steps_per_epoch,
                    clock.secs(),
                );
                if self.state.global_step.is_multiple_of(t.log_every_steps) {
                    log.append(&MetricsLine::Step(metrics.clone()))?;
                }
                on_event(TrainEvent::Step(metrics));
                if t.checkpoint_every_steps > 0
                    && self
                        .state
                        .global_step
                        .is_multiple_of(t.checkpoint_every_steps)
                    && self.state.batch_in_epoch < steps_per_epoch
                {
                    self.state.elapsed_s = clock.secs();
                    let path = self.save_last(&log, BTreeMap::new())?;
                    on_event(TrainEvent::Checkpoint {
                        kind: CheckpointKind::Last,
                        path,
                    });
                }
            }
            on_event(TrainEvent::Validating { epoch: epoch + 1 });
            let (em, best) = self.finish_epoch(control, &mut log, &clock)?;
            if let Some(path) = best {
                on_event(TrainEvent::Checkpoint {
                    kind: CheckpointKind::Best,
                    path: path.clone(),
                });
                best_path = Some(path);
            }
            let path = self.save_last(&log, em.checkpoint_numbers())?;
            on_event(TrainEvent::Checkpoint {
                kind: CheckpointKind::Last,
                path: path.clone(),
            });
            last_path = Some(path);
            on_event(TrainEvent::Epoch(em));
        }
        let summary = self.summary(last_path, best_path, false);
        on_event(TrainEvent::Finished(summary.clone()));
        Ok(summary)
    }

    /// The products' arithmetic this run gets on this CPU, and why it is not the one asked
    /// for (bf16 on a CPU without it).
    fn precision(&self) -> (Precision, Option<String>) {
        self.config
            .training
            .precision
            .resolve(fast::bf16::supported())
    }

    /// What a front end shows when the run starts.
    fn run_info(&self, steps_per_epoch: usize) -> RunInfo {
        let device = match (self.device.backend, self.precision()) {
            (BackendKind::Flex, (Precision::Bf16, _)) => {
                format!("{}, bf16 products", self.device.description)
            }
            (BackendKind::Flex, (_, Some(refused))) => {
                format!("{}, f32 ({refused})", self.device.description)
            }
            _ => self.device.description.clone(),
        };
        RunInfo {
            run_dir: self.run_dir.clone(),
            device,
            train_samples: self.train.len(),
            val_samples: self.val.len(),
            class_names: self.model_config.class_names.clone(),
            steps_per_epoch,
            epochs: self.config.training.epochs,
            start_epoch: self.state.epoch,
            start_step: self.state.global_step,
            resumed: self.resumed,
            loss_type: self.config.robustness.loss_type,
        }
    }

    /// The batches of `epoch` still to train (from the resumed batch on), loaded ahead on the
    /// loader's workers. The order is a function of (seed, epoch) alone.
    fn epoch_loader(&self, epoch: usize, steps_per_epoch: usize) -> Loader {
        let mut batches = self.epoch_batches(epoch);
        batches.truncate(steps_per_epoch);
        let start_batch = self.state.batch_in_epoch.min(batches.len());
        let with_lesion = self.config.training.cam_mask_weight > 0.0;
        self.loader(
            &self.train,
            batches[start_batch..].to_vec(),
            Some(epoch),
            with_lesion,
        )
    }

    /// The training batches of `epoch`, in its order.
    fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let t = &self.config.training;
        let batch_size = t.batch_size.min(self.train.len());
        epoch_order(self.train.len(), t.seed, epoch)
            .chunks(batch_size)
            .map(|c| c.to_vec())
            .collect()
    }

    /// `batches` of `dataset`, augmented as in training epoch `augment_epoch` when it is given
    /// and the run augments (MixUp / CutMix, which mix a batch, are the step's, not the
    /// loader's), else as the model sees them at inference; `with_lesion`: each image's lesion
    /// mask with it (`training.cam_mask_weight`).
    fn loader(
        &self,
        dataset: &Arc<Dataset>,
        batches: Vec<Vec<usize>>,
        augment_epoch: Option<usize>,
        with_lesion: bool,
    ) -> Loader {
        let t = &self.config.training;
        Loader::spawn(
            dataset.clone(),
            batches,
            LoaderSpec {
                channels: self.model_config.in_channels,
                resolution: self.model_config.resolution,
                augment: augment_epoch
                    .filter(|_| t.augment)
                    .map(|epoch| (t.augmentation.clone(), t.seed, epoch)),
                lesion_masks: self.lesion_masks.clone(),
                with_lesion,
                workers: t.workers,
                prefetch: t.prefetch_batches,
            },
        )
    }

    /// Add a finished step of `n` images to the epoch's sums and move the state to the next
    /// step; its metrics line.
    fn record_step(
        &mut self,
        outcome: &StepOutcome,
        n: usize,
        lr: f64,
        step_time_s: f64,
        steps_per_epoch: usize,
        elapsed_s: f64,
    ) -> StepMetrics {
        let a = &mut self.state.accum;
        a.samples += n;
        a.loss_sum += outcome.loss * n as f64;
        a.natural_sum += outcome.natural * n as f64;
        a.robust_sum += outcome.robust.unwrap_or(0.0) * n as f64;
        a.clean_correct += outcome.clean_acc * n as f64;
        a.robust_correct += outcome.robust_acc.unwrap_or(0.0) * n as f64;
        a.train_time_s += step_time_s;
        self.state.global_step += 1;
        self.state.batch_in_epoch += 1;
        self.state.lr = lr;
        self.state.rng.step = self.state.global_step;
        StepMetrics {
            epoch: self.state.epoch + 1,
            step: self.state.global_step,
            batch: self.state.batch_in_epoch,
            batches: steps_per_epoch,
            lr,
            loss: outcome.loss,
            loss_natural: outcome.natural,
            loss_robust: outcome.robust,
            cam_outside: outcome.cam_outside,
            clean_acc: outcome.clean_acc,
            robust_acc: outcome.robust_acc,
            images_per_s: n as f64 / step_time_s.max(1e-9),
            elapsed_s,
        }
    }

    /// Validate, log the epoch's line, move the state to the next epoch and, when this epoch
    /// scored best (validation balanced accuracy; robust balanced accuracy for adversarial
    /// training), write `best`: the epoch's metrics and that checkpoint's path.
    fn finish_epoch(
        &mut self,
        control: &TrainControl,
        log: &mut MetricsLog,
        clock: &RunClock,
    ) -> Result<(EpochMetrics, Option<PathBuf>)> {
        let epoch = self.state.epoch;
        // The model validated, and kept as `best` if it scores best.
        let (validated, raw) = match &self.ema {
            Some(ema) => (
                self.averaged_model(ema)?,
                Some(self.validate(&self.model.valid(), false, control)?),
            ),
            None => (self.model.valid(), None),
        };
        let val = self.validate(&validated, true, control)?;
        let started = Instant::now();
        let explanation = match &self.explanation_probe {
            Some(probe) => {
                Some(probe.measure(&validated, &self.device.device, control.cancel_flag())?)
            }
            None => None,
        };
        let explanation_time_s = explanation
            .is_some()
            .then(|| started.elapsed().as_secs_f64());
        let adversarial = self.config.robustness.loss_type != LossType::Clean;
        // Robust *balanced* accuracy: on an imbalanced split (HAM10000 is two-thirds nv) plain
        // robust accuracy rewards a model that answers the majority class everywhere.
        let score = if adversarial {
            val.robust_balanced_acc.unwrap_or(val.balanced_acc)
        } else {
            val.balanced_acc
        };
        let is_best = self.state.best_score.is_none_or(|b| score > b);
        let a = self.state.accum.clone();
        let samples = a.samples.max(1) as f64;
        let em = EpochMetrics {
            epoch: epoch + 1,
            step: self.state.global_step,
            lr: self.state.lr,
            train_loss: a.loss_sum / samples,
            train_loss_natural: a.natural_sum / samples,
            train_loss_robust: (self.config.robustness.loss_type == LossType::Trades)
                .then_some(a.robust_sum / samples),
            train_clean_acc: a.clean_correct / samples,
            train_robust_acc: adversarial.then_some(a.robust_correct / samples),
            val_loss: val.loss,
            val_clean_acc: val.acc,
            val_balanced_acc: val.balanced_acc,
            val_robust_acc: val.robust_acc,
            val_robust_balanced_acc: val.robust_balanced_acc,
            val_robust_samples: val.robust_samples,
            raw_val_clean_acc: raw.as_ref().map(|r| r.acc),
            raw_val_balanced_acc: raw.as_ref().map(|r| r.balanced_acc),
            explanation,
            explanation_time_s,
            best: is_best,
            images_per_s: a.samples as f64 / a.train_time_s.max(1e-9),
            epoch_time_s: a.train_time_s,
            elapsed_s: clock.secs(),
        };
        log.append(&MetricsLine::Epoch(em.clone()))?;
        // The epoch is done: the state points at the next one.
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.accum = EpochAccum::default();
        self.state.rng.epoch = self.state.epoch;
        if is_best {
            self.state.best_score = Some(score);
            self.state.best_epoch = Some(epoch + 1);
        }
        self.state.elapsed_s = clock.secs();
        let best = if is_best {
            Some(self.save(
                CheckpointKind::Best,
                &validated,
                log,
                em.checkpoint_numbers(),
            )?)
        } else {
            None
        };
        Ok((em, best))
    }

    fn summary(&self, last: Option<PathBuf>, best: Option<PathBuf>, stopped: bool) -> TrainSummary {
        TrainSummary {
            run_dir: self.run_dir.clone(),
            epochs_done: self.state.epoch,
            steps_done: self.state.global_step,
            best_epoch: self.state.best_epoch,
            best_score: self.state.best_score,
            last: last.or_else(|| {
                let p = self.run_dir.join(LAST_FILE);
                p.is_file().then_some(p)
            }),
            best,
            stopped,
        }
    }

    /// The current model.
    pub fn model(&self) -> &ResNet50 {
        &self.model
    }
}

/// Seconds the run has trained, across resumes.
struct RunClock {
    started: Instant,
    /// Before this process took the run over.
    before_s: f64,
}

impl RunClock {
    fn secs(&self) -> f64 {
        self.before_s + self.started.elapsed().as_secs_f64()
    }
}
