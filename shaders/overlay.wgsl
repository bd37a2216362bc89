// Grad-CAM overlay: colour-maps a heatmap and blends it over the image on the GPU.
//
// Drawn through an egui-wgpu paint callback whose viewport is the widget's rectangle, so a
// quad over clip space [-1, 1]^2 covers exactly the widget. `uv_min`/`uv_max` select the
// visible part of the image (zoom and pan). The blend is pytorch-grad-cam's
// show_cam_on_image: (1 - alpha) * image + alpha * colormap(heat).

struct Params {
    uv_min: vec2<f32>,
    uv_max: vec2<f32>,
    // Heatmap opacity in [0, 1]; 0 shows the image alone.
    alpha: f32,
    // 0 = jet, 1 = viridis, 2 = grey (feature maps).
    colormap: u32,
    // 1 when the render target is an sRGB format (the hardware then encodes our output).
    target_is_srgb: u32,
    // 1 to draw the heatmap alone (no image underneath).
    heat_only: u32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var image_tex: texture_2d<f32>;
@group(0) @binding(2) var heat_tex: texture_2d<f32>;
@group(0) @binding(3) var linear_sampler: sampler;
// 256 x 2 lookup table: row 0 jet, row 1 viridis, the same tables the CPU exports use
// (triscope::explain::Colormap::lut), so screen and saved PNGs agree.
@group(0) @binding(4) var lut_tex: texture_2d<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // Two triangles covering the viewport.
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0),
    );
    let t = corners[index];
    var out: VertexOut;
    out.position = vec4<f32>(t.x * 2.0 - 1.0, 1.0 - t.y * 2.0, 0.0, 1.0);
    out.uv = params.uv_min + t * (params.uv_max - params.uv_min);
    return out;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let low = c / 12.92;
    let high = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(high, low, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let uv = clamp(in.uv, vec2<f32>(0.0), vec2<f32>(1.0));
    let inside = all(in.uv >= vec2<f32>(0.0)) && all(in.uv <= vec2<f32>(1.0));
    let image = textureSample(image_tex, linear_sampler, uv).rgb;
    let heat = clamp(textureSample(heat_tex, linear_sampler, uv).r, 0.0, 1.0);
    var color = vec3<f32>(heat);
    if (params.colormap < 2u) {
        let index = i32(round(heat * 255.0));
        color = textureLoad(lut_tex, vec2<i32>(index, i32(params.colormap)), 0).rgb;
    }
    var rgb: vec3<f32>;
    if (params.heat_only == 1u) {
        rgb = color;
    } else {
        rgb = mix(image, color, params.alpha);
    }
    if (!inside) {
        rgb = vec3<f32>(0.0);
    }
    if (params.target_is_srgb == 1u) {
        rgb = srgb_to_linear(rgb);
    }
    return vec4<f32>(rgb, 1.0);
}
