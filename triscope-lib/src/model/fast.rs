//! Fused convolutions for burn's flex CPU backend, with their own autodiff backward:
//!
//! - inference (BatchNorm on running statistics, constant weights): conv -> BatchNorm
//!   [-> + residual] [-> ReLU] as one kernel, with the gradients of the input and residual
//!   (attacks, Grad-CAM, attribution);
//! - training (BatchNorm on batch statistics, `fast::train`): the same chain as one autodiff
//!   operation with the gradients of the input, weight, gamma, beta and residual; the batch
//!   statistics are summed while the GEMM's output is in cache, and the backward is the
//!   two-reduction form of BatchNorm's gradient feeding the convolution's gradients directly;
//! - trainable weights with BatchNorm on running statistics: the convolution alone with its
//!   input and weight gradients, BatchNorm through burn.
//!
//! The model calls [`conv_bn`] for every conv + BatchNorm pair. Elsewhere (wgpu, other dtypes,
//! odd convolutions) the same function falls back to burn's `Conv2d` and `BatchNorm`, so the
//! model stays backend-agnostic.
//!
//! The kernel: im2col in NCHW order (`[c_in * k * k, out_h * out_w]`, skipped for unstrided 1x1
//! convolutions), one GEMM per image with the torchvision weight as it is
//! (`[c_out, c_in * k * k]`), then one pass applying the BatchNorm scale and shift, the
//! residual and the ReLU. The gradients: `dW = sum over the batch of gy . im2col(x)^T` and
//! `dx = col2im(W^T . gy)`. A batch is split into at most `MAX_CHUNKS` fixed chunks of images
//! run in parallel (single-threaded GEMMs inside); a chunk's weight gradient is its own partial
//! sum and the partials are added in chunk order, so every result is independent of thread
//! count and scheduling. BatchNorm is folded into the convolution at no cost per call and
//! without touching the stored (torchvision) parameters.

use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::model::config::Precision;

pub mod bf16;
mod kernels;
mod train;

use kernels::{as_uninit, assume_init, col2im, columns, epilogue, matmul, matmul_into};

type AdTensor = FloatTensor<Autodiff<Flex>>;
type Uninit = MaybeUninit<f32>;

thread_local! {
    static FAST_PATH: Cell<bool> = const { Cell::new(true) };
    /// The im2col buffer, kept between calls (every value is rewritten before it is read).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static FUSED_CALLS: Cell<u64> = const { Cell::new(0) };
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// How many conv + BatchNorm pairs this thread has run through the fused kernel (tests use it
/// to check which path ran).
pub fn fused_calls() -> u64 {
    FUSED_CALLS.with(Cell::get)
}

/// The fast path is on unless the environment sets `TRISCOPE_FAST_PATH=0` (read once).
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("TRISCOPE_FAST_PATH").map_or(true, |v| v.trim() != "0"))
}

/// Run `f` with the fused flex kernels switched off on this thread (burn's own ops only): the
/// reference the fast path is tested and benchmarked against.
pub fn with_plain_path<R>(f: impl FnOnce() -> R) -> R {
    let before = FAST_PATH.with(|c| c.replace(false));
    let out = f();
    FAST_PATH.with(|c| c.set(before));
    out
}

/// Run `f` with this thread's fast-path GEMMs in `precision`: bf16 rounds both operands of
/// every convolution's products (forward and backward) to bf16 and sums in f32; weights,
/// activations, BatchNorm and the optimizer stay f32. Where the CPU lacks AVX512_BF16 the
/// GEMMs stay f32 ([`Precision::resolve`] says so to the user first).
pub fn with_precision<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let before = PRECISION.with(|c| c.replace(precision));
    let out = f();
    PRECISION.with(|c| c.set(before));
    out
}

/// The precision this thread's fast-path GEMMs run in: bf16 where asked for and the CPU has
/// it, else f32.
pub fn precision() -> Precision {
    match PRECISION.with(Cell::get) {
        Precision::Bf16 if bf16::supported() => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// `f` to run on another thread in this thread's precision: job threads (the app's model,
/// audit and concept threads) carry the precision of the thread that started them.
pub fn carried<R>(f: impl FnOnce() -> R) -> impl FnOnce() -> R {
    let precision = precision();
    move || with_precision(precision, f)
}

/// What follows the BatchNorm.
#[allow(clippy::large_enum_variant)] // passed by value once per call, never stored
pub enum Epilogue {
    None,
    Relu,
    /// `relu(bn(conv(x)) + residual)`, the end of a bottleneck block. `[batch, C_out, H', W']`.
    AddRelu(Tensor<4>),
}

/// `epilogue(bn(conv(x)))`. `[batch, C_in, H, W]` -> `[batch, C_out, H', W']`.
pub fn conv_bn(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, epilogue: Epilogue) -> Tensor<4> {
    if !(FAST_PATH.with(Cell::get) && enabled()) {
        return plain(conv, bn, x, epilogue);
    }
    let counted = |y| {
        FUSED_CALLS.with(|c| c.set(c.get() + 1));
        y
    };
    // Training: BatchNorm on batch statistics (burn's rule: an autodiff input and the
    // training flag), the whole chain as one autodiff operation.
    if x.is_autodiff() && bn.training.is_enabled() {
        return match train::conv_bn_train(conv, bn, x, epilogue) {
            Ok(y) => counted(y),
            Err((x, epilogue)) => plain(conv, bn, x, epilogue),
        };
    }
    match FusedConv::new(conv, bn) {
        Some(op) => match op.run(x, epilogue) {
            Ok(y) => counted(y),
            Err((x, epilogue)) => plain(conv, bn, x, epilogue),
        },
        // Trainable weights with BatchNorm on running statistics: the convolution alone on
        // the fast path, with its input and weight gradients; BatchNorm through burn.
        None => match conv_train(conv, x) {
            Ok(y) => counted(finish(bn.forward(y), epilogue)),
            Err(x) => plain(conv, bn, x, epilogue),
        },
    }
}

fn finish(y: Tensor<4>, epilogue: Epilogue) -> Tensor<4> {
    match epilogue {
        Epilogue::None => y,
        Epilogue::Relu => relu(y),
        Epilogue::AddRelu(residual) => relu(y + residual),
    }
}

/// `conv(x)` on the fast path when the weight is trainable (an autodiff flex tensor), with the
/// gradients of the input and of the weight; hands `x` back where it does not apply.
#[allow(clippy::result_large_err)]
fn conv_train(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let weight = conv.weight.val();
    if conv.bias.is_some() || !weight.is_autodiff() || x.dtype() != DType::F32 {
        return Err(x);
    }
    let (Some(xa), Some(wa)) = (autodiff_primitive(x.clone()), autodiff_primitive(weight)) else {
        return Err(x);
    };
    let Some(op) = FusedConv::plain_conv(conv, wa.primitive().clone()) else {
        return Err(x);
    };
    let Some(g) = op.geometry(&x.dims()) else {
        return Err(x);
    };
    let Some(out) = op.forward(xa.primitive(), None, false, g) else {
        return Err(x);
    };
    let out = match ConvTrainBackward
        .prepare::<NoCheckpointing>([xa.node(), wa.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = Arc::new(SavedTrain {
                saved: Saved {
                    conv: op,
                    geometry: g,
                    output: None,
                },
                input: xa.primitive().clone(),
            });
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// burn's own ops: the reference and the fallback.
fn plain(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, epilogue: Epilogue) -> Tensor<4> {
    finish(bn.forward(conv.forward(x)), epilogue)
}

/// The contiguous f32 values of a flex tensor (copied to a contiguous layout first if needed).
fn values(t: &FlexTensor) -> Option<(FlexTensor, usize, usize)> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let t = t.to_contiguous();
    let (start, end) = t.layout().contiguous_offsets()?;
    Some((t, start, end))
}

fn with_values<R>(t: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (t, start, end) = values(t)?;
    let storage: &[f32] = t.storage();
    Some(f(&storage[start..end]))
}

/// A parameter as a plain flex tensor; `None` on other backends or when it is tracked by
/// autodiff (its gradient would be needed).
fn flex_param<const D: usize>(t: Tensor<D>) -> Option<FlexTensor> {
    t.try_into_primitive::<Flex>().ok()
}

fn flex_vec(t: Tensor<1>) -> Option<Vec<f32>> {
    with_values(&flex_param(t)?, <[f32]>::to_vec)
}

/// `[c_out, c_in, k, stride, pad]` of a convolution the kernel handles: square kernel, one
/// stride and one padding on both axes, no groups, no dilation.
fn kernel_layout(conv: &Conv2d) -> Option<[usize; 5]> {
    let [c_out, c_in, kh, kw] = conv.weight.dims();
    let pad = match conv.padding {
        PaddingConfig2d::Explicit(a, b, c, d) if a == b && b == c && c == d => a,
        PaddingConfig2d::Valid => 0,
        _ => return None,
    };
    if kh != kw
        || conv.groups != 1
        || conv.dilation != [1, 1]
        || conv.stride[0] != conv.stride[1]
        || conv.stride[0] == 0
    {
        return None;
    }
    Some([c_out, c_in, kh, conv.stride[0], pad])
}

/// Shapes of one convolution (square kernel, equal stride and padding on both axes).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
}

impl Geometry {
    /// Rows of the im2col matrix (the GEMM's inner dimension).
    fn depth(&self) -> usize {
        self.c_in * self.k * self.k
    }
    fn in_plane(&self) -> usize {
        self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }
    /// Unstrided, unpadded 1x1: the input is its own im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

/// The constants of one fused conv + BatchNorm: weight `[c_out, c_in, k, k]`, and the
/// per-channel `scale = gamma / sqrt(var + eps)`, `shift = beta - mean * scale` (+ conv bias).
#[derive(Debug, Clone)]
struct FusedConv {
    weight: FlexTensor,
    scale: Arc<Vec<f32>>,
    shift: Arc<Vec<f32>>,
    c_out: usize,
    c_in: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl FusedConv {
    /// `None` when a parameter is not a constant flex f32 tensor (trainable weights).
    fn new(conv: &Conv2d, bn: &BatchNorm) -> Option<Self> {
        let [c_out, c_in, k, stride, pad] = kernel_layout(conv)?;
        let weight = flex_param(conv.weight.val())?;
        if weight.dtype() != DType::F32 {
            return None;
        }
        let gamma = flex_vec(bn.gamma.val())?;
        let beta = flex_vec(bn.beta.val())?;
        let mean = flex_vec(bn.running_mean.value())?;
        let var = flex_vec(bn.running_var.value())?;
        let bias = match &conv.bias {
            Some(b) => flex_vec(b.val())?,
            None => vec![0.0; c_out],
        };
        if [&gamma, &beta, &mean, &var, &bias]
            .iter()
            .any(|v| v.len() != c_out)
        {
            return None;
        }
        let eps = bn.epsilon;
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(&g, &v)| (g as f64 / (v as f64 + eps).sqrt()) as f32)
            .collect();
        let shift: Vec<f32> = (0..c_out)
            .map(|c| beta[c] + (bias[c] - mean[c]) * scale[c])
            .collect();
        Some(Self {
            weight,
            scale: Arc::new(scale),
            shift: Arc::new(shift),
            c_out,
            c_in,
            k,
            stride,
            pad,
        })
    }

    /// The convolution alone (scale 1, shift 0) with `weight`, the values of `conv`'s weight
    /// (which may be tracked by autodiff: its gradient is the caller's business).
    fn plain_conv(conv: &Conv2d, weight: FlexTensor) -> Option<Self> {
        let [c_out, c_in, k, stride, pad] = kernel_layout(conv)?;
        if weight.dtype() != DType::F32 {
            return None;
        }
        Some(Self {
            weight,
            scale: Arc::new(vec![1.0; c_out]),
            shift: Arc::new(vec![0.0; c_out]),
            c_out,
            c_in,
            k,
            stride,
            pad,
        })
    }

    fn geometry(&self, dims: &[usize]) -> Option<Geometry> {
        let &[_, c_in, h, w] = dims else { return None };
        if c_in != self.c_in || h + 2 * self.pad < self.k || w + 2 * self.pad < self.k {
            return None;
        }
        Some(Geometry {
            c_in,
            c_out: self.c_out,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            h,
            w,
            out_h: (h + 2 * self.pad - self.k) / self.stride + 1,
            out_w: (w + 2 * self.pad - self.k) / self.stride + 1,
        })
    }

    /// Run on flex tensors (plain or autodiff); hands the inputs back when they are not.
    #[allow(clippy::result_large_err)]
    fn run(self, x: Tensor<4>, epilogue: Epilogue) -> Result<Tensor<4>, (Tensor<4>, Epilogue)> {
        let relu = !matches!(epilogue, Epilogue::None);
        let Some(geometry) = self.geometry(&x.dims()) else {
            return Err((x, epilogue));
        };
        let out_dims = [x.dims()[0], self.c_out, geometry.out_h, geometry.out_w];
        let residual = match &epilogue {
            Epilogue::AddRelu(r) if r.dims() != out_dims || r.dtype() != DType::F32 => {
                return Err((x, epilogue));
            }
            Epilogue::AddRelu(r) => Some(r.clone()),
            _ => None,
        };
        if x.dtype() != DType::F32 {
            return Err((x, epilogue));
        }
        let any_autodiff = x.is_autodiff() || residual.as_ref().is_some_and(|r| r.is_autodiff());
        let out = if any_autodiff {
            let xa = autodiff_primitive(x.clone());
            let ra = residual.map(autodiff_primitive);
            match (xa, ra) {
                (Some(xa), None) => self.run_autodiff_1(xa, relu, geometry),
                (Some(xa), Some(Some(ra))) => self.run_autodiff_2(xa, ra, geometry),
                _ => None,
            }
            .map(Tensor::from_primitive::<Autodiff<Flex>>)
        } else {
            let xp = x.clone().try_into_primitive::<Flex>().ok();
            let rp = residual.map(|r| r.try_into_primitive::<Flex>().ok());
            match (xp, rp) {
                (Some(xp), None) => self.forward(&xp, None, relu, geometry),
                (Some(xp), Some(Some(rp))) => self.forward(&xp, Some(&rp), relu, geometry),
                _ => None,
            }
            .map(Tensor::from_primitive::<Flex>)
        };
        out.ok_or((x, epilogue))
    }

    fn run_autodiff_1(self, x: AdTensor, relu: bool, g: Geometry) -> Option<AdTensor> {
        let out = self.forward(x.primitive(), None, relu, g)?;
        Some(
            match FusedConvBackward
                .prepare::<NoCheckpointing>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = Saved::new(self, g, relu.then(|| out.clone()));
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
        )
    }

    fn run_autodiff_2(self, x: AdTensor, r: AdTensor, g: Geometry) -> Option<AdTensor> {
        let out = self.forward(x.primitive(), Some(r.primitive()), true, g)?;
        Some(
            match FusedConvResidualBackward
                .prepare::<NoCheckpointing>([x.node(), r.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = Saved::new(self, g, Some(out.clone()));
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            },
        )
    }

    /// The fused forward on flex primitives. `None` when a tensor is not f32.
    fn forward(
        &self,
        x: &FlexTensor,
        residual: Option<&FlexTensor>,
        relu: bool,
        g: Geometry,
    ) -> Option<FlexTensor> {
        let batch = x.layout().shape()[0];
        let (x, xs, xe) = values(x)?;
        let x: &[f32] = &x.storage()[xs..xe];
        let (w, ws, we) = values(&self.weight)?;
        let w: &[f32] = &w.storage()[ws..we];
        let residual = match residual {
            Some(r) => Some(values(r)?),
            None => None,
        };
        let residual: Option<&[f32]> = residual.as_ref().map(|(r, s, e)| &r.storage()[*s..*e]);
        let (mut out, _) = conv_forward(&g, batch, x, w, false);
        epilogue(
            &mut out,
            None,
            g.out_plane(),
            &self.scale,
            &self.shift,
            residual,
            relu,
        );
        Some(FlexTensor::from_data(TensorData::new(
            out,
            [batch, g.c_out, g.out_h, g.out_w],
        )))
    }
}

/// Images per chunk and the chunk count for a batch of `plane`-sized outputs (see the module
/// docs): a power of two of at most [`MAX_CHUNKS`] chunks, each at least [`MIN_CHUNK_COLUMNS`]
/// output positions long so that adding up the weight gradient's partial sums stays small
/// beside the GEMMs that made them; the batch spread evenly over them. Shapes alone decide it.
fn chunking(batch: usize, plane: usize) -> (usize, usize) {
    let by_columns = (batch * plane / MIN_CHUNK_COLUMNS).clamp(1, MAX_CHUNKS.min(batch.max(1)));
    // The largest power of two not above it.
    let chunks = 1 << by_columns.ilog2();
    let per_chunk = batch.div_ceil(chunks).max(1);
    (per_chunk, batch.div_ceil(per_chunk))
}

/// Fewest output positions (images x plane) per chunk.
const MIN_CHUNK_COLUMNS: usize = 256;

/// Most chunks a batch is split into. Fixed (not the thread count), so that the weight
/// gradient's partial sums, and so the trained weights, are the same on every machine.
const MAX_CHUNKS: usize = 8;

/// Run `f(chunk, part)` on each `per_chunk`-sized part of `items` (in parallel when there is
/// more than one and more than one thread), returning the results in chunk order.
fn for_chunks<T: Send, R: Send>(
    items: &mut [T],
    per_chunk: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let per_chunk = per_chunk.max(1);
    if items.len() > per_chunk && rayon::current_num_threads() > 1 {
        items
            .par_chunks_mut(per_chunk)
            .enumerate()
            .map(|(i, part)| f(i, part))
            .collect()
    } else {
        items
            .chunks_mut(per_chunk)
            .enumerate()
            .map(|(i, part)| f(i, part))
            .collect()
    }
}

/// Whether the GEMMs inside a chunk should use the thread pool themselves: only when the
/// chunks alone cannot occupy it (a batch of one, or more threads than chunks).
fn gemm_parallel(chunks: usize) -> bool {
    chunks < rayon::current_num_threads()
}

/// `y = conv(x)`: `[batch, c_in, h, w]` -> `[batch, c_out, out_h, out_w]`, chunks of the batch
/// in parallel. With `stats`, also each (image, channel) row's sum and sum of squares (f64,
/// `[batch * c_out]`), taken right after the GEMM wrote the row, while it is in cache.
fn conv_forward(
    g: &Geometry,
    batch: usize,
    x: &[f32],
    w: &[f32],
    stats: bool,
) -> (Vec<f32>, Vec<[f64; 2]>) {
    let plane = g.out_plane();
    let per_item = g.c_out * plane;
    let in_item = g.c_in * g.in_plane();
    let total = batch * per_item;
    let (per_chunk, chunks) = chunking(batch, plane);
    let parallel = gemm_parallel(chunks);
    let (m, k) = (g.c_out, g.depth());
    // The weight is the same for every image: rounded and packed once.
    let packed = (precision() == Precision::Bf16).then(|| bf16::PackedLhs::new(m, k, (w, k, 1)));
    let mut out: Vec<f32> = Vec::with_capacity(total);
    let sums = for_chunks(
        &mut out.spare_capacity_mut()[..total],
        per_chunk * per_item,
        |chunk, part| {
            let mut sums = Vec::with_capacity(if stats { per_chunk * g.c_out } else { 0 });
            with_scratch(*g, |col| {
                for (i, out_n) in part.chunks_mut(per_item.max(1)).enumerate() {
                    let n = chunk * per_chunk + i;
                    let rhs = columns(&x[n * in_item..][..in_item], g, col);
                    // out_n[c_out, plane] = w[c_out, depth] . rhs[depth, plane]
                    match &packed {
                        Some(w) => {
                            bf16::matmul_packed(out_n, false, plane, w, (rhs, plane, 1), parallel)
                        }
                        None => matmul(out_n, m, plane, k, (w, k, 1), (rhs, plane, 1), parallel),
                    }
                    if stats {
                        // SAFETY: the GEMM above wrote all of `out_n`.
                        let out_n = unsafe { assume_init(out_n) };
                        sums.extend(out_n.chunks(plane.max(1)).map(row_sums));
                    }
                }
            });
            sums
        },
    );
    // SAFETY: the GEMMs above (which never read their destination) wrote all `total` values,
    // image by image.
    unsafe { out.set_len(total) };
    (out, sums.into_iter().flatten().collect())
}

/// Sum and sum of squares of a row, in f64.
fn row_sums(row: &[f32]) -> [f64; 2] {
    // f32 partial sums over short runs keep the loop vectorised; f64 across runs.
    let (mut s, mut q) = (0.0f64, 0.0f64);
    for run in row.chunks(64) {
        let (mut rs, mut rq) = (0.0f32, 0.0f32);
        for &v in run {
            rs += v;
            rq += v * v;
        }
        s += rs as f64;
        q += rq as f64;
    }
    [s, q]
}

/// The gradients of `y = conv(x)` with weight `w` (`[c_out, c_in, k, k]` values), chunks of the
/// batch in parallel. `gy(n, c, row)` writes the output gradient of image `n`, channel `c` into
/// `row` (`[plane]`); the rows of an image are filled in parallel when the batch is one chunk. Returns `dx` (`[batch, c_in, h, w]`, when `want_x`) and, when `x` is given, `dW`
/// (each chunk's partial sum, the partials added in chunk order).
fn conv_grads(
    g: &Geometry,
    batch: usize,
    x: Option<&[f32]>,
    w: &[f32],
    want_x: bool,
    gy: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let plane = g.out_plane();
    let depth = g.depth();
    let in_item = g.c_in * g.in_plane();
    let (per_chunk, chunks) = chunking(batch, plane);
    let parallel = gemm_parallel(chunks);
    let bf16 = precision() == Precision::Bf16;
    // w^T[depth, c_out]: element (r, c) at w[c * depth + r]; the same for every image.
    let w_t = (w, 1, depth);
    let packed_w_t = (bf16 && want_x).then(|| bf16::PackedLhs::new(depth, g.c_out, w_t));
    let total = if want_x { batch * in_item } else { 0 };
    let mut dx: Vec<f32> = Vec::with_capacity(total);
    // Without dx, chunks are still formed over the (empty) slice's images.
    let mut no_dx: Vec<Uninit> = Vec::new();
    let run = |chunk: usize, part: &mut [Uninit]| -> Option<Vec<f32>> {
        let first = chunk * per_chunk;
        let count = per_chunk.min(batch - first);
        let mut gy_n = vec![0.0f32; g.c_out * plane];
        // Written whole by the chunk's first GEMM, then added to.
        let mut gw: Option<Vec<f32>> = x.map(|_| Vec::with_capacity(g.c_out * depth));
        with_scratch(*g, |col| {
            for i in 0..count {
                let n = first + i;
                let fill = |(c, row): (usize, &mut [f32])| gy(n, c, row);
                if chunks == 1 && gy_n.len() >= 1 << 15 {
                    gy_n.par_chunks_mut(plane.max(1)).enumerate().for_each(fill);
                } else {
                    gy_n.chunks_mut(plane.max(1)).enumerate().for_each(fill);
                }
                if let (Some(x), Some(gw)) = (x, gw.as_mut()) {
                    let rhs = columns(&x[n * in_item..][..in_item], g, col);
                    // gw[c_out, depth] (+)= gy_n[c_out, plane] . rhs^T (element (p, d) of
                    // rhs^T at rhs[d * plane + p]).
                    let (lhs, rhs) = ((&gy_n[..], plane, 1), (rhs, 1, plane));
                    let size = g.c_out * depth;
                    let gemm = if bf16 { bf16::matmul_into } else { matmul_into };
                    if i == 0 {
                        let dst = &mut gw.spare_capacity_mut()[..size];
                        gemm(dst, false, g.c_out, depth, plane, lhs, rhs, parallel);
                        // SAFETY: the GEMM wrote every value.
                        unsafe { gw.set_len(size) };
                    } else {
                        let dst = as_uninit(&mut gw[..size]);
                        gemm(dst, true, g.c_out, depth, plane, lhs, rhs, parallel);
                    }
                }
                if want_x {
                    let dx_n = &mut part[i * in_item..][..in_item];
                    let rhs = (&gy_n[..], plane, 1);
                    // dcol[depth, plane] = w^T[depth, c_out] . gy_n[c_out, plane]
                    let product = |dst: &mut [Uninit]| match &packed_w_t {
                        Some(w_t) => bf16::matmul_packed(dst, false, plane, w_t, rhs, parallel),
                        None => matmul(dst, depth, plane, g.c_out, w_t, rhs, parallel),
                    };
                    if g.is_pointwise() {
                        product(dx_n);
                    } else {
                        product(as_uninit(col));
                        dx_n.iter_mut().for_each(|v| {
                            v.write(0.0);
                        });
                        // SAFETY: just zeroed.
                        col2im(col, g, unsafe { assume_init(dx_n) });
                    }
                }
            }
        });
        gw
    };
    let partials = match want_x {
        true => for_chunks(
            &mut dx.spare_capacity_mut()[..total],
            per_chunk * in_item,
            run,
        ),
        false => {
            no_dx.resize_with(batch, MaybeUninit::uninit);
            for_chunks(&mut no_dx, per_chunk, |chunk, _| run(chunk, &mut []))
        }
    };
    // SAFETY: each image's dx was written whole (by its GEMM, or zeroed and added to).
    unsafe { dx.set_len(total) };
    let mut partials = partials.into_iter().flatten();
    let gw = partials.next().map(|mut gw| {
        for part in partials {
            gw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
        }
        gw
    });
    (want_x.then_some(dx), gw)
}

/// The autodiff primitive of an `Autodiff<Flex>` tensor, or of a plain flex tensor as a
/// constant (an untracked leaf).
fn autodiff_primitive<const D: usize>(t: Tensor<D>) -> Option<AdTensor> {
    match t.is_autodiff() {
        true => t.try_into_primitive::<Autodiff<Flex>>().ok(),
        false => t.try_into_primitive::<Flex>().ok().map(AdTensor::new),
    }
}

/// Run `f` with an im2col buffer of `[depth, out_plane]` (empty for pointwise convolutions,
/// which need none), reused across calls on this thread.
fn with_scratch<R>(g: Geometry, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let len = match g.is_pointwise() {
        true => 0,
        false => g.depth() * g.out_plane(),
    };
    // Taken out of the cell for the duration, so that a nested call gets its own buffer.
    let mut buf = SCRATCH.with(RefCell::take);
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SCRATCH.with(|s| s.replace(buf));
    out
}

/// What the backward needs: the constants and, for the ReLU mask, the output.
#[derive(Debug, Clone)]
struct Saved {
    conv: FusedConv,
    geometry: Geometry,
    output: Option<FlexTensor>,
}

impl Saved {
    fn new(conv: FusedConv, geometry: Geometry, output: Option<FlexTensor>) -> Arc<Self> {
        Arc::new(Self {
            conv,
            geometry,
            output,
        })
    }

    /// Gradients of the input (when `want_x`) and of the pre-BatchNorm sum's residual (when
    /// `want_residual`) from the output gradient.
    fn backward(
        &self,
        grad: FlexTensor,
        want_x: bool,
        want_residual: bool,
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        let g = self.geometry;
        let plane = g.out_plane();
        let dims = grad.layout().shape().to_vec();
        let batch = dims[0];
        let Some((grad, gs, ge)) = values(&grad) else {
            panic!("fused conv backward: gradient is not f32")
        };
        let grad: &[f32] = &grad.storage()[gs..ge];
        let output = self.output.as_ref().and_then(values);
        let output: Option<&[f32]> = output.as_ref().map(|(y, s, e)| &y.storage()[*s..*e]);
        // The ReLU mask d(act)/d(pre) = [output > 0]: the residual's gradient.
        let grad_residual = want_residual.then(|| {
            let masked: Vec<f32> = match output {
                Some(y) => {
                    let mask = |(&d, &y): (&f32, &f32)| if y > 0.0 { d } else { 0.0 };
                    match grad.len() >= 1 << 15 {
                        true => grad.par_iter().zip(y).map(mask).collect(),
                        false => grad.iter().zip(y).map(mask).collect(),
                    }
                }
                None => grad.to_vec(),
            };
            FlexTensor::from_data(TensorData::new(masked, dims.clone()))
        });
        let grad_x = want_x.then(|| {
            let Some((w, ws, we)) = values(&self.conv.weight) else {
                panic!("fused conv backward: weight is not f32")
            };
            let w: &[f32] = &w.storage()[ws..we];
            let scale = &self.conv.scale;
            // The convolution output's gradient: masked, then through the BatchNorm (times
            // scale per channel), written image by image where the GEMMs read it.
            let gy = |n: usize, c: usize, row: &mut [f32]| {
                let i = n * g.c_out + c;
                let s = scale[c];
                let d = &grad[i * plane..][..plane];
                match output.map(|y| &y[i * plane..][..plane]) {
                    Some(y) => {
                        for ((v, &d), &y) in row.iter_mut().zip(d).zip(y) {
                            *v = if y > 0.0 { d * s } else { 0.0 };
                        }
                    }
                    None => row.iter_mut().zip(d).for_each(|(v, &d)| *v = d * s),
                }
            };
            let (gx, _) = conv_grads(&g, batch, None, w, true, &gy);
            let gx = gx.unwrap_or_default();
            FlexTensor::from_data(TensorData::new(gx, [batch, g.c_in, g.h, g.w]))
        });
        (grad_x, grad_residual)
    }
}

/// The training convolution's backward state: the constants and its input (for the weight
/// gradient).
#[derive(Debug, Clone)]
struct SavedTrain {
    saved: Saved,
    input: FlexTensor,
}

impl SavedTrain {
    /// The gradients of the input (when `want_x`) and of the weight (when `want_w`).
    fn backward(
        &self,
        grad: &FlexTensor,
        want_x: bool,
        want_w: bool,
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        let g = self.saved.geometry;
        let per_item = g.c_out * g.out_plane();
        let Some((grad, gs, ge)) = values(grad) else {
            panic!("training conv backward: gradient is not f32")
        };
        let grad: &[f32] = &grad.storage()[gs..ge];
        let Some((x, xs, xe)) = values(&self.input) else {
            panic!("training conv backward: input is not f32")
        };
        let x: &[f32] = &x.storage()[xs..xe];
        let Some((w, ws, we)) = values(&self.saved.conv.weight) else {
            panic!("training conv backward: weight is not f32")
        };
        let w: &[f32] = &w.storage()[ws..we];
        let batch = grad.len() / per_item.max(1);
        let plane = g.out_plane();
        let gy = |n: usize, c: usize, row: &mut [f32]| {
            row.copy_from_slice(&grad[n * per_item + c * plane..][..plane]);
        };
        let (gx, gw) = conv_grads(&g, batch, want_w.then_some(x), w, want_x, &gy);
        (
            gx.map(|gx| FlexTensor::from_data(TensorData::new(gx, [batch, g.c_in, g.h, g.w]))),
            gw.map(|gw| FlexTensor::from_data(TensorData::new(gw, [g.c_out, g.c_in, g.k, g.k]))),
        )
    }
}

#[derive(Debug)]
struct ConvTrainBackward;

impl Backward<Flex, 2> for ConvTrainBackward {
    type State = Arc<SavedTrain>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (gx, gw) = ops
            .state
            .backward(&grad, node_x.is_some(), node_w.is_some());
        if let (Some(node), Some(gx)) = (node_x, gx) {
            grads.register::<Flex>(node.id, gx);
        }
        if let (Some(node), Some(gw)) = (node_w, gw) {
            grads.register::<Flex>(node.id, gw);
        }
    }
}

#[derive(Debug)]
struct FusedConvBackward;

impl Backward<Flex, 1> for FusedConvBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            let (gx, _) = ops.state.backward(grad, true, false);
            if let Some(gx) = gx {
                grads.register::<Flex>(node.id, gx);
            }
        }
    }
}

#[derive(Debug)]
struct FusedConvResidualBackward;

impl Backward<Flex, 2> for FusedConvResidualBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_r] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (gx, gr) = ops.state.backward(grad, node_x.is_some(), node_r.is_some());
        if let (Some(node), Some(gx)) = (node_x, gx) {
            grads.register::<Flex>(node.id, gx);
        }
        if let (Some(node), Some(gr)) = (node_r, gr) {
            grads.register::<Flex>(node.id, gr);
        }
    }
}
