//! Captum's input-space methods on the pixels `[C, H, W]`: Saliency, SmoothGrad, Integrated
//! Gradients (with its quadrature), Occlusion, and their reduction to one `[H, W]` map.

use super::*;

/// The `[H, W]` reduction of an input-space attribution `[C, H, W]`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reduce {
    /// max over channels (Saliency, SmoothGrad; values are already >= 0).
    MaxChannel,
    /// |sum over channels| (Integrated Gradients).
    AbsSum,
    /// ReLU of the first channel (Occlusion: every channel holds the same value).
    ReluFirst,
}

pub(super) fn input_space_map(
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

pub(super) fn saliency(
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
pub(super) fn logits_and_classes(
    model: &ResNet50,
    pixels: Tensor<4>,
    target: TargetClass,
) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
    let logits = forward_rows(model, pixels)?;
    let classes = resolve(&logits, target);
    Ok((logits, classes))
}

pub(super) fn smooth_grad(
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
        let mut rng =
            crate::util::rng::NormalPairs::new(options.smoothgrad_seed.wrapping_add(b as u64));
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

pub(super) fn integrated_gradients(
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
pub(super) fn window_starts(n: usize, window: usize, stride: usize) -> Vec<usize> {
    let count = (n - window).div_ceil(stride) + 1;
    (0..count).map(|i| i * stride).collect()
}

pub(super) fn occlusion(
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
