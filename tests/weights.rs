//! Checkpoints, import and export: layouts, round trips and clear errors for wrong files.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use burn::tensor::Device;
use common::*;
use safetensors::tensor::SafeTensors;
use triscope::io::weights::{
    CheckpointMetadata, export_torchvision, import_state_dict, load_checkpoint, read_header,
    save_checkpoint,
};
use triscope::model::{ModelConfig, ResNet50};

fn narrow(num_classes: usize, in_channels: usize) -> ModelConfig {
    let mut c = ModelConfig::generic(num_classes, in_channels);
    c.base_width = 4;
    c.resolution = 64;
    c
}

#[test]
fn export_has_torchvision_keys_shapes_and_dtypes() {
    // Full width, as torchvision.models.resnet50(num_classes=7) has it.
    let device = Device::flex();
    let model = ResNet50::init(&ModelConfig::ham10000(), 1, &device).unwrap();
    let dir = TempDir::new("export-layout");
    let out = dir.path().join("rn50.safetensors");
    export_torchvision(&model, &out).unwrap();

    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("torchvision_resnet50_keys.json")).unwrap())
            .unwrap();
    let reference = reference["keys"].as_array().unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), reference.len(), "key count");
    for entry in reference {
        let key = entry[0].as_str().unwrap();
        let shape: Vec<usize> = entry[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let dtype = entry[2].as_str().unwrap();
        let view = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("export lacks {key}"));
        assert_eq!(view.shape(), shape.as_slice(), "{key}");
        let want = if dtype == "int64" { "I64" } else { "F32" };
        assert_eq!(format!("{:?}", view.dtype()), want, "{key}");
    }
}

#[test]
fn checkpoint_round_trip_keeps_weights_config_and_metadata() {
    let device = Device::flex();
    let config = narrow(7, 3);
    let model = ResNet50::init(&config, 42, &device).unwrap();
    let mut meta = CheckpointMetadata::now("round trip", false);
    meta.seed = Some(42);
    meta.metrics.insert("accuracy".into(), 0.5);
    let dir = TempDir::new("roundtrip");
    let path = dir.path().join("m.safetensors");
    save_checkpoint(&model, &meta, &path).unwrap();

    let loaded = load_checkpoint(&path, &device).unwrap();
    assert_eq!(loaded.model.config, config);
    assert_eq!(loaded.metadata, meta);
    let a = model.named_tensors().unwrap();
    let b = loaded.model.named_tensors().unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.key, y.key);
        assert_eq!(x.values, y.values, "{}", x.key);
    }
    let header = read_header(&path).unwrap();
    assert_eq!(header.config.unwrap(), config);

    // Export then import gives the same tensors again.
    let exported = dir.path().join("tv.safetensors");
    export_torchvision(&model, &exported).unwrap();
    let again = import_state_dict(&exported, &config, None, &device).unwrap();
    for (x, y) in a.iter().zip(again.named_tensors().unwrap().iter()) {
        assert_eq!(x.values, y.values, "{}", x.key);
    }
}

#[test]
fn seeded_init_is_deterministic() {
    let device = Device::flex();
    let config = narrow(3, 1);
    let a = ResNet50::init(&config, 9, &device)
        .unwrap()
        .named_tensors()
        .unwrap();
    let b = ResNet50::init(&config, 9, &device)
        .unwrap()
        .named_tensors()
        .unwrap();
    let c = ResNet50::init(&config, 10, &device)
        .unwrap()
        .named_tensors()
        .unwrap();
    assert_eq!(a[0].values, b[0].values);
    assert_ne!(a[0].values, c[0].values);
}

#[test]
fn class_count_mismatch_names_both_numbers() {
    let device = Device::flex();
    let dir = TempDir::new("mismatch");
    let path = dir.path().join("c14.safetensors");
    let m14 = ResNet50::init(&narrow(14, 3), 0, &device).unwrap();
    export_torchvision(&m14, &path).unwrap();
    let err = import_state_dict(&path, &narrow(7, 3), None, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("c14.safetensors"), "{err}");
    assert!(
        err.contains("the checkpoint has 14 classes, the model 7"),
        "{err}"
    );
    assert!(
        err.contains("fc.weight: checkpoint has shape [14, 128], model expects [7, 128]"),
        "{err}"
    );
}

#[test]
fn channel_and_width_mismatches_are_reported() {
    let device = Device::flex();
    let dir = TempDir::new("mismatch-ch");
    let gray = dir.path().join("gray.safetensors");
    export_torchvision(&ResNet50::init(&narrow(7, 1), 0, &device).unwrap(), &gray).unwrap();
    let err = import_state_dict(&gray, &narrow(7, 3), None, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stem takes 1 input channels, the model 3"),
        "{err}"
    );

    let mut wide = narrow(7, 3);
    wide.base_width = 8;
    let err = import_state_dict(&gray, &wide, None, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("base width is 4, the model's 8"), "{err}");
}

#[test]
fn missing_and_unexpected_keys_are_listed() {
    let device = Device::flex();
    let dir = TempDir::new("keys");
    let path = dir.path().join("partial.safetensors");
    let model = ResNet50::init(&narrow(7, 3), 0, &device).unwrap();
    export_torchvision(&model, &path).unwrap();
    // Rewrite the file without layer4.2.conv3.weight and with an extra key.
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "layer4.2.conv3.weight")
        .collect();
    let extra = vec![0u8; 16];
    kept.push((
        "head.extra".to_string(),
        safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![4], &extra)
            .unwrap(),
    ));
    let rewritten = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&path, rewritten).unwrap();
    let err = import_state_dict(&path, &narrow(7, 3), None, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing key layer4.2.conv3.weight"), "{err}");
    assert!(
        err.contains("unexpected key head.extra with shape [4]"),
        "{err}"
    );
}

#[test]
fn bad_checkpoint_files_get_clear_errors() {
    let device = Device::flex();
    let dir = TempDir::new("badckpt");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.safetensors", vec![], "empty (0 bytes)"),
        (
            "garbage.safetensors",
            b"this is not a checkpoint at all".to_vec(),
            "not a Triscope checkpoint",
        ),
        (
            "truncated.safetensors",
            {
                let mut b = std::fs::read(fixture("resnet50_w8_c7.safetensors")).unwrap();
                b.truncate(b.len() / 2);
                b
            },
            "not a Triscope checkpoint",
        ),
        (
            "model.pth",
            b"PK\x03\x04 pickle".to_vec(),
            "pth_to_safetensors",
        ),
    ];
    for (name, bytes, expect) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let err = load_checkpoint(&p, &device).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
    }
    let missing = dir.path().join("nope.safetensors");
    let err = load_checkpoint(&missing, &device).unwrap_err().to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
    // A plain state dict (no Triscope config) says how to import it.
    let err = load_checkpoint(&fixture("resnet50_w8_c7.safetensors"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("triscope import"), "{err}");
}

#[test]
fn nan_weights_are_rejected() {
    let device = Device::flex();
    let dir = TempDir::new("nan");
    let path = dir.path().join("nan.safetensors");
    let model = ResNet50::init(&narrow(7, 3), 0, &device).unwrap();
    export_torchvision(&model, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let nan: Vec<u8> = (0..7).flat_map(|_| f32::NAN.to_le_bytes()).collect();
    let tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            if k == "fc.bias" {
                (
                    k,
                    safetensors::tensor::TensorView::new(v.dtype(), v.shape().to_vec(), &nan)
                        .unwrap(),
                )
            } else {
                (k, v)
            }
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let err = import_state_dict(&path, &narrow(7, 3), None, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc.bias: holds a non-finite value"), "{err}");
}

/// The header from the first bytes only: the same config and metadata as the full read, a
/// clear error naming the file for a broken header, and a bundled model folder listed with
/// each model's modality.
#[test]
fn a_header_is_peeked_from_the_first_bytes_and_bundled_models_list_their_modality() {
    use triscope::inference::{Modality, list_models, models_for};
    use triscope::io::weights::peek_header;
    let device = Device::flex();
    let mut config = narrow(7, 3);
    config.color_constancy = triscope::model::config::ColorConstancy::ShadesOfGray;
    let model = ResNet50::init(&config, 1, &device).unwrap();
    let mut meta = CheckpointMetadata::now("peek", true);
    meta.dataset = Some("ham10000".into());
    let dir = TempDir::new("peek");
    let path = dir.path().join("m.safetensors");
    save_checkpoint(&model, &meta, &path).unwrap();
    let peeked = peek_header(&path).unwrap();
    let full = read_header(&path).unwrap();
    assert_eq!(peeked.config, full.config);
    assert_eq!(peeked.metadata, full.metadata);
    assert_eq!(peeked.raw, full.raw);

    // Broken headers: too short, a length past the end, not JSON.
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut not_json = bytes.clone();
    not_json[8] = b'#';
    for (name, content, says) in [
        ("short.safetensors", bytes[..5].to_vec(), "too short"),
        ("long.safetensors", bytes[..8 + n / 2].to_vec(), "claims"),
        ("junk.safetensors", not_json, "not JSON"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let e = peek_header(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(says), "{e}");
    }

    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let listed = list_models(&models);
    let modality = |name: &str| {
        listed
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .modality
    };
    assert_eq!(modality("ham10000_default"), Some(Modality::Dermoscopy));
    assert_eq!(modality("kermany_cxr_default"), Some(Modality::Radiograph));
    assert_eq!(modality("tb_cxr_default"), Some(Modality::Radiograph));
    let chest: Vec<&str> = models_for(
        &listed,
        Modality::Radiograph,
        Some("shenzhen-montgomery-cxr"),
    )
    .iter()
    .map(|e| e.name.as_str())
    .collect();
    assert_eq!(
        chest,
        ["tb_cxr_default", "kermany_cxr_default", "nih_cxr14_demo"]
    );
}
