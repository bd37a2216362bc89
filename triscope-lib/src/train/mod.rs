//! Training: clean, PGD adversarial (Madry) and TRADES, with reproducible, resumable runs.
//!
//! A [`Trainer`] runs on its own thread ([`Trainer::spawn`]) and reports plain-data
//! [`TrainEvent`]s over a channel; a shared [`TrainControl`] pauses, resumes and stops it.
//! Each run folder holds `config.yaml` (resolved), `metrics.jsonl` (one JSON object per logged
//! step and per epoch) and the `last.safetensors` / `best.safetensors` checkpoints.

pub mod augment;
pub mod config;
pub mod ema;
pub mod events;
pub mod explanation;
pub mod loader;
pub mod loss;
pub mod mix;
pub mod optim;
mod trainer;

pub use config::{CamMap, LossType, TrainConfig};
pub use events::{
    CheckpointKind, EpochMetrics, MetricsLine, RunInfo, StepMetrics, TrainControl, TrainEvent,
    TrainHandle, TrainSummary,
};
pub use trainer::{EMA_KEY, LOCK_FILE, OPTIMIZER_KEY, TRAIN_STATE_KEY, TrainState, Trainer};
