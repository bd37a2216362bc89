//! Datasets, robust evaluation and the fooled-evaluation checks, both ways.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use common::*;
use triscope::attack::Classify;
use triscope::eval::{EvalAttack, EvalOptions, evaluate};
use triscope::inference::Classifier;
use triscope::io::data::{Dataset, DatasetKind, Label};
use triscope::io::imaging::ResizeMode;
use triscope::model::ResNet50;
use triscope::model::device::ComputeDevice;

/// A HAM10000-layout folder built from the bundled samples: 5 test images, 2 train.
fn ham_fixture(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("ham");
    common::ham_folder(&root, |i| if i < 5 { "test" } else { "train" }, false);
    root
}

fn npy_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    triscope::io::npy::encode("|u1", shape, data)
}

#[test]
fn datasets_open_with_their_labels() {
    let dir = TempDir::new("datasets");
    let ham = ham_fixture(dir.path());
    let test = Dataset::open(&ham, None).unwrap();
    assert_eq!(
        (test.kind, test.split.as_str(), test.len()),
        (DatasetKind::Ham10000, "test", 5)
    );
    assert_eq!(test.samples[4].label, Label::Class(4)); // mel
    let train = Dataset::open(&ham, Some("train")).unwrap();
    assert_eq!(train.len(), 2);
    let img = test.load(0, 3, 64, ResizeMode::ShorterSideCrop).unwrap();
    assert_eq!((img.channels, img.height), (3, 64));

    // NIH layout: multi-label findings.
    let nih = dir.path().join("nih");
    std::fs::create_dir_all(nih.join("images")).unwrap();
    let mut csv = String::from("Image Index,Finding Labels,Follow-up #\n");
    for (f, labels) in [
        ("00000032_037.png", "Cardiomegaly|Edema|Infiltration"),
        ("00000072_000.png", "No Finding"),
    ] {
        std::fs::copy(
            sample(&format!("nih-cxr14/{f}")),
            nih.join("images").join(f),
        )
        .unwrap();
        csv.push_str(&format!("{f},{labels},0\n"));
    }
    std::fs::write(nih.join("labels.csv"), csv).unwrap();
    let d = Dataset::open(&nih, None).unwrap();
    assert!(d.multi_label);
    let Label::Findings(f) = &d.samples[0].label else {
        panic!()
    };
    assert_eq!(f.iter().sum::<f32>(), 3.0);
    assert_eq!(f[1], 1.0); // Cardiomegaly
    assert!(
        Dataset::open(&nih, Some("test"))
            .unwrap_err()
            .to_string()
            .contains("--split all")
    );

    // MedMNIST .npz (PneumoniaMNIST layout).
    let npz = dir.path().join("pneumoniamnist.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&npz).unwrap());
    let opts =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let pixels: Vec<u8> = (0..3 * 28 * 28).map(|i| (i % 251) as u8).collect();
    zip.start_file("test_images.npy", opts).unwrap();
    zip.write_all(&npy_u8(&[3, 28, 28], &pixels)).unwrap();
    zip.start_file("test_labels.npy", opts).unwrap();
    zip.write_all(&npy_u8(&[3, 1], &[0, 1, 1])).unwrap();
    zip.finish().unwrap();
    let m = Dataset::open(&npz, None).unwrap();
    assert_eq!(m.class_names, vec!["normal", "pneumonia"]);
    assert_eq!(m.class_counts(), vec![1, 2]);
    let img = m.load(2, 1, 32, ResizeMode::Stretch).unwrap();
    assert_eq!((img.channels, img.height, img.width), (1, 32, 32));
    assert!(
        Dataset::open(&npz, Some("val"))
            .unwrap_err()
            .to_string()
            .contains("val_images.npy")
    );

    // Class-per-folder.
    let folder = dir.path().join("folder");
    for class in ["benign", "malignant"] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
            .save(folder.join(class).join("a.png"))
            .unwrap();
    }
    let f = Dataset::open(&folder, None).unwrap();
    assert_eq!(f.class_names, vec!["benign", "malignant"]);
    assert_eq!(f.len(), 2);
}

#[test]
fn bad_datasets_fail_before_compute() {
    let dir = TempDir::new("bad-datasets");
    let ham = ham_fixture(dir.path());
    std::fs::remove_file(ham.join("images/ISIC_0024410.jpg")).unwrap();
    let err = Dataset::open(&ham, None).unwrap_err().to_string();
    assert!(
        err.contains("missing image") && err.contains("ISIC_0024410.jpg"),
        "{err}"
    );
    let err = Dataset::open(&ham, Some("validation"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no split 'validation'"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = Dataset::open(&empty, None).unwrap_err().to_string();
    assert!(err.contains("has no labels"), "{err}");
    assert!(
        Dataset::open(&dir.path().join("absent"), None)
            .unwrap_err()
            .to_string()
            .contains("does not exist")
    );

    // A class the model does not have.
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("melanoma_x")).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(folder.join("melanoma_x/a.png"))
        .unwrap();
    let d = Dataset::open(&folder, None).unwrap();
    let names: Vec<String> = ["akiec", "mel"].iter().map(|s| s.to_string()).collect();
    let err = d.map_classes_to(&names).unwrap_err().to_string();
    assert!(
        err.contains("class 'melanoma_x'") && err.contains("akiec, mel"),
        "{err}"
    );
}

/// A model whose input goes through a non-differentiable 8-level quantisation: gradients
/// vanish, so gradient attacks stall. The checks must notice.
struct Quantized(ResNet50);

impl Classify for Quantized {
    fn logits(&self, pixels: Tensor<4>) -> Tensor<2> {
        // round() has a zero gradient: the attack sees nothing.
        self.0.forward((pixels * 7.0).round() / 7.0)
    }
    fn num_classes(&self) -> usize {
        self.0.config.num_classes
    }
}

fn samples_dataset() -> (
    Classifier,
    Vec<Label>,
    Vec<triscope::io::imaging::PixelImage>,
) {
    let classifier = Classifier::load(None, ComputeDevice::cpu()).unwrap();
    let images: Vec<_> = common::HAM_SAMPLES
        .iter()
        .map(|(id, _)| {
            classifier
                .load_image(&sample(&format!("ham10000/{id}.jpg")))
                .unwrap()
                .pixels
        })
        .collect();
    let labels = (0..7).map(Label::Class).collect();
    (classifier, labels, images)
}

/// `evaluate` on images in memory, on the CPU, without progress or cancellation.
fn evaluate_images(
    model: &dyn Classify,
    labels: &[Label],
    images: &[triscope::io::imaging::PixelImage],
    options: &EvalOptions,
) -> triscope::eval::EvalReport {
    let mut load = |i: usize| Ok(images[i].clone());
    evaluate(
        model,
        &Device::flex(),
        labels,
        &mut load,
        options,
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap()
}

#[test]
fn checks_pass_on_a_real_model_and_trip_on_a_masked_one() {
    let (classifier, labels, images) = samples_dataset();
    let options = EvalOptions {
        attacks: EvalAttack::parse_list("clean,fgsm,pgd10,pgd20,apgd-ce,apgd-t,fab-t,aa").unwrap(),
        apgd_iterations: 20,
        square_queries: 60,
        batch_size: 4,
        eps_sweep: vec![0.0, 2.0 / 255.0, 8.0 / 255.0],
        ..EvalOptions::default()
    };
    let report = evaluate_images(classifier.model(), &labels, &images, &options);
    let clean = report.result("clean").unwrap().score;
    for name in ["fgsm", "pgd10", "pgd20", "apgd-ce", "apgd-t", "fab-t", "aa"] {
        let r = report
            .result(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(
            r.score <= clean + 1e-9,
            "{name} {} > clean {clean}",
            r.score
        );
        let m = r.metrics.as_ref().unwrap();
        assert_eq!(m.n, 7);
        assert_eq!(m.confusion.iter().flatten().sum::<usize>(), 7);
    }
    // The cascade's stages only ever lose images: APGD pair, then FAB-T, then Square (aa).
    let aa = report.result("aa").unwrap().score;
    let after_fab = report.result("aa-fab-t").unwrap().score;
    assert!(aa <= after_fab + 1e-9);
    assert!(after_fab <= report.result("aa-apgd").unwrap().score + 1e-9);
    assert!(aa <= report.result("apgd-ce").unwrap().score + 1e-9);
    assert!(aa <= report.result("apgd-t").unwrap().score + 1e-9);
    assert_eq!(report.sweep.len(), 3);
    assert!(!report.checks.is_empty());
    for c in &report.checks {
        assert!(
            c.passed,
            "check failed on the real model: {} ({})",
            c.name, c.detail
        );
    }
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // The same model behind a gradient-masking quantisation.
    let masked = Quantized(classifier.model().clone().valid());
    let options = EvalOptions {
        attacks: EvalAttack::parse_list("clean,pgd10,pgd20").unwrap(),
        ..EvalOptions::default()
    };
    let report = evaluate_images(&masked, &labels, &images, &options);
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        failed.contains(&"the attack loss rises over the steps"),
        "{failed:?}"
    );
    assert!(!report.warnings.is_empty());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("gradient masking")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn square_in_aa_finds_what_apgd_cannot_see_behind_masked_gradients() {
    // Behind the quantisation the gradient is zero: APGD-CE and APGD-T move nothing, so
    // their worst case (`aa-apgd`) stays at clean accuracy. Square asks only for logits.
    let (classifier, labels, images) = samples_dataset();
    let masked = Quantized(classifier.model().clone().valid());
    let options = EvalOptions {
        attacks: EvalAttack::parse_list("clean,aa,square").unwrap(),
        eps_linf: 16.0 / 255.0,
        apgd_iterations: 10,
        square_queries: 200,
        batch_size: 7,
        checks: false,
        ..EvalOptions::default()
    };
    let report = evaluate_images(&masked, &labels, &images, &options);
    let score = |name: &str| report.result(name).unwrap().score;
    eprintln!(
        "masked model: clean {:.3}, aa-apgd {:.3}, aa {:.3}, square {:.3}",
        score("clean"),
        score("aa-apgd"),
        score("aa"),
        score("square")
    );
    assert!(score("clean") > 0.5, "clean {}", score("clean"));
    assert_eq!(score("aa-apgd"), score("clean"), "APGD saw a gradient");
    assert!(
        score("aa") < score("aa-apgd"),
        "square found nothing: aa {} aa-apgd {}",
        score("aa"),
        score("aa-apgd")
    );
    assert!(score("square") < score("clean"));
}

#[test]
fn a_clean_only_eval_runs_no_attack_and_says_the_checks_did_not_run() {
    let dir = TempDir::new("cli-eval-clean");
    let ham = ham_fixture(dir.path());
    let out = dir.path().join("eval");
    let o = Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(["eval", "--data"])
        .arg(&ham)
        .args(["--attacks", "clean", "--device", "cpu", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("fooled-evaluation checks: none ran (only clean accuracy was asked for"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
    // Only the clean column: no PGD-10 at 64/255, no noise baseline behind the user's back.
    let attacks: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["attack"].as_str().unwrap())
        .collect();
    assert_eq!(attacks, ["clean"]);
    assert_eq!(report["checks"].as_array().unwrap().len(), 0);
}

#[test]
fn eval_and_attack_commands_end_to_end() {
    let dir = TempDir::new("cli-eval");
    let ham = ham_fixture(dir.path());
    let out = dir.path().join("eval");
    let bin = env!("CARGO_BIN_EXE_triscope");
    let o = Command::new(bin)
        .args(["eval", "--data"])
        .arg(&ham)
        .args([
            "--attacks",
            "clean,fgsm,pgd10",
            "--eps",
            "4/255",
            "--eps-sweep",
            "0,2,4/255",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("pgd10") && stdout.contains("fooled-evaluation checks"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(report["n"], 5);
    assert_eq!(report["split"], "test");
    let csv = std::fs::read_to_string(out.join("eval.csv")).unwrap();
    assert!(csv.starts_with("attack,eps_linf,n,accuracy"), "{csv}");
    let png = image::open(out.join("accuracy_vs_eps.png")).unwrap();
    assert_eq!((png.width(), png.height()), (900, 520));

    // Bad arguments: clear errors before any compute.
    for (args, expect) in [
        (vec!["--eps=-1/255"], "[0, 1]"),
        (vec!["--eps", "2"], "[0, 1]"),
        (vec!["--attacks", "clean,bim"], "unknown attack 'bim'"),
        (vec!["--split", "nope"], "no split 'nope'"),
        (vec!["--batch-size", "0"], "batch-size"),
    ] {
        let o = Command::new(bin)
            .args(["eval", "--data"])
            .arg(&ham)
            .args(&args)
            .args(["--device", "cpu"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }

    // One image, PGD: files and JSON.
    let aout = dir.path().join("attack");
    let o = Command::new(bin)
        .arg("attack")
        .arg(sample("ham10000/ISIC_0024410.jpg"))
        .args([
            "--method", "pgd", "--eps", "8/255", "--steps", "5", "--device", "cpu", "--json",
            "--out",
        ])
        .arg(&aout)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["linf_norm"].as_f64().unwrap() <= 8.0 / 255.0 + 1e-6);
    assert_eq!(v["loss_per_step"].as_array().unwrap().len(), 5);
    let (shape, adv) =
        triscope::io::npy::decode_f32(&std::fs::read(aout.join("adversarial.npy")).unwrap())
            .unwrap();
    let res =
        triscope::inference::Classifier::load(None, triscope::model::device::ComputeDevice::cpu())
            .unwrap()
            .config()
            .resolution;
    assert_eq!(shape, vec![3, res, res], "the embedded model's input");
    assert!(adv.iter().all(|p| (0.0..=1.0).contains(p)));
    for f in [
        "adversarial.png",
        "perturbation.png",
        "clean.png",
        "attack.json",
    ] {
        assert!(aout.join(f).exists(), "{f}");
    }
    let o = Command::new(bin)
        .arg("attack")
        .arg(sample("ham10000/ISIC_0024410.jpg"))
        .args(["--steps", "0", "--device", "cpu", "--out"])
        .arg(&aout)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 1 step"));
}

/// The patient-level splits: an NIH table with a `split` column honours `--split` (test by
/// default), and an `image,label,split,patient_id` table (kermany-cxr's layout, image names
/// with or without `images/`) opens by split with sorted class names; a patient in two splits
/// is refused by name in both layouts.
#[test]
fn split_columns_are_honoured_and_patients_stay_in_one_split() {
    let dir = TempDir::new("splits");
    let files = ["00000032_037.png", "00000072_000.png", "00000193_019.png"];
    let folder = |name: &str, csv: &str| {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("images")).unwrap();
        for f in files {
            std::fs::copy(
                sample(&format!("nih-cxr14/{f}")),
                root.join("images").join(f),
            )
            .unwrap();
        }
        std::fs::write(root.join("labels.csv"), csv).unwrap();
        root
    };
    let nih = folder(
        "nih",
        "Image Index,Finding Labels,Patient ID,split\n\
         00000032_037.png,Cardiomegaly,32,test\n\
         00000072_000.png,No Finding,72,train\n\
         00000193_019.png,Mass,193,train\n",
    );
    assert_eq!(
        Dataset::open(&nih, None).unwrap().len(),
        1,
        "test by default"
    );
    assert_eq!(Dataset::open(&nih, Some("train")).unwrap().len(), 2);
    assert_eq!(Dataset::open(&nih, Some("all")).unwrap().len(), 3);
    let e = Dataset::open(&nih, Some("val")).unwrap_err().to_string();
    assert!(
        e.contains("no split 'val'") && e.contains("test, train"),
        "{e}"
    );
    let leaky = folder(
        "nih-leak",
        "Image Index,Finding Labels,Patient ID,split\n\
         00000032_037.png,Cardiomegaly,32,test\n\
         00000072_000.png,No Finding,32,train\n\
         00000193_019.png,Mass,193,train\n",
    );
    let e = Dataset::open(&leaky, Some("train"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Patient ID '32'") && e.contains("'test' and 'train'"),
        "{e}"
    );

    let kermany = folder(
        "kermany",
        "image,label,subtype,patient_id,split\n\
         images/00000032_037.png,pneumonia,virus,P1,test\n\
         00000072_000.png,normal,none,P2,train\n\
         images/00000193_019.png,pneumonia,bacteria,P3,train\n",
    );
    let train = Dataset::open(&kermany, Some("train")).unwrap();
    assert_eq!(train.kind, DatasetKind::LabelsCsv);
    assert_eq!(train.class_names, ["normal", "pneumonia"]);
    let labels: Vec<&Label> = train.samples.iter().map(|s| &s.label).collect();
    assert_eq!(labels, [&Label::Class(0), &Label::Class(1)]);
    let img = train.load(1, 1, 64, ResizeMode::ShorterSideCrop).unwrap();
    assert_eq!((img.channels, img.height), (1, 64));
    let test = Dataset::open(&kermany, None).unwrap();
    assert_eq!((test.split.as_str(), test.len()), ("test", 1));
    let leaky = folder(
        "kermany-leak",
        "image,label,patient_id,split\n\
         00000032_037.png,pneumonia,P1,test\n\
         00000072_000.png,normal,P1,train\n",
    );
    let e = Dataset::open(&leaky, Some("train"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("patient_id 'P1'"), "{e}");
    let escaping = folder("escape", "image,label\n../outside.png,normal\n");
    let e = Dataset::open(&escaping, None).unwrap_err().to_string();
    assert!(e.contains("not a plain file name"), "{e}");
}

#[test]
fn calibrate_writes_the_fitted_bias_shift_into_a_new_checkpoint() {
    let tmp = TempDir::new("calibrate");
    let root = tmp.path().join("ham");
    common::ham_folder(&root, |_| "train", false);
    // An imbalanced prior (nv 4 of 10 training images) and a validation split made of the
    // same seven images under other ids and lesions.
    let mut csv = std::fs::read_to_string(root.join("labels.csv")).unwrap();
    let copy = |from: &str, to: &str| {
        std::fs::copy(
            root.join(format!("images/{from}.jpg")),
            root.join(format!("images/{to}.jpg")),
        )
        .unwrap();
    };
    for k in 0..3 {
        let id = format!("ISIC_98{k:05}");
        copy("ISIC_0024317", &id);
        csv.push_str(&format!("{id},HAM_NV{k},nv,histo,50.0,male,back,train\n"));
    }
    for (i, (id, dx)) in HAM_SAMPLES.iter().enumerate() {
        let v = format!("ISIC_99{i:05}");
        copy(id, &v);
        csv.push_str(&format!("{v},HAM_V{i},{dx},histo,50.0,male,back,val\n"));
    }
    std::fs::write(root.join("labels.csv"), csv).unwrap();
    let out = tmp.path().join("adjusted.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(["calibrate", "--data"])
        .arg(&root)
        .args(["--device", "cpu", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fit: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let prior: Vec<f64> = serde_json::from_value(fit["prior"].clone()).unwrap();
    assert!(
        (prior[5] - 0.4).abs() < 1e-9 && (prior[0] - 0.1).abs() < 1e-9,
        "{prior:?}"
    );
    let tau = fit["tau"].as_f64().unwrap();
    assert!(
        fit["after"]["balanced_accuracy"].as_f64().unwrap()
            >= fit["before"]["balanced_accuracy"].as_f64().unwrap()
    );
    // The new checkpoint is the old model with -tau * ln(prior) added to the bias.
    let device = ComputeDevice::cpu().device;
    let bias = |m: &ResNet50| -> Vec<f32> {
        m.fc.bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let before = bias(
        &triscope::inference::load_embedded_model(&device)
            .unwrap()
            .model,
    );
    let after = triscope::io::weights::load_checkpoint(&out, &device).unwrap();
    for (k, (a, b)) in bias(&after.model).iter().zip(&before).enumerate() {
        let want = -tau * prior[k].ln();
        assert!(
            ((a - b) as f64 - want).abs() < 1e-5,
            "class {k}: {a} - {b} vs {want}"
        );
    }
    assert_eq!(after.metadata.metrics["logit_adjustment_tau"], tau);
    // An accuracy floor outside [0, 1] is refused before anything is written.
    let refused = tmp.path().join("refused.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args([
            "calibrate",
            "--min-accuracy",
            "1.5",
            "--device",
            "cpu",
            "--data",
        ])
        .arg(&root)
        .arg("--out")
        .arg(&refused)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("accuracy floor"), "{e}");
    assert!(!refused.exists());
}

#[test]
fn tta_is_recorded_and_changes_the_answer_in_eval_and_predict() {
    let dir = TempDir::new("cli-eval-tta");
    let ham = ham_fixture(dir.path());
    let bin = env!("CARGO_BIN_EXE_triscope");
    for tta in [false, true] {
        let out = dir.path().join(format!("eval-{tta}"));
        let mut cmd = Command::new(bin);
        cmd.args(["eval", "--data"])
            .arg(&ham)
            .args(["--attacks", "clean", "--device", "cpu", "--out"])
            .arg(&out);
        if tta {
            cmd.arg("--tta");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).contains("averaged over 8 flips and turns"),
            tta
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
        assert_eq!(report["test_time_augmentation"], tta);
    }

    let image = std::fs::read_dir(ham.join("images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let predict = |tta: bool| -> Vec<f64> {
        let mut cmd = Command::new(bin);
        cmd.args(["predict", "--json", "--device", "cpu"])
            .arg(&image);
        if tta {
            cmd.arg("--tta");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["probability"].as_f64().unwrap())
            .collect()
    };
    let (plain, averaged) = (predict(false), predict(true));
    assert!((averaged.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert!(
        plain
            .iter()
            .zip(&averaged)
            .any(|(a, b)| (a - b).abs() > 1e-4)
    );
}
