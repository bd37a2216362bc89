//! The `triscope` binary end to end, as a user runs it.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use std::process::{Command, Output};

use common::*;

fn triscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(args)
        .env("TRISCOPE_LOG", "error")
        .output()
        .expect("run triscope")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn no_subcommand_without_a_display_says_so_and_lists_the_cli() {
    // Without a subcommand the binary opens the app; with no display it must fail clearly.
    let o = Command::new(env!("CARGO_BIN_EXE_triscope"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run triscope");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("window could not open"), "{err}");
    assert!(err.contains("needs a display"), "{err}");
    assert!(err.contains("triscope predict"), "{err}");
}

#[test]
fn predict_json_on_samples() {
    let a = s(&sample("ham10000/ISIC_0024410.jpg"));
    let b = s(&sample("nih-cxr14/00000072_000.png"));
    let o = triscope(&["predict", &a, &b, "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON on stdout");
    let records = v.as_array().unwrap();
    assert_eq!(records.len(), 2);
    for r in records {
        let scores = r["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 7);
        let total: f64 = scores
            .iter()
            .map(|s| s["probability"].as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        let name = r["class_name"].as_str().unwrap();
        assert!(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"].contains(&name));
    }
}

#[test]
fn a_model_is_warned_about_images_of_another_modality() {
    // The embedded dermoscopy model on a chest X-ray, and the chest model on a skin photo:
    // a warning on stderr and in the JSON; none where the image fits.
    let skin = s(&sample("ham10000/ISIC_0024410.jpg"));
    let chest = s(&sample("nih-cxr14/00000072_000.png"));
    let chest_model = s(&root().join("models/kermany_cxr_default.safetensors"));
    let o = triscope(&["predict", &skin, &chest, "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v[0].get("warning").is_none(), "{v}");
    let w = v[1]["warning"].as_str().unwrap_or_default();
    assert!(w.contains("dermoscopy") && w.contains("greyscale"), "{v}");
    assert!(stderr(&o).contains("00000072_000.png: this model was trained on colour dermoscopy"));

    let o = triscope(&[
        "predict",
        &skin,
        &chest,
        "--model",
        &chest_model,
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ISIC_0024410.jpg: this model was trained on grey chest radiographs"),
        "{err}"
    );
    assert!(!err.contains("00000072_000.png"), "{err}");
}

#[test]
fn predict_scores_every_image_against_the_training_distribution() {
    // The embedded default carries its statistics (triscope ood): a lesion like HAM10000's
    // passes, a chest X-ray and every everyday photograph the project carries (a fundus photo
    // among them) are flagged. A model without them says so and gives null.
    let skin = s(&sample("ham10000/ISIC_0024410.jpg"));
    let chest = s(&sample("nih-cxr14/00000072_000.png"));
    let photos_dir = root().join("tests/fixtures/photos");
    let mut photos: Vec<String> = std::fs::read_dir(&photos_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .map(|p| s(&p))
        .collect();
    photos.sort();
    assert_eq!(photos.len(), 10, "{photos:?}");
    let mut args = vec!["predict", &skin, &chest];
    args.extend(photos.iter().map(String::as_str));
    args.extend(["--json", "--device", "cpu"]);
    let o = triscope(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ood = |i: usize| &v[i]["out_of_distribution"];
    assert_eq!(ood(0)["flag"], false, "{v}");
    assert_eq!(ood(1)["flag"], true, "{v}");
    for (i, photo) in photos.iter().enumerate() {
        assert_eq!(ood(2 + i)["flag"], true, "{photo} not flagged: {v}");
    }
    let (score, threshold) = (
        ood(1)["score"].as_f64().unwrap(),
        ood(1)["threshold"].as_f64().unwrap(),
    );
    assert!(score > threshold && threshold > 1.0, "{v}");
    assert!(
        stderr(&o).contains("00000072_000.png: unlike the model's training data"),
        "{}",
        stderr(&o)
    );

    // Every bundled model carries its own: the pediatric chest model flags a skin lesion.
    let chest_model = root().join("models/kermany_cxr_default.safetensors");
    let o = triscope(&[
        "predict",
        &chest,
        &skin,
        "--model",
        &s(&chest_model),
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[1]["out_of_distribution"]["flag"], true, "{v}");

    // A weights file written before the statistics existed (the same model saved without its
    // extras) still loads: null, and a note says so.
    let tmp = TempDir::new("ood-older");
    let older = tmp.path().join("older.safetensors");
    let loaded =
        triscope::io::weights::load_checkpoint(&chest_model, &burn::tensor::Device::flex())
            .expect("the bundled chest model");
    triscope::io::weights::save_checkpoint(&loaded.model, &loaded.metadata, &older)
        .expect("saved without extras");
    let o = triscope(&[
        "predict",
        &chest,
        "--model",
        &s(&older),
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v[0]["out_of_distribution"].is_null(), "{v}");
    assert!(
        stderr(&o).contains("carries no out-of-distribution statistics"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn predict_continues_past_a_bad_file_and_fails_at_the_end() {
    let dir = TempDir::new("cli-bad");
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n broken").unwrap();
    let good = s(&sample("ham10000/ISIC_0024317.jpg"));
    let o = triscope(&["predict", &s(&bad), &good, "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("broken.png"), "{}", stderr(&o));
    assert!(stdout(&o).contains("ISIC_0024317.jpg"), "{}", stdout(&o));
}

#[test]
fn explain_writes_heatmap_overlay_npy_and_json() {
    let dir = TempDir::new("cli-explain");
    let out = dir.path().join("explain");
    let img = s(&sample("ham10000/ISIC_0024410.jpg"));
    let o = triscope(&[
        "explain",
        &img,
        "--layer",
        "layer3",
        "--class",
        "mel",
        "--out",
        &s(&out),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("prediction.json")).unwrap()).unwrap();
    assert_eq!(json["layer"], "layer3");
    assert_eq!(json["explained_class_name"], "mel");
    let res = json["heatmap_size"][0].as_u64().unwrap() as u32;
    for name in ["heatmap.png", "overlay.png", "input.png"] {
        let png = image::open(out.join(name)).unwrap();
        assert_eq!((png.width(), png.height()), (res, res), "{name}");
    }
    let (shape, values) =
        triscope::io::npy::decode_f32(&std::fs::read(out.join("heatmap.npy")).unwrap()).unwrap();
    assert_eq!(shape, vec![res as usize, res as usize]);
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    let max = values.iter().copied().fold(0.0f32, f32::max);
    assert!(
        max > 0.99,
        "a Grad-CAM map is min-max normalised (max {max})"
    );
}

#[test]
fn explain_rejects_bad_arguments_clearly() {
    let dir = TempDir::new("cli-args");
    let img = s(&sample("ham10000/ISIC_0024410.jpg"));
    let out = s(&dir.path().join("o"));
    let o = triscope(&[
        "explain", &img, "--class", "99", "--out", &out, "--device", "cpu",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("class 99 does not exist: the model has 7 classes"),
        "{}",
        stderr(&o)
    );
    let o = triscope(&[
        "explain",
        &img,
        "--class",
        "melanomaX",
        "--out",
        &out,
        "--device",
        "cpu",
    ]);
    assert!(
        stderr(&o).contains("unknown class 'melanomaX'"),
        "{}",
        stderr(&o)
    );
    let o = triscope(&[
        "explain", &img, "--layer", "layer5", "--out", &out, "--device", "cpu",
    ]);
    assert!(
        stderr(&o).contains("unknown layer 'layer5'"),
        "{}",
        stderr(&o)
    );
    let o = triscope(&[
        "predict",
        &img,
        "--model",
        &s(&dir.path().join("absent.safetensors")),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("absent.safetensors"), "{}", stderr(&o));
}

#[test]
fn import_gray_model_then_explain_a_chest_xray() {
    let dir = TempDir::new("cli-gray");
    let model = dir.path().join("gray.safetensors");
    let o = triscope(&[
        "import",
        &s(&fixture("resnet50_w8_c7.safetensors")),
        "--num-classes",
        "7",
        "--in-channels",
        "1",
        "--base-width",
        "8",
        "--resolution",
        "128",
        "--out",
        &s(&model),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let xray = s(&sample("nih-cxr14/00000193_019.png"));
    let out = dir.path().join("cam");
    let o = triscope(&[
        "explain",
        &xray,
        "--model",
        &s(&model),
        "--out",
        &s(&out),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("UNTRAINED")
            || stderr(&o).contains("untrained")
            || stderr(&o).is_empty()
            || !stderr(&o).contains("error")
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["heatmap_size"][0], 128);
    assert!(out.join("overlay.png").exists());

    // A 14-finding multi-label model at 512 pixels: sigmoid per finding.
    let big = dir.path().join("cxr14.safetensors");
    let o = triscope(&[
        "init",
        "--num-classes",
        "14",
        "--in-channels",
        "1",
        "--base-width",
        "4",
        "--resolution",
        "512",
        "--out",
        &s(&big),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = triscope(&[
        "predict",
        &xray,
        "--model",
        &s(&big),
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("UNTRAINED"),
        "untrained models are flagged: {}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["multi_label"], true);
    let total: f64 = v[0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["probability"].as_f64().unwrap())
        .sum();
    assert!(total > 0.0 && total < 14.0);
}

#[test]
fn export_import_info_round_trip() {
    let dir = TempDir::new("cli-export");
    let exported = dir.path().join("tv.safetensors");
    let o = triscope(&[
        "export",
        "--model",
        &s(&root().join("models/ham10000_default.safetensors")),
        "--out",
        &s(&exported),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = triscope(&["info", "--json"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let v: serde_json::Value = serde_json::from_str(&stdout(&info)).unwrap();
    assert_eq!(v["out_of_distribution"]["train_images"], 7015, "{v}");
    let cfg = &v["config"];
    let reimported = dir.path().join("back.safetensors");
    let o = triscope(&[
        "import",
        &s(&exported),
        "--num-classes",
        &cfg["num_classes"].to_string(),
        "--base-width",
        &cfg["base_width"].to_string(),
        "--resolution",
        &cfg["resolution"].to_string(),
        "--out",
        &s(&reimported),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Same predictions from the embedded model and its export-import copy.
    let img = s(&sample("ham10000/ISIC_0024403.jpg"));
    let a = triscope(&["predict", &img, "--json", "--device", "cpu"]);
    let b = triscope(&[
        "predict",
        &img,
        "--json",
        "--device",
        "cpu",
        "--model",
        &s(&reimported),
    ]);
    let pa: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let pb: serde_json::Value = serde_json::from_str(&stdout(&b)).unwrap();
    assert_eq!(pa[0]["scores"], pb[0]["scores"]);
    // Importing with the wrong class count fails naming both numbers.
    let o = triscope(&[
        "import",
        &s(&exported),
        "--num-classes",
        "14",
        "--base-width",
        &cfg["base_width"].to_string(),
        "--out",
        &s(&dir.path().join("x.safetensors")),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the checkpoint has 7 classes, the model 14"),
        "{}",
        stderr(&o)
    );
}

/// `export` without `--model` writes the embedded default, as the other commands read it
/// (issue #16): torchvision's keys and dtypes, the same tensors as exporting the shipped file
/// by name.
#[test]
fn export_without_model_writes_the_embedded_default() {
    let dir = TempDir::new("cli-export-default");
    let implicit = dir.path().join("default_tv.safetensors");
    let o = triscope(&["export", "--out", &s(&implicit)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("embedded default"), "{}", stdout(&o));
    let named = dir.path().join("named_tv.safetensors");
    let o = triscope(&[
        "export",
        "--model",
        &s(&root().join("models/ham10000_default.safetensors")),
        "--out",
        &s(&named),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let implicit_bytes = std::fs::read(&implicit).expect("the export exists");
    let named_bytes = std::fs::read(&named).unwrap();
    let a = safetensors::SafeTensors::deserialize(&implicit_bytes).expect("valid safetensors");
    let b = safetensors::SafeTensors::deserialize(&named_bytes).unwrap();
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("torchvision_resnet50_keys.json")).unwrap())
            .unwrap();
    let reference = reference["keys"].as_array().unwrap();
    assert_eq!(a.len(), reference.len(), "key count");
    for entry in reference {
        let key = entry[0].as_str().unwrap();
        let view = a
            .tensor(key)
            .unwrap_or_else(|_| panic!("export lacks {key}"));
        let want = if entry[2] == "int64" { "I64" } else { "F32" };
        assert_eq!(format!("{:?}", view.dtype()), want, "{key}");
        let other = b.tensor(key).unwrap();
        assert_eq!(view.shape(), other.shape(), "{key}");
        assert!(
            view.data() == other.data(),
            "{key} differs from the named export"
        );
    }
    assert_eq!(a.tensor("fc.bias").unwrap().shape(), [7]);
}

#[test]
fn demo_explains_every_bundled_sample() {
    let dir = TempDir::new("cli-demo");
    let out = dir.path().join("demo");
    let o = triscope(&["demo", "--out", &s(&out), "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for id in [
        "ISIC_0024470",
        "ISIC_0024403",
        "ISIC_0024324",
        "ISIC_0024330",
        "ISIC_0024410",
        "ISIC_0024317",
        "ISIC_0024370",
    ] {
        assert!(text.contains(id), "{id} missing from:\n{text}");
        assert!(out.join(id).join("overlay.png").exists(), "{id} overlay");
    }
}

#[test]
fn explain_with_other_methods_writes_the_same_files() {
    let dir = TempDir::new("cli-methods");
    let img = s(&sample("ham10000/ISIC_0024410.jpg"));
    let cases: [(&str, &[&str], &str, usize); 4] = [
        ("gradcam++", &["--layer", "layer3"], "layer3", 2),
        ("ig", &["--ig-steps", "4"], "input", 3),
        (
            "smoothgrad",
            &["--smoothgrad-samples", "2", "--smoothgrad-sigma", "0.1"],
            "input",
            3,
        ),
        (
            "occlusion",
            &["--occlusion-window", "64", "--occlusion-stride", "64"],
            "input",
            3,
        ),
    ];
    for (method, extra, layer, raw_dims) in cases {
        let out = dir.path().join(method.replace('+', "p"));
        let out_s = s(&out);
        let mut args = vec![
            "explain", &img, "--method", method, "--out", &out_s, "--device", "cpu",
        ];
        args.extend_from_slice(extra);
        let o = triscope(&args);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("prediction.json")).unwrap()).unwrap();
        assert_eq!(json["method"], method);
        assert_eq!(json["layer"], layer);
        for name in ["heatmap.png", "overlay.png", "input.png"] {
            assert!(out.join(name).is_file(), "{method}: {name}");
        }
        let (shape, values) =
            triscope::io::npy::decode_f32(&std::fs::read(out.join("heatmap.npy")).unwrap())
                .unwrap();
        assert_eq!(shape.len(), 2);
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "{method}");
        let (raw_shape, _) =
            triscope::io::npy::decode_f32(&std::fs::read(out.join("attribution.npy")).unwrap())
                .unwrap();
        assert_eq!(raw_shape.len(), raw_dims, "{method}");
        assert!(stdout(&o).contains(&json["method_label"].as_str().unwrap().to_string()));
    }
    let o = triscope(&[
        "explain",
        &img,
        "--method",
        "lime",
        "--out",
        &s(dir.path()),
        "--device",
        "cpu",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown attribution method 'lime'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn explain_a_folder_writes_overlays_and_a_csv() {
    let dir = TempDir::new("cli-batch");
    let out = dir.path().join("batch");
    let samples = root().join("assets").join("samples");
    let o = triscope(&[
        "explain",
        &s(&samples),
        "--method",
        "layercam",
        "--out",
        &s(&out),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(
        &header[..4],
        ["image", "status", "predicted_index", "predicted_class"]
    );
    assert!(header.contains(&"p_mel"), "{}", lines[0]);
    // 7 skin images and 3 chest X-rays; the markdown and CSV files are skipped.
    assert_eq!(lines.len(), 11, "{csv}");
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        assert_eq!(cells[1], "ok", "{line}");
        assert_eq!(cells[7], "layercam");
        let p: f64 = header
            .iter()
            .zip(&cells)
            .filter(|(h, _)| h.starts_with("p_"))
            .map(|(_, c)| c.parse::<f64>().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-3, "{line}");
    }
    assert!(csv.contains("ham10000/ISIC_0024410.jpg"), "{csv}");
    // The dermoscopy model warns on the chest X-rays, and only on them.
    let warning = header.iter().position(|h| *h == "warning").unwrap();
    let region = header.iter().position(|h| *h == "region").unwrap();
    let inside = header.iter().position(|h| *h == "energy_inside").unwrap();
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        let chest = cells[0].contains("nih-cxr14");
        assert_eq!(cells[warning].contains("greyscale"), chest, "{line}");
        // The skin samples have their lesion masks beside them; the X-rays have none.
        if chest {
            assert_eq!((cells[region], cells[inside]), ("", ""), "{line}");
        } else {
            assert_eq!(cells[region], "lesion", "{line}");
            let e: f64 = cells[inside].parse().unwrap();
            assert!((0.0..=1.0).contains(&e), "{line}");
        }
    }
    for rel in [
        "ham10000/ISIC_0024410_heatmap.png",
        "ham10000/ISIC_0024410_overlay.png",
        "nih-cxr14/00000072_000_overlay.png",
    ] {
        let png = image::open(out.join(rel)).unwrap();
        assert_eq!(png.width(), png.height(), "{rel}");
    }
    assert!(
        stdout(&o).contains("10 of 10 images explained with LayerCAM"),
        "{}",
        stdout(&o)
    );

    // A broken file is a CSV row with its error; the others are still explained; exit code 1.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::write(mixed.join("broken.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    std::fs::copy(sample("ham10000/ISIC_0024317.jpg"), mixed.join("good.jpg")).unwrap();
    let mixed_out = dir.path().join("mixed_out");
    let o = triscope(&[
        "explain",
        &s(&mixed),
        "--method",
        "saliency",
        "--out",
        &s(&mixed_out),
        "--device",
        "cpu",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("broken.png"), "{}", stderr(&o));
    let csv = std::fs::read_to_string(mixed_out.join("predictions.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("broken.png,error: "), "{csv}");
    assert!(rows[1].starts_with("good.jpg,ok,"), "{csv}");
    assert!(mixed_out.join("good_overlay.png").is_file());

    // An empty folder is an error, not an empty CSV.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = triscope(&["explain", &s(&empty), "--out", &s(&out), "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("holds no images"), "{}", stderr(&o));
}

/// `triscope info` shows a bundled model's card (how it was trained, its scores, the commands
/// that measure them), and every card's full-test-split line quotes the `triscope eval` report
/// beside it: a card cannot drift from what was measured.
#[test]
fn bundled_model_cards_show_in_info_and_quote_their_eval_reports() {
    let info = triscope(&["info"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let text = stdout(&info);
    assert!(text.contains("balanced accuracy"), "{text}");
    assert!(text.contains("triscope eval --data"), "{text}");

    let models = root().join("models");
    let mut checked = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let report = models.join(format!("{stem}.report"));
        let card = std::fs::read_to_string(report.join("card.txt"))
            .unwrap_or_else(|e| panic!("{stem} has no card: {e}"));
        let o = triscope(&["info", "--model", &s(&path)]);
        assert!(
            stdout(&o).contains(card.trim_end()),
            "{stem}: info shows its card"
        );
        // Every bundled model carries the description of its training data (triscope ood).
        assert!(
            stdout(&o).contains("unlike:      fitted on "),
            "{stem}: no out-of-distribution statistics"
        );

        // "Test split, all N images: accuracy A, balanced accuracy B." (a multi-label model:
        // "mean AUROC A").
        let line = card
            .lines()
            .find(|l| l.starts_with("Test split, all "))
            .unwrap_or_else(|| panic!("{stem}: no full-test-split line"));
        let numbers: Vec<f64> = line
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|t| t.trim_end_matches('.').parse().ok())
            .collect();
        let eval: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(report.join("eval_test_full.json")).unwrap(),
        )
        .unwrap();
        let clean = &eval["results"][0];
        assert_eq!(clean["attack"], "clean");
        let measured = if eval["multi_label"].as_bool().unwrap() {
            assert!(line.contains("mean AUROC"), "{stem}: {line:?}");
            vec![
                eval["n"].as_f64().unwrap(),
                clean["multi_label"]["mean_auroc"].as_f64().unwrap(),
            ]
        } else {
            assert!(line.contains("balanced accuracy"), "{stem}: {line:?}");
            let m = &clean["metrics"];
            vec![
                eval["n"].as_f64().unwrap(),
                m["accuracy"].as_f64().unwrap(),
                m["balanced_accuracy"].as_f64().unwrap(),
            ]
        };
        assert!(numbers.len() >= measured.len(), "{stem}: {line:?}");
        for (quoted, measured) in numbers.iter().zip(measured) {
            assert!(
                (quoted - measured).abs() <= 5e-4,
                "{stem}: the card says {line:?}, eval_test_full.json {measured}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "{checked} bundled models");
}

/// `attack --sweep`: the default list and a list with one denominator write the CSV, the JSON
/// and the figure; ε = 0 is the clean prediction with no drift; every budget's image stays in
/// its ball; bad lists are refused by value.
#[test]
fn attack_sweep_writes_a_row_per_eps_starting_at_the_clean_prediction() {
    let dir = TempDir::new("sweep");
    let image = s(&sample("ham10000/ISIC_0024410.jpg"));
    let o = triscope(&["predict", &image, "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clean: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let clean = &clean[0];

    let out = dir.path().join("default");
    let o = triscope(&[
        "attack",
        &image,
        "--sweep",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--out",
        &s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("8/255"), "{}", stdout(&o));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let eps: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(eps, ["0", "0.5", "1", "2", "4", "8"], "{csv}");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let first = &rows[0];
    assert_eq!(
        first[col("predicted_class")],
        clean["class_name"].as_str().unwrap()
    );
    let p0: f64 = first[col("predicted_probability")].parse().unwrap();
    assert!(
        (p0 - clean["confidence"].as_f64().unwrap()).abs() < 1e-4,
        "{p0}"
    );
    assert_eq!(first[col("drift")].parse::<f64>().unwrap(), 0.0);
    assert_eq!(first[col("fooled")], "false");
    for r in &rows[1..] {
        let (e, linf): (f64, f64) = (
            r[0].parse().unwrap(),
            r[col("linf_norm_x255")].parse().unwrap(),
        );
        assert!(linf > 0.0 && linf <= e + 1e-3, "eps {e}: L-inf {linf}/255");
    }
    let png = image::open(out.join("sweep.png")).unwrap();
    assert!(
        png.width() >= 900 && png.height() > 420,
        "{}x{}",
        png.width(),
        png.height()
    );

    let out = dir.path().join("list");
    let o = triscope(&[
        "attack",
        &image,
        "--sweep",
        "0,1,2,4/255",
        "--method",
        "fgsm",
        "--json",
        "--device",
        "cpu",
        "--out",
        &s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let points = v["points"].as_array().unwrap();
    let eps: Vec<f64> = points
        .iter()
        .map(|p| p["eps_linf_x255"].as_f64().unwrap())
        .collect();
    assert_eq!(eps.len(), 4);
    for (e, want) in eps.iter().zip([0.0, 1.0, 2.0, 4.0]) {
        assert!((e - want).abs() < 1e-4, "{eps:?}");
    }
    assert_eq!(points[0]["cam"]["ssim"].as_f64().unwrap(), 1.0);
    assert_eq!(v["true_class"], clean["class_name"]);
    for f in ["sweep.csv", "sweep.json", "sweep.png"] {
        assert!(out.join(f).exists(), "{f}");
    }

    for (list, says) in [
        ("0,-1/255", "must be in [0, 1]"),
        ("0,2,4", "end the list with /255"),
        ("0,1,x/255", "not a number"),
        ("1;2/255", "not a number"),
    ] {
        let o = triscope(&["attack", &image, "--sweep", list, "--out", &s(&out)]);
        assert!(!o.status.success(), "{list}");
        assert!(stderr(&o).contains(says), "{list}: {}", stderr(&o));
    }
}
