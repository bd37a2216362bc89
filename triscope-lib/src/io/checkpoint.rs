//! The container side of a checkpoint: the safetensors structure, the header keys and the
//! JSON they hold (model config, metadata). Nothing here builds a model or touches a tensor
//! library, so the fuzz target for checkpoints (`fuzz/`) compiles this file alone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::model::ModelConfig;

/// Header key holding the model config (JSON).
pub const CONFIG_KEY: &str = "triscope.config";
/// Header key holding [`CheckpointMetadata`] (JSON).
pub const METADATA_KEY: &str = "triscope.metadata";
/// Header key naming the format.
pub const FORMAT_KEY: &str = "format";
/// Value of [`FORMAT_KEY`] in Triscope checkpoints.
pub const FORMAT_CHECKPOINT: &str = "triscope-checkpoint-v1";
/// Prefix of header keys and tensor names that are not network weights (training state).
pub const EXTRA_PREFIX: &str = "triscope.";
/// What a checkpoint says about where it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Triscope version that wrote it.
    pub triscope_version: String,
    /// UTC time of writing, RFC 3339.
    pub created_utc: String,
    /// Whether the weights were trained at all (false for seeded initialisations).
    pub trained: bool,
    /// One line a user reads in the app and the CLI.
    pub description: String,
    /// Dataset it was trained on, if any.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Seed of the initialisation or of the training run.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The file it was imported from, if imported.
    #[serde(default)]
    pub imported_from: Option<String>,
    /// Free-form measured numbers (accuracy, ...).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl CheckpointMetadata {
    /// Metadata stamped with this build's version and the current time.
    pub fn now(description: impl Into<String>, trained: bool) -> Self {
        Self {
            triscope_version: env!("CARGO_PKG_VERSION").to_string(),
            created_utc: utc_now_rfc3339(),
            trained,
            description: description.into(),
            ..Default::default()
        }
    }
}

/// A loaded checkpoint's header: config (if Triscope wrote it) and metadata.
#[derive(Debug, Clone)]
pub struct CheckpointHeader {
    pub config: Option<ModelConfig>,
    pub metadata: Option<CheckpointMetadata>,
    pub raw: HashMap<String, String>,
}

/// Check the safetensors structure of `bytes` (header length, JSON, dtypes, shapes, offsets)
/// and read the Triscope header entries; a model config found there is validated. `path`
/// only names the origin in errors.
pub fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<(SafeTensors<'a>, CheckpointHeader)> {
    let bad = |reason: String| TriscopeError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let header = header_from_raw(meta.metadata().clone().unwrap_or_default(), path)?;
    Ok((st, header))
}

/// The Triscope entries of a safetensors header's `__metadata__`: a model config found there
/// is validated; unreadable metadata counts as none. `path` only names the origin in errors.
pub fn header_from_raw(raw: HashMap<String, String>, path: &Path) -> Result<CheckpointHeader> {
    let bad = |reason: String| TriscopeError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let config = match raw.get(CONFIG_KEY) {
        Some(json) => {
            let config = serde_json::from_str::<ModelConfig>(json)
                .map_err(|e| bad(format!("its model config ({CONFIG_KEY}) is invalid: {e}")))?;
            // Checked before anything is allocated from it (the head's size, the widths).
            config.validate().map_err(|e| {
                bad(format!(
                    "its model config ({CONFIG_KEY}) is not usable: {e}"
                ))
            })?;
            Some(config)
        }
        None => None,
    };
    let metadata = match raw.get(METADATA_KEY) {
        Some(json) => serde_json::from_str::<CheckpointMetadata>(json).ok(),
        None => None,
    };
    Ok(CheckpointHeader {
        config,
        metadata,
        raw,
    })
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
