//! The bad-input corpus (`tests/bad_inputs/`, made by `tools/make_bad_inputs.py`): every file
//! through every loader that takes its kind and through the CLI command that reads it. Each
//! must fail with an error naming the file and the problem, without a panic (exit code 1 or
//! 2, never 101) and without a large allocation (a counting allocator records the largest
//! single request while each loader runs).

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;
#[path = "common/largest_allocation.rs"]
mod largest_allocation;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use common::*;
use triscope::io::data::Dataset;
use triscope::io::imaging::{ResizeMode, load_image};
use triscope::io::weights::{load_checkpoint, read_header};
use triscope::train::TrainConfig;

/// Largest single allocation any loader may make on a corpus file.
const ALLOCATION_CAP: usize = 64 << 20;

fn corpus() -> PathBuf {
    root().join("tests").join("bad_inputs")
}

/// Run `f`, returning its error text and the largest allocation it made.
fn measured<T>(f: impl FnOnce() -> Result<T, String>) -> (Option<String>, usize) {
    let (outcome, largest) = largest_allocation::largest_during(f);
    match outcome {
        Ok(Ok(_)) => (None, largest),
        Ok(Err(e)) => (Some(e), largest),
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("a loader panicked: {what}")
        }
    }
}

/// (file or folder relative to the corpus, words the error must contain).
type Case = (&'static str, &'static [&'static str]);

const IMAGES: &[Case] = &[
    ("images/empty.png", &["empty (0 bytes)"]),
    ("images/truncated.png", &["truncated"]),
    ("images/truncated.jpg", &["not a readable image"]),
    ("images/jpeg_cut_40.jpg", &["truncated"]),
    ("images/jpeg_cut_80.jpg", &["truncated"]),
    ("images/jpeg_cut_99.jpg", &["truncated"]),
    ("images/jpeg_no_end_marker.jpg", &["truncated"]),
    ("images/jpeg_progressive_cut_30.jpg", &["truncated"]),
    ("images/jpeg_progressive_cut_75.jpg", &["truncated"]),
    ("dicom/jpeg_frame_cut.dcm", &["truncated"]),
    ("images/text_named.png", &["unrecognised format"]),
    ("images/wrong_magic.jpg", &["unrecognised format"]),
    ("images/png_side_over_limit.png", &["40001x16", "limit"]),
    ("images/png_decode_over_memory_cap.png", &["MiB to decode"]),
    ("images/png_zero_size.png", &["not a readable image"]),
    ("images/png_bad_crc.png", &["not a readable image"]),
    ("images/jpeg_side_over_limit.jpg", &["65000x65000", "limit"]),
    ("images/bmp_huge.bmp", &["MiB to decode"]),
    ("images/bmp_negative_width.bmp", &["not a readable image"]),
    (
        "images/tiff_huge_strip.tiff",
        &["30000x30000", "more than 4096 times"],
    ),
    ("images/tiff_float_nan.tiff", &["non-finite pixel value"]),
    ("images/tiff_float_inf.tiff", &["non-finite pixel value"]),
    ("dicom/empty.dcm", &["empty (0 bytes)"]),
    ("dicom/truncated.dcm", &["declares", "only", "follow"]),
    ("dicom/no_dicm_marker.dcm", &["no DICM marker"]),
    (
        "dicom/pixel_length_4gib.dcm",
        &["declares 4294967280 bytes"],
    ),
    (
        "dicom/rows_columns_over_limit.dcm",
        &["65535x65535", "limit"],
    ),
    (
        "dicom/pixel_data_short.dcm",
        &["pixel data holds 100 bytes", "4096"],
    ),
    ("dicom/bits_allocated_32.dcm", &["BitsAllocated 32"]),
    ("dicom/bits_stored_over_allocated.dcm", &["BitsStored 12"]),
    (
        "dicom/ybr_422_odd_columns.dcm",
        &["YBR_FULL_422", "even number of columns (it has 3)"],
    ),
    (
        "dicom/ybr_rct_not_jpeg2000.dcm",
        &["YBR_RCT", "JPEG 2000 colour transform"],
    ),
    (
        "dicom/unknown_transfer_syntax.dcm",
        &["unknown transfer syntax", "1.2.3.4.5.6.7"],
    ),
    (
        "dicom/deflated_not_deflate.dcm",
        &["deflated data set cannot be inflated"],
    ),
    (
        "dicom/deflated_truncated.dcm",
        &["deflated data set cannot be inflated"],
    ),
    (
        "dicom/jpeg2000_syntax.dcm",
        &["JPEG 2000", "1.2.840.10008.1.2.4.90"],
    ),
    ("dicom/nested_sequences.dcm", &["nested deeper than"]),
    ("dicom/no_pixel_data.dcm", &["no Rows"]),
    (
        "dicom/rle_segment_short.dcm",
        &["corrupt RLE", "segment 0 decodes to 10 bytes", "64"],
    ),
    (
        "dicom/rle_segment_count_wrong.dcm",
        &["corrupt RLE", "3 segments", "ask for 1"],
    ),
    (
        "dicom/rle_offset_past_fragment.dcm",
        &["corrupt RLE", "[900]", "outside the fragment"],
    ),
    (
        "dicom/rle_literal_run_truncated.dcm",
        &["corrupt RLE", "ends inside a literal run"],
    ),
    (
        "dicom/rle_fragment_without_header.dcm",
        &["corrupt RLE", "10 bytes has no 64-byte header"],
    ),
    (
        "dicom/jpeg_frame_size_mismatch.dcm",
        &["JPEG frame is 16x16", "say 8x8"],
    ),
    (
        "dicom/jpeg_fragment_not_jpeg.dcm",
        &["cannot decode the JPEG frame", "SOI marker"],
    ),
    (
        "dicom/jpeg_truncated.dcm",
        &["cannot decode the JPEG frame"],
    ),
    (
        "dicom/jpeg_lossless_truncated.dcm",
        &["cannot decode the lossless JPEG frame"],
    ),
    (
        "dicom/jpeg_lossless_larger_than_declared.dcm",
        &["96x96x1 samples, more than the 64 expected"],
    ),
    (
        "dicom/jpeg_lossless_holds_baseline.dcm",
        &["SOF0 where lossless (SOF3) was expected"],
    ),
    (
        "dicom/jpeg2000_truncated.dcm",
        &["JPEG 2000", "end-of-codestream marker", "truncated"],
    ),
    (
        "dicom/jpeg2000_size_mismatch.dcm",
        &["JPEG 2000 frame is 96x96", "the image attributes say 8x8"],
    ),
    (
        "dicom/jpeg2000_holds_baseline.dcm",
        &["no JPEG 2000 codestream"],
    ),
    ("dicom/jpeg2000_tiles_absurd.dcm", &["16777216 tiles"]),
    (
        "dicom/palette_without_tables.dcm",
        &["PALETTE COLOR without a red LUT descriptor"],
    ),
    (
        "dicom/palette_table_short.dcm",
        &["red LUT data", "256 entries"],
    ),
    (
        "dicom/rle_pixel_data_not_encapsulated.dcm",
        &["not encapsulated", "RLE Lossless"],
    ),
];

const CHECKPOINTS: &[Case] = &[
    ("checkpoints/empty.safetensors", &["empty (0 bytes)"]),
    (
        "checkpoints/truncated.safetensors",
        &["not a Triscope checkpoint"],
    ),
    (
        "checkpoints/header_not_json.safetensors",
        &["not a Triscope checkpoint"],
    ),
    (
        "checkpoints/header_length_absurd.safetensors",
        &["not a Triscope checkpoint"],
    ),
    (
        "checkpoints/header_length_past_end.safetensors",
        &["not a Triscope checkpoint"],
    ),
    (
        "checkpoints/offsets_past_end.safetensors",
        &["not a Triscope checkpoint"],
    ),
    (
        "checkpoints/shape_product_overflows.safetensors",
        &["not a Triscope checkpoint"],
    ),
    (
        "checkpoints/wrong_shapes.safetensors",
        &["does not fit the model", "conv1.weight"],
    ),
    (
        "checkpoints/config_absurd_classes.safetensors",
        &["num_classes"],
    ),
    (
        "checkpoints/config_not_json.safetensors",
        &["triscope.config"],
    ),
];

const CONFIGS: &[Case] = &[
    ("configs/empty_bytes.yaml", &["UTF-8"]),
    ("configs/not_a_mapping.yaml", &["expected struct"]),
    ("configs/wrong_types.yaml", &["training.epochs"]),
    ("configs/unknown_key.yaml", &["epochz"]),
    ("configs/huge_numbers.yaml", &["training.epochs"]),
    ("configs/nan_lr.yaml", &["training.lr"]),
    ("configs/alias_bomb.yaml", &["repetition limit"]),
    ("configs/deep_nesting.yaml", &["recursion limit"]),
    (
        "configs/missing_data_root.yaml",
        &["no_such_folder_here", "does not exist"],
    ),
    (
        "configs/dataset_name_escapes.yaml",
        &["data.dataset", "plain name"],
    ),
    (
        "configs/dataset_name_absolute.yaml",
        &["data.dataset", "plain name"],
    ),
    (
        "configs/weights_missing.yaml",
        &["no_such_weights.safetensors", "does not exist"],
    ),
];

const DATASETS: &[Case] = &[
    ("datasets/empty_labels", &["labels.csv"]),
    ("datasets/labels_not_utf8", &["labels.csv", "UTF-8"]),
    ("datasets/labels_missing_column", &["labels.csv"]),
    ("datasets/labels_missing_images", &["ISIC_0000001"]),
    ("datasets/labels_short_row", &["labels.csv"]),
    ("datasets/labels_unknown_class", &["zebra"]),
    (
        "datasets/class_folders_no_images",
        &["has no labels", "one sub-folder of images per class"],
    ),
    ("npz/empty.npz", &["not a readable .npz"]),
    ("npz/not_a_zip.npz", &["not a readable .npz"]),
    ("npz/truncated.npz", &["not a readable .npz"]),
    ("npz/label_count_mismatch.npz", &["4 labels for 5 images"]),
    ("npz/missing_labels.npz", &["has no test_labels.npy"]),
    ("npz/npy_declares_huge_shape.npz", &["data bytes"]),
    ("npz/npy_bad_magic.npz", &["bad magic"]),
    ("npz/npy_float_images.npz", &["expected uint8"]),
    ("npz/negative_label.npz", &["label -3"]),
    ("npz/member_larger_than_declared.npz", &["test_images.npy"]),
];

/// Every file of the corpus is in a table above (a new file without an expectation fails).
#[test]
fn every_corpus_file_has_an_expectation() {
    let listed: Vec<&str> = [IMAGES, CHECKPOINTS, CONFIGS, DATASETS]
        .iter()
        .flat_map(|t| t.iter().map(|(p, _)| *p))
        .collect();
    let mut unlisted = Vec::new();
    let mut stack = vec![corpus()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(corpus())
                .unwrap()
                .to_string_lossy()
                .to_string();
            if rel.starts_with("datasets/class_folders_bad_image/")
                || rel.starts_with("datasets/split_folders_truncated_jpeg/")
            {
                continue;
            }
            if !listed
                .iter()
                .any(|l| rel == *l || rel.starts_with(&format!("{l}/")))
            {
                unlisted.push(rel);
            }
        }
    }
    assert!(unlisted.is_empty(), "no expectation for {unlisted:?}");
}

fn check(rel: &str, want: &[&str], what: &str, outcome: (Option<String>, usize)) {
    let (err, largest) = outcome;
    let msg = err.unwrap_or_else(|| panic!("{what} accepted {rel}"));
    let name = Path::new(rel).file_name().unwrap().to_string_lossy();
    assert!(
        msg.contains(name.as_ref()),
        "{what} on {rel}: the error does not name the file: {msg}"
    );
    for w in want {
        assert!(msg.contains(w), "{what} on {rel}: expected '{w}' in: {msg}");
    }
    assert!(
        largest <= ALLOCATION_CAP,
        "{what} on {rel}: allocated {} MiB at once",
        largest >> 20
    );
}

#[test]
fn images_fail_clearly_through_the_image_loader() {
    for (rel, want) in IMAGES {
        let p = corpus().join(rel);
        for (channels, res) in [(3, 64), (1, 224)] {
            let outcome = measured(|| {
                load_image(&p, channels, res, ResizeMode::ShorterSideCrop)
                    .map_err(|e| e.to_string())
            });
            check(rel, want, "load_image", outcome);
        }
    }
}

#[test]
fn images_are_refused_as_datasets_and_checkpoints() {
    // An image given where a checkpoint or a dataset belongs.
    for (rel, _) in IMAGES.iter().take(6) {
        let p = corpus().join(rel);
        let (err, _) = measured(|| read_header(&p).map_err(|e| e.to_string()));
        let msg = err.unwrap_or_else(|| panic!("read_header accepted {rel}"));
        assert!(
            msg.contains(&*p.file_name().unwrap().to_string_lossy()),
            "{msg}"
        );
        let (err, _) = measured(|| Dataset::open(&p, Some("test")).map_err(|e| e.to_string()));
        assert!(err.is_some(), "Dataset::open accepted {rel}");
    }
}

#[test]
fn checkpoints_fail_clearly_through_both_loaders() {
    let device = Device::flex();
    for (rel, want) in CHECKPOINTS {
        let p = corpus().join(rel);
        let outcome = measured(|| load_checkpoint(&p, &device).map_err(|e| e.to_string()));
        check(rel, want, "load_checkpoint", outcome);
        // The header alone: the same file errors, or (wrong shapes, absurd config) reads
        // with a config that the model loader above refused.
        let (err, largest) = measured(|| read_header(&p).map_err(|e| e.to_string()));
        assert!(largest <= ALLOCATION_CAP, "read_header on {rel}");
        if let Some(e) = err {
            assert!(
                e.contains(&*p.file_name().unwrap().to_string_lossy()),
                "{e}"
            );
        }
    }
}

#[test]
fn configs_fail_clearly() {
    for (rel, want) in CONFIGS {
        let p = corpus().join(rel);
        let outcome = measured(|| TrainConfig::load(&p, &[]).map_err(|e| e.to_string()));
        check(rel, want, "TrainConfig::load", outcome);
    }
}

#[test]
fn datasets_fail_clearly() {
    for (rel, want) in DATASETS {
        let p = corpus().join(rel);
        // Class folders are opened whole (they have no split sub-folders here).
        let split = (!rel.contains("class_folders")).then_some("test");
        let outcome = measured(|| Dataset::open(&p, split).map_err(|e| e.to_string()));
        check(rel, want, "Dataset::open", outcome);
    }
    // A class folder holding one broken image opens (files are checked when read) and the
    // broken image fails by name when its pixels are loaded.
    let p = corpus().join("datasets/class_folders_bad_image");
    let ds = Dataset::open(&p, None).expect("class folders open");
    let broken = (0..ds.len())
        .map(|i| ds.load(i, 3, 32, ResizeMode::Stretch))
        .find_map(|r| r.err())
        .expect("the broken image fails");
    assert!(broken.to_string().contains("broken.png"), "{broken}");
}

/// A truncated JPEG among the training images: the dataset opens (files are listed, not
/// decoded), `check_images` names it, and `triscope train` stops before its first step.
#[test]
fn training_names_a_truncated_image_before_any_step() {
    let root = corpus().join("datasets/split_folders_truncated_jpeg");
    let train = Dataset::open(&root, Some("train")).expect("the split opens");
    let err = train
        .check_images()
        .expect_err("the cut JPEG is found")
        .to_string();
    assert!(
        err.contains("cut.jpg") && err.contains("truncated"),
        "{err}"
    );
    Dataset::open(&root, Some("val"))
        .expect("val opens")
        .check_images()
        .expect("val is whole");

    let dir = TempDir::new("bad-train");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "architecture: {{name: resnet50, base_width: 8, pretrained: false, weights: null}}\n\
             input: {{channels: 3, resolution: 32}}\n\
             classifier: {{num_classes: 2}}\n\
             training: {{epochs: 1, batch_size: 2, workers: 1}}\n\
             data: {{dataset: folders, root: {}, train_split: train, val_split: val}}\n",
            root.display()
        ),
    )
    .unwrap();
    let run = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(["train", "--device", "cpu", "--quiet", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cut.jpg") && stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(
        !run.join("last.safetensors").exists(),
        "a checkpoint was written"
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_are_named_in_errors() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("non-utf8");
    let name = OsStr::from_bytes(b"bad-\xff\xfe-name.png");
    let p = dir.path().join(name);
    std::fs::write(&p, b"not an image at all").unwrap();
    let lossy = "bad-\u{fffd}\u{fffd}-name.png";
    let err = load_image(&p, 3, 64, ResizeMode::Stretch)
        .unwrap_err()
        .to_string();
    assert!(err.contains(lossy), "{err}");
    let ck = dir.path().join(OsStr::from_bytes(b"w-\xff.safetensors"));
    std::fs::write(&ck, b"xx").unwrap();
    let err = read_header(&ck).unwrap_err().to_string();
    assert!(err.contains("w-\u{fffd}.safetensors"), "{err}");
    // A folder with a non-UTF-8 image name: the dataset lists it and names it when it fails.
    let classes = dir.path().join("classes").join("a");
    std::fs::create_dir_all(&classes).unwrap();
    std::fs::write(classes.join(OsStr::from_bytes(b"x\xff.png")), b"nope").unwrap();
    let ds = Dataset::open(&dir.path().join("classes"), None).expect("opens");
    let e = ds
        .load(0, 3, 32, ResizeMode::Stretch)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x\u{fffd}.png"), "{e}");
    // The CLI too: exit code 1, the lossy name on stderr.
    let o = Command::new(env!("CARGO_BIN_EXE_triscope"))
        .arg("predict")
        .arg(&p)
        .args(["--device", "cpu"])
        .env("TRISCOPE_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(lossy));
}

/// The CLI command that reads each kind of file: exit code 1 or 2 (never a panic's 101), the
/// file named on stderr.
#[test]
fn cli_commands_fail_clearly_on_every_corpus_file() {
    let sample = sample("ham10000/ISIC_0024410.jpg").display().to_string();
    let out = TempDir::new("bad-cli");
    let run = |args: &[String], rel: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_triscope"))
            .args(args)
            .env("TRISCOPE_LOG", "error")
            .current_dir(out.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        let code = o.status.code();
        assert!(
            matches!(code, Some(1) | Some(2)),
            "{args:?}: exit code {code:?}: {stderr}"
        );
        let name = Path::new(rel).file_name().unwrap().to_string_lossy();
        assert!(stderr.contains(name.as_ref()), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    };
    let cpu = ["--device".to_string(), "cpu".to_string()];
    for (rel, _) in IMAGES {
        let p = corpus().join(rel).display().to_string();
        run(
            &[vec!["predict".into(), p.clone()], cpu.to_vec()].concat(),
            rel,
        );
        let dir = out.path().join("explain").display().to_string();
        let explain = vec!["explain".into(), p, "--out".into(), dir];
        run(&[explain, cpu.to_vec()].concat(), rel);
    }
    for (rel, _) in CHECKPOINTS {
        let p = corpus().join(rel).display().to_string();
        let predict = vec![
            "predict".into(),
            sample.clone(),
            "--model".into(),
            p.clone(),
        ];
        run(&[predict, cpu.to_vec()].concat(), rel);
        if !rel.contains("wrong_shapes") && !rel.contains("absurd_classes") {
            run(&["info".into(), "--model".into(), p], rel);
        }
    }
    for (rel, _) in CONFIGS {
        let p = corpus().join(rel).display().to_string();
        let dir = out.path().join("run").display().to_string();
        let train = vec!["train".into(), "--config".into(), p, "--out".into(), dir];
        run(&[train, cpu.to_vec()].concat(), rel);
    }
    for (rel, _) in DATASETS {
        let p = corpus().join(rel).display().to_string();
        let eval = vec![
            "eval".into(),
            "--data".into(),
            p,
            "--split".into(),
            "test".into(),
            "--attacks".into(),
            "clean".into(),
            "--out".into(),
            out.path().join("eval").display().to_string(),
        ];
        run(&[eval, cpu.to_vec()].concat(), rel);
    }
}
