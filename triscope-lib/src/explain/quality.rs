//! Explanation-quality metrics on plain maps (row-major `[height * width]` slices):
//! similarity (SSIM, Spearman, top-k intersection), localisation against a ground-truth mask
//! (IoU of the thresholded map, energy-based pointing game, pointing game with tolerance) and
//! faithfulness (RISE insertion / deletion AUC).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::util::stats::average_ranks;

/// SSIM as scikit-image's `structural_similarity(a, b, data_range=1, gaussian_weights=True,
/// sigma=1.5, use_sample_covariance=False)`: Gaussian window (11 taps, reflect padding),
/// K1 = 0.01, K2 = 0.03, mean over the image without a 5-pixel border.
pub fn ssim(a: &[f32], b: &[f32], height: usize, width: usize) -> f64 {
    assert_eq!(a.len(), height * width);
    assert_eq!(b.len(), height * width);
    let kernel = gaussian_kernel(1.5, 5);
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let (a, b) = (f64s(a), f64s(b));
    let prod = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<f64>>();
    let blur = |v: &[f64]| gaussian_filter(v, height, width, &kernel);
    let (ux, uy) = (blur(&a), blur(&b));
    let (uxx, uyy, uxy) = (
        blur(&prod(&a, &a)),
        blur(&prod(&b, &b)),
        blur(&prod(&a, &b)),
    );
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let pad = 5usize;
    let mut total = 0.0;
    let mut count = 0usize;
    for y in pad..height.saturating_sub(pad) {
        for x in pad..width.saturating_sub(pad) {
            let i = y * width + x;
            let vx = uxx[i] - ux[i] * ux[i];
            let vy = uyy[i] - uy[i] * uy[i];
            let vxy = uxy[i] - ux[i] * uy[i];
            let s = ((2.0 * ux[i] * uy[i] + c1) * (2.0 * vxy + c2))
                / ((ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2));
            total += s;
            count += 1;
        }
    }
    if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    }
}

pub(crate) fn gaussian_kernel(sigma: f64, radius: usize) -> Vec<f64> {
    let k: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let d = i as f64 - radius as f64;
            (-0.5 * d * d / (sigma * sigma)).exp()
        })
        .collect();
    let s: f64 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Separable filter with scipy's `reflect` border (`d c b a | a b c d | d c b a`).
pub(crate) fn gaussian_filter(v: &[f64], h: usize, w: usize, kernel: &[f64]) -> Vec<f64> {
    let r = kernel.len() as isize / 2;
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let mut i = i;
        loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - i - 1;
            } else {
                return i as usize;
            }
        }
    };
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, wt)| wt * v[y * w + reflect(x as isize + k as isize - r, w)])
                .sum();
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, wt)| wt * tmp[reflect(y as isize + k as isize - r, h) * w + x])
                .sum();
        }
    }
    out
}

/// Spearman rank correlation (scipy's `spearmanr`: Pearson correlation of average ranks).
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    if va == 0.0 || vb == 0.0 {
        f64::NAN
    } else {
        cov / (va * vb).sqrt()
    }
}

/// Indices of the `fraction` highest values (at least one).
fn top_indices(map: &[f32], fraction: f64) -> Vec<usize> {
    let k = ((map.len() as f64 * fraction).round() as usize).clamp(1, map.len().max(1));
    let mut idx: Vec<usize> = (0..map.len()).collect();
    idx.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Share of the top-`fraction` pixels of `a` that are also among the top of `b`.
pub fn top_k_intersection(a: &[f32], b: &[f32], fraction: f64) -> f64 {
    let ta = top_indices(a, fraction);
    let tb: std::collections::HashSet<usize> = top_indices(b, fraction).into_iter().collect();
    ta.iter().filter(|i| tb.contains(i)).count() as f64 / ta.len() as f64
}

/// How alike two maps of the same image are (two models, or clean and attacked).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MapAgreement {
    pub ssim: f64,
    pub spearman: f64,
    /// [`top_k_intersection`] at 15%.
    pub top15_intersection: f64,
    /// The second map was resized (OpenCV bilinear) to the first's grid before comparing.
    pub resized: bool,
}

/// [`MapAgreement`] of `a` (`[a_hw.0 * a_hw.1]`) and `b` (`[b_hw.0 * b_hw.1]`), on `a`'s grid.
pub fn agreement(a: &[f32], a_hw: (usize, usize), b: &[f32], b_hw: (usize, usize)) -> MapAgreement {
    let resized = a_hw != b_hw;
    let b = if resized {
        crate::explain::gradcam::resize_bilinear(b, b_hw.0, b_hw.1, a_hw.0, a_hw.1)
    } else {
        b.to_vec()
    };
    MapAgreement {
        ssim: ssim(a, &b, a_hw.0, a_hw.1),
        spearman: spearman(a, &b),
        top15_intersection: top_k_intersection(a, &b, 0.15),
        resized,
    }
}

/// Otsu's threshold of values in [0, 1] (256 bins).
pub fn otsu_threshold(map: &[f32]) -> f32 {
    let mut hist = [0usize; 256];
    for &v in map {
        hist[(v.clamp(0.0, 1.0) * 255.0).round() as usize] += 1;
    }
    let total = map.len() as f64;
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0.0, 0.0, -1.0, 0usize);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c as f64;
        if w0 == 0.0 {
            continue;
        }
        let w1 = total - w0;
        if w1 == 0.0 {
            break;
        }
        sum0 += t as f64 * c as f64;
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1).powi(2);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    (best_t as f32 + 0.5) / 255.0
}

/// How a heatmap is binarised for IoU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// The highest `fraction` of pixels (default 0.15).
    TopFraction(f64),
    /// Otsu's threshold.
    Otsu,
}

/// IoU of the thresholded heatmap with the ground-truth mask.
pub fn iou(map: &[f32], mask: &[bool], threshold: Threshold) -> f64 {
    assert_eq!(map.len(), mask.len());
    let on: Vec<bool> = match threshold {
        Threshold::TopFraction(f) => {
            let mut v = vec![false; map.len()];
            for i in top_indices(map, f) {
                v[i] = true;
            }
            v
        }
        Threshold::Otsu => {
            let t = otsu_threshold(map);
            map.iter().map(|&v| v > t).collect()
        }
    };
    let inter = on.iter().zip(mask).filter(|(a, b)| **a && **b).count();
    let union = on.iter().zip(mask).filter(|(a, b)| **a || **b).count();
    if union == 0 {
        f64::NAN
    } else {
        inter as f64 / union as f64
    }
}

/// Energy-based pointing game: the share of the heatmap's mass inside the region.
pub fn energy_pointing_game(map: &[f32], mask: &[bool]) -> f64 {
    let total: f64 = map.iter().map(|&v| v.max(0.0) as f64).sum();
    if total == 0.0 {
        return f64::NAN;
    }
    map.iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(&v, _)| v.max(0.0) as f64)
        .sum::<f64>()
        / total
}

/// Where a map's energy lies against one region: for a chest radiograph's lungs, the
/// radiologist's first question ("is it looking at the lungs?").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegionEnergy {
    /// Share of the map's positive energy inside the region ([`energy_pointing_game`]).
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub energy_inside: f64,
    /// Share of the image the region covers: what a uniform map scores.
    pub region_fraction: f64,
    /// The map's maximum lies inside the region.
    pub peak_inside: bool,
}

/// [`RegionEnergy`] of `map` against `mask`, both `[height * width]` with rows `width` long.
/// A mask of another size, or an empty one, is an error; a map without positive energy has
/// a NaN share.
pub fn region_energy(map: &[f32], mask: &[bool], width: usize) -> Result<RegionEnergy> {
    if mask.len() != map.len() {
        return Err(TriscopeError::InvalidArgument(format!(
            "the region mask has {} pixels and the map {}: bring the mask to the map's grid first",
            mask.len(),
            map.len()
        )));
    }
    let inside = mask.iter().filter(|m| **m).count();
    if inside == 0 {
        return Err(TriscopeError::InvalidArgument(
            "the region mask is empty: there is no region to measure the map against".into(),
        ));
    }
    Ok(RegionEnergy {
        energy_inside: energy_pointing_game(map, mask),
        region_fraction: inside as f64 / mask.len() as f64,
        peak_inside: pointing_game(map, mask, width, 0.0),
    })
}

/// Pointing game: a hit when the heatmap's maximum lies inside the region, or within
/// `tolerance_px` pixels of it (TorchRay uses 15).
pub fn pointing_game(map: &[f32], mask: &[bool], width: usize, tolerance_px: f64) -> bool {
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mx, my) = match map.iter().position(|&v| v == max) {
        Some(i) => ((i % width) as f64, (i / width) as f64),
        None => return false,
    };
    mask.iter().enumerate().any(|(i, &m)| {
        m && {
            let (x, y) = ((i % width) as f64, (i / width) as f64);
            ((x - mx).powi(2) + (y - my).powi(2)).sqrt() <= tolerance_px
        }
    })
}

/// Area under a curve sampled at evenly spaced x in [0, 1] (trapezoid rule).
pub fn auc_uniform(ys: &[f64]) -> f64 {
    if ys.len() < 2 {
        return ys.first().copied().unwrap_or(f64::NAN);
    }
    let dx = 1.0 / (ys.len() - 1) as f64;
    ys.windows(2).map(|p| (p[0] + p[1]) / 2.0 * dx).sum()
}

/// RISE deletion / insertion curves. `order` ranks pixels by saliency (most salient first);
/// each step moves `per_step` pixels from `from` to `to` (`[C, H, W]` planes of the same
/// image): deletion goes from the image to a baseline, insertion from a blurred image to the
/// image. `score` gives the probability of the explained class for a batch of images.
pub fn rise_curve(
    saliency: &[f32],
    from: &[f32],
    to: &[f32],
    channels: usize,
    per_step: usize,
    score: &mut dyn FnMut(&[Vec<f32>]) -> Vec<f64>,
) -> Vec<f64> {
    let plane = saliency.len();
    let mut order: Vec<usize> = (0..plane).collect();
    order.sort_by(|&a, &b| saliency[b].total_cmp(&saliency[a]).then(a.cmp(&b)));
    let steps = plane.div_ceil(per_step.max(1));
    let mut current = from.to_vec();
    let mut images = Vec::with_capacity(steps + 1);
    images.push(current.clone());
    for s in 0..steps {
        for &p in order.iter().skip(s * per_step).take(per_step) {
            for c in 0..channels {
                current[c * plane + p] = to[c * plane + p];
            }
        }
        images.push(current.clone());
    }
    score(&images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_brings_the_second_map_to_the_first_grid() {
        // A blob on a 16x16 grid and the same blob on 8x8: alike once resized.
        let blob = |n: usize| -> Vec<f32> {
            (0..n * n)
                .map(|i| {
                    let (y, x) = ((i / n) as f32 / n as f32, (i % n) as f32 / n as f32);
                    (-((x - 0.3).powi(2) + (y - 0.6).powi(2)) * 20.0).exp()
                })
                .collect()
        };
        let (a, b) = (blob(16), blob(8));
        let same = agreement(&a, (16, 16), &a, (16, 16));
        assert!(!same.resized && (same.ssim - 1.0).abs() < 1e-9 && same.top15_intersection == 1.0);
        let across = agreement(&a, (16, 16), &b, (8, 8));
        assert!(across.resized);
        assert!(across.spearman > 0.95 && across.ssim > 0.8, "{across:?}");
        let flipped: Vec<f32> = a.iter().rev().copied().collect();
        let apart = agreement(&a, (16, 16), &flipped, (16, 16));
        assert!(
            apart.spearman < across.spearman && apart.top15_intersection < 0.5,
            "{apart:?}"
        );
    }

    #[test]
    fn region_energy_of_maps_with_known_answers() {
        // A 10x10 image whose left 3 columns are the region (30%).
        let (w, h) = (10, 10);
        let mask: Vec<bool> = (0..w * h).map(|i| i % w < 3).collect();
        let inside: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        let outside: Vec<f32> = inside.iter().map(|v| 1.0 - v).collect();
        let e = region_energy(&inside, &mask, w).unwrap();
        assert_eq!(
            (e.energy_inside, e.region_fraction, e.peak_inside),
            (1.0, 0.3, true)
        );
        let e = region_energy(&outside, &mask, w).unwrap();
        assert_eq!((e.energy_inside, e.peak_inside), (0.0, false));
        // A uniform map scores the region's share of the image.
        let uniform = vec![0.5f32; w * h];
        let e = region_energy(&uniform, &mask, w).unwrap();
        assert!((e.energy_inside - 0.3).abs() < 1e-12);
        // Negative values carry no energy.
        let mut signed = inside.clone();
        signed[99] = -5.0;
        assert_eq!(region_energy(&signed, &mask, w).unwrap().energy_inside, 1.0);
        let err = region_energy(&uniform, &mask[..50], w)
            .unwrap_err()
            .to_string();
        assert!(err.contains("50 pixels and the map 100"), "{err}");
        let err = region_energy(&uniform, &vec![false; w * h], w)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(
            region_energy(&vec![0.0; w * h], &mask, w)
                .unwrap()
                .energy_inside
                .is_nan()
        );
    }

    fn square_mask(w: usize, h: usize, x0: usize, x1: usize, y0: usize, y1: usize) -> Vec<bool> {
        (0..w * h)
            .map(|i| (x0..x1).contains(&(i % w)) && (y0..y1).contains(&(i / w)))
            .collect()
    }

    #[test]
    fn perfect_inverted_random_heatmaps() {
        let (w, h) = (32, 32);
        let mask = square_mask(w, h, 8, 16, 8, 16);
        let perfect: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        let inverted: Vec<f32> = perfect.iter().map(|v| 1.0 - v).collect();
        let mut rng = crate::util::rng::SplitMix64::new(3);
        let random: Vec<f32> = (0..w * h).map(|_| rng.next_f32()).collect();
        // The mask covers 64 / 1024 = 6.25% of the image: with a top-6.25% threshold IoU is 1.
        assert_eq!(
            iou(&perfect, &mask, Threshold::TopFraction(64.0 / 1024.0)),
            1.0
        );
        assert!((iou(&perfect, &mask, Threshold::Otsu) - 1.0).abs() < 1e-12);
        assert_eq!(iou(&inverted, &mask, Threshold::Otsu), 0.0);
        assert!(iou(&random, &mask, Threshold::TopFraction(0.15)) < 0.3);
        assert_eq!(energy_pointing_game(&perfect, &mask), 1.0);
        assert_eq!(energy_pointing_game(&inverted, &mask), 0.0);
        let e = energy_pointing_game(&random, &mask);
        assert!((e - 0.0625).abs() < 0.03, "{e}");
        assert!(pointing_game(&perfect, &mask, w, 0.0));
        assert!(!pointing_game(&inverted, &mask, w, 0.0));
        // Inverted map's maximum is pixel 0: 8*sqrt(2) = 11.3 px from the mask corner.
        assert!(pointing_game(&inverted, &mask, w, 15.0));
    }

    #[test]
    fn similarity_metrics() {
        let (w, h) = (24, 20);
        let a: Vec<f32> = (0..w * h)
            .map(|i| ((i % w) as f32 / w as f32) * 0.8 + 0.1)
            .collect();
        assert!((ssim(&a, &a, h, w) - 1.0).abs() < 1e-12);
        let flipped: Vec<f32> = a.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&a, &flipped, h, w) < 0.0);
        assert!((spearman(&a, &a) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &flipped) + 1.0).abs() < 1e-12);
        assert_eq!(top_k_intersection(&a, &a, 0.1), 1.0);
        assert_eq!(top_k_intersection(&a, &flipped, 0.1), 0.0);
        // A random map has no rank relation with the pattern.
        let mut rng = crate::util::rng::SplitMix64::new(11);
        let random: Vec<f32> = (0..w * h).map(|_| rng.next_f32()).collect();
        assert!(spearman(&a, &random).abs() < 0.15);
        assert!(ssim(&a, &random, h, w).abs() < 0.3);
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic == 0.9486832980505139
        let s = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((s - 0.948_683_298_050_513_9).abs() < 1e-12, "{s}");
        // References from scikit-image 0.25 / scipy 1.17 on two smooth float32 patterns
        // (structural_similarity(..., data_range=1, gaussian_weights=True, sigma=1.5,
        // use_sample_covariance=False)).
        let (h, w) = (20usize, 24usize);
        let pattern = |fx: f32, phase: f32, fy: f32| -> Vec<f32> {
            (0..h * w)
                .map(|i| {
                    let (x, y) = ((i % w) as f32, (i / w) as f32);
                    ((x * fx + phase).sin() * (y * fy).cos() + 1.0) / 2.0
                })
                .collect()
        };
        let (p, q) = (pattern(0.3, 0.0, 0.2), pattern(0.31, 0.5, 0.19));
        let s = ssim(&p, &q, h, w);
        assert!((s - 0.769_195_321_764_112_2).abs() < 1e-5, "SSIM {s}");
        let r = spearman(&p, &q);
        assert!((r - 0.800_044_815_700_169).abs() < 1e-4, "Spearman {r}");
    }

    #[test]
    fn rise_auc_of_known_curves() {
        assert!((auc_uniform(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((auc_uniform(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
        // Deleting the salient pixel first collapses a "model" that only looks at it.
        let saliency = vec![0.1, 0.9, 0.2, 0.0];
        let image = vec![0.0, 1.0, 0.0, 0.0];
        let baseline = vec![0.0; 4];
        let curve = rise_curve(&saliency, &image, &baseline, 1, 1, &mut |imgs: &[Vec<
            f32,
        >]| {
            imgs.iter().map(|im| im[1] as f64).collect()
        });
        assert_eq!(curve, vec![1.0, 0.0, 0.0, 0.0, 0.0]);
        let inverted: Vec<f32> = saliency.iter().map(|v| 1.0 - v).collect();
        let late = rise_curve(&inverted, &image, &baseline, 1, 1, &mut |imgs: &[Vec<
            f32,
        >]| {
            imgs.iter().map(|im| im[1] as f64).collect()
        });
        assert!(auc_uniform(&curve) < auc_uniform(&late));
    }

    #[test]
    fn deletion_ranks_perfect_random_and_inverted_maps() {
        // A "model" whose score is the share of a 16-pixel object still present in the image.
        let (w, h) = (16usize, 16usize);
        let object: Vec<bool> = (0..w * h)
            .map(|i| (4..8).contains(&(i % w)) && (4..8).contains(&(i / w)))
            .collect();
        let image: Vec<f32> = object.iter().map(|&o| if o { 1.0 } else { 0.5 }).collect();
        let baseline = vec![0.0f32; w * h];
        let mut score = |imgs: &[Vec<f32>]| -> Vec<f64> {
            imgs.iter()
                .map(|im| {
                    object
                        .iter()
                        .zip(im)
                        .filter(|(o, v)| **o && **v == 1.0)
                        .count() as f64
                        / 16.0
                })
                .collect()
        };
        let perfect: Vec<f32> = object.iter().map(|&o| if o { 1.0 } else { 0.0 }).collect();
        let inverted: Vec<f32> = perfect.iter().map(|v| 1.0 - v).collect();
        let mut rng = crate::util::rng::SplitMix64::new(5);
        let random: Vec<f32> = (0..w * h).map(|_| rng.next_f32()).collect();
        let auc = |map: &[f32], score: &mut dyn FnMut(&[Vec<f32>]) -> Vec<f64>| {
            auc_uniform(&rise_curve(map, &image, &baseline, 1, 16, score))
        };
        let (p, r, i) = (
            auc(&perfect, &mut score),
            auc(&random, &mut score),
            auc(&inverted, &mut score),
        );
        // 16 steps of 16 pixels: the perfect map removes the object in the first step
        // (AUC = 1/2 * 1/16), the inverted one in the last (AUC = 1 - 1/32), a random map in
        // between (about half).
        assert!((p - 1.0 / 32.0).abs() < 1e-12, "{p}");
        assert!((i - (1.0 - 1.0 / 32.0)).abs() < 1e-12, "{i}");
        assert!(p < r && r < i && (r - 0.5).abs() < 0.2, "{p} {r} {i}");
    }
}
