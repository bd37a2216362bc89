//! Compare panel: the workbench's model (A) beside a second one (B) on the same image, each on
//! its own model thread: predictions, the Grad-CAM of the same class on one colour scale, how
//! far the two maps agree, and both attacked with the same request to show which one holds.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;
use triscope::explain::quality::{MapAgreement, agreement};
use triscope::explain::{Colormap, GradCamMap, heatmap_rgb8, overlay_rgb8};
use triscope::inference::Prediction;
use triscope::io::plot::Slide;
use triscope::model::LayerId;
use triscope::workbench::{Analysis, AttackResult, ModelInfo, RgbImage};

use super::attack::color_image;
use super::predictions::{ADV_COLOR, CLEAN_COLOR};
use super::state::UiAction;

/// One side of the comparison.
#[derive(Default)]
struct Side {
    analysis: Option<Arc<Analysis>>,
    attack: Option<Arc<AttackResult>>,
    /// The map over the image, and its texture.
    clean: Option<(RgbImage, egui::TextureHandle)>,
    adversarial: Option<(RgbImage, egui::TextureHandle)>,
}

pub struct ComparePanel {
    /// Bundled models offered as B: name and file.
    pub offers: Vec<(String, PathBuf)>,
    /// The file chosen as B.
    pub chosen: Option<PathBuf>,
    pub model_a: Option<Arc<ModelInfo>>,
    pub model_b: Option<Arc<ModelInfo>>,
    /// Why the two cannot be compared (other classes), said instead of the maps.
    pub refusal: Option<String>,
    /// The layer the maps explain.
    pub layer: LayerId,
    /// Set while B loads or analyses.
    pub waiting_b: bool,
    a: Side,
    b: Side,
    pub clean_agreement: Option<MapAgreement>,
    pub adversarial_agreement: Option<MapAgreement>,
    scale_tex: Option<egui::TextureHandle>,
    pub actions: Vec<UiAction>,
}

impl ComparePanel {
    pub fn new(offers: Vec<(String, PathBuf)>) -> Self {
        Self {
            offers,
            chosen: None,
            model_a: None,
            model_b: None,
            refusal: None,
            layer: LayerId::Layer4,
            waiting_b: false,
            a: Side::default(),
            b: Side::default(),
            clean_agreement: None,
            adversarial_agreement: None,
            scale_tex: None,
            actions: Vec::new(),
        }
    }

    /// Why models `a` and `b` cannot be compared on one image, if they cannot.
    pub fn incompatible(a: &ModelInfo, b: &ModelInfo) -> Option<String> {
        let (ca, cb) = (&a.config, &b.config);
        (ca.class_names != cb.class_names).then(|| {
            format!(
                "The two models do not share their classes (A: {}; B: {}): their maps would \
                 explain different things, so they are not compared. Choose a model trained on \
                 the same classes.",
                ca.class_names.join(", "),
                cb.class_names.join(", ")
            )
        })
    }

    pub fn analysis_a(&self) -> Option<&Arc<Analysis>> {
        self.a.analysis.as_ref()
    }

    #[cfg(test)]
    pub fn analysis_b(&self) -> Option<&Arc<Analysis>> {
        self.b.analysis.as_ref()
    }

    #[cfg(test)]
    pub fn attack_b(&self) -> Option<&Arc<AttackResult>> {
        self.b.attack.as_ref()
    }

    /// A new analysis of A's image: B's (and both attacks) are stale until B answers.
    pub fn set_a(&mut self, ctx: &egui::Context, analysis: Arc<Analysis>) {
        self.a = Side::default();
        self.b.attack = None;
        self.b.adversarial = None;
        self.a.clean = cam_texture(ctx, "compare-a", &analysis.model_input, self.cam(&analysis));
        self.a.analysis = Some(analysis);
        self.update_agreement();
    }

    pub fn set_b(&mut self, ctx: &egui::Context, analysis: Arc<Analysis>) {
        self.b.clean = cam_texture(ctx, "compare-b", &analysis.model_input, self.cam(&analysis));
        self.b.analysis = Some(analysis);
        self.waiting_b = false;
        self.update_agreement();
    }

    /// An attack's result for model A (`b` false) or B.
    pub fn set_attack(&mut self, ctx: &egui::Context, b: bool, result: Arc<AttackResult>) {
        let (side, name) = if b {
            (&mut self.b, "compare-b-adv")
        } else {
            (&mut self.a, "compare-a-adv")
        };
        side.adversarial = cam_texture(
            ctx,
            name,
            &result.adversarial,
            Some(&result.adversarial_cam),
        );
        side.attack = Some(result);
        self.update_agreement();
    }

    /// B changed: forget its answers.
    pub fn reset_b(&mut self) {
        self.b = Side::default();
        self.refusal = None;
        self.clean_agreement = None;
        self.adversarial_agreement = None;
    }

    fn cam<'a>(&self, analysis: &'a Analysis) -> Option<&'a GradCamMap> {
        analysis
            .layers
            .iter()
            .find(|l| l.layer == self.layer)
            .map(|l| &l.gradcam)
    }

    fn update_agreement(&mut self) {
        let of = |m: &GradCamMap, n: &GradCamMap| {
            agreement(&m.map, (m.height, m.width), &n.map, (n.height, n.width))
        };
        self.clean_agreement = match (&self.a.analysis, &self.b.analysis) {
            (Some(a), Some(b)) if self.refusal.is_none() => {
                self.cam(a).zip(self.cam(b)).map(|(m, n)| of(m, n))
            }
            _ => None,
        };
        self.adversarial_agreement = match (&self.a.attack, &self.b.attack) {
            (Some(a), Some(b)) if a.params == b.params && self.refusal.is_none() => {
                Some(of(&a.adversarial_cam, &b.adversarial_cam))
            }
            _ => None,
        };
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, attack_summary: &str) {
        self.controls(ui);
        ui.separator();
        if let Some(r) = &self.refusal {
            ui.colored_label(ui.visuals().warn_fg_color, r);
            return;
        }
        let (Some(a), Some(model_a)) = (self.a.analysis.clone(), self.model_a.clone()) else {
            ui.weak("Open an image to compare two models on it.");
            return;
        };
        let Some(model_b) = self.model_b.clone() else {
            ui.weak("Choose a second model above: it runs on its own thread beside the first.");
            return;
        };
        let class = explained_class(&model_a, &a);
        ui.label(format!(
            "Both maps: Grad-CAM of “{class}” at {}, each min-max normalised to [0, 1] as \
             Grad-CAM defines it, drawn on one colour scale.",
            self.layer.name()
        ));
        self.scale_bar(ui);
        let side = ((ui.available_width() - 40.0) / 4.0).clamp(110.0, 240.0);
        let size = egui::vec2(side, side);
        ui.columns(2, |cols| {
            let sides = [
                (super::slide::model_name(Some(&model_a)), &self.a, false),
                (
                    super::slide::model_name(Some(&model_b)),
                    &self.b,
                    self.waiting_b,
                ),
            ];
            for (col, (name, s, waiting)) in cols.iter_mut().zip(sides) {
                column(col, &name, s, size, waiting);
            }
        });
        ui.separator();
        match &self.clean_agreement {
            Some(g) => {
                ui.label(egui::RichText::new(agreement_line("clean image", g)).strong());
            }
            None if self.b.analysis.is_none() => {
                ui.weak("Waiting for B's map…");
            }
            None => {}
        }
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Attack both")
                .on_hover_text("The Attack tab's settings, the same request for each model")
                .clicked()
            {
                self.actions.push(UiAction::AttackBoth);
            }
            ui.weak(attack_summary);
        });
        if let Some(g) = &self.adversarial_agreement {
            ui.label(agreement_line("adversarial images", g));
        }
    }

    /// The comparison as a slide: each model's map, clean and attacked, and the agreement.
    pub fn slide(&self) -> Option<Slide> {
        let (a, model_a, model_b) = (
            self.a.analysis.as_ref()?,
            self.model_a.as_ref()?,
            self.model_b.as_ref()?,
        );
        self.b.analysis.as_ref()?;
        let name = |m: &ModelInfo| super::slide::model_name(Some(m));
        let class = explained_class(model_a, a);
        let mut slide = Slide::new(
            "compare",
            format!(
                "{} vs {}: Grad-CAM of “{class}”",
                name(model_a),
                name(model_b)
            ),
            super::gallery::file_name(&a.path),
        );
        for (m, s) in [(model_a, &self.a), (model_b, &self.b)] {
            let (Some(an), Some((img, _))) = (&s.analysis, &s.clean) else {
                continue;
            };
            slide.panel(
                format!("{}: {}", name(m), top_classes(&an.prediction)),
                img.rgb.clone(),
                img.width,
                img.height,
            );
            if let (Some(r), Some((img, _))) = (&s.attack, &s.adversarial) {
                let p = &r.adversarial_prediction;
                slide.panel(
                    format!("attacked: {} {:.0}%", p.class_name, p.confidence * 100.0),
                    img.rgb.clone(),
                    img.width,
                    img.height,
                );
            }
        }
        for (what, g) in [
            ("clean", &self.clean_agreement),
            ("adversarial", &self.adversarial_agreement),
        ] {
            if let Some(g) = g {
                slide.number(
                    format!("map agreement, {what}"),
                    format!(
                        "SSIM {:.3} · Spearman {:.3} · top-15% {:.3}",
                        g.ssim, g.spearman, g.top15_intersection
                    ),
                );
            }
        }
        if let Some(r) = &self.a.attack {
            slide.number("attack", r.params.describe());
        }
        Some(slide)
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!(
                "A: {}",
                self.model_a
                    .as_ref()
                    .map_or("loading…".to_string(), |m| m.source.clone())
            ));
            ui.separator();
            let chosen_name = self
                .chosen
                .as_ref()
                .and_then(|p| self.offers.iter().find(|(_, f)| f == p))
                .map_or("choose…".to_string(), |(n, _)| n.clone());
            egui::ComboBox::from_label("B")
                .selected_text(chosen_name)
                .show_ui(ui, |ui| {
                    for (name, file) in &self.offers {
                        if ui
                            .selectable_label(self.chosen.as_ref() == Some(file), name)
                            .clicked()
                        {
                            self.actions.push(UiAction::CompareWith(file.clone()));
                        }
                    }
                });
            if self.waiting_b {
                ui.spinner();
            }
        });
    }

    fn scale_bar(&mut self, ui: &mut egui::Ui) {
        let tex = self.scale_tex.get_or_insert_with(|| {
            let ramp: Vec<f32> = (0..256).map(|i| i as f32 / 255.0).collect();
            let rgb = heatmap_rgb8(&ramp, Colormap::Jet);
            ui.ctx().load_texture(
                "compare-scale",
                egui::ColorImage::from_rgb([256, 1], &rgb),
                egui::TextureOptions::LINEAR,
            )
        });
        ui.horizontal(|ui| {
            ui.small("0");
            ui.add(
                egui::Image::new(&*tex)
                    .maintain_aspect_ratio(false)
                    .fit_to_exact_size(egui::vec2(200.0, 10.0)),
            );
            ui.small("1");
        });
    }
}

fn column(ui: &mut egui::Ui, name: &str, s: &Side, size: egui::Vec2, waiting: bool) {
    ui.strong(name);
    let Some(a) = &s.analysis else {
        if waiting {
            ui.spinner();
        }
        return;
    };
    ui.label(top_classes(&a.prediction));
    ui.horizontal(|ui| {
        if let Some((_, t)) = &s.clean {
            ui.vertical(|ui| {
                ui.add(egui::Image::new(t).fit_to_exact_size(size));
                ui.small("clean");
            });
        }
        if let (Some((_, t)), Some(r)) = (&s.adversarial, &s.attack) {
            ui.vertical(|ui| {
                ui.add(egui::Image::new(t).fit_to_exact_size(size));
                let p = &r.adversarial_prediction;
                let fooled = p.class_index != r.clean.class_index;
                let text = format!(
                    "attacked: {} {:.0}%{}",
                    p.class_name,
                    p.confidence * 100.0,
                    if fooled { " (fooled)" } else { " (holds)" }
                );
                ui.colored_label(if fooled { ADV_COLOR } else { CLEAN_COLOR }, text);
            });
        }
    });
}

/// The class both maps explain: the one A's analysis explains.
fn explained_class(model_a: &ModelInfo, a: &Analysis) -> String {
    model_a
        .config
        .class_names
        .get(a.target_class)
        .cloned()
        .unwrap_or_default()
}

fn top_classes(p: &Prediction) -> String {
    let mut scores: Vec<_> = p.scores.iter().collect();
    scores.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    scores
        .iter()
        .take(3)
        .map(|s| format!("{} {:.0}%", s.name, s.probability * 100.0))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn agreement_line(what: &str, g: &MapAgreement) -> String {
    format!(
        "Map agreement on the {what}: SSIM {:.3} · Spearman {:.3} · top-15% overlap {:.3}{}",
        g.ssim,
        g.spearman,
        g.top15_intersection,
        if g.resized {
            " (B's map resized to A's input size first)"
        } else {
            ""
        }
    )
}

fn cam_texture(
    ctx: &egui::Context,
    name: &str,
    image: &RgbImage,
    cam: Option<&GradCamMap>,
) -> Option<(RgbImage, egui::TextureHandle)> {
    let cam = cam?;
    // The map is at model input size, as the image.
    if cam.map.len() != image.width * image.height {
        return None;
    }
    let overlay = RgbImage {
        rgb: overlay_rgb8(&image.rgb, &cam.map, Colormap::Jet, 0.45),
        ..image.clone()
    };
    let tex = ctx.load_texture(name, color_image(&overlay), egui::TextureOptions::LINEAR);
    Some((overlay, tex))
}
