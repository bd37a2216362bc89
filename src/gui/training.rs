//! Training panel: pick a config, edit its main fields, start / pause / resume / stop a run on
//! the `triscope-train` thread (or continue a run folder, as `triscope train --resume`), watch
//! losses, accuracies and the learning rate live, and load the newest checkpoint into the
//! workbench with one click.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;
use egui_plot::{Axis, GridInput, GridMark, HoverPosition, Legend, Line, Plot, PlotPoints, Points};
use triscope::io::plot::tick_label;
use triscope::model::device::ComputeDevice;
use triscope::train::config::LossType;
use triscope::train::explanation::ExplanationQuality;
use triscope::train::{
    EpochMetrics, RunInfo, StepMetrics, TrainConfig, TrainEvent, TrainHandle, Trainer,
};

use super::axes::linear_marks;
use super::state::{TrainForm, UiAction};

/// A run in progress (or just ended).
struct Run {
    handle: TrainHandle,
    info: Option<RunInfo>,
    paused: bool,
    finished: bool,
}

pub struct TrainingPanel {
    pub form: TrainForm,
    run: Option<Run>,
    pub steps: Vec<StepMetrics>,
    pub epochs: Vec<EpochMetrics>,
    /// Newest checkpoint written (best if there is one, else last).
    pub newest_checkpoint: Option<PathBuf>,
    pub status: String,
    pub errors: Vec<String>,
    pub actions: Vec<UiAction>,
    /// Asks the UI to repaint when an event is sent (set by the app).
    pub wake: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl TrainingPanel {
    pub fn new(form: TrainForm) -> Self {
        Self {
            form,
            run: None,
            steps: Vec::new(),
            epochs: Vec::new(),
            newest_checkpoint: None,
            status: "No run yet.".into(),
            errors: Vec::new(),
            actions: Vec::new(),
            wake: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.run.as_ref().is_some_and(|r| !r.finished)
    }

    /// Read the config file into the form (a small YAML file: read on the UI thread).
    pub fn load_config_into_form(&mut self) {
        let path = PathBuf::from(self.form.config_path.trim());
        match TrainConfig::load(&path, &[]) {
            Ok(c) => {
                self.form.take_from(&c);
                self.status = format!("read {}", path.display());
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    /// Start a run on the `triscope-train` thread: the config is read and the datasets are
    /// opened there, so the UI never waits on them.
    pub fn start(&mut self) {
        let config_path = PathBuf::from(self.form.config_path.trim());
        let form = self.form.clone();
        let run_dir = Path::new(self.form.runs_dir.trim()).join(format!(
            "gui-{}",
            triscope::io::weights::utc_now_rfc3339().replace(':', "")
        ));
        self.launch(move || {
            let mut config = TrainConfig::load(&config_path, &[])?;
            form.apply_to(&mut config);
            config.validate(&config_path)?;
            Trainer::new(config, &run_dir, ComputeDevice::cpu())
        });
    }

    /// Continue the run folder of the form (as `triscope train --resume`), on the
    /// `triscope-train` thread. A folder another process is training is refused with that
    /// process's name, in the panel's errors.
    pub fn resume_run(&mut self) {
        let run_dir = PathBuf::from(self.form.resume_dir.trim());
        self.launch(move || Trainer::resume(&run_dir, ComputeDevice::cpu()));
    }

    fn launch(&mut self, prepare: impl FnOnce() -> triscope::Result<Trainer> + Send + 'static) {
        if self.is_running() {
            return;
        }
        let wake_fn = super::wake_hook(self.wake.clone());
        match Trainer::spawn_prepared(prepare, wake_fn) {
            Ok(handle) => {
                self.steps.clear();
                self.epochs.clear();
                self.newest_checkpoint = None;
                self.status = "preparing the run (reading the data)…".into();
                self.run = Some(Run {
                    handle,
                    info: None,
                    paused: false,
                    finished: false,
                });
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    /// Take in the run's events.
    pub fn poll(&mut self) {
        let Some(run) = &mut self.run else {
            return;
        };
        while let Ok(e) = run.handle.events.try_recv() {
            match e {
                TrainEvent::Started(info) => {
                    self.status = format!(
                        "{} {}: {} train / {} val images, {} steps per epoch",
                        if info.resumed { "resumed" } else { "training" },
                        info.run_dir.display(),
                        info.train_samples,
                        info.val_samples,
                        info.steps_per_epoch
                    );
                    run.info = Some(info);
                }
                TrainEvent::Step(s) => {
                    self.status = format!(
                        "epoch {} · batch {}/{} · loss {:.4} · {:.1} img/s",
                        s.epoch, s.batch, s.batches, s.loss, s.images_per_s
                    );
                    self.steps.push(s);
                }
                TrainEvent::Validating { epoch } => {
                    self.status = format!("validating epoch {epoch}…");
                }
                TrainEvent::Epoch(m) => self.epochs.push(m),
                TrainEvent::Checkpoint { path, .. } => self.newest_checkpoint = Some(path),
                TrainEvent::Paused => run.paused = true,
                TrainEvent::Resumed => run.paused = false,
                TrainEvent::Stopped { checkpoint } => {
                    run.finished = true;
                    self.status = match checkpoint {
                        Some(p) => format!("stopped; resume from {}", p.display()),
                        None => "stopped".into(),
                    };
                }
                TrainEvent::Finished(summary) => {
                    run.finished = true;
                    if let Some(best) = summary.best.clone().or(summary.last.clone()) {
                        self.newest_checkpoint = Some(best);
                    }
                    self.status = format!(
                        "finished: {} epochs, {} steps{}",
                        summary.epochs_done,
                        summary.steps_done,
                        summary
                            .best_score
                            .map(|s| format!(", best score {s:.3}"))
                            .unwrap_or_default()
                    );
                }
                TrainEvent::Failed(msg) => {
                    run.finished = true;
                    self.status = "the run failed".into();
                    self.errors.push(format!("training: {msg}"));
                }
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.poll();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                self.form_ui(ui);
                ui.separator();
                self.controls_ui(ui);
                ui.label(&self.status);
                for e in self.errors.iter().rev().take(2) {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                ui.separator();
                self.plots_ui(ui);
            });
    }

    fn form_ui(&mut self, ui: &mut egui::Ui) {
        let running = self.is_running();
        ui.add_enabled_ui(!running, |ui| {
            ui.horizontal(|ui| {
                ui.label("Config");
                ui.add(egui::TextEdit::singleline(&mut self.form.config_path).desired_width(320.0));
                if ui.button("Read it into the form").clicked() {
                    self.load_config_into_form();
                }
            });
            let f = &mut self.form;
            egui::Grid::new("train-form").num_columns(4).spacing([16.0, 6.0]).show(ui, |ui| {
                ui.label("loss");
                egui::ComboBox::from_id_salt("train-loss")
                    .selected_text(match f.loss_type {
                        LossType::Clean => "clean",
                        LossType::PgdAt => "PGD-AT",
                        LossType::Trades => "TRADES",
                    })
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut f.loss_type, LossType::Clean, "clean");
                        ui.selectable_value(&mut f.loss_type, LossType::PgdAt, "PGD-AT");
                        ui.selectable_value(&mut f.loss_type, LossType::Trades, "TRADES");
                    });
                ui.label("epochs");
                ui.add(egui::DragValue::new(&mut f.epochs).range(1..=1000));
                ui.end_row();
                ui.label("ε (/255)");
                ui.add(egui::DragValue::new(&mut f.eps_linf_x255).range(0.0..=16.0).speed(0.25));
                ui.label("attack steps");
                ui.add(egui::DragValue::new(&mut f.attack_steps).range(1..=20));
                ui.end_row();
                ui.label("batch size");
                ui.add(egui::DragValue::new(&mut f.batch_size).range(1..=512));
                ui.label("learning rate");
                ui.add(egui::DragValue::new(&mut f.lr).range(1e-6..=1.0).speed(0.001));
                ui.end_row();
                ui.label("base width");
                ui.add(egui::DragValue::new(&mut f.base_width).range(4..=64));
                ui.label("resolution (px)");
                ui.add(egui::DragValue::new(&mut f.resolution).range(32..=512));
                ui.end_row();
                ui.label("train / val images");
                ui.horizontal(|ui| {
                    ui.add(egui::DragValue::new(&mut f.train_limit).range(0..=100_000));
                    ui.add(egui::DragValue::new(&mut f.val_limit).range(0..=100_000));
                });
                ui.label("data");
                ui.add(egui::TextEdit::singleline(&mut f.data_root).desired_width(220.0));
                ui.end_row();
            });
            ui.weak("0 images = the whole split. Runs go to runs/gui-<time>/ (config, metrics.jsonl, last and best checkpoints).");
            ui.horizontal(|ui| {
                ui.label("Continue run");
                ui.add(
                    egui::TextEdit::singleline(&mut self.form.resume_dir)
                        .hint_text("run folder, e.g. runs/gui-…")
                        .desired_width(320.0),
                );
            });
        });
    }

    fn controls_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let running = self.is_running();
            if ui
                .add_enabled(!running, egui::Button::new("Start training"))
                .clicked()
            {
                self.start();
            }
            let can_resume = !running && !self.form.resume_dir.trim().is_empty();
            if ui
                .add_enabled(can_resume, egui::Button::new("Continue run"))
                .on_hover_text("Resume the run folder from its last checkpoint")
                .clicked()
            {
                self.resume_run();
            }
            if let Some(run) = &mut self.run
                && !run.finished
            {
                if run.paused {
                    if ui.button("Resume").clicked() {
                        run.handle.control.resume();
                        run.paused = false;
                    }
                } else if ui.button("Pause").clicked() {
                    run.handle.control.pause();
                    run.paused = true;
                }
                if ui
                    .button("Stop")
                    .on_hover_text("Stop after this step and write `last`")
                    .clicked()
                {
                    run.handle.control.stop();
                }
                ui.spinner();
            }
            if let Some(p) = self.newest_checkpoint.clone()
                && ui
                    .button("Load the newest checkpoint into the workbench")
                    .on_hover_text(p.display().to_string())
                    .clicked()
            {
                self.actions.push(UiAction::LoadModel(p));
            }
        });
    }

    fn plots_ui(&mut self, ui: &mut egui::Ui) {
        let step_line = |name: &str, f: &dyn Fn(&StepMetrics) -> Option<f64>| {
            let pts: PlotPoints = self
                .steps
                .iter()
                .filter_map(|s| f(s).map(|v| [s.step as f64, v]))
                .collect();
            Line::new(name.to_string(), pts)
        };
        let epoch_points = |name: &str, f: &dyn Fn(&EpochMetrics) -> Option<f64>| {
            let pts: PlotPoints = self
                .epochs
                .iter()
                .filter_map(|e| f(e).map(|v| [e.step as f64, v]))
                .collect();
            Points::new(name.to_string(), pts).radius(4.0)
        };
        let height = 150.0;
        // The legend sits in the top-right corner; room past the last step keeps the newest
        // epoch's points, the ones a user watches, out from under it (all three plots share
        // the x range).
        let last_step = self.steps.last().map_or(1, |s| s.step) as f64;
        let x_max_step = last_step * 1.4;
        ui.strong("Loss (log scale)");
        Plot::new("train-loss")
            .height(height)
            .legend(Legend::default())
            .include_x(x_max_step)
            .x_axis_label("step")
            .y_grid_spacer(log_loss_marks)
            .y_axis_formatter(|mark, _| format_loss(10f64.powf(mark.value)))
            .label_formatter(loss_hover_label)
            .show(ui, |p| {
                p.line(step_line("train loss", &|s| Some(log_loss(s.loss))));
                p.line(step_line("natural (CE)", &|s| {
                    Some(log_loss(s.loss_natural))
                }));
                p.line(step_line("robust (KL)", &|s| s.loss_robust.map(log_loss)));
                // `training.cam_mask_weight`'s term, before its weight; absent from other runs'
                // legends.
                if self.steps.iter().any(|s| s.cam_outside.is_some()) {
                    p.line(step_line("map outside lesion", &|s| {
                        s.cam_outside.map(log_loss)
                    }));
                }
                p.points(epoch_points("val loss", &|e| Some(log_loss(e.val_loss))));
            });
        ui.strong("Accuracy");
        Plot::new("train-acc")
            .height(height)
            .legend(Legend::default())
            .include_y(0.0)
            .include_y(1.0)
            .include_x(x_max_step)
            .x_axis_label("step")
            .y_grid_spacer(|input| linear_marks(input, Axis::Y, false))
            .y_axis_formatter(|mark, _| tick_label(mark.value))
            .show(ui, |p| {
                p.line(step_line("train clean", &|s| Some(s.clean_acc)));
                p.line(step_line("train robust", &|s| s.robust_acc));
                p.points(epoch_points("val clean", &|e| Some(e.val_clean_acc)));
                p.points(epoch_points("val balanced", &|e| Some(e.val_balanced_acc)));
                p.points(epoch_points("val robust", &|e| e.val_robust_acc));
                // With a weight average the val points are the average's; these the raw weights'.
                p.points(epoch_points("val balanced (raw)", &|e| {
                    e.raw_val_balanced_acc
                }));
            });
        // `training.explanation_images`: the validated model's Grad-CAM per epoch.
        if self.epochs.iter().any(|e| e.explanation.is_some()) {
            ui.strong("Explanation quality (Grad-CAM of the label, fixed val images)");
            let quality = |name: &str, f: &dyn Fn(&ExplanationQuality) -> Option<f64>| {
                let pts: Vec<[f64; 2]> = self
                    .epochs
                    .iter()
                    .filter_map(|e| {
                        e.explanation
                            .as_ref()
                            .and_then(f)
                            .map(|v| [e.step as f64, v])
                    })
                    .collect();
                (
                    Line::new(name.to_string(), PlotPoints::from(pts.clone())),
                    Points::new(name.to_string(), PlotPoints::from(pts)).radius(4.0),
                )
            };
            Plot::new("train-explanation")
                .height(height)
                .legend(Legend::default())
                .include_y(0.0)
                .include_y(1.0)
                .include_x(x_max_step)
                .x_axis_label("step")
                .y_grid_spacer(|input| linear_marks(input, Axis::Y, false))
                .y_axis_formatter(|mark, _| tick_label(mark.value))
                .y_axis_formatter(|mark, _| tick_label(mark.value))
                .show(ui, |p| {
                    let series: [(&str, QualityField); 5] = [
                        ("deletion AUC (lower is better)", |q| Some(q.deletion_auc)),
                        ("insertion AUC", |q| Some(q.insertion_auc)),
                        ("energy inside mask", |q| q.energy_inside),
                        ("mask share (uniform map)", |q| q.region_fraction),
                        ("pointing game", |q| q.pointing_hit_rate),
                    ];
                    for (name, f) in series {
                        let (line, points) = quality(name, &f);
                        p.line(line);
                        p.points(points);
                    }
                });
        }
        ui.strong("Learning rate");
        Plot::new("train-lr")
            .height(100.0)
            .include_x(x_max_step)
            .x_axis_label("step")
            .show(ui, |p| {
                p.line(step_line("lr", &|s| Some(s.lr)));
            });
    }
}

/// One number of an epoch's explanation quality.
type QualityField = fn(&ExplanationQuality) -> Option<f64>;

/// The loss plot's y is log10 of the loss: one diverged validation loss (2e9 after three
/// steps of a tiny run) would flatten every other curve onto zero on a linear axis, and a KL
/// term of 1e-3 beside a cross-entropy of 2 would be invisible. Losses at or below the floor
/// (a KL of exactly 0) sit on it.
const LOSS_FLOOR: f64 = 1e-4;

fn log_loss(loss: f64) -> f64 {
    loss.max(LOSS_FLOOR).log10()
}

/// Grid marks at powers of ten (log10 units), every one or every few so that egui can label
/// them, with 2x and 5x between them when there is room; egui's own marks where that leaves
/// fewer than two.
fn log_loss_marks(input: GridInput) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    // egui labels a y mark whose step spans at least 20 points, fully from 30, and
    // `base_step_size` spans 8 points.
    let legible = input.base_step_size * 30.0 / 8.0;
    if !(lo.is_finite() && hi.is_finite() && legible > 0.0) || hi <= lo {
        return Vec::new();
    }
    let stride = [1i64, 2, 3, 5, 10, 20, 50]
        .into_iter()
        .find(|&s| s as f64 >= legible)
        .unwrap_or(100);
    let minor_step = 2f64.log10(); // the closest two of 1, 2, 5, 10
    let minor = stride == 1 && minor_step >= legible;
    let mut marks = Vec::new();
    for decade in (lo.floor() as i64)..=(hi.ceil() as i64) {
        if decade.rem_euclid(stride) != 0 {
            continue;
        }
        let mut push = |value: f64, step_size: f64| {
            if (lo..=hi).contains(&value) {
                marks.push(GridMark { value, step_size });
            }
        };
        push(decade as f64, stride as f64);
        if minor {
            push(decade as f64 + 2f64.log10(), minor_step);
            push(decade as f64 + 5f64.log10(), minor_step);
        }
    }
    if marks.len() < 2 {
        return egui_plot::log_grid_spacer(10)(input);
    }
    marks
}

/// A loss for an axis or a tooltip: the report plots' tick label from 0.001 to 9,999, else
/// `2e9`.
fn format_loss(loss: f64) -> String {
    if (1e-3..1e4).contains(&loss) {
        tick_label(loss)
    } else {
        format!("{loss:.0e}")
    }
}

fn loss_hover_label(hover: &HoverPosition<'_>) -> Option<String> {
    let (name, at) = match hover {
        HoverPosition::NearDataPoint {
            plot_name,
            position,
            ..
        } => (format!("{plot_name}\n"), position),
        HoverPosition::Elsewhere { position } => (String::new(), position),
    };
    let loss = format_loss(10f64.powf(at.y));
    Some(format!("{name}step {:.0}\nloss {loss}", at.x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss axis: powers of ten, every few when the plot is crowded, 2x and 5x when a decade
    /// is tall; labels in plain decimals or `2e9`; a zero loss on the floor, not at minus infinity.
    #[test]
    fn the_loss_axis_is_logarithmic_with_readable_marks() {
        // `points_per_decade` as the plot's height and range make it; 8 points per base step.
        let marks = |lo: f64, hi: f64, points_per_decade: f64| -> Vec<String> {
            log_loss_marks(GridInput {
                bounds: (lo, hi),
                base_step_size: 8.0 / points_per_decade,
            })
            .iter()
            .map(|m| format_loss(10f64.powf(m.value)))
            .collect()
        };
        assert_eq!(marks(-0.5, 0.5, 130.0), ["0.5", "1", "2"]);
        assert_eq!(
            marks(-1.0, 1.0, 110.0),
            ["0.1", "0.2", "0.5", "1", "2", "5", "10"]
        );
        // Ten decades in 130 points (a diverged validation loss): every third one.
        assert_eq!(marks(-0.2, 9.5, 13.0), ["1", "1000", "1e6", "1e9"]);
        assert_eq!(marks(-1.5, 2.5, 35.0), ["0.1", "1", "10", "100"]);
        assert_eq!(marks(-1.0, 1.0, 65.0), ["0.1", "1", "10"]);
        // Between two marks of 1-2-5: egui's own marks, still at least two.
        assert!(marks(0.05, 0.25, 600.0).len() >= 2);
        assert_eq!(format_loss(2.0e9), "2e9");
        assert_eq!(format_loss(1.386), "1.386");
        assert_eq!(format_loss(0.0004), "4e-4");
        assert_eq!(log_loss(0.0), -4.0);
        assert_eq!(log_loss(100.0), 2.0);
    }

    /// Continue a run from the panel: refused naming the holder while another trainer holds
    /// the folder (as a second terminal's `triscope train --resume` is), done once it is free.
    #[test]
    fn continuing_a_run_held_elsewhere_says_who_holds_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!("triscope-gui-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = TrainConfig::load(
            &root.join("tests/fixtures/train_tiny.yaml"),
            &["robustness.loss_type=clean".into()],
        )
        .unwrap();
        // One epoch of two, then a stop: the folder has a `last` to continue.
        let trainer = Trainer::new(config, &dir, ComputeDevice::cpu()).unwrap();
        let control = triscope::train::TrainControl::new();
        let c = control.clone();
        trainer
            .run(&control, &mut |e| {
                if matches!(e, TrainEvent::Epoch(_)) {
                    c.stop();
                }
            })
            .unwrap();
        let wait = |panel: &mut TrainingPanel| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while panel.is_running() && std::time::Instant::now() < deadline {
                panel.poll();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            panel.poll();
        };
        let mut panel = TrainingPanel::new(TrainForm {
            resume_dir: dir.display().to_string(),
            ..TrainForm::default()
        });
        let holder = Trainer::resume(&dir, ComputeDevice::cpu()).unwrap();
        panel.resume_run();
        wait(&mut panel);
        let pid = format!("in use by process {}", std::process::id());
        assert!(
            panel.errors.iter().any(|e| e.contains(&pid)),
            "{:?}",
            panel.errors
        );
        drop(holder);
        panel.errors.clear();
        panel.resume_run();
        wait(&mut panel);
        assert!(panel.errors.is_empty(), "{:?}", panel.errors);
        assert!(
            panel.status.starts_with("finished: 2 epochs"),
            "{}",
            panel.status
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_form_writes_a_typed_config() {
        let form = TrainForm {
            loss_type: LossType::PgdAt,
            epochs: 3,
            eps_linf_x255: 4.0,
            attack_steps: 5,
            base_width: 8,
            resolution: 48,
            train_limit: 100,
            ..TrainForm::default()
        };
        let origin = Path::new("form.yaml");
        let mut c = TrainConfig::from_yaml("", origin, &[]).expect("the defaults");
        form.apply_to(&mut c);
        c.validate(origin).expect("the form's values are valid");
        assert_eq!(c.robustness.loss_type, LossType::PgdAt);
        assert_eq!(c.training.epochs, 3);
        assert!((c.robustness.attack.eps_linf - 4.0 / 255.0).abs() < 1e-6);
        assert!((c.robustness.attack.alpha - 2.5 * (4.0 / 255.0) / 5.0).abs() < 1e-6);
        assert_eq!(c.architecture.base_width, 8);
        assert_eq!(c.input.resolution, 48);
        assert_eq!(c.data.train_limit, 100);
        assert!(c.data.root.is_absolute(), "{}", c.data.root.display());
        let mut back = TrainForm::default();
        back.take_from(&c);
        assert_eq!(back.epochs, 3);
        assert_eq!(back.eps_linf_x255, 4.0);
        // A value the config refuses is refused from the form too, naming the key.
        let zero = TrainForm {
            batch_size: 0,
            ..TrainForm::default()
        };
        zero.apply_to(&mut c);
        let e = c.validate(origin).expect_err("batch size 0").to_string();
        assert!(e.contains("batch_size"), "{e}");
    }
}
