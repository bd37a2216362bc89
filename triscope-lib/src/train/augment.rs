//! Training augmentation on prepared images, deterministic in its generator: random resized
//! crop (area 0.8-1.0, aspect 3/4-4/3), horizontal and vertical flips, rotation up to 15
//! degrees (zero fill, as torchvision), colour jitter (brightness, contrast, saturation 0.2,
//! hue 0.1; brightness and contrast only on 1-channel images). The geometric part is one
//! inverse mapping with bilinear sampling, so the image is resampled once.
//!
//! Before those, optionally, `swap_background`: the skin around a HAM10000 lesion replaced by
//! another training image's skin, so that what surrounds a lesion says nothing of its class.

use crate::io::imaging::PixelImage;
use crate::util::rng::SplitMix64;

/// Ranges of the augmentation: the config's `training.augmentation`.
pub use super::config::AugmentationSection as AugmentParams;

fn uniform(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f32()
}

/// One augmented copy of `img` (same size). Draws a fixed number of values from `rng`.
pub fn augment(img: &PixelImage, p: &AugmentParams, rng: &mut SplitMix64) -> PixelImage {
    augment_with_mask(img, None, p, rng).0
}

/// [`augment`], and `mask` (a 1-channel map of the same size, such as a lesion mask as 0/1)
/// moved by the same crop, flips and rotation, without the colour jitter. The same draws as
/// `augment`, so a run draws alike with or without a mask.
pub fn augment_with_mask(
    img: &PixelImage,
    mask: Option<&PixelImage>,
    p: &AugmentParams,
    rng: &mut SplitMix64,
) -> (PixelImage, Option<PixelImage>) {
    let (h, w) = (img.height as f32, img.width as f32);
    // Random resized crop.
    let area = uniform(rng, p.crop_scale[0], p.crop_scale[1]) * h * w;
    let log_ratio = uniform(rng, p.crop_ratio[0].ln(), p.crop_ratio[1].ln());
    let ratio = log_ratio.exp();
    let crop_w = (area * ratio).sqrt().min(w);
    let crop_h = (area / ratio).sqrt().min(h);
    let x0 = uniform(rng, 0.0, w - crop_w);
    let y0 = uniform(rng, 0.0, h - crop_h);
    let flip_h = p.hflip && rng.next_f32() < 0.5;
    let flip_v = p.vflip && rng.next_f32() < 0.5;
    let angle = uniform(rng, -p.rotation_deg, p.rotation_deg).to_radians();
    let brightness = uniform(rng, 1.0 - p.brightness, 1.0 + p.brightness);
    let contrast = uniform(rng, 1.0 - p.contrast, 1.0 + p.contrast);
    let saturation = uniform(rng, 1.0 - p.saturation, 1.0 + p.saturation);
    let hue = uniform(rng, -p.hue, p.hue);

    let crop = (x0, y0, crop_w, crop_h);
    let mut out = geometric(img, crop, flip_h, flip_v, angle);
    jitter(&mut out, brightness, contrast, saturation, hue);
    let mask = mask.map(|m| geometric(m, crop, flip_h, flip_v, angle));
    (out, mask)
}

/// Output pixel -> (undo rotation about the centre) -> (undo flips) -> crop coordinates ->
/// bilinear sample of the source. Points rotated in from outside are 0.
fn geometric(
    img: &PixelImage,
    crop: (f32, f32, f32, f32),
    flip_h: bool,
    flip_v: bool,
    angle: f32,
) -> PixelImage {
    let (hh, ww) = (img.height, img.width);
    let (x0, y0, cw, ch) = crop;
    let (cx, cy) = ((ww as f32 - 1.0) / 2.0, (hh as f32 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let plane = hh * ww;
    let mut data = vec![0.0f32; img.channels * plane];
    for v in 0..hh {
        for u in 0..ww {
            // Inverse rotation (the output is the input rotated by `angle`).
            let (dx, dy) = (u as f32 - cx, v as f32 - cy);
            let rx = cos * dx + sin * dy + cx;
            let ry = -sin * dx + cos * dy + cy;
            if rx < -0.5 || ry < -0.5 || rx > ww as f32 - 0.5 || ry > hh as f32 - 0.5 {
                continue;
            }
            let fx = if flip_h { ww as f32 - 1.0 - rx } else { rx };
            let fy = if flip_v { hh as f32 - 1.0 - ry } else { ry };
            // Crop-and-resize: pixel centres of the output map into the crop box.
            let sx = x0 + (fx + 0.5) * cw / ww as f32 - 0.5;
            let sy = y0 + (fy + 0.5) * ch / hh as f32 - 0.5;
            let sx = sx.clamp(0.0, ww as f32 - 1.0);
            let sy = sy.clamp(0.0, hh as f32 - 1.0);
            let (ix, iy) = (sx.floor() as usize, sy.floor() as usize);
            let (ix1, iy1) = ((ix + 1).min(ww - 1), (iy + 1).min(hh - 1));
            let (ax, ay) = (sx - ix as f32, sy - iy as f32);
            for c in 0..img.channels {
                let src = img.plane(c);
                let top = src[iy * ww + ix] * (1.0 - ax) + src[iy * ww + ix1] * ax;
                let bottom = src[iy1 * ww + ix] * (1.0 - ax) + src[iy1 * ww + ix1] * ax;
                data[c * plane + v * ww + u] = top * (1.0 - ay) + bottom * ay;
            }
        }
    }
    PixelImage {
        channels: img.channels,
        height: hh,
        width: ww,
        data,
    }
}

fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Brightness, contrast, saturation, hue in that order (torchvision's definitions), clamped
/// to [0, 1] after each.
fn jitter(img: &mut PixelImage, brightness: f32, contrast: f32, saturation: f32, hue: f32) {
    let plane = img.height * img.width;
    for v in img.data.iter_mut() {
        *v = (*v * brightness).clamp(0.0, 1.0);
    }
    let mean = if img.channels == 3 {
        (0..plane)
            .map(|i| luma(img.data[i], img.data[plane + i], img.data[2 * plane + i]))
            .sum::<f32>()
            / plane as f32
    } else {
        img.data.iter().sum::<f32>() / img.data.len().max(1) as f32
    };
    for v in img.data.iter_mut() {
        *v = ((*v - mean) * contrast + mean).clamp(0.0, 1.0);
    }
    if img.channels != 3 {
        return;
    }
    let (r, rest) = img.data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for i in 0..plane {
        let l = luma(r[i], g[i], b[i]);
        let mut px = [r[i], g[i], b[i]].map(|c| ((c - l) * saturation + l).clamp(0.0, 1.0));
        if hue != 0.0 {
            px = shift_hue(px, hue);
        }
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
}

/// Rotate the hue of an RGB pixel by `turns` through HSV.
fn shift_hue([r, g, b]: [f32; 3], turns: f32) -> [f32; 3] {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    if delta <= 0.0 {
        return [r, g, b];
    }
    let h = if max == r {
        ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    } / 6.0;
    let h = (h + turns).rem_euclid(1.0) * 6.0;
    let s = delta / max;
    let v = max;
    let i = h.floor();
    let f = h - i;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match i as i32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Pixels a lesion mask is grown by before the swap, at model resolution: the border of a
/// lesion (where the masks are least exact and the diagnosis often lies) stays its own.
pub const LESION_MARGIN_PX: usize = 3;

/// `mask` grown by `radius` pixels (a square neighbourhood); `[side * side]`, row-major.
fn dilate(mask: &[bool], side: usize, radius: usize) -> Vec<bool> {
    let at = |x: usize, y: usize| mask[y * side + x];
    // Rows first, then columns: a square structuring element as two passes.
    let mut rows = vec![false; mask.len()];
    for y in 0..side {
        for x in 0..side {
            let (x0, x1) = (x.saturating_sub(radius), (x + radius).min(side - 1));
            rows[y * side + x] = (x0..=x1).any(|u| at(u, y));
        }
    }
    let mut out = vec![false; mask.len()];
    for y in 0..side {
        for x in 0..side {
            let (y0, y1) = (y.saturating_sub(radius), (y + radius).min(side - 1));
            out[y * side + x] = (y0..=y1).any(|v| rows[v * side + x]);
        }
    }
    out
}

/// Replace the skin of `img` (everything outside its lesion `mask`, grown by
/// `LESION_MARGIN_PX`) with `donor`'s skin (outside the donor's grown lesion). Where the donor
/// shows its own lesion, the skin around it is grown inwards (`fill_from_outside`), so no part
/// of another lesion is pasted in and no flat patch or hard edge marks the place. Both images
/// are square, the same size as the masks (`[side * side]`). Returns false, leaving `img` as
/// it was, when the donor shows no skin.
pub fn swap_background(
    img: &mut PixelImage,
    mask: &[bool],
    donor: &PixelImage,
    donor_mask: &[bool],
) -> bool {
    let side = img.width;
    let plane = side * side;
    debug_assert!(img.height == side && mask.len() == plane && donor_mask.len() == plane);
    debug_assert!(donor.height == side && donor.width == side && donor.channels == img.channels);
    let keep = dilate(mask, side, LESION_MARGIN_PX);
    let donor_lesion = dilate(donor_mask, side, LESION_MARGIN_PX);
    let Some(skin) = fill_from_outside(donor, &donor_lesion) else {
        return false;
    };
    for (i, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
        for c in 0..img.channels {
            img.data[c * plane + i] = skin[c * plane + i];
        }
    }
    true
}

/// `img` with the pixels under `hole` replaced by a smooth fill from the pixels around it:
/// normalised convolution (Knutsson and Westin 1993), the known pixels and their indicator
/// blurred alike and divided, with a box blur of a side/8 radius run three times (nearly a
/// Gaussian). Hole pixels beyond its reach take the known pixels' mean. None when all is hole.
fn fill_from_outside(img: &PixelImage, hole: &[bool]) -> Option<Vec<f32>> {
    let (side, plane) = (img.width, img.width * img.height);
    let known = hole.iter().filter(|h| !**h).count();
    if known == 0 {
        return None;
    }
    let radius = (side / 8).max(1);
    let weight: Vec<f32> = hole.iter().map(|h| if *h { 0.0 } else { 1.0 }).collect();
    let mut spread = weight.clone();
    for _ in 0..3 {
        spread = box_blur(&spread, side, radius);
    }
    let mut data = img.data.clone();
    for c in 0..img.channels {
        let channel = &img.data[c * plane..(c + 1) * plane];
        let mut sum: Vec<f32> = channel.iter().zip(&weight).map(|(v, w)| v * w).collect();
        for _ in 0..3 {
            sum = box_blur(&sum, side, radius);
        }
        let mean = sum_known(channel, hole) / known as f32;
        for i in (0..plane).filter(|&i| hole[i]) {
            data[c * plane + i] = if spread[i] > 1e-3 {
                (sum[i] / spread[i]).clamp(0.0, 1.0)
            } else {
                mean
            };
        }
    }
    Some(data)
}

fn sum_known(values: &[f32], hole: &[bool]) -> f32 {
    values
        .iter()
        .zip(hole)
        .filter(|(_, h)| !**h)
        .map(|(v, _)| v)
        .sum()
}

/// Mean over the `(2 radius + 1)^2` square around each pixel of a `side x side` plane, the
/// outside counting as 0 (a running sum along rows, then along columns).
fn box_blur(values: &[f32], side: usize, radius: usize) -> Vec<f32> {
    let pass = |input: &[f32], stride: usize, step: usize| {
        let mut out = vec![0.0f32; input.len()];
        for line in 0..side {
            let at = |k: usize| input[line * stride + k * step];
            let mut acc: f32 = (0..radius.min(side - 1) + 1).map(at).sum();
            for k in 0..side {
                out[line * stride + k * step] = acc / (2 * radius + 1) as f32;
                if k + radius + 1 < side {
                    acc += at(k + radius + 1);
                }
                if k >= radius {
                    acc -= at(k - radius);
                }
            }
        }
        out
    };
    let rows = pass(values, side, 1);
    pass(&rows, 1, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(channels: usize, n: usize) -> PixelImage {
        let plane = n * n;
        let data = (0..channels * plane)
            .map(|i| ((i % plane) as f32 / plane as f32 + 0.1 * (i / plane) as f32).min(1.0))
            .collect();
        PixelImage {
            channels,
            height: n,
            width: n,
            data,
        }
    }

    #[test]
    fn deterministic_in_the_seed_and_in_range() {
        let img = ramp(3, 24);
        let p = AugmentParams::default();
        let a = augment(&img, &p, &mut SplitMix64::new(5));
        let b = augment(&img, &p, &mut SplitMix64::new(5));
        let c = augment(&img, &p, &mut SplitMix64::new(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!((a.height, a.width, a.channels), (24, 24, 3));
        let g = augment(&ramp(1, 16), &p, &mut SplitMix64::new(1));
        assert_eq!(g.data.len(), 256);
    }

    #[test]
    fn identity_parameters_keep_the_image() {
        let img = ramp(3, 16);
        let out = augment(&img, &AugmentParams::identity(), &mut SplitMix64::new(3));
        for (a, b) in out.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
    }

    #[test]
    fn the_mask_moves_with_the_image_and_skips_the_colour_jitter() {
        // The image's red channel is the mask itself: after any crop, flip and rotation the
        // moved mask must equal the moved channel as it was before the jitter.
        let side = 24;
        let mask = PixelImage {
            channels: 1,
            height: side,
            width: side,
            data: (0..side * side)
                .map(|i| f32::from(u8::from((6..14).contains(&(i % side)) && i / side < 10)))
                .collect(),
        };
        let mut img = ramp(3, side);
        img.data[..side * side].copy_from_slice(&mask.data);
        let p = AugmentParams::default();
        for seed in 0..8 {
            let (out, moved) = augment_with_mask(&img, Some(&mask), &p, &mut SplitMix64::new(seed));
            // The same draws as `augment`.
            assert_eq!(out, augment(&img, &p, &mut SplitMix64::new(seed)));
            let no_jitter = AugmentParams {
                brightness: 0.0,
                contrast: 0.0,
                saturation: 0.0,
                hue: 0.0,
                ..p.clone()
            };
            let (plain, _) = augment_with_mask(&img, None, &no_jitter, &mut SplitMix64::new(seed));
            let moved = moved.unwrap();
            assert_eq!((moved.channels, moved.height, moved.width), (1, side, side));
            // Equal up to rounding: the no-jitter pass still multiplies by 1 and clamps.
            for (a, b) in moved.data.iter().zip(&plain.data[..side * side]) {
                assert!((a - b).abs() < 1e-5, "seed {seed}: {a} {b}");
            }
            assert!(
                moved.data.iter().any(|v| *v > 0.5)
                    && moved.data.iter().all(|v| (0.0..=1.0).contains(v))
            );
        }
    }

    #[test]
    fn background_swap_keeps_the_grown_lesion_and_takes_the_donors_skin() {
        let side = 16;
        let flat = |v: f32| PixelImage {
            channels: 3,
            height: side,
            width: side,
            data: vec![v; 3 * side * side],
        };
        // The lesion: a 2x2 square at (4, 4); the donor's: a 2x2 square at (10, 10).
        let square = |x0: usize| {
            (0..side * side)
                .map(|i| (x0..x0 + 2).contains(&(i % side)) && (x0..x0 + 2).contains(&(i / side)))
                .collect::<Vec<bool>>()
        };
        let mut donor = flat(0.25);
        for i in (0..side * side).filter(|&i| square(10)[i]) {
            donor.data[i] = 0.9; // red channel of the donor's lesion
        }
        let mut img = flat(0.75);
        assert!(swap_background(&mut img, &square(4), &donor, &square(10)));
        let grown = LESION_MARGIN_PX;
        for y in 0..side {
            for x in 0..side {
                let i = y * side + x;
                let near_lesion = (4 - grown..4 + 2 + grown).contains(&x)
                    && (4 - grown..4 + 2 + grown).contains(&y);
                // Inside the grown lesion: the image's own pixels; elsewhere the donor's skin,
                // grown over the donor's lesion (0.25): never the lesion's 0.9.
                let want = if near_lesion { 0.75 } else { 0.25 };
                assert_eq!(img.data[i], want, "({x}, {y})");
            }
        }
        // A donor that is all lesion gives no skin: the image is left as it was.
        let mut img = flat(0.75);
        assert!(!swap_background(
            &mut img,
            &square(4),
            &donor,
            &vec![true; side * side]
        ));
        assert!(img.data.iter().all(|v| *v == 0.75));
    }

    #[test]
    fn the_fill_is_smooth_and_made_of_the_surrounding_values() {
        // A 16x16 image: a left half at 0 and a right half at 1, a 4-column hole between.
        let side = 16;
        let img = PixelImage {
            channels: 1,
            height: side,
            width: side,
            data: (0..side * side)
                .map(|i| if i % side >= 8 { 1.0 } else { 0.0 })
                .collect(),
        };
        let hole: Vec<bool> = (0..side * side)
            .map(|i| (6..10).contains(&(i % side)))
            .collect();
        let out = fill_from_outside(&img, &hole).unwrap();
        for y in 0..side {
            let row = &out[y * side..(y + 1) * side];
            // Outside the hole unchanged; inside, rising from the dark side to the bright one.
            assert!(row[..6].iter().all(|v| *v == 0.0) && row[10..].iter().all(|v| *v == 1.0));
            assert!(row[5] < row[6] && row[6] < row[7] && row[7] < row[8] && row[8] < row[9]);
            assert!(row[9] < row[10], "{row:?}");
            assert!((row[7] + row[8] - 1.0).abs() < 1e-4, "symmetric: {row:?}");
        }
        // Uniform surroundings fill the hole uniformly; an all-hole image has nothing to fill from.
        let grey = PixelImage {
            data: vec![0.3; side * side],
            ..img.clone()
        };
        let out = fill_from_outside(&grey, &hole).unwrap();
        assert!(out.iter().all(|v| (v - 0.3).abs() < 1e-5));
        assert!(fill_from_outside(&img, &vec![true; side * side]).is_none());
    }

    #[test]
    fn box_blur_is_a_running_mean() {
        let side = 7;
        let values: Vec<f32> = (0..side * side).map(|i| (i * 7 % 11) as f32).collect();
        let out = box_blur(&values, side, 2);
        for y in 0..side {
            for x in 0..side {
                let mut sum = 0.0;
                for v in y.saturating_sub(2)..(y + 3).min(side) {
                    for u in x.saturating_sub(2)..(x + 3).min(side) {
                        sum += values[v * side + u];
                    }
                }
                let want = sum / 25.0;
                assert!((out[y * side + x] - want).abs() < 1e-4, "({x}, {y})");
            }
        }
    }

    #[test]
    fn hue_round_trip() {
        let px = [0.8, 0.3, 0.1];
        let back = shift_hue(shift_hue(px, 0.1), -0.1);
        for (a, b) in back.iter().zip(px) {
            assert!((a - b).abs() < 1e-5);
        }
        let full = shift_hue(px, 1.0);
        for (a, b) in full.iter().zip(px) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
