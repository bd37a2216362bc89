//! The seven-point-checklist concepts: derm7pt's mapping (a fixture of real rows and images),
//! derm7pt as an evaluation data set, the concept bank on synthetic criteria with known
//! answers (a separable one, random ones, one too rare), its cache, the per-image read-out
//! against a hand-computed directional derivative, the audit and `triscope concepts` end to
//! end, and bad derm7pt folders.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use common::{TempDir, fixture};
use triscope::explain::checklist::{
    ChecklistTable, SEVEN_POINT_CHECKLIST, write_synthetic_derm7pt,
};
use triscope::explain::concept_bank::{BankOptions, read_concepts};
use triscope::explain::concept_cache::{BankOrigin, load_or_build, model_key};
use triscope::explain::tcav::layer_gradients;
use triscope::inference::{Classifier, ModelSource};
use triscope::io::data::{Dataset, DatasetKind};
use triscope::model::device::ComputeDevice;
use triscope::model::{LayerId, ResNet50};

fn embedded() -> Classifier {
    Classifier::load(None, ComputeDevice::cpu()).unwrap()
}

fn triscope(args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(args)
        .env("TRISCOPE_CACHE_DIR", cache)
        .output()
        .unwrap()
}

#[test]
fn derm7pt_values_map_to_the_checklist_as_documented() {
    let t = ChecklistTable::open(&fixture("derm7pt_tiny")).unwrap();
    assert_eq!(t.rows.len(), 8);
    // Order: network, veil, vascular, streaks, pigmentation, dots/globules, regression.
    let expected: [(&str, [u8; 7], Option<&str>); 8] = [
        // atypical, present, dotted, irregular, absent, irregular, white areas
        ("Fgl/Fgl006.jpg", [1, 1, 1, 1, 0, 1, 1], Some("mel")),
        // typical, absent, absent, irregular, localized irregular, irregular, absent
        ("Ael/Ael496.jpg", [0, 0, 0, 1, 1, 1, 0], Some("mel")),
        // atypical, absent, within regression (not atypical), absent, absent, irregular,
        // blue areas
        ("FCL/Fcl028.jpg", [1, 0, 0, 0, 0, 1, 1], Some("nv")),
        // typical network and regular streaks and dots: no criterion
        ("A2l/Abl129.jpg", [0, 0, 0, 0, 0, 0, 0], Some("nv")),
        ("FDL/FDL068.JPG", [0, 0, 0, 0, 0, 1, 0], None),
        // arborizing vessels are not the atypical pattern
        ("Ael/Ael469.jpg", [0, 0, 0, 0, 1, 1, 0], Some("bcc")),
        // combinations of regression, veil present
        ("A3l/Acl229.jpg", [0, 1, 0, 0, 1, 1, 1], Some("bkl")),
        ("A2l/Abl112.jpg", [0, 0, 0, 0, 0, 0, 0], Some("nv")),
    ];
    for (row, (id, present, dx)) in t.rows.iter().zip(expected) {
        assert_eq!(row.id, id);
        assert_eq!(row.present.map(|p| p as u8), present, "{id}");
        assert_eq!(row.dx.as_deref(), dx, "{id}");
    }
    assert_eq!(t.split("train").len(), 3);
    // Train: Fgl006, Ael496, Abl129. Streaks: 2 with, 1 without.
    let streaks = SEVEN_POINT_CHECKLIST
        .iter()
        .position(|c| c.name == "irregular_streaks")
        .unwrap();
    assert_eq!(t.counts("train")[streaks], (2, 1));
}

#[test]
fn derm7pt_opens_as_an_evaluation_set_and_counts_the_rows_it_leaves_out() {
    let test = Dataset::open(&fixture("derm7pt_tiny"), Some("test")).unwrap();
    assert_eq!(test.kind, DatasetKind::Derm7pt);
    // Ael469 (bcc) and Acl229 (bkl); FDL068 has no HAM10000 code.
    assert_eq!(test.len(), 2);
    assert_eq!(test.samples[0].id, "Ael/Ael469.jpg");
    assert_eq!(test.notes.len(), 1, "{:?}", test.notes);
    assert!(test.notes[0].starts_with("1 image(s)"), "{:?}", test.notes);
    let all = Dataset::open(&fixture("derm7pt_tiny"), Some("all")).unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all.class_counts(), vec![0, 1, 1, 0, 2, 3, 0]);
}

#[test]
fn eval_on_derm7pt_reports_melanoma_against_the_rest() {
    let out = TempDir::new("d7-eval");
    let dir = out.path().join("eval");
    let o = triscope(
        &[
            "eval",
            "--data",
            fixture("derm7pt_tiny").to_str().unwrap(),
            "--split",
            "all",
            "--attacks",
            "clean",
            "--no-checks",
            "--out",
            dir.to_str().unwrap(),
        ],
        out.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("melanoma vs rest (clean, 2 melanomas)"),
        "{stdout}"
    );
    assert!(stdout.contains("note: 1 image(s)"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    let mel = &json["results"][0]["melanoma"];
    let auroc = mel["mel_vs_rest_auroc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auroc), "{mel}");
    // It is the per-class AUROC of mel, under its own name.
    let per_class = json["results"][0]["metrics"]["per_class_auroc"][4]
        .as_f64()
        .unwrap();
    assert_eq!(auroc, per_class);
    assert_eq!(mel["melanomas"], 2);
    assert_eq!(json["dataset_notes"].as_array().unwrap().len(), 1);
}

fn synthetic_derm7pt(root: &Path, per_split: [(&str, usize); 3]) {
    write_synthetic_derm7pt(root, &per_split).unwrap();
}

fn small_options() -> BankOptions {
    BankOptions {
        runs: 4,
        per_set: 20,
        min_images: 10,
        examples: 3,
        ..BankOptions::default()
    }
}

#[test]
fn the_bank_finds_a_separable_criterion_caches_it_per_model_and_reads_an_image() {
    let tmp = TempDir::new("d7-bank");
    let data = tmp.path().join("derm7pt");
    synthetic_derm7pt(&data, [("train", 40), ("val", 16), ("test", 16)]);
    let cache = tmp.path().join("cache");
    let classifier = embedded();
    let options = small_options();
    let cancel = AtomicBool::new(false);
    let (bank, origin) = load_or_build(
        &classifier,
        &data,
        &options,
        Some(&cache),
        &mut |_| {},
        &cancel,
    )
    .unwrap();
    let stored = match origin {
        BankOrigin::Built(Ok(f)) => f,
        other => panic!("expected a new bank, stored: {other:?}"),
    };
    assert!(stored.is_file());
    // Six criteria learned, the vascular pattern (no image has it) skipped and named.
    assert_eq!(bank.criteria.len(), 6);
    assert!(
        bank.notes
            .iter()
            .any(|n| n.starts_with("atypical vascular pattern skipped") && n.contains("10")),
        "{:?}",
        bank.notes
    );
    let veil = bank.criterion("blue_whitish_veil").unwrap();
    assert_eq!(veil.train.split_present, 20);
    for l in &veil.layers {
        assert!(
            l.probe.test_auroc > 0.9,
            "{:?} {}",
            l.layer,
            l.probe.test_auroc
        );
        assert!(
            l.cav_accuracy() > 0.8,
            "{:?} {:?}",
            l.layer,
            l.cav_accuracies
        );
        assert_eq!(l.cavs.len(), 4);
    }
    assert_eq!(veil.examples.len(), 3);
    // TCAV rows: every criterion x class (mel, nv: the synthetic diagnoses) x layer.
    assert_eq!(bank.tcav.len(), 6 * 2 * 2);
    assert_eq!(bank.tcav[0].class_name, "mel", "mel first");

    // The same model and data: read from the cache, identical.
    let (again, origin) = load_or_build(
        &classifier,
        &data,
        &options,
        Some(&cache),
        &mut |_| {},
        &cancel,
    )
    .unwrap();
    assert_eq!(origin, BankOrigin::Cache(stored.clone()));
    let a = veil.at(LayerId::Layer3).unwrap();
    let b = again
        .criterion("blue_whitish_veil")
        .unwrap()
        .at(LayerId::Layer3)
        .unwrap();
    assert_eq!(a.direction, b.direction);
    assert_eq!(a.probe.weights, b.probe.weights);
    assert_eq!(bank.tcav.len(), again.tcav.len());

    // Another model (other weights, same configuration): another key, built again.
    let other = Classifier::from_model(
        ResNet50::init(classifier.config(), 1, &classifier.device().device).unwrap(),
        classifier.metadata.clone(),
        ModelSource::Embedded,
        ComputeDevice::cpu(),
    );
    assert_ne!(
        model_key(other.model()).unwrap(),
        model_key(classifier.model()).unwrap()
    );
    let (_, origin) =
        load_or_build(&other, &data, &options, Some(&cache), &mut |_| {}, &cancel).unwrap();
    assert!(
        matches!(origin, BankOrigin::Built(Ok(ref f)) if *f != stored),
        "{origin:?}"
    );

    // The read-out of one image toward mel.
    let image = classifier
        .load_image(&data.join("images/test/000.png"))
        .unwrap()
        .pixels;
    let mel = 4;
    let readout = read_concepts(&classifier, &bank, &image, mel).unwrap();
    assert_eq!(readout.class_name, "mel");
    assert!(readout.caveat.contains("not a diagnosis"));
    let at = |layer: LayerId, name: &str| {
        readout
            .layers
            .iter()
            .find(|l| l.layer == layer)
            .unwrap()
            .readings
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .clone()
    };
    // The image has the veil: its probe says so.
    assert!(at(LayerId::Layer3, "blue_whitish_veil").presence > 0.5);
    // At layer4, d logit_k / d A[c, y, x] = W[k, c] / (h w) for every image (average pooling
    // then the linear head), so the push is sum_c W[k, c] * mean_yx v[c, y, x].
    let fc = classifier
        .model()
        .named_tensors()
        .unwrap()
        .into_iter()
        .find(|t| t.key == "fc.weight")
        .unwrap(); // [classes, channels]
    let channels = fc.shape[1];
    let v = &veil.at(LayerId::Layer4).unwrap().direction; // [channels * h * w]
    let hw = v.len() / channels;
    let hand: f64 = (0..channels)
        .map(|c| {
            let w = fc.values[mel * channels + c] as f64;
            let mean: f64 = v[c * hw..(c + 1) * hw]
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>()
                / hw as f64;
            w * mean
        })
        .sum();
    let push = at(LayerId::Layer4, "blue_whitish_veil").push;
    assert!(
        (push - hand).abs() < 1e-4 * hand.abs().max(1e-3),
        "push {push} against {hand}"
    );
    // At layer3 it is the gradient TCAV scores, along the mean CAV.
    let grad = layer_gradients(
        classifier.model(),
        &classifier.device().device,
        &[image],
        LayerId::Layer3,
        mel,
        1,
    )
    .unwrap()
    .remove(0);
    let v3 = &veil.at(LayerId::Layer3).unwrap().direction;
    let expected: f64 = grad
        .iter()
        .zip(v3)
        .map(|(&g, &d)| g as f64 * d as f64)
        .sum();
    let push3 = at(LayerId::Layer3, "blue_whitish_veil").push;
    assert!((push3 - expected).abs() < 1e-6 * expected.abs().max(1e-3));
}

#[test]
fn the_app_thread_builds_the_bank_and_answers_the_newest_image() {
    use std::time::{Duration, Instant};
    use triscope::workbench::concepts::{ConceptEvent, ConceptsHandle};
    let tmp = TempDir::new("d7-thread");
    let data = tmp.path().join("derm7pt");
    synthetic_derm7pt(&data, [("train", 40), ("val", 16), ("test", 16)]);
    let mut job = ConceptsHandle::spawn(
        None,
        data.clone(),
        small_options(),
        Some(tmp.path().join("cache")),
        Box::new(|| {}),
    )
    .unwrap();
    // Two requests before the bank is ready: only the newer one is answered.
    let first = job.read(data.join("images/test/001.png"), None);
    let second = job.read(data.join("images/test/000.png"), Some(4));
    assert!(second > first);
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut ready, mut progress) = (None, 0);
    loop {
        let e = job.events.recv_timeout(deadline - Instant::now()).unwrap();
        match e {
            ConceptEvent::Progress(_) => progress += 1,
            ConceptEvent::Ready(s) => ready = Some(s),
            ConceptEvent::Readout {
                request, readout, ..
            } => {
                assert_eq!(request, second);
                assert_eq!(readout.class_name, "mel");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(progress > 0);
    let summary = ready.unwrap();
    assert_eq!(summary.criteria.len(), 6);
    let veil = summary
        .criteria
        .iter()
        .find(|c| c.name == "blue_whitish_veil")
        .unwrap();
    assert_eq!(veil.examples.len(), 3);
    assert_eq!(veil.examples[0].width, 96);
    assert!(
        job.events.try_recv().is_err(),
        "the older request is never answered"
    );
    drop(job);
}

#[test]
fn audit_and_concepts_commands_use_the_checklist_end_to_end() {
    let tmp = TempDir::new("d7-cli");
    let data = tmp.path().join("derm7pt");
    // The defaults need 20 train images on each side of a criterion.
    synthetic_derm7pt(&data, [("train", 48), ("val", 12), ("test", 12)]);
    let ham = tmp.path().join("ham");
    common::ham_folder(&ham, |_| "test", true);
    let concepts = format!("derm7pt={}", data.display());
    let audit_dir = tmp.path().join("audit");
    let o = triscope(
        &[
            "audit",
            "--data",
            ham.to_str().unwrap(),
            "--attacks",
            "clean",
            "--no-checks",
            "--explain-samples",
            "1",
            "--sanity-images",
            "0",
            "--concepts",
            &concepts,
            "--tcav-runs",
            "3",
            "--out",
            audit_dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(audit_dir.join("audit.json")).unwrap())
            .unwrap();
    let tcav = report["tcav"].as_array().unwrap();
    let notes = report["notes"].to_string();
    // Each criterion with 20 train images on both sides x 7 HAM10000 classes (one sample
    // each) x layer3, layer4; the vascular pattern (never present) and any random criterion
    // drawn below 20 on a side are skipped and named.
    let skipped = report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.as_str().unwrap().contains(" skipped: derm7pt train has"))
        .count();
    assert!((1..=2).contains(&skipped), "{notes}");
    assert_eq!(tcav.len(), (7 - skipped) * 7 * 2);
    assert_eq!(tcav[0]["class_name"], "mel");
    assert!(tcav.iter().any(|t| t["concept"] == "blue_whitish_veil"
        && t["layer"] == "layer4"
        && t["cav_separable"] == true));
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("atypical vascular pattern skipped"),
        "{notes}"
    );
    assert!(notes.contains("Concept bank built"), "{notes}");
    let html = std::fs::read_to_string(audit_dir.join("audit.html")).unwrap();
    assert!(html.contains("CAV held-out accuracy"));

    // `triscope concepts` reads the bank the audit cached, and an image.
    let out = tmp.path().join("concepts");
    let image = data.join("images/test/000.png");
    let o = triscope(
        &[
            "concepts",
            image.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--runs",
            "3",
            "--class",
            "mel",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("concept bank from the cache"), "{stdout}");
    assert!(stdout.contains("not a diagnosis"), "{stdout}");
    let readouts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("readouts.json")).unwrap()).unwrap();
    assert_eq!(readouts[0]["class_name"], "mel");
    assert_eq!(
        readouts[0]["layers"][0]["readings"]
            .as_array()
            .unwrap()
            .len(),
        7 - skipped
    );
    assert!(out.join("concepts.json").is_file());
}

/// The fixture copied, then `edit` applied to its labels.csv text.
fn broken_copy(root: &Path, edit: impl Fn(&str) -> String) {
    let src = fixture("derm7pt_tiny");
    for entry in std::fs::read_dir(src.join("images")).unwrap() {
        let dir = entry.unwrap().path();
        let to = root.join("images").join(dir.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let labels = std::fs::read_to_string(src.join("labels.csv")).unwrap();
    std::fs::write(root.join("labels.csv"), edit(&labels)).unwrap();
}

#[test]
fn bad_derm7pt_folders_are_refused_with_the_file_and_the_problem() {
    let tmp = TempDir::new("d7-bad");
    let err = |root: &Path| ChecklistTable::open(root).unwrap_err().to_string();

    // A criterion column missing.
    let no_column = tmp.path().join("no-column");
    broken_copy(&no_column, |t| t.replace(",streaks,", ",stripes,"));
    let e = err(&no_column);
    assert!(
        e.contains("no 'streaks' column") && e.contains("irregular_streaks"),
        "{e}"
    );
    assert!(e.contains("labels.csv"), "{e}");

    // A value derm7pt does not use.
    let unknown = tmp.path().join("unknown");
    broken_copy(&unknown, |t| t.replacen("dotted,train", "spotted,train", 1));
    let e = err(&unknown);
    assert!(
        e.contains("line 2") && e.contains("'spotted'") && e.contains("dotted"),
        "{e}"
    );

    // A path out of the folder.
    let escape = tmp.path().join("escape");
    broken_copy(&escape, |t| {
        t.replacen("Fgl/Fgl006.jpg", "../Fgl006.jpg", 1)
    });
    assert!(err(&escape).contains("not a file under images/"));

    // Too few images with a criterion: skipped, named with the counts; none left: an error.
    let classifier = embedded();
    let cancel = AtomicBool::new(false);
    let cache = tmp.path().join("cache");
    let options = BankOptions {
        min_images: 6,
        per_set: 6,
        runs: 2,
        ..BankOptions::default()
    };
    // The fixture's train split has 3 images: no criterion reaches 6 on each side.
    let e = load_or_build(
        &classifier,
        &fixture("derm7pt_tiny"),
        &options,
        Some(&cache),
        &mut |_| {},
        &cancel,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no seven-point criterion can be learned"), "{e}");
    assert!(
        e.contains("irregular streaks skipped: derm7pt train has 2 image(s) with it and 1 without"),
        "{e}"
    );
    assert!(e.contains("at least 6 on each side"), "{e}");

    // An image that does not decode: named, and no bank is built.
    let corrupt = tmp.path().join("corrupt");
    synthetic_derm7pt(&corrupt, [("train", 48), ("val", 6), ("test", 6)]);
    std::fs::write(corrupt.join("images/train/003.png"), b"not a png").unwrap();
    let e = load_or_build(
        &classifier,
        &corrupt,
        &small_options(),
        Some(&cache),
        &mut |_| {},
        &cancel,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("train/003.png") && e.contains("cannot be used"),
        "{e}"
    );
    let o = triscope(
        &[
            "concepts",
            "--data",
            corrupt.to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("003.png"), "{stderr}");
}
