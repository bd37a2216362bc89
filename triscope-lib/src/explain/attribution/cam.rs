//! The CAM family on a layer's activations `[K, h, w]`: the gradient CAMs (Grad-CAM, Grad-CAM++,
//! XGrad-CAM, LayerCAM, HiResCAM) from one backward, Score-CAM from masked forwards, Eigen-CAM
//! from the activations' first principal component, and pytorch-grad-cam's post-processing.

use super::*;
use crate::util::numeric::softmax;

/// pytorch-grad-cam's post-processing: min-max, OpenCV bilinear upsample, min-max.
pub(super) fn finish_cam(cam: &[f32], h: usize, w: usize, dims: Dims) -> Vec<f32> {
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
pub(super) fn cam_map(
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

pub(super) fn relu_in_place(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = x.max(0.0);
    }
}

/// `sum_k weights[k] * acts[k, p]` for `acts` `[K, hw]`.
pub(super) fn weighted_sum(acts: &[f32], weights: &[f32], hw: usize) -> Vec<f32> {
    let mut cam = vec![0.0f32; hw];
    for (k, &wk) in weights.iter().enumerate() {
        for (c, a) in cam.iter_mut().zip(&acts[k * hw..(k + 1) * hw]) {
            *c += wk * a;
        }
    }
    cam
}

/// One image's CAM before the ReLU from activations and gradients `[K, hw]`.
pub(super) fn cam_from_gradients(
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

pub(super) fn gradient_cam(
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

pub(super) fn score_cam(
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
pub(super) fn top_eigenvector(a: &mut [f64], n: usize) -> Vec<f64> {
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

pub(super) fn eigen_cam(
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
