//! The concept bank on disk: one safetensors file per (model, data, options), named by the
//! hash of the model's configuration and weights and the hash of derm7pt's labels, its
//! images' sizes and the options, so that a changed model or data set never reads a stale
//! bank. The JSON part of the bank sits in the header, the CAVs as `[runs, dim]` f32 tensors.
//!
//! The cache lives in the user's cache folder (`$TRISCOPE_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/triscope`, else `~/.cache/triscope`), under `concepts/`: the embedded
//! model has no folder of its own, and a bundled model's folder may be read-only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::checklist::ChecklistTable;
use super::concept_bank::{BankOptions, BankProgress, ConceptBank, build_bank};
use super::tcav::Cav;
use crate::error::{Result, TriscopeError};
use crate::inference::Classifier;
use crate::model::ResNet50;
use crate::util::fsio::write_atomic;

/// Changes whenever the bank's contents or their meaning change.
const BANK_FORMAT: &str = "triscope-concept-bank-1";
const FORMAT_KEY: &str = "triscope.format";
const BANK_KEY: &str = "triscope.concept_bank";

/// FNV-1a, 64 bits: a stable hash (std's `DefaultHasher` may change between releases).
#[derive(Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Hash of a model's configuration and every weight.
pub fn model_key(model: &ResNet50) -> Result<String> {
    let mut h = Fnv64::default();
    h.write(
        serde_json::to_string(&model.config)
            .map_err(|e| TriscopeError::Compute(format!("model configuration as JSON: {e}")))?
            .as_bytes(),
    );
    for t in model.named_tensors()? {
        h.write(t.key.as_bytes());
        for v in &t.values {
            h.write(&v.to_le_bytes());
        }
    }
    Ok(h.hex())
}

/// Hash of derm7pt's labels, the size of each image and the options.
pub fn data_key(table: &ChecklistTable, options: &BankOptions) -> Result<String> {
    let mut h = Fnv64::default();
    h.write(BANK_FORMAT.as_bytes());
    let labels = std::fs::read(&table.labels).map_err(|source| TriscopeError::Io {
        path: table.labels.clone(),
        source,
    })?;
    h.write(&labels);
    for row in &table.rows {
        let len = std::fs::metadata(&row.path)
            .map_err(|source| TriscopeError::Io {
                path: row.path.clone(),
                source,
            })?
            .len();
        h.write(&len.to_le_bytes());
    }
    h.write(
        serde_json::to_string(options)
            .map_err(|e| TriscopeError::Compute(format!("options as JSON: {e}")))?
            .as_bytes(),
    );
    Ok(h.hex())
}

/// The user's cache folder for Triscope, if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("TRISCOPE_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("triscope")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("triscope")))
}

/// The bank's file in `cache` for these keys.
pub fn bank_file(cache: &Path, model_key: &str, data_key: &str) -> PathBuf {
    cache
        .join("concepts")
        .join(format!("{model_key}-{data_key}.safetensors"))
}

fn layer_name(l: crate::model::LayerId) -> &'static str {
    l.name()
}

/// Write `bank` to `path` (whole or not at all).
pub fn save_bank(bank: &ConceptBank, path: &Path) -> Result<()> {
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut push = |key: String, cavs: &[Cav]| {
        let dim = cavs.first().map(|c| c.direction.len()).unwrap_or(0);
        let bytes: Vec<u8> = cavs
            .iter()
            .flat_map(|c| c.direction.iter().flat_map(|&x| (x as f32).to_le_bytes()))
            .collect();
        blobs.push((key, vec![cavs.len(), dim], bytes));
    };
    for c in &bank.criteria {
        for l in &c.layers {
            push(format!("cav.{}.{}", c.name, layer_name(l.layer)), &l.cavs);
        }
    }
    for n in &bank.nulls {
        push(format!("null.{}", layer_name(n.layer)), &n.cavs);
    }
    let views = blobs
        .iter()
        .map(|(k, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| TriscopeError::Compute(format!("tensor {k}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut header = HashMap::new();
    header.insert(FORMAT_KEY.to_string(), BANK_FORMAT.to_string());
    header.insert(
        BANK_KEY.to_string(),
        serde_json::to_string(bank)
            .map_err(|e| TriscopeError::Compute(format!("concept bank as JSON: {e}")))?,
    );
    let bytes = safetensors::serialize(views, Some(header))
        .map_err(|e| TriscopeError::Compute(format!("serialising the concept bank: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TriscopeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write_atomic(path, &bytes)
}

/// Read a bank written by [`save_bank`]; an error names the file and what is wrong.
pub fn load_bank(path: &Path) -> Result<ConceptBank> {
    let bad = |reason: String| {
        TriscopeError::InvalidArgument(format!(
            "{} is not a usable concept bank: {reason}",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let header = meta.metadata().clone().unwrap_or_default();
    if header.get(FORMAT_KEY).map(String::as_str) != Some(BANK_FORMAT) {
        return Err(bad(format!("its format is not {BANK_FORMAT}")));
    }
    let json = header
        .get(BANK_KEY)
        .ok_or_else(|| bad(format!("no {BANK_KEY} in its header")))?;
    let mut bank: ConceptBank =
        serde_json::from_str(json).map_err(|e| bad(format!("its header: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let read = |key: &str, accuracies: &[f64]| -> Result<Vec<Cav>> {
        let view = st
            .tensor(key)
            .map_err(|_| bad(format!("tensor {key} is missing")))?;
        let shape = view.shape();
        if view.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != accuracies.len() {
            return Err(bad(format!(
                "tensor {key} is {:?} {shape:?}, expected F32 [{}, dim]",
                view.dtype(),
                accuracies.len()
            )));
        }
        let values: Vec<f64> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect();
        Ok(values
            .chunks(shape[1].max(1))
            .zip(accuracies)
            .map(|(d, &accuracy)| Cav {
                direction: d.to_vec(),
                accuracy,
            })
            .collect())
    };
    for c in &mut bank.criteria {
        for l in &mut c.layers {
            l.cavs = read(
                &format!("cav.{}.{}", c.name, layer_name(l.layer)),
                &l.cav_accuracies,
            )?;
            l.direction = super::concept_bank::mean_direction(&l.cavs);
        }
    }
    for n in &mut bank.nulls {
        n.cavs = read(&format!("null.{}", layer_name(n.layer)), &n.accuracies)?;
    }
    Ok(bank)
}

/// Where a bank came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankOrigin {
    /// Read from this file.
    Cache(PathBuf),
    /// Built now, and written to this file (`Err`: no cache folder, or it could not be
    /// written: the reason).
    Built(std::result::Result<PathBuf, String>),
}

impl BankOrigin {
    /// The cache file the bank was read from or written to.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Cache(f) | Self::Built(Ok(f)) => Some(f),
            Self::Built(Err(_)) => None,
        }
    }

    /// "from the cache: FILE", "built in 39 s and cached: FILE" or "built in 39 s, not
    /// cached: WHY", for a bank that took `build_secs` to build.
    pub fn describe(&self, build_secs: f64) -> String {
        match self {
            Self::Cache(f) => format!("from the cache: {}", f.display()),
            Self::Built(Ok(f)) => format!("built in {build_secs:.0} s and cached: {}", f.display()),
            Self::Built(Err(why)) => format!("built in {build_secs:.0} s, not cached: {why}"),
        }
    }
}

/// The bank of `classifier` for the derm7pt folder `root`: from `cache` (default
/// [`cache_dir`]) when a bank for this model, data and options is there, else built and
/// stored there. A cache file that cannot be read is rebuilt over, never trusted.
pub fn load_or_build(
    classifier: &Classifier,
    root: &Path,
    options: &BankOptions,
    cache: Option<&Path>,
    progress: &mut dyn FnMut(BankProgress),
    cancel: &AtomicBool,
) -> Result<(ConceptBank, BankOrigin)> {
    options.validate()?;
    let table = ChecklistTable::open(root)?;
    let keys = (model_key(classifier.model())?, data_key(&table, options)?);
    let dir = cache.map(Path::to_path_buf).or_else(cache_dir);
    let file = dir.as_deref().map(|d| bank_file(d, &keys.0, &keys.1));
    if let Some(f) = file.as_deref().filter(|f| f.is_file())
        && let Ok(bank) = load_bank(f)
        && bank.model_key == keys.0
        && bank.data_key == keys.1
    {
        return Ok((bank, BankOrigin::Cache(f.to_path_buf())));
    }
    let bank = build_bank(classifier, &table, options, keys, progress, cancel)?;
    let stored = match file {
        Some(f) => save_bank(&bank, &f).map(|_| f).map_err(|e| e.to_string()),
        None => Err("no cache folder ($TRISCOPE_CACHE_DIR, $XDG_CACHE_HOME or $HOME)".into()),
    };
    Ok((bank, BankOrigin::Built(stored)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv64::default();
            h.write(s.as_bytes());
            h.hex()
        };
        assert_eq!(hash(""), "cbf29ce484222325");
        assert_eq!(hash("a"), "af63dc4c8601ec8c");
        assert_eq!(hash("foobar"), "85944171f73967e8");
    }
}
