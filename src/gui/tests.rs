//! The real app driven headless with egui_kittest, rendered with wgpu (lavapipe in CI), on
//! the CPU backend with the embedded narrow model.
//!
//! Snapshots live in `tests/snapshots`; `UPDATE_SNAPSHOTS=1 cargo test --release` rewrites
//! them after a deliberate UI change (look at the new PNGs before committing them).

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::{Harness, SnapshotOptions};
use triscope::model::LayerId;
use triscope::model::device::ComputeDevice;
use triscope::train::MetricsLine;

use super::app::{AppInit, TriscopeApp};
use super::export::export_view;
use super::state::{Tab, ThemeChoice, UiAction};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples")
}

/// A renderer needs a wgpu adapter: lavapipe (mesa-vulkan-drivers) is enough. CI installs it
/// and sets TRISCOPE_REQUIRE_WGPU=1; elsewhere, with no Vulkan driver, the GUI tests say so and
/// pass without checking.
fn wgpu_available() -> bool {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let probe = PROBE.get_or_init(|| ComputeDevice::wgpu().map(|_| ()).map_err(|e| e.to_string()));
    match probe {
        Ok(()) => true,
        Err(e) if std::env::var_os("TRISCOPE_REQUIRE_WGPU").is_some() => {
            panic!("TRISCOPE_REQUIRE_WGPU is set but there is no wgpu adapter: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipping: no wgpu adapter ({e}); install mesa-vulkan-drivers to run the GUI tests"
            );
            false
        }
    }
}

/// The app once its first sample is explained: where most tests start.
fn explained_harness() -> Harness<'static, TriscopeApp> {
    let mut h = harness();
    wait_until(&mut h, "the first explanation", |a| a.has_analysis());
    h
}

fn harness() -> Harness<'static, TriscopeApp> {
    harness_opening(None)
}

/// The app as `triscope gui PATH` starts it.
fn harness_opening(open: Option<PathBuf>) -> Harness<'static, TriscopeApp> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 820.0))
        .wgpu()
        .build_eframe(|cc| {
            TriscopeApp::new(
                cc,
                AppInit {
                    device: ComputeDevice::cpu(),
                    model: None,
                    samples_dir: samples(),
                    models_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
                    ready_file: None,
                    open: open.clone(),
                    restore_state: false,
                    shared_device: false,
                },
            )
        })
}

/// Step the UI (as frames would) until `done` holds; the worker runs meanwhile.
fn wait_until(
    h: &mut Harness<'static, TriscopeApp>,
    what: &str,
    done: impl Fn(&TriscopeApp) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done(h.state()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; errors: {:?}",
            h.state().errors
        );
        h.step();
        sleep(Duration::from_millis(20));
    }
    h.step();
    assert!(
        h.state().errors.is_empty(),
        "errors: {:?}",
        h.state().errors
    );
}

/// Fixed status text and masked timings so snapshots do not depend on the machine's speed.
fn snapshot(h: &mut Harness<'static, TriscopeApp>, name: &str) {
    h.state_mut().status = "ready".into();
    h.run_steps(3);
    let timed: Vec<egui::Rect> = h
        .query_all_by_label_contains("s/step")
        .map(|n| n.rect())
        .collect();
    for r in timed {
        h.mask(r);
    }
    let options = SnapshotOptions::new().threshold(1.0).max_failed_pixels(400);
    h.snapshot_options(name, &options);
}

#[test]
fn opens_on_a_sample_explained_and_switches_layer_and_theme() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    let app = h.state();
    assert!(app.uses_shader(), "the overlay runs in the WGSL shader");
    let first = app.current_image.clone().expect("an image is open");
    assert!(first.ends_with("ham10000/ISIC_0024470.jpg"), "{first:?}");
    let prediction = app.predictions.clean.clone().expect("a prediction");
    assert_eq!(prediction.scores.len(), 7);
    h.get_by_label_contains("Grad-CAM of");
    snapshot(&mut h, "explanation_dark");

    // Layer choice: the label and the settings follow, the maps are already computed.
    h.get_by_label("layer2").click();
    h.run_steps(2);
    assert_eq!(h.state().explain.settings.layer, LayerId::Layer2);
    h.get_by_label_contains("at layer2");

    // Another method: the map arrives for it, the label follows.
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::SelectMethod(
            triscope::explain::attribution::Method::IntegratedGradients,
        ));
    wait_until(&mut h, "the Integrated Gradients map", |a| {
        a.explain
            .analysis
            .as_ref()
            .and_then(|x| x.attribution.as_ref())
            .is_some_and(|m| {
                m.method == triscope::explain::attribution::Method::IntegratedGradients
            })
    });
    h.get_by_label_contains("Integrated Gradients of");
    snapshot(&mut h, "explanation_ig_dark");

    // Another sample from the gallery.
    h.get_by_label_contains("ISIC_0024410.jpg").click();
    wait_until(&mut h, "the second analysis", |a| {
        a.explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.path.ends_with("ISIC_0024410.jpg"))
    });

    // Theme switch.
    h.get_by_label("Light theme").click();
    h.run_steps(2);
    assert_eq!(h.state().saved.theme, ThemeChoice::Light);
    h.get_by_label("Dark theme");
    snapshot(&mut h, "explanation_light");

    // The model window shows the config and the training metadata.
    h.get_by_label("Model").click();
    h.run_steps(2);
    let base_width = h.state().model.as_ref().expect("model").config.base_width;
    assert!(
        h.query_all_by_label_contains(&format!("(base width {base_width})"))
            .count()
            >= 1,
        "the architecture row"
    );
    h.get_by_label("akiec, bcc, bkl, df, mel, nv, vasc");
    // The embedded model's card: how it was trained, its test scores, how to measure them.
    h.get_by_label_contains("balanced accuracy");
    // What its out-of-distribution statistics describe.
    h.get_by_label_contains("fitted on 7015 ham10000 training images");
    snapshot(&mut h, "model_window_light");

    // A typed path that does not exist is an error message, not a crash.
    h.state_mut()
        .open_path(PathBuf::from("/nonexistent/lesion.png"));
    h.run_steps(2);
    assert!(h.state().errors.iter().any(|e| e.contains("no such file")));
}

#[test]
fn eps_slider_runs_a_live_attack_and_the_result_arrives() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    h.get_by_label("Attack").click();
    h.run_steps(2);
    assert_eq!(h.state().saved.tab, Tab::Attack);
    // Opening the tab runs the attack at the default eps (2/255).
    wait_until(&mut h, "the first attack", |a| a.attack.result.is_some());

    // Move the eps slider to 6/255: a new attack starts and its result replaces the old.
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "ε (L∞)")
        .set_value_accesskit(6.0);
    h.run_steps(2);
    assert_eq!(h.state().attack.settings.eps_linf_x255, 6.0);
    wait_until(&mut h, "the attack at 6/255", |a| {
        a.attack
            .result
            .as_ref()
            .is_some_and(|r| (r.params.config.eps_linf - 6.0 / 255.0).abs() < 1e-6)
    });
    let r = h.state().attack.result.clone().expect("a result");
    assert_eq!(r.loss_per_step.len(), 10, "one loss per PGD step");
    assert!(
        r.linf_255 <= 6.0 + 1e-3 && r.linf_255 > 1.0,
        "L-inf {}",
        r.linf_255
    );
    assert!((-1.0..=1.0).contains(&r.cam_ssim));
    let adv = h
        .state()
        .predictions
        .adversarial
        .clone()
        .expect("adversarial bars");
    assert_eq!(adv, r.adversarial_prediction);
    h.get_by_label_contains("SSIM");
    snapshot(&mut h, "attack_dark");
    h.get_by_label("Light theme").click();
    snapshot(&mut h, "attack_light");

    // Export writes the view (no dialog: the same function the menu's thread calls).
    let dir = std::env::temp_dir().join(format!("triscope-export-{}", std::process::id()));
    let data = h.state().export_data().expect("something to export");
    let files = export_view(&dir, &data).expect("export");
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    for want in [
        "image.png",
        "overlay.png",
        "heatmap.png",
        "adversarial.png",
        "perturbation.png",
        "adversarial_overlay.png",
        "summary.json",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("json"))
            .expect("valid json");
    assert_eq!(summary["attack"]["params"]["config"]["method"], "pgd");
    let overlay = image::open(dir.join("overlay.png")).expect("png");
    assert_eq!(overlay.width() as usize, data.analysis.display.width);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The view's slide as the menu writes it: a 1920x1080 PNG and its JSON, with `number` among
/// the numbers and `panels` pictures.
fn check_slide(h: &Harness<'static, TriscopeApp>, view: &str, number: &str, panels: usize) {
    let slide = h.state().slide().expect("a slide of this view");
    assert_eq!(slide.view, view);
    assert_eq!(slide.panels.len(), panels, "{:?}", slide.captions);
    let dir = std::env::temp_dir().join(format!("triscope-slide-{}-{view}", std::process::id()));
    let [png, json] =
        triscope::io::plot::write_slide(&dir, &format!("slide_{view}"), &slide).unwrap();
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1920, 1080));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let names: Vec<&str> = v["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[0].as_str().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.contains(number)), "{names:?}");
    assert_eq!(v["captions"].as_array().unwrap().len(), panels);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ε sweep tab: the default list runs on the model thread, starts at the clean prediction
/// with no drift, plots and shows each budget; a click on a budget opens it in the Attack tab
/// and the attack there makes the same adversarial image; a bad list disables the button.
#[test]
fn eps_sweep_plots_every_budget_and_a_click_opens_it_in_the_attack_tab() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    h.get_by_label("ε sweep").click();
    h.run_steps(2);
    assert_eq!(h.state().saved.tab, Tab::Sweep);
    h.get_by_label("Run sweep").click();
    h.run_steps(1);
    assert!(h.state().sweep.running);
    wait_until(&mut h, "the sweep", |a| a.sweep.result.is_some());
    let r = h.state().sweep.result.clone().expect("a sweep");
    let eps: Vec<f32> = r.sweep.points.iter().map(|p| p.eps_linf_x255).collect();
    assert_eq!(eps.len(), 6);
    for (e, want) in eps.iter().zip([0.0, 0.5, 1.0, 2.0, 4.0, 8.0]) {
        assert!((e - want).abs() < 1e-4, "{eps:?}");
    }
    let clean = h.state().predictions.clean.clone().expect("clean bars");
    let first = &r.sweep.points[0];
    assert_eq!(first.prediction.class_index, clean.class_index);
    assert!((first.prediction.confidence - clean.confidence).abs() < 1e-4);
    assert_eq!(first.drift, 0.0);
    assert_eq!(r.adversarial[0], r.clean, "ε = 0 leaves the image as it is");
    // The bundled sample's folder labels it: the sweep tracks that class.
    assert_eq!(
        (
            r.sweep.true_class.as_str(),
            r.sweep.true_class_source.as_str()
        ),
        ("akiec", "label")
    );
    assert!(
        h.query_by_label_contains("at any ε up to 8/255").is_some()
            || h.query_by_label_contains("first fools the model").is_some()
    );
    snapshot(&mut h, "sweep_dark");
    check_slide(&h, "sweep", "ε 8/255", 1);

    // The 4/255 budget in the Attack tab: the same attack, step and seed.
    h.state_mut()
        .handle_action_for_test(UiAction::ShowSweepPoint(4));
    h.run_steps(1);
    assert_eq!(h.state().saved.tab, Tab::Attack);
    wait_until(&mut h, "the attack at 4/255", |a| {
        a.attack
            .result
            .as_ref()
            .is_some_and(|r| (r.params.config.eps_linf - 4.0 / 255.0).abs() < 1e-6)
    });
    let attack = h.state().attack.result.clone().expect("an attack");
    assert_eq!(
        attack.adversarial, r.adversarial[4],
        "the Attack tab reproduces the sweep's image"
    );
    check_slide(&h, "attack", "Grad-CAM SSIM", 5);

    // A list with a value above 1: said, and nothing runs.
    h.get_by_label("ε sweep").click();
    h.run_steps(1);
    h.state_mut().sweep.settings.eps_list = "0,2,4".into();
    h.run_steps(2);
    h.get_by_label_contains("end the list with /255");
    assert!(h.get_by_label("Run sweep").accesskit_node().is_disabled());
}

/// The compare tab: the clean model beside the robust default on the same image, each on its
/// own thread; B explains A's class, the agreement is the library's on the two maps; "Attack
/// both" sends one request to both; a model of other classes is refused by name.
#[test]
fn compare_view_puts_two_models_side_by_side_and_attacks_both() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    check_slide(&h, "explanation", "explained class", 2);
    h.get_by_label("Compare").click();
    h.run_steps(2);
    assert_eq!(h.state().saved.tab, Tab::Compare);
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    h.state_mut().handle_action_for_test(UiAction::CompareWith(
        models.join("ham10000_w32_clean_ls.safetensors"),
    ));
    wait_until(&mut h, "model B's map", |a| {
        a.compare.clean_agreement.is_some()
    });
    let (a, b) = {
        let c = &h.state().compare;
        (
            c.analysis_a().cloned().unwrap(),
            c.analysis_b().cloned().unwrap(),
        )
    };
    assert_eq!(a.path, b.path);
    assert_eq!(b.target_class, a.target_class, "B explains A's class");
    let cam = |x: &triscope::workbench::Analysis| {
        x.layers
            .iter()
            .find(|l| l.layer == LayerId::Layer4)
            .unwrap()
            .gradcam
            .clone()
    };
    let (ma, mb) = (cam(&a), cam(&b));
    let want = triscope::explain::quality::agreement(
        &ma.map,
        (ma.height, ma.width),
        &mb.map,
        (mb.height, mb.width),
    );
    assert_eq!(h.state().compare.clean_agreement, Some(want));
    assert_ne!(ma.map, mb.map, "two models, two maps");
    h.get_by_label_contains("Map agreement on the clean image");

    h.get_by_label("Attack both").click();
    h.run_steps(1);
    wait_until(&mut h, "both attacks", |a| {
        a.compare.adversarial_agreement.is_some()
    });
    let attack_a = h.state().attack.result.clone().unwrap();
    let attack_b = h.state().compare.attack_b().cloned().unwrap();
    assert_eq!(attack_a.params, attack_b.params, "one request for both");
    snapshot(&mut h, "compare_dark");
    check_slide(&h, "compare", "map agreement, adversarial", 4);

    // The ε sweep tab sweeps model B beside A with the same request, B's curves dashed.
    h.get_by_label("ε sweep").click();
    h.run_steps(2);
    h.state_mut().sweep.settings.eps_list = "0,2,8/255".into();
    h.run_steps(1);
    assert_eq!(
        h.state().sweep.b_name.as_deref(),
        Some("ham10000_w32_clean_ls")
    );
    h.get_by_label("Run sweep").click();
    h.run_steps(1);
    wait_until(&mut h, "both sweeps", |a| {
        a.sweep.result.is_some() && a.sweep.result_b.is_some()
    });
    let (sa, sb) = {
        let s = &h.state().sweep;
        (s.result.clone().unwrap(), s.result_b.clone().unwrap())
    };
    let eps = |r: &triscope::workbench::SweepResult| -> Vec<f32> {
        r.sweep.points.iter().map(|p| p.eps_linf_x255).collect()
    };
    assert_eq!(eps(&sa), eps(&sb));
    assert_eq!(sa.sweep.true_class, sb.sweep.true_class);
    assert!(
        sb.sweep.model.contains("ham10000_w32_clean_ls"),
        "{}",
        sb.sweep.model
    );
    assert_ne!(sa.sweep.points[2].cam.ssim, sb.sweep.points[2].cam.ssim);
    snapshot(&mut h, "sweep_compare_dark");
    check_slide(&h, "sweep", "ε 8/255", 2);
    h.get_by_label("Compare").click();
    h.run_steps(1);

    h.state_mut().handle_action_for_test(UiAction::CompareWith(
        models.join("kermany_cxr_default.safetensors"),
    ));
    wait_until(&mut h, "the refusal", |a| a.compare.refusal.is_some());
    h.get_by_label_contains("do not share their classes");
}

#[test]
fn layers_panel_shows_every_stage() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    h.get_by_label("Light theme").click();
    h.get_by_label("Layers").click();
    h.run_steps(2);
    let a = h.state().layers.analysis.clone().expect("analysis");
    assert_eq!(a.layers.len(), 4);
    let w = h.state().model.as_ref().expect("model").config.base_width;
    for (view, want_channels) in a.layers.iter().zip([4 * w, 8 * w, 16 * w, 32 * w]) {
        // Bottleneck outputs: 4w, 8w, 16w, 32w channels for base width w.
        assert_eq!(view.channels, want_channels);
        assert_eq!(view.top_maps.len(), 8);
        let res = h.state().model.as_ref().expect("model").config.resolution;
        assert_eq!(view.gradcam.map.len(), res * res);
    }
    h.get_by_label_contains("layer1 (3 blocks)");
    h.get_by_label_contains("class-level evidence");
    // Clicking a stage of the strip selects that layer for the explanation.
    h.get_by_label_contains("layer3 (6 blocks)").click();
    h.run_steps(2);
    assert_eq!(h.state().explain.settings.layer, LayerId::Layer3);
    snapshot(&mut h, "layers_light");
    h.get_by_label("Dark theme").click();
    snapshot(&mut h, "layers_dark");
}

/// The training panel's curves and status as `tests/fixtures/train_tiny_metrics.jsonl`, the
/// metrics log of a run of `tests/fixtures/train_tiny.yaml`, has them.
fn show_committed_run(app: &mut TriscopeApp) {
    let log = std::fs::read_to_string("tests/fixtures/train_tiny_metrics.jsonl").unwrap();
    let t = &mut app.training;
    t.steps.clear();
    t.epochs.clear();
    for line in log.lines() {
        match serde_json::from_str(line).unwrap() {
            MetricsLine::Step(s) => t.steps.push(s),
            MetricsLine::Epoch(e) => t.epochs.push(e),
        }
    }
    t.status = format!(
        "finished: {} epochs, {} steps (the committed log)",
        t.epochs.len(),
        t.steps.len()
    );
}

#[test]
fn training_panel_trains_a_tiny_run_live_and_loads_its_checkpoint() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    let runs = std::env::temp_dir().join(format!("triscope-gui-train-{}", std::process::id()));
    h.state_mut().training.form.runs_dir = runs.display().to_string();
    h.state_mut().training.form.config_path = "tests/fixtures/train_tiny.yaml".into();
    h.get_by_label("Training").click();
    h.run_steps(2);
    h.get_by_label("Read it into the form").click();
    h.run_steps(2);
    let form = h.state().training.form.clone();
    assert_eq!((form.base_width, form.resolution, form.epochs), (4, 32, 2));
    h.get_by_label("Start training").click();
    wait_until(&mut h, "the run to finish", |a| {
        !a.training.is_running() && a.training.epochs.len() == 2
    });
    let t = &h.state().training;
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert!(!t.steps.is_empty(), "step events reached the panel");
    assert!(t.epochs.iter().all(|e| e.val_robust_acc.is_some()));
    // The config keeps a weight average: the raw weights are validated beside it and plotted.
    assert!(t.epochs.iter().all(|e| e.raw_val_balanced_acc.is_some()));
    assert!(t.status.starts_with("finished: 2 epochs"), "{}", t.status);
    // The snapshots draw a committed log of this config (`triscope train --config
    // tests/fixtures/train_tiny.yaml`), not this run's: the tiny diverging run amplifies the
    // last bits in which CPUs' matrix kernels differ, so its curves depend on the machine.
    show_committed_run(h.state_mut());
    snapshot(&mut h, "training_dark");
    h.get_by_label("Light theme").click();
    snapshot(&mut h, "training_light");

    let checkpoint = h
        .state()
        .training
        .newest_checkpoint
        .clone()
        .expect("a checkpoint");
    h.get_by_label("Load the newest checkpoint into the workbench")
        .click();
    wait_until(&mut h, "the trained model and its analysis", |a| {
        a.model.as_ref().is_some_and(|m| m.config.resolution == 32)
            && a.explain
                .analysis
                .as_ref()
                .is_some_and(|x| x.model_input.width == 32)
    });
    let m = h.state().model.clone().expect("model");
    assert_eq!(m.source, checkpoint.display().to_string());
    assert_eq!(
        m.config.class_names,
        vec!["mel".to_string(), "nv".to_string()]
    );
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn a_path_from_the_command_line_opens_instead_of_a_sample() {
    if !wgpu_available() {
        return;
    }
    // A JPEG Lossless chest X-ray (12 of 16 bits) given as `triscope gui FILE`.
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/jpeg_lossless_sv1.dcm");
    let mut h = harness_opening(Some(file.clone()));
    wait_until(&mut h, "the DICOM analysis", |a| a.has_analysis());
    let analysis = h.state().explain.analysis.clone().expect("analysis");
    assert_eq!(analysis.path, file, "a sample was analysed instead");
    assert_eq!(h.state().current_image.as_ref(), Some(&file));
    h.get_by_label_contains("DICOM MONOCHROME2, 12 of 16 bits");
    h.get_by_label("Window:");
    // A chest X-ray on the embedded dermoscopy model: the prediction panel says so.
    h.get_by_label_contains("trained on colour dermoscopy photographs");
}

#[test]
fn dicom_window_sliders_reanalyse_and_the_export_holds_no_patient_identity() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom");
    let file = fixtures.join("patient_identity.dcm");
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::OpenImage(file.clone()));
    wait_until(&mut h, "the DICOM analysis", |a| {
        a.explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.path == file && x.dicom.is_some())
    });
    // The sliders show the applied (min-max) window; no window before, so none is asked.
    h.get_by_label_contains("DICOM MONOCHROME2, 8 of 8 bits");
    h.get_by_label("Window:");
    h.get_by_label("Min-max");
    let before = h.state().explain.analysis.clone().expect("analysis");
    let info = before.dicom.clone().expect("dicom info");
    assert_eq!(
        info.window_source,
        Some(triscope::io::dicom::WindowSource::MinMax)
    );
    assert_eq!(h.state().explain.window, info.window);
    // A narrow window re-runs the analysis through the worker with that window.
    let narrow = triscope::io::dicom::Window {
        center: 100.0,
        width: 40.0,
    };
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::DicomWindow(Some(narrow)));
    wait_until(&mut h, "the re-windowed analysis", |a| {
        a.explain
            .analysis
            .as_ref()
            .and_then(|x| x.dicom.as_ref())
            .is_some_and(|d| d.window == Some(narrow))
    });
    let after = h.state().explain.analysis.clone().expect("analysis");
    assert_eq!(
        after.dicom.as_ref().and_then(|d| d.window_source),
        Some(triscope::io::dicom::WindowSource::User)
    );
    assert_ne!(
        after.display.rgb, before.display.rgb,
        "the window changes the pixels"
    );
    assert_eq!(h.state().explain.window, Some(narrow));
    // Export: no identifying attribute in any file.
    let dir = std::env::temp_dir().join(format!("triscope-dicom-export-{}", std::process::id()));
    let data = h.state().export_data().expect("something to export");
    let files = export_view(&dir, &data).expect("export");
    let summary = std::fs::read_to_string(dir.join("summary.json")).expect("summary");
    assert!(
        summary.contains("MONOCHROME2"),
        "the DICOM info is exported"
    );
    let identity: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("fake_identity.json")).expect("identity"),
    )
    .expect("json");
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).expect("read")).to_string();
        for v in identity.as_object().expect("object").values() {
            let secret = v.as_str().expect("string");
            assert!(!text.contains(secret), "{} holds {secret}", f.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_chest_x_ray_under_the_dermoscopy_model_is_flagged_as_unlike_its_training_data() {
    if !wgpu_available() {
        return;
    }
    let mut h = harness_opening(Some(samples().join("nih-cxr14/00000072_000.png")));
    wait_until(&mut h, "the chest sample's analysis", |a| {
        a.explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.path.to_string_lossy().contains("00000072_000"))
    });
    let a = h.state().explain.analysis.clone().expect("analysis");
    assert!(
        a.out_of_distribution.is_some_and(|o| o.flag),
        "{:?}",
        a.out_of_distribution
    );
    h.get_by_label_contains("Unlike this model's training data");
    // The chest models are offered in one click, the one trained on the sample's dataset
    // first; the dermoscopy ones are not.
    let offered: Vec<String> = h
        .state()
        .predictions
        .offers
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(
        offered,
        ["nih_cxr14_demo", "kermany_cxr_default", "tb_cxr_default"]
    );
    snapshot(&mut h, "out_of_distribution_dark");
    h.get_by_label("tb_cxr_default").click();
    wait_until(&mut h, "the tuberculosis model on the same image", |a| {
        a.model.as_ref().is_some_and(|m| {
            m.file
                .as_ref()
                .is_some_and(|f| f.ends_with("tb_cxr_default.safetensors"))
        }) && a.explain.analysis.as_ref().is_some_and(|x| {
            x.path.to_string_lossy().contains("00000072_000") && x.prediction.scores.len() == 2
        })
    });
    assert!(h.state().predictions.offers.is_empty());
    assert!(h.state().predictions.input_warning.is_none());
}

#[test]
fn a_bundled_chest_sample_opens_with_a_chest_model_and_a_skin_sample_with_the_default() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    let nih = samples().join("nih-cxr14/00000193_019.png");
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::OpenImage(nih.clone()));
    wait_until(&mut h, "the NIH sample under the NIH model", |a| {
        a.model
            .as_ref()
            .is_some_and(|m| m.metadata.dataset.as_deref() == Some("nih-cxr14"))
            && a.explain.analysis.as_ref().is_some_and(|x| x.path == nih)
    });
    assert!(h.state().predictions.input_warning.is_none());
    let skin = samples().join("ham10000/ISIC_0024410.jpg");
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::OpenImage(skin.clone()));
    wait_until(&mut h, "the skin sample under a dermoscopy model", |a| {
        a.model
            .as_ref()
            .is_some_and(|m| m.metadata.dataset.as_deref() == Some("ham10000"))
            && a.explain.analysis.as_ref().is_some_and(|x| x.path == skin)
    });
    let model = h.state().model.clone().expect("model");
    assert!(
        model
            .file
            .as_ref()
            .is_some_and(|f| f.ends_with("ham10000_default.safetensors")),
        "{:?}",
        model.file
    );
}

#[test]
fn bundled_chest_xray_model_loads_from_the_menu_and_explains_a_grey_image() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    h.get_by_label("File").click();
    h.run_steps(2);
    h.get_by_label("Bundled models").click();
    h.run_steps(2);
    h.get_by_label("kermany_cxr_default.safetensors").click();
    wait_until(&mut h, "the chest X-ray model and its analysis", |a| {
        a.model.as_ref().is_some_and(|m| m.config.in_channels == 1)
            && a.explain.analysis.as_ref().is_some_and(|x| {
                x.prediction.scores.len() == 2 && x.path.to_string_lossy().contains("nih-cxr14")
            })
    });
    let a = h.state().explain.analysis.clone().expect("analysis");
    // A grey model shows the image grey: every displayed pixel has r == g == b.
    assert!(
        a.display
            .rgb
            .chunks(3)
            .all(|p| p[0] == p[1] && p[1] == p[2])
    );
    assert_eq!(a.model_input.width, 224);
    // Both classes have their bar in the Prediction panel.
    for class in ["normal", "pneumonia"] {
        assert!(h.query_all_by_label_contains(class).count() >= 1, "{class}");
    }
    snapshot(&mut h, "chest_xray_dark");
}

#[test]
fn frames_stay_cheap_while_an_attack_and_a_training_run_compute() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    let runs = std::env::temp_dir().join(format!("triscope-gui-load-{}", std::process::id()));
    {
        let app = h.state_mut();
        app.training.form.runs_dir = runs.display().to_string();
        app.training.form.config_path = "tests/fixtures/train_tiny.yaml".into();
        app.training.load_config_into_form();
        app.training.form.epochs = 4;
        app.training.start();
        app.saved.tab = Tab::Attack;
        app.attack.settings.steps = 100;
        app.run_attack();
    }
    // Warm-up frames build textures and fonts once; measure the frames after them.
    h.run_steps(5);
    h.state_mut().max_frame_ms = 0.0;
    let frames_before = h.state().frames;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut busy_frames = 0;
    while (h.state().training.is_running() || h.state().attack.running) && Instant::now() < deadline
    {
        h.step();
        busy_frames += 1;
        sleep(Duration::from_millis(5));
    }
    assert!(
        busy_frames >= 20,
        "only {busy_frames} frames while computing"
    );
    assert!(h.state().frames - frames_before >= busy_frames);
    let worst = h.state().max_frame_ms;
    assert!(
        worst < 16.0,
        "a frame spent {worst:.1} ms of UI-thread CPU while the workers computed"
    );
    eprintln!(
        "{busy_frames} frames while computing; most UI-thread CPU in one frame: {worst:.2} ms"
    );
    assert!(h.state().attack.result.is_some(), "the attack finished");
    assert_eq!(h.state().training.epochs.len(), 4, "the run finished");
    let _ = std::fs::remove_dir_all(&runs);
}

/// A small but complete report folder: numbers, a warning and one figure.
fn write_report(dir: &Path) {
    use triscope::audit::{AuditReport, Figure, summarise};
    use triscope::explain::attribution::Method;
    std::fs::create_dir_all(dir).unwrap();
    let names: Vec<String> = ["akiec", "bcc", "nv"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let chart = triscope::io::plot::render_bar_chart(
        "Recall per class",
        "recall",
        &names,
        &[
            ("clean".into(), vec![0.6, 0.4, 0.8]),
            ("pgd10".into(), vec![0.3, 0.1, 0.7]),
        ],
        1.0,
        700,
        360,
    )
    .unwrap();
    chart.save(dir.join("per_class_robust.png")).unwrap();
    let report = AuditReport {
        model: "test model".into(),
        model_description: "a report written by the GUI test".into(),
        dataset: "mini".into(),
        split: "test".into(),
        device: "CPU".into(),
        created_unix_secs: 0,
        evaluation: None,
        explanation: summarise(&[], Method::GradCam, Some(LayerId::Layer4)),
        samples: Vec::new(),
        sanity: Vec::new(),
        tcav: Vec::new(),
        figures: vec![Figure {
            title: "Per-class robust accuracy".into(),
            file: "per_class_robust.png".into(),
            caption: "Recall of each class, clean and under PGD-10.".into(),
        }],
        warnings: vec!["PGD-20 is weaker than PGD-10: check the attack".into()],
        notes: vec!["Evaluation skipped in this test report.".into()],
        elapsed_secs: 1.0,
    };
    std::fs::write(
        dir.join("audit.json"),
        serde_json::to_string(&report).unwrap(),
    )
    .unwrap();
}

#[test]
fn an_audit_folder_opens_in_the_report_window_with_its_figures() {
    if !wgpu_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("triscope-gui-report-{}", std::process::id()));
    write_report(&dir);
    let mut h = explained_harness();
    h.state_mut().saved.theme = ThemeChoice::Light;
    h.state_mut().open_path(dir.clone());
    wait_until(&mut h, "the report", |a| a.report.loaded.is_some());
    assert_eq!(h.state().report.figure_count(), 1);
    assert!(h.state().report.open);
    h.get_by_label_contains("PGD-20 is weaker");
    h.get_by_label("Per-class robust accuracy");
    // The folder name holds the process id: mask it.
    let path_label: Vec<egui::Rect> = h
        .query_all_by_label_contains("triscope-gui-report")
        .map(|n| n.rect())
        .collect();
    for r in path_label {
        h.mask(r);
    }
    snapshot(&mut h, "audit_report_light");
    // A folder without a report is a gallery folder, and a broken report says why.
    std::fs::write(dir.join("audit.json"), "{not json").unwrap();
    h.state_mut().open_path(dir.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.state().errors.is_empty() {
        assert!(Instant::now() < deadline, "no error for a broken report");
        h.step();
        sleep(Duration::from_millis(20));
    }
    assert!(
        h.state().errors[0].contains("is not a Triscope audit report"),
        "{:?}",
        h.state().errors
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pixels that differ between two renders of the same size.
fn pixels_differing(a: &image::RgbaImage, b: &image::RgbaImage) -> usize {
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
}

/// A HAM10000-layout dataset at `root` (images, masks, labels.csv, all in the test split)
/// from bundled samples renamed: (sample, new image id, dx).
fn write_ham_dataset(root: &Path, images: &[(&str, &str, &str)]) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("masks")).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ham_masks");
    let mut labels = String::from("image_id,lesion_id,dx,split\n");
    for (k, (sample, id, dx)) in images.iter().enumerate() {
        std::fs::copy(
            samples().join(format!("ham10000/{sample}.jpg")),
            root.join(format!("images/{id}.jpg")),
        )
        .unwrap();
        std::fs::copy(
            fixtures.join(format!("{sample}.png")),
            root.join(format!("masks/{id}.png")),
        )
        .unwrap();
        labels.push_str(&format!("{id},HAM_{k},{dx},test\n"));
    }
    std::fs::write(root.join("labels.csv"), labels).unwrap();
}

#[test]
fn audit_tab_audits_a_tiny_dataset_opens_the_report_and_cancels() {
    if !wgpu_available() {
        return;
    }
    // A fixed folder (not the process id): the form shows it in the snapshot.
    let root = std::env::temp_dir().join("triscope-gui-audit-data");
    write_ham_dataset(
        &root,
        &[
            ("ISIC_0024370", "ISIC_9100001", "vasc"),
            ("ISIC_0024410", "ISIC_9100002", "mel"),
            ("ISIC_0024470", "ISIC_9100003", "nv"),
            ("ISIC_0024317", "ISIC_9100004", "bcc"),
        ],
    );
    let reports = std::env::temp_dir().join("triscope-gui-audit-reports");
    let _ = std::fs::remove_dir_all(&reports);
    let mut h = explained_harness();
    h.get_by_label("Audit").click();
    h.run_steps(2);
    assert_eq!(h.state().saved.tab, Tab::Audit);
    {
        let form = &mut h.state_mut().audit.form;
        form.data = root.display().to_string();
        form.images = 4;
        form.explain_samples = 2;
        form.tcav = false;
        form.reports_dir = reports.display().to_string();
    }
    snapshot(&mut h, "audit_tab_dark");

    h.get_by_label("Run the audit").click();
    h.run_steps(1);
    assert!(h.state().audit.is_running());
    // Progress arrives while it runs (the report stage is the last).
    let stages = std::cell::RefCell::new(Vec::new());
    wait_until(&mut h, "the audit's report in the report window", |a| {
        if let Some(p) = a.audit.progress
            && stages.borrow().last() != Some(&p.stage)
        {
            stages.borrow_mut().push(p.stage);
        }
        a.report.loaded.is_some()
    });
    assert!(
        stages
            .borrow()
            .contains(&triscope::audit::AuditStage::Explanation),
        "progress seen: {:?}",
        stages.borrow()
    );
    let app = h.state();
    assert!(!app.audit.is_running());
    assert!(app.report.open, "the report window opened by itself");
    let (report, _) = app.report.loaded.as_ref().expect("report");
    let ev = report
        .evaluation
        .as_ref()
        .expect("the labels fit: evaluated");
    assert_eq!(ev.n, 4);
    assert!(ev.result("pgd10").is_some() && ev.result("fgsm").is_some());
    assert_eq!(report.samples.len(), 2);
    // The masks were found: every explained image is localised against its lesion.
    assert!(report.samples.iter().all(|s| s.localisation.len() == 1));
    assert_eq!(report.sanity.len(), 4, "2 images x (Grad-CAM, saliency)");
    assert!(report.tcav.is_empty());
    let out = app.audit.last_report.clone().expect("the report folder");
    assert!(out.starts_with(&reports));
    assert!(out.join("audit.html").is_file() && out.join("audit.json").is_file());

    // A second audit cancelled at once ends without a report.
    h.state_mut().report.open = false;
    h.run_steps(2);
    h.get_by_label("Run the audit").click();
    h.run_steps(2);
    h.get_by_label("Cancel").click();
    wait_until(&mut h, "the cancelled audit", |a| !a.audit.is_running());
    assert_eq!(h.state().audit.status, "audit cancelled");
    assert!(!h.state().report.open);
    let folders = std::fs::read_dir(&reports).unwrap().count();
    let reports_written = std::fs::read_dir(&reports)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("audit.json").is_file())
        .count();
    assert_eq!(reports_written, 1, "{folders} folders, one report");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&reports);
}

#[test]
fn ground_truth_lesion_outline_follows_the_view_and_the_toggle_hides_it() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    // ISIC_0024324 (bkl): an irregular lesion clear of the borders, easy to check by eye.
    h.get_by_label_contains("ISIC_0024324.jpg").click();
    wait_until(&mut h, "the bkl sample", |a| {
        a.explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.path.ends_with("ISIC_0024324.jpg"))
    });
    let a = h.state().explain.analysis.clone().expect("analysis");
    let gt = a.ground_truth.as_ref().expect("the sample's ground truth");
    assert_eq!(gt.labels, ["bkl"]);
    assert!(
        gt.mask_region().is_some(),
        "the mask beside the sample is found"
    );
    h.get_by_label("lesion mask (HAM10000)");
    h.get_by_label("label: bkl");
    assert!(h.state().explain.settings.show_ground_truth);
    assert_eq!(h.state().explain.ground_truth_shapes, 1);
    snapshot(&mut h, "ground_truth_ham_dark");
    let with_outline = h.render().expect("render");

    // Zoomed and panned, heatmap off: the outline stays on the lesion's edge in the image.
    h.state_mut().explain.zoom = 2.0;
    h.state_mut().explain.center = [0.45, 0.5];
    h.state_mut().explain.settings.show_heatmap = false;
    h.run_steps(2);
    snapshot(&mut h, "ground_truth_ham_zoom_dark");
    h.state_mut().explain.zoom = 1.0;
    h.state_mut().explain.center = [0.5, 0.5];
    h.state_mut().explain.settings.show_heatmap = true;
    h.run_steps(2);

    // The toggle hides it (and is remembered with the other explanation settings).
    h.get_by_label("Ground truth").click();
    h.run_steps(3);
    assert!(!h.state().explain.settings.show_ground_truth);
    assert_eq!(h.state().explain.ground_truth_shapes, 0);
    let without = h.render().expect("render");
    assert!(
        pixels_differing(&with_outline, &without) > 200,
        "the outline was visible and is gone"
    );
    h.get_by_label("Ground truth").click();
    h.run_steps(2);
    assert_eq!(h.state().explain.ground_truth_shapes, 1);

    // A dataset folder (HAM10000 layout) opened as a folder: the gallery shows each image's
    // label, and the analysis finds the mask in ROOT/masks.
    let root = std::env::temp_dir().join(format!("triscope-gui-dataset-{}", std::process::id()));
    // Renamed copies of two samples, so their gallery rows differ from the samples' rows.
    write_ham_dataset(
        &root,
        &[
            ("ISIC_0024370", "ISIC_9000001", "vasc"),
            ("ISIC_0024410", "ISIC_9000002", "mel"),
        ],
    );
    h.state_mut().open_path(root.clone());
    wait_until(&mut h, "the dataset's first image", |a| {
        a.explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.path.starts_with(&root))
    });
    h.get_by_label("ISIC_9000001.jpg  ·  vasc");
    h.get_by_label("ISIC_9000002.jpg  ·  mel");
    let a = h.state().explain.analysis.clone().expect("analysis");
    let gt = a.ground_truth.as_ref().expect("ground truth");
    assert_eq!(gt.labels, ["vasc"]);
    assert_eq!(
        gt.mask_region().map(|l| l.source.clone()),
        Some(root.join("masks/ISIC_9000001.png"))
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn ground_truth_expert_box_of_the_explained_finding_on_a_chest_xray() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/kermany_cxr_default.safetensors");
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::LoadModel(model));
    wait_until(&mut h, "the chest X-ray model and its analysis", |a| {
        a.model.as_ref().is_some_and(|m| m.config.in_channels == 1)
            && a.explain
                .analysis
                .as_ref()
                .is_some_and(|x| x.path.ends_with("00000032_037.png"))
    });
    // 00000032_037 has one box, for Infiltration: none for either class of this model.
    let explained = h.state().explain.analysis.clone().expect("analysis");
    let class = h.state().explain.class_names[explained.target_class].clone();
    h.get_by_label(&format!("no expert box for {class} in this image"));
    assert_eq!(h.state().explain.ground_truth_shapes, 0);

    h.get_by_label_contains("00000193_019.png").click();
    wait_until(&mut h, "the pneumonia sample", |a| {
        a.explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.path.ends_with("00000193_019.png"))
    });
    explain_class_named(&mut h, "pneumonia");
    assert!(
        h.state()
            .explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.path.ends_with("00000193_019.png"))
    );
    // The model's "pneumonia" is the box list's "Pneumonia".
    h.get_by_label("expert box: Pneumonia (NIH)");
    h.get_by_label("label: Pneumonia");
    assert_eq!(h.state().explain.ground_truth_shapes, 1);
    snapshot(&mut h, "ground_truth_nih_dark");
}

/// Explains the loaded model's class `name` (as a click on its bar) and waits for the map.
fn explain_class_named(h: &mut Harness<'static, TriscopeApp>, name: &str) {
    let class = h
        .state()
        .explain
        .class_names
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("the model has no class {name}"));
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::ExplainClass(Some(class)));
    wait_until(h, &format!("the explanation of {name}"), |a| {
        a.explain
            .analysis
            .as_ref()
            .is_some_and(|x| x.target_class == class)
    });
}

#[test]
fn fourteen_finding_model_shows_a_bar_per_finding_and_the_box_of_the_explained_one() {
    if !wgpu_available() {
        return;
    }
    let mut h = explained_harness();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/nih_cxr14_demo.safetensors");
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::LoadModel(model));
    wait_until(&mut h, "the 14-finding model and its analysis", |a| {
        a.model.as_ref().is_some_and(|m| m.config.multi_label)
            && a.explain.analysis.as_ref().is_some_and(|x| {
                x.path.ends_with("00000032_037.png") && x.prediction.scores.len() == 14
            })
    });
    // A sigmoid per finding: a bar each, not one softmax.
    for finding in [
        "Atelectasis",
        "Cardiomegaly",
        "Infiltration",
        "Pneumothorax",
    ] {
        assert!(
            h.query_all_by_label_contains(finding).count() >= 1,
            "{finding}"
        );
    }
    // 00000032_037 is labelled Cardiomegaly, Edema and Infiltration; only Infiltration
    // ("Infiltrate" in the box list) has an expert box.
    explain_class_named(&mut h, "Cardiomegaly");
    h.get_by_label("no expert box for Cardiomegaly in this image");
    assert_eq!(h.state().explain.ground_truth_shapes, 0);
    explain_class_named(&mut h, "Infiltration");
    h.get_by_label("expert box: Infiltration (NIH)");
    assert_eq!(h.state().explain.ground_truth_shapes, 1);
    snapshot(&mut h, "ground_truth_nih14_dark");
}

#[test]
fn concepts_tab_builds_the_bank_and_reads_the_checklist_of_the_open_image() {
    if !wgpu_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("triscope-gui-concepts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("derm7pt");
    triscope::explain::checklist::write_synthetic_derm7pt(
        &data,
        &[("train", 40), ("val", 16), ("test", 16)],
    )
    .unwrap();
    let mut h = explained_harness();
    {
        let app = h.state_mut();
        assert!(
            app.concepts.fits_model,
            "the embedded model is a dermoscopy model"
        );
        app.concepts.data = data.display().to_string();
        app.concepts.cache = Some(dir.join("cache"));
        app.concepts.options = triscope::explain::concept_bank::BankOptions {
            runs: 4,
            per_set: 20,
            min_images: 10,
            examples: 3,
            ..Default::default()
        };
        // Showing the tab starts the build on its thread.
        app.saved.tab = Tab::Concepts;
    }
    wait_until(&mut h, "the concept bank and the read-out", |a| {
        a.concepts.summary.is_some() && a.concepts.readout.is_some()
    });
    assert!(
        h.state().concepts.errors.is_empty(),
        "{:?}",
        h.state().concepts.errors
    );
    let readout = h.state().concepts.readout.clone().unwrap();
    let layer3 = readout
        .layers
        .iter()
        .find(|l| l.layer == LayerId::Layer3)
        .unwrap();
    assert_eq!(layer3.readings.len(), 6);
    // Machine-dependent text (the folder, the build time) fixed for the snapshot.
    {
        let app = h.state_mut();
        app.concepts.data = "derm7pt (synthetic lesions)".into();
        let mut summary = (*app.concepts.summary.clone().unwrap()).clone();
        summary.origin = "built, cached".into();
        summary.cache_file = None;
        app.concepts.summary = Some(std::sync::Arc::new(summary));
        app.concepts.selected = 0;
    }
    snapshot(&mut h, "concepts_dark");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lung_outline_and_lung_energy_under_a_chest_model_map() {
    if !wgpu_available() {
        return;
    }
    let image = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lungs_tiny/images/CHNCXR_0329_1.png");
    let mut h = harness_opening(Some(image));
    wait_until(&mut h, "the first analysis", |a| a.has_analysis());
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/kermany_cxr_default.safetensors");
    h.state_mut()
        .handle_action_for_test(super::state::UiAction::LoadModel(model));
    wait_until(
        &mut h,
        "the chest model's analysis of the radiograph",
        |a| {
            a.model.as_ref().is_some_and(|m| m.config.in_channels == 1)
                && a.explain.analysis.as_ref().is_some_and(|x| {
                    x.path.ends_with("CHNCXR_0329_1.png") && x.model_input.width == 224
                })
        },
    );
    h.run_steps(2);
    // The lung mask beside the image is drawn as the lungs' outline, with the read-out.
    h.get_by_label("lung outline");
    h.get_by_label("label: tuberculosis");
    // One closed outline per lung.
    assert_eq!(h.state().explain.ground_truth_shapes, 2);
    h.get_by_label_contains("of the map inside the lungs; the lungs are");
    // CHNCXR_0329_1's lungs cover 32% of the 256-px mask (labels.csv: 0.3221); 31-33% after
    // the resize to 224.
    assert!(
        ["31%", "32%", "33%"].iter().any(|p| h
            .query_all_by_label_contains(&format!("the lungs are {p} of the image"))
            .next()
            .is_some()),
        "the read-out gives the lungs' share of the image"
    );
    snapshot(&mut h, "lungs_dark");
}
