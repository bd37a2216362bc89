//! ε sweep panel: the open image attacked at a list of budgets on the model thread, the true
//! class's probability and the Grad-CAM's SSIM to the clean map plotted against ε, and each
//! budget's adversarial image and map; a click on a point or a thumbnail opens that ε in the
//! Attack tab.

use std::sync::Arc;

use eframe::egui;
use egui_plot::{GridMark, Legend, Line, MarkerShape, Plot, PlotPoints, Points};
use triscope::attack::AttackMethod;
use triscope::attack::report::sweep::{eps_label, parse_eps_list};
use triscope::explain::{Colormap, overlay_rgb8};
use triscope::io::plot::Slide;
use triscope::workbench::{RgbImage, SweepResult};

use super::attack::{color_image, method_menu};
use super::predictions::{ADV_COLOR, CLEAN_COLOR};

/// The map's curve: orange (Okabe-Ito), apart from the red of the fooled marks.
const SSIM_COLOR: egui::Color32 = egui::Color32::from_rgb(230, 159, 0);
use super::state::{SweepSettings, UiAction};

/// Where the sweep in flight is.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SweepProgress {
    pub request: u64,
    pub point: usize,
    pub points: usize,
    pub step: usize,
    pub total_steps: usize,
}

impl SweepProgress {
    fn fraction(&self) -> f32 {
        let within = if self.total_steps > 0 {
            self.step as f32 / self.total_steps as f32
        } else {
            0.0
        };
        (self.point as f32 + within) / self.points.max(1) as f32
    }
}

pub struct SweepPanel {
    pub settings: SweepSettings,
    pub multi_label: bool,
    /// The open image's name; `None` before the first analysis.
    pub image: Option<String>,
    pub progress: Option<SweepProgress>,
    pub result: Option<Arc<SweepResult>>,
    pub running: bool,
    /// The compare tab's model B, when it can be swept beside the workbench's model (same
    /// classes): its name.
    pub b_name: Option<String>,
    pub result_b: Option<Arc<SweepResult>>,
    pub running_b: bool,
    list_error: Option<String>,
    /// Per budget: the adversarial image and its Grad-CAM overlay (A, then B).
    thumbnails: Vec<(egui::TextureHandle, egui::TextureHandle)>,
    thumbnails_b: Vec<(egui::TextureHandle, egui::TextureHandle)>,
    pub actions: Vec<UiAction>,
}

/// Each budget's adversarial image and its map over it, as textures.
fn thumbnails(
    ctx: &egui::Context,
    tag: &str,
    result: &SweepResult,
) -> Vec<(egui::TextureHandle, egui::TextureHandle)> {
    result
        .sweep
        .points
        .iter()
        .zip(&result.adversarial)
        .enumerate()
        .map(|(i, (p, adv))| {
            let overlay = RgbImage {
                rgb: overlay_rgb8(&adv.rgb, &p.cam_map, Colormap::Jet, 0.45),
                ..adv.clone()
            };
            let load = |name: String, img: &RgbImage| {
                ctx.load_texture(name, color_image(img), egui::TextureOptions::LINEAR)
            };
            (
                load(format!("sweep-{tag}-adv-{i}"), adv),
                load(format!("sweep-{tag}-cam-{i}"), &overlay),
            )
        })
        .collect()
}

impl SweepPanel {
    pub fn new(settings: SweepSettings) -> Self {
        Self {
            settings,
            multi_label: false,
            image: None,
            progress: None,
            result: None,
            running: false,
            b_name: None,
            result_b: None,
            running_b: false,
            list_error: None,
            thumbnails: Vec::new(),
            thumbnails_b: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// A new image: the sweep of the old one no longer applies (the worker has cancelled it).
    pub fn set_image(&mut self, name: String) {
        self.image = Some(name);
        self.result = None;
        self.progress = None;
        self.running = false;
        self.thumbnails.clear();
        self.forget_b();
    }

    /// B's sweep no longer applies (another image, model or run).
    pub fn forget_b(&mut self) {
        self.result_b = None;
        self.running_b = false;
        self.thumbnails_b.clear();
    }

    pub fn set_result(&mut self, ctx: &egui::Context, result: Arc<SweepResult>) {
        self.thumbnails = thumbnails(ctx, "a", &result);
        self.result = Some(result);
        self.running = false;
    }

    pub fn set_result_b(&mut self, ctx: &egui::Context, result: Arc<SweepResult>) {
        self.thumbnails_b = thumbnails(ctx, "b", &result);
        self.result_b = Some(result);
        self.running_b = false;
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.controls(ui);
        ui.separator();
        if self.image.is_none() {
            ui.weak("Open an image to sweep ε on it.");
            return;
        }
        if let Some(p) = self.progress.filter(|_| self.running) {
            ui.horizontal(|ui| {
                let eps = self
                    .parsed_list()
                    .ok()
                    .and_then(|l| l.get(p.point).copied())
                    .map_or(String::new(), |e| format!(" (ε {})", eps_label(e * 255.0)));
                ui.add(
                    egui::ProgressBar::new(p.fraction())
                        .desired_width(260.0)
                        .text(format!(
                            "budget {} of {}{eps}, step {}/{}",
                            p.point + 1,
                            p.points,
                            p.step,
                            p.total_steps
                        )),
                );
                ui.spinner();
                if ui.button("Cancel").clicked() {
                    self.actions.push(UiAction::CancelSweep);
                }
            });
        }
        let Some(result) = self.result.clone() else {
            if !self.running {
                ui.weak(
                    "Run the sweep to see how the prediction and its explanation change with ε.",
                );
            }
            return;
        };
        let b = self.result_b.clone();
        Self::summary(ui, &result, b.as_ref().map(|_| "A"));
        if let Some(b) = &b {
            Self::summary(ui, b, Some("B"));
        }
        if let Some(i) = Self::plot(ui, &result, b.as_deref()) {
            self.actions.push(UiAction::ShowSweepPoint(i));
        }
        if b.is_some() || self.running_b {
            ui.strong(format!(
                "A: {}",
                super::slide::short_model(&result.sweep.model)
            ));
        }
        if let Some(i) = Self::strip(ui, &result, &self.thumbnails) {
            self.actions.push(UiAction::ShowSweepPoint(i));
        }
        match &b {
            Some(b) => {
                ui.strong(format!("B: {}", super::slide::short_model(&b.sweep.model)));
                if let Some(i) = Self::strip(ui, b, &self.thumbnails_b) {
                    self.actions.push(UiAction::ShowSweepPoint(i));
                }
            }
            None if self.running_b => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.weak("model B's sweep…");
                });
            }
            None => {}
        }
    }

    /// The sweep as a slide: its figure and, per budget, the prediction and the drift.
    pub fn slide(&self, model: Option<&triscope::workbench::ModelInfo>) -> Option<Slide> {
        let r = self.result.as_ref()?;
        let sweep = &r.sweep;
        let mut slide = Slide::new(
            "sweep",
            format!(
                "{} from ε = 0 to {}: p({}) and the Grad-CAM's drift",
                sweep.method.to_uppercase(),
                sweep
                    .points
                    .last()
                    .map_or(String::new(), |p| eps_label(p.eps_linf_x255)),
                sweep.true_class
            ),
            format!(
                "{} · {}",
                super::slide::model_name(model),
                super::gallery::file_name(std::path::Path::new(&sweep.image))
            ),
        );
        let f = &r.figure;
        slide.panel(
            "the true class's probability and the map's SSIM to the clean map",
            f.rgb.clone(),
            f.width,
            f.height,
        );
        if let Some(b) = &self.result_b {
            let f = &b.figure;
            slide.panel(
                format!(
                    "the same for model B, {}",
                    super::slide::short_model(&b.sweep.model)
                ),
                f.rgb.clone(),
                f.width,
                f.height,
            );
        }
        for p in &sweep.points {
            slide.number(
                format!("ε {}", eps_label(p.eps_linf_x255)),
                format!(
                    "{} {:.0}%, p({}) {:.2}, drift {:.3}{}",
                    p.prediction.class_name,
                    p.prediction.confidence * 100.0,
                    sweep.true_class,
                    p.true_class_probability,
                    p.drift,
                    if p.fooled { ", fooled" } else { "" }
                ),
            );
        }
        Some(slide)
    }

    fn parsed_list(&self) -> triscope::Result<Vec<f32>> {
        parse_eps_list(&self.settings.eps_list)
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        let s = &mut self.settings;
        ui.horizontal_wrapped(|ui| {
            method_menu(ui, &mut s.method, self.multi_label);
            if s.method == AttackMethod::Square {
                ui.add(egui::DragValue::new(&mut s.queries).range(10..=5000))
                    .on_hover_text("Square's queries at each ε");
                ui.label("queries");
            } else if s.method != AttackMethod::Fgsm {
                ui.add(egui::DragValue::new(&mut s.steps).range(1..=100));
                ui.label("steps");
            }
            ui.label("ε list:");
            ui.add(
                egui::TextEdit::singleline(&mut s.eps_list)
                    .desired_width(170.0)
                    .hint_text("0,0.5,1,2,4,8/255"),
            )
            .on_hover_text(
                "L∞ budgets: one denominator after the last value applies to all \
                 (0,1,2,4/255), or each its own (1/255,0.01)",
            );
        });
        self.list_error = self.parsed_list().err().map(|e| e.to_string());
        ui.horizontal_wrapped(|ui| {
            let can_run = self.image.is_some() && self.list_error.is_none();
            if let Some(b) = &self.b_name {
                ui.checkbox(
                    &mut self.settings.with_b,
                    format!("also model B ({b}, the Compare tab's)"),
                );
            }
            if ui
                .add_enabled(can_run, egui::Button::new("Run sweep"))
                .clicked()
                && let Ok(list) = self.parsed_list()
            {
                self.running = true;
                self.result = None;
                self.actions.push(UiAction::RunSweep(list));
            }
            match &self.list_error {
                Some(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                None => {
                    ui.weak(
                        "The same attack and seed at each ε; PGD's step is 2.5 ε / steps. The \
                         Grad-CAM explains the clean prediction's class.",
                    );
                }
            }
        });
    }

    /// What the sweep found, in a sentence (`tag`: "A" or "B" beside another model's).
    fn summary(ui: &mut egui::Ui, result: &SweepResult, tag: Option<&str>) {
        let sweep = &result.sweep;
        let first_flip = sweep.points.iter().find(|p| p.fooled);
        let text = match first_flip {
            Some(p) if p.eps_linf == 0.0 => format!(
                "The model already misses this image without an attack: {} for {}.",
                p.prediction.class_name, sweep.true_class
            ),
            Some(p) => format!(
                "{} first fools the model at ε = {}: {} became {} ({:.0}%).",
                sweep.method.to_uppercase(),
                eps_label(p.eps_linf_x255),
                sweep.clean.class_name,
                p.prediction.class_name,
                p.prediction.confidence * 100.0
            ),
            None => format!(
                "{} does not change the prediction ({}) at any ε up to {}.",
                sweep.method.to_uppercase(),
                sweep.clean.class_name,
                sweep
                    .points
                    .last()
                    .map_or(String::new(), |p| eps_label(p.eps_linf_x255))
            ),
        };
        let text = match tag {
            Some(t) => format!(
                "{t} ({}): {text}",
                super::slide::short_model(&result.sweep.model)
            ),
            None => text,
        };
        ui.label(egui::RichText::new(text).strong());
        if tag == Some("B") {
            return;
        }
        ui.small(format!(
            "{} · true class {} ({}) · {} step(s), step {}",
            Some(sweep.image.as_str())
                .map(|p| std::path::Path::new(p)
                    .file_name()
                    .map_or(p.to_string(), |n| n.to_string_lossy().into_owned()))
                .unwrap_or_default(),
            sweep.true_class,
            if sweep.true_class_source == "label" {
                "the image's label"
            } else {
                "the model's clean prediction; the image has no label"
            },
            sweep.steps,
            sweep.alpha_rule,
        ));
    }

    /// The curves; the index of a clicked budget.
    /// `b`: model B's sweep of the same budgets, drawn dashed.
    fn plot(ui: &mut egui::Ui, result: &SweepResult, b: Option<&SweepResult>) -> Option<usize> {
        let sweep = &result.sweep;
        let n = sweep.points.len();
        let curves = |r: &SweepResult| {
            let series = |f: &dyn Fn(&triscope::attack::report::sweep::SweepPoint) -> f64| {
                r.sweep
                    .points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| [i as f64, f(p)])
                    .collect::<Vec<_>>()
            };
            let prob = series(&|p| p.true_class_probability as f64);
            let ssim = series(&|p| p.cam.ssim);
            let fooled: Vec<[f64; 2]> = prob
                .iter()
                .zip(&r.sweep.points)
                .filter(|(_, p)| p.fooled)
                .map(|(xy, _)| *xy)
                .collect();
            (prob, ssim, fooled)
        };
        let (prob, ssim, fooled) = curves(result);
        let b_curves = b.filter(|b| b.sweep.points.len() == n).map(curves);
        let labels: Vec<String> = sweep
            .points
            .iter()
            .map(|p| eps_label(p.eps_linf_x255))
            .collect();
        let true_name = format!("p({})", sweep.true_class);
        let response = Plot::new("sweep-curves")
            .height(230.0)
            .allow_scroll(false)
            .allow_zoom(false)
            .allow_drag(false)
            .allow_boxed_zoom(false)
            .include_y(0.0)
            .include_y(1.0)
            .include_x(-0.25)
            .include_x(n as f64 - 0.75)
            .x_axis_label("ε (L∞), budgets evenly spaced")
            .y_axis_label("probability / SSIM")
            .x_grid_spacer(move |_| {
                (0..n)
                    .map(|i| GridMark {
                        value: i as f64,
                        step_size: 1.0,
                    })
                    .collect()
            })
            .x_axis_formatter(move |mark, _| {
                let i = mark.value.round();
                if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .legend(Legend::default())
            .show(ui, |plot| {
                plot.line(
                    Line::new(true_name.clone(), PlotPoints::from(prob.clone()))
                        .color(CLEAN_COLOR)
                        .width(2.0),
                );
                plot.points(
                    Points::new(true_name.clone(), PlotPoints::from(prob))
                        .color(CLEAN_COLOR)
                        .radius(4.0),
                );
                plot.line(
                    Line::new("Grad-CAM SSIM to clean", PlotPoints::from(ssim.clone()))
                        .color(SSIM_COLOR)
                        .width(2.0),
                );
                plot.points(
                    Points::new("Grad-CAM SSIM to clean", PlotPoints::from(ssim))
                        .color(SSIM_COLOR)
                        .radius(4.0),
                );
                plot.points(
                    Points::new("fooled", PlotPoints::from(fooled))
                        .shape(MarkerShape::Cross)
                        .color(ADV_COLOR)
                        .radius(8.0),
                );
                if let Some((prob_b, ssim_b, fooled_b)) = b_curves {
                    let dashed = egui_plot::LineStyle::dashed_dense();
                    for (name, pts, color) in [
                        (format!("{true_name}, B"), prob_b, CLEAN_COLOR),
                        ("Grad-CAM SSIM, B".to_string(), ssim_b, SSIM_COLOR),
                    ] {
                        plot.line(
                            Line::new(name, PlotPoints::from(pts))
                                .color(color)
                                .style(dashed)
                                .width(2.0),
                        );
                    }
                    plot.points(
                        Points::new("fooled", PlotPoints::from(fooled_b))
                            .shape(MarkerShape::Cross)
                            .color(ADV_COLOR)
                            .radius(8.0),
                    );
                }
                plot.pointer_coordinate()
            });
        let clicked = response.response.clicked();
        response
            .inner
            .filter(|_| clicked)
            .map(|p| p.x.round().clamp(0.0, n.saturating_sub(1) as f64) as usize)
    }

    /// Each budget's image and map with its prediction; the index of a clicked one.
    fn strip(
        ui: &mut egui::Ui,
        result: &SweepResult,
        thumbnails: &[(egui::TextureHandle, egui::TextureHandle)],
    ) -> Option<usize> {
        let mut clicked = None;
        let side = ((ui.available_width() - 16.0) / thumbnails.len().max(1) as f32 - 8.0)
            .clamp(72.0, 150.0);
        let size = egui::vec2(side, side);
        egui::ScrollArea::horizontal().show(ui, |ui| {
            ui.horizontal(|ui| {
                for (i, (p, (adv, cam))) in result.sweep.points.iter().zip(thumbnails).enumerate() {
                    ui.vertical(|ui| {
                        ui.set_width(side);
                        ui.label(format!("ε {}", eps_label(p.eps_linf_x255)));
                        for tex in [adv, cam] {
                            let hint =
                                format!("open ε {} in the Attack tab", eps_label(p.eps_linf_x255));
                            if ui
                                .add(
                                    egui::Image::new(tex)
                                        .fit_to_exact_size(size)
                                        .sense(egui::Sense::click()),
                                )
                                .on_hover_text(hint)
                                .clicked()
                            {
                                clicked = Some(i);
                            }
                        }
                        let text = format!(
                            "{} {:.0}%",
                            p.prediction.class_name,
                            p.prediction.confidence * 100.0
                        );
                        if p.fooled {
                            ui.colored_label(ADV_COLOR, text);
                        } else {
                            ui.label(text);
                        }
                        ui.small(format!("SSIM {:.3}", p.cam.ssim));
                    });
                }
            });
        });
        clicked
    }
}
