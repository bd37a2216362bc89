//! Training on the fast path: conv -> BatchNorm on batch statistics [-> + residual] [-> ReLU]
//! as one autodiff operation, whose parents are the input, the weight, gamma, beta and the
//! residual.
//!
//! Forward: the convolution's GEMMs, each (image, channel) row's sum and sum of squares taken
//! as the GEMM leaves it in cache, the per-channel mean and biased variance from those (f64),
//! then one pass for `act(y * scale + shift (+ residual))`, with `scale = gamma / sqrt(var +
//! eps)` and `shift = beta - mean * scale`. The running statistics are updated as burn's
//! `BatchNorm` updates them.
//!
//! Backward (the two-reduction form): with `d` the output gradient masked by the ReLU (which is
//! also the residual's gradient) and `xhat = (y - mean) / sqrt(var + eps)`, one pass sums
//! `dbeta = sum(d)` and `dgamma = sum(d * xhat)` per channel; then, image by image where the
//! convolution's gradient GEMMs read it, `dy = scale * (d - dbeta / M - xhat * dgamma / M)`
//! (`M = batch * H' * W'`).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::module::RunningState;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

use super::{
    AdTensor, Epilogue, FusedConv, Geometry, autodiff_primitive, conv_forward, conv_grads,
    epilogue, values, with_values,
};

/// `epilogue(bn(conv(x)))` with BatchNorm on the batch's statistics; hands the input and the
/// epilogue back where the fast path does not apply (then burn's ops run).
#[allow(clippy::result_large_err)]
pub(super) fn conv_bn_train(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: Tensor<4>,
    epilogue: Epilogue,
) -> Result<Tensor<4>, (Tensor<4>, Epilogue)> {
    match run(conv, bn, &x, &epilogue) {
        Some(y) => Ok(y),
        None => Err((x, epilogue)),
    }
}

fn run(conv: &Conv2d, bn: &BatchNorm, x: &Tensor<4>, ending: &Epilogue) -> Option<Tensor<4>> {
    if conv.bias.is_some() || x.dtype() != DType::F32 {
        return None;
    }
    let xa = autodiff_primitive(x.clone())?;
    let wa = autodiff_primitive(conv.weight.val())?;
    let gamma_a = autodiff_primitive(bn.gamma.val())?;
    let beta_a = autodiff_primitive(bn.beta.val())?;
    let op = FusedConv::plain_conv(conv, wa.primitive().clone())?;
    let g = op.geometry(&x.dims())?;
    let batch = x.dims()[0];
    let out_dims = [batch, g.c_out, g.out_h, g.out_w];
    let (residual, relu) = match ending {
        Epilogue::None => (None, false),
        Epilogue::Relu => (None, true),
        Epilogue::AddRelu(r) if r.dims() == out_dims && r.dtype() == DType::F32 => {
            (Some(autodiff_primitive(r.clone())?), true)
        }
        Epilogue::AddRelu(_) => return None,
    };
    let gamma = with_values(gamma_a.primitive(), <[f32]>::to_vec)?;
    let beta = with_values(beta_a.primitive(), <[f32]>::to_vec)?;
    let running_mean = host(&bn.running_mean)?;
    let running_var = host(&bn.running_var)?;
    if [&gamma, &beta, &running_mean, &running_var]
        .iter()
        .any(|v| v.len() != g.c_out)
    {
        return None;
    }

    let (xv, xs, xe) = values(xa.primitive())?;
    let (wv, ws, we) = values(wa.primitive())?;
    let (y, sums) = conv_forward(
        &g,
        batch,
        &xv.storage()[xs..xe],
        &wv.storage()[ws..we],
        true,
    );
    // Per-channel mean and biased variance over the batch and the plane, rows summed in order.
    let count = (batch * g.out_plane()) as f64;
    let mut mean = vec![0.0f64; g.c_out];
    let mut var = vec![0.0f64; g.c_out];
    for c in 0..g.c_out {
        let (s, q) = (0..batch).fold((0.0, 0.0), |(s, q), n| {
            let [rs, rq] = sums[n * g.c_out + c];
            (s + rs, q + rq)
        });
        mean[c] = s / count;
        var[c] = (q / count - mean[c] * mean[c]).max(0.0);
    }
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v + bn.epsilon).sqrt()) as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(&g, &s)| g * s).collect();
    let shift: Vec<f32> = (0..g.c_out).map(|c| beta[c] - mean[c] * scale[c]).collect();
    let residual_values = match &residual {
        Some(r) => Some(values(r.primitive())?),
        None => None,
    };
    let mut z = vec![0.0f32; y.len()];
    epilogue(
        &mut z,
        Some(&y),
        g.out_plane(),
        &scale,
        &shift,
        residual_values
            .as_ref()
            .map(|(r, s, e)| &r.storage()[*s..*e]),
        relu,
    );

    // Running statistics, as burn's BatchNorm: `running * (1 - m) + batch * m` (f32).
    let var: Vec<f32> = var.iter().map(|&v| v as f32).collect();
    let device = x.device();
    update_running(&bn.running_mean, &running_mean, &mean, bn.momentum, &device);
    update_running(&bn.running_var, &running_var, &var, bn.momentum, &device);

    let out = FlexTensor::from_data(TensorData::new(z, out_dims));
    // Without a residual the fifth parent is an untracked constant (no gradient asked).
    let residual_node = residual.as_ref().map(|r| r.node()).unwrap_or_else(|| {
        AdTensor::new(FlexTensor::from_data(TensorData::new(vec![0.0f32], [1]))).node()
    });
    let out = match ConvBnTrainBackward
        .prepare::<NoCheckpointing>([
            xa.node(),
            wa.node(),
            gamma_a.node(),
            beta_a.node(),
            residual_node,
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = Arc::new(SavedBnTrain {
                geometry: g,
                batch,
                input: xa.primitive().clone(),
                weight: op.weight,
                conv_out: y,
                output: relu.then(|| out.clone()),
                mean,
                inv_std,
                gamma,
            });
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// A running statistic's values on the host.
fn host(state: &RunningState<Tensor<1>>) -> Option<Vec<f32>> {
    state.value_sync().into_data().try_to_vec::<f32>().ok()
}

fn update_running(
    state: &RunningState<Tensor<1>>,
    running: &[f32],
    batch: &[f32],
    momentum: f64,
    device: &Device,
) {
    let (keep, take) = ((1.0 - momentum) as f32, momentum as f32);
    let blended: Vec<f32> = running
        .iter()
        .zip(batch)
        .map(|(&r, &b)| r * keep + b * take)
        .collect();
    let n = blended.len();
    state.update(Tensor::<1>::from_data(TensorData::new(blended, [n]), device).detach());
}

/// What the backward needs.
#[derive(Debug)]
struct SavedBnTrain {
    geometry: Geometry,
    batch: usize,
    /// The convolution's input (for the weight gradient).
    input: FlexTensor,
    weight: FlexTensor,
    /// `y = conv(x)`, the BatchNorm's input. `[batch, c_out, plane]`.
    conv_out: Vec<f32>,
    /// The output, whose sign is the ReLU's mask (None without a ReLU).
    output: Option<FlexTensor>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
}

/// The gradients [`SavedBnTrain::backward`] returns: input, weight, gamma, beta, residual.
type BnTrainGrads = [Option<FlexTensor>; 5];

impl SavedBnTrain {
    fn backward(&self, grad: &FlexTensor, want: [bool; 5]) -> BnTrainGrads {
        let [want_x, want_w, want_gamma, want_beta, want_residual] = want;
        let g = self.geometry;
        let (plane, c_out, batch) = (g.out_plane(), g.c_out, self.batch);
        let Some((dz, ds, de)) = values(grad) else {
            panic!("training conv + BatchNorm backward: gradient is not f32")
        };
        let dz: &[f32] = &dz.storage()[ds..de];
        let output = self.output.as_ref().and_then(values);
        let z: Option<&[f32]> = output.as_ref().map(|(t, s, e)| &t.storage()[*s..*e]);
        let y = &self.conv_out[..];
        // Pass 1, per (image, channel) row: sum(d) and sum(d * (y - mean)); `d` itself is
        // written out when the residual's gradient is wanted.
        let rows = batch * c_out;
        let mut row_sums = vec![[0.0f64; 2]; rows];
        let mut d_all: Vec<f32> = vec![0.0; if want_residual { rows * plane } else { 0 }];
        let reduce = |i: usize, sums: &mut [f64; 2], d_out: &mut [f32]| {
            let mean = self.mean[i % c_out];
            let d_row = &dz[i * plane..][..plane];
            let y_row = &y[i * plane..][..plane];
            let z_row = z.map(|z| &z[i * plane..][..plane]);
            *sums = match (want_residual, z_row) {
                (true, Some(z_row)) => {
                    for ((o, &d), &z) in d_out.iter_mut().zip(d_row).zip(z_row) {
                        *o = if z > 0.0 { d } else { 0.0 };
                    }
                    grad_sums(d_out, None, y_row, mean)
                }
                (true, None) => {
                    d_out.copy_from_slice(d_row);
                    grad_sums(d_row, None, y_row, mean)
                }
                (false, z_row) => grad_sums(d_row, z_row, y_row, mean),
            };
        };
        let d_rows: Vec<&mut [f32]> = match want_residual {
            true => d_all.chunks_mut(plane.max(1)).collect(),
            false => (0..rows).map(|_| <&mut [f32]>::default()).collect(),
        };
        if rows * plane >= 1 << 15 {
            row_sums
                .par_iter_mut()
                .zip(d_rows)
                .enumerate()
                .for_each(|(i, (s, d))| reduce(i, s, d));
        } else {
            row_sums
                .iter_mut()
                .zip(d_rows)
                .enumerate()
                .for_each(|(i, (s, d))| reduce(i, s, d));
        }
        let count = (batch * plane) as f64;
        let mut dgamma = vec![0.0f32; c_out];
        let mut dbeta = vec![0.0f32; c_out];
        // dy = scale * (d - k1 - (y - mean) * k2): k1 = dbeta / M, k2 = dgamma * inv_std / M.
        let mut k1 = vec![0.0f32; c_out];
        let mut k2 = vec![0.0f32; c_out];
        let mut scale = vec![0.0f32; c_out];
        for c in 0..c_out {
            let (s, sx) = (0..batch).fold((0.0f64, 0.0f64), |(s, sx), n| {
                let [a, b] = row_sums[n * c_out + c];
                (s + a, sx + b)
            });
            let inv_std = self.inv_std[c] as f64;
            let dg = sx * inv_std;
            dgamma[c] = dg as f32;
            dbeta[c] = s as f32;
            k1[c] = (s / count) as f32;
            k2[c] = (dg * inv_std / count) as f32;
            scale[c] = self.gamma[c] * self.inv_std[c];
        }

        // Pass 2, image by image inside the convolution's gradient GEMMs.
        let gy = |n: usize, c: usize, row: &mut [f32]| {
            let i = n * c_out + c;
            let (mean, s, a, b) = (self.mean[c], scale[c], k1[c], k2[c]);
            let d_row = &dz[i * plane..][..plane];
            let y_row = &y[i * plane..][..plane];
            match z.map(|z| &z[i * plane..][..plane]) {
                Some(z_row) => {
                    for (((v, &d), &yv), &zv) in row.iter_mut().zip(d_row).zip(y_row).zip(z_row) {
                        let d = if zv > 0.0 { d } else { 0.0 };
                        *v = s * (d - a - (yv - mean) * b);
                    }
                }
                None => {
                    for ((v, &d), &yv) in row.iter_mut().zip(d_row).zip(y_row) {
                        *v = s * (d - a - (yv - mean) * b);
                    }
                }
            }
        };
        let (gx, gw) = if want_x || want_w {
            let Some((x, xs, xe)) = values(&self.input) else {
                panic!("training conv + BatchNorm backward: input is not f32")
            };
            let Some((w, ws, we)) = values(&self.weight) else {
                panic!("training conv + BatchNorm backward: weight is not f32")
            };
            let x = &x.storage::<f32>()[xs..xe];
            conv_grads(
                &g,
                batch,
                want_w.then_some(x),
                &w.storage()[ws..we],
                want_x,
                &gy,
            )
        } else {
            (None, None)
        };
        let tensor =
            |v: Vec<f32>, dims: Vec<usize>| FlexTensor::from_data(TensorData::new(v, dims));
        [
            gx.map(|v| tensor(v, vec![batch, g.c_in, g.h, g.w])),
            gw.map(|v| tensor(v, vec![c_out, g.c_in, g.k, g.k])),
            want_gamma.then(|| tensor(dgamma, vec![c_out])),
            want_beta.then(|| tensor(dbeta, vec![c_out])),
            want_residual.then(|| tensor(d_all, vec![batch, c_out, g.out_h, g.out_w])),
        ]
    }
}

/// `sum(d)` and `sum(d * (y - mean))` over a row, `d` taken as 0 where `z <= 0` (f32 over runs
/// of 64 values, which keeps the loop vectorised, f64 across runs).
fn grad_sums(d: &[f32], z: Option<&[f32]>, y: &[f32], mean: f32) -> [f64; 2] {
    let (mut s, mut sx) = (0.0f64, 0.0f64);
    for start in (0..d.len()).step_by(64) {
        let end = (start + 64).min(d.len());
        let (d, y) = (&d[start..end], &y[start..end]);
        let (mut rs, mut rsx) = (0.0f32, 0.0f32);
        match z {
            Some(z) => {
                for ((&d, &y), &z) in d.iter().zip(y).zip(&z[start..end]) {
                    let d = if z > 0.0 { d } else { 0.0 };
                    rs += d;
                    rsx += d * (y - mean);
                }
            }
            None => {
                for (&d, &y) in d.iter().zip(y) {
                    rs += d;
                    rsx += d * (y - mean);
                }
            }
        }
        s += rs as f64;
        sx += rsx as f64;
    }
    [s, sx]
}

#[derive(Debug)]
struct ConvBnTrainBackward;

impl Backward<Flex, 5> for ConvBnTrainBackward {
    type State = Arc<SavedBnTrain>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let want = ops.parents.each_ref().map(Option::is_some);
        let out = ops.state.backward(&grad, want);
        for (node, g) in ops.parents.into_iter().zip(out) {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}
