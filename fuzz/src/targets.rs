//! The fuzz target bodies, shared with the main package's corpus replay
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must return without panicking;
//! errors are expected and ignored.

use std::path::Path;

use super::surface::{checkpoint, dicom, imaging, npy, train};

/// Image loader: format sniffing (DICOM by its marker), caps, decode, then the model input
/// pipeline (channel conversion, antialiased resize, crop) for 1 and 3 channels.
pub fn image(data: &[u8]) {
    let options = imaging::DecodeOptions::default();
    if let Ok(decoded) = imaging::decode_bytes(data, &options) {
        let img = decoded.image;
        let _ = imaging::prepare(img.clone(), 3, 32, imaging::ResizeMode::ShorterSideCrop);
        let _ = imaging::prepare(img, 1, 40, imaging::ResizeMode::Stretch);
    }
}

/// DICOM decoder with the file's window and with a window taken from the first bytes.
pub fn dicom(data: &[u8]) {
    let _ = dicom::decode_dicom_bytes(data, None);
    if data.len() > 2 {
        let window = dicom::Window {
            center: f64::from(data[0]) * 16.0 - 1024.0,
            width: f64::from(data[1]) * 8.0 + 0.5,
        };
        let _ = dicom::decode_dicom_bytes(data, Some(window));
    }
}

/// Checkpoint container: safetensors structure, header JSON, model config (validated); then
/// every tensor's bytes, and the `.npy` reader on the same bytes.
pub fn checkpoint(data: &[u8]) {
    if let Ok((st, header)) = checkpoint::parse(data, Path::new("fuzz.safetensors")) {
        for (_, view) in st.tensors() {
            let _ = (view.shape().iter().product::<usize>(), view.data().len());
        }
        let _ = header.config.map(|c| c.num_classes);
    }
    if let Ok(a) = npy::decode(data) {
        let _ = a.to_i64();
    }
}

/// Training config: YAML, `--set`-style overrides from the last line, path resolution and
/// validation.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("fuzz-config/config.yaml");
    let _ = train::TrainConfig::from_yaml(text, origin, &[]);
    if let Some(last) = text.lines().last().filter(|l| l.contains('=')) {
        let _ = train::TrainConfig::from_yaml(text, origin, &[last.to_string()]);
    }
}
