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

use crate::model::host;
use serde::{Deserialize, Serialize};

use super::gradcam::{TargetClass, grad_cam, min_max, resize_bilinear};
use crate::error::{Result, TriscopeError};
use crate::model::{LayerId, ResNet50};
use crate::util::numeric::argmax;

mod cam;
mod input;

use cam::*;
pub use cam::{eigen_projection, resize_bilinear_align_corners};
use input::*;
pub use input::{gauss_legendre, ig_schedule};

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

    /// The command-line name (`gradcam++`, `ig`, ...); [`FromStr`](std::str::FromStr) parses it back.
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

impl crate::util::choice::Choice for Method {
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
        crate::util::choice::parse(s)
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
        let mut a = crate::util::rng::NormalPairs::new(7);
        let mut b = crate::util::rng::NormalPairs::new(7);
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
