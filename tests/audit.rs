//! The audit: explanation metrics on real models and images with known-answer cases, ground
//! truth regions, the sanity check, and `triscope audit` end to end (HTML, JSON, figures).

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use std::path::Path;
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use common::{TempDir, sample};
use triscope::audit::AuditReport;
use triscope::explain::faithfulness::{FaithfulnessOptions, blur, faithfulness};
use triscope::explain::sanity::cascading_randomisation;
use triscope::explain::{AttributionOptions, Method, TargetClass, attribute};
use triscope::inference::Classifier;
use triscope::io::data::Dataset;
use triscope::io::imaging::PixelImage;
use triscope::io::regions::{LesionSizeSpec, RegionSource, lesion_size_concepts};
use triscope::model::device::ComputeDevice;

/// A HAM10000-layout folder of the seven bundled samples and their masks.
fn mini_ham(dir: &Path, split: &'static str) {
    common::ham_folder(dir, |_| split, true);
}

/// An NIH-layout folder of the three bundled X-rays with their real boxes.
fn mini_nih(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let rows = [
        ("00000032_037.png", "Cardiomegaly|Edema|Infiltration"),
        ("00000072_000.png", "Atelectasis"),
        ("00000193_019.png", "Pneumonia"),
    ];
    let mut labels = String::from("Image Index,Finding Labels\n");
    for (f, l) in rows {
        std::fs::copy(
            sample(&format!("nih-cxr14/{f}")),
            dir.join("images").join(f),
        )
        .unwrap();
        labels.push_str(&format!("{f},{l}\n"));
    }
    std::fs::write(dir.join("labels.csv"), labels).unwrap();
    // Rows of the real BBox_List_2017.csv (1024-pixel coordinates).
    std::fs::write(
        dir.join("BBox_List_2017.csv"),
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n\
         00000072_000.png,Atelectasis,356.503703703704,567.805291005291,127.86455026455,82.3534391534392\n\
         00000032_037.png,Infiltrate,339.166137566138,119.195767195767,172.292063492064,351.085714285714\n\
         00000193_019.png,Pneumonia,703.715555555556,616.997934027778,218.453333333333,249.173333333333\n",
    )
    .unwrap();
}

fn embedded() -> Classifier {
    Classifier::load(None, ComputeDevice::cpu()).unwrap()
}

#[test]
fn masks_and_boxes_follow_the_image_geometry() {
    let tmp = TempDir::new("regions");
    mini_ham(&tmp.path().join("ham"), "test");
    let ds = Dataset::open(&tmp.path().join("ham"), None).unwrap();
    let src = RegionSource::for_dataset(&ds).unwrap().expect("masks");
    // ISIC_0024470's lesion covers 63.7% of the 200x150 image; the centre crop keeps most of it.
    let r = src
        .regions(ds.samples[0].path().unwrap(), 96, Default::default())
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].mask.len(), 96 * 96);
    let a = r[0].area_fraction();
    assert!((0.55..0.9).contains(&a), "{a}");

    mini_nih(&tmp.path().join("nih"));
    let ds = Dataset::open(&tmp.path().join("nih"), Some("all")).unwrap();
    let src = RegionSource::for_dataset(&ds).unwrap().expect("boxes");
    let pneumonia = ds
        .samples
        .iter()
        .find(|s| s.id == "00000193_019.png")
        .unwrap();
    let r = src
        .regions(pneumonia.path().unwrap(), 64, Default::default())
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].finding, "Pneumonia");
    // Box x 703.7..922.2, y 617.0..866.2 of 1024 -> at 64 px: x 43.98..57.6, y 38.6..54.1.
    let on: Vec<usize> = (0..64 * 64).filter(|&i| r[0].mask[i]).collect();
    let (xs, ys): (Vec<usize>, Vec<usize>) = on.iter().map(|i| (i % 64, i / 64)).unzip();
    assert!(
        (43..=45).contains(xs.iter().min().unwrap()),
        "{:?}",
        xs.iter().min()
    );
    assert!((56..=58).contains(xs.iter().max().unwrap()));
    assert!((38..=40).contains(ys.iter().min().unwrap()));
    assert!((53..=55).contains(ys.iter().max().unwrap()));
    // "Infiltrate" boxes are named as the labels name the finding.
    let infiltrate = ds
        .samples
        .iter()
        .find(|s| s.id == "00000032_037.png")
        .unwrap();
    let r = src
        .regions(infiltrate.path().unwrap(), 64, Default::default())
        .unwrap();
    assert_eq!(r[0].finding, "Infiltration");
}

#[test]
fn lesion_size_concepts_split_by_mask_area() {
    let tmp = TempDir::new("concepts");
    mini_ham(tmp.path(), "train");
    let mut spec = LesionSizeSpec {
        split: "train".into(),
        per_concept: 1,
        random_sets: 3,
        scan: 100,
        large_fraction: 0.5,
        small_fraction: 0.115,
        seed: 1,
    };
    let c = lesion_size_concepts(tmp.path(), &spec).unwrap();
    let name = |p: &std::path::PathBuf| p.file_stem().unwrap().to_string_lossy().into_owned();
    // Mask areas: akiec 0.637 (the only large one), mel 0.111 (the only one under 0.115).
    assert_eq!(
        c.large.iter().map(name).collect::<Vec<_>>(),
        ["ISIC_0024470"]
    );
    assert_eq!(
        c.small.iter().map(name).collect::<Vec<_>>(),
        ["ISIC_0024410"]
    );
    assert_eq!(c.random_sets.len(), 3);
    assert!(
        c.random_sets
            .iter()
            .flatten()
            .all(|p| !c.large.contains(p) && !c.small.contains(p))
    );
    // Too strict a threshold names what it found.
    spec.small_fraction = 0.05;
    let e = lesion_size_concepts(tmp.path(), &spec)
        .unwrap_err()
        .to_string();
    assert!(e.contains("0 small"), "{e}");
}

#[test]
fn faithfulness_curves_and_confidence_change_match_direct_predictions() {
    let classifier = embedded();
    let image = classifier
        .load_image(&sample("ham10000/ISIC_0024410.jpg"))
        .unwrap()
        .pixels;
    let (h, w) = (image.height, image.width);
    let probability = |img: &PixelImage, class: usize| {
        classifier.predict(&[img]).unwrap()[0].scores[class].probability as f64
    };
    let class = classifier.predict(&[&image]).unwrap()[0].class_index;
    let device = classifier.device().device.clone();
    // One step moves every pixel: the curves are [image, baseline] and [blur, image].
    let options = FaithfulnessOptions {
        pixels_per_step: Some(h * w),
        ..Default::default()
    };
    let ones = vec![1.0f32; h * w];
    let f = faithfulness(classifier.model(), &device, &image, &ones, class, &options).unwrap();
    let mean_image = PixelImage {
        data: (0..3)
            .flat_map(|c| std::iter::repeat_n(classifier.config().mean[c], h * w))
            .collect(),
        ..image.clone()
    };
    let blurred = PixelImage {
        data: blur(&image, 5.0, 11),
        ..image.clone()
    };
    let p = probability(&image, class);
    assert_eq!(f.deletion_curve.len(), 2);
    assert!((f.deletion_curve[0] - p).abs() < 1e-5);
    assert!((f.deletion_curve[1] - probability(&mean_image, class)).abs() < 1e-5);
    assert!((f.insertion_curve[0] - probability(&blurred, class)).abs() < 1e-5);
    assert!((f.insertion_curve[1] - p).abs() < 1e-5);
    assert!((f.deletion_auc - (f.deletion_curve[0] + f.deletion_curve[1]) / 2.0).abs() < 1e-12);
    // A map of ones keeps the image: no drop, no increase. A map of zeros is the mean image.
    assert!(f.drop_percent.abs() < 1e-3 && !f.increase, "{f:?}");
    let zeros = vec![0.0f32; h * w];
    let z = faithfulness(classifier.model(), &device, &image, &zeros, class, &options).unwrap();
    let pm = probability(&mean_image, class);
    let want = ((p - pm).max(0.0)) / p * 100.0;
    assert!(
        (z.drop_percent - want).abs() < 1e-3,
        "{} vs {want}",
        z.drop_percent
    );
    assert_eq!(z.increase, pm > p);
    // The default protocol: one row per step, resolution + 1 points, AUC in [0, 1].
    let d = faithfulness(
        classifier.model(),
        &device,
        &image,
        &ones,
        class,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(d.deletion_curve.len(), h + 1);
    assert!((0.0..=1.0).contains(&d.deletion_auc) && (0.0..=1.0).contains(&d.insertion_auc));
    // Wrong sizes and classes are errors, not panics.
    assert!(
        faithfulness(
            classifier.model(),
            &device,
            &image,
            &ones[1..],
            class,
            &options
        )
        .is_err()
    );
    assert!(faithfulness(classifier.model(), &device, &image, &ones, 99, &options).is_err());
}

#[test]
fn sanity_check_passes_grad_cam_and_fails_a_model_independent_map() {
    let classifier = embedded();
    let image = classifier
        .load_image(&sample("ham10000/ISIC_0024317.jpg"))
        .unwrap()
        .pixels;
    let (h, w) = (image.height, image.width);
    let device = classifier.device().device.clone();
    let class = classifier.predict(&[&image]).unwrap()[0].class_index;
    let x = || Tensor::<4>::from_data(TensorData::new(image.data.clone(), [1, 3, h, w]), &device);
    let opts = AttributionOptions::default();
    let gradcam = cascading_randomisation(classifier.model(), &device, 99, h, w, 0.5, &mut |m| {
        Ok(
            attribute(m, x(), Method::GradCam, TargetClass::Index(class), &opts)?
                .remove(0)
                .map,
        )
    })
    .unwrap();
    assert_eq!(gradcam.steps.len(), 6);
    assert_eq!(gradcam.steps[5].randomised, "stem");
    assert!(gradcam.passed, "{:?}", gradcam.steps);
    // An "explanation" that is only the image's brightness ignores the model: SSIM stays 1.
    let brightness: Vec<f32> = (0..h * w)
        .map(|i| image.data[i] + image.data[h * w + i])
        .collect();
    let edge = cascading_randomisation(classifier.model(), &device, 99, h, w, 0.5, &mut |_| {
        Ok(brightness.clone())
    })
    .unwrap();
    assert!(!edge.passed);
    assert!(edge.steps.iter().all(|s| (s.ssim - 1.0).abs() < 1e-9));
}

fn triscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(args)
        .output()
        .expect("triscope runs")
}

#[test]
fn audit_writes_a_self_contained_report_on_ham10000_layout() {
    let tmp = TempDir::new("audit-ham");
    let data = tmp.path().join("ham");
    mini_ham(&data, "test");
    // TCAV from folders: the concept is two samples, the random images the other five and
    // the three X-rays (3 sets of 2 for 2 runs).
    let concept = tmp.path().join("concept");
    let random = tmp.path().join("random");
    std::fs::create_dir_all(&concept).unwrap();
    std::fs::create_dir_all(&random).unwrap();
    for (i, (id, _)) in common::HAM_SAMPLES.iter().enumerate() {
        let dir = if i < 2 { &concept } else { &random };
        std::fs::copy(
            data.join("images").join(format!("{id}.jpg")),
            dir.join(format!("{id}.jpg")),
        )
        .unwrap();
    }
    for f in ["00000032_037.png", "00000072_000.png", "00000193_019.png"] {
        std::fs::copy(sample(&format!("nih-cxr14/{f}")), random.join(f)).unwrap();
    }
    let out = tmp.path().join("out");
    let s = |p: &Path| p.display().to_string();
    let o = triscope(&[
        "audit",
        "--data",
        &s(&data),
        "--attacks",
        "clean,fgsm,pgd10",
        "--eps",
        "2/255",
        "--eps-sweep",
        "0,2,8/255",
        "--explain-samples",
        "3",
        "--sanity-images",
        "1",
        "--sanity-methods",
        "gradcam",
        "--concept",
        &format!("two={}", s(&concept)),
        "--random",
        &s(&random),
        "--tcav-runs",
        "2",
        "--tcav-layers",
        "layer4",
        "--out",
        &s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let (report, dir) = AuditReport::read(&out).unwrap();
    assert_eq!(dir, out);
    let ev = report.evaluation.as_ref().expect("labels fit the model");
    assert_eq!(ev.n, 7);
    assert_eq!(ev.sweep.len(), 3);
    assert_eq!(report.explanation.samples, 3);
    let loc = report
        .explanation
        .localisation
        .as_ref()
        .expect("masks give localisation");
    assert_eq!(loc.iou_top15.n, 3);
    assert!((0.0..=1.0).contains(&loc.iou_top15.mean));
    assert_eq!(report.explanation.stability.len(), 3);
    assert!(
        report
            .explanation
            .stability
            .iter()
            .all(|s| (s.eps_linf * 255.0 - 2.0).abs() < 1e-4)
    );
    assert_eq!(report.sanity.len(), 1);
    assert_eq!(report.sanity[0].check.steps.len(), 6);
    // One concept, one layer, every class with images.
    assert_eq!(report.tcav.len(), 7);
    assert!(
        report
            .tcav
            .iter()
            .all(|t| t.scores.len() == 2 && (0.0..=1.0).contains(&t.mean))
    );
    let files: Vec<&str> = report.figures.iter().map(|f| f.file.as_str()).collect();
    for want in [
        "accuracy_vs_eps.png",
        "confusion_clean.png",
        "confusion_pgd10.png",
        "per_class_robust.png",
        "insertion_deletion.png",
        "heatmap_grid.png",
        "sanity.png",
        "tcav_layer4.png",
    ] {
        assert!(files.contains(&want), "{want} missing from {files:?}");
        assert!(out.join(want).is_file());
    }
    let html = std::fs::read_to_string(out.join("audit.html")).unwrap();
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        report.figures.len()
    );
    assert!(html.contains("Fooled-evaluation checks") && html.contains("TCAV"));
    assert!(
        !html.contains("src=\"accuracy"),
        "figures must be embedded, not linked"
    );
    // The embedded default carries its training distribution: every audited image is scored;
    // the bundled HAM10000 samples are mostly like it.
    let scored: Vec<_> = report
        .samples
        .iter()
        .map(|s| s.out_of_distribution.expect("a score for every image"))
        .collect();
    assert!(scored.iter().filter(|o| !o.flag).count() >= 2, "{scored:?}");
    let line = format!(
        "Out of distribution: {} of {} audited images are unlike",
        scored.iter().filter(|o| o.flag).count(),
        scored.len()
    );
    assert!(html.contains(&line), "{line}");
}

#[test]
fn audit_on_chest_boxes_with_a_model_of_other_labels_skips_evaluation_but_localises() {
    let tmp = TempDir::new("audit-nih");
    let data = tmp.path().join("nih");
    mini_nih(&data);
    let out = tmp.path().join("out");
    let model = common::root().join("models/kermany_cxr_default.safetensors");
    let s = |p: &Path| p.display().to_string();
    let o = triscope(&[
        "audit",
        "--data",
        &s(&data),
        "--split",
        "all",
        "--model",
        &s(&model),
        "--explain-samples",
        "2",
        "--sanity-images",
        "0",
        "--out",
        &s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let (report, _) = AuditReport::read(&out).unwrap();
    assert!(report.evaluation.is_none());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("Evaluation skipped")),
        "{:?}",
        report.notes
    );
    // Only the Pneumonia box names one of the model's classes: that image comes first.
    assert_eq!(report.samples[0].id, "00000193_019.png");
    // The chest model carries the statistics of its training data: every image is scored.
    assert!(
        report
            .samples
            .iter()
            .all(|s| s.out_of_distribution.is_some())
    );
    assert_eq!(report.samples[0].localisation.len(), 1);
    assert_eq!(report.samples[0].localisation[0].finding, "Pneumonia");
    assert_eq!(
        report.samples[0].explained_class,
        report.samples[0].predicted
    );
    assert!(report.samples[1].localisation.is_empty());
    assert!(report.tcav.is_empty());
}

#[test]
fn audit_rejects_bad_arguments_before_computing() {
    let tmp = TempDir::new("audit-bad");
    mini_ham(tmp.path(), "test");
    let d = tmp.path().display().to_string();
    // Values a flag cannot take fail while the command line is parsed (exit 2, as every
    // usage error); values that parse but cannot work fail before compute (exit 1).
    for (args, want, code) in [
        (vec!["--method", "magic"], "magic", 2),
        (vec!["--concept", "nofolder"], "NAME=FOLDER", 2),
        (vec!["--tcav-runs", "1"], "at least 2", 1),
        (vec!["--stability-eps", "3"], "stability-eps", 1),
    ] {
        let mut all = vec!["audit", "--data", d.as_str(), "--out", "/nonexistent/never"];
        all.extend(args);
        let o = triscope(&all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{all:?}: {stderr}");
        assert!(stderr.contains(want), "{all:?}: {stderr}");
    }
}

#[test]
fn explain_with_faithfulness_adds_auc_columns_and_json() {
    let tmp = TempDir::new("explain-faith");
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(sample("ham10000/ISIC_0024317.jpg"), input.join("good.jpg")).unwrap();
    std::fs::write(input.join("broken.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    let out = tmp.path().join("out");
    let s = |p: &Path| p.display().to_string();
    let o = triscope(&["explain", &s(&input), "--faithfulness", "--out", &s(&out)]);
    assert_eq!(o.status.code(), Some(1), "one file is broken");
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert!(header.ends_with(&["deletion_auc", "insertion_auc", "drop_percent", "increase"]));
    let good = lines.iter().find(|l| l.starts_with("good.jpg")).unwrap();
    let cells: Vec<&str> = good.split(',').collect();
    assert_eq!(cells.len(), header.len());
    let auc = |name: &str| -> f64 {
        cells[header.iter().position(|h| *h == name).unwrap()]
            .parse()
            .unwrap()
    };
    assert!(
        (0.0..=1.0).contains(&auc("deletion_auc")) && (0.0..=1.0).contains(&auc("insertion_auc"))
    );
    let broken = lines.iter().find(|l| l.starts_with("broken.png")).unwrap();
    assert!(broken.ends_with(",,,,"), "{broken}");

    // One image: the JSON carries the curves.
    let one = tmp.path().join("one");
    let o = triscope(&[
        "explain",
        &s(&input.join("good.jpg")),
        "--faithfulness",
        "--out",
        &s(&one),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("prediction.json")).unwrap())
            .unwrap();
    let f = &v["faithfulness"];
    let side_px = embedded().config().resolution;
    assert_eq!(
        f["deletion_curve"].as_array().unwrap().len(),
        side_px + 1,
        "one step per row of pixels, and the start"
    );
    assert!(f["insertion_auc"].as_f64().is_some());
}
