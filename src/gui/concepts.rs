//! Concepts tab: the seven-point checklist as the model reads it. For the open image, each
//! criterion's presence (a probe on the model's features) and its push toward the explained
//! class (the directional derivative along its concept vector); for the model, the TCAV table
//! over derm7pt with significance; for a criterion, its derm7pt examples. The bank behind it
//! is built or read from the cache on the `triscope-concepts` thread, never in the frame.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;
use triscope::explain::checklist::DEFAULT_DERM7PT;
use triscope::explain::concept_bank::{
    BankOptions, BankProgress, ConceptReadout, READOUT_CAVEAT, class_order,
};
use triscope::explain::tcav::TcavResult;
use triscope::model::LayerId;
use triscope::workbench::concepts::{ConceptEvent, ConceptSummary, ConceptsHandle};

pub struct ConceptsPanel {
    /// The derm7pt folder.
    pub data: String,
    pub options: BankOptions,
    /// Cache folder (`None`: the user's, [`triscope::explain::concept_cache::cache_dir`]).
    pub cache: Option<PathBuf>,
    job: Option<ConceptsHandle>,
    pub progress: Option<BankProgress>,
    pub summary: Option<Arc<ConceptSummary>>,
    pub readout: Option<Arc<ConceptReadout>>,
    latest_read: u64,
    /// The layer the read-out and the TCAV table show.
    pub layer: LayerId,
    /// The criterion whose examples are shown.
    pub selected: usize,
    pub status: String,
    pub errors: Vec<String>,
    /// The workbench's model file (`None`: the embedded default), its name and whether it
    /// classifies dermoscopy images (set by the app).
    pub model: Option<PathBuf>,
    pub model_name: String,
    pub fits_model: bool,
    /// The open image and the class the explanation targets (set by the app).
    image: Option<(PathBuf, Option<usize>)>,
    /// The tab has started a build for this model on its own (once: a failure is not retried
    /// every frame).
    auto_started: bool,
    /// Example thumbnails per criterion, uploaded once on arrival.
    thumbnails: Vec<Vec<egui::TextureHandle>>,
    /// Asks the UI to repaint when an event is sent (set by the app).
    pub wake: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Default for ConceptsPanel {
    fn default() -> Self {
        Self {
            data: DEFAULT_DERM7PT.into(),
            options: BankOptions::default(),
            cache: None,
            job: None,
            progress: None,
            summary: None,
            readout: None,
            latest_read: 0,
            layer: LayerId::Layer3,
            selected: 0,
            status: String::new(),
            errors: Vec::new(),
            model: None,
            model_name: String::new(),
            fits_model: false,
            image: None,
            auto_started: false,
            thumbnails: Vec::new(),
            wake: None,
        }
    }
}

impl ConceptsPanel {
    /// A new model: whatever was built for the old one is dropped (a running build is
    /// cancelled).
    pub fn set_model(&mut self, file: Option<PathBuf>, name: String, fits: bool) {
        self.job = None;
        self.summary = None;
        self.readout = None;
        self.progress = None;
        self.thumbnails.clear();
        self.model = file;
        self.model_name = name;
        self.fits_model = fits;
        self.auto_started = false;
        self.status.clear();
    }

    /// A new image or explained class: ask for its read-out (answered once the bank is
    /// ready; a newer image replaces an older one still waiting).
    pub fn set_image(&mut self, path: PathBuf, class: Option<usize>) {
        if self.image.as_ref() == Some(&(path.clone(), class)) {
            return;
        }
        self.image = Some((path, class));
        self.request_readout();
    }

    fn request_readout(&mut self) {
        if let (Some(job), Some((path, class))) = (self.job.as_mut(), self.image.clone()) {
            self.latest_read = job.read(path, class);
        }
    }

    pub fn is_running(&self) -> bool {
        self.job.is_some() && self.summary.is_none()
    }

    /// Start (or restart) the bank of the workbench's model for the folder in `data`.
    pub fn start(&mut self) {
        let data = PathBuf::from(self.data.trim());
        if !data.join("labels.csv").is_file() {
            self.errors.push(format!(
                "{} is not a derm7pt folder (labels.csv with the seven criteria, images/)",
                data.display()
            ));
            return;
        }
        self.summary = None;
        self.readout = None;
        self.thumbnails.clear();
        match ConceptsHandle::spawn(
            self.model.clone(),
            data,
            self.options.clone(),
            self.cache.clone(),
            super::wake_hook(self.wake.clone()),
        ) {
            Ok(job) => {
                self.job = Some(job);
                self.status = "loading the model…".into();
                self.request_readout();
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    /// Start once, when the tab is shown for a dermoscopy model and derm7pt is where it is
    /// expected.
    pub fn start_if_idle(&mut self) {
        if self.fits_model
            && !self.auto_started
            && self.job.is_none()
            && Path::new(self.data.trim()).join("labels.csv").is_file()
        {
            self.auto_started = true;
            self.start();
        }
    }

    /// Take in the thread's events.
    pub fn poll(&mut self, ctx: &egui::Context) {
        let Some(job) = &self.job else { return };
        let mut finished = false;
        while let Ok(event) = job.events.try_recv() {
            match event {
                ConceptEvent::Progress(p) => {
                    self.status = format!("{}: {} of {}", p.stage.label(), p.done, p.total);
                    self.progress = Some(p);
                }
                ConceptEvent::Ready(summary) => {
                    self.thumbnails = summary
                        .criteria
                        .iter()
                        .map(|c| {
                            c.examples
                                .iter()
                                .zip(&c.example_ids)
                                .map(|(img, id)| {
                                    ctx.load_texture(
                                        format!("concept-example-{id}"),
                                        egui::ColorImage::from_rgb(
                                            [img.width, img.height],
                                            &img.rgb,
                                        ),
                                        egui::TextureOptions::LINEAR,
                                    )
                                })
                                .collect()
                        })
                        .collect();
                    self.status = format!("concepts {}", summary.origin);
                    self.progress = None;
                    if !summary.layers.contains(&self.layer)
                        && let Some(l) = summary.layers.first()
                    {
                        self.layer = *l;
                    }
                    self.summary = Some(Arc::from(summary));
                }
                ConceptEvent::Readout {
                    request, readout, ..
                } if request == self.latest_read => self.readout = Some(Arc::from(readout)),
                ConceptEvent::ReadFailed { request, message } if request == self.latest_read => {
                    self.errors.push(format!("concept read-out: {message}"))
                }
                ConceptEvent::Readout { .. } | ConceptEvent::ReadFailed { .. } => {} // stale
                ConceptEvent::Cancelled => finished = true,
                ConceptEvent::Failed(m) => {
                    self.errors.push(format!("concepts: {m}"));
                    self.status = "the concepts could not be built".into();
                    finished = true;
                }
            }
        }
        if finished {
            self.job = None;
            self.progress = None;
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("The seven-point checklist, as the model reads it");
        ui.label(egui::RichText::new(READOUT_CAVEAT).weak().italics());
        ui.add_space(4.0);
        if !self.fits_model {
            ui.label(format!(
                "The checklist concepts are for dermoscopy models with a melanoma class; {} is \
                 not one. Load a HAM10000 model (File › Bundled models).",
                self.model_name
            ));
            return;
        }
        self.source_row(ui);
        for e in &self.errors {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(p) = self.progress {
            let fraction = if p.total > 0 {
                p.done as f32 / p.total as f32
            } else {
                0.0
            };
            ui.add(egui::ProgressBar::new(fraction).text(format!(
                "{}: {} of {}",
                p.stage.label(),
                p.done,
                p.total
            )));
        }
        let Some(summary) = self.summary.clone() else {
            if self.job.is_some() && self.progress.is_none() {
                ui.label(&self.status);
            }
            return;
        };
        ui.horizontal(|ui| {
            ui.label("Layer:");
            for &l in &summary.layers {
                ui.selectable_value(&mut self.layer, l, l.name());
            }
            let origin =
                ui.label(egui::RichText::new(format!("concepts {}", summary.origin)).weak());
            if let Some(f) = &summary.cache_file {
                origin.on_hover_text(f.display().to_string());
            }
        });
        ui.separator();
        self.readout_ui(ui, &summary);
        ui.separator();
        tcav_table(ui, &summary, self.layer);
        ui.separator();
        self.examples_ui(ui, &summary);
    }

    fn source_row(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label("derm7pt folder:");
            ui.add(egui::TextEdit::singleline(&mut self.data).desired_width(260.0));
            let label = if self.summary.is_some() {
                "Rebuild"
            } else {
                "Build concepts"
            };
            if ui
                .add_enabled(!self.is_running(), egui::Button::new(label))
                .on_hover_text(
                    "Probes and concept vectors from derm7pt's train split, for this model \
                     (minutes the first time, then read from the cache)",
                )
                .clicked()
            {
                self.errors.clear();
                self.start();
            }
            if self.is_running() && ui.button("Cancel").clicked() {
                self.job = None;
                self.progress = None;
                self.status = "cancelled".into();
            }
        });
    }

    fn readout_ui(&mut self, ui: &mut egui::Ui, summary: &ConceptSummary) {
        let Some(readout) = self.readout.clone() else {
            ui.label("Open a dermoscopy image to read its criteria.");
            return;
        };
        let Some(layer) = readout.layers.iter().find(|l| l.layer == self.layer) else {
            return;
        };
        ui.strong(format!(
            "In this image (push toward {})",
            readout.class_name
        ));
        let max_push = layer
            .readings
            .iter()
            .map(|r| r.push.abs())
            .filter(|p| p.is_finite())
            .fold(1e-12, f64::max);
        egui::Grid::new("concept-readout")
            .num_columns(4)
            .spacing([10.0, 4.0])
            .show(ui, |ui| {
                ui.label("criterion");
                ui.label("presence");
                ui.label("push");
                ui.label("probe AUROC");
                ui.end_row();
                for r in &layer.readings {
                    let index = summary.criteria.iter().position(|c| c.name == r.name);
                    let text = format!("{} ({})", r.title, r.points);
                    if ui
                        .selectable_label(index == Some(self.selected), text)
                        .on_hover_text(format!(
                            "CAV held-out accuracy {:.2}{}",
                            r.cav_accuracy,
                            if r.cav_separable {
                                ""
                            } else {
                                ": not separable, its push follows noise"
                            }
                        ))
                        .clicked()
                        && let Some(i) = index
                    {
                        self.selected = i;
                    }
                    ui.add(
                        egui::ProgressBar::new(r.presence as f32)
                            .desired_width(110.0)
                            .text(format!("{:.0}%", r.presence * 100.0)),
                    );
                    push_bar(ui, r.push / max_push, r.cav_separable);
                    ui.label(format!("{:.2}", r.probe_test_auroc));
                    ui.end_row();
                }
            });
        if layer.push_same_for_every_image {
            ui.label(
                egui::RichText::new(
                    "At layer4 the push is the same for every image (average pooling then a \
                     linear head); layer3 gives this image's own.",
                )
                .weak(),
            );
        }
    }

    fn examples_ui(&mut self, ui: &mut egui::Ui, summary: &ConceptSummary) {
        let Some(c) = summary.criteria.get(self.selected) else {
            return;
        };
        ui.label(format!(
            "derm7pt train images with {} ({} with it, {} without):",
            c.title, c.train_present, c.train_absent
        ));
        ui.horizontal(|ui| {
            for (tex, id) in self
                .thumbnails
                .get(self.selected)
                .into_iter()
                .flatten()
                .zip(&c.example_ids)
            {
                ui.image((tex.id(), egui::vec2(88.0, 88.0)))
                    .on_hover_text(id);
            }
        });
        for n in &summary.notes {
            ui.label(egui::RichText::new(n).weak());
        }
    }
}

/// A signed bar centred at zero: right (blue) toward the class, left (orange) away.
fn push_bar(ui: &mut egui::Ui, value: f64, separable: bool) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(110.0, 14.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    let mid = rect.center().x;
    let v = if value.is_finite() {
        value.clamp(-1.0, 1.0) as f32
    } else {
        0.0
    };
    let end = mid + v * rect.width() / 2.0;
    let mut colour = if v >= 0.0 {
        egui::Color32::from_rgb(70, 130, 220)
    } else {
        egui::Color32::from_rgb(230, 140, 50)
    };
    if !separable {
        colour = colour.gamma_multiply(0.35);
    }
    painter.rect_filled(
        egui::Rect::from_min_max(
            egui::pos2(mid.min(end), rect.top() + 2.0),
            egui::pos2(mid.max(end), rect.bottom() - 2.0),
        ),
        1.0,
        colour,
    );
    painter.vline(mid, rect.y_range(), (1.0, ui.visuals().text_color()));
}

/// Criterion rows, class columns (mel first): TCAV score, starred where significant after
/// Holm, greyed where the CAVs do not separate the criterion.
fn tcav_table(ui: &mut egui::Ui, summary: &ConceptSummary, layer: LayerId) {
    ui.strong(format!("TCAV at {layer} over derm7pt val + test"));
    let rows: Vec<&TcavResult> = summary.tcav.iter().filter(|t| t.layer == layer).collect();
    if rows.is_empty() {
        ui.label("No derm7pt image has a class of this model.");
        return;
    }
    let mut classes: Vec<String> = Vec::new();
    for t in &rows {
        if !classes.contains(&t.class_name) {
            classes.push(t.class_name.clone());
        }
    }
    let order = class_order(&classes);
    egui::Grid::new("concept-tcav")
        .num_columns(order.len() + 1)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            ui.label("");
            for &k in &order {
                ui.strong(&classes[k]);
            }
            ui.end_row();
            for c in &summary.criteria {
                ui.label(&c.title);
                for &k in &order {
                    match rows
                        .iter()
                        .find(|t| t.concept == c.name && t.class_name == classes[k])
                    {
                        Some(t) => {
                            let text = format!(
                                "{:.2}{}",
                                t.mean,
                                if t.significant && t.cav_separable {
                                    "*"
                                } else {
                                    ""
                                }
                            );
                            let mut rich = egui::RichText::new(text);
                            if !t.cav_separable {
                                rich = rich.weak();
                            } else if t.significant {
                                rich = rich.strong();
                            }
                            ui.label(rich).on_hover_text(format!(
                                "{} images; score {:.2} ± {:.2} over {} runs, random {:.2}; p \
                                 (Holm) {:.2e}; CAV held-out accuracy {:.2}",
                                t.class_images,
                                t.mean,
                                t.std,
                                t.scores.len(),
                                t.random_mean,
                                t.p_holm,
                                t.cav_accuracy()
                            ));
                        }
                        None => {
                            ui.label("–");
                        }
                    }
                }
                ui.end_row();
            }
        });
    ui.label(
        egui::RichText::new(
            "* significant after Holm over every criterion, class and layer (0.05); grey: the \
             criterion's CAVs do not separate it on held-out images, so the score says nothing.",
        )
        .weak(),
    );
}
