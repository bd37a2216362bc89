//! Attack panel: sliders that rerun the attack live, the loss curve step by step, the
//! adversarial image and its amplified perturbation, and the clean vs adversarial Grad-CAM
//! with their SSIM.

use std::sync::Arc;

use eframe::egui;
use egui_plot::{Axis, Line, Plot, PlotPoints};
use triscope::attack::AttackMethod;
use triscope::io::plot::tick_label;
use triscope::model::LayerId;
use triscope::workbench::{Analysis, AttackRequest, AttackResult, RgbImage};

use super::axes::linear_marks;
use super::overlay::{OverlayPainter, OverlaySource, OverlayStyle};
use super::predictions::ADV_COLOR;
use super::state::{AttackSettings, UiAction};

/// Methods offered in the panel.
const METHODS: [(AttackMethod, &str); 5] = [
    (AttackMethod::Fgsm, "FGSM"),
    (AttackMethod::Pgd, "PGD (L∞, random start)"),
    (AttackMethod::ApgdCe, "APGD-CE"),
    (AttackMethod::Square, "Square (gradient-free)"),
    (AttackMethod::FabT, "FAB-T (smallest perturbation)"),
];

/// Progress of the attack in flight.
#[derive(Debug, Default, Clone)]
pub struct AttackProgress {
    pub request: u64,
    pub step: usize,
    pub total_steps: usize,
    pub losses: Vec<f32>,
}

pub struct AttackPanel {
    pub settings: AttackSettings,
    pub class_names: Vec<String>,
    pub multi_label: bool,
    pub clean: Option<Arc<Analysis>>,
    pub progress: Option<AttackProgress>,
    pub result: Option<Arc<AttackResult>>,
    /// Layer of the clean-vs-adversarial Grad-CAM.
    pub layer: LayerId,
    /// Set while a request is in flight.
    pub running: bool,
    clean_tex: Option<(u64, egui::TextureHandle)>,
    /// The adversarial image of the latest step (live) or result.
    adv_tex: Option<egui::TextureHandle>,
    perturbation_tex: Option<(u64, egui::TextureHandle)>,
    cam_sources: Option<(Arc<OverlaySource>, Arc<OverlaySource>)>,
    pub painter: OverlayPainter,
    pub actions: Vec<UiAction>,
}

impl AttackPanel {
    pub fn new(settings: AttackSettings, gpu: bool) -> Self {
        Self {
            settings,
            class_names: Vec::new(),
            multi_label: false,
            clean: None,
            progress: None,
            result: None,
            layer: LayerId::Layer4,
            running: false,
            clean_tex: None,
            adv_tex: None,
            perturbation_tex: None,
            cam_sources: None,
            painter: OverlayPainter::new(gpu),
            actions: Vec::new(),
        }
    }

    /// The request the current settings describe.
    pub fn request(&self) -> AttackRequest {
        let s = &self.settings;
        let steps = if s.method == AttackMethod::Square {
            s.queries.max(1)
        } else {
            s.steps.max(1)
        };
        let mut r = AttackRequest::new(s.method, s.eps_linf_x255 / 255.0, steps);
        r.config.alpha = s.step_255 / 255.0;
        r.target =
            (s.targeted && !self.multi_label && s.method.takes_target()).then_some(s.target_class);
        r.layer = self.layer;
        r
    }

    pub fn set_clean(&mut self, analysis: Arc<Analysis>) {
        self.clean = Some(analysis);
        self.result = None;
        self.progress = None;
        self.adv_tex = None;
        self.cam_sources = None;
    }

    pub fn on_step(&mut self, ctx: &egui::Context, p: AttackProgress, image: Option<&RgbImage>) {
        if let Some(img) = image {
            set_texture(ctx, &mut self.adv_tex, "attack-adv", img);
        }
        self.progress = Some(p);
    }

    pub fn set_result(&mut self, ctx: &egui::Context, result: Arc<AttackResult>) {
        set_texture(ctx, &mut self.adv_tex, "attack-adv", &result.adversarial);
        self.perturbation_tex = Some((
            result.request,
            ctx.load_texture(
                "attack-perturbation",
                color_image(&result.perturbation),
                egui::TextureOptions::NEAREST,
            ),
        ));
        let src = |version: u64, image: &RgbImage, cam: &triscope::explain::GradCamMap| {
            Arc::new(OverlaySource {
                version,
                image: image.clone(),
                heat: cam.map.clone(),
                heat_width: cam.width,
                heat_height: cam.height,
            })
        };
        if let Some(clean) = &self.clean {
            self.cam_sources = Some((
                src(result.request * 2, &clean.model_input, &result.clean_cam),
                src(
                    result.request * 2 + 1,
                    &result.adversarial,
                    &result.adversarial_cam,
                ),
            ));
        }
        self.progress = Some(AttackProgress {
            request: result.request,
            step: result.loss_per_step.len(),
            total_steps: result.loss_per_step.len(),
            losses: result.loss_per_step.clone(),
        });
        self.result = Some(result);
        self.running = false;
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.controls(ui);
        ui.separator();
        let Some(clean) = self.clean.clone() else {
            ui.weak("Open an image to attack it.");
            return;
        };
        if self
            .clean_tex
            .as_ref()
            .is_none_or(|(v, _)| *v != clean.request)
        {
            self.clean_tex = Some((
                clean.request,
                ui.ctx().load_texture(
                    "attack-clean",
                    color_image(&clean.model_input),
                    egui::TextureOptions::LINEAR,
                ),
            ));
        }
        self.progress_ui(ui);
        let side = ((ui.available_width() - 24.0) / 3.0).clamp(96.0, 260.0);
        let size = egui::vec2(side, side);
        ui.horizontal(|ui| {
            captioned(ui, "clean", |ui| {
                if let Some((_, t)) = &self.clean_tex {
                    ui.add(egui::Image::new(t).fit_to_exact_size(size));
                }
            });
            captioned(ui, "adversarial", |ui| match &self.adv_tex {
                Some(t) => {
                    ui.add(egui::Image::new(t).fit_to_exact_size(size));
                }
                None => {
                    ui.allocate_exact_size(size, egui::Sense::hover());
                }
            });
            let caption = match &self.result {
                Some(r) => format!(
                    "perturbation (×{:.0}, L∞ {:.2}/255)",
                    if r.linf_255 > 0.0 {
                        127.5 / r.linf_255
                    } else {
                        0.0
                    },
                    r.linf_255
                ),
                None => "perturbation".into(),
            };
            captioned(ui, &caption, |ui| match &self.perturbation_tex {
                Some((_, t)) => {
                    ui.add(egui::Image::new(t).fit_to_exact_size(size));
                }
                None => {
                    ui.allocate_exact_size(size, egui::Sense::hover());
                }
            });
        });
        if let (Some(result), Some((clean_src, adv_src))) =
            (self.result.clone(), self.cam_sources.clone())
        {
            ui.add_space(4.0);
            let class = self
                .class_names
                .get(result.clean.class_index)
                .cloned()
                .unwrap_or_default();
            ui.label(format!(
                "Grad-CAM of “{class}” at {}: SSIM {:.3}, Spearman {:.3} between clean and adversarial",
                result.params.layer.name(),
                result.cam_ssim,
                result.cam_spearman
            ));
            ui.horizontal(|ui| {
                let style = OverlayStyle {
                    alpha: 0.5,
                    ..OverlayStyle::default()
                };
                captioned(ui, "clean Grad-CAM", |ui| {
                    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                    self.painter
                        .paint(ui, rect, "attack-cam-clean", &clean_src, style);
                });
                captioned(ui, "adversarial Grad-CAM", |ui| {
                    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                    self.painter
                        .paint(ui, rect, "attack-cam-adv", &adv_src, style);
                });
            });
        }
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        let mut changed = false;
        let s = &mut self.settings;
        ui.horizontal_wrapped(|ui| {
            changed |= method_menu(ui, &mut s.method, self.multi_label);
            if ui.button("Run again").clicked() {
                changed = true;
            }
        });
        changed |= ui
            .add(
                egui::Slider::new(&mut s.eps_linf_x255, 0.0..=16.0)
                    .step_by(0.25)
                    .text("ε (L∞)")
                    .custom_formatter(|v, _| format!("{v}/255")),
            )
            .changed();
        if s.method == AttackMethod::Square {
            changed |= ui
                .add(
                    egui::Slider::new(&mut s.queries, 10..=5000)
                        .logarithmic(true)
                        .text("queries"),
                )
                .changed();
            ui.weak(
                "Square needs no gradient: each query is one forward pass, and it stops once \
                 the image is fooled. A robust image takes every query (AutoAttack runs 5,000).",
            );
        } else {
            ui.add_enabled_ui(s.method != AttackMethod::Fgsm, |ui| {
                ui.add_enabled_ui(s.method != AttackMethod::FabT, |ui| {
                    changed |= ui
                        .add(
                            egui::Slider::new(&mut s.step_255, 0.1..=4.0)
                                .step_by(0.05)
                                .text("step size")
                                .custom_formatter(|v, _| format!("{v:.2}/255")),
                        )
                        .changed();
                });
                changed |= ui
                    .add(egui::Slider::new(&mut s.steps, 1..=100).text("steps"))
                    .changed();
            });
            if s.method == AttackMethod::FabT {
                ui.weak(
                    "FAB-T looks for the smallest perturbation that moves the image to each \
                     runner-up class in turn (steps per class); the image is fooled only if \
                     that perturbation fits in ε. AutoAttack runs 100 steps.",
                );
            }
        }
        ui.horizontal_wrapped(|ui| {
            ui.add_enabled_ui(!self.multi_label && s.method.takes_target(), |ui| {
                changed |= ui.checkbox(&mut s.targeted, "targeted").changed();
            });
            if s.targeted && !self.multi_label && s.method.takes_target() {
                let name = self
                    .class_names
                    .get(s.target_class)
                    .cloned()
                    .unwrap_or_default();
                egui::ComboBox::from_label("target class")
                    .selected_text(name)
                    .show_ui(ui, |ui| {
                        for (i, n) in self.class_names.iter().enumerate() {
                            changed |= ui.selectable_value(&mut s.target_class, i, n).changed();
                        }
                    });
            }
        });
        if !s.method.takes_target() {
            s.targeted = false;
        }
        if changed {
            self.actions.push(UiAction::RunAttack);
        }
    }

    fn progress_ui(&mut self, ui: &mut egui::Ui) {
        let Some(p) = &self.progress else {
            ui.weak("Move a slider to attack the image.");
            return;
        };
        ui.horizontal(|ui| {
            let frac = if p.total_steps > 0 {
                p.step as f32 / p.total_steps as f32
            } else {
                0.0
            };
            ui.add(
                egui::ProgressBar::new(frac)
                    .desired_width(220.0)
                    .text(format!(
                        "{} {}/{}",
                        if self.settings.method == AttackMethod::Square {
                            "query"
                        } else {
                            "step"
                        },
                        p.step,
                        p.total_steps
                    )),
            );
            if self.running {
                ui.spinner();
            }
            if let Some(r) = &self.result {
                let flipped = r.adversarial_prediction.class_index != r.clean.class_index;
                ui.label(format!(
                    "clean {}, adversarial {}{}  ·  {:.2} s ({:.3} s/step)",
                    r.clean.class_name,
                    r.adversarial_prediction.class_name,
                    if flipped { " (flipped)" } else { "" },
                    r.elapsed_secs,
                    r.secs_per_step
                ));
            }
        });
        let points: PlotPoints = p
            .losses
            .iter()
            .enumerate()
            .map(|(i, l)| [(i + 1) as f64, *l as f64])
            .collect();
        Plot::new("attack-loss")
            .height(120.0)
            .allow_scroll(false)
            .allow_zoom(false)
            .allow_drag(false)
            .x_axis_label("step")
            .y_axis_label("loss")
            .x_grid_spacer(|input| linear_marks(input, Axis::X, true))
            .y_grid_spacer(|input| linear_marks(input, Axis::Y, false))
            .y_axis_formatter(|mark, _| tick_label(mark.value))
            .show(ui, |plot| {
                plot.line(Line::new("attack loss", points).color(ADV_COLOR));
            });
    }
}

/// The attack menu (the Attack and ε sweep tabs); true when the choice changed.
pub(super) fn method_menu(ui: &mut egui::Ui, method: &mut AttackMethod, multi_label: bool) -> bool {
    let mut changed = false;
    egui::ComboBox::from_label("attack")
        .selected_text(
            METHODS
                .iter()
                .find(|(m, _)| m == method)
                .map(|(_, n)| *n)
                .unwrap_or("?"),
        )
        .show_ui(ui, |ui| {
            for (m, name) in METHODS {
                // The library's rule (`AttackRequest::validate`): a method that picks its own
                // targets among the runner-up classes of one softmax needs single-label classes.
                let fits = !multi_label || m.takes_target();
                ui.add_enabled_ui(fits, |ui| {
                    changed |= ui.selectable_value(method, m, name).changed();
                });
            }
        });
    changed
}

fn captioned(ui: &mut egui::Ui, caption: &str, add: impl FnOnce(&mut egui::Ui)) {
    ui.vertical(|ui| {
        add(ui);
        ui.small(caption);
    });
}

pub fn color_image(img: &RgbImage) -> egui::ColorImage {
    egui::ColorImage::from_rgb([img.width, img.height], &img.rgb)
}

fn set_texture(
    ctx: &egui::Context,
    slot: &mut Option<egui::TextureHandle>,
    name: &str,
    img: &RgbImage,
) {
    let image = color_image(img);
    match slot {
        Some(t) => t.set(image, egui::TextureOptions::LINEAR),
        None => *slot = Some(ctx.load_texture(name, image, egui::TextureOptions::LINEAR)),
    }
}
