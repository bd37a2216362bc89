//! Prediction bars for every class: clean, and adversarial beside it after an attack.

use eframe::egui;
use triscope::inference::Prediction;
use triscope::inference::ood::OodScore;

use super::state::UiAction;

pub const CLEAN_COLOR: egui::Color32 = egui::Color32::from_rgb(66, 133, 244);
pub const ADV_COLOR: egui::Color32 = egui::Color32::from_rgb(229, 57, 53);

#[derive(Default)]
pub struct PredictionPanel {
    pub clean: Option<Prediction>,
    pub adversarial: Option<Prediction>,
    /// The image does not fit what the model was trained on (shown above the bars).
    pub input_warning: Option<String>,
    /// The image's score against the model's training distribution.
    pub out_of_distribution: Option<OodScore>,
    /// Bundled models made for what the image is (name, file), offered beside a warning.
    pub offers: Vec<(String, std::path::PathBuf)>,
    /// Class the explanation shows (highlighted).
    pub explained_class: Option<usize>,
    pub actions: Vec<UiAction>,
}

impl PredictionPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let Some(clean) = &self.clean else {
            ui.weak("No image analysed yet.");
            return;
        };
        let kind = if clean.multi_label {
            "sigmoid per finding"
        } else {
            "softmax"
        };
        ui.horizontal_wrapped(|ui| {
            ui.heading(&clean.class_name);
            ui.label(format!("{:.1}%", clean.confidence * 100.0));
        });
        if let Some(warning) = &self.input_warning {
            ui.colored_label(ui.visuals().warn_fg_color, format!("Warning: {warning}"));
        }
        if let Some(o) = self.out_of_distribution.filter(|o| o.flag) {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "Unlike this model's training data (out-of-distribution score {:.1}, \
                     threshold {:.1}): its prediction and explanations are not to be trusted",
                    o.score, o.threshold
                ),
            );
        }
        if !self.offers.is_empty() {
            ui.horizontal_wrapped(|ui| {
                ui.label("Open it with a model made for it:");
                for (name, path) in &self.offers {
                    if ui
                        .button(name)
                        .on_hover_text(path.display().to_string())
                        .clicked()
                    {
                        self.actions.push(UiAction::LoadModel(path.clone()));
                    }
                }
            });
        }
        if let Some(adv) = &self.adversarial {
            let flipped = adv.class_index != clean.class_index;
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(ADV_COLOR, "adversarial:");
                ui.strong(&adv.class_name);
                ui.label(format!("{:.1}%", adv.confidence * 100.0));
                if flipped {
                    ui.colored_label(ADV_COLOR, "(flipped)");
                }
            });
        }
        ui.weak(format!("{kind}; click a class to explain it"));
        ui.add_space(4.0);
        let bar_width = ui.available_width().max(120.0);
        for (i, score) in clean.scores.iter().enumerate() {
            let adv = self.adversarial.as_ref().and_then(|a| a.scores.get(i));
            let highlighted = self.explained_class == Some(i);
            let text = match adv {
                Some(a) => format!(
                    "{}  {:.1}%  (adv. {:.1}%)",
                    score.name,
                    score.probability * 100.0,
                    a.probability * 100.0
                ),
                None => format!("{}  {:.1}%", score.name, score.probability * 100.0),
            };
            let r = ui.add(egui::Button::selectable(highlighted, text).frame_when_inactive(false));
            if r.clicked() {
                self.actions.push(UiAction::ExplainClass(Some(i)));
            }
            let rows = if adv.is_some() { 2.0 } else { 1.0 };
            let (rect, _) =
                ui.allocate_exact_size(egui::vec2(bar_width, 7.0 * rows), egui::Sense::hover());
            let painter = ui.painter();
            painter.rect_filled(rect, 2.0, ui.visuals().faint_bg_color);
            let bar = |p: f32, row: f32, color| {
                let top = rect.top() + row * 7.0;
                let r = egui::Rect::from_min_size(
                    egui::pos2(rect.left(), top),
                    egui::vec2(rect.width() * p.clamp(0.0, 1.0), 6.0),
                );
                painter.rect_filled(r, 2.0, color);
            };
            bar(score.probability, 0.0, CLEAN_COLOR);
            if let Some(a) = adv {
                bar(a.probability, 1.0, ADV_COLOR);
            }
        }
        if !clean.positive_findings.is_empty() {
            ui.add_space(4.0);
            ui.label(format!(
                "Findings ≥ 50%: {}",
                clean.positive_findings.join(", ")
            ));
        }
        ui.add_space(4.0);
        if ui.button("Explain the predicted class").clicked() {
            self.actions.push(UiAction::ExplainClass(None));
        }
    }
}
