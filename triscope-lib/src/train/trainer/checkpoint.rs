//! Run folders and checkpoints: the training state `last` carries, the writer lock, resuming a
//! run, writing `last` and `best`, and the model a run starts from.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::DropoutConfig;
use burn::tensor::{Bytes, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::Trainer;
use super::setup::{check_classes, lesion_masks, open_split};
use crate::error::{Result, TriscopeError};
use crate::io::weights::{self, CheckpointMetadata};
use crate::model::device::ComputeDevice;
use crate::model::source::{ParamBuilder, SeededInit};
use crate::model::{ModelConfig, ResNet50};
use crate::train::config::TrainConfig;
use crate::train::ema::{self, Ema};
use crate::train::events::{CheckpointKind, MetricsLog};
use crate::train::explanation::ExplanationProbe;
use crate::train::optim::build_optimizer;
use crate::util::fsio::write_error;

/// Header key of the [`TrainState`] JSON in a checkpoint.
pub const TRAIN_STATE_KEY: &str = "triscope.train_state";
/// Tensor (u8) holding the optimizer state (burn's burnpack bytes) in `last`.
pub const OPTIMIZER_KEY: &str = "triscope.optimizer";
/// Tensor (u8) holding the weight average ([`Ema`], little-endian f32) in `last`.
pub const EMA_KEY: &str = "triscope.ema";
pub(super) const CONFIG_FILE: &str = "config.yaml";
/// The run folder's writer lock (held by the trainer for its lifetime).
pub const LOCK_FILE: &str = ".triscope-run.lock";
pub(super) const METRICS_FILE: &str = "metrics.jsonl";
pub(super) const LAST_FILE: &str = "last.safetensors";
pub(super) const BEST_FILE: &str = "best.safetensors";

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

/// Gives every parameter an id from its position in the network, so the optimizer state
/// (keyed by parameter id) finds its parameters again after a resume.
pub(super) struct StableIds {
    pub(super) next: u64,
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

/// One writer per run folder: an exclusive lock on `LOCK_FILE` in it, held for the trainer's
/// lifetime. The operating system drops it when the process ends, killed or not, so a crashed
/// run never blocks its resume. The file names the holder (process id and command) for the
/// message a second writer gets.
pub(super) struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub(super) fn acquire(run_dir: &Path) -> Result<Self> {
        use std::io::{Read, Seek};
        std::fs::create_dir_all(run_dir).map_err(write_error(run_dir))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(write_error(&path))?;
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
            .map_err(write_error(&path))?;
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

/// The git commit Triscope was built from, when the source tree is still there.
pub(super) fn git_commit() -> Option<String> {
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
        for path in crate::util::fsio::remove_stale_temporaries(run_dir)? {
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
            .map_err(write_error(&metrics))?;
        file.set_len(state.metrics_log_bytes)
            .map_err(write_error(&metrics))?;
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

    /// Write `last`: the weights, optimizer state, weight average and training state.
    pub(super) fn save_last(
        &mut self,
        log: &MetricsLog,
        metrics: BTreeMap<String, f64>,
    ) -> Result<PathBuf> {
        let model = self.model.valid();
        self.save(CheckpointKind::Last, &model, log, metrics)
    }

    /// Write `last` (weights, optimizer, state) or `best` (`model`, the model that was
    /// validated, and state) atomically.
    pub(super) fn save(
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

/// A seeded network, or pretrained weights with a fresh head when the class count differs.
pub(super) fn initial_model(
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
