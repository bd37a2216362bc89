//! The fused convolution's numerical kernels on plain slices: im2col and its adjoint, the
//! GEMM (the `gemm` crate) and the BatchNorm / residual / ReLU epilogue.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::Geometry;

/// `f32` values viewed as possibly-uninitialised ones (for [`matmul`]'s destination).
pub(super) fn as_uninit(values: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; [`matmul`] only ever writes initialised f32 values through it.
    unsafe { &mut *(values as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// # Safety
/// Every value of `values` must have been written.
pub(super) unsafe fn assume_init(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout; the caller guarantees initialisation.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `out = act(src * scale[c] + shift[c] (+ residual))` per output channel; `src` is `out`
/// itself (in place) when `None`. `out`, `src` and `residual`: `[batch, channels, plane]`.
pub(super) fn epilogue(
    out: &mut [f32],
    src: Option<&[f32]>,
    plane: usize,
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
) {
    let channels = scale.len();
    let run = |(i, row): (usize, &mut [f32])| {
        if let Some(src) = src {
            // Copied, then finished in place while the row is in L1.
            row.copy_from_slice(&src[i * plane..][..plane]);
        }
        let c = i % channels;
        let (s, t) = (scale[c], shift[c]);
        match (residual, relu) {
            (Some(r), _) => {
                let r = &r[i * plane..][..plane];
                for (v, &r) in row.iter_mut().zip(r) {
                    *v = (*v * s + t + r).max(0.0);
                }
            }
            (None, true) => row.iter_mut().for_each(|v| *v = (*v * s + t).max(0.0)),
            (None, false) => row.iter_mut().for_each(|v| *v = *v * s + t),
        }
    };
    if out.len() >= 1 << 15 {
        out.par_chunks_mut(plane.max(1)).enumerate().for_each(run);
    } else {
        out.chunks_mut(plane.max(1)).enumerate().for_each(run);
    }
}

/// For kernel offset `kj`: the output columns whose input column `ox * stride + kj - pad`
/// falls inside `[0, w)`, as a half-open range.
pub(super) fn valid_range(
    out_w: usize,
    w: usize,
    stride: usize,
    pad: usize,
    kj: usize,
) -> (usize, usize) {
    let lo = pad.saturating_sub(kj).div_ceil(stride).min(out_w);
    let hi = match (w + pad).checked_sub(kj + 1) {
        Some(last) => (last / stride + 1).min(out_w),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// `col[(c * k + ki) * k + kj][oy * out_w + ox] = x[c][oy * s + ki - p][ox * s + kj - p]`, zero
/// outside the image. `x`: `[c_in, h, w]`; `col`: `[c_in * k * k, out_h * out_w]`.
pub(super) fn im2col(x: &[f32], g: &Geometry, col: &mut [f32]) {
    let plane = g.out_plane();
    let per_channel = g.k * g.k * plane;
    let fill = |(c, rows): (usize, &mut [f32])| {
        let xc = &x[c * g.in_plane()..][..g.in_plane()];
        for ki in 0..g.k {
            for kj in 0..g.k {
                let row = &mut rows[(ki * g.k + kj) * plane..][..plane];
                let (lo, hi) = valid_range(g.out_w, g.w, g.stride, g.pad, kj);
                for oy in 0..g.out_h {
                    let dst = &mut row[oy * g.out_w..][..g.out_w];
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &xc[iy as usize * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if g.stride == 1 {
                        let start = lo + kj - g.pad;
                        dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                            *d = src[ox * g.stride + kj - g.pad];
                        }
                    }
                }
            }
        }
    };
    if col.len() >= 1 << 15 {
        col.par_chunks_mut(per_channel).enumerate().for_each(fill);
    } else {
        col.chunks_mut(per_channel).enumerate().for_each(fill);
    }
}

/// The `[depth, out_plane]` column matrix of one image `x`: `x` itself for a pointwise
/// convolution, else [`im2col`] written into `col`.
pub(super) fn columns<'a>(x: &'a [f32], g: &Geometry, col: &'a mut [f32]) -> &'a [f32] {
    if g.is_pointwise() {
        return x;
    }
    im2col(x, g, col);
    col
}

/// The adjoint of [`im2col`]: `x[c][iy][ix] = sum of the col entries that read it`.
/// `col`: `[c_in * k * k, out_h * out_w]`; `x`: `[c_in, h, w]`, zeroed by the caller (added to).
pub(super) fn col2im(col: &[f32], g: &Geometry, x: &mut [f32]) {
    let plane = g.out_plane();
    let per_channel = g.k * g.k * plane;
    let gather = |(c, xc): (usize, &mut [f32])| {
        let rows = &col[c * per_channel..][..per_channel];
        for ki in 0..g.k {
            for kj in 0..g.k {
                let row = &rows[(ki * g.k + kj) * plane..][..plane];
                let (lo, hi) = valid_range(g.out_w, g.w, g.stride, g.pad, kj);
                for oy in 0..g.out_h {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &row[oy * g.out_w..][..g.out_w];
                    let dst = &mut xc[iy as usize * g.w..][..g.w];
                    if g.stride == 1 {
                        let start = lo + kj - g.pad;
                        for (d, &s) in dst[start..start + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += s;
                        }
                    } else {
                        for (ox, &s) in src.iter().enumerate().take(hi).skip(lo) {
                            dst[ox * g.stride + kj - g.pad] += s;
                        }
                    }
                }
            }
        }
    };
    if x.len() >= 1 << 14 {
        x.par_chunks_mut(g.in_plane()).enumerate().for_each(gather);
    } else {
        x.chunks_mut(g.in_plane()).enumerate().for_each(gather);
    }
}

/// `dst[m, n] = lhs[m, k] . rhs[k, n]`, row-major `dst` (written, never read, so it may be
/// uninitialised); `lhs` and `rhs` as (values, row stride, column stride). With `parallel`,
/// large products use the thread pool.
pub(super) fn matmul(
    dst: &mut [MaybeUninit<f32>],
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    parallel: bool,
) {
    matmul_into(dst, false, m, n, k, lhs, rhs, parallel)
}

/// Panics unless the destination holds `m * n` values and each operand covers its shape.
pub(super) fn check_operands(
    dst_len: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    assert!(dst_len >= m * n, "matmul: destination too small");
    check_operand("lhs", (m, k), lhs);
    check_operand("rhs", (k, n), rhs);
}

/// Panics unless `operand` (values, row stride, column stride) covers `rows x cols`.
pub(super) fn check_operand(
    name: &str,
    (rows, cols): (usize, usize),
    operand: (&[f32], usize, usize),
) {
    let (values, row_stride, col_stride) = operand;
    assert!(
        rows == 0 || cols == 0 || values.len() > (rows - 1) * row_stride + (cols - 1) * col_stride,
        "matmul: {name} too small"
    );
}

/// [`matmul`], or with `accumulate` `dst += lhs . rhs` (then `dst` must be initialised).
#[allow(clippy::too_many_arguments)] // the GEMM's own shape; grouped as (values, strides)
pub(super) fn matmul_into(
    dst: &mut [MaybeUninit<f32>],
    accumulate: bool,
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    parallel: bool,
) {
    check_operands(dst.len(), m, n, k, lhs, rhs);
    let (lhs, lhs_rs, lhs_cs) = lhs;
    let (rhs, rhs_rs, rhs_cs) = rhs;
    let parallelism = if parallel && m * n * k >= 1 << 21 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm touches inside the three slices, and
    // `dst` is borrowed mutably (no aliasing with `lhs` or `rhs`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
