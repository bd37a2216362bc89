//! Heatmap-over-image drawing with the WGSL shader in `shaders/overlay.wgsl`, through an
//! egui-wgpu paint callback. Textures are uploaded once per new result (keyed by slot and
//! version); each frame only writes a 32-byte uniform. Without a wgpu renderer the same
//! picture is composed on the CPU once per change and shown as an egui texture.

use std::collections::HashMap;
use std::sync::Arc;

use eframe::egui;
use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, wgpu};
use triscope::explain::{Colormap, overlay_rgb8};
use triscope::workbench::RgbImage;

/// An image and a [0, 1] heatmap of the same aspect, identified by `version`.
#[derive(Debug)]
pub struct OverlaySource {
    pub version: u64,
    pub image: RgbImage,
    pub heat: Vec<f32>,
    pub heat_width: usize,
    pub heat_height: usize,
}

/// How to draw it this frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayStyle {
    pub alpha: f32,
    pub colormap: Colormap,
    /// Grey ramp instead of a colour map (feature maps).
    pub grey: bool,
    /// Heatmap alone, no image underneath.
    pub heat_only: bool,
    /// Visible part of the image in [0, 1] texture coordinates (zoom and pan).
    pub uv_min: [f32; 2],
    pub uv_max: [f32; 2],
}

impl Default for OverlayStyle {
    fn default() -> Self {
        Self {
            alpha: 0.4,
            colormap: Colormap::Jet,
            grey: false,
            heat_only: false,
            uv_min: [0.0, 0.0],
            uv_max: [1.0, 1.0],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    uv_min: [f32; 2],
    uv_max: [f32; 2],
    alpha: f32,
    colormap: u32,
    target_is_srgb: u32,
    heat_only: u32,
}

struct Slot {
    version: u64,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

/// GPU objects shared by every overlay; lives in the renderer's callback resources.
pub struct OverlayPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    lut: wgpu::TextureView,
    target_is_srgb: bool,
    slots: HashMap<String, Slot>,
}

/// Register the pipeline with the renderer; false when there is no wgpu renderer.
pub fn install(render_state: Option<&egui_wgpu::RenderState>) -> bool {
    let Some(rs) = render_state else {
        return false;
    };
    let device = &rs.device;
    let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("triscope overlay"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/overlay.wgsl").into()),
    });
    let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: true },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        count: None,
    };
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("triscope overlay"),
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            texture_entry(1),
            texture_entry(2),
            wgpu::BindGroupLayoutEntry {
                binding: 3,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                count: None,
            },
            texture_entry(4),
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("triscope overlay"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("triscope overlay"),
        layout: Some(&pipeline_layout),
        vertex: wgpu::VertexState {
            module: &shader,
            entry_point: Some("vs_main"),
            buffers: &[],
            compilation_options: Default::default(),
        },
        fragment: Some(wgpu::FragmentState {
            module: &shader,
            entry_point: Some("fs_main"),
            targets: &[Some(rs.target_format.into())],
            compilation_options: Default::default(),
        }),
        primitive: wgpu::PrimitiveState::default(),
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        multiview_mask: None,
        cache: None,
    });
    let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
        label: Some("triscope overlay"),
        mag_filter: wgpu::FilterMode::Linear,
        min_filter: wgpu::FilterMode::Linear,
        ..Default::default()
    });
    let mut lut_rgba = Vec::with_capacity(256 * 2 * 4);
    for cmap in [Colormap::Jet, Colormap::Viridis] {
        for [r, g, b] in cmap.lut() {
            lut_rgba.extend_from_slice(&[r, g, b, 255]);
        }
    }
    let lut = upload(
        device,
        &rs.queue,
        "colormap lut",
        256,
        2,
        wgpu::TextureFormat::Rgba8Unorm,
        &lut_rgba,
    );
    rs.renderer
        .write()
        .callback_resources
        .insert(OverlayPipeline {
            pipeline,
            layout,
            sampler,
            lut,
            target_is_srgb: rs.target_format.is_srgb(),
            slots: HashMap::new(),
        });
    true
}

fn upload(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    width: u32,
    height: u32,
    format: wgpu::TextureFormat,
    bytes: &[u8],
) -> wgpu::TextureView {
    let size = wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let bytes_per_pixel = format.block_copy_size(None).unwrap_or(4);
    queue.write_texture(
        texture.as_image_copy(),
        bytes,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(width * bytes_per_pixel),
            rows_per_image: Some(height),
        },
        size,
    );
    texture.create_view(&wgpu::TextureViewDescriptor::default())
}

struct OverlayCallback {
    slot: String,
    source: Arc<OverlaySource>,
    style: OverlayStyle,
}

impl CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(p) = resources.get_mut::<OverlayPipeline>() else {
            return Vec::new();
        };
        let fresh = p
            .slots
            .get(&self.slot)
            .is_none_or(|s| s.version != self.source.version);
        if fresh {
            let src = &self.source;
            let rgba: Vec<u8> = src
                .image
                .rgb
                .chunks_exact(3)
                .flat_map(|c| [c[0], c[1], c[2], 255])
                .collect();
            let image = upload(
                device,
                queue,
                "overlay image",
                src.image.width as u32,
                src.image.height as u32,
                wgpu::TextureFormat::Rgba8Unorm,
                &rgba,
            );
            let heat_bytes: Vec<u8> = src
                .heat
                .iter()
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect();
            let heat = upload(
                device,
                queue,
                "overlay heat",
                src.heat_width as u32,
                src.heat_height as u32,
                wgpu::TextureFormat::R8Unorm,
                &heat_bytes,
            );
            let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("overlay params"),
                size: std::mem::size_of::<Params>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("overlay"),
                layout: &p.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniforms.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&image),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&heat),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::Sampler(&p.sampler),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: wgpu::BindingResource::TextureView(&p.lut),
                    },
                ],
            });
            p.slots.insert(
                self.slot.clone(),
                Slot {
                    version: src.version,
                    uniforms,
                    bind_group,
                },
            );
        }
        if let Some(slot) = p.slots.get(&self.slot) {
            let s = &self.style;
            let params = Params {
                uv_min: s.uv_min,
                uv_max: s.uv_max,
                alpha: s.alpha,
                colormap: if s.grey {
                    2
                } else {
                    match s.colormap {
                        Colormap::Jet => 0,
                        Colormap::Viridis => 1,
                    }
                },
                target_is_srgb: u32::from(p.target_is_srgb),
                heat_only: u32::from(s.heat_only),
            };
            queue.write_buffer(&slot.uniforms, 0, bytemuck::bytes_of(&params));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(p) = resources.get::<OverlayPipeline>() else {
            return;
        };
        let Some(slot) = p.slots.get(&self.slot) else {
            return;
        };
        pass.set_pipeline(&p.pipeline);
        pass.set_bind_group(0, &slot.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}

/// Draws overlays: through the shader when the renderer is wgpu, else via CPU textures.
pub struct OverlayPainter {
    gpu: bool,
    /// CPU fallback: one composed texture per slot, rebuilt when source or style change.
    cpu_cache: HashMap<String, (u64, OverlayStyleKey, egui::TextureHandle)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OverlayStyleKey {
    alpha_milli: i32,
    colormap: Colormap,
    grey: bool,
    heat_only: bool,
}

impl OverlayPainter {
    pub fn new(gpu: bool) -> Self {
        Self {
            gpu,
            cpu_cache: HashMap::new(),
        }
    }

    /// Paint `source` into `rect` with `style`.
    pub fn paint(
        &mut self,
        ui: &mut egui::Ui,
        rect: egui::Rect,
        slot: &str,
        source: &Arc<OverlaySource>,
        style: OverlayStyle,
    ) {
        if self.gpu {
            ui.painter().add(egui_wgpu::Callback::new_paint_callback(
                rect,
                OverlayCallback {
                    slot: slot.to_string(),
                    source: source.clone(),
                    style,
                },
            ));
            return;
        }
        let key = OverlayStyleKey {
            alpha_milli: (style.alpha * 1000.0).round() as i32,
            colormap: style.colormap,
            grey: style.grey,
            heat_only: style.heat_only,
        };
        let stale = self
            .cpu_cache
            .get(slot)
            .is_none_or(|(v, k, _)| *v != source.version || *k != key);
        if stale {
            let img = compose_cpu(source, style);
            let tex =
                ui.ctx()
                    .load_texture(format!("overlay-{slot}"), img, egui::TextureOptions::LINEAR);
            self.cpu_cache
                .insert(slot.to_string(), (source.version, key, tex));
        }
        if let Some((_, _, tex)) = self.cpu_cache.get(slot) {
            let uv = egui::Rect::from_min_max(
                egui::pos2(style.uv_min[0], style.uv_min[1]),
                egui::pos2(style.uv_max[0], style.uv_max[1]),
            );
            ui.painter().image(tex.id(), rect, uv, egui::Color32::WHITE);
        }
    }
}

/// The CPU version of the shader's picture, at the image's resolution.
fn compose_cpu(src: &OverlaySource, style: OverlayStyle) -> egui::ColorImage {
    let (w, h) = (src.image.width, src.image.height);
    let heat = triscope::explain::gradcam::resize_bilinear(
        &src.heat,
        src.heat_height,
        src.heat_width,
        h,
        w,
    );
    let rgb = if style.grey {
        heat.iter()
            .flat_map(|v| {
                let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                [g, g, g]
            })
            .collect()
    } else if style.heat_only {
        triscope::explain::heatmap_rgb8(&heat, style.colormap)
    } else {
        overlay_rgb8(&src.image.rgb, &heat, style.colormap, style.alpha)
    };
    egui::ColorImage::from_rgb([w, h], &rgb)
}
