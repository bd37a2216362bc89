//! Input pipeline: decode an image file (PNG, JPEG, BMP, TIFF, or DICOM through
//! [`crate::io::dicom`]), convert it to the model's channel count and resize it to the model's
//! resolution, with pixel values in [0, 1].
//!
//! The resize reproduces torchvision's `Resize(R, antialias=True)` + `CenterCrop(R)` (PIL's
//! antialiased bilinear filter), so pixels fed to the model match a PyTorch pipeline.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::io::dicom::{DicomInfo, Window, decode_dicom, has_dicom_extension, has_dicom_magic};

/// File extensions the loaders list in folders (lower case; DICOM included).
pub const IMAGE_EXTENSIONS: [&str; 8] =
    ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom"];

/// True when the extension is one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

pub use crate::io::limits::{
    MAX_DECODE_BYTES, MAX_EXPANSION, MAX_IMAGE_SIDE, PLAUSIBLE_DECODE_BYTES,
};

/// How the image is brought to the square model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Resize the shorter side to the resolution, keep the aspect ratio, crop the centre.
    #[default]
    ShorterSideCrop,
    /// Resize both sides to the resolution (distorts the aspect ratio, keeps everything).
    Stretch,
}

impl crate::util::choice::Choice for ResizeMode {
    const KIND: &'static str = "resize mode";
    const ALL: &'static [Self] = &[Self::ShorterSideCrop, Self::Stretch];
    fn name(self) -> &'static str {
        match self {
            Self::ShorterSideCrop => "crop",
            Self::Stretch => "stretch",
        }
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::ShorterSideCrop => &["shorter-side-crop"],
            Self::Stretch => &["resize"],
        }
    }
}

impl std::str::FromStr for ResizeMode {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::util::choice::parse(s)
    }
}

/// A planar float image: `data[c * height * width + y * width + x]`, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct PixelImage {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl PixelImage {
    /// Interleaved RGB8 for display and overlays (grey is replicated).
    pub fn to_rgb8(&self) -> Vec<u8> {
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(plane * 3);
        for i in 0..plane {
            for c in 0..3 {
                let src = if self.channels == 1 { 0 } else { c };
                let v = self.data[src * plane + i];
                out.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        out
    }

    /// One plane per channel.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }
}

/// An image ready for the model, with what the file was.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub path: PathBuf,
    /// Size of the decoded file.
    pub source_width: u32,
    pub source_height: u32,
    /// e.g. "L8", "Rgb8", "Rgba16".
    pub source_color: String,
    /// Model input, `[channels, resolution, resolution]`.
    pub pixels: PixelImage,
    /// The decoded file has no colour (a grey format, or R = G = B up to noise): see
    /// [`looks_grey`].
    pub grey: bool,
    /// For a DICOM file: its geometry, grey-level transforms and the window applied.
    pub dicom: Option<DicomInfo>,
}

/// How to decode: the window for DICOM files (`None`: the file's, else min-max).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeOptions {
    pub dicom_window: Option<Window>,
}

/// A decoded file: the image, and what a DICOM file said about it.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub image: DynamicImage,
    pub dicom: Option<DicomInfo>,
}

/// Decode `path` and prepare it for a model with `channels` and `resolution`.
pub fn load_image(
    path: &Path,
    channels: usize,
    resolution: usize,
    mode: ResizeMode,
) -> Result<LoadedImage> {
    load_image_with(path, channels, resolution, mode, &DecodeOptions::default())
}

/// [`load_image`] with decoding options (a DICOM window).
pub fn load_image_with(
    path: &Path,
    channels: usize,
    resolution: usize,
    mode: ResizeMode,
    options: &DecodeOptions,
) -> Result<LoadedImage> {
    let Decoded { image, dicom } = decode_with(path, options)?;
    let (source_width, source_height) = (image.width(), image.height());
    let source_color = format!("{:?}", image.color());
    let grey = looks_grey(&image);
    let pixels = prepare_file(path, image, channels, resolution, mode)?;
    Ok(LoadedImage {
        grey,
        path: path.to_path_buf(),
        source_width,
        source_height,
        source_color,
        pixels,
        dicom,
    })
}

/// Only the model input of a file (no description of the source): the dataset loaders' path,
/// run for every sample of every epoch.
pub fn load_pixels(
    path: &Path,
    channels: usize,
    resolution: usize,
    mode: ResizeMode,
) -> Result<PixelImage> {
    let image = decode_with(path, &DecodeOptions::default())?.image;
    prepare_file(path, image, channels, resolution, mode)
}

/// [`prepare`], naming the file in its error.
fn prepare_file(
    path: &Path,
    image: DynamicImage,
    channels: usize,
    resolution: usize,
    mode: ResizeMode,
) -> Result<PixelImage> {
    prepare(image, channels, resolution, mode).map_err(|reason| TriscopeError::BadImage {
        path: path.to_path_buf(),
        reason,
    })
}

/// True when an image carries no colour: a grey pixel format, or colour channels that differ
/// by less than 1% of full scale on average (a radiograph saved as RGB, JPEG chroma noise).
pub fn looks_grey(image: &DynamicImage) -> bool {
    if !image.color().has_color() {
        return true;
    }
    // Mean over pixels of (max - min over the channels), in [0, 1].
    fn spread<P: image::Pixel>(img: &image::ImageBuffer<P, Vec<P::Subpixel>>, full: f64) -> f64
    where
        P::Subpixel: Into<f64>,
    {
        let n = (img.width() as u64 * img.height() as u64).max(1) as f64;
        let total: f64 = img
            .pixels()
            .map(|p| {
                let c = p.channels();
                let rgb = [c[0].into(), c[1].into(), c[2].into()];
                let hi = rgb.iter().copied().fold(f64::MIN, f64::max);
                let lo = rgb.iter().copied().fold(f64::MAX, f64::min);
                hi - lo
            })
            .sum();
        total / n / full
    }
    let mean_spread = match image {
        DynamicImage::ImageRgb8(i) => spread(i, 255.0),
        DynamicImage::ImageRgba8(i) => spread(i, 255.0),
        DynamicImage::ImageRgb16(i) => spread(i, 65535.0),
        DynamicImage::ImageRgba16(i) => spread(i, 65535.0),
        DynamicImage::ImageRgb32F(i) => spread(i, 1.0),
        DynamicImage::ImageRgba32F(i) => spread(i, 1.0),
        other => spread(&other.to_rgb16(), 65535.0),
    };
    mean_spread < 0.01
}

/// Decode with size and memory caps, naming the file in every error.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    decode_with(path, &DecodeOptions::default()).map(|d| d.image)
}

/// [`decode`] with options; DICOM files (by extension or by their `DICM` marker) go through
/// [`crate::io::dicom`], everything else through the `image` crate.
pub fn decode_with(path: &Path, options: &DecodeOptions) -> Result<Decoded> {
    let meta = std::fs::metadata(path).map_err(|source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(TriscopeError::BadImage {
            path: path.to_path_buf(),
            reason: "it is a directory".into(),
        });
    }
    if meta.len() == 0 {
        return Err(TriscopeError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    if has_dicom_extension(path) || has_dicom_magic(&read_head(path, 132)?) {
        let d = decode_dicom(path, options.dicom_window)?;
        return Ok(Decoded {
            image: d.image,
            dicom: Some(d.info),
        });
    }
    let image = decode_checked(meta.len(), || {
        let file = std::fs::File::open(path).map_err(Refusal::Io)?;
        Ok(ImageReader::new(std::io::BufReader::new(file)))
    })
    .map_err(|r| r.into_error(path))?;
    Ok(Decoded { image, dicom: None })
}

/// [`decode_with`] on bytes in memory (the fuzz target and the corpus replay): the same
/// caps and checks; errors say what is wrong without a file name.
pub fn decode_bytes(bytes: &[u8], options: &DecodeOptions) -> std::result::Result<Decoded, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    if has_dicom_magic(bytes) {
        let d = crate::io::dicom::decode_dicom_bytes(bytes, options.dicom_window)?;
        return Ok(Decoded {
            image: d.image,
            dicom: Some(d.info),
        });
    }
    let image = decode_checked(bytes.len() as u64, || {
        Ok(ImageReader::new(std::io::Cursor::new(bytes)))
    })
    .map_err(|r| r.into_error(Path::new("<bytes>")).to_string())?;
    Ok(Decoded { image, dicom: None })
}

/// Why the `image` crate path refused a file.
enum Refusal {
    Io(std::io::Error),
    TooLarge(u32, u32),
    Bad(String),
}

impl Refusal {
    fn into_error(self, path: &Path) -> TriscopeError {
        let path = path.to_path_buf();
        match self {
            Self::Io(source) => TriscopeError::Io { path, source },
            Self::TooLarge(width, height) => TriscopeError::ImageTooLarge {
                path,
                width,
                height,
                max_side: MAX_IMAGE_SIDE,
            },
            Self::Bad(reason) => TriscopeError::BadImage { path, reason },
        }
    }
}

/// Guess the format, read the declared size, refuse it over the caps (and a JPEG that is not
/// whole), then decode with the memory limit set. `open` gives a fresh reader at the start of
/// the data (called two or three times).
fn decode_checked<R: std::io::BufRead + std::io::Seek>(
    file_len: u64,
    open: impl Fn() -> std::result::Result<ImageReader<R>, Refusal>,
) -> std::result::Result<DynamicImage, Refusal> {
    // The declared size is read with the memory cap only, so that a side over the limit is
    // reported with its size; the decode then runs with every limit.
    let limited = |sides: bool| -> std::result::Result<ImageReader<R>, Refusal> {
        let mut reader = open()?
            .with_guessed_format()
            .map_err(|e| Refusal::Bad(e.to_string()))?;
        if reader.format().is_none() {
            return Err(Refusal::Bad(
                "unrecognised format (expected PNG, JPEG, BMP, TIFF or DICOM)".into(),
            ));
        }
        let mut limits = Limits::default();
        if sides {
            limits.max_image_width = Some(MAX_IMAGE_SIDE);
            limits.max_image_height = Some(MAX_IMAGE_SIDE);
        }
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        Ok(reader)
    };
    let reader = limited(false)?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        crate::io::jpeg::check_jpeg_complete(open()?.into_inner()).map_err(Refusal::Bad)?;
    }
    let decoder = reader
        .into_decoder()
        .map_err(|e| Refusal::Bad(describe_image_error(&e)))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let declared = image::ImageDecoder::total_bytes(&decoder);
    drop(decoder);
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(Refusal::TooLarge(w, h));
    }
    if w == 0 || h == 0 {
        return Err(Refusal::Bad(format!("it declares an empty size {w}x{h}")));
    }
    if declared > MAX_DECODE_BYTES {
        return Err(Refusal::Bad(format!(
            "it declares {w}x{h} pixels and would need {} MiB to decode, more than the {} MiB \
             limit",
            declared >> 20,
            MAX_DECODE_BYTES >> 20
        )));
    }
    if declared > PLAUSIBLE_DECODE_BYTES && declared / file_len.max(1) > MAX_EXPANSION {
        return Err(Refusal::Bad(format!(
            "it declares {w}x{h} pixels ({} MiB decoded) in a file of {file_len} bytes, more \
             than {MAX_EXPANSION} times its size: a corrupt or hostile header",
            declared >> 20
        )));
    }
    // into_dimensions consumed the reader; open it again to decode.
    limited(true)?
        .decode()
        .map_err(|e| Refusal::Bad(describe_image_error(&e)))
}

/// The first `n` bytes of a file (fewer if it is shorter).
fn read_head(path: &Path, n: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(n)
        .read_to_end(&mut head)
        .map_err(io)?;
    Ok(head)
}

fn describe_image_error(e: &image::ImageError) -> String {
    match e {
        image::ImageError::Limits(l) => format!(
            "it would need more than {} MiB to decode ({l})",
            MAX_DECODE_BYTES >> 20
        ),
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file is truncated (unexpected end of data)".into()
        }
        other => other.to_string().trim().to_string(),
    }
}

/// Convert a decoded image to the model's channels and resolution.
pub fn prepare(
    img: DynamicImage,
    channels: usize,
    resolution: usize,
    mode: ResizeMode,
) -> std::result::Result<PixelImage, String> {
    if channels != 1 && channels != 3 {
        return Err(format!("models take 1 or 3 channels, not {channels}"));
    }
    if resolution == 0 {
        return Err("resolution must be positive".into());
    }
    // Huge images: average down on the native pixel type first, so that the float copy
    // stays small (a 20000x20000 X-ray would otherwise need gigabytes).
    let shorter = img.width().min(img.height()) as usize;
    let img = if shorter > resolution * 4 {
        let factor = (shorter / (resolution * 2)).max(1) as u32;
        img.thumbnail_exact(
            (img.width() / factor).max(1),
            (img.height() / factor).max(1),
        )
    } else {
        img
    };
    let planar = to_planar(&img, channels)?;
    let g = crop_geometry(planar.width, planar.height, resolution, mode);
    // Only the centre crop of the resized image is computed: a 40000x2 strip would otherwise
    // be resized to millions of columns first.
    Ok(resize_window(
        &planar,
        (g.resized_height, g.resized_width),
        (g.top, g.left),
        (resolution, resolution),
    ))
}

/// Where the square model input comes from: the image resized to `resized_width` x
/// `resized_height`, then the `resolution`-pixel square at (`left`, `top`) kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropGeometry {
    pub resized_width: usize,
    pub resized_height: usize,
    pub left: usize,
    pub top: usize,
}

impl CropGeometry {
    /// A point of the `width` x `height` source image (pixel-edge coordinates) in model-input
    /// pixels; outside `0..resolution` when the crop cut it off.
    pub fn to_input(&self, (x, y): (f64, f64), (width, height): (u32, u32)) -> (f64, f64) {
        (
            x * self.resized_width as f64 / f64::from(width.max(1)) - self.left as f64,
            y * self.resized_height as f64 / f64::from(height.max(1)) - self.top as f64,
        )
    }
}

/// The resize and crop [`prepare`] applies to a `width` x `height` image (torchvision's
/// `Resize(R)` + `CenterCrop(R)`, or a plain resize to R x R).
pub fn crop_geometry(
    width: usize,
    height: usize,
    resolution: usize,
    mode: ResizeMode,
) -> CropGeometry {
    let (h, w) = (height.max(1), width.max(1));
    let (new_h, new_w) = match mode {
        ResizeMode::Stretch => (resolution, resolution),
        ResizeMode::ShorterSideCrop => {
            // torchvision: the shorter side becomes R, the longer int(R * long / short).
            if h <= w {
                (
                    resolution,
                    ((resolution as f64 * w as f64 / h as f64) as usize).max(resolution),
                )
            } else {
                (
                    ((resolution as f64 * h as f64 / w as f64) as usize).max(resolution),
                    resolution,
                )
            }
        }
    };
    CropGeometry {
        resized_width: new_w,
        resized_height: new_h,
        top: round_half_even((new_h - resolution) as f64 / 2.0),
        left: round_half_even((new_w - resolution) as f64 / 2.0),
    }
}

fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let v = if (x - x.trunc()).abs() == 0.5 && r as i64 % 2 != 0 {
        r - 1.0
    } else {
        r
    };
    v.max(0.0) as usize
}

/// Planar f32 in [0, 1] with the requested channel count. Alpha is dropped (as PIL's
/// `convert("RGB")`); RGB to grey uses ITU-R 601 luma (as PIL's `convert("L")`).
fn to_planar(img: &DynamicImage, channels: usize) -> std::result::Result<PixelImage, String> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let source_is_gray = matches!(
        img.color(),
        image::ColorType::L8
            | image::ColorType::L16
            | image::ColorType::La8
            | image::ColorType::La16
    );
    let mut data = vec![0.0f32; n * channels];
    if source_is_gray {
        let gray = img.to_luma32f();
        for (i, p) in gray.pixels().enumerate() {
            for c in 0..channels {
                data[c * n + i] = p.0[0];
            }
        }
    } else {
        let rgb = img.to_rgb32f();
        for (i, p) in rgb.pixels().enumerate() {
            let [r, g, b] = p.0;
            if channels == 3 {
                data[i] = r;
                data[n + i] = g;
                data[2 * n + i] = b;
            } else {
                data[i] = r * 0.299 + g * 0.587 + b * 0.114;
            }
        }
    }
    if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
        return Err(format!("it holds a non-finite pixel value ({bad})"));
    }
    // Float TIFFs may hold values outside [0, 1].
    for v in &mut data {
        *v = v.clamp(0.0, 1.0);
    }
    Ok(PixelImage {
        channels,
        height: h,
        width: w,
        data,
    })
}

/// PIL's antialiased bilinear (triangle) resampling, separable, per channel.
pub fn resize_antialiased(src: &PixelImage, out_h: usize, out_w: usize) -> PixelImage {
    resize_window(src, (out_h, out_w), (0, 0), (out_h, out_w))
}

/// The `(h, w)` window at `(top, left)` of `src` resized to `(full_h, full_w)` with
/// [`resize_antialiased`]'s filter; the rest of the resized image is never computed.
fn resize_window(
    src: &PixelImage,
    (full_h, full_w): (usize, usize),
    (top, left): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> PixelImage {
    let hx = filter_coeffs(src.width, full_w, left..left + out_w);
    let hy = filter_coeffs(src.height, full_h, top..top + out_h);
    let mut data = Vec::with_capacity(src.channels * out_h * out_w);
    let mut tmp = vec![0.0f32; src.height * out_w];
    for c in 0..src.channels {
        let plane = src.plane(c);
        // Horizontal pass: [H, W] -> [H, out_w].
        for y in 0..src.height {
            let row = &plane[y * src.width..(y + 1) * src.width];
            for (x, (start, weights)) in hx.iter().enumerate() {
                let mut acc = 0.0f32;
                for (k, wgt) in weights.iter().enumerate() {
                    acc += row[start + k] * wgt;
                }
                tmp[y * out_w + x] = acc;
            }
        }
        // Vertical pass: [H, out_w] -> [out_h, out_w].
        for (start, weights) in &hy {
            for x in 0..out_w {
                let mut acc = 0.0f32;
                for (k, wgt) in weights.iter().enumerate() {
                    acc += tmp[(start + k) * out_w + x] * wgt;
                }
                data.push(acc);
            }
        }
    }
    PixelImage {
        channels: src.channels,
        height: out_h,
        width: out_w,
        data,
    }
}

/// For each output index: first input index and normalised triangle weights (PIL's
/// `precompute_coeffs` with support 1, widened by the scale when downsampling).
fn filter_coeffs(
    in_size: usize,
    out_size: usize,
    outputs: std::ops::Range<usize>,
) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // triangle support 1.0 times the scale
    outputs
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor() as usize).min(in_size);
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|j| {
                    let t = (j as f64 - center + 0.5) / filter_scale;
                    (1.0 - t.abs()).max(0.0)
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total > 0.0 {
                for w in &mut weights {
                    *w /= total;
                }
            }
            (xmin, weights.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_is_told_from_colour() {
        use image::{GrayImage, Rgb, RgbImage};
        assert!(looks_grey(&DynamicImage::ImageLuma8(GrayImage::new(4, 4))));
        // R = G = B, and a little chroma noise: grey; a skin-like colour: not.
        let equal = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8; 3].map(|v| v + y as u8)));
        assert!(looks_grey(&DynamicImage::ImageRgb8(equal)));
        let noisy = RgbImage::from_fn(8, 8, |x, _| Rgb([100, 101 + (x % 2) as u8, 100]));
        assert!(looks_grey(&DynamicImage::ImageRgb8(noisy)));
        let skin = RgbImage::from_fn(8, 8, |_, _| Rgb([200, 140, 130]));
        assert!(!looks_grey(&DynamicImage::ImageRgb8(skin.clone())));
        assert!(!looks_grey(&DynamicImage::ImageRgb16(
            DynamicImage::ImageRgb8(skin).to_rgb16()
        )));
    }

    #[test]
    fn resize_identity_and_constant() {
        let img = PixelImage {
            channels: 1,
            height: 3,
            width: 4,
            data: (0..12).map(|v| v as f32 / 11.0).collect(),
        };
        assert_eq!(resize_antialiased(&img, 3, 4).data, img.data);
        let flat = PixelImage {
            channels: 2,
            height: 5,
            width: 7,
            data: vec![0.25; 70],
        };
        let up = resize_antialiased(&flat, 13, 11);
        assert!(up.data.iter().all(|v| (v - 0.25).abs() < 1e-6));
        let down = resize_antialiased(&flat, 2, 3);
        assert!(down.data.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn shorter_side_crop_geometry() {
        let img = DynamicImage::new_rgb8(200, 150);
        let p = prepare(img, 3, 128, ResizeMode::ShorterSideCrop).unwrap();
        assert_eq!((p.channels, p.height, p.width), (3, 128, 128));
        let img = DynamicImage::new_luma8(1, 1);
        let p = prepare(img, 1, 224, ResizeMode::Stretch).unwrap();
        assert_eq!((p.channels, p.height, p.width), (1, 224, 224));
    }

    #[test]
    fn window_is_the_crop_of_the_full_resize() {
        let img = PixelImage {
            channels: 2,
            height: 7,
            width: 23,
            data: (0..2 * 7 * 23)
                .map(|v| ((v * 37) % 101) as f32 / 100.0)
                .collect(),
        };
        let full = resize_antialiased(&img, 5, 16);
        let win = resize_window(&img, (5, 16), (1, 6), (3, 4));
        for c in 0..2 {
            for y in 0..3 {
                for x in 0..4 {
                    let a = full.data[c * 80 + (y + 1) * 16 + x + 6];
                    let b = win.data[c * 12 + y * 4 + x];
                    assert_eq!(a, b, "c{c} y{y} x{x}");
                }
            }
        }
    }

    #[test]
    fn banker_rounding_like_python() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(21.0), 21);
    }
}
