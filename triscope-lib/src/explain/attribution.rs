//! Attribution methods behind one entry point: the CAM family of pytorch-grad-cam on any of
//! layer1..layer4, and Captum's input-space methods.
//!
//! [`attribute`] takes a model, a batch of pixels and a [`Method`] and returns one
//! [`AttributionMap`] per image: plain data (the raw attribution and a normalised map at input
//! size), so front ends never see a tensor.
//!
//! Definitions (the target score is always the raw logit of the explained class):
//!
//! | method | raw attribution | reference |
//! |---|---|---|
//! | Grad-CAM | ReLU(sum_k mean_p(G_k) A_k) | pytorch-grad-cam `GradCAM` |
//! | Grad-CAM++ | ReLU(sum_k w_k A_k), w_k = sum_p ReLU(G) a, a = G^2 / (2 G^2 + sum_p(A_k) G^3 + 1e-6) (0 where G = 0) | `GradCAMPlusPlus` |
//! | XGrad-CAM | ReLU(sum_k w_k A_k), w_k = sum_p G A / (sum_p A_k + 1e-7) | `XGradCAM` |
//! | LayerCAM | ReLU(sum_k ReLU(G_k) A_k) | `LayerCAM` |
//! | HiResCAM | ReLU(sum_k G_k A_k) | `HiResCAM` |
//! | Score-CAM | ReLU(sum_k softmax_k(s) A_k), s_k = logit(x * norm(up(A_k))) | `ScoreCAM` |
//! | Eigen-CAM | ReLU(first principal component of the centred activations) | `EigenCAM` |
//! | Saliency | abs(d logit / d x), `[C, H, W]` | Captum `Saliency(abs=True)` |
//! | SmoothGrad | mean over n noisy copies of abs(d logit / d x) | Captum `NoiseTunnel(Saliency)` |
//! | Integrated Gradients | (x - 0) * sum_i w_i d logit / d x (alpha_i x) | Captum `IntegratedGradients` |
//! | Occlusion | mean over windows covering a pixel of logit(x) - logit(x, window = 0) | Captum `Occlusion` |
//!
//! A is the layer's activation `[K, h, w]`, G = d logit / d A. The CAM family is then
//! post-processed as pytorch-grad-cam does: min-max `(c - min) / (max(c - min) + 1e-7)`,
//! OpenCV bilinear upsampling to the input size, min-max again. Input-space attributions are
//! reduced to one `[H, W]` map (Saliency and SmoothGrad: max over channels, as Simonyan et al.;
//! Integrated Gradients: |sum over channels|, as Captum's `visualize_image_attr`; Occlusion:
//! ReLU of the (channel-constant) attribution, the regions whose removal lowers the logit) and
//! min-max normalised the same way.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Tensor, TensorData};

use crate::host;
use serde::{Deserialize, Serialize};

use super::gradcam::{TargetClass, argmax, grad_cam, min_max, resize_bilinear};
use crate::error::{Result, TriscopeError};
use crate::model::{LayerId, ResNet50};

/// An attribution method. CAM-family methods explain a layer (see
/// [`AttributionOptions::layer`]); the others attribute to input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    GradCam,
    GradCamPlusPlus,
    XGradCam,
    LayerCam,
    HiResCam,
    ScoreCam,
    EigenCam,
    Saliency,
    SmoothGrad,
    IntegratedGradients,
    Occlusion,
}

impl Method {
    pub const ALL: [Method; 11] = [
        Self::GradCam,
        Self::GradCamPlusPlus,
        Self::XGradCam,
        Self::LayerCam,
        Self::HiResCam,
        Self::ScoreCam,
        Self::EigenCam,
        Self::Saliency,
        Self::SmoothGrad,
        Self::IntegratedGradients,
        Self::Occlusion,
    ];

    /// The command-line name (`gradcam++`, `ig`, ...); [`FromStr`] parses it back.
    pub fn name(self) -> &'static str {
        match self {
            Self::GradCam => "gradcam",
            Self::GradCamPlusPlus => "gradcam++",
            Self::XGradCam => "xgradcam",
            Self::LayerCam => "layercam",
            Self::HiResCam => "hirescam",
            Self::ScoreCam => "scorecam",
            Self::EigenCam => "eigencam",
            Self::Saliency => "saliency",
            Self::SmoothGrad => "smoothgrad",
            Self::IntegratedGradients => "ig",
            Self::Occlusion => "occlusion",
        }
    }

    /// A human-readable label ("Grad-CAM++", "Integrated Gradients").
    pub fn label(self) -> &'static str {
        match self {
            Self::GradCam => "Grad-CAM",
            Self::GradCamPlusPlus => "Grad-CAM++",
            Self::XGradCam => "XGrad-CAM",
            Self::LayerCam => "LayerCAM",
            Self::HiResCam => "HiResCAM",
            Self::ScoreCam => "Score-CAM",
            Self::EigenCam => "Eigen-CAM",
            Self::Saliency => "Saliency",
            Self::SmoothGrad => "SmoothGrad",
            Self::IntegratedGradients => "Integrated Gradients",
            Self::Occlusion => "Occlusion",
        }
    }

    /// True for the CAM family, which explains a layer's activations.
    pub fn uses_layer(self) -> bool {
        !matches!(
            self,
            Self::Saliency | Self::SmoothGrad | Self::IntegratedGradients | Self::Occlusion
        )
    }

    /// True when the method does not depend on the target class (Eigen-CAM).
    pub fn class_agnostic(self) -> bool {
        self == Self::EigenCam
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl crate::choice::Choice for Method {
    const KIND: &'static str = "attribution method";
    const ALL: &'static [Self] = &Method::ALL;
    fn name(self) -> &'static str {
        Method::name(self)
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::GradCamPlusPlus => &["gradcampp", "gradcamplusplus"],
            Self::Saliency => &["gradient", "vanilla gradient"],
            Self::IntegratedGradients => &["integrated gradients"],
            _ => &[],
        }
    }
}

impl std::str::FromStr for Method {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::choice::parse(s)
    }
}

/// How Integrated Gradients approximates the path integral (Captum's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IgQuadrature {
    /// Captum's default `gausslegendre`: nodes and weights of numpy's `leggauss(n)` mapped to
    /// [0, 1].
    #[default]
    GaussLegendre,
    /// Captum's `riemann_trapezoid`: alphas `linspace(0, 1, n)`, step 1/n with the two end
    /// steps halved (Captum's weights sum to 1 - 1/n, not 1).
    Trapezoid,
}

/// Settings of the methods; each method reads only its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionOptions {
    /// The layer the CAM family explains.
    pub layer: LayerId,
    /// Integrated Gradients: points on the path from the black baseline to the image.
    pub ig_steps: usize,
    pub ig_quadrature: IgQuadrature,
    /// SmoothGrad: noisy copies averaged.
    pub smoothgrad_samples: usize,
    /// SmoothGrad: noise standard deviation as a fraction of the image's value range
    /// (max - min), as Smilkov et al.
    pub smoothgrad_sigma: f32,
    /// SmoothGrad: seed of the noise (image `b` of a batch uses `seed + b`).
    pub smoothgrad_seed: u64,
    /// Occlusion: side of the square window, in input pixels (all channels together).
    pub occlusion_window_px: usize,
    /// Occlusion: step between windows, in input pixels.
    pub occlusion_stride_px: usize,
    /// Images per forward pass for the methods that run many (Score-CAM, SmoothGrad,
    /// Integrated Gradients, Occlusion).
    pub batch_size: usize,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        Self {
            layer: LayerId::Layer4,
            ig_steps: 50,
            ig_quadrature: IgQuadrature::GaussLegendre,
            smoothgrad_samples: 25,
            smoothgrad_sigma: 0.15,
            smoothgrad_seed: 0,
            occlusion_window_px: 16,
            occlusion_stride_px: 8,
            batch_size: 16,
        }
    }
}

impl AttributionOptions {
    fn validate(&self, height: usize, width: usize) -> Result<()> {
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        if self.ig_steps < 2 {
            return bad(format!(
                "Integrated Gradients needs at least 2 steps, got {}",
                self.ig_steps
            ));
        }
        if self.smoothgrad_samples == 0 {
            return bad("SmoothGrad needs at least 1 sample".into());
        }
        if !(self.smoothgrad_sigma.is_finite() && self.smoothgrad_sigma >= 0.0) {
            return bad(format!(
                "SmoothGrad sigma must be a finite fraction >= 0, got {}",
                self.smoothgrad_sigma
            ));
        }
        let side = height.min(width);
        if self.occlusion_window_px == 0 || self.occlusion_window_px > side {
            return bad(format!(
                "occlusion window must be 1..={side} pixels, got {}",
                self.occlusion_window_px
            ));
        }
        if self.occlusion_stride_px == 0 || self.occlusion_stride_px > self.occlusion_window_px {
            return bad(format!(
                "occlusion stride must be 1..=window ({}) pixels, got {}",
                self.occlusion_window_px, self.occlusion_stride_px
            ));
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        Ok(())
    }
}

/// One image's attribution, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionMap {
    pub method: Method,
    /// The explained layer (CAM family only).
    pub layer: Option<LayerId>,
    /// The explained class (Eigen-CAM ignores it but reports the resolved target).
    pub class_index: usize,
    /// The model's logits for the image. `[num_classes]`.
    pub logits: Vec<f32>,
    /// The raw attribution: CAM family `[h, w]` (after the ReLU, before normalisation),
    /// input-space methods `[C, H, W]` (signed for Integrated Gradients and Occlusion).
    pub raw: Vec<f32>,
    pub raw_shape: Vec<usize>,
    /// The normalised map at input size, values in [0, 1], row-major `[height, width]`.
    pub map: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

/// Attribute each image of `pixels` (`[batch, C, H, W]`, values in [0, 1], on a device
/// without autodiff; the model in inference mode) to `target` with `method`.
pub fn attribute(
    model: &ResNet50,
    pixels: Tensor<4>,
    method: Method,
    target: TargetClass,
    options: &AttributionOptions,
) -> Result<Vec<AttributionMap>> {
    attribute_with(
        model,
        pixels,
        method,
        target,
        options,
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
}

/// [`attribute`] with progress and cancellation, for front ends: `progress(done, total)`
/// counts model evaluations (images through the network, `total` = images x passes per
/// image: channels for Score-CAM, samples, steps, windows; 1 for single-pass methods);
/// setting `cancel` stops between batches with [`TriscopeError::Cancelled`].
pub fn attribute_with(
    model: &ResNet50,
    pixels: Tensor<4>,
    method: Method,
    target: TargetClass,
    options: &AttributionOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &AtomicBool,
) -> Result<Vec<AttributionMap>> {
    let [batch, channels, height, width] = pixels.dims();
    if batch == 0 {
        return Ok(Vec::new());
    }
    if let TargetClass::Index(c) = target {
        let n = model.config.num_classes;
        if c >= n {
            return Err(TriscopeError::InvalidArgument(format!(
                "class {c} does not exist: the model has {n} classes (0..{})",
                n - 1
            )));
        }
    }
    options.validate(height, width)?;
    let dims = Dims {
        batch,
        channels,
        height,
        width,
    };
    let passes = match method {
        Method::ScoreCam => options.layer.channels(model.config.base_width),
        Method::SmoothGrad => options.smoothgrad_samples,
        Method::IntegratedGradients => options.ig_steps,
        Method::Occlusion => {
            let n = |side| {
                window_starts(
                    side,
                    options.occlusion_window_px,
                    options.occlusion_stride_px,
                )
                .len()
            };
            n(height) * n(width)
        }
        _ => 1,
    };
    let mut hooks = Hooks {
        progress,
        cancel,
        done: 0,
        total: batch * passes,
    };
    hooks.check()?;
    let maps = match method {
        Method::GradCam => {
            let cams = grad_cam(model, pixels, options.layer, target)?;
            Ok(cams
                .maps
                .into_iter()
                .zip(cams.logits)
                .map(|(m, logits)| AttributionMap {
                    method,
                    layer: Some(m.layer),
                    class_index: m.class_index,
                    logits,
                    raw: m.raw,
                    raw_shape: vec![m.raw_height, m.raw_width],
                    map: m.map,
                    height: m.height,
                    width: m.width,
                })
                .collect())
        }
        Method::GradCamPlusPlus | Method::XGradCam | Method::LayerCam | Method::HiResCam => {
            gradient_cam(model, pixels, method, target, options.layer, dims)
        }
        Method::ScoreCam => score_cam(model, pixels, target, options, dims, &mut hooks),
        Method::EigenCam => eigen_cam(model, pixels, target, options.layer, dims),
        Method::Saliency => saliency(model, pixels, target, dims),
        Method::SmoothGrad => smooth_grad(model, pixels, target, options, dims, &mut hooks),
        Method::IntegratedGradients => {
            integrated_gradients(model, pixels, target, options, dims, &mut hooks)
        }
        Method::Occlusion => occlusion(model, pixels, target, options, dims, &mut hooks),
    }?;
    hooks.done = hooks.total;
    (hooks.progress)(hooks.done, hooks.total);
    Ok(maps)
}

/// Progress and cancellation between batches of model evaluations.
struct Hooks<'a> {
    progress: &'a mut dyn FnMut(usize, usize),
    cancel: &'a AtomicBool,
    done: usize,
    total: usize,
}

impl Hooks<'_> {
    fn check(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(TriscopeError::Cancelled);
        }
        Ok(())
    }

    /// `n` more evaluations done; errors when cancelled.
    fn advance(&mut self, n: usize) -> Result<()> {
        self.done = (self.done + n).min(self.total);
        (self.progress)(self.done, self.total);
        self.check()
    }
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
}

impl Dims {
    /// Values per image, `C * H * W`.
    fn image_len(self) -> usize {
        self.channels * self.height * self.width
    }
    fn plane_len(self) -> usize {
        self.height * self.width
    }
}

fn resolve(logits: &[Vec<f32>], target: TargetClass) -> Vec<usize> {
    logits
        .iter()
        .map(|row| match target {
            TargetClass::Predicted => argmax(row),
            TargetClass::Index(c) => c,
        })
        .collect()
}

/// Sum over rows of each row's `classes[row]` logit: a scalar whose backward gives every
/// image the gradient of its own target logit (images are independent in eval mode).
fn target_score(logits: Tensor<2>, classes: &[usize]) -> Tensor<1> {
    let [b, n] = logits.dims();
    let mut one_hot = vec![0.0f32; b * n];
    for (row, &c) in classes.iter().enumerate() {
        one_hot[row * n + c] = 1.0;
    }
    let mask = Tensor::<2>::from_data(TensorData::new(one_hot, [b, n]), &logits.device());
    (logits * mask).sum() // [1]
}

/// Plain forward for logits only. `[b, C, H, W]` -> rows of `[num_classes]`.
fn forward_rows(model: &ResNet50, x: Tensor<4>) -> Result<Vec<Vec<f32>>> {
    host::logit_rows(model.forward(x))
}

/// d(target logit)/d(input) for a batch whose row `i` explains `classes[i]`.
/// Returns the gradient `[b, C, H, W]` flattened and the logits.
fn input_gradient(
    model: &ResNet50,
    x: Tensor<4>,
    classes: &[usize],
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let leaf = x.autodiff().require_grad(); // [b, C, H, W]
    let logits = model.forward(leaf.clone()); // [b, classes]
    let rows = host::logit_rows(logits.clone())?;
    let grads = target_score(logits, classes).backward();
    let grad = leaf
        .grad(&grads)
        .ok_or_else(|| TriscopeError::Compute("no gradient reached the input".into()))?;
    Ok((host::values(grad, "the input gradient")?, rows))
}

/// pytorch-grad-cam's post-processing: min-max, OpenCV bilinear upsample, min-max.
fn finish_cam(cam: &[f32], h: usize, w: usize, dims: Dims) -> Vec<f32> {
    min_max(&resize_bilinear(
        &min_max(cam),
        h,
        w,
        dims.height,
        dims.width,
    ))
}

/// A CAM-family result: ReLU of the layer-resolution `raw` map (`[h, w]`), then the
/// normalised map at input size ([`finish_cam`]).
fn cam_map(
    method: Method,
    layer: LayerId,
    class_index: usize,
    logits: Vec<f32>,
    mut raw: Vec<f32>,
    (h, w): (usize, usize),
    dims: Dims,
) -> AttributionMap {
    relu_in_place(&mut raw);
    let map = finish_cam(&raw, h, w, dims);
    AttributionMap {
        method,
        layer: Some(layer),
        class_index,
        logits,
        raw,
        raw_shape: vec![h, w],
        map,
        height: dims.height,
        width: dims.width,
    }
}

fn relu_in_place(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = x.max(0.0);
    }
}

/// `sum_k weights[k] * acts[k, p]` for `acts` `[K, hw]`.
fn weighted_sum(acts: &[f32], weights: &[f32], hw: usize) -> Vec<f32> {
    let mut cam = vec![0.0f32; hw];
    for (k, &wk) in weights.iter().enumerate() {
        for (c, a) in cam.iter_mut().zip(&acts[k * hw..(k + 1) * hw]) {
            *c += wk * a;
        }
    }
    cam
}

/// One image's CAM before the ReLU from activations and gradients `[K, hw]`.
fn cam_from_gradients(
    method: Method,
    acts: &[f32],
    grads: &[f32],
    k: usize,
    hw: usize,
) -> Vec<f32> {
    let channel = |i: usize| (&acts[i * hw..(i + 1) * hw], &grads[i * hw..(i + 1) * hw]);
    match method {
        Method::GradCamPlusPlus => {
            let weights: Vec<f32> = (0..k)
                .map(|i| {
                    let (a, g) = channel(i);
                    let sum_a: f32 = a.iter().sum();
                    g.iter()
                        .map(|&g| {
                            if g == 0.0 {
                                return 0.0;
                            }
                            let g2 = g * g;
                            let aij = g2 / (2.0 * g2 + sum_a * g2 * g + 1e-6);
                            g.max(0.0) * aij
                        })
                        .sum()
                })
                .collect();
            weighted_sum(acts, &weights, hw)
        }
        Method::XGradCam => {
            let weights: Vec<f32> = (0..k)
                .map(|i| {
                    let (a, g) = channel(i);
                    let sum_a: f32 = a.iter().sum();
                    a.iter().zip(g).map(|(a, g)| g * a / (sum_a + 1e-7)).sum()
                })
                .collect();
            weighted_sum(acts, &weights, hw)
        }
        Method::LayerCam | Method::HiResCam => {
            let relu_grad = method == Method::LayerCam;
            let mut cam = vec![0.0f32; hw];
            for i in 0..k {
                let (a, g) = channel(i);
                for ((c, a), g) in cam.iter_mut().zip(a).zip(g) {
                    let g = if relu_grad { g.max(0.0) } else { *g };
                    *c += g * a;
                }
            }
            cam
        }
        // Grad-CAM weights (not reached: Grad-CAM goes through `grad_cam`).
        _ => {
            let weights: Vec<f32> = (0..k)
                .map(|i| channel(i).1.iter().sum::<f32>() / hw as f32)
                .collect();
            weighted_sum(acts, &weights, hw)
        }
    }
}

fn gradient_cam(
    model: &ResNet50,
    pixels: Tensor<4>,
    method: Method,
    target: TargetClass,
    layer: LayerId,
    dims: Dims,
) -> Result<Vec<AttributionMap>> {
    let taps = model.forward_taps(pixels, Some(layer));
    let logits = host::logit_rows(taps.logits.clone())?;
    let classes = resolve(&logits, target);
    let grads = target_score(taps.logits, &classes).backward();
    let activation = taps.layers[layer.index()].clone(); // [b, K, h, w]
    let grad = activation
        .grad(&grads)
        .ok_or_else(|| TriscopeError::Compute(format!("no gradient reached {layer}")))?; // [b, K, h, w]
    let [_, k, h, w] = activation.dims();
    let acts = host::values(activation.inner(), "activations")?;
    let grad = host::values(grad, "activation gradients")?;
    let per_image = k * h * w;
    Ok((0..dims.batch)
        .map(|b| {
            let range = b * per_image..(b + 1) * per_image;
            let raw = cam_from_gradients(method, &acts[range.clone()], &grad[range], k, h * w);
            cam_map(
                method,
                layer,
                classes[b],
                logits[b].clone(),
                raw,
                (h, w),
                dims,
            )
        })
        .collect())
}

/// PyTorch's `UpsamplingBilinear2d` (bilinear, `align_corners=True`) of one plane.
pub fn resize_bilinear_align_corners(
    src: &[f32],
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
) -> Vec<f32> {
    let axis = |src_n: usize, dst_n: usize| -> Vec<(usize, usize, f32)> {
        let scale = if dst_n > 1 {
            (src_n - 1) as f32 / (dst_n - 1) as f32
        } else {
            0.0
        };
        (0..dst_n)
            .map(|d| {
                let f = d as f32 * scale;
                let s0 = (f.floor() as usize).min(src_n - 1);
                let s1 = (s0 + 1).min(src_n - 1);
                (s0, s1, f - s0 as f32)
            })
            .collect()
    };
    crate::explain::gradcam::bilinear_from_axes(
        src,
        src_w,
        &axis(src_h, dst_h),
        &axis(src_w, dst_w),
    )
}

fn score_cam(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
    options: &AttributionOptions,
    dims: Dims,
    hooks: &mut Hooks<'_>,
) -> Result<Vec<AttributionMap>> {
    let device = pixels.device();
    let layer = options.layer;
    let taps = model.forward_taps(pixels.clone(), None);
    let logits = host::logit_rows(taps.logits)?;
    let classes = resolve(&logits, target);
    let activation = taps.layers[layer.index()].clone(); // [b, K, h, w]
    let [_, k, h, w] = activation.dims();
    let acts = host::values(activation, "activations")?;
    let x = host::values(pixels, "pixels")?;
    let (hw, plane, image_len) = (h * w, dims.plane_len(), dims.image_len());
    let mut out = Vec::with_capacity(dims.batch);
    for b in 0..dims.batch {
        let acts_b = &acts[b * k * hw..(b + 1) * k * hw]; // [K, hw]
        let x_b = &x[b * image_len..(b + 1) * image_len]; // [C, H, W]
        // Each channel upsampled to the input size and min-max normalised (eps 1e-8).
        let masks: Vec<Vec<f32>> = (0..k)
            .map(|i| {
                let up = resize_bilinear_align_corners(
                    &acts_b[i * hw..(i + 1) * hw],
                    h,
                    w,
                    dims.height,
                    dims.width,
                );
                let min = up.iter().copied().fold(f32::INFINITY, f32::min);
                let max = up.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                up.iter().map(|v| (v - min) / (max - min + 1e-8)).collect()
            })
            .collect();
        let mut scores = Vec::with_capacity(k);
        for chunk in masks.chunks(options.batch_size) {
            let mut data = Vec::with_capacity(chunk.len() * image_len);
            for mask in chunk {
                for c in 0..dims.channels {
                    let xc = &x_b[c * plane..(c + 1) * plane];
                    data.extend(xc.iter().zip(mask).map(|(x, m)| x * m));
                }
            }
            let masked = Tensor::<4>::from_data(
                TensorData::new(data, [chunk.len(), dims.channels, dims.height, dims.width]),
                &device,
            ); // [n, C, H, W]
            scores.extend(
                forward_rows(model, masked)?
                    .iter()
                    .map(|row| row[classes[b]]),
            );
            hooks.advance(chunk.len())?;
        }
        let weights = softmax(&scores);
        let raw = weighted_sum(acts_b, &weights, hw);
        out.push(cam_map(
            Method::ScoreCam,
            layer,
            classes[b],
            logits[b].clone(),
            raw,
            (h, w),
            dims,
        ));
    }
    Ok(out)
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Eigen-CAM's projection of one image's activations `[K, hw]` on their first principal
/// component (pytorch-grad-cam's `get_2d_projection`: centre each channel over positions,
/// project on the first right-singular vector). An SVD's sign is arbitrary (numpy's comes from
/// LAPACK); Triscope fixes it so that the projection correlates positively with the
/// channel sum of the activations (salient = strongly activated). Returns `[hw]`.
pub fn eigen_projection(acts: &[f32], k: usize, hw: usize) -> Vec<f32> {
    // m[p][i] = acts[i, p] - mean_p acts[i, .], `[hw, K]`, in f64.
    let mut m = vec![0.0f64; hw * k];
    for i in 0..k {
        let a = &acts[i * hw..(i + 1) * hw];
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
        for (p, &v) in a.iter().enumerate() {
            m[p * k + i] = v as f64 - mean;
        }
    }
    // First right-singular vector v `[K]`: the top eigenvector of M^T M (K x K), or M^T u for
    // the top eigenvector u of M M^T (hw x hw), whichever matrix is smaller.
    let v: Vec<f64> = if k <= hw {
        let mut gram = vec![0.0f64; k * k];
        for p in 0..hw {
            let row = &m[p * k..(p + 1) * k];
            for i in 0..k {
                for j in i..k {
                    gram[i * k + j] += row[i] * row[j];
                }
            }
        }
        for i in 0..k {
            for j in 0..i {
                gram[i * k + j] = gram[j * k + i];
            }
        }
        top_eigenvector(&mut gram, k)
    } else {
        let mut gram = vec![0.0f64; hw * hw];
        for p in 0..hw {
            for q in p..hw {
                let d: f64 = (0..k).map(|i| m[p * k + i] * m[q * k + i]).sum();
                gram[p * hw + q] = d;
                gram[q * hw + p] = d;
            }
        }
        let u = top_eigenvector(&mut gram, hw);
        let mut v: Vec<f64> = (0..k)
            .map(|i| (0..hw).map(|p| m[p * k + i] * u[p]).sum())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };
    let mut projection: Vec<f64> = (0..hw)
        .map(|p| {
            m[p * k..(p + 1) * k]
                .iter()
                .zip(&v)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    // Sign: correlate positively with the channel sum of the (uncentred) activations.
    let channel_sum: Vec<f64> = (0..hw)
        .map(|p| (0..k).map(|i| acts[i * hw + p] as f64).sum())
        .collect();
    let mean_sum = channel_sum.iter().sum::<f64>() / hw as f64;
    let corr: f64 = projection
        .iter()
        .zip(&channel_sum)
        .map(|(p, s)| p * (s - mean_sum))
        .sum();
    if corr < 0.0 {
        projection.iter_mut().for_each(|x| *x = -*x);
    }
    projection.iter().map(|&x| x as f32).collect()
}

/// The eigenvector of the largest eigenvalue of a symmetric `n x n` matrix (cyclic Jacobi,
/// f64; `a` is destroyed).
fn top_eigenvector(a: &mut [f64], n: usize) -> Vec<f64> {
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-24 * total || total == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let (arp, arq) = (a[r * n + p], a[r * n + q]);
                    a[r * n + p] = c * arp - s * arq;
                    a[r * n + q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let (apr, aqr) = (a[p * n + r], a[q * n + r]);
                    a[p * n + r] = c * apr - s * aqr;
                    a[q * n + r] = s * apr + c * aqr;
                }
                for r in 0..n {
                    let (vrp, vrq) = (v[r * n + p], v[r * n + q]);
                    v[r * n + p] = c * vrp - s * vrq;
                    v[r * n + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    let top = (0..n)
        .max_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j]))
        .unwrap_or(0);
    (0..n).map(|r| v[r * n + top]).collect()
}

fn eigen_cam(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
    layer: LayerId,
    dims: Dims,
) -> Result<Vec<AttributionMap>> {
    let taps = model.forward_taps(pixels, None);
    let logits = host::logit_rows(taps.logits)?;
    let classes = resolve(&logits, target);
    let activation = taps.layers[layer.index()].clone(); // [b, K, h, w]
    let [_, k, h, w] = activation.dims();
    let acts = host::values(activation, "activations")?;
    Ok((0..dims.batch)
        .map(|b| {
            let mut acts_b = acts[b * k * h * w..(b + 1) * k * h * w].to_vec();
            // get_2d_projection sets NaN to 0.
            acts_b
                .iter_mut()
                .filter(|v| v.is_nan())
                .for_each(|v| *v = 0.0);
            let raw = eigen_projection(&acts_b, k, h * w);
            cam_map(
                Method::EigenCam,
                layer,
                classes[b],
                logits[b].clone(),
                raw,
                (h, w),
                dims,
            )
        })
        .collect())
}

/// The `[H, W]` reduction of an input-space attribution `[C, H, W]`.
#[derive(Debug, Clone, Copy)]
enum Reduce {
    /// max over channels (Saliency, SmoothGrad; values are already >= 0).
    MaxChannel,
    /// |sum over channels| (Integrated Gradients).
    AbsSum,
    /// ReLU of the first channel (Occlusion: every channel holds the same value).
    ReluFirst,
}

fn input_space_map(
    method: Method,
    raw: Vec<f32>,
    class_index: usize,
    logits: Vec<f32>,
    reduce: Reduce,
    dims: Dims,
) -> AttributionMap {
    let plane = dims.plane_len();
    let reduced: Vec<f32> = (0..plane)
        .map(|p| {
            let values = (0..dims.channels).map(|c| raw[c * plane + p]);
            match reduce {
                Reduce::MaxChannel => values.fold(f32::NEG_INFINITY, f32::max),
                Reduce::AbsSum => values.sum::<f32>().abs(),
                Reduce::ReluFirst => raw[p].max(0.0),
            }
        })
        .collect();
    AttributionMap {
        method,
        layer: None,
        class_index,
        logits,
        raw,
        raw_shape: vec![dims.channels, dims.height, dims.width],
        map: min_max(&reduced),
        height: dims.height,
        width: dims.width,
    }
}

fn saliency(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
    dims: Dims,
) -> Result<Vec<AttributionMap>> {
    let classes = match target {
        TargetClass::Index(c) => vec![c; dims.batch],
        TargetClass::Predicted => resolve(&forward_rows(model, pixels.clone())?, target),
    };
    let (grad, logits) = input_gradient(model, pixels, &classes)?; // [b, C, H, W]
    let n = dims.image_len();
    Ok(logits
        .into_iter()
        .enumerate()
        .map(|(b, row)| {
            let raw: Vec<f32> = grad[b * n..(b + 1) * n].iter().map(|g| g.abs()).collect();
            input_space_map(
                Method::Saliency,
                raw,
                classes[b],
                row,
                Reduce::MaxChannel,
                dims,
            )
        })
        .collect())
}

/// Logits and classes of a batch from one plain forward.
fn logits_and_classes(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
    let logits = forward_rows(model, pixels)?;
    let classes = resolve(&logits, target);
    Ok((logits, classes))
}

fn smooth_grad(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
    options: &AttributionOptions,
    dims: Dims,
    hooks: &mut Hooks<'_>,
) -> Result<Vec<AttributionMap>> {
    let device = pixels.device();
    let (logits, classes) = logits_and_classes(model, pixels.clone(), target)?;
    let x = host::values(pixels, "pixels")?;
    let n = dims.image_len();
    let mut out = Vec::with_capacity(dims.batch);
    for b in 0..dims.batch {
        let x_b = &x[b * n..(b + 1) * n];
        let min = x_b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = x_b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sigma = (options.smoothgrad_sigma * (max - min)) as f64; // absolute noise std
        let mut rng = crate::rng::NormalPairs::new(options.smoothgrad_seed.wrapping_add(b as u64));
        let mut sum_abs = vec![0.0f64; n];
        let mut remaining = options.smoothgrad_samples;
        while remaining > 0 {
            let count = remaining.min(options.batch_size);
            remaining -= count;
            let mut data = Vec::with_capacity(count * n);
            for _ in 0..count {
                data.extend(
                    x_b.iter()
                        .map(|&v| (v as f64 + sigma * rng.normal()) as f32),
                );
            }
            let noisy = Tensor::<4>::from_data(
                TensorData::new(data, [count, dims.channels, dims.height, dims.width]),
                &device,
            ); // [count, C, H, W]
            let (grad, _) = input_gradient(model, noisy, &vec![classes[b]; count])?;
            for sample in grad.chunks(n) {
                for (s, g) in sum_abs.iter_mut().zip(sample) {
                    *s += g.abs() as f64;
                }
            }
            hooks.advance(count)?;
        }
        let raw: Vec<f32> = sum_abs
            .iter()
            .map(|s| (s / options.smoothgrad_samples as f64) as f32)
            .collect();
        out.push(input_space_map(
            Method::SmoothGrad,
            raw,
            classes[b],
            logits[b].clone(),
            Reduce::MaxChannel,
            dims,
        ));
    }
    Ok(out)
}

/// Gauss-Legendre nodes and weights on [-1, 1], ascending, as numpy's `leggauss(n)`.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0f64; n];
    let mut weights = vec![0.0f64; n];
    for i in 0..n.div_ceil(2) {
        // Initial guess for the i-th largest root, then Newton on P_n.
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0f64, z);
            for j in 2..=n {
                let p2 = ((2 * j - 1) as f64 * z * p1 - (j - 1) as f64 * p0) / j as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 1 { z } else { p1 };
            let pn1 = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (z * pn - pn1) / (z * z - 1.0);
            let dz = pn / dp;
            z -= dz;
            if dz.abs() < 1e-15 {
                break;
            }
        }
        let w = 2.0 / ((1.0 - z * z) * dp * dp);
        nodes[n - 1 - i] = z;
        nodes[i] = -z;
        weights[i] = w;
        weights[n - 1 - i] = w;
    }
    (nodes, weights)
}

/// Captum's `(step_sizes, alphas)` for `n` steps of `rule`.
pub fn ig_schedule(n: usize, rule: IgQuadrature) -> (Vec<f64>, Vec<f64>) {
    match rule {
        IgQuadrature::GaussLegendre => {
            let (x, w) = gauss_legendre(n);
            (
                w.iter().map(|w| 0.5 * w).collect(),
                x.iter().map(|x| 0.5 * (1.0 + x)).collect(),
            )
        }
        IgQuadrature::Trapezoid => {
            let mut steps = vec![1.0 / n as f64; n];
            steps[0] /= 2.0;
            steps[n - 1] /= 2.0;
            let alphas = (0..n).map(|i| i as f64 / (n - 1) as f64).collect();
            (steps, alphas)
        }
    }
}

fn integrated_gradients(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
    options: &AttributionOptions,
    dims: Dims,
    hooks: &mut Hooks<'_>,
) -> Result<Vec<AttributionMap>> {
    let device = pixels.device();
    let (logits, classes) = logits_and_classes(model, pixels.clone(), target)?;
    let x = host::values(pixels, "pixels")?;
    let n = dims.image_len();
    let (steps, alphas) = ig_schedule(options.ig_steps, options.ig_quadrature);
    let mut out = Vec::with_capacity(dims.batch);
    for b in 0..dims.batch {
        // Black baseline: path point alpha * x.
        let x_b = &x[b * n..(b + 1) * n];
        let mut total = vec![0.0f64; n]; // sum_i step_i * grad_i, [C, H, W]
        let schedule: Vec<(f64, f64)> = steps.iter().copied().zip(alphas.iter().copied()).collect();
        for chunk in schedule.chunks(options.batch_size) {
            let mut data = Vec::with_capacity(chunk.len() * n);
            for &(_, alpha) in chunk {
                data.extend(x_b.iter().map(|&v| (alpha * v as f64) as f32));
            }
            let path = Tensor::<4>::from_data(
                TensorData::new(data, [chunk.len(), dims.channels, dims.height, dims.width]),
                &device,
            ); // [n_chunk, C, H, W]
            let (grad, _) = input_gradient(model, path, &vec![classes[b]; chunk.len()])?;
            for (&(step, _), g) in chunk.iter().zip(grad.chunks(n)) {
                for (t, g) in total.iter_mut().zip(g) {
                    *t += step * *g as f64;
                }
            }
            hooks.advance(chunk.len())?;
        }
        let raw: Vec<f32> = total
            .iter()
            .zip(x_b)
            .map(|(t, &x)| (t * x as f64) as f32)
            .collect();
        out.push(input_space_map(
            Method::IntegratedGradients,
            raw,
            classes[b],
            logits[b].clone(),
            Reduce::AbsSum,
            dims,
        ));
    }
    Ok(out)
}

/// Captum's window starts along one axis: `ceil((n - window) / stride) + 1` positions at
/// multiples of the stride; the last window is cut at the edge.
fn window_starts(n: usize, window: usize, stride: usize) -> Vec<usize> {
    let count = (n - window).div_ceil(stride) + 1;
    (0..count).map(|i| i * stride).collect()
}

fn occlusion(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
    options: &AttributionOptions,
    dims: Dims,
    hooks: &mut Hooks<'_>,
) -> Result<Vec<AttributionMap>> {
    let device = pixels.device();
    let (logits, classes) = logits_and_classes(model, pixels.clone(), target)?;
    let x = host::values(pixels, "pixels")?;
    let (n, plane) = (dims.image_len(), dims.plane_len());
    let window = options.occlusion_window_px;
    let ys = window_starts(dims.height, window, options.occlusion_stride_px);
    let xs = window_starts(dims.width, window, options.occlusion_stride_px);
    let windows: Vec<(usize, usize)> = ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| (y, x)))
        .collect();
    let mut out = Vec::with_capacity(dims.batch);
    for b in 0..dims.batch {
        let x_b = &x[b * n..(b + 1) * n];
        let base_score = logits[b][classes[b]];
        let mut total = vec![0.0f32; plane];
        let mut count = vec![0.0f32; plane];
        for chunk in windows.chunks(options.batch_size) {
            let mut data = Vec::with_capacity(chunk.len() * n);
            for &(y0, x0) in chunk {
                let start = data.len();
                data.extend_from_slice(x_b);
                for c in 0..dims.channels {
                    for y in y0..(y0 + window).min(dims.height) {
                        let row = start + c * plane + y * dims.width;
                        data[row + x0..row + (x0 + window).min(dims.width)].fill(0.0);
                    }
                }
            }
            let occluded = Tensor::<4>::from_data(
                TensorData::new(data, [chunk.len(), dims.channels, dims.height, dims.width]),
                &device,
            ); // [n_chunk, C, H, W]
            let rows = forward_rows(model, occluded)?;
            for (&(y0, x0), row) in chunk.iter().zip(&rows) {
                let diff = base_score - row[classes[b]];
                for y in y0..(y0 + window).min(dims.height) {
                    for xx in x0..(x0 + window).min(dims.width) {
                        total[y * dims.width + xx] += diff;
                        count[y * dims.width + xx] += 1.0;
                    }
                }
            }
            hooks.advance(chunk.len())?;
        }
        let per_pixel: Vec<f32> = total
            .iter()
            .zip(&count)
            .map(|(t, c)| if *c > 0.0 { t / c } else { 0.0 })
            .collect();
        let raw: Vec<f32> = (0..dims.channels)
            .flat_map(|_| per_pixel.iter().copied())
            .collect();
        out.push(input_space_map(
            Method::Occlusion,
            raw,
            classes[b],
            logits[b].clone(),
            Reduce::ReluFirst,
            dims,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.label().parse::<Method>().unwrap(), m, "{}", m.label());
        }
        assert_eq!(
            "GradCAMpp".parse::<Method>().unwrap(),
            Method::GradCamPlusPlus
        );
        assert!("lime".parse::<Method>().is_err());
    }

    #[test]
    fn gauss_legendre_matches_numpy() {
        // numpy.polynomial.legendre.leggauss(3)
        let (x, w) = gauss_legendre(3);
        let s = (0.6f64).sqrt();
        for (a, b) in x.iter().zip([-s, 0.0, s]) {
            assert!((a - b).abs() < 1e-14, "{x:?}");
        }
        for (a, b) in w.iter().zip([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0]) {
            assert!((a - b).abs() < 1e-14, "{w:?}");
        }
        // Weights integrate x^(2n-1) exactly; they sum to 2.
        let (x, w) = gauss_legendre(50);
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-12);
        let int_x10: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(10)).sum();
        assert!((int_x10 - 2.0 / 11.0).abs() < 1e-12);
        assert!(x.windows(2).all(|p| p[0] < p[1]));
    }

    #[test]
    fn trapezoid_schedule_is_captums() {
        let (steps, alphas) = ig_schedule(5, IgQuadrature::Trapezoid);
        assert_eq!(steps, vec![0.1, 0.2, 0.2, 0.2, 0.1]);
        assert_eq!(alphas, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn align_corners_upsampling_hits_the_corners() {
        // torch UpsamplingBilinear2d(size=(1, 4)) of [[0, 3]] == [[0, 1, 2, 3]]
        let out = resize_bilinear_align_corners(&[0.0, 3.0], 1, 2, 1, 4);
        for (o, w) in out.iter().zip([0.0, 1.0, 2.0, 3.0]) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn window_starts_cover_the_edge_like_captum() {
        assert_eq!(window_starts(128, 16, 8).len(), 15);
        assert_eq!(*window_starts(128, 16, 8).last().unwrap(), 112);
        // ceil(108 / 12) + 1 = 10 windows, the last one (108..128) cut at the edge.
        let s = window_starts(128, 20, 12);
        assert_eq!(s.len(), 10);
        assert_eq!(*s.last().unwrap(), 108);
        assert_eq!(window_starts(8, 8, 3), vec![0]);
    }

    #[test]
    fn eigen_projection_finds_a_rank_one_pattern_with_positive_sign() {
        // Two channels that both follow the same spatial pattern: the first component is that
        // pattern (centred), positive where the activations are high.
        let pattern = [0.0f32, 1.0, 4.0, 2.0];
        let acts: Vec<f32> = pattern
            .iter()
            .map(|p| 2.0 * p)
            .chain(pattern.iter().map(|p| 3.0 * p))
            .collect();
        let proj = eigen_projection(&acts, 2, 4);
        let mean = pattern.iter().sum::<f32>() / 4.0;
        let scale = proj[2] / (pattern[2] - mean);
        assert!(scale > 0.0);
        for (p, want) in proj.iter().zip(pattern) {
            assert!((p - scale * (want - mean)).abs() < 1e-5, "{proj:?}");
        }
        // |projection| = sigma_1 * u: its norm is the largest singular value sqrt(13) * |c|.
        let norm = proj.iter().map(|v| v * v).sum::<f32>().sqrt();
        let centred_norm = pattern
            .iter()
            .map(|p| (p - mean) * (p - mean))
            .sum::<f32>()
            .sqrt();
        assert!((norm - 13f32.sqrt() * centred_norm).abs() < 1e-4);
    }

    #[test]
    fn jacobi_top_eigenvector() {
        // [[2, 1], [1, 2]]: eigenvalues 3 (1, 1)/sqrt2 and 1.
        let mut a = vec![2.0, 1.0, 1.0, 2.0];
        let v = top_eigenvector(&mut a, 2);
        assert!((v[0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((v[0] - v[1]).abs() < 1e-12);
    }

    #[test]
    fn normal_rng_is_seeded_and_standard() {
        let mut a = crate::rng::NormalPairs::new(7);
        let mut b = crate::rng::NormalPairs::new(7);
        let xs: Vec<f64> = (0..20000).map(|_| a.normal()).collect();
        assert!(
            xs.iter()
                .take(10)
                .zip((0..10).map(|_| b.normal()))
                .all(|(x, y)| *x == y)
        );
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
