//! A bf16 GEMM for CPUs with AVX512_BF16 (`VDPBF16PS`): both operands are rounded to bf16 as
//! they are packed (round to nearest even, as `VCVTNEPS2BF16` does), products are summed in
//! f32. It has the `(values, row stride, column stride)` interface of the f32 GEMM
//! ([`super::kernels::matmul_into`]), so the fused convolutions switch precision at one call.
//!
//! Packing follows BLIS: B in blocks of `KC` depth pairs by `NC` columns, cut into panels of
//! `NR` columns stored `[pair][NR]` as u32 words (low half the even depth index, high half the
//! odd one: the instruction's layout); A in blocks of `MC` rows cut into panels of `MR` rows
//! stored `[pair][MR]`. The micro-kernel keeps an `MR x NR` tile of C in 24 registers and adds
//! one depth pair per step. Every element of C adds its depth pairs in order, whatever the
//! blocking or the threading, so results are deterministic and equal, bit for bit, to
//! [`reference`] (the instruction emulated in scalar f32).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::kernels::check_operand;

/// Rows of C per micro-tile (broadcast from packed A).
const MR: usize = 12;
/// Columns of C per micro-tile (two vectors of 16 f32).
const NR: usize = 32;
/// Depth pairs per packed block (a B panel, `KC * NR * 4` bytes, stays in L1).
const KC: usize = 256;
/// Rows per packed A block (a multiple of `MR`; `MC * KC * 4` bytes, in L2).
const MC: usize = 96;
/// Columns per packed B block (a multiple of `NR`; `KC * NC * 4` bytes, 1 MiB, in L2).
const NC: usize = 1024;

/// Whether this CPU runs the bf16 kernels (AVX-512F and AVX512_BF16), read once. The
/// environment can refuse them with `TRISCOPE_BF16=0`: the fallback path, as an older CPU takes
/// it.
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let refused = std::env::var("TRISCOPE_BF16").is_ok_and(|v| v.trim() == "0");
        !refused && detected()
    })
}

#[cfg(target_arch = "x86_64")]
fn detected() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn detected() -> bool {
    false
}

/// The bf16 bits of `x` as `VCVTNEPS2BF16` rounds it: to nearest, ties to even; a zero or
/// subnormal input becomes a signed zero; NaN stays NaN (quieted).
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let exponent = bits & 0x7f80_0000;
    if exponent == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    if exponent == 0x7f80_0000 {
        let high = (bits >> 16) as u16;
        return match bits & 0x007f_ffff {
            0 => high,
            _ => high | 0x0040,
        };
    }
    // Cannot overflow u32: the largest finite pattern is 0xff7f_ffff.
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 value of bf16 bits (exact).
pub fn from_bf16(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `x` rounded to bf16 and back.
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// One packed word: `even` in the low half, `odd` in the high half.
fn pair(even: f32, odd: f32) -> u32 {
    to_bf16(even) as u32 | (to_bf16(odd) as u32) << 16
}

/// A strided matrix operand: element `(row, col)` at `values[row * rows + col * cols]`.
#[derive(Clone, Copy)]
struct View<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
}

impl View<'_> {
    fn at(&self, row: usize, col: usize) -> f32 {
        self.values[row * self.rows + col * self.cols]
    }
}

/// What [`matmul_into`] computes, one scalar f32 operation at a time in the instruction's
/// order (for each depth pair: the odd product, then the even one; both products exact in
/// f32): the reference the kernel is tested against. `dst` holds C's starting values.
pub fn reference(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    let a = View {
        values: lhs.0,
        rows: lhs.1,
        cols: lhs.2,
    };
    let b = View {
        values: rhs.0,
        rows: rhs.1,
        cols: rhs.2,
    };
    for i in 0..m {
        for j in 0..n {
            let mut acc = dst[i * n + j];
            for p in (0..k).step_by(2) {
                if p + 1 < k {
                    acc += round_bf16(a.at(i, p + 1)) * round_bf16(b.at(p + 1, j));
                }
                acc += round_bf16(a.at(i, p)) * round_bf16(b.at(p, j));
            }
            dst[i * n + j] = acc;
        }
    }
}

/// `dst[m, n] (+)= lhs[m, k] . rhs[k, n]` with bf16 operands and f32 sums; row-major `dst`,
/// read only with `accumulate`. Operands as (values, row stride, column stride); with
/// `parallel`, large products are split by columns (or rows) over the thread pool.
///
/// # Panics
/// When the CPU lacks the instructions ([`supported`] is false) or an operand is too small.
#[allow(clippy::too_many_arguments)] // the GEMM's own shape; grouped as (values, strides)
pub fn matmul_into(
    dst: &mut [MaybeUninit<f32>],
    accumulate: bool,
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    parallel: bool,
) {
    // Each operand is checked where it is used: A when packed, C and B in the product.
    let lhs = PackedLhs::new(m, k, lhs);
    matmul_packed(dst, accumulate, n, &lhs, rhs, parallel);
}

/// A left operand `[m, k]` rounded to bf16 and packed once, for products with many right
/// operands (a convolution's weight, image after image): blocks of `KC` depth pairs, each
/// the `MR`-row panels of all `m` rows.
pub struct PackedLhs {
    words: Vec<u32>,
    m: usize,
    k: usize,
}

impl PackedLhs {
    /// # Panics
    /// When the CPU lacks the instructions or `lhs` does not cover `[m, k]`.
    pub fn new(m: usize, k: usize, lhs: (&[f32], usize, usize)) -> Self {
        assert!(supported(), "bf16 GEMM called on a CPU without AVX512_BF16");
        check_operand("lhs", (m, k), lhs);
        let a = View {
            values: lhs.0,
            rows: lhs.1,
            cols: lhs.2,
        };
        let (pairs, panels) = (k.div_ceil(2), m.div_ceil(MR));
        let mut words = vec![0u32; pairs * panels * MR];
        // Blocks in parallel: a transposed weight is packed on every call with batch one.
        let blocks: Vec<(usize, &mut [u32])> = (0..pairs)
            .step_by(KC)
            .zip(words.chunks_mut(KC * panels * MR))
            .collect();
        blocks.into_par_iter().for_each(|(pc, block)| {
            let kc = KC.min(pairs - pc);
            if a.rows == 1 {
                // Columns of A contiguous (a transposed weight): each depth pair's two
                // columns whole, then cut into the panels.
                let mut line = vec![0u32; m];
                for q in 0..kc {
                    let d = 2 * (pc + q);
                    let even = &a.values[d * a.cols..][..m];
                    let odd = (d + 1 < k).then(|| &a.values[(d + 1) * a.cols..][..m]);
                    pack_rows(even, odd, &mut line);
                    for (panel, part) in block.chunks_mut(kc * MR).zip(line.chunks(MR)) {
                        panel[q * MR..][..part.len()].copy_from_slice(part);
                    }
                }
                return;
            }
            for (ip, panel) in block.chunks_mut(kc * MR).enumerate() {
                let first = ip * MR;
                pack_a(a, k, pc, kc, first, MR.min(m - first), panel);
            }
        });
        Self { words, m, k }
    }

    /// The `kc * MR` words of the panel starting at row `i` (a multiple of `MR`) in the block
    /// of depth pairs starting at `pc`.
    fn panel(&self, pc: usize, kc: usize, i: usize) -> &[u32] {
        let panels = self.m.div_ceil(MR);
        &self.words[pc * panels * MR + (i / MR) * kc * MR..][..kc * MR]
    }
}

/// [`matmul_into`] with a packed left operand.
pub fn matmul_packed(
    dst: &mut [MaybeUninit<f32>],
    accumulate: bool,
    n: usize,
    lhs: &PackedLhs,
    rhs: (&[f32], usize, usize),
    parallel: bool,
) {
    let (m, k) = (lhs.m, lhs.k);
    assert!(dst.len() >= m * n, "matmul: destination too small");
    check_operand("rhs", (k, n), rhs);
    if m == 0 || n == 0 {
        return;
    }
    let b = View {
        values: rhs.0,
        rows: rhs.1,
        cols: rhs.2,
    };
    let c = Dst(dst.as_mut_ptr().cast::<f32>());
    let threads = rayon::current_num_threads();
    if !parallel || threads < 2 || m * n * k < 1 << 21 {
        // SAFETY: the asserts bound every index; `dst` is borrowed mutably.
        unsafe { serial(c, n, accumulate, (0, m), (0, n), lhs, b) };
        return;
    }
    // Disjoint tiles of C per thread: column ranges (whole panels) when there are enough
    // columns, else row ranges (whole panels). Each element's sum is the same either way.
    let by_columns = n >= threads * NR;
    let extent = if by_columns { n } else { m };
    let unit = if by_columns { NR } else { MR };
    let step = extent.div_ceil(threads).div_ceil(unit) * unit;
    rayon::scope(|s| {
        for start in (0..extent).step_by(step) {
            let range = (start, (start + step).min(extent));
            let c = &c;
            s.spawn(move |_| {
                let (rows, cols) = match by_columns {
                    true => ((0, m), range),
                    false => (range, (0, n)),
                };
                // SAFETY: as above; the ranges are disjoint, so no element of C is written
                // by two threads.
                unsafe { serial(*c, n, accumulate, rows, cols, lhs, b) };
            });
        }
    });
}

/// C's base pointer, shared by threads that write disjoint tiles.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: each thread writes only its own rows or columns of C (see `matmul_packed`).
unsafe impl Send for Dst {}
// SAFETY: as above.
unsafe impl Sync for Dst {}

thread_local! {
    /// The packed B block, kept between calls on this thread (rewritten before read).
    static PACKED_B: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// The rows `rows.0..rows.1` (`rows.0` a multiple of `MR`) and columns `cols.0..cols.1` of C
/// (`ldc` values per row) on this thread.
///
/// # Safety
/// Every element of C in the ranges must be valid for writes (and initialised with
/// `accumulate`), and `b` must cover `[a.k, cols.1]`.
unsafe fn serial(
    c: Dst,
    ldc: usize,
    accumulate: bool,
    rows: (usize, usize),
    cols: (usize, usize),
    a: &PackedLhs,
    b: View,
) {
    let pairs = a.k.div_ceil(2);
    if pairs == 0 {
        if !accumulate {
            for i in rows.0..rows.1 {
                for j in cols.0..cols.1 {
                    // SAFETY: inside C (the caller's contract).
                    unsafe { c.0.add(i * ldc + j).write(0.0) };
                }
            }
        }
        return;
    }
    // Taken out of the cell for the duration (a nested call would get its own).
    let mut packed_b = PACKED_B.with(RefCell::take);
    for jc in (cols.0..cols.1).step_by(NC) {
        let nc = NC.min(cols.1 - jc);
        for pc in (0..pairs).step_by(KC) {
            let kc = KC.min(pairs - pc);
            pack_b(b, a.k, pc, kc, jc, nc, &mut packed_b);
            let load = accumulate || pc > 0;
            for ic in (rows.0..rows.1).step_by(MC) {
                let mc = MC.min(rows.1 - ic);
                for (jp, panel_b) in packed_b.chunks(kc * NR).enumerate() {
                    let j = jc + jp * NR;
                    let width = NR.min(jc + nc - j);
                    for i in (ic..ic + mc).step_by(MR) {
                        let height = MR.min(ic + mc - i);
                        let panel_a = a.panel(pc, kc, i);
                        // SAFETY: the tile lies inside C's ranges (the caller's contract),
                        // the panels hold `kc` pairs; the CPU was checked when A was packed.
                        unsafe {
                            let tile = c.0.add(i * ldc + j);
                            kernel(kc, panel_a, panel_b, tile, ldc, height, width, load);
                        }
                    }
                }
            }
        }
    }
    PACKED_B.with(|p| p.replace(packed_b));
}

/// Rows `first..first + height` of A, depth pairs `pc..pc + kc`, as one panel of `MR` rows
/// (`[pair][MR]` words, zero past the last row and past depth `k`).
fn pack_a(a: View, k: usize, pc: usize, kc: usize, first: usize, height: usize, panel: &mut [u32]) {
    if a.cols == 1 {
        // Rows of A contiguous (a weight, an output gradient): a depth pair is two adjacent
        // values of a row, and the panel wants them by pair.
        let rows = depth_lines(a.values, a.rows, first..first + height, k, pc, kc);
        pack_transposed(&rows, panel, MR);
        return;
    }
    for r in 0..height {
        let row = first + r;
        for q in 0..kc {
            let d = 2 * (pc + q);
            let odd = if d + 1 < k { a.at(row, d + 1) } else { 0.0 };
            panel[q * MR + r] = pair(a.at(row, d), odd);
        }
    }
}

/// For an operand whose depth index is contiguous (line `i` at `values[i * stride..]`, depth
/// `k`): the values of depth pairs `pc..pc + kc` of each line in `lines`.
fn depth_lines(
    values: &[f32],
    stride: usize,
    lines: std::ops::Range<usize>,
    k: usize,
    pc: usize,
    kc: usize,
) -> Vec<&[f32]> {
    lines
        .map(|i| {
            let start = i * stride + 2 * pc;
            &values[start..(i * stride + k).min(start + 2 * kc)]
        })
        .collect()
}

/// Depth pairs `pc..pc + kc` of B, columns `j0..j0 + nc`, as panels of `NR` columns
/// (`[pair][NR]` words, zero past the last column and past depth `k`).
fn pack_b(b: View, k: usize, pc: usize, kc: usize, j0: usize, nc: usize, out: &mut Vec<u32>) {
    let panels = nc.div_ceil(NR);
    out.clear();
    out.resize(panels * kc * NR, 0);
    if b.cols == 1 {
        // Rows of B contiguous (an im2col matrix, an output gradient): each depth pair's two
        // rows across the whole block, 16 columns at a time, into their panels.
        for q in 0..kc {
            let d = 2 * (pc + q);
            let even = &b.values[d * b.rows + j0..][..nc];
            let odd = (d + 1 < k).then(|| &b.values[(d + 1) * b.rows + j0..][..nc]);
            pack_rows_into_panels(even, odd, &mut out[q * NR..], kc * NR);
        }
        return;
    }
    for (jp, panel) in out.chunks_mut(kc * NR).enumerate() {
        let first = j0 + jp * NR;
        let width = NR.min(j0 + nc - first);
        if b.rows == 1 {
            // Columns of B contiguous (a transposed im2col matrix): a depth pair is two
            // adjacent values of a column, and the panel wants them by pair.
            let columns = depth_lines(b.values, b.cols, first..first + width, k, pc, kc);
            pack_transposed(&columns, panel, NR);
            continue;
        }
        for q in 0..kc {
            let d = 2 * (pc + q);
            for (jj, w) in panel[q * NR..][..width].iter_mut().enumerate() {
                let odd = if d + 1 < k {
                    b.at(d + 1, first + jj)
                } else {
                    0.0
                };
                *w = pair(b.at(d, first + jj), odd);
            }
        }
    }
}

/// [`pack_rows`] of a whole block row: word `j` to `out[(j / NR) * panel + j % NR]`.
fn pack_rows_into_panels(even: &[f32], odd: Option<&[f32]>, out: &mut [u32], panel: usize) {
    let n = even.len();
    assert!(n == 0 || out.len() > ((n - 1) / NR) * panel + (n - 1) % NR);
    #[cfg(target_arch = "x86_64")]
    if supported() {
        // SAFETY: the CPU has the instructions; every write is inside `out` (asserted).
        unsafe { x86::pack_rows_into_panels(even, odd, out, panel) };
        return;
    }
    for j in 0..n {
        out[(j / NR) * panel + j % NR] = pair(even[j], odd.map_or(0.0, |o| o[j]));
    }
}

/// A panel `[pair][width]` from at most `width` lines of depth values, one per row of A or
/// column of B (`lines[i][2q]`, `[2q + 1]`: pair `q` of line `i`, zero past a line's end):
/// `panel[q * width + i]`.
fn pack_transposed(lines: &[&[f32]], panel: &mut [u32], width: usize) {
    assert!(lines.len() <= width && panel.len().is_multiple_of(width));
    #[cfg(target_arch = "x86_64")]
    if supported() {
        // SAFETY: the CPU has the instructions; lengths are checked inside.
        unsafe { x86::pack_transposed(lines, panel, width) };
        return;
    }
    for (i, line) in lines.iter().enumerate() {
        for (q, words) in panel.chunks_mut(width).enumerate() {
            let at = |d: usize| line.get(d).copied().unwrap_or(0.0);
            words[i] = pair(at(2 * q), at(2 * q + 1));
        }
    }
}

/// `out[j] = pair(even[j], odd[j])` (odd zero when `None`).
fn pack_rows(even: &[f32], odd: Option<&[f32]>, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if supported() {
        // SAFETY: the CPU has the instructions; lengths are checked inside.
        unsafe { x86::pack_rows(even, odd, out) };
        return;
    }
    for (j, w) in out.iter_mut().enumerate() {
        *w = pair(even[j], odd.map_or(0.0, |o| o[j]));
    }
}

/// The `MR x NR` micro-kernel: `tile (+)= panel_a . panel_b` over `kc` depth pairs, writing
/// `height x width` of the tile.
///
/// # Safety
/// The CPU has AVX512_BF16; `tile` is valid for `height` rows of `width` values at stride
/// `ldc` (initialised when `load`); the panels hold `kc * MR` and `kc * NR` words.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kc: usize,
    panel_a: &[u32],
    panel_b: &[u32],
    tile: *mut f32,
    ldc: usize,
    height: usize,
    width: usize,
    load: bool,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded.
    unsafe {
        x86::kernel(kc, panel_a, panel_b, tile, ldc, height, width, load)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "bf16 kernels exist on x86_64 only: {kc} {panel_a:?} {panel_b:?} {tile:?} {ldc} {height} {width} {load}"
    );
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// Lane mask of the first `count` (at most 16) lanes.
    fn lanes(count: usize) -> __mmask16 {
        ((1u32 << count.min(16)) - 1) as __mmask16
    }

    /// # Safety
    /// See [`super::kernel`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel(
        kc: usize,
        panel_a: &[u32],
        panel_b: &[u32],
        tile: *mut f32,
        ldc: usize,
        height: usize,
        width: usize,
        load: bool,
    ) {
        assert!(panel_a.len() >= kc * MR && panel_b.len() >= kc * NR && height <= MR);
        let masks = [lanes(width), lanes(width.saturating_sub(16))];
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        if load {
            for (r, row) in acc.iter_mut().enumerate().take(height) {
                for (h, v) in row.iter_mut().enumerate() {
                    // SAFETY: masked lanes are not touched; the rest lie inside the tile.
                    *v = unsafe { _mm512_maskz_loadu_ps(masks[h], tile.add(r * ldc + h * 16)) };
                }
            }
        }
        let (a, b) = (panel_a.as_ptr(), panel_b.as_ptr());
        for p in 0..kc {
            // SAFETY: `p < kc`, so every read stays inside the panels (asserted above).
            unsafe {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
                let ap = a.add(p * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let ar: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r) as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], ar, b0);
                    row[1] = _mm512_dpbf16_ps(row[1], ar, b1);
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(height) {
            for (h, v) in row.iter().enumerate() {
                // SAFETY: masked lanes are not touched; the rest lie inside the tile.
                unsafe { _mm512_mask_storeu_ps(tile.add(r * ldc + h * 16), masks[h], *v) };
            }
        }
    }

    /// [`super::pack_transposed`]: blocks of 16 lines by 16 pairs converted (one 32-value
    /// load per line) and transposed in registers.
    ///
    /// # Safety
    /// The CPU has AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_transposed(columns: &[&[f32]], panel: &mut [u32], width: usize) {
        let pairs = panel.len() / width;
        assert!(columns.len() <= width && columns.iter().all(|c| c.len() <= 2 * pairs));
        // Whole groups of 16 within the width (`NR` is 32; `MR`, 12, is one partial group).
        assert!(width <= 16 || width.is_multiple_of(16));
        for (g, group) in columns.chunks(16).enumerate() {
            for q0 in (0..pairs).step_by(16) {
                let mut rows = [_mm512_setzero_si512(); 16];
                for (row, column) in rows.iter_mut().zip(group) {
                    let at = 2 * q0;
                    let low = lanes(column.len().saturating_sub(at));
                    let high = lanes(column.len().saturating_sub(at + 16));
                    // SAFETY: masked lanes are not touched; the rest lie inside the column.
                    unsafe {
                        let base = column.as_ptr();
                        let lo = _mm512_maskz_loadu_ps(low, base.add(at.min(column.len())));
                        let hi_at = (at + 16).min(column.len());
                        let hi = _mm512_maskz_loadu_ps(high, base.add(hi_at));
                        *row =
                            std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                    }
                }
                transpose16(&mut rows);
                let count = lanes(group.len());
                for (q, row) in rows.iter().enumerate().take(pairs - q0) {
                    let at = (q0 + q) * width + g * 16;
                    // SAFETY: `q0 + q < pairs` and `g * 16 + group.len() <= width`: the
                    // stored lanes lie inside the panel.
                    unsafe {
                        _mm512_mask_storeu_epi32(panel.as_mut_ptr().add(at).cast(), count, *row)
                    };
                }
            }
        }
    }

    /// Transpose a 16 x 16 matrix of 32-bit words held as 16 rows.
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: &mut [__m512i; 16]) {
        // 32-bit, then 64-bit interleaves within 128-bit lanes, then 128-bit lanes across.
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            for j in 0..2 {
                let (a, b) = (t[4 * i + j], t[4 * i + j + 2]);
                r[4 * i + 2 * j] = _mm512_unpacklo_epi64(a, b);
                r[4 * i + 2 * j + 1] = _mm512_unpackhi_epi64(a, b);
            }
        }
        // r[4i + c] now holds, in each 128-bit lane L, column c of rows 4i..4i+4 for the
        // columns 4L..4L+4. Gather the lanes: rows 0-3 | 4-7 | 8-11 | 12-15.
        for c in 0..4 {
            let (a, b, e, f) = (r[c], r[4 + c], r[8 + c], r[12 + c]);
            let ab_lo = _mm512_shuffle_i32x4::<0b01_00_01_00>(a, b);
            let ab_hi = _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b);
            let ef_lo = _mm512_shuffle_i32x4::<0b01_00_01_00>(e, f);
            let ef_hi = _mm512_shuffle_i32x4::<0b11_10_11_10>(e, f);
            t[c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(ab_lo, ef_lo);
            t[4 + c] = _mm512_shuffle_i32x4::<0b11_01_11_01>(ab_lo, ef_lo);
            t[8 + c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(ab_hi, ef_hi);
            t[12 + c] = _mm512_shuffle_i32x4::<0b11_01_11_01>(ab_hi, ef_hi);
        }
        *r = t;
    }

    /// [`super::pack_rows_into_panels`] 16 columns at a time (`NR` is a multiple of 16, so
    /// 16 columns never straddle two panels).
    ///
    /// # Safety
    /// The CPU has AVX512_BF16; `out` holds every destination (the caller asserts it).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_rows_into_panels(
        even: &[f32],
        odd: Option<&[f32]>,
        out: &mut [u32],
        panel: usize,
    ) {
        let n = even.len();
        assert!(odd.is_none_or(|o| o.len() >= n));
        for j in (0..n).step_by(16) {
            let mask = lanes(n - j);
            // SAFETY: masked lanes are not touched; the rest lie inside the slices (the
            // destination by the caller's assertion).
            unsafe {
                let words =
                    pair_vectors(mask, even.as_ptr().add(j), odd.map(|o| o.as_ptr().add(j)));
                let at = (j / NR) * panel + j % NR;
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(at).cast(), mask, words);
            }
        }
    }

    /// The words of 16 columns: `even` rounded in the low halves, `odd` (or zero) in the high
    /// ones.
    ///
    /// # Safety
    /// The CPU has AVX512_BF16; the lanes of `mask` are readable at both pointers.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn pair_vectors(mask: __mmask16, even: *const f32, odd: Option<*const f32>) -> __m512i {
        // SAFETY: the caller's contract.
        unsafe {
            let e = _mm512_maskz_loadu_ps(mask, even);
            let o = match odd {
                Some(odd) => _mm512_maskz_loadu_ps(mask, odd),
                None => _mm512_setzero_ps(),
            };
            let e: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(e));
            let o: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(o));
            _mm512_or_si512(
                _mm512_cvtepu16_epi32(e),
                _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(o)),
            )
        }
    }

    /// [`super::pack_rows`] 16 columns at a time.
    ///
    /// # Safety
    /// The CPU has AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_rows(even: &[f32], odd: Option<&[f32]>, out: &mut [u32]) {
        let n = out.len();
        assert!(even.len() >= n && odd.is_none_or(|o| o.len() >= n));
        for j in (0..n).step_by(16) {
            let mask = lanes(n - j);
            // SAFETY: masked lanes are not touched; the rest lie inside the slices.
            unsafe {
                let words =
                    pair_vectors(mask, even.as_ptr().add(j), odd.map(|o| o.as_ptr().add(j)));
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(j).cast(), mask, words);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_is_nearest_even_with_the_instructions_special_cases() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties to the even one (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway too: ties to even rounds up.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert_eq!(to_bf16(f32::MIN_POSITIVE / 2.0), 0x0000);
        assert_eq!(to_bf16(-f32::MIN_POSITIVE / 2.0), 0x8000);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(to_bf16(f32::MAX), 0x7f80, "rounds up to infinity");
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn vector_packing_rounds_as_the_scalar_rule() {
        if !supported() {
            return;
        }
        let mut even = values(1, 37);
        let odd = values(2, 37);
        even[3] = f32::MIN_POSITIVE / 4.0;
        even[4] = 1.0 + 1.0 / 256.0;
        even[5] = f32::INFINITY;
        let mut out = vec![0u32; 37];
        pack_rows(&even, Some(&odd), &mut out);
        for j in 0..37 {
            assert_eq!(out[j], pair(even[j], odd[j]), "column {j}");
        }
        pack_rows(&even, None, &mut out);
        assert!(out.iter().zip(&even).all(|(&w, &e)| w == pair(e, 0.0)));
    }

    /// Every layout the convolutions use, odd depths, edges of every block, and
    /// accumulation: bit-identical to the scalar emulation.
    #[test]
    fn gemm_matches_the_emulated_instruction_bit_for_bit() {
        if !supported() {
            return;
        }
        let shapes = [
            (1, 1, 1),
            (5, 7, 3),
            (12, 32, 2),
            (13, 33, 9),
            (97, 70, 515),
            (64, 2100, 24),
        ];
        for &(m, n, k) in &shapes {
            // Twice the values, so that the strided layouts (every other value) fit too.
            let a = values(m as u64 * 31 + k as u64, 2 * m * k);
            let b = values(n as u64 * 17 + k as u64, 2 * k * n);
            let init = values(99, m * n);
            // (row-major A or its transpose) x (row-major B or its transpose).
            for (a_view, b_view) in [
                ((k, 1), (n, 1)),
                ((1, m), (1, k)),
                ((k, 1), (1, k)),
                ((1, m), (n, 1)),
                ((2 * k, 2), (2, 2 * k)),
            ] {
                for (accumulate, parallel) in [(false, false), (true, false), (false, true)] {
                    let lhs = (&a[..], a_view.0, a_view.1);
                    let rhs = (&b[..], b_view.0, b_view.1);
                    let mut want = if accumulate {
                        init.clone()
                    } else {
                        vec![0.0; m * n]
                    };
                    reference(&mut want, m, n, k, lhs, rhs);
                    let mut got = init.clone();
                    let dst = super::super::kernels::as_uninit(&mut got);
                    matmul_into(dst, accumulate, m, n, k, lhs, rhs, parallel);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(g, w)| g.to_bits() == w.to_bits());
                    assert!(same, "{m}x{n}x{k} {a_view:?} {b_view:?} acc={accumulate}");
                }
            }
        }
    }

    #[test]
    fn gemm_is_close_to_the_f32_product() {
        if !supported() {
            return;
        }
        let (m, n, k) = (40, 50, 300);
        let (a, b) = (values(5, m * k), values(6, k * n));
        let mut got = vec![0.0f32; m * n];
        let dst = super::super::kernels::as_uninit(&mut got);
        matmul_into(dst, false, m, n, k, (&a, k, 1), (&b, n, 1), false);
        for i in 0..m {
            for j in 0..n {
                let (exact, magnitude) = (0..k).fold((0.0f64, 0.0f64), |(s, t), p| {
                    let v = a[i * k + p] as f64 * b[p * n + j] as f64;
                    (s + v, t + v.abs())
                });
                // Each operand's rounding is at most 2^-9 relative: 2^-8 per product, plus
                // f32 summation.
                let bound = magnitude * (2f64.powi(-8) + k as f64 * 2f64.powi(-24));
                let error = (got[i * n + j] as f64 - exact).abs();
                assert!(error <= bound, "({i}, {j}): {error} > {bound}");
            }
        }
    }
}
