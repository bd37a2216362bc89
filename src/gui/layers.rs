//! Layers panel: for layer1..layer4, the most active feature maps and the Grad-CAM at that
//! layer, side by side, under a clickable architecture strip.

use std::sync::Arc;

use eframe::egui;
use triscope::explain::Colormap;
use triscope::model::LayerId;
use triscope::workbench::{Analysis, MAX_TOP_K};

use super::overlay::{OverlayPainter, OverlaySource, OverlayStyle};
use super::state::UiAction;

pub struct LayersPanel {
    pub analysis: Option<Arc<Analysis>>,
    sources: Vec<Arc<OverlaySource>>,
    /// Feature-map textures per layer, built once per analysis.
    textures: Option<(u64, Vec<Vec<egui::TextureHandle>>)>,
    pub selected: LayerId,
    pub top_k: usize,
    pub colormap: Colormap,
    pub painter: OverlayPainter,
    pub actions: Vec<UiAction>,
}

impl LayersPanel {
    pub fn new(top_k: usize, gpu: bool) -> Self {
        Self {
            analysis: None,
            sources: Vec::new(),
            textures: None,
            selected: LayerId::Layer4,
            top_k,
            colormap: Colormap::Viridis,
            painter: OverlayPainter::new(gpu),
            actions: Vec::new(),
        }
    }

    /// `sources` are the analysis' per-layer overlays (built once, shared with Explanation).
    pub fn set_analysis(&mut self, analysis: Arc<Analysis>, sources: Vec<Arc<OverlaySource>>) {
        self.sources = sources;
        self.analysis = Some(analysis);
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.architecture_strip(ui);
        ui.horizontal(|ui| {
            let r = ui.add(
                egui::Slider::new(&mut self.top_k, 1..=MAX_TOP_K.min(32))
                    .text("feature maps per layer"),
            );
            if r.drag_stopped() || (r.changed() && !r.dragged()) {
                self.actions.push(UiAction::TopKChanged);
            }
        });
        ui.separator();
        let Some(analysis) = self.analysis.clone() else {
            ui.spinner();
            return;
        };
        self.ensure_textures(ui.ctx(), &analysis);
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for (i, view) in analysis.layers.iter().enumerate() {
                    let highlighted = view.layer == self.selected;
                    egui::Frame::group(ui.style())
                        .stroke(if highlighted {
                            ui.visuals().selection.stroke
                        } else {
                            ui.visuals().widgets.noninteractive.bg_stroke
                        })
                        .show(ui, |ui| {
                            ui.horizontal(|ui| {
                                ui.strong(view.layer.name());
                                ui.label(format!(
                                    "{} channels · {}×{} · stride {} · {}",
                                    view.channels,
                                    view.height,
                                    view.width,
                                    view.layer.stride(),
                                    stage_meaning(view.layer)
                                ));
                            });
                            ui.horizontal(|ui| {
                                let cam_side = 132.0;
                                let (rect, r) = ui.allocate_exact_size(
                                    egui::vec2(cam_side, cam_side),
                                    egui::Sense::click(),
                                );
                                if let Some(src) = self.sources.get(i) {
                                    let style = OverlayStyle {
                                        alpha: 0.5,
                                        ..OverlayStyle::default()
                                    };
                                    self.painter.paint(
                                        ui,
                                        rect,
                                        &format!("layers-cam-{i}"),
                                        src,
                                        style,
                                    );
                                }
                                if r.on_hover_text("Grad-CAM at this layer; click to show it in the Explanation tab").clicked() {
                                    self.actions.push(UiAction::SelectLayer(view.layer));
                                }
                                ui.separator();
                                ui.horizontal_wrapped(|ui| {
                                    let tiles = self
                                        .textures
                                        .as_ref()
                                        .and_then(|(_, t)| t.get(i))
                                        .map(|t| t.as_slice())
                                        .unwrap_or(&[]);
                                    for (tex, map) in tiles.iter().zip(&view.top_maps) {
                                        ui.add(
                                            egui::Image::new(tex)
                                                .fit_to_exact_size(egui::vec2(64.0, 64.0)),
                                        )
                                        .on_hover_text(format!(
                                            "channel {} · mean activation {:.3}",
                                            map.channel, map.mean_activation
                                        ));
                                    }
                                });
                            });
                        });
                }
            });
    }

    fn architecture_strip(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            ui.label("ResNet-50:");
            ui.add_enabled(false, egui::Button::new("stem 7×7/2 + pool"));
            for l in LayerId::ALL {
                ui.label("›");
                let blocks = [3, 4, 6, 3][l.index()];
                let text = format!("{} ({blocks} blocks)", l.name());
                if ui.selectable_label(self.selected == l, text).clicked() {
                    self.actions.push(UiAction::SelectLayer(l));
                }
            }
            ui.label("›");
            ui.add_enabled(false, egui::Button::new("avg pool + fc"));
        });
    }

    fn ensure_textures(&mut self, ctx: &egui::Context, analysis: &Analysis) {
        if self
            .textures
            .as_ref()
            .is_some_and(|(v, _)| *v == analysis.request)
        {
            return;
        }
        let lut = self.colormap.lut();
        let per_layer = analysis
            .layers
            .iter()
            .map(|view| {
                view.top_maps
                    .iter()
                    .map(|m| {
                        let rgb: Vec<u8> = m
                            .values
                            .iter()
                            .flat_map(|v| lut[(v.clamp(0.0, 1.0) * 255.0).round() as usize])
                            .collect();
                        let img = egui::ColorImage::from_rgb([view.width, view.height], &rgb);
                        ctx.load_texture(
                            format!("fmap-{}-{}", view.layer.name(), m.channel),
                            img,
                            egui::TextureOptions::NEAREST,
                        )
                    })
                    .collect()
            })
            .collect();
        self.textures = Some((analysis.request, per_layer));
    }
}

/// What a stage tends to respond to, for students reading the panel.
fn stage_meaning(layer: LayerId) -> &'static str {
    match layer {
        LayerId::Layer1 => "edges and texture",
        LayerId::Layer2 => "patterns and local shape",
        LayerId::Layer3 => "parts and structures",
        LayerId::Layer4 => "class-level evidence",
    }
}
