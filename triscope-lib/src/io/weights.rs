//! Checkpoints and PyTorch interop, all in safetensors.
//!
//! A Triscope checkpoint is a safetensors file holding the network under torchvision's keys
//! (so `torchvision.models.resnet50(num_classes=N).load_state_dict(..., strict=True)` takes it
//! as it is) with the model config and metadata as JSON in the safetensors header. A plain
//! torchvision state dict saved as safetensors is imported by giving the config by hand.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
pub use crate::io::checkpoint::{
    CONFIG_KEY, CheckpointHeader, CheckpointMetadata, EXTRA_PREFIX, FORMAT_CHECKPOINT, FORMAT_KEY,
    METADATA_KEY, utc_now_rfc3339,
};
use crate::model::source::{Fetch, Init, ParamBuilder, ParamSource};
use crate::model::{ModelConfig, ResNet50};
use crate::util::fsio::write_atomic;

/// Largest checkpoint file accepted (a full-width ResNet-50 in f32 is ~100 MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 2 << 30;

/// How a 3-channel stem becomes a 1-channel one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StemAdaptation {
    /// Mean of the kernels over the input channels (default).
    #[default]
    Mean,
    /// The red channel's kernel.
    Red,
}

impl crate::util::choice::Choice for StemAdaptation {
    const KIND: &'static str = "stem adaptation";
    const ALL: &'static [Self] = &[Self::Mean, Self::Red];
    fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Red => "red",
        }
    }
}

impl std::str::FromStr for StemAdaptation {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::util::choice::parse(s)
    }
}

/// Turn a `[out, 3, k, k]` stem kernel into `[out, 1, k, k]` (row-major values).
pub fn adapt_stem_to_gray(weights: &[f32], out_channels: usize, mode: StemAdaptation) -> Vec<f32> {
    let per_channel = weights.len() / (out_channels * 3).max(1);
    let mut gray = Vec::with_capacity(out_channels * per_channel);
    for o in 0..out_channels {
        let base = o * 3 * per_channel;
        for i in 0..per_channel {
            let r = weights[base + i];
            let g = weights[base + per_channel + i];
            let b = weights[base + 2 * per_channel + i];
            gray.push(match mode {
                StemAdaptation::Mean => (r + g + b) / 3.0,
                StemAdaptation::Red => r,
            });
        }
    }
    gray
}

/// The parsed tensors of a safetensors file, converted to f32.
struct SafetensorsSource {
    path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Dtype, Vec<u8>)>,
    /// The reserved byte blobs ([`EXTRA_PREFIX`]): training state, the OOD statistics.
    extras: ExtraBlobs,
    used: HashSet<String>,
    stem: Option<StemAdaptation>,
}

impl SafetensorsSource {
    fn open(path: &Path) -> Result<(Self, CheckpointHeader)> {
        let bytes = read_bounded(path)?;
        Self::from_bytes(&bytes, path)
    }

    /// Parse safetensors `bytes`; `path` only names the origin in errors.
    fn from_bytes(bytes: &[u8], path: &Path) -> Result<(Self, CheckpointHeader)> {
        let (st, header) = crate::io::checkpoint::parse(bytes, path)?;
        let extras = extra_blobs(&st);
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            // Training state and statistics ride along under reserved names.
            if name.starts_with(EXTRA_PREFIX) {
                continue;
            }
            tensors.insert(
                name,
                (view.shape().to_vec(), view.dtype(), view.data().to_vec()),
            );
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                tensors,
                extras,
                used: HashSet::new(),
                stem: None,
            },
            header,
        ))
    }
}

impl ParamSource for SafetensorsSource {
    fn fetch(&mut self, key: &str, shape: &[usize], _init: Init) -> Fetch {
        let Some((found_shape, dtype, data)) = self.tensors.get(key) else {
            return Fetch::Missing;
        };
        self.used.insert(key.to_string());
        let values = match to_f32(*dtype, data) {
            Ok(v) => v,
            Err(e) => return Fetch::Invalid(e),
        };
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Fetch::Invalid(format!("holds a non-finite value ({bad})"));
        }
        if found_shape.as_slice() == shape {
            return Fetch::Values(values);
        }
        // A 3-channel stem loaded into a 1-channel model, when the caller asked for it.
        let is_rgb_stem = key == "conv1.weight"
            && found_shape.len() == 4
            && shape.len() == 4
            && found_shape[1] == 3
            && shape[1] == 1
            && found_shape[0] == shape[0]
            && found_shape[2..] == shape[2..];
        match (is_rgb_stem, self.stem) {
            (true, Some(mode)) => Fetch::Values(adapt_stem_to_gray(&values, shape[0], mode)),
            _ => Fetch::WrongShape(found_shape.clone()),
        }
    }

    fn consume_optional(&mut self, key: &str) {
        if self.tensors.contains_key(key) {
            self.used.insert(key.to_string());
        }
    }

    fn unused_keys(&self) -> Vec<(String, Vec<usize>)> {
        let mut keys: Vec<_> = self
            .tensors
            .iter()
            .filter(|(k, _)| !self.used.contains(*k))
            .map(|(k, (s, _, _))| (k.clone(), s.clone()))
            .collect();
        keys.sort();
        keys
    }

    fn origin(&self) -> PathBuf {
        self.path.clone()
    }
}

fn to_f32(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(format!("has dtype {other:?}; expected a float type")),
    })
}

fn describe_st_error(e: &safetensors::SafeTensorError) -> String {
    format!("{e}")
}

/// Read a whole file with a size cap and clear errors for missing and empty files.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(TriscopeError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: "it is a directory".into(),
        });
    }
    if meta.len() == 0 {
        return Err(TriscopeError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: "the file is empty (0 bytes)".into(),
        });
    }
    if meta.len() > MAX_CHECKPOINT_BYTES {
        return Err(TriscopeError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is larger than the {} byte limit",
                meta.len(),
                MAX_CHECKPOINT_BYTES
            ),
        });
    }
    if path
        .extension()
        .is_some_and(|e| e == "pth" || e == "pt" || e == "bin" || e == "ckpt")
    {
        return Err(TriscopeError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: "PyTorch pickle files are not read (they can run code); convert it with \
                     `python3 tools/pth_to_safetensors.py FILE.pth OUT.safetensors` and import that"
                .into(),
        });
    }
    std::fs::read(path).map_err(|source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A model together with what its file said about it.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: ResNet50,
    pub metadata: CheckpointMetadata,
    pub path: PathBuf,
    /// The file's extra header entries and byte blobs ([`save_checkpoint_with_extras`]).
    pub extra_header: HashMap<String, String>,
    pub extra_blobs: ExtraBlobs,
}

/// Load a Triscope checkpoint (config in the header) onto `device`.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<LoadedModel> {
    let (source, header) = SafetensorsSource::open(path)?;
    build_checkpoint(source, header, path, device)
}

/// Load a Triscope checkpoint from memory (the embedded default model); `origin` names it.
pub fn load_checkpoint_bytes(bytes: &[u8], origin: &Path, device: &Device) -> Result<LoadedModel> {
    let (source, header) = SafetensorsSource::from_bytes(bytes, origin)?;
    build_checkpoint(source, header, origin, device)
}

fn build_checkpoint(
    mut source: SafetensorsSource,
    header: CheckpointHeader,
    path: &Path,
    device: &Device,
) -> Result<LoadedModel> {
    let Some(config) = header.config else {
        return Err(TriscopeError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "it has no Triscope model config (a plain state dict?); import it first: \
                 triscope import {} --num-classes N --out model.safetensors",
                path.display()
            ),
        });
    };
    let mut builder = ParamBuilder::new(&mut source, device.clone());
    let model = ResNet50::build(&config, &mut builder)?;
    Ok(LoadedModel {
        model,
        metadata: header.metadata.unwrap_or_default(),
        path: path.to_path_buf(),
        extra_header: extra_header(&header.raw),
        extra_blobs: source.extras,
    })
}

/// Load weights from a safetensors state dict (torchvision keys) into a model of `config`.
/// With `stem`, a 3-channel stem is adapted when `config` has one channel.
pub fn import_state_dict(
    path: &Path,
    config: &ModelConfig,
    stem: Option<StemAdaptation>,
    device: &Device,
) -> Result<ResNet50> {
    let (mut source, _) = SafetensorsSource::open(path)?;
    source.stem = stem;
    let mut builder = ParamBuilder::new(&mut source, device.clone());
    ResNet50::build(config, &mut builder)
}

/// Read only the header of a checkpoint (config and metadata), without building the model.
pub fn read_header(path: &Path) -> Result<CheckpointHeader> {
    SafetensorsSource::open(path).map(|(_, h)| h)
}

/// The header entries of a checkpoint from its first bytes only (the safetensors length and
/// JSON header, not the tensors): cheap enough to list a folder of models. Unlike
/// [`read_header`], a file whose tensors are broken passes; loading it still fails.
pub fn peek_header(path: &Path) -> Result<CheckpointHeader> {
    use std::io::Read;
    // safetensors' own bound on the JSON header.
    const MAX_HEADER_BYTES: u64 = 100_000_000;
    let io = |source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |reason: String| TriscopeError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| {
        bad(format!(
            "{size} bytes is too short for a safetensors header"
        ))
    })?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES || n > size.saturating_sub(8) {
        return Err(bad(format!(
            "its header claims {n} bytes; the file has {size} in all"
        )));
    }
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json).map_err(io)?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| bad(format!("its header is not JSON: {e}")))?;
    let raw = value
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    crate::io::checkpoint::header_from_raw(raw, path)
}

/// Serialise the model as safetensors bytes in torchvision's layout, with `header` entries.
fn serialize_model(model: &ResNet50, header: HashMap<String, String>) -> Result<Vec<u8>> {
    serialize_model_with(model, header, &[])
}

fn serialize_model_with(
    model: &ResNet50,
    header: HashMap<String, String>,
    extra_blobs: &[(String, Vec<u8>)],
) -> Result<Vec<u8>> {
    let named = model.named_tensors()?;
    let mut blobs: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> =
        Vec::with_capacity(named.len() * 5 / 4);
    for t in named {
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let counter = t
            .is_bn_running_var
            .then(|| t.key.trim_end_matches("running_var").to_string() + "num_batches_tracked");
        blobs.push((t.key, t.shape, Dtype::F32, bytes));
        if let Some(key) = counter {
            blobs.push((key, Vec::new(), Dtype::I64, 0i64.to_le_bytes().to_vec()));
        }
    }
    for (key, bytes) in extra_blobs {
        blobs.push((key.clone(), vec![bytes.len()], Dtype::U8, bytes.clone()));
    }
    let views = blobs
        .iter()
        .map(|(k, shape, dtype, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| TriscopeError::Compute(format!("tensor {k}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(header))
        .map_err(|e| TriscopeError::Compute(format!("serialising safetensors: {e}")))
}

/// Save a Triscope checkpoint atomically (temporary file + rename).
pub fn save_checkpoint(model: &ResNet50, metadata: &CheckpointMetadata, path: &Path) -> Result<()> {
    let mut header = HashMap::new();
    header.insert(FORMAT_KEY.to_string(), FORMAT_CHECKPOINT.to_string());
    header.insert(CONFIG_KEY.to_string(), to_json(&model.config)?);
    header.insert(METADATA_KEY.to_string(), to_json(metadata)?);
    let bytes = serialize_model(model, header)?;
    write_atomic(path, &bytes)
}

/// Save a checkpoint that also carries extra header entries and byte blobs (names starting
/// with [`EXTRA_PREFIX`]; the weight loader ignores them), atomically.
pub fn save_checkpoint_with_extras(
    model: &ResNet50,
    metadata: &CheckpointMetadata,
    extra_header: &[(String, String)],
    extra_blobs: &[(String, Vec<u8>)],
    path: &Path,
) -> Result<()> {
    let mut header = HashMap::new();
    header.insert(FORMAT_KEY.to_string(), FORMAT_CHECKPOINT.to_string());
    header.insert(CONFIG_KEY.to_string(), to_json(&model.config)?);
    header.insert(METADATA_KEY.to_string(), to_json(metadata)?);
    for (k, v) in extra_header {
        if !k.starts_with(EXTRA_PREFIX) {
            return Err(TriscopeError::InvalidArgument(format!(
                "extra header key {k} must start with {EXTRA_PREFIX}"
            )));
        }
        header.insert(k.clone(), v.clone());
    }
    for (k, _) in extra_blobs {
        if !k.starts_with(EXTRA_PREFIX) {
            return Err(TriscopeError::InvalidArgument(format!(
                "extra tensor {k} must start with {EXTRA_PREFIX}"
            )));
        }
    }
    let bytes = serialize_model_with(model, header, extra_blobs)?;
    write_atomic(path, &bytes)
}

/// Named byte blobs of a checkpoint (training state).
pub type ExtraBlobs = HashMap<String, Vec<u8>>;

/// The extra header entries and byte blobs of a checkpoint written by
/// [`save_checkpoint_with_extras`].
pub fn read_extras(path: &Path) -> Result<(HashMap<String, String>, ExtraBlobs)> {
    let bytes = read_bounded(path)?;
    let bad = |reason: String| TriscopeError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(describe_st_error(&e)))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(describe_st_error(&e)))?;
    let header = extra_header(&meta.metadata().clone().unwrap_or_default());
    Ok((header, extra_blobs(&st)))
}

/// The header entries under [`EXTRA_PREFIX`].
fn extra_header(raw: &HashMap<String, String>) -> HashMap<String, String> {
    raw.iter()
        .filter(|(k, _)| k.starts_with(EXTRA_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The byte blobs under [`EXTRA_PREFIX`].
fn extra_blobs(st: &SafeTensors) -> ExtraBlobs {
    st.tensors()
        .into_iter()
        .filter(|(name, view)| name.starts_with(EXTRA_PREFIX) && view.dtype() == Dtype::U8)
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

/// Export a torchvision state dict (safetensors) that
/// `torchvision.models.resnet50(num_classes=N)` loads with `strict=True` (at base width 64).
pub fn export_torchvision(model: &ResNet50, path: &Path) -> Result<()> {
    let mut header = HashMap::new();
    header.insert(FORMAT_KEY.to_string(), "pt".to_string());
    header.insert(CONFIG_KEY.to_string(), to_json(&model.config)?);
    let bytes = serialize_model(model, header)?;
    write_atomic(path, &bytes)
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| TriscopeError::Compute(format!("JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stem_adaptation_mean_and_red() {
        // 2 output channels, 3 inputs, 1x2 kernels: values o*100 + c*10 + i
        let mut w = Vec::new();
        for o in 0..2 {
            for c in 0..3 {
                for i in 0..2 {
                    w.push((o * 100 + c * 10 + i) as f32);
                }
            }
        }
        let mean = adapt_stem_to_gray(&w, 2, StemAdaptation::Mean);
        assert_eq!(mean, vec![10.0, 11.0, 110.0, 111.0]);
        let red = adapt_stem_to_gray(&w, 2, StemAdaptation::Red);
        assert_eq!(red, vec![0.0, 1.0, 100.0, 101.0]);
    }

    #[test]
    fn rfc3339_shape() {
        let s = utc_now_rfc3339();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
