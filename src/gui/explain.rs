//! Explanation panel: the image with its Grad-CAM overlay (zoom, pan, opacity, colour map,
//! layer, class) and, for a DICOM image, its window (centre and width).

use std::sync::Arc;

use eframe::egui;
use triscope::explain::Colormap;
use triscope::explain::attribution::Method;
use triscope::io::dicom::{DicomInfo, Window};
use triscope::io::ground_truth::{GroundTruthRegion, RegionShape};
use triscope::model::LayerId;
use triscope::workbench::Analysis;

use super::overlay::{OverlayPainter, OverlaySource, OverlayStyle};
use super::state::{ExplainSettings, UiAction};

/// The overlay of each layer's Grad-CAM on the display image of an analysis.
pub fn layer_sources(analysis: &Analysis) -> Vec<Arc<OverlaySource>> {
    analysis
        .layers
        .iter()
        .enumerate()
        .map(|(i, view)| {
            Arc::new(OverlaySource {
                version: analysis.request * 8 + i as u64,
                image: analysis.display.clone(),
                heat: view.gradcam.map.clone(),
                heat_width: view.gradcam.width,
                heat_height: view.gradcam.height,
            })
        })
        .collect()
}

/// The overlay of the analysis' other attribution method, if it has one.
fn attribution_source(analysis: &Analysis) -> Option<Arc<OverlaySource>> {
    let m = analysis.attribution.as_ref()?;
    Some(Arc::new(OverlaySource {
        version: analysis.request * 8 + 4,
        image: analysis.display.clone(),
        heat: m.map.clone(),
        heat_width: m.width,
        heat_height: m.height,
    }))
}

/// What the ground-truth layer shows for the explained class: the region to draw (none when
/// the class has no box) and a description of it.
pub fn ground_truth_for<'a>(
    analysis: &'a Analysis,
    class_name: &str,
) -> Option<(Option<&'a GroundTruthRegion>, String)> {
    let gt = analysis.ground_truth.as_ref()?;
    // A mask (a lesion, the lungs) does not depend on the class; boxes belong to one finding
    // each.
    if let Some(mask) = gt.mask_region() {
        let what = if mask.finding == "lungs" {
            "lung outline".to_string()
        } else {
            format!("{} mask ({})", mask.finding, mask.dataset)
        };
        return Some((Some(mask), what));
    }
    if !gt
        .regions
        .iter()
        .any(|r| matches!(r.shape, RegionShape::Boxes { .. }))
    {
        return None;
    }
    Some(match gt.region_for(class_name) {
        Some(r) => {
            let n = match &r.shape {
                RegionShape::Boxes { boxes } => boxes.len(),
                RegionShape::Outline { .. } => 1,
            };
            let what = if n == 1 { "expert box" } else { "expert boxes" };
            (Some(r), format!("{what}: {} ({})", r.finding, r.dataset))
        }
        None => (
            None,
            format!("no expert box for {class_name} in this image"),
        ),
    })
}

/// "83% of the map inside the lungs; the lungs are 26% of the image; its peak is inside", for
/// a mask region and the map shown (when both are at the model's input size).
pub fn region_energy_line(region: &GroundTruthRegion, map: &OverlaySource) -> Option<String> {
    let RegionShape::Outline { mask, .. } = &region.shape else {
        return None;
    };
    let e = triscope::explain::quality::region_energy(&map.heat, mask, map.heat_width).ok()?;
    let name = if region.finding == "lungs" {
        "the lungs".to_string()
    } else {
        format!("the {}", region.finding)
    };
    if !e.energy_inside.is_finite() {
        return Some(format!(
            "The map is empty: nothing in the image raises this class's score, so none of it \
             lies inside {name}"
        ));
    }
    Some(format!(
        "{:.0}% of the map inside {name}; {name} {} {:.0}% of the image; its peak is {}",
        e.energy_inside * 100.0,
        if region.finding == "lungs" {
            "are"
        } else {
            "is"
        },
        e.region_fraction * 100.0,
        if e.peak_inside { "inside" } else { "outside" }
    ))
}

pub struct ExplainPanel {
    pub settings: ExplainSettings,
    pub analysis: Option<Arc<Analysis>>,
    pub sources: Vec<Arc<OverlaySource>>,
    attribution: Option<Arc<OverlaySource>>,
    pub class_names: Vec<String>,
    /// 1 = whole image; up to 16.
    pub zoom: f32,
    /// Centre of the view in texture coordinates.
    pub center: [f32; 2],
    pub painter: OverlayPainter,
    pub actions: Vec<UiAction>,
    /// The DICOM window the sliders show (modality units), for a grey DICOM image.
    pub window: Option<Window>,
    /// Ground-truth shapes drawn in the last frame (tests check the toggle with it).
    pub ground_truth_shapes: usize,
}

impl ExplainPanel {
    pub fn new(settings: ExplainSettings, gpu: bool) -> Self {
        Self {
            settings,
            analysis: None,
            sources: Vec::new(),
            attribution: None,
            class_names: Vec::new(),
            zoom: 1.0,
            center: [0.5, 0.5],
            painter: OverlayPainter::new(gpu),
            actions: Vec::new(),
            window: None,
            ground_truth_shapes: 0,
        }
    }

    pub fn set_analysis(&mut self, analysis: Arc<Analysis>) {
        // The sliders follow the window the worker applied (the file's or min-max for a new
        // image; the requested one after a slider move).
        self.window = analysis.dicom.as_ref().and_then(|d| d.window);
        self.sources = layer_sources(&analysis);
        self.attribution = attribution_source(&analysis);
        self.analysis = Some(analysis);
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.controls(ui);
        ui.separator();
        let Some(analysis) = self.analysis.clone() else {
            ui.centered_and_justified(|ui| {
                ui.spinner();
            });
            return;
        };
        let layer = self.settings.layer;
        let view = &analysis.layers[layer.index()];
        // Another method's map when the analysis has one for the current choice.
        let other = analysis
            .attribution
            .as_ref()
            .filter(|m| m.method == self.settings.method);
        let (method, class_index, detail) = match other {
            Some(m) => (
                m.method,
                m.class_index,
                match m.layer {
                    Some(l) => format!("at {} ({}×{} px map)", l.name(), m.width, m.height),
                    None => format!("on the input pixels ({}×{})", m.width, m.height),
                },
            ),
            None => (
                Method::GradCam,
                view.gradcam.class_index,
                format!(
                    "at {} ({}×{} upsampled to {}×{})",
                    layer.name(),
                    view.gradcam.raw_height,
                    view.gradcam.raw_width,
                    view.gradcam.height,
                    view.gradcam.width
                ),
            ),
        };
        let class = self
            .class_names
            .get(class_index)
            .cloned()
            .unwrap_or_else(|| class_index.to_string());
        ui.label(format!(
            "{} of “{class}” {detail}; file {}×{} px",
            method.label(),
            analysis.source_width,
            analysis.source_height,
        ));
        let truth = ground_truth_for(&analysis, &class);
        let labels = analysis
            .ground_truth
            .as_ref()
            .map(|g| g.labels.join(", "))
            .filter(|l| !l.is_empty());
        if truth.is_some() || labels.is_some() {
            ui.horizontal_wrapped(|ui| {
                if let Some((region, what)) = &truth {
                    ui.checkbox(&mut self.settings.show_ground_truth, "Ground truth")
                        .on_hover_text("Draw the annotated region over the image and the overlay");
                    if region.is_some() {
                        ui.label(what);
                    } else {
                        ui.weak(what);
                    }
                }
                if let Some(l) = &labels {
                    ui.weak(format!("label: {l}"));
                }
            });
        }
        let source = match (other, &self.attribution) {
            (Some(_), Some(src)) => Some(src.clone()),
            _ => self.sources.get(layer.index()).cloned(),
        };
        // How much of the shown map lies inside the mask (the lungs, a lesion), one line under
        // the image.
        let energy = match (&truth, &source) {
            (Some((Some(region), _)), Some(src)) => region_energy_line(region, src),
            _ => None,
        };
        let avail = ui.available_size();
        let reserve = if energy.is_some() { 22.0 } else { 0.0 };
        let side = avail.x.min(avail.y - reserve).max(64.0);
        let (rect, response) =
            ui.allocate_exact_size(egui::vec2(side, side), egui::Sense::click_and_drag());
        self.zoom_and_pan(ui, &response, rect);
        let half = 0.5 / self.zoom;
        let style = OverlayStyle {
            alpha: if self.settings.show_heatmap {
                self.settings.alpha
            } else {
                0.0
            },
            colormap: self.settings.colormap,
            uv_min: [self.center[0] - half, self.center[1] - half],
            uv_max: [self.center[0] + half, self.center[1] + half],
            ..OverlayStyle::default()
        };
        if let Some(src) = &source {
            self.painter.paint(ui, rect, "main", src, style);
        }
        self.ground_truth_shapes = 0;
        if let (true, Some((Some(region), _)), Some(gt)) = (
            self.settings.show_ground_truth,
            &truth,
            analysis.ground_truth.as_ref(),
        ) {
            let painter = ui.painter().with_clip_rect(rect.intersect(ui.clip_rect()));
            self.ground_truth_shapes = draw_region(&painter, rect, region, gt.resolution, &style);
        }
        response.on_hover_text("Scroll to zoom, drag to pan, double-click to reset");
        if let Some(line) = energy {
            ui.label(line);
        }
    }

    fn zoom_and_pan(&mut self, ui: &egui::Ui, response: &egui::Response, rect: egui::Rect) {
        if response.double_clicked() {
            self.zoom = 1.0;
            self.center = [0.5, 0.5];
        }
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.zoom = (self.zoom * (scroll * 0.005).exp()).clamp(1.0, 16.0);
            }
        }
        if response.dragged() {
            let d = response.drag_delta();
            self.center[0] -= d.x / rect.width() / self.zoom;
            self.center[1] -= d.y / rect.height() / self.zoom;
        }
        let half = 0.5 / self.zoom;
        for c in &mut self.center {
            *c = c.clamp(half, 1.0 - half);
        }
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        let s = &mut self.settings;
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut s.show_heatmap, "Heatmap");
            ui.add(
                egui::Slider::new(&mut s.alpha, 0.0..=1.0)
                    .text("opacity")
                    .fixed_decimals(2),
            );
            egui::ComboBox::from_label("colour map")
                .selected_text(s.colormap.name())
                .show_ui(ui, |ui| {
                    for c in Colormap::ALL {
                        ui.selectable_value(&mut s.colormap, c, c.name());
                    }
                });
        });
        ui.horizontal_wrapped(|ui| {
            let current = s.method;
            egui::ComboBox::from_label("method")
                .selected_text(current.label())
                .show_ui(ui, |ui| {
                    for m in Method::ALL {
                        if ui.selectable_label(current == m, m.label()).clicked() && m != current {
                            self.actions.push(UiAction::SelectMethod(m));
                        }
                    }
                });
        });
        ui.horizontal_wrapped(|ui| {
            ui.add_enabled_ui(s.method.uses_layer(), |ui| ui.label("Layer:"));
            for l in LayerId::ALL {
                if ui.selectable_label(s.layer == l, l.name()).clicked() && s.layer != l {
                    self.actions.push(UiAction::SelectLayer(l));
                }
            }
            ui.separator();
            let current = self
                .analysis
                .as_ref()
                .map(|a| a.target_class)
                .and_then(|c| self.class_names.get(c).cloned())
                .unwrap_or_else(|| "predicted".into());
            egui::ComboBox::from_label("class")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    if ui.selectable_label(false, "predicted class").clicked() {
                        self.actions.push(UiAction::ExplainClass(None));
                    }
                    for (i, name) in self.class_names.iter().enumerate() {
                        if ui.selectable_label(false, name).clicked() {
                            self.actions.push(UiAction::ExplainClass(Some(i)));
                        }
                    }
                });
            if self.zoom > 1.0 {
                ui.label(format!("zoom {:.1}×", self.zoom));
            }
        });
        let dicom = self.analysis.as_ref().and_then(|a| a.dicom.clone());
        if let Some(info) = dicom {
            self.dicom_controls(ui, &info);
        }
    }

    /// Window centre and width sliders for a grey DICOM image; a change asks for a new
    /// analysis with that window (the worker coalesces a drag into the latest value).
    fn dicom_controls(&mut self, ui: &mut egui::Ui, info: &DicomInfo) {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!(
                "DICOM {}, {} of {} bits{}",
                info.photometric,
                info.bits_stored,
                info.bits_allocated,
                if info.rescale_slope != 1.0 || info.rescale_intercept != 0.0 {
                    format!(
                        ", rescale {} x + {}",
                        info.rescale_slope, info.rescale_intercept
                    )
                } else {
                    String::new()
                }
            ));
        });
        let Some(mut w) = self.window.filter(|_| info.is_grey()) else {
            return;
        };
        let (lo, hi) = (info.value_min, info.value_max);
        let span = (hi - lo).max(1.0);
        let mut changed = false;
        ui.horizontal_wrapped(|ui| {
            ui.label("Window:");
            changed |= ui
                .add(
                    egui::Slider::new(&mut w.center, (lo - span / 2.0)..=(hi + span / 2.0))
                        .text("centre")
                        .max_decimals(1),
                )
                .changed();
            changed |= ui
                .add(
                    egui::Slider::new(&mut w.width, 1.0..=(2.0 * span + 1.0))
                        .text("width")
                        .max_decimals(1),
                )
                .changed();
            if info.file_window.is_some() && ui.button("File window").clicked() {
                self.actions.push(UiAction::DicomWindow(None));
            }
            if ui.button("Min-max").clicked() {
                self.actions
                    .push(UiAction::DicomWindow(Some(info.min_max_window())));
            }
        });
        if changed {
            self.window = Some(w);
            self.actions.push(UiAction::DicomWindow(Some(w)));
        }
    }
}

/// Draw a region (model-input pixels of a `resolution` square) over the view `rect`, which
/// shows the texture window `style.uv_min..uv_max`: a white 2-px line on a dark 4-px halo,
/// which reads over the image and both colour maps. Returns the shapes drawn.
fn draw_region(
    painter: &egui::Painter,
    rect: egui::Rect,
    region: &GroundTruthRegion,
    resolution: usize,
    style: &OverlayStyle,
) -> usize {
    let side = resolution.max(1) as f32;
    let span = [
        (style.uv_max[0] - style.uv_min[0]).max(1e-6),
        (style.uv_max[1] - style.uv_min[1]).max(1e-6),
    ];
    let to_screen = |x: f32, y: f32| {
        egui::pos2(
            rect.min.x + (x / side - style.uv_min[0]) / span[0] * rect.width(),
            rect.min.y + (y / side - style.uv_min[1]) / span[1] * rect.height(),
        )
    };
    let halo = egui::Stroke::new(4.0, egui::Color32::from_black_alpha(190));
    let line = egui::Stroke::new(2.0, egui::Color32::WHITE);
    let mut shapes = 0;
    match &region.shape {
        RegionShape::Outline { loops, .. } => {
            for l in loops.iter().filter(|l| l.len() > 2) {
                let points: Vec<egui::Pos2> = l.iter().map(|p| to_screen(p[0], p[1])).collect();
                painter.add(egui::Shape::closed_line(points.clone(), halo));
                painter.add(egui::Shape::closed_line(points, line));
                shapes += 1;
            }
        }
        RegionShape::Boxes { boxes } => {
            for b in boxes {
                let r = egui::Rect::from_two_pos(to_screen(b[0], b[1]), to_screen(b[2], b[3]));
                painter.rect_stroke(r, 0.0, halo, egui::StrokeKind::Middle);
                painter.rect_stroke(r, 0.0, line, egui::StrokeKind::Middle);
                shapes += 1;
            }
        }
    }
    shapes
}

#[cfg(test)]
mod tests {
    use super::*;
    use triscope::io::ground_truth::{GroundTruthRegion, RegionShape};
    use triscope::workbench::RgbImage;

    fn source(heat: Vec<f32>) -> OverlaySource {
        OverlaySource {
            version: 0,
            image: RgbImage {
                width: 2,
                height: 2,
                rgb: vec![0; 12],
            },
            heat,
            heat_width: 2,
            heat_height: 2,
        }
    }

    #[test]
    fn the_read_out_measures_a_map_and_says_when_it_is_empty() {
        let lungs = GroundTruthRegion {
            finding: "lungs".into(),
            dataset: "shenzhen-montgomery-cxr".into(),
            source: "masks/a.png".into(),
            shape: RegionShape::Outline {
                loops: Vec::new(),
                mask: vec![true, false, false, false],
            },
        };
        let line = region_energy_line(&lungs, &source(vec![3.0, 1.0, 0.0, 0.0])).unwrap();
        assert_eq!(
            line,
            "75% of the map inside the lungs; the lungs are 25% of the image; its peak is inside"
        );
        let empty = region_energy_line(&lungs, &source(vec![0.0; 4])).unwrap();
        assert!(empty.starts_with("The map is empty"), "{empty}");
    }
}
