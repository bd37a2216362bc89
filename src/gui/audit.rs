//! Audit tab: audit the workbench's model on a dataset split (evaluation, the explanation's
//! faithfulness, localisation and stability, the sanity check, TCAV) on the `triscope-audit`
//! thread, with progress and cancel; the report window opens when it is done.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;
use triscope::audit::{AuditEvent, AuditHandle, AuditProgress, AuditStage};

use super::state::AuditForm;

/// The stages in the order they run, for "stage k of n".
const STAGES: [AuditStage; 5] = [
    AuditStage::Evaluation,
    AuditStage::Explanation,
    AuditStage::Sanity,
    AuditStage::Tcav,
    AuditStage::Report,
];

pub struct AuditPanel {
    pub form: AuditForm,
    job: Option<AuditHandle>,
    pub progress: Option<AuditProgress>,
    pub status: String,
    pub errors: Vec<String>,
    /// The report folder of an audit that has just finished; the app opens it.
    pub finished: Option<PathBuf>,
    /// The report folder of the last finished audit (offered again).
    pub last_report: Option<PathBuf>,
    /// The workbench's model file (`None`: the embedded default) and its name, set by the app.
    pub model: Option<PathBuf>,
    pub model_name: String,
    /// The gallery's folder, offered as the dataset.
    pub gallery_folder: Option<PathBuf>,
    /// Asks the UI to repaint when an event is sent (set by the app).
    pub wake: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl AuditPanel {
    pub fn new(form: AuditForm) -> Self {
        Self {
            form,
            job: None,
            progress: None,
            status: "No audit yet.".into(),
            errors: Vec::new(),
            finished: None,
            last_report: None,
            model: None,
            model_name: String::new(),
            gallery_folder: None,
            wake: None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Start the audit of the form on the `triscope-audit` thread, into a new folder under the
    /// reports folder; the model is loaded and the dataset opened there.
    pub fn start(&mut self) {
        if self.is_running() {
            return;
        }
        let out = PathBuf::from(self.form.reports_dir.trim()).join(format!(
            "audit-{}",
            triscope::io::weights::utc_now_rfc3339().replace(':', "")
        ));
        let request = self.form.request(self.model.clone(), out);
        let wake_fn = super::wake_hook(self.wake.clone());
        match AuditHandle::spawn(request, wake_fn) {
            Ok(job) => {
                self.job = Some(job);
                self.progress = None;
                self.status = "loading the model and opening the dataset…".into();
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    pub fn cancel(&mut self) {
        if let Some(job) = &self.job {
            job.cancel();
            self.status = "cancelling…".into();
        }
    }

    /// Take in the audit's events.
    pub fn poll(&mut self) {
        let Some(job) = &self.job else {
            return;
        };
        let mut ended = false;
        while let Ok(e) = job.events.try_recv() {
            match e {
                AuditEvent::Started {
                    model,
                    dataset,
                    split,
                    images,
                } => {
                    self.status =
                        format!("auditing {model} on {dataset} ({split}, {images} images)")
                }
                AuditEvent::Progress(p) => self.progress = Some(p),
                AuditEvent::Finished { out, elapsed_secs } => {
                    self.status =
                        format!("audit written to {} in {elapsed_secs:.0} s", out.display());
                    self.last_report = Some(out.clone());
                    self.finished = Some(out);
                    ended = true;
                }
                AuditEvent::Cancelled => {
                    self.status = "audit cancelled".into();
                    ended = true;
                }
                AuditEvent::Failed(e) => {
                    self.status = "audit failed".into();
                    self.errors.push(e);
                    ended = true;
                }
            }
        }
        if ended {
            self.job = None;
            self.progress = None;
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.poll();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                ui.label(format!(
                    "Audit {} on a dataset split: clean and robust evaluation, the explanation's \
                     faithfulness (deletion / insertion against a random map), localisation \
                     against the lesion masks or expert boxes (against a centred prior), \
                     stability under attack, the model-randomisation sanity check and TCAV. \
                     The report opens when it is done; it is also written as audit.html.",
                    if self.model_name.is_empty() {
                        "the current model"
                    } else {
                        &self.model_name
                    }
                ));
                ui.separator();
                self.form_ui(ui);
                ui.separator();
                self.controls_ui(ui);
                ui.label(&self.status);
                for e in self.errors.iter().rev().take(2) {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
            });
    }

    fn form_ui(&mut self, ui: &mut egui::Ui) {
        let running = self.is_running();
        let gallery = self.gallery_folder.clone();
        ui.add_enabled_ui(!running, |ui| {
            let f = &mut self.form;
            egui::Grid::new("audit-form")
                .num_columns(2)
                .spacing([16.0, 6.0])
                .show(ui, |ui| {
                    ui.label("dataset");
                    ui.horizontal(|ui| {
                        ui.add(egui::TextEdit::singleline(&mut f.data).desired_width(360.0))
                            .on_hover_text(
                                "a HAM10000 or ChestX-ray14 folder (labels.csv), a MedMNIST \
                                 .npz, or a folder with one sub-folder per class",
                            );
                        if let Some(dir) = &gallery
                            && ui.button("Use the gallery's folder").clicked()
                        {
                            f.data = dir.display().to_string();
                        }
                    });
                    ui.end_row();
                    ui.label("split");
                    ui.add(egui::TextEdit::singleline(&mut f.split).desired_width(120.0))
                        .on_hover_text("empty: test where there is one, else all");
                    ui.end_row();
                    ui.label("images evaluated");
                    ui.add(egui::DragValue::new(&mut f.images).range(0..=100_000))
                        .on_hover_text("0: the whole split; classes interleaved");
                    ui.end_row();
                    ui.label("images explained");
                    ui.add(egui::DragValue::new(&mut f.explain_samples).range(1..=500));
                    ui.end_row();
                    ui.label("attack ε (/255)");
                    ui.add(
                        egui::DragValue::new(&mut f.eps_linf_x255)
                            .range(0.0..=16.0)
                            .speed(0.25),
                    );
                    ui.end_row();
                    ui.label("parts");
                    ui.horizontal(|ui| {
                        ui.checkbox(&mut f.robust, "FGSM + PGD-10 and checks");
                        ui.checkbox(&mut f.sanity, "sanity check");
                        ui.checkbox(&mut f.tcav, "TCAV");
                    });
                    ui.end_row();
                    ui.label("reports folder");
                    ui.add(egui::TextEdit::singleline(&mut f.reports_dir).desired_width(360.0));
                    ui.end_row();
                });
        });
    }

    fn controls_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if self.is_running() {
                if ui.button("Cancel").clicked() {
                    self.cancel();
                }
            } else if ui.button("Run the audit").clicked() {
                self.start();
            }
            if !self.is_running()
                && let Some(dir) = &self.last_report
                && ui.button("Show the report").clicked()
            {
                self.finished = Some(dir.clone());
            }
        });
        if let Some(p) = self.progress {
            let k = STAGES.iter().position(|s| *s == p.stage).unwrap_or(0) + 1;
            let fraction = if p.total == 0 {
                0.0
            } else {
                p.done as f32 / p.total as f32
            };
            ui.add(egui::ProgressBar::new(fraction).text(format!(
                "{} ({k} of {}): {} / {}",
                p.stage.label(),
                STAGES.len(),
                p.done,
                p.total
            )));
        }
    }
}
