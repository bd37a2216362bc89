//! The model worker behind the app: answers in plain data, cancels superseded attacks,
//! reports bad input as an event instead of dying.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use triscope::attack::AttackMethod;
use triscope::explain::TargetClass;
use triscope::explain::attribution::Method;
use triscope::model::LayerId;
use triscope::model::device::ComputeDevice;
use triscope::workbench::{AttackRequest, Job, WorkerEvent, WorkerHandle};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/samples/ham10000")
        .join(name)
}

/// Events until `stop` matches one (returned last), or a timeout.
fn collect_until(w: &WorkerHandle, stop: impl Fn(&WorkerEvent) -> bool) -> Vec<WorkerEvent> {
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = w.wait_event(Duration::from_millis(200)) {
            let last = stop(&e);
            seen.push(e);
            if last {
                return seen;
            }
        }
    }
    panic!("timed out; events so far: {}", seen.len());
}

fn pgd(steps: usize, eps_linf_x255: f32) -> AttackRequest {
    let mut r = AttackRequest::new(AttackMethod::Pgd, eps_linf_x255 / 255.0, steps);
    r.config.alpha = 1.0 / 255.0;
    r
}

fn ready_worker() -> WorkerHandle {
    let w = WorkerHandle::spawn(ComputeDevice::cpu(), Box::new(|| {})).expect("worker");
    w.submit(Job::LoadModel { path: None });
    let analyze = w.submit(Job::Analyze {
        path: sample("ISIC_0024410.jpg"),
        target: TargetClass::Predicted,
        top_k: 4,
        method: Method::GradCam,
        method_layer: LayerId::Layer4,
        window: None,
    });
    let events = collect_until(&w, |e| e.request() == analyze);
    match events.last() {
        Some(WorkerEvent::Analysis(a)) => {
            assert_eq!(a.layers.len(), 4);
            let res = triscope::inference::Classifier::load(None, ComputeDevice::cpu())
                .expect("embedded model")
                .config()
                .resolution;
            assert_eq!(a.model_input.width, res, "the embedded model's input");
            assert_eq!(
                a.display.width,
                res.max(150),
                "the display copy keeps the file's 150-px shorter side, or the model's side if larger"
            );
            assert_eq!(a.layers[0].top_maps.len(), 4);
        }
        other => panic!("expected an analysis, got {other:?}"),
    }
    w
}

#[test]
fn newer_attack_cancels_the_running_one() {
    let w = ready_worker();
    let slow = w.submit(Job::Attack(pgd(200, 8.0)));
    // Let it start, then supersede it.
    let first_step = collect_until(&w, |e| matches!(e, WorkerEvent::AttackStep { .. }));
    assert_eq!(first_step.last().map(|e| e.request()), Some(slow));
    let fast = w.submit(Job::Attack(pgd(3, 2.0)));
    let events = collect_until(
        &w,
        |e| matches!(e, WorkerEvent::Attack(r) if r.request == fast),
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Attack(r) if r.request == slow)),
        "the superseded attack must not deliver a result"
    );
    let slow_steps = events
        .iter()
        .filter(|e| matches!(e, WorkerEvent::AttackStep { request, .. } if *request == slow))
        .count();
    assert!(
        slow_steps < 199,
        "the old attack ran on ({slow_steps} more steps)"
    );
    let Some(WorkerEvent::Attack(r)) = events.last() else {
        panic!("no result");
    };
    assert_eq!(r.loss_per_step.len(), 3);
    assert!(r.linf_255 <= 2.0 + 1e-3);
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::AttackStep {
                request,
                step,
                adversarial,
                ..
            } if *request == fast => {
                assert!(adversarial.is_some(), "PGD steps carry the current image");
                Some(*step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3]);
}

#[test]
fn bad_inputs_become_failure_events_and_the_worker_lives_on() {
    let w = ready_worker();
    let dir = std::env::temp_dir().join(format!("triscope-wb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").expect("write");
    let bad = w.submit(Job::Analyze {
        path: broken.clone(),
        target: TargetClass::Predicted,
        top_k: 4,
        method: Method::GradCam,
        method_layer: LayerId::Layer4,
        window: None,
    });
    let events = collect_until(&w, |e| e.request() == bad);
    match events.last() {
        Some(WorkerEvent::Failed { what, message, .. }) => {
            assert!(what.contains("broken.png"), "{what}");
            assert!(message.contains("broken.png"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let missing_model = w.submit(Job::LoadModel {
        path: Some(dir.join("nope.safetensors")),
    });
    let events = collect_until(&w, |e| e.request() == missing_model);
    assert!(matches!(events.last(), Some(WorkerEvent::Failed { .. })));
    // A class the model does not have.
    let bad_class = w.submit(Job::Analyze {
        path: sample("ISIC_0024317.jpg"),
        target: TargetClass::Index(99),
        top_k: 4,
        method: Method::GradCam,
        method_layer: LayerId::Layer4,
        window: None,
    });
    let events = collect_until(&w, |e| e.request() == bad_class);
    assert!(
        matches!(events.last(), Some(WorkerEvent::Failed { message, .. }) if message.contains("99"))
    );
    // Still answering.
    let ok = w.submit(Job::Analyze {
        path: sample("ISIC_0024317.jpg"),
        target: TargetClass::Index(2),
        top_k: 2,
        method: Method::GradCam,
        method_layer: LayerId::Layer4,
        window: None,
    });
    let events = collect_until(&w, |e| e.request() == ok);
    match events.last() {
        Some(WorkerEvent::Analysis(a)) => {
            assert_eq!(a.target_class, 2);
            assert!(a.layers.iter().all(|l| l.gradcam.class_index == 2));
        }
        other => panic!("expected an analysis, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn other_methods_answer_and_a_newer_analysis_cancels_a_slow_one() {
    let w = ready_worker();
    let res = triscope::inference::Classifier::load(None, ComputeDevice::cpu())
        .expect("embedded model")
        .config()
        .resolution;
    // Score-CAM runs one forward per layer4 channel: slow enough to be superseded.
    let slow = w.submit(Job::Analyze {
        path: sample("ISIC_0024410.jpg"),
        target: TargetClass::Predicted,
        top_k: 2,
        method: Method::ScoreCam,
        method_layer: LayerId::Layer4,
        window: None,
    });
    std::thread::sleep(Duration::from_millis(100));
    let fast = w.submit(Job::Analyze {
        path: sample("ISIC_0024410.jpg"),
        target: TargetClass::Predicted,
        top_k: 2,
        method: Method::LayerCam,
        method_layer: LayerId::Layer3,
        window: None,
    });
    let events = collect_until(&w, |e| e.request() == fast);
    assert!(
        !events.iter().any(|e| e.request() == slow),
        "the superseded Score-CAM delivered a result"
    );
    match events.last() {
        Some(WorkerEvent::Analysis(a)) => {
            let m = a.attribution.as_ref().expect("a LayerCAM map");
            assert_eq!(m.method, Method::LayerCam);
            assert_eq!(m.layer, Some(LayerId::Layer3));
            assert_eq!((m.height, m.width), (res, res));
            assert_eq!(m.class_index, a.prediction.class_index);
        }
        other => panic!("expected an analysis, got {other:?}"),
    }
    let ig = w.submit(Job::Analyze {
        path: sample("ISIC_0024317.jpg"),
        target: TargetClass::Index(4),
        top_k: 2,
        method: Method::IntegratedGradients,
        method_layer: LayerId::Layer4,
        window: None,
    });
    let events = collect_until(&w, |e| e.request() == ig);
    match events.last() {
        Some(WorkerEvent::Analysis(a)) => {
            let m = a.attribution.as_ref().expect("an IG map");
            assert_eq!(
                (m.method, m.layer, m.class_index),
                (Method::IntegratedGradients, None, 4)
            );
            assert!(m.map.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        other => panic!("expected an analysis, got {other:?}"),
    }
}

/// A model trained with colour constancy carries it in its file: the CLI, the app's worker and
/// the library predict the same from it, and the same weights without it predict otherwise,
/// so no path can skip or repeat the transform.
#[test]
fn colour_constancy_travels_with_the_model_to_every_path() {
    use triscope::model::config::ColorConstancy;
    let device = ComputeDevice::cpu();
    let dir = std::env::temp_dir().join(format!("triscope-sog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet50_w8_c7.safetensors");
    let mut config = triscope::model::ModelConfig::generic(7, 3);
    config.base_width = 8;
    config.resolution = 128;
    let image = sample("ISIC_0024410.jpg");
    let mut probabilities = Vec::new();
    for cc in [ColorConstancy::ShadesOfGray, ColorConstancy::None] {
        config.color_constancy = cc;
        let model =
            triscope::io::weights::import_state_dict(&fixture, &config, None, &device.device)
                .unwrap();
        let path = dir.join(format!("{cc:?}.safetensors"));
        let meta = triscope::io::checkpoint::CheckpointMetadata::now("colour constancy test", true);
        triscope::io::weights::save_checkpoint(&model, &meta, &path).unwrap();

        let library = triscope::inference::Classifier::load(Some(&path), device.clone()).unwrap();
        assert_eq!(library.config().color_constancy, cc, "the file keeps it");
        let img = library.load_image(&image).unwrap();
        let lib: Vec<f32> = library.predict(&[&img.pixels]).unwrap()[0]
            .scores
            .iter()
            .map(|s| s.probability)
            .collect();

        let out = std::process::Command::new(env!("CARGO_BIN_EXE_triscope"))
            .args(["predict", "--json", "--device", "cpu", "--model"])
            .arg(&path)
            .arg(&image)
            .env("TRISCOPE_LOG", "error")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let cli: Vec<f32> = v[0]["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["probability"].as_f64().unwrap() as f32)
            .collect();

        let w = WorkerHandle::spawn(device.clone(), Box::new(|| {})).unwrap();
        w.submit(Job::LoadModel {
            path: Some(path.clone()),
        });
        let analyze = w.submit(Job::Analyze {
            path: image.clone(),
            target: TargetClass::Predicted,
            top_k: 1,
            method: Method::GradCam,
            method_layer: LayerId::Layer4,
            window: None,
        });
        let app: Vec<f32> = match collect_until(&w, |e| e.request() == analyze).last() {
            Some(WorkerEvent::Analysis(a)) => {
                a.prediction.scores.iter().map(|s| s.probability).collect()
            }
            other => panic!("expected an analysis, got {other:?}"),
        };
        for (name, got) in [("CLI", &cli), ("app", &app)] {
            let d = lib
                .iter()
                .zip(got)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(d < 1e-5, "{cc:?}: {name} and library differ by {d}");
        }
        probabilities.push(lib);
    }
    let d = probabilities[0]
        .iter()
        .zip(&probabilities[1])
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(d > 1e-3, "the transform changes the prediction ({d})");
    let _ = std::fs::remove_dir_all(dir);
}

/// The app's FAB-T: a whole run on the worker, step by step, inside the ball.
#[test]
fn fab_t_runs_on_the_worker_within_its_radius() {
    let w = ready_worker();
    let request = AttackRequest::new(AttackMethod::FabT, 4.0 / 255.0, 4);
    let id = w.submit(Job::Attack(request));
    let events = collect_until(
        &w,
        |e| matches!(e, WorkerEvent::Attack(r) if r.request == id),
    );
    let steps = events
        .iter()
        .filter(|e| matches!(e, WorkerEvent::AttackStep { request, .. } if *request == id))
        .count();
    assert!(steps >= 4, "{steps} step events");
    let Some(WorkerEvent::Attack(r)) = events.last() else {
        panic!("no result");
    };
    assert!(r.linf_255 <= 4.0 + 1e-3, "{}", r.linf_255);
}

/// One attack pipeline: `triscope attack` and the app's worker, given the same request, make
/// the same adversarial image (the worker steps through PGD to show each step; the CLI runs it
/// in one go); and one rule for targets, the same for every method on both faces.
#[test]
fn the_cli_and_the_app_make_the_same_adversarial_image_and_follow_one_target_rule() {
    let dir = std::env::temp_dir().join(format!("triscope-one-pipeline-{}", std::process::id()));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_triscope"))
        .arg("attack")
        .arg(sample("ISIC_0024410.jpg"))
        .args([
            "--method", "pgd", "--eps", "4/255", "--alpha", "1/255", "--steps", "3", "--seed", "5",
            "--device", "cpu", "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, cli) =
        triscope::io::npy::decode_f32(&std::fs::read(dir.join("adversarial.npy")).unwrap())
            .unwrap();

    let w = ready_worker();
    let mut request = pgd(3, 4.0);
    request.config.seed = 5;
    let id = w.submit(Job::Attack(request.clone()));
    let events = collect_until(
        &w,
        |e| matches!(e, WorkerEvent::Attack(r) if r.request == id),
    );
    let Some(WorkerEvent::Attack(r)) = events.last() else {
        panic!("no result");
    };
    assert_eq!(r.params, request);
    let cli_rgb = triscope::workbench::RgbImage::from_pixels(&triscope::io::imaging::PixelImage {
        channels: shape[0],
        height: shape[1],
        width: shape[2],
        data: cli,
    });
    assert_eq!(r.adversarial, cli_rgb, "the same request, the same image");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("attack.json")).unwrap()).unwrap();
    assert!((report["explanation_stability"]["ssim"].as_f64().unwrap() - r.cam_ssim).abs() < 1e-9);
    let _ = std::fs::remove_dir_all(&dir);

    // Targets: every method but APGD-T and FAB-T takes one, and the library says so for both.
    let classifier = triscope::inference::Classifier::load(None, ComputeDevice::cpu()).unwrap();
    for m in [
        AttackMethod::Fgsm,
        AttackMethod::Pgd,
        AttackMethod::ApgdCe,
        AttackMethod::ApgdT,
        AttackMethod::Square,
        AttackMethod::FabT,
    ] {
        let mut r = AttackRequest::new(m, 2.0 / 255.0, 2);
        r.target = Some(1);
        let checked = r.validate(&classifier);
        assert_eq!(checked.is_ok(), m.takes_target(), "{m:?}");
        if let Err(e) = checked {
            assert!(e.to_string().contains("chooses its own targets"), "{e}");
        }
    }
}
