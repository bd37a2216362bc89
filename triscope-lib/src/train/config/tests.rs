//! The config reader and its checks.

use super::*;

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn parse(text: &str, overrides: &[&str]) -> Result<TrainConfig> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let text = format!("data: {{root: {}}}\n{text}", here().display());
    TrainConfig::from_yaml(&text, Path::new("test.yaml"), &o)
}

#[test]
fn seed_shape_parses() {
    let yaml = r#"
architecture: {name: resnet50, pretrained: false, weights: null, base_width: 16}
input: {channels: 3, resolution: 224, normalization: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
classifier: {num_classes: 7, dropout: 0.0, global_pool: avg}
training: {optimizer: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: true, scheduler: cosine, warmup_epochs: 5, eta_min: 1e-5, epochs: 100, batch_size: 64, seed: 42, class_weights: inverse_frequency}
robustness: {loss_type: trades, beta: 6.0, attack: {type: pgd, epsilon: 0.031, steps: 10, step_size: 0.008}}
"#;
    let c = TrainConfig::from_yaml(
        &format!("{yaml}data: {{dataset: x, root: {}}}", here().display()),
        Path::new("seed.yaml"),
        &[],
    )
    .unwrap();
    assert_eq!(c.architecture.base_width, 16);
    assert_eq!(c.robustness.loss_type, LossType::Trades);
    assert_eq!(c.training.weight_decay, 1e-4);
    assert_eq!(c.robustness.attack.steps, 10);
    // The seed's `epsilon` / `step_size` are read as `eps_linf` / `alpha`, which are written.
    assert_eq!(c.robustness.attack.eps_linf, 0.031);
    assert_eq!(c.robustness.attack.alpha, 0.008);
    let written = c.to_yaml().unwrap();
    assert!(
        written.contains("eps_linf: 0.031") && !written.contains("epsilon"),
        "{written}"
    );
    // Round trip through YAML.
    let again =
        TrainConfig::from_yaml(&c.to_yaml().unwrap(), Path::new("again.yaml"), &[]).unwrap();
    assert_eq!(again, c);
}

#[test]
fn augmentation_ranges_parse_and_are_checked() {
    let c = parse(
        "training: {augmentation: {vflip: false, hflip: false, rotation_deg: 7}}",
        &["training.augmentation.crop_scale=[0.85, 1.0]"],
    )
    .unwrap();
    let a = &c.training.augmentation;
    assert!(!a.vflip && !a.hflip && a.rotation_deg == 7.0);
    assert_eq!(a.crop_scale, [0.85, 1.0]);
    assert_eq!(a.hue, AugmentationSection::default().hue);
    for (bad, words) in [
        ("{crop_scale: [0.9, 0.5]}", "crop_scale"),
        ("{crop_scale: [0.0, 1.0]}", "crop_scale"),
        ("{rotation_deg: 400}", "rotation_deg"),
        ("{brightness: 1.5}", "brightness"),
        ("{hue: .nan}", "finite"),
    ] {
        let e = parse(&format!("training: {{augmentation: {bad}}}"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("training.augmentation") && e.contains(words),
            "{bad}: {e}"
        );
    }
}

#[test]
fn everything_has_a_default() {
    let c = parse("", &[]).unwrap();
    assert_eq!(c.training.epochs, 100);
    assert_eq!(c.input.resolution, 224);
}

#[test]
fn unknown_keys_are_named() {
    let e = parse("training: {lr: 0.1, learning_rate: 3}", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("learning_rate") && e.contains("test.yaml"),
        "{e}"
    );
    let e = parse("bogus_section: 1", &[]).unwrap_err().to_string();
    assert!(e.contains("bogus_section"), "{e}");
    let e = parse("", &["training.epochz=3"]).unwrap_err().to_string();
    assert!(e.contains("epochz"), "{e}");
}

#[test]
fn wrong_types_and_values() {
    let e = parse("training: {epochs: many}", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("epochs") || e.contains("invalid type"), "{e}");
    let e = parse("training: {lr: 0}", &[]).unwrap_err().to_string();
    assert!(e.contains("training.lr"), "{e}");
    let e = parse("training: {lr: -1}", &[]).unwrap_err().to_string();
    assert!(e.contains("training.lr"), "{e}");
    let e = parse("training: {epochs: 0}", &[]).unwrap_err().to_string();
    assert!(e.contains("training.epochs"), "{e}");
    for bad in ["1.0", "-0.1", ".nan"] {
        let e = parse(&format!("training: {{label_smoothing: {bad}}}"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("training.label_smoothing"), "{e}");
    }
    assert!(parse("training: {label_smoothing: 0.1}", &[]).is_ok());
    for bad in ["1.0", "-0.1", ".nan"] {
        let e = parse(&format!("training: {{ema_decay: {bad}}}"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("training.ema_decay"), "{e}");
    }
    assert!(parse("training: {ema_decay: 0.997}", &[]).is_ok());
    for (bad, needle) in [
        ("-0.5", "cutmix_alpha must be >= 0"),
        (".nan", "cutmix_alpha must be a finite number"),
        (".inf", "cutmix_alpha must be a finite number"),
    ] {
        let e = parse(
            &format!("training: {{augmentation: {{cutmix_alpha: {bad}}}}}"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("training.augmentation") && e.contains(needle),
            "{e}"
        );
    }
    for bad in ["1.5", "-0.1", ".nan"] {
        let e = parse(
            &format!("training: {{augmentation: {{background_swap: {bad}}}}}"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("background_swap"), "{e}");
    }
    let swap = "training: {augmentation: {background_swap: 0.5}}";
    assert!(parse(swap, &["robustness.loss_type=pgd_at"]).is_ok());
    let e = parse(swap, &["training.augment=false"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("training.augment"), "{e}");
    let mix = "training: {augmentation: {mixup_alpha: 0.2, cutmix_alpha: 1.0}}";
    assert!(parse(mix, &["robustness.loss_type=clean"]).is_ok());
    for (sets, needle) in [
        (&["robustness.loss_type=trades"][..], "clean training"),
        (&["robustness.loss_type=pgd_at"][..], "clean training"),
        (
            &["robustness.loss_type=clean", "training.augment=false"][..],
            "training.augment",
        ),
    ] {
        let e = parse(mix, sets).unwrap_err().to_string();
        assert!(e.contains(needle), "{sets:?}: {e}");
    }
    let cam = "training: {cam_mask_weight: 1.0}";
    let clean = "robustness.loss_type=clean";
    assert_eq!(
        parse(cam, &[clean]).unwrap().training.cam_mask_map,
        CamMap::Relu
    );
    assert_eq!(
        parse(cam, &[clean, "training.cam_mask_map=softplus"])
            .unwrap()
            .training
            .cam_mask_map,
        CamMap::Softplus
    );
    let e = parse(cam, &[clean, "training.cam_mask_map=sigmoid"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cam_mask_map") || e.contains("sigmoid"), "{e}");
    assert!(parse(cam, &["robustness.loss_type=pgd_at"]).is_ok());
    assert!(parse(cam, &["robustness.loss_type=clean"]).is_ok());
    for (sets, needle) in [
        (&["training.cam_mask_weight=-1"][..], "must be >= 0"),
        (&["training.cam_mask_weight=.nan"][..], "must be >= 0"),
        (&["robustness.loss_type=trades"][..], "for TRADES"),
        (
            &[
                "robustness.loss_type=clean",
                "training.augmentation.cutmix_alpha=1.0",
            ][..],
            "MixUp / CutMix",
        ),
        (
            &[
                "robustness.loss_type=pgd_at",
                "training.freeze_backbone=true",
            ][..],
            "frozen backbone",
        ),
    ] {
        let e = parse(cam, sets).unwrap_err().to_string();
        assert!(
            e.contains("training.cam_mask_weight") && e.contains(needle),
            "{sets:?}: {e}"
        );
    }
    let e = parse("robustness: {loss_type: fancy}", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("fancy"), "{e}");
    let e = parse("input: {channels: 2}", &[]).unwrap_err().to_string();
    assert!(e.contains("in_channels"), "{e}");
    let e = parse(
        "input: {channels: 3699316564, normalization: {mean: [0.485]}}",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("in_channels"), "{e}");
}

#[test]
fn missing_root_is_named() {
    let e = TrainConfig::from_yaml("data: {root: /no/such/dataset}", Path::new("c.yaml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/no/such/dataset") && e.contains("c.yaml"),
        "{e}"
    );
}

#[test]
fn paths_in_the_file_are_relative_to_it_and_overrides_to_the_working_directory() {
    let dir = std::env::temp_dir().join(format!("triscope-cfg-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data_here")).unwrap();
    std::fs::write(dir.join("w.safetensors"), b"x").unwrap();
    let file = dir.join("run.yaml");
    std::fs::write(
        &file,
        "architecture: {weights: w.safetensors}\ndata: {root: data_here}\n",
    )
    .unwrap();
    // The working directory (the package root) has no data_here: only the file's folder.
    let c = TrainConfig::load(&file, &[]).unwrap();
    assert_eq!(c.data.root, dir.join("data_here"));
    assert!(c.data.root.is_absolute());
    assert_eq!(c.architecture.weights, Some(dir.join("w.safetensors")));
    // An override is read from the working directory.
    let c = TrainConfig::load(&file, &["data.root=src".to_string()]).unwrap();
    assert_eq!(c.data.root, std::env::current_dir().unwrap().join("src"));
    // A name that would move the default run folder is refused, naming the file.
    for name in ["../../x", "/tmp/x", "a/b", ".."] {
        let o = format!("data.dataset={name}");
        let e = TrainConfig::load(&file, &[o]).unwrap_err().to_string();
        assert!(e.contains("data.dataset") && e.contains("run.yaml"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overrides_apply() {
    let c = parse(
        "training: {epochs: 9}",
        &[
            "training.epochs=3",
            "robustness.loss_type=pgd_at",
            "input.normalization.mean=[0.5]",
            "input.normalization.std=[0.25]",
            "input.channels=1",
        ],
    )
    .unwrap();
    assert_eq!(c.training.epochs, 3);
    assert_eq!(c.robustness.loss_type, LossType::PgdAt);
    let m = c.model_config(vec!["a".into(), "b".into()]).unwrap();
    assert_eq!(m.mean, vec![0.5]);
    assert_eq!(m.num_classes, 2);
    assert!(parse("", &["training.epochs"]).is_err());
    assert!(parse("", &["training.lr.x=1"]).is_err());
}
