//! Grad-CAM as defined by pytorch-grad-cam's `GradCAM`.
//!
//! target = the raw logit of the class; channel weights = spatial mean of
//! d(logit)/d(activation); cam = ReLU(sum_k w_k A_k); min-max normalised per image
//! ((cam - min) / (max + 1e-7)); bilinearly upsampled to the input size (OpenCV's
//! `INTER_LINEAR`, half-pixel centres); min-max normalised again (pytorch-grad-cam
//! re-normalises after aggregating layers, which with one layer only rescales).

use burn::tensor::activation::relu;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::model::{LayerId, ResNet50};
use crate::util::numeric::argmax;

/// Which class a Grad-CAM explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TargetClass {
    /// The model's top-1 prediction for each image.
    #[default]
    Predicted,
    /// A fixed class index for every image.
    Index(usize),
}

/// One image's Grad-CAM, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradCamMap {
    pub layer: LayerId,
    pub class_index: usize,
    /// ReLU(sum_k w_k A_k) at the layer's resolution, before normalisation.
    pub raw: Vec<f32>,
    pub raw_height: usize,
    pub raw_width: usize,
    /// The normalised map at input size, values in [0, 1], row-major.
    pub map: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

/// Grad-CAM for a batch, plus the logits of the same (single) forward pass.
#[derive(Debug, Clone)]
pub struct GradCamBatch {
    pub maps: Vec<GradCamMap>,
    /// `[batch][num_classes]`.
    pub logits: Vec<Vec<f32>>,
}

/// Grad-CAM on `layer` for each image of `pixels` (`[batch, C, H, W]`, values in [0, 1],
/// on a device without autodiff; the model must be in inference mode, see `Module::valid`).
pub fn grad_cam(
    model: &ResNet50,
    pixels: Tensor<4>,
    layer: LayerId,
    target: TargetClass,
) -> Result<GradCamBatch> {
    let [batch, _, height, width] = pixels.dims();
    let num_classes = model.config.num_classes;
    let device = pixels.device();
    let taps = model.forward_taps(pixels, Some(layer));
    let logits = crate::model::host::logit_rows(taps.logits.clone())?;

    let classes: Vec<usize> = match target {
        TargetClass::Predicted => logits.iter().map(|row| argmax(row)).collect(),
        TargetClass::Index(c) if c < num_classes => vec![c; batch],
        TargetClass::Index(c) => {
            return Err(TriscopeError::InvalidArgument(format!(
                "class {c} does not exist: the model has {num_classes} classes (0..{})",
                num_classes - 1
            )));
        }
    };
    let mut one_hot = vec![0.0f32; batch * num_classes];
    for (b, &c) in classes.iter().enumerate() {
        one_hot[b * num_classes + c] = 1.0;
    }
    let mask = Tensor::<2>::from_data(TensorData::new(one_hot, [batch, num_classes]), &device);
    // Sum over the batch of each image's target logit: images are independent in eval mode,
    // so each gets the gradient of its own logit.
    let target_score = (taps.logits * mask).sum();
    let grads = target_score.backward();
    let activation = taps.layers[layer.index()].clone();
    let grad = activation
        .grad(&grads)
        .ok_or_else(|| TriscopeError::Compute(format!("no gradient reached {layer}")))?; // [b, K, h, w]
    let activation = activation.inner(); // [b, K, h, w]
    let [_, _, h, w] = activation.dims();
    let weights = grad.mean_dims(&[2, 3]); // [b, K, 1, 1]
    let cam = relu((activation * weights).sum_dim(1)); // [b, 1, h, w]
    let cam = crate::model::host::values(cam, "Grad-CAM")?;

    let maps = classes
        .iter()
        .enumerate()
        .map(|(b, &class_index)| {
            let raw = cam[b * h * w..(b + 1) * h * w].to_vec();
            let map = min_max(&resize_bilinear(&min_max(&raw), h, w, height, width));
            GradCamMap {
                layer,
                class_index,
                raw,
                raw_height: h,
                raw_width: w,
                map,
                height,
                width,
            }
        })
        .collect();
    Ok(GradCamBatch { maps, logits })
}

/// pytorch-grad-cam's `scale_cam_image` normalisation: `(x - min) / (max(x - min) + 1e-7)`.
pub fn min_max(values: &[f32]) -> Vec<f32> {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let shifted: Vec<f32> = values.iter().map(|v| v - min).collect();
    let max = shifted.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    shifted.iter().map(|v| v / (max + 1e-7)).collect()
}

/// OpenCV `resize(..., INTER_LINEAR)` for a single-channel float image: half-pixel centres,
/// edges clamped.
pub fn resize_bilinear(
    src: &[f32],
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
) -> Vec<f32> {
    let axis = |src_n: usize, dst_n: usize| -> Vec<(usize, usize, f32)> {
        let scale = src_n as f64 / dst_n as f64;
        (0..dst_n)
            .map(|d| {
                let f = (d as f64 + 0.5) * scale - 0.5;
                let mut s = f.floor() as i64;
                let mut frac = (f - s as f64) as f32;
                if s < 0 {
                    s = 0;
                    frac = 0.0;
                }
                if s as usize >= src_n - 1 {
                    s = src_n as i64 - 1;
                    frac = 0.0;
                }
                let s = s as usize;
                (s, (s + 1).min(src_n - 1), frac)
            })
            .collect()
    };
    bilinear_from_axes(src, src_w, &axis(src_h, dst_h), &axis(src_w, dst_w))
}

/// Bilinear interpolation of one plane given, per output row and column, the two source
/// indices and the weight of the second: the part every bilinear convention shares (they
/// differ only in how output coordinates map to source ones).
pub(crate) fn bilinear_from_axes(
    src: &[f32],
    src_w: usize,
    ys: &[(usize, usize, f32)],
    xs: &[(usize, usize, f32)],
) -> Vec<f32> {
    let mut out = Vec::with_capacity(ys.len() * xs.len());
    for &(y0, y1, fy) in ys {
        for &(x0, x1, fx) in xs {
            let top = src[y0 * src_w + x0] * (1.0 - fx) + src[y0 * src_w + x1] * fx;
            let bottom = src[y1 * src_w + x0] * (1.0 - fx) + src[y1 * src_w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_matches_reference_formula() {
        let v = min_max(&[2.0, 4.0, 6.0]);
        assert!(
            (v[0] - 0.0).abs() < 1e-6 && (v[1] - 0.5).abs() < 1e-6 && (v[2] - 1.0).abs() < 1e-6
        );
        // An all-zero map (ReLU killed everything) stays zero, no NaN.
        assert_eq!(min_max(&[0.0; 4]), vec![0.0; 4]);
    }

    #[test]
    fn bilinear_matches_opencv_half_pixel() {
        // cv2.resize(np.float32([[0, 1]]), (4, 1)) == [[0, 0.25, 0.75, 1]]
        let out = resize_bilinear(&[0.0, 1.0], 1, 2, 1, 4);
        let want = [0.0, 0.25, 0.75, 1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }
}
