//! Faithfulness of a saliency map: RISE deletion and insertion (Petsiuk et al., 2018) and the
//! average drop / increase in confidence of Grad-CAM++ (Chattopadhyay et al., 2018).
//!
//! - **Deletion**: starting from the image, the most salient pixels are replaced first,
//!   `pixels_per_step` at a time, by a baseline; the curve is the probability of the explained
//!   class after each step. A faithful map makes it fall fast: lower AUC is better.
//! - **Insertion**: starting from a blurred copy, the most salient pixels of the image are
//!   put back first; higher AUC is better.
//! - AUC is the trapezoid rule over the fraction of pixels moved (x in [0, 1]), as RISE's
//!   `auc`.
//! - **Average drop / increase**: the input is multiplied by the map in the model's
//!   normalised space (pytorch-grad-cam's `CamMultImageConfidenceChange`); drop is
//!   `max(0, Y - O) / Y` in percent, increase is `O > Y`.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::inference::probabilities;
use crate::io::imaging::PixelImage;
use crate::model::ResNet50;

use super::quality::{auc_uniform, gaussian_filter, gaussian_kernel, rise_curve};

/// What deleted pixels become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeletionBaseline {
    /// Zero of the normalised input, i.e. the normalisation mean in pixel space (RISE's
    /// `torch.zeros_like` on a normalised tensor).
    #[default]
    NormalisedZero,
    /// Black pixels (0 in pixel space).
    Black,
}

/// How the curves are sampled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaithfulnessOptions {
    /// Pixels moved per step; `None`: one image row's worth (RISE: 224 at 224x224), so each
    /// curve has `resolution + 1` points.
    pub pixels_per_step: Option<usize>,
    pub deletion_baseline: DeletionBaseline,
    /// Gaussian blur of the insertion start (RISE: sigma 5, 11 taps), reflect border.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub blur_sigma: f64,
    pub blur_taps: usize,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl Default for FaithfulnessOptions {
    fn default() -> Self {
        Self {
            pixels_per_step: None,
            deletion_baseline: DeletionBaseline::NormalisedZero,
            blur_sigma: 5.0,
            blur_taps: 11,
            batch_size: 32,
        }
    }
}

/// Faithfulness of one map for one image and class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Faithfulness {
    pub class_index: usize,
    /// Probability of the class on the unmodified image.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub probability: f64,
    /// Probability after each deletion step (first point: the image).
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub deletion_curve: Vec<f64>,
    /// Probability after each insertion step (first point: the blurred image).
    #[serde(deserialize_with = "crate::util::stats::vec_f64_or_nan")]
    pub insertion_curve: Vec<f64>,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub deletion_auc: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub insertion_auc: f64,
    /// Probability on the image multiplied by the map (normalised space).
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub masked_probability: f64,
    /// `max(0, Y - O) / Y`, percent.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub drop_percent: f64,
    /// `O > Y`.
    pub increase: bool,
}

/// Deletion, insertion and confidence change of `saliency` (`[H * W]`; higher is more
/// salient; any scale for the curves, [0, 1] or min-max normalised for the multiplication) for `image` (model resolution) and `class`.
pub fn faithfulness(
    model: &ResNet50,
    device: &Device,
    image: &PixelImage,
    saliency: &[f32],
    class: usize,
    options: &FaithfulnessOptions,
) -> Result<Faithfulness> {
    let cfg = &model.config;
    let (c, h, w) = (image.channels, image.height, image.width);
    let plane = h * w;
    if saliency.len() != plane {
        return Err(TriscopeError::InvalidArgument(format!(
            "saliency map has {} values, the image {h}x{w} = {plane}",
            saliency.len()
        )));
    }
    if class >= cfg.num_classes {
        return Err(TriscopeError::InvalidArgument(format!(
            "class {class} does not exist: the model has {} classes",
            cfg.num_classes
        )));
    }
    if saliency.iter().any(|v| !v.is_finite()) {
        return Err(TriscopeError::InvalidArgument(
            "saliency map holds NaN or infinite values".into(),
        ));
    }
    let batch_size = options.batch_size.max(1);
    let score = |images: &[Vec<f32>]| -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch_size) {
            let mut data = Vec::with_capacity(chunk.len() * c * plane);
            for img in chunk {
                data.extend_from_slice(img);
            }
            let x = Tensor::<4>::from_data(TensorData::new(data, [chunk.len(), c, h, w]), device);
            let logits = model.forward(x); // [chunk, classes]
            let flat = crate::model::host::values(logits, "logits")?;
            for row in flat.chunks(cfg.num_classes) {
                out.push(probabilities(row, cfg.multi_label)[class] as f64);
            }
        }
        Ok(out)
    };

    let baseline: Vec<f32> = match options.deletion_baseline {
        DeletionBaseline::Black => vec![0.0; c * plane],
        DeletionBaseline::NormalisedZero => (0..c)
            .flat_map(|ch| std::iter::repeat_n(cfg.mean[ch], plane))
            .collect(),
    };
    let blurred = blur(image, options.blur_sigma, options.blur_taps);
    let per_step = options.pixels_per_step.unwrap_or(w).max(1);
    // rise_curve takes an infallible scorer: keep the first error and return it after.
    let mut failure = None;
    let mut run = |from: &[f32], to: &[f32]| {
        rise_curve(saliency, from, to, c, per_step, &mut |imgs| {
            score(imgs).unwrap_or_else(|e| {
                failure.get_or_insert(e);
                vec![f64::NAN; imgs.len()]
            })
        })
    };
    let deletion_curve = run(&image.data, &baseline);
    let insertion_curve = run(&blurred, &image.data);
    if let Some(e) = failure {
        return Err(e);
    }

    // Map-multiplied input, in normalised space: pixel' = mean + (pixel - mean) * map. Maps in
    // [0, 1] (every Triscope map) multiply as they are; others are min-max normalised first.
    let lo = saliency.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = saliency.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (offset, span) = if lo >= 0.0 && hi <= 1.0 {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, hi - lo)
    } else {
        (lo, 1.0)
    };
    let mut masked = image.data.clone();
    for ch in 0..c {
        let mean = cfg.mean[ch];
        for (i, v) in masked[ch * plane..(ch + 1) * plane].iter_mut().enumerate() {
            let m = (saliency[i] - offset) / span;
            *v = mean + (*v - mean) * m;
        }
    }
    let pair = score(&[image.data.clone(), masked])?;
    let (probability, masked_probability) = (pair[0], pair[1]);
    Ok(Faithfulness {
        class_index: class,
        probability,
        deletion_auc: auc_uniform(&deletion_curve),
        insertion_auc: auc_uniform(&insertion_curve),
        deletion_curve,
        insertion_curve,
        masked_probability,
        drop_percent: confidence_drop_percent(probability, masked_probability),
        increase: masked_probability > probability,
    })
}

/// `max(0, Y - O) / Y * 100` (0 when Y is 0).
pub fn confidence_drop_percent(original: f64, masked: f64) -> f64 {
    if original <= 0.0 {
        0.0
    } else {
        (original - masked).max(0.0) / original * 100.0
    }
}

/// Gaussian blur of each channel plane (reflect border), the insertion start.
pub fn blur(image: &PixelImage, sigma: f64, taps: usize) -> Vec<f32> {
    let kernel = gaussian_kernel(sigma, taps.max(1) / 2);
    let plane = image.height * image.width;
    let mut out = Vec::with_capacity(image.data.len());
    for ch in 0..image.channels {
        let v: Vec<f64> = image.data[ch * plane..(ch + 1) * plane]
            .iter()
            .map(|&x| x as f64)
            .collect();
        out.extend(
            gaussian_filter(&v, image.height, image.width, &kernel)
                .into_iter()
                .map(|x| x as f32),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_is_relative_and_clipped() {
        assert!((confidence_drop_percent(0.8, 0.2) - 75.0).abs() < 1e-9);
        assert_eq!(confidence_drop_percent(0.5, 0.9), 0.0);
        assert_eq!(confidence_drop_percent(0.0, 0.3), 0.0);
    }

    #[test]
    fn blur_keeps_constants_and_mean() {
        let img = PixelImage {
            channels: 1,
            height: 12,
            width: 12,
            data: vec![0.25; 144],
        };
        assert!(blur(&img, 5.0, 11).iter().all(|v| (v - 0.25).abs() < 1e-6));
        let mut spike = img.clone();
        spike.data = vec![0.0; 144];
        spike.data[6 * 12 + 6] = 1.0;
        let b = blur(&spike, 1.0, 7);
        assert!(b[6 * 12 + 6] < 0.2 && b[6 * 12 + 7] > 0.0);
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
