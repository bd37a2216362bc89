//! The training loop, its events and controls, run folders and checkpoints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::DropoutConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::{ClassWeights, LossType, TrainConfig};
use super::ema::{self, Ema};
use super::explanation::{ExplanationProbe, ExplanationQuality};
use super::loader::{HostBatch, Loader, LoaderSpec, epoch_order};
use super::loss::{self, InnerAttack, LossParts};
use super::mix::Mix;
use super::optim::{build_optimizer, learning_rate};
use crate::attack::{AttackGoal, Classify};
use crate::data::{Dataset, Label};
use crate::device::ComputeDevice;
use crate::error::{Result, TriscopeError};
use crate::eval::metrics::{class_metrics, multi_label_metrics};
use crate::host::logit_rows;
use crate::inference::probabilities;
use crate::model::source::{ParamBuilder, SeededInit};
use crate::model::{ModelConfig, ResNet50};
use crate::numeric::argmax;
use crate::regions::RegionSource;
use crate::rng::{keyed_rng, stream};
use crate::weights::{self, CheckpointMetadata};

/// Header key of the [`TrainState`] JSON in a checkpoint.
pub const TRAIN_STATE_KEY: &str = "triscope.train_state";
/// Tensor (u8) holding the optimizer state (burn's burnpack bytes) in `last`.
pub const OPTIMIZER_KEY: &str = "triscope.optimizer";
/// Tensor (u8) holding the weight average ([`Ema`], little-endian f32) in `last`.
pub const EMA_KEY: &str = "triscope.ema";
const CONFIG_FILE: &str = "config.yaml";
/// The run folder's writer lock ([`RunLock`]).
pub const LOCK_FILE: &str = ".triscope-run.lock";
const METRICS_FILE: &str = "metrics.jsonl";
const LAST_FILE: &str = "last.safetensors";
const BEST_FILE: &str = "best.safetensors";

/// Training batches (augmented as in training) on which the weight average's BatchNorm
/// statistics are recomputed before each validation: 2,048 images at batch 64.
const BN_RECALIBRATION_BATCHES: usize = 32;

/// Events a spawned trainer may have waiting for its receiver.
pub const EVENT_CAPACITY: usize = 256;

/// Pause, resume and stop a running [`Trainer`] from another thread.
#[derive(Debug, Default)]
pub struct TrainControl {
    paused: AtomicBool,
    stop: AtomicBool,
    abort: AtomicBool,
}

impl TrainControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Hold before the next step until [`resume`](Self::resume) or a stop.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
    /// Stop after the current step, writing `last` so that `--resume` continues exactly.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    /// Stop after the current step without writing a checkpoint (the run folder keeps its
    /// previous `last`, as after a crash or a kill).
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
    pub fn is_stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.abort.load(Ordering::SeqCst)
    }
    /// The flag attacks poll to cancel early.
    fn cancel_flag(&self) -> &AtomicBool {
        &self.abort
    }
}

/// Which checkpoint of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    Last,
    Best,
}

/// One logged training step. Times (`images_per_s`, `elapsed_s`) are the only fields that
/// differ between two runs of the same config on the CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// 1-based global step.
    pub step: usize,
    /// 1-based batch within the epoch, and the epoch's batch count.
    pub batch: usize,
    pub batches: usize,
    pub lr: f64,
    pub loss: f64,
    /// Cross-entropy (BCE) part: clean for TRADES and clean training, adversarial for PGD-AT.
    pub loss_natural: f64,
    /// TRADES' KL term, unscaled.
    pub loss_robust: Option<f64>,
    /// With `training.cam_mask_weight`: the batch's mean share of the label's layer4 map that
    /// lies outside the lesion (before the weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cam_outside: Option<f64>,
    /// Batch accuracy on clean images (TRADES and clean: train-mode forward; PGD-AT:
    /// inference-mode forward before the attack).
    pub clean_acc: f64,
    /// Batch accuracy on the training attack's images (train-mode forward).
    pub robust_acc: Option<f64>,
    pub images_per_s: f64,
    pub elapsed_s: f64,
}

/// One epoch: training averages and validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: usize,
    /// lr of the epoch's last step.
    pub lr: f64,
    pub train_loss: f64,
    pub train_loss_natural: f64,
    pub train_loss_robust: Option<f64>,
    pub train_clean_acc: f64,
    pub train_robust_acc: Option<f64>,
    /// Unweighted cross-entropy (BCE) on the validation split.
    pub val_loss: f64,
    /// Accuracy (multi-label: per-decision accuracy at 0.5).
    pub val_clean_acc: f64,
    /// Balanced accuracy (multi-label: mean AUROC).
    pub val_balanced_acc: f64,
    /// Under PGD with the training attack's eps and steps, on the first
    /// `val_robust_samples` validation images.
    pub val_robust_acc: Option<f64>,
    pub val_robust_balanced_acc: Option<f64>,
    pub val_robust_samples: usize,
    /// With `training.ema_decay`, the `val_*` numbers are the weight average's; these are the
    /// raw weights' (what the run would score without the average).
    pub raw_val_clean_acc: Option<f64>,
    pub raw_val_balanced_acc: Option<f64>,
    /// The validated model's explanations (`training.explanation_images`), and their cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationQuality>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation_time_s: Option<f64>,
    /// This epoch's model became `best`.
    pub best: bool,
    pub images_per_s: f64,
    pub epoch_time_s: f64,
    pub elapsed_s: f64,
}

impl EpochMetrics {
    /// The numbers a checkpoint's metadata records for its epoch.
    fn checkpoint_numbers(&self) -> BTreeMap<String, f64> {
        let mut numbers = BTreeMap::new();
        numbers.insert("epoch".to_string(), self.epoch as f64);
        numbers.insert("val_clean_acc".to_string(), self.val_clean_acc);
        numbers.insert("val_balanced_acc".to_string(), self.val_balanced_acc);
        if let Some(r) = self.val_robust_acc {
            numbers.insert("val_robust_acc".to_string(), r);
        }
        numbers.insert("train_loss".to_string(), self.train_loss);
        numbers
    }
}

/// A line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MetricsLine {
    Step(StepMetrics),
    Epoch(EpochMetrics),
}

/// What a starting run looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_dir: PathBuf,
    pub device: String,
    pub train_samples: usize,
    pub val_samples: usize,
    pub class_names: Vec<String>,
    pub steps_per_epoch: usize,
    pub epochs: usize,
    /// 0-based epoch and global step the run starts (or continues) at.
    pub start_epoch: usize,
    pub start_step: usize,
    pub resumed: bool,
    pub loss_type: LossType,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub epochs_done: usize,
    pub steps_done: usize,
    pub best_epoch: Option<usize>,
    pub best_score: Option<f64>,
    pub last: Option<PathBuf>,
    pub best: Option<PathBuf>,
    /// Stopped by [`TrainControl::stop`] before the last epoch.
    pub stopped: bool,
}

/// Everything a [`Trainer`] reports, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    Started(RunInfo),
    Step(StepMetrics),
    /// Validation of this 1-based epoch begins.
    Validating {
        epoch: usize,
    },
    Epoch(EpochMetrics),
    Checkpoint {
        kind: CheckpointKind,
        path: PathBuf,
    },
    Paused,
    Resumed,
    Stopped {
        checkpoint: Option<PathBuf>,
    },
    Finished(TrainSummary),
    /// The run ended with this error (NaN loss, I/O, ...); earlier checkpoints are intact.
    Failed(String),
}

/// Running sums over the current epoch's steps (kept in checkpoints so that a mid-epoch
/// resume reports the same epoch averages).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccum {
    pub samples: usize,
    pub loss_sum: f64,
    pub natural_sum: f64,
    pub robust_sum: f64,
    pub clean_correct: f64,
    pub robust_correct: f64,
    pub train_time_s: f64,
}

/// Random state: every generator is SplitMix64 keyed by (seed, stream, epoch or step,
/// sample), so the position in the run is the whole state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub scheme: String,
    pub seed: u64,
    /// Shuffle and augmentation generators are keyed by this epoch (0-based).
    pub epoch: usize,
    /// Attack-noise and dropout generators are keyed by this global step (0-based).
    pub step: usize,
}

/// What `last` carries besides weights and optimizer state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    pub config: TrainConfig,
    /// 0-based epoch in progress (or next to start, when `batch_in_epoch` is 0).
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batch_in_epoch: usize,
    /// Steps trained in total.
    pub global_step: usize,
    /// Scheduler state: the schedule is a function of the step; this is the last lr used.
    pub lr: f64,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub accum: EpochAccum,
    /// Length of metrics.jsonl when the checkpoint was written (a resume cuts what follows).
    pub metrics_log_bytes: u64,
    pub rng: RngState,
    pub class_names: Vec<String>,
    pub class_weights: Option<Vec<f32>>,
    pub git_commit: Option<String>,
    pub elapsed_s: f64,
}

/// A handle on a trainer running on its own thread.
pub struct TrainHandle {
    pub events: Receiver<TrainEvent>,
    pub control: Arc<TrainControl>,
    thread: JoinHandle<Result<TrainSummary>>,
}

impl TrainHandle {
    /// Wait for the run to end.
    pub fn join(self) -> Result<TrainSummary> {
        self.thread
            .join()
            .map_err(|_| TriscopeError::Compute("the training thread panicked".into()))?
    }
}

/// Gives every parameter an id from its position in the network, so the optimizer state
/// (keyed by parameter id) finds its parameters again after a resume.
struct StableIds {
    next: u64,
}

impl ModuleMapper for StableIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, tensor, mapper) = param.consume();
        // A fresh row-major copy: a loaded model and a trained one then hold every weight in
        // the same memory layout (the loader's fc weight is a transposed view), so their
        // matrix products sum in the same order and a resumed run matches bit for bit.
        let device = tensor.device();
        let require_grad = tensor.is_require_grad();
        let mut tensor = Tensor::<D>::from_data(tensor.into_data(), &device);
        if require_grad {
            tensor = tensor.require_grad();
        }
        self.next += 1;
        Param::from_mapped_value(ParamId::from(self.next), tensor, mapper)
    }
}

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

/// One writer per run folder: an exclusive lock on `LOCK_FILE` in it, held for the trainer's
/// lifetime. The operating system drops it when the process ends, killed or not, so a crashed
/// run never blocks its resume. The file names the holder (process id and command) for the
/// message a second writer gets.
struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    fn acquire(run_dir: &Path) -> Result<Self> {
        use std::io::{Read, Seek};
        std::fs::create_dir_all(run_dir).map_err(write_err(run_dir))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(write_err(&path))?;
        match try_lock_patiently(&file) {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    h => h.to_string(),
                };
                return Err(TriscopeError::RunInUse {
                    path: run_dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(TriscopeError::Write { path, source });
            }
        }
        let command: Vec<String> = std::env::args()
            .take(2)
            .enumerate()
            .map(|(i, a)| match i {
                0 => Path::new(&a)
                    .file_name()
                    .map_or(a.clone(), |n| n.to_string_lossy().to_string()),
                _ => a,
            })
            .collect();
        let holder = format!("process {} ({})\n", std::process::id(), command.join(" "));
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(write_err(&path))?;
        Ok(Self { _file: file })
    }
}

/// `try_lock`, retried for up to `LOCK_PATIENCE`: a lock is shared with a child process between
/// its fork and exec (any thread of this process running `git`, say), so a lock just released
/// can look held for a moment. A real second writer holds it far longer.
fn try_lock_patiently(file: &std::fs::File) -> std::result::Result<(), std::fs::TryLockError> {
    const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(1500);
    let start = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> TriscopeError + '_ {
    move |source| TriscopeError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn open_split(config: &TrainConfig, split: &str, limit: usize) -> Result<Dataset> {
    let mut ds = Dataset::open(&config.data.root, Some(split))?;
    if limit > 0 {
        ds.limit(limit);
    }
    if ds.is_empty() {
        return Err(TriscopeError::InvalidArgument(format!(
            "split '{split}' of {} has no samples",
            config.data.root.display()
        )));
    }
    ds.check_images()?;
    Ok(ds)
}

/// The lesion masks the background swap and the map's penalty need (None when both are off),
/// checked before the first step: the dataset has them and every training image has its own,
/// so that no image silently trains without them.
fn lesion_masks(config: &TrainConfig, train: &Dataset) -> Result<Option<RegionSource>> {
    let t = &config.training;
    let option = if t.cam_mask_weight > 0.0 {
        "training.cam_mask_weight"
    } else if t.augmentation.background_swap > 0.0 && t.augment {
        "training.augmentation.background_swap"
    } else {
        return Ok(None);
    };
    let Some(RegionSource::Masks(dir, kind)) = RegionSource::for_dataset(train)? else {
        return Err(TriscopeError::BadConfig(format!(
            "{option} works on each image's lesion mask; {} has no lesion masks (HAM10000's {}/): set it to 0",
            train.root.display(),
            crate::data::MASKS_DIR
        )));
    };
    let missing: Vec<PathBuf> = train
        .samples
        .iter()
        .filter_map(|s| s.path())
        .map(|p| crate::data::mask_file(&dir, p))
        .filter(|m| !m.is_file())
        .collect();
    if let Some(first) = missing.first() {
        return Err(TriscopeError::BadConfig(format!(
            "{option} needs every training image's lesion mask; {} of {} are missing, the first {}",
            missing.len(),
            train.len(),
            first.display()
        )));
    }
    Ok(Some(RegionSource::Masks(dir, kind)))
}

/// The git commit Triscope was built from, when the source tree is still there.
fn git_commit() -> Option<String> {
    // The workspace root, above this crate.
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if !dir.join(".git").exists() {
        return None;
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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
        std::fs::create_dir_all(run_dir).map_err(write_err(run_dir))?;
        crate::fsio::write_atomic(&run_dir.join(CONFIG_FILE), config.to_yaml()?.as_bytes())?;
        let metrics = run_dir.join(METRICS_FILE);
        std::fs::write(&metrics, b"").map_err(write_err(&metrics))?;
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

    /// Continue the run in `run_dir` from its `last` checkpoint.
    pub fn resume(run_dir: &Path, device: ComputeDevice) -> Result<Self> {
        let last = run_dir.join(LAST_FILE);
        if !last.is_file() {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} has no {LAST_FILE}: nothing to resume",
                run_dir.display()
            )));
        }
        // Before anything in the folder is touched (temporaries, the log's tail).
        let lock = RunLock::acquire(run_dir)?;
        // A run killed while writing a checkpoint leaves its temporary file beside it.
        for path in crate::fsio::remove_stale_temporaries(run_dir)? {
            tracing::info!("removed {} left by an interrupted write", path.display());
        }
        let (header, blobs) = weights::read_extras(&last)?;
        let bad = |reason: String| TriscopeError::BadCheckpoint {
            path: last.clone(),
            reason,
        };
        let state: TrainState = serde_json::from_str(
            header
                .get(TRAIN_STATE_KEY)
                .ok_or_else(|| bad("it holds no training state".into()))?,
        )
        .map_err(|e| bad(format!("its training state is invalid: {e}")))?;
        let optim_bytes = blobs
            .get(OPTIMIZER_KEY)
            .ok_or_else(|| bad("it holds no optimizer state".into()))?;
        let config = state.config.clone();
        let train = open_split(&config, &config.data.train_split, config.data.train_limit)?;
        let val = open_split(&config, &config.data.val_split, config.data.val_limit)?;
        let ad_device = device.device.clone().autodiff();
        let loaded = weights::load_checkpoint(&last, &ad_device)?;
        let model_config = loaded.model.config.clone();
        let class_map = check_classes(&train, &val, &model_config)?;
        let model = loaded.model.map(&mut StableIds { next: 0 });
        let optimizer = build_optimizer(&config.training)
            .from_bytes(Bytes::from_bytes_vec(optim_bytes.clone()))
            .map_err(|e| bad(format!("its optimizer state is unreadable: {e:?}")))?;
        // No average yet when the run stopped before its first step.
        let ema_decay = config.training.ema_decay as f32;
        let ema = match (config.training.ema_decay > 0.0, blobs.get(EMA_KEY)) {
            (false, _) => None,
            (true, None) => Some(Ema::new(ema_decay)),
            (true, Some(bytes)) => Some(
                Ema::from_bytes(ema_decay, bytes, ema::float_count(&model))
                    .map_err(|e| bad(format!("its weight average is unreadable: {e}")))?,
            ),
        };
        // Cut log lines written after the checkpoint (a killed run).
        let metrics = run_dir.join(METRICS_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&metrics)
            .map_err(write_err(&metrics))?;
        file.set_len(state.metrics_log_bytes)
            .map_err(write_err(&metrics))?;
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
            resumed: true,
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
        let (tx, rx) = sync_channel(EVENT_CAPACITY);
        let control = TrainControl::new();
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name("triscope-train".into())
            .spawn(move || {
                let mut send = |e: TrainEvent| {
                    // A full or closed channel only loses this step's event.
                    let _ = match e {
                        TrainEvent::Step(_) => tx.try_send(e).map_err(|_| ()),
                        _ => tx.send(e).map_err(|_| ()),
                    };
                    wake();
                };
                match prepare() {
                    Ok(trainer) => trainer.run(&c, &mut send),
                    Err(e) => {
                        send(TrainEvent::Failed(e.to_string()));
                        Err(e)
                    }
                }
            })
            .map_err(|e| {
                TriscopeError::Compute(format!("cannot start the training thread: {e}"))
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
        let result = self.run_inner(control, on_event);
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
                if control.abort.load(Ordering::SeqCst) {
                    return Err(TriscopeError::Cancelled);
                }
                if control.stop.load(Ordering::SeqCst) {
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

    /// What a front end shows when the run starts.
    fn run_info(&self, steps_per_epoch: usize) -> RunInfo {
        RunInfo {
            run_dir: self.run_dir.clone(),
            device: self.device.description.clone(),
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

    fn labels(&self, batch: &HostBatch) -> Targets {
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
    fn step(&mut self, batch: &HostBatch, lr: f64, control: &TrainControl) -> Result<StepOutcome> {
        let plain = self.device.device.clone();
        let ad = plain.clone().autodiff();
        let data = || TensorData::new(batch.pixels.clone(), batch.shape);
        let targets = self.labels(batch);
        let weights = self.state.class_weights.clone();
        let w = weights.as_deref();
        let smoothing = self.config.training.label_smoothing as f32;
        let r = &self.config.robustness;
        let inner = InnerAttack {
            epsilon: r.attack.epsilon,
            steps: r.attack.steps,
            step_size: r.attack.step_size,
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

    /// The weight average as it is validated and kept: its BatchNorm statistics recomputed on
    /// the first [`BN_RECALIBRATION_BATCHES`] batches of this epoch, augmented as in training
    /// (as torch's `update_bn` on the training loader). Un-augmented batches give statistics the
    /// weights were not trained with: `ham10000_w32_clean_ls`'s own weights score validation
    /// 0.693 / 0.534 with them, 0.739 / 0.580 with augmented ones, 0.741 / 0.580 as trained.
    fn averaged_model(&self, ema: &Ema) -> Result<ResNet50> {
        let epoch = self.state.epoch;
        let mut batches = self.epoch_batches(epoch);
        batches.truncate(BN_RECALIBRATION_BATCHES);
        let loader = self.loader(&self.train, batches, Some(epoch), false);
        ema::recalibrate_batch_norm(&ema.apply(&self.model)?, loader)
    }

    /// Clean (and, when `robust` and the run is adversarial, robust) metrics of `eval` (in
    /// inference mode) on the validation split.
    fn validate(&self, eval: &ResNet50, robust: bool, control: &TrainControl) -> Result<ValResult> {
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
            epsilon: r.attack.epsilon,
            steps: r.attack.steps,
            step_size: r.attack.step_size,
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

    /// Write `last`: the weights, optimizer state, weight average and training state.
    fn save_last(&mut self, log: &MetricsLog, metrics: BTreeMap<String, f64>) -> Result<PathBuf> {
        let model = self.model.valid();
        self.save(CheckpointKind::Last, &model, log, metrics)
    }

    /// Write `last` (weights, optimizer, state) or `best` (`model`, the model that was
    /// validated, and state) atomically.
    fn save(
        &mut self,
        kind: CheckpointKind,
        model: &ResNet50,
        log: &MetricsLog,
        metrics: BTreeMap<String, f64>,
    ) -> Result<PathBuf> {
        self.state.metrics_log_bytes = log.len()?;
        let state_json = serde_json::to_string(&self.state)
            .map_err(|e| TriscopeError::Compute(format!("training state as JSON: {e}")))?;
        let mut metadata = CheckpointMetadata::now(
            format!(
                "ResNet-50 (base width {}) trained by triscope train ({:?} loss) on {}, epoch {}{}",
                self.model_config.base_width,
                self.config.robustness.loss_type,
                self.config.data.dataset,
                self.state.epoch,
                match (kind, &self.ema) {
                    (CheckpointKind::Best, Some(_)) => format!(
                        ", the weight average (decay {})",
                        self.config.training.ema_decay
                    ),
                    _ => String::new(),
                }
            ),
            true,
        );
        metadata.dataset = Some(self.config.data.dataset.clone());
        metadata.seed = Some(self.config.training.seed);
        metadata.metrics = metrics;
        let header = vec![(TRAIN_STATE_KEY.to_string(), state_json)];
        let (file, blobs) = match kind {
            CheckpointKind::Last => {
                let bytes = self
                    .optimizer
                    .into_bytes()
                    .map_err(|e| TriscopeError::Compute(format!("optimizer state: {e:?}")))?;
                let mut blobs = vec![(OPTIMIZER_KEY.to_string(), bytes.to_vec())];
                // None before the first step: a resume then starts the average afresh.
                if let Some(average) = self.ema.as_ref().map(Ema::to_bytes)
                    && !average.is_empty()
                {
                    blobs.push((EMA_KEY.to_string(), average));
                }
                (LAST_FILE, blobs)
            }
            CheckpointKind::Best => (BEST_FILE, Vec::new()),
        };
        let path = self.run_dir.join(file);
        weights::save_checkpoint_with_extras(model, &metadata, &header, &blobs, &path)?;
        Ok(path)
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

struct StepOutcome {
    loss: f64,
    natural: f64,
    robust: Option<f64>,
    cam_outside: Option<f64>,
    clean_acc: f64,
    robust_acc: Option<f64>,
}

struct ValResult {
    loss: f64,
    acc: f64,
    balanced_acc: f64,
    robust_acc: Option<f64>,
    robust_balanced_acc: Option<f64>,
    robust_samples: usize,
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
enum Targets {
    Single(Vec<usize>),
    Multi(Vec<Vec<f32>>),
}

impl Targets {
    /// `smoothing` applies to single-label cross-entropy only (a run on multi-label data refuses
    /// it at its start).
    fn loss(&self, logits: Tensor<2>, weights: Option<&[f32]>, smoothing: f32) -> Tensor<1> {
        match self {
            Self::Single(y) => loss::cross_entropy(logits, y, weights, smoothing),
            Self::Multi(t) => loss::binary_cross_entropy(logits, t, weights),
        }
    }

    fn goal(&self) -> AttackGoal {
        match self {
            Self::Single(y) => AttackGoal::Untargeted(y.clone()),
            Self::Multi(t) => AttackGoal::MultiLabel(t.clone()),
        }
    }

    fn take(&self, n: usize) -> Self {
        match self {
            Self::Single(y) => Self::Single(y[..n.min(y.len())].to_vec()),
            Self::Multi(t) => Self::Multi(t[..n.min(t.len())].to_vec()),
        }
    }

    fn concat(parts: Vec<Self>) -> Self {
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
    fn metrics(&self, rows: &[Vec<f32>], classes: usize) -> (f64, f64) {
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

fn scalar(t: Tensor<1>) -> Result<f64> {
    let v = crate::host::values(t.inner(), "the loss")?;
    Ok(v.first().copied().unwrap_or(f32::NAN) as f64)
}

/// Appends JSON lines, flushed at once.
struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(write_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    fn append(&mut self, line: &MetricsLine) -> Result<()> {
        let mut s = serde_json::to_string(line)
            .map_err(|e| TriscopeError::Compute(format!("metrics as JSON: {e}")))?;
        s.push('\n');
        self.file
            .write_all(s.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(write_err(&self.path))
    }

    fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(write_err(&self.path))
    }
}

/// Dataset class -> model output, for both splits; every dataset class must be declared.
fn check_classes(train: &Dataset, val: &Dataset, model: &ModelConfig) -> Result<Vec<usize>> {
    if train.multi_label {
        if train.class_names.len() != model.num_classes {
            return Err(TriscopeError::BadConfig(format!(
                "{} has {} findings, the config {} classes",
                train.root.display(),
                train.class_names.len(),
                model.num_classes
            )));
        }
        return Ok((0..model.num_classes).collect());
    }
    let map = train.map_classes_to(&model.class_names)?;
    let val_map = val.map_classes_to(&model.class_names)?;
    if val.class_names != train.class_names {
        // Folder datasets list the classes found per split; names must still agree.
        return Err(TriscopeError::InvalidArgument(format!(
            "the train split has classes [{}] and the val split [{}]",
            train.class_names.join(", "),
            val.class_names.join(", ")
        )));
    }
    debug_assert_eq!(map, val_map);
    Ok(map)
}

/// 1 / (class count) in the training split, normalised to mean 1 over the classes present
/// (absent classes get 0).
/// `1 / count^power` per model class, normalised to mean 1 over the classes present.
fn inverse_frequency(
    train: &Dataset,
    class_map: &[usize],
    model: &ModelConfig,
    power: f64,
) -> Vec<f32> {
    let mut counts = vec![0usize; model.num_classes];
    for (dataset_class, n) in train.class_counts().into_iter().enumerate() {
        let k = if train.multi_label {
            dataset_class
        } else {
            class_map[dataset_class]
        };
        counts[k] += n;
    }
    let inv: Vec<f64> = counts
        .iter()
        .map(|&n| if n == 0 { 0.0 } else { (n as f64).powf(-power) })
        .collect();
    let present = counts.iter().filter(|&&n| n > 0).count().max(1) as f64;
    let mean = inv.iter().sum::<f64>() / present;
    inv.iter().map(|v| (v / mean) as f32).collect()
}

/// A seeded network, or pretrained weights with a fresh head when the class count differs.
fn initial_model(
    config: &TrainConfig,
    model_config: &ModelConfig,
    device: &Device,
) -> Result<ResNet50> {
    let seed = config.training.seed;
    let Some(path) = config
        .architecture
        .weights
        .as_ref()
        .filter(|_| config.architecture.pretrained)
    else {
        return ResNet50::init(model_config, seed, device);
    };
    let header = weights::read_header(path)?;
    let file_classes = match &header.config {
        Some(c) => c.num_classes,
        None => fc_classes(path)?,
    };
    let mut source_config = model_config.clone();
    source_config.num_classes = file_classes;
    source_config.class_names = (0..file_classes).map(|i| format!("class_{i}")).collect();
    let mut model = weights::import_state_dict(
        path,
        &source_config,
        Some(weights::StemAdaptation::Mean),
        device,
    )?;
    if file_classes != model_config.num_classes {
        let mut init = SeededInit::new(seed ^ 0xFC);
        let mut builder = ParamBuilder::new(&mut init, device.clone());
        model.fc = builder.linear("fc", model_config.embedding_dim(), model_config.num_classes);
    }
    model.dropout = DropoutConfig::new(model_config.dropout).init();
    model.config = model_config.clone();
    Ok(model)
}

/// The class count of a state dict's `fc.bias`.
fn fc_classes(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).map_err(|source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| TriscopeError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e}")))?;
    let bias = st
        .tensor("fc.bias")
        .map_err(|_| bad("it has no fc.bias (not a ResNet state dict?)".into()))?;
    bias.shape()
        .first()
        .copied()
        .ok_or_else(|| bad("fc.bias has no shape".into()))
}
