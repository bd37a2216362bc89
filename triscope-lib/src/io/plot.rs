//! Small PNG line charts (accuracy against eps, loss curves) without a plotting stack:
//! lines, markers, grid, ticks and text (Ubuntu Light, the font egui ships); image grids; and
//! slides for a projector (`Slide`, `write_slide`).

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};

use serde::Serialize;

use crate::error::{Result, TriscopeError};

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

/// Encode a PNG in memory.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| TriscopeError::Compute(format!("encoding a PNG: {e}")))?;
    Ok(buf.into_inner())
}

/// Write `img` as a PNG file, whole or not at all.
pub fn write_png(path: &std::path::Path, img: &RgbImage) -> Result<()> {
    crate::util::fsio::write_atomic(path, &png_bytes(img)?)
}

/// A line chart description.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range (else from the data).
    pub y_range: Option<(f64, f64)>,
    /// Tick positions and labels on x (else 5 even ticks).
    pub x_ticks: Vec<(f64, String)>,
}

/// Colour-blind-safe palette (Okabe-Ito).
pub const PALETTE: [[u8; 3]; 7] = [
    [0, 114, 178],
    [213, 94, 0],
    [0, 158, 115],
    [204, 121, 167],
    [230, 159, 0],
    [86, 180, 233],
    [0, 0, 0],
];

struct Canvas {
    img: RgbImage,
    font: FontRef<'static>,
}

impl Canvas {
    fn blend(&mut self, x: i64, y: i64, color: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= self.img.width() as i64 || y >= self.img.height() as i64 {
            return;
        }
        let p = self.img.get_pixel_mut(x as u32, y as u32);
        for (channel, &target) in p.0.iter_mut().zip(&color) {
            *channel = (*channel as f32 * (1.0 - alpha) + target as f32 * alpha).round() as u8;
        }
    }

    fn dot(&mut self, x: f64, y: f64, radius: f64, color: [u8; 3]) {
        let r = radius.ceil() as i64 + 1;
        for dy in -r..=r {
            for dx in -r..=r {
                let d = ((dx as f64).powi(2) + (dy as f64).powi(2)).sqrt();
                let cover = (radius + 0.5 - d).clamp(0.0, 1.0) as f32;
                if cover > 0.0 {
                    self.blend(x.round() as i64 + dx, y.round() as i64 + dy, color, cover);
                }
            }
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), width: f64, color: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            self.dot(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, width / 2.0, color);
        }
    }

    fn text_width(&self, text: &str, size: f32) -> f32 {
        let font = self.font.as_scaled(PxScale::from(size));
        text.chars().map(|c| font.h_advance(font.glyph_id(c))).sum()
    }

    /// Draw `text` with its left end at x and its baseline at y; `anchor` 0 left, 0.5 centre, 1 right.
    fn text(&mut self, text: &str, x: f32, y: f32, size: f32, anchor: f32, color: [u8; 3]) {
        let scale = PxScale::from(size);
        let font = self.font.clone();
        let scaled = font.as_scaled(scale);
        let mut pen = x - anchor * self.text_width(text, size);
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            let glyph = id.with_scale_and_position(scale, point(pen, y));
            pen += scaled.h_advance(id);
            if let Some(outlined) = font.outline_glyph(glyph) {
                let bounds = outlined.px_bounds();
                let mut hits = Vec::new();
                outlined.draw(|gx, gy, cover| hits.push((gx, gy, cover)));
                for (gx, gy, cover) in hits {
                    self.blend(
                        bounds.min.x as i64 + gx as i64,
                        bounds.min.y as i64 + gy as i64,
                        color,
                        cover,
                    );
                }
            }
        }
    }

    /// `text` broken at spaces into lines no wider than `max_width` (a longer word stays
    /// whole on its line).
    fn wrap(&self, text: &str, size: f32, max_width: f32) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for word in text.split(' ') {
            match lines.last_mut() {
                Some(line) if self.text_width(&format!("{line} {word}"), size) <= max_width => {
                    line.push(' ');
                    line.push_str(word);
                }
                _ => lines.push(word.to_string()),
            }
        }
        lines
    }

    /// Vertical text (rotated 90 degrees counter-clockwise) centred on (x, y).
    fn text_vertical(&mut self, text: &str, x: f32, y: f32, size: f32, color: [u8; 3]) {
        let w = self.text_width(text, size).ceil() as u32 + 4;
        let h = (size * 1.4).ceil() as u32;
        let mut tmp = Canvas {
            img: RgbImage::from_pixel(w, h, Rgb([255, 255, 255])),
            font: self.font.clone(),
        };
        tmp.text(text, 2.0, size, size, 0.0, color);
        for ty in 0..h {
            for tx in 0..w {
                let p = tmp.img.get_pixel(tx, ty).0;
                let ink = 1.0 - p[0].min(p[1]).min(p[2]) as f32 / 255.0;
                if ink > 0.0 {
                    let px = x as i64 - h as i64 / 2 + ty as i64;
                    let py = y as i64 + w as i64 / 2 - tx as i64;
                    self.blend(px, py, color, ink);
                }
            }
        }
    }
}

fn nice_ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / count as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= count as f64)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    let mut ticks = Vec::new();
    let mut t = first;
    while t <= hi + step * 1e-6 {
        ticks.push(t);
        t += step;
    }
    ticks
}

/// An axis tick: an integer as such, otherwise up to three decimals without trailing zeros.
pub fn tick_label(v: f64) -> String {
    if v.abs() < 1e-9 {
        "0".into()
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Render `chart` to an RGB image of `width` x `height` pixels.
pub fn render_line_chart(chart: &LineChart, width: u32, height: u32) -> Result<RgbImage> {
    let font = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|e| TriscopeError::Compute(format!("font: {e}")))?;
    let mut c = Canvas {
        img: RgbImage::from_pixel(width, height, Rgb([255, 255, 255])),
        font,
    };
    let (w, h) = (width as f64, height as f64);
    let (left, right, top, bottom) = (80.0, w - 170.0, 50.0, h - 60.0);
    let all: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let finite = |v: f64| v.is_finite();
    let (mut x0, mut x1) = all
        .iter()
        .map(|p| p.0)
        .filter(|v| finite(*v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let (y0, y1) = chart.y_range.unwrap_or_else(|| {
        let (a, b) = all
            .iter()
            .map(|p| p.1)
            .filter(|v| finite(*v))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if a.is_finite() && b > a {
            (a, b)
        } else {
            (0.0, 1.0)
        }
    });
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (right - left);
    let py = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top);
    let grid = [225, 225, 225];
    let ink = [40, 40, 40];
    c.y_grid(nice_ticks(y0, y1, 5), (left, right), &py);
    let x_ticks: Vec<(f64, String)> = if chart.x_ticks.is_empty() {
        nice_ticks(x0, x1, 6)
            .into_iter()
            .map(|t| (t, tick_label(t)))
            .collect()
    } else {
        chart.x_ticks.clone()
    };
    for (t, text) in &x_ticks {
        c.line((px(*t), top), (px(*t), bottom), 1.0, grid);
        c.text(text, px(*t) as f32, (bottom + 20.0) as f32, 14.0, 0.5, ink);
    }
    c.line((left, bottom), (right, bottom), 1.5, ink);
    c.line((left, top), (left, bottom), 1.5, ink);
    c.text(&chart.title, (w / 2.0) as f32, 30.0, 20.0, 0.5, ink);
    c.text(
        &chart.x_label,
        ((left + right) / 2.0) as f32,
        (h - 15.0) as f32,
        16.0,
        0.5,
        ink,
    );
    c.text_vertical(
        &chart.y_label,
        22.0,
        ((top + bottom) / 2.0) as f32,
        16.0,
        ink,
    );
    for (i, s) in chart.series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| finite(p.0) && finite(p.1))
            .map(|&(x, y)| (px(x), py(y.clamp(y0, y1))))
            .collect();
        for pair in pts.windows(2) {
            c.line(pair[0], pair[1], 2.5, s.color);
        }
        for &p in &pts {
            c.dot(p.0, p.1, 4.0, s.color);
        }
        let ly = top + 10.0 + i as f64 * 24.0;
        c.line((right + 15.0, ly), (right + 40.0, ly), 3.0, s.color);
        c.text(
            &s.name,
            (right + 48.0) as f32,
            (ly + 5.0) as f32,
            14.0,
            0.0,
            ink,
        );
    }
    Ok(c.img)
}

fn canvas(width: u32, height: u32) -> Result<Canvas> {
    let font = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|e| TriscopeError::Compute(format!("font: {e}")))?;
    Ok(Canvas {
        img: RgbImage::from_pixel(width, height, Rgb([255, 255, 255])),
        font,
    })
}

impl Canvas {
    /// Horizontal grid lines at `ticks` between `left` and `right`, labelled left of the axis.
    fn y_grid(&mut self, ticks: Vec<f64>, (left, right): (f64, f64), py: &dyn Fn(f64) -> f64) {
        for t in ticks {
            self.line((left, py(t)), (right, py(t)), 1.0, [225, 225, 225]);
            self.text(
                &tick_label(t),
                (left - 8.0) as f32,
                (py(t) + 5.0) as f32,
                14.0,
                1.0,
                [40, 40, 40],
            );
        }
    }

    fn fill_rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, color: [u8; 3]) {
        for y in y0.round() as i64..y1.round() as i64 {
            for x in x0.round() as i64..x1.round() as i64 {
                self.blend(x, y, color, 1.0);
            }
        }
    }
}

/// A confusion matrix as a grid of cells shaded by the row-normalised share (recall per true
/// class), with the counts written in: rows are true classes, columns predictions.
pub fn render_confusion_matrix(
    title: &str,
    class_names: &[String],
    confusion: &[Vec<usize>],
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    let mut c = canvas(width, height)?;
    let n = class_names.len().max(1);
    let ink = [40, 40, 40];
    let (w, h) = (width as f64, height as f64);
    let (left, top, right, bottom) = (120.0, 70.0, w - 20.0, h - 60.0);
    let cell = ((right - left) / n as f64).min((bottom - top) / n as f64);
    c.text(title, (w / 2.0) as f32, 30.0, 20.0, 0.5, ink);
    for (r, row) in confusion.iter().enumerate().take(n) {
        let total: usize = row.iter().sum();
        for (col, &count) in row.iter().enumerate().take(n) {
            let share = if total > 0 {
                count as f64 / total as f64
            } else {
                0.0
            };
            // White to Okabe-Ito blue.
            let blue = PALETTE[0];
            let color = [0, 1, 2].map(|k| {
                (255.0 + (blue[k] as f64 - 255.0) * share)
                    .round()
                    .clamp(0.0, 255.0) as u8
            });
            let (x0, y0) = (left + col as f64 * cell, top + r as f64 * cell);
            c.fill_rect(x0 + 1.0, y0 + 1.0, x0 + cell - 1.0, y0 + cell - 1.0, color);
            let text_color = if share > 0.5 { [255, 255, 255] } else { ink };
            c.text(
                &count.to_string(),
                (x0 + cell / 2.0) as f32,
                (y0 + cell / 2.0 + 5.0) as f32,
                14.0,
                0.5,
                text_color,
            );
        }
    }
    for (i, name) in class_names.iter().enumerate() {
        let centre = i as f64 * cell + cell / 2.0;
        c.text(
            name,
            (left - 8.0) as f32,
            (top + centre + 5.0) as f32,
            14.0,
            1.0,
            ink,
        );
        c.text(
            name,
            (left + centre) as f32,
            (top + n as f64 * cell + 20.0) as f32,
            14.0,
            0.5,
            ink,
        );
    }
    c.text(
        "predicted",
        (left + n as f64 * cell / 2.0) as f32,
        (top + n as f64 * cell + 45.0) as f32,
        16.0,
        0.5,
        ink,
    );
    c.text_vertical(
        "true",
        20.0,
        (top + n as f64 * cell / 2.0) as f32,
        16.0,
        ink,
    );
    Ok(c.img)
}

/// Grouped vertical bars: one group per category, one bar per series (`values[series][cat]`),
/// y from 0 to `y_max`. NaN values leave a gap.
pub fn render_bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    y_max: f64,
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    let mut c = canvas(width, height)?;
    let ink = [40, 40, 40];
    let (w, h) = (width as f64, height as f64);
    let (left, right, top, bottom) = (80.0, w - 170.0, 50.0, h - 60.0);
    let py = |y: f64| bottom - (y / y_max).clamp(0.0, 1.0) * (bottom - top);
    c.y_grid(nice_ticks(0.0, y_max, 5), (left, right), &py);
    let groups = categories.len().max(1) as f64;
    let group_w = (right - left) / groups;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (g, name) in categories.iter().enumerate() {
        let gx = left + g as f64 * group_w + group_w * 0.1;
        for (k, (_, values)) in series.iter().enumerate() {
            let v = values.get(g).copied().unwrap_or(f64::NAN);
            if v.is_finite() {
                let x0 = gx + k as f64 * bar_w;
                c.fill_rect(
                    x0,
                    py(v),
                    x0 + bar_w - 1.0,
                    bottom,
                    PALETTE[k % PALETTE.len()],
                );
            }
        }
        c.text(
            name,
            (gx + group_w * 0.4) as f32,
            (bottom + 20.0) as f32,
            14.0,
            0.5,
            ink,
        );
    }
    c.line((left, bottom), (right, bottom), 1.5, ink);
    c.line((left, top), (left, bottom), 1.5, ink);
    c.text(title, (w / 2.0) as f32, 30.0, 20.0, 0.5, ink);
    c.text_vertical(y_label, 22.0, ((top + bottom) / 2.0) as f32, 16.0, ink);
    for (k, (name, _)) in series.iter().enumerate() {
        let ly = top + 10.0 + k as f64 * 24.0;
        c.fill_rect(
            right + 15.0,
            ly - 7.0,
            right + 40.0,
            ly + 7.0,
            PALETTE[k % PALETTE.len()],
        );
        c.text(
            name,
            (right + 48.0) as f32,
            (ly + 5.0) as f32,
            14.0,
            0.0,
            ink,
        );
    }
    Ok(c.img)
}

/// A square RGB8 tile: interleaved pixels and its side.
pub type Tile = (Vec<u8>, usize);

/// A grid of square RGB tiles (upscaled to `tile` pixels) with a title, column headers and a
/// label per row.
pub fn render_image_grid(
    title: &str,
    columns: &[String],
    rows: &[(String, Vec<Tile>)],
    tile: u32,
) -> Result<RgbImage> {
    // The label column is as wide as the longest row label.
    let measure = canvas(1, 1)?;
    let widest = rows
        .iter()
        .map(|(name, _)| measure.text_width(name, 14.0))
        .fold(0.0f32, f32::max);
    let (left, top, gap) = ((widest.ceil() as u32 + 24).max(80), 70u32, 8u32);
    let ncol = columns.len().max(1) as u32;
    let width = left + ncol * (tile + gap) + gap;
    let height = top + rows.len() as u32 * (tile + gap) + gap;
    let mut c = canvas(width, height)?;
    let ink = [40, 40, 40];
    c.text(title, width as f32 / 2.0, 28.0, 20.0, 0.5, ink);
    for (k, name) in columns.iter().enumerate() {
        let x = left + k as u32 * (tile + gap) + tile / 2;
        c.text(name, x as f32, (top - 12) as f32, 15.0, 0.5, ink);
    }
    for (r, (name, tiles)) in rows.iter().enumerate() {
        let y = top + r as u32 * (tile + gap);
        c.text(
            name,
            (left - 10) as f32,
            (y + tile / 2 + 5) as f32,
            14.0,
            1.0,
            ink,
        );
        for (k, (rgb, side)) in tiles.iter().enumerate() {
            let side = *side as u32;
            let Some(src) = RgbImage::from_raw(side, side, rgb.clone()) else {
                return Err(TriscopeError::InvalidArgument(format!(
                    "grid tile {r},{k}: {} bytes is not a {side}x{side} RGB image",
                    rgb.len()
                )));
            };
            let big =
                image::imageops::resize(&src, tile, tile, image::imageops::FilterType::Triangle);
            image::imageops::overlay(
                &mut c.img,
                &big,
                (left + k as u32 * (tile + gap)) as i64,
                y as i64,
            );
        }
    }
    Ok(c.img)
}

/// A slide for a projector: what one view of the app shows, laid out large on white.
#[derive(Debug, Clone, Serialize)]
pub struct Slide {
    /// The view it came from (`explanation`, `attack`, `sweep`, `compare`).
    pub view: String,
    pub title: String,
    /// The model and the image.
    pub subtitle: String,
    /// Side by side, each scaled to fit its share of the width.
    #[serde(skip)]
    pub panels: Vec<SlidePanel>,
    /// The panels' captions, in order (the JSON's record of what the PNG shows).
    pub captions: Vec<String>,
    /// The numbers under the panels: name and value, in order.
    pub numbers: Vec<(String, String)>,
}

/// One picture of a slide: interleaved RGB8 and its caption.
#[derive(Debug, Clone)]
pub struct SlidePanel {
    pub caption: String,
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

impl Slide {
    pub fn new(view: &str, title: String, subtitle: String) -> Self {
        Self {
            view: view.into(),
            title,
            subtitle,
            panels: Vec::new(),
            captions: Vec::new(),
            numbers: Vec::new(),
        }
    }

    pub fn panel(&mut self, caption: impl Into<String>, rgb: Vec<u8>, width: usize, height: usize) {
        let caption = caption.into();
        self.captions.push(caption.clone());
        self.panels.push(SlidePanel {
            caption,
            rgb,
            width,
            height,
        });
    }

    pub fn number(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.numbers.push((name.into(), value.into()));
    }
}

/// The slide at `width` x `height` (1920 x 1080 for a projector): title, subtitle, the panels
/// in a row with their captions, then the numbers in two columns; type sized for the back row.
pub fn render_slide(slide: &Slide, width: u32, height: u32) -> Result<RgbImage> {
    let mut c = canvas(width, height)?;
    let (w, h) = (width as f32, height as f32);
    let ink = [20, 20, 20];
    let grey = [90, 90, 90];
    let margin = w * 0.04;
    let title_size = h * 0.05;
    c.text(
        &slide.title,
        margin,
        margin + title_size,
        title_size,
        0.0,
        ink,
    );
    let sub_size = h * 0.027;
    let sub_y = margin + title_size + sub_size * 1.6;
    c.text(&slide.subtitle, margin, sub_y, sub_size, 0.0, grey);
    // The panels' band with up to three lines of caption each, then the numbers.
    let caption_size = h * 0.024;
    let caption_lines = 3.0;
    let lines_per_column = slide.numbers.len().div_ceil(2).max(1) as f32;
    let number_size = (h * 0.028).min(h * 0.3 / lines_per_column / 1.5);
    let numbers_h = lines_per_column * number_size * 1.5;
    let top = sub_y + sub_size * 1.5;
    let band_h =
        (h - top - margin - numbers_h - caption_size * 1.3 * caption_lines - h * 0.03).max(h * 0.2);
    let n = slide.panels.len().max(1) as f32;
    let gap = w * 0.02;
    let cell_w = (w - 2.0 * margin - (n - 1.0) * gap) / n;
    let mut bottom = top;
    for (k, p) in slide.panels.iter().enumerate() {
        let Some(src) = RgbImage::from_raw(p.width as u32, p.height as u32, p.rgb.clone()) else {
            return Err(TriscopeError::InvalidArgument(format!(
                "slide panel '{}': {} bytes is not a {}x{} RGB image",
                p.caption,
                p.rgb.len(),
                p.width,
                p.height
            )));
        };
        let scale = (cell_w / p.width as f32).min(band_h / p.height as f32);
        let (pw, ph) = (
            (p.width as f32 * scale).round().max(1.0) as u32,
            (p.height as f32 * scale).round().max(1.0) as u32,
        );
        let big = image::imageops::resize(&src, pw, ph, image::imageops::FilterType::Triangle);
        let cell_x = margin + k as f32 * (cell_w + gap);
        let x = cell_x + (cell_w - pw as f32) / 2.0;
        image::imageops::overlay(&mut c.img, &big, x.round() as i64, top.round() as i64);
        let mut y = top + ph as f32 + caption_size * 1.4;
        for line in c
            .wrap(&p.caption, caption_size, cell_w)
            .into_iter()
            .take(caption_lines as usize)
        {
            c.text(&line, cell_x + cell_w / 2.0, y, caption_size, 0.5, ink);
            y += caption_size * 1.3;
        }
        bottom = bottom.max(y);
    }
    let y0 = bottom + h * 0.03 + number_size * 0.5;
    let col_w = (w - 2.0 * margin) / 2.0;
    for (i, (name, value)) in slide.numbers.iter().enumerate() {
        let (col, row) = (
            (i as f32 / lines_per_column).floor(),
            i as f32 % lines_per_column,
        );
        let x = margin + col * col_w;
        let y = y0 + row * number_size * 1.5;
        c.text(&format!("{name}:"), x, y, number_size, 0.0, grey);
        let indent = c.text_width(&format!("{name}: "), number_size);
        c.text(value, x + indent, y, number_size, 0.0, ink);
    }
    c.text(
        "Triscope: a teaching and research workbench, not a diagnostic device",
        w - margin,
        h - margin * 0.5,
        h * 0.018,
        1.0,
        grey,
    );
    Ok(c.img)
}

/// Write the slide as `<stem>.png` (1920 x 1080) and its numbers as `<stem>.json` into
/// `dir` (created); the two paths.
pub fn write_slide(
    dir: &std::path::Path,
    stem: &str,
    slide: &Slide,
) -> Result<[std::path::PathBuf; 2]> {
    std::fs::create_dir_all(dir).map_err(|source| TriscopeError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let png = dir.join(format!("{stem}.png"));
    write_png(&png, &render_slide(slide, 1920, 1080)?)?;
    let json = dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(slide)
        .map_err(|e| TriscopeError::Compute(format!("writing the slide as JSON: {e}")))?;
    crate::util::fsio::write_atomic(&json, text.as_bytes())?;
    Ok([png, json])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_lay_out_panels_and_numbers_and_refuse_a_bad_panel() {
        let mut slide = Slide::new("explanation", "A title".into(), "model · image".into());
        slide.panel("a red square", [255, 0, 0].repeat(16 * 16), 16, 16);
        slide.panel("a tall blue one", [0, 0, 255].repeat(8 * 32), 8, 32);
        slide.number("accuracy", "0.75");
        let img = render_slide(&slide, 960, 540).unwrap();
        assert_eq!((img.width(), img.height()), (960, 540));
        let count = |rgb: [u8; 3]| img.pixels().filter(|p| p.0 == rgb).count();
        // Each panel scaled up to its band: many pixels of each colour.
        assert!(count([255, 0, 0]) > 10_000 && count([0, 0, 255]) > 5_000);
        let json = serde_json::to_value(&slide).unwrap();
        assert_eq!(json["captions"][1], "a tall blue one");
        assert_eq!(json["numbers"][0][1], "0.75");
        assert!(json.get("panels").is_none(), "pixels stay out of the JSON");
        slide.panel("broken", vec![0; 10], 4, 4);
        let e = render_slide(&slide, 960, 540).unwrap_err().to_string();
        assert!(e.contains("broken") && e.contains("4x4"), "{e}");
        let c = canvas(10, 10).unwrap();
        let lines = c.wrap("one two three four five six", 20.0, 120.0);
        assert!(lines.len() > 1 && lines.iter().all(|l| c.text_width(l, 20.0) <= 120.0));
        assert_eq!(lines.join(" "), "one two three four five six");
    }

    #[test]
    fn renders_lines_in_their_colours() {
        let chart = LineChart {
            title: "accuracy vs eps".into(),
            x_label: "eps (x/255)".into(),
            y_label: "accuracy".into(),
            series: vec![Series {
                name: "PGD-10".into(),
                points: vec![(0.0, 0.9), (4.0, 0.5), (8.0, 0.1)],
                color: PALETTE[1],
            }],
            y_range: Some((0.0, 1.0)),
            x_ticks: Vec::new(),
        };
        let img = render_line_chart(&chart, 640, 400).unwrap();
        let orange = img.pixels().filter(|p| p.0 == PALETTE[1]).count();
        assert!(orange > 200, "line pixels: {orange}");
        let dark = img
            .pixels()
            .filter(|p| p.0[0] < 100 && p.0[1] < 100 && p.0[2] < 100)
            .count();
        assert!(dark > 300, "text and axes: {dark}");
    }

    #[test]
    fn ticks_are_round() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!((t[1] - 0.2).abs() < 1e-12 && (t[5] - 1.0).abs() < 1e-12);
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(-0.0), "0");
        assert_eq!(tick_label(-1e-17), "0");
    }

    #[test]
    fn confusion_and_bars_draw_their_data() {
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let img =
            render_confusion_matrix("cm", &names, &[vec![9, 1], vec![0, 10]], 400, 360).unwrap();
        // Two fully blue-ish diagonal cells (shares 0.9 and 1.0) and a white one.
        let blue = img.pixels().filter(|p| p.0 == PALETTE[0]).count();
        assert!(blue > 1000, "{blue}");
        let bars = render_bar_chart(
            "recall",
            "recall",
            &names,
            &[
                ("clean".into(), vec![0.5, 1.0]),
                ("pgd".into(), vec![0.25, f64::NAN]),
            ],
            1.0,
            600,
            400,
        )
        .unwrap();
        let first = bars.pixels().filter(|p| p.0 == PALETTE[0]).count();
        let second = bars.pixels().filter(|p| p.0 == PALETTE[1]).count();
        // Series 0 has heights 0.5 + 1.0, series 1 only 0.25 (its NaN leaves a gap).
        assert!(first > 4 * second, "{first} vs {second}");
        assert!(second > 100);
    }
}
