//! Colour maps for heatmaps and the overlay of a heatmap on an image.

use serde::{Deserialize, Serialize};

use crate::error::TriscopeError;

/// A colour map from [0, 1] to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    /// The classic rainbow map of Grad-CAM figures (OpenCV / matplotlib "jet").
    #[default]
    Jet,
    /// Perceptually uniform and colour-blind safe (matplotlib "viridis").
    Viridis,
}

impl Colormap {
    pub const ALL: [Colormap; 2] = [Self::Jet, Self::Viridis];

    pub fn name(self) -> &'static str {
        match self {
            Self::Jet => "jet",
            Self::Viridis => "viridis",
        }
    }

    /// RGB for `t` in [0, 1] (clamped; NaN maps to 0).
    pub fn rgb(self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let f = match self {
            Self::Jet => jet(t),
            Self::Viridis => viridis(t),
        };
        f.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8)
    }

    /// 256-entry lookup table (for shaders and fast CPU mapping).
    pub fn lut(self) -> Vec<[u8; 3]> {
        (0..256).map(|i| self.rgb(i as f32 / 255.0)).collect()
    }
}

impl crate::util::choice::Choice for Colormap {
    const KIND: &'static str = "colormap";
    const ALL: &'static [Self] = &Colormap::ALL;
    fn name(self) -> &'static str {
        Colormap::name(self)
    }
}

impl std::str::FromStr for Colormap {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::util::choice::parse(s)
    }
}

/// Piecewise-linear interpolation through `(x, value)` knots.
fn piecewise(t: f32, knots: &[(f32, f32)]) -> f32 {
    for pair in knots.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if t <= x1 {
            let u = if x1 > x0 { (t - x0) / (x1 - x0) } else { 0.0 };
            return y0 + (y1 - y0) * u.clamp(0.0, 1.0);
        }
    }
    knots.last().map(|k| k.1).unwrap_or(0.0)
}

/// matplotlib's `jet` segment data.
fn jet(t: f32) -> [f32; 3] {
    let r = piecewise(
        t,
        &[
            (0.0, 0.0),
            (0.35, 0.0),
            (0.66, 1.0),
            (0.89, 1.0),
            (1.0, 0.5),
        ],
    );
    let g = piecewise(
        t,
        &[
            (0.0, 0.0),
            (0.125, 0.0),
            (0.375, 1.0),
            (0.64, 1.0),
            (0.91, 0.0),
            (1.0, 0.0),
        ],
    );
    let b = piecewise(
        t,
        &[
            (0.0, 0.5),
            (0.11, 1.0),
            (0.34, 1.0),
            (0.65, 0.0),
            (1.0, 0.0),
        ],
    );
    [r, g, b]
}

/// matplotlib's `viridis` sampled at 17 points (error under 1/255 between them).
fn viridis(t: f32) -> [f32; 3] {
    const KNOTS: [[u8; 3]; 17] = [
        [68, 1, 84],
        [72, 26, 108],
        [71, 47, 125],
        [65, 68, 135],
        [57, 86, 140],
        [49, 104, 142],
        [42, 120, 142],
        [35, 136, 142],
        [31, 150, 139],
        [34, 167, 133],
        [53, 183, 121],
        [84, 197, 104],
        [122, 209, 81],
        [165, 219, 54],
        [210, 226, 27],
        [236, 229, 27],
        [253, 231, 37],
    ];
    let x = t * 16.0;
    let i = (x.floor() as usize).min(15);
    let u = x - i as f32;
    let (a, b) = (KNOTS[i], KNOTS[i + 1]);
    [0, 1, 2].map(|c| (a[c] as f32 * (1.0 - u) + b[c] as f32 * u) / 255.0)
}

/// Colour-map a [0, 1] map to interleaved RGB8.
pub fn heatmap_rgb8(map: &[f32], colormap: Colormap) -> Vec<u8> {
    let lut = colormap.lut();
    map.iter()
        .flat_map(|&v| {
            let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
            lut[(v * 255.0).round() as usize]
        })
        .collect()
}

/// Blend the colour-mapped heatmap over an RGB8 image: `(1 - alpha) * image + alpha * heat`.
pub fn overlay_rgb8(image_rgb: &[u8], map: &[f32], colormap: Colormap, alpha: f32) -> Vec<u8> {
    let alpha = alpha.clamp(0.0, 1.0);
    let heat = heatmap_rgb8(map, colormap);
    image_rgb
        .iter()
        .zip(heat.iter())
        .map(|(&i, &h)| ((1.0 - alpha) * i as f32 + alpha * h as f32).round() as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_ends_and_middle() {
        assert_eq!(Colormap::Jet.rgb(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.rgb(1.0), [128, 0, 0]);
        let mid = Colormap::Jet.rgb(0.5);
        assert!(mid[1] == 255, "{mid:?}");
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
    }

    #[test]
    fn overlay_alpha_bounds() {
        let img = vec![10u8, 20, 30];
        let map = vec![1.0f32];
        assert_eq!(overlay_rgb8(&img, &map, Colormap::Jet, 0.0), img);
        assert_eq!(
            overlay_rgb8(&img, &map, Colormap::Jet, 1.0),
            vec![128, 0, 0]
        );
        let half = overlay_rgb8(&img, &map, Colormap::Jet, 0.4);
        assert_eq!(half, vec![57, 12, 18]);
    }
}
