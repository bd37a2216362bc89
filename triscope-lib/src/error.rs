//! The library's error type. Every variant names the file or the value at fault.

use std::path::PathBuf;

/// Errors from loading inputs and models and from running them.
#[derive(Debug, thiserror::Error)]
pub enum TriscopeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty (0 bytes), not an image")]
    EmptyFile { path: PathBuf },
    #[error("{path} is not a readable image: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("{path} is {width}x{height} pixels, larger than the {max_side}-pixel limit per side")]
    ImageTooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_side: u32,
    },
    #[error("{path} is not a Triscope checkpoint or safetensors state dict: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("{path} does not fit the model:\n{report}")]
    WeightMismatch { path: PathBuf, report: String },
    #[error(
        "{path} is in use by {holder}: one process at a time trains a run folder; wait for it to \
         finish or stop it, then resume"
    )]
    RunInUse { path: PathBuf, holder: String },
    #[error("invalid model configuration: {0}")]
    BadConfig(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("device unavailable: {0}")]
    Device(String),
    #[error("compute failed: {0}")]
    Compute(String),
    #[error("cancelled")]
    Cancelled,
}

/// Result with [`TriscopeError`].
pub type Result<T> = std::result::Result<T, TriscopeError>;

/// [`TriscopeError::Cancelled`] once `cancel` is set: the check long jobs (audits, concept
/// banks) make between units of work.
pub fn check_cancel(cancel: &std::sync::atomic::AtomicBool) -> Result<()> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        Err(TriscopeError::Cancelled)
    } else {
        Ok(())
    }
}
