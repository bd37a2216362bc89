//! What a run reports and how it is steered: its events, metrics lines and controls, as plain
//! data for the CLI and the app, and the `metrics.jsonl` log.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::config::LossType;
use super::explanation::ExplanationQuality;
use crate::error::{Result, TriscopeError};
use crate::util::fsio::write_error;
use crate::util::jobs::JobEvent;

/// Events a spawned trainer may have waiting for its receiver.
pub const EVENT_CAPACITY: usize = 256;

/// Pause, resume and stop a running [`Trainer`](crate::train::Trainer) from another thread.
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
    /// [`abort`](Self::abort) was asked for.
    pub(crate) fn is_aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
    /// [`stop`](Self::stop) (not an abort) was asked for.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// The flag attacks poll to cancel early.
    pub(crate) fn cancel_flag(&self) -> &AtomicBool {
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
    pub(crate) fn checkpoint_numbers(&self) -> BTreeMap<String, f64> {
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

impl JobEvent for TrainEvent {
    /// Per-step events are dropped while the receiver is behind (the metrics log keeps them
    /// all); epochs, checkpoints and the end of the run always arrive.
    fn is_progress(&self) -> bool {
        matches!(self, Self::Step(_))
    }
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

/// Everything a [`Trainer`](crate::train::Trainer) reports, as plain data.
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

/// A handle on a trainer running on its own thread.
pub struct TrainHandle {
    pub events: Receiver<TrainEvent>,
    pub control: Arc<TrainControl>,
    pub(crate) thread: JoinHandle<Result<TrainSummary>>,
}

impl TrainHandle {
    /// Wait for the run to end.
    pub fn join(self) -> Result<TrainSummary> {
        self.thread
            .join()
            .map_err(|_| TriscopeError::Compute("the training thread panicked".into()))?
    }
}

/// Appends JSON lines, flushed at once.
pub(crate) struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(write_error(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub(crate) fn append(&mut self, line: &MetricsLine) -> Result<()> {
        let mut s = serde_json::to_string(line)
            .map_err(|e| TriscopeError::Compute(format!("metrics as JSON: {e}")))?;
        s.push('\n');
        self.file
            .write_all(s.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(write_error(&self.path))
    }

    pub(crate) fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(write_error(&self.path))
    }
}
