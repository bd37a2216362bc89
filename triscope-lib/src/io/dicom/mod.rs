//! DICOM input: a Part 10 file to a display image, with the file's modality LUT (rescale
//! slope and intercept) and VOI window (or a caller's window, or min-max), MONOCHROME1
//! inverted. The data set is parsed by dicom-rs (`dicom-object`); the pixel data (native,
//! deflated, encapsulated uncompressed, RLE Lossless, JPEG through `jpeg`, JPEG Lossless
//! and JPEG 2000 through their modules) is decoded here, so that every offset, run and value
//! is checked (dicom-pixeldata's RLE decoder panics on corrupt fragments).
//!
//! Hardening: the whole file is read (at most [`MAX_DICOM_FILE_BYTES`]) and its element
//! structure walked before dicom-rs sees it, so that no declared length larger than the bytes
//! that follow it reaches the parser (which reserves and zero-fills a declared length before
//! reading: a 300-byte file could otherwise make it allocate 4 GiB), and sequences nest at
//! most [`MAX_SEQUENCE_DEPTH`] deep. Rows, columns, samples and bits are capped before any
//! pixel buffer is made.
//!
//! Privacy: nothing here reads patient, physician, institution or study identifiers; the
//! returned [`DicomInfo`] holds only the image geometry and the grey-level transforms, so no
//! such tag can reach a report, a log line or a JSON file.

use std::borrow::Cow;
use std::path::Path;

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::header::HasLength as _;
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{FileMetaTable, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::io::limits::{MAX_DECODE_BYTES, MAX_IMAGE_SIDE};

mod frames;
mod prescan;

use frames::*;
use prescan::*;

/// Largest DICOM file read (it is held in memory while it is parsed).
pub const MAX_DICOM_FILE_BYTES: u64 = 1 << 30;
/// Deepest nesting of sequences accepted.
pub const MAX_SEQUENCE_DEPTH: usize = 16;
/// File extensions taken as DICOM even without looking at the content.
pub const DICOM_EXTENSIONS: [&str; 2] = ["dcm", "dicom"];

/// A VOI window in modality units (after the rescale).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub center: f64,
    pub width: f64,
}

/// The VOI LUT function (0028,1056).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VoiFunction {
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

/// Where the applied window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowSource {
    /// Window Center / Window Width of the file (the first pair).
    File,
    /// The range of the image's values (the file has no usable window).
    MinMax,
    /// Given by the caller (the app's sliders).
    User,
}

/// What a DICOM file held, without any identifying attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DicomInfo {
    /// e.g. "Explicit VR Little Endian (1.2.840.10008.1.2.1)".
    pub transfer_syntax: String,
    /// MONOCHROME1 or MONOCHROME2 (grey); RGB, YBR_FULL, YBR_FULL_422, YBR_RCT, YBR_ICT or
    /// PALETTE COLOR (decoded to RGB).
    pub photometric: String,
    pub rows: u32,
    pub columns: u32,
    /// Frames in the file; the first one is read.
    pub frames: u32,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    /// Smallest and largest value of the frame in modality units.
    pub value_min: f64,
    pub value_max: f64,
    /// The file's first window, if it has a usable one.
    pub file_window: Option<Window>,
    pub voi_function: VoiFunction,
    /// The window applied (grey images only).
    pub window: Option<Window>,
    pub window_source: Option<WindowSource>,
}

impl DicomInfo {
    /// The window that shows the whole value range, as a LINEAR window.
    pub fn min_max_window(&self) -> Window {
        min_max_window(self.value_min, self.value_max)
    }

    /// The window the file asks for, or the min-max window.
    pub fn default_window(&self) -> Window {
        self.file_window.unwrap_or_else(|| self.min_max_window())
    }

    pub fn is_grey(&self) -> bool {
        self.photometric.starts_with("MONOCHROME")
    }
}

/// A decoded DICOM frame: 16-bit grey (windowed) or RGB, and what the file said.
#[derive(Debug, Clone)]
pub struct DicomImage {
    pub image: DynamicImage,
    pub info: DicomInfo,
}

/// True when `head` (the first 132 bytes or more) carries the DICOM Part 10 marker.
pub fn has_dicom_magic(head: &[u8]) -> bool {
    head.get(128..132) == Some(b"DICM") || head.starts_with(b"DICM")
}

/// True when the extension says DICOM.
pub fn has_dicom_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| DICOM_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Read and decode the first frame of a DICOM file. `window` overrides the file's window
/// (grey images); it must have a positive width.
pub fn decode_dicom(path: &Path, window: Option<Window>) -> Result<DicomImage> {
    let bad = |reason: String| TriscopeError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_DICOM_FILE_BYTES {
        return Err(bad(format!(
            "the DICOM file is {} MiB, over the {} MiB limit",
            meta.len() >> 20,
            MAX_DICOM_FILE_BYTES >> 20
        )));
    }
    let mut bytes = Vec::new();
    {
        use std::io::Read;
        // Read at most one byte past the limit, in case the file grew after the check.
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_DICOM_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    }
    if bytes.len() as u64 > MAX_DICOM_FILE_BYTES {
        return Err(bad(format!(
            "the DICOM file is over the {} MiB limit",
            MAX_DICOM_FILE_BYTES >> 20
        )));
    }
    decode_dicom_bytes(&bytes, window).map_err(bad)
}

/// [`decode_dicom`] on bytes in memory (the fuzz target's entry); errors say what is wrong
/// without the file name.
pub fn decode_dicom_bytes(
    bytes: &[u8],
    window: Option<Window>,
) -> std::result::Result<DicomImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if let Some(w) = window
        && !(w.width > 0.0 && w.width.is_finite() && w.center.is_finite())
    {
        return Err(format!(
            "window centre {} / width {} is not usable (the width must be positive)",
            w.center, w.width
        ));
    }
    let layout = scan(bytes)?;
    let ts = TransferSyntaxRegistry
        .get(&layout.transfer_syntax)
        .ok_or_else(|| {
            format!(
                "unknown transfer syntax UID {} (not in the DICOM standard)",
                layout.transfer_syntax
            )
        })?;
    let mut ts_name = format!("{} ({})", ts.name(), ts.uid());
    let deflated = layout.inflated.is_some();
    if !ts.can_decode_dataset() && !deflated {
        return Err(format!(
            "transfer syntax {ts_name} is not supported (its data set cannot be read)"
        ));
    }
    let pixel_encoding = if ts.is_codec_free() || ts.uid() == DEFLATED[0] {
        PixelEncoding::Native
    } else if ts.uid() == RLE_LOSSLESS {
        PixelEncoding::Rle
    } else if ts.uid() == ENCAPSULATED_UNCOMPRESSED {
        PixelEncoding::EncapsulatedUncompressed
    } else if JPEG_8BIT.contains(&ts.uid()) {
        PixelEncoding::Jpeg
    } else if JPEG_LOSSLESS.contains(&ts.uid()) {
        PixelEncoding::JpegLossless
    } else if JPEG_2000.contains(&ts.uid()) {
        PixelEncoding::Jpeg2000
    } else {
        return Err(format!(
            "compressed transfer syntax {ts_name} cannot be decoded: Triscope reads uncompressed \
             and deflated DICOM, RLE Lossless, JPEG Lossless, 8-bit JPEG (Baseline, Extended) \
             and JPEG 2000; convert the file first (e.g. `gdcmconv --raw IN OUT` or \
             `dcmdjpls IN OUT`)"
        ));
    };
    if layout.encoding != layout.declared {
        ts_name.push_str(if layout.encoding.explicit {
            "; its data set is in explicit VR, read as such"
        } else {
            "; its data set is in implicit VR, read as such"
        });
    }
    let meta = FileMetaTable::from_reader(&bytes[layout.meta_start..layout.meta_end])
        .map_err(|e| format!("not a readable DICOM file: {}", error_chain(&e)))?;
    // The structural pre-scan chose its encoding from the transfer syntax it found; the
    // parser must have read the same one, or the checks above were about other bytes.
    if meta.transfer_syntax() != layout.transfer_syntax {
        return Err(format!(
            "its file meta group names the transfer syntax ambiguously ({} and {})",
            layout.transfer_syntax,
            meta.transfer_syntax()
        ));
    }
    let read_ts = TransferSyntaxRegistry
        .get(layout.read_syntax())
        .ok_or("the native transfer syntaxes are missing from the registry")?;
    let obj = InMemDicomObject::read_dataset_with_ts(layout.data_set(bytes), read_ts)
        .map_err(|e| format!("not a readable DICOM file: {}", error_chain(&e)))?;
    let header = PixelHeader::read(&obj)?;
    let palette = if header.photometric == "PALETTE COLOR" {
        Some(Palette::read(&obj)?)
    } else {
        None
    };
    let frame_bytes = header.frame_bytes();
    // Native YBR_FULL_422 stores two luma and one pair of chroma samples per two pixels
    // (PS3.3 C.7.6.3.1.2): two thirds of a full frame.
    let subsampled = header.photometric == "YBR_FULL_422"
        && matches!(
            pixel_encoding,
            PixelEncoding::Native | PixelEncoding::EncapsulatedUncompressed
        );
    let held_bytes = if subsampled {
        if header.columns % 2 != 0 || header.planar {
            return Err(format!(
                "YBR_FULL_422 pixel data needs an even number of columns (it has {}) and \
                 interleaved samples",
                header.columns
            ));
        }
        frame_bytes / 3 * 2
    } else {
        frame_bytes
    };
    // The first frame's bytes, decoded here rather than by dicom-rs's codecs: its RLE decoder
    // indexes the segment table and its output without bounds checks and panics on corrupt
    // fragments (found by fuzzing).
    let pixels: Cow<'_, [u8]> = match (
        element(&obj, tags::PIXEL_DATA).map(|e| e.value()),
        pixel_encoding,
    ) {
        (None, _) => return Err("it has no pixel data (7FE0,0010)".into()),
        (Some(dicom_core::DicomValue::Primitive(p)), PixelEncoding::Native) => p.to_bytes(),
        (Some(dicom_core::DicomValue::PixelSequence(seq)), PixelEncoding::Rle) => {
            let fragment = seq
                .fragments()
                .first()
                .ok_or("the RLE pixel data holds no fragment")?;
            Cow::Owned(decode_rle_frame(fragment, &header)?)
        }
        (
            Some(dicom_core::DicomValue::PixelSequence(seq)),
            PixelEncoding::EncapsulatedUncompressed,
        ) => {
            // Sized by what the fragments hold, not by what the header claims; a short frame
            // is reported by the length check below.
            let held: usize = seq.fragments().iter().map(|f| f.len()).sum();
            let mut frame = Vec::with_capacity(held_bytes.min(held));
            for fragment in seq.fragments() {
                let room = held_bytes - frame.len();
                frame.extend_from_slice(&fragment[..fragment.len().min(room)]);
                if frame.len() == held_bytes {
                    break;
                }
            }
            Cow::Owned(frame)
        }
        (
            Some(dicom_core::DicomValue::PixelSequence(seq)),
            PixelEncoding::Jpeg | PixelEncoding::JpegLossless | PixelEncoding::Jpeg2000,
        ) => {
            // One frame may span several fragments (PS3.5 A.4); with several frames only the
            // common one-fragment-per-frame layout is read.
            let fragments = seq.fragments();
            let stream: Cow<'_, [u8]> = if header.frames == 1 {
                Cow::Owned(fragments.concat())
            } else if fragments.len() == header.frames as usize {
                Cow::Borrowed(&fragments[0])
            } else {
                return Err(format!(
                    "its {} JPEG frames lie in {} fragments: frames spanning several fragments \
                     are read only in single-frame files",
                    header.frames,
                    fragments.len()
                ));
            };
            Cow::Owned(match pixel_encoding {
                PixelEncoding::Jpeg => decode_jpeg_frame(&stream, &header)?,
                PixelEncoding::JpegLossless => decode_jpeg_lossless_frame(&stream, &header)?,
                _ => decode_jpeg2000_frame(&stream, &header)?,
            })
        }
        (Some(dicom_core::DicomValue::Sequence(_)), _) => {
            return Err("the pixel data (7FE0,0010) is a sequence".into());
        }
        (Some(dicom_core::DicomValue::Primitive(_)), _) => {
            return Err(format!(
                "the pixel data is not encapsulated although the transfer syntax {ts_name} \
                 requires it"
            ));
        }
        (Some(dicom_core::DicomValue::PixelSequence(_)), _) => {
            return Err(format!(
                "the pixel data is encapsulated although the transfer syntax {ts_name} is \
                 uncompressed"
            ));
        }
    };
    let frame = pixels.get(..held_bytes).ok_or_else(|| {
        format!(
            "the pixel data holds {} bytes, fewer than the {held_bytes} of one {}x{} frame",
            pixels.len(),
            header.columns,
            header.rows
        )
    })?;
    let expanded;
    let frame = if subsampled {
        expanded = expand_ybr_422(frame, &header);
        &expanded[..]
    } else {
        frame
    };
    // RLE segments are decoded into interleaved pixels whatever the file's planar
    // configuration says (PS3.5 G.2: the attribute does not apply to RLE's segments).
    let planar = header.planar && pixel_encoding == PixelEncoding::Native;
    // A JPEG decoder returns RGB whatever colour space the file compressed, and a JPEG 2000
    // decoder undoes its own colour transforms (YBR_RCT, YBR_ICT).
    let j2k_colour = matches!(header.photometric.as_str(), "YBR_RCT" | "YBR_ICT");
    let converted_by_codec = pixel_encoding == PixelEncoding::Jpeg
        || (pixel_encoding == PixelEncoding::Jpeg2000 && j2k_colour);
    if j2k_colour && pixel_encoding != PixelEncoding::Jpeg2000 {
        return Err(format!(
            "photometric interpretation {} is a JPEG 2000 colour transform, but the pixel data \
             is {ts_name}",
            header.photometric
        ));
    }
    if header.photometric == "YBR_FULL_422" && !(converted_by_codec || subsampled) {
        return Err(format!(
            "photometric interpretation YBR_FULL_422 (subsampled chroma) is not supported in \
             {ts_name} (uncompressed and JPEG only)"
        ));
    }
    let mut info = DicomInfo {
        transfer_syntax: ts_name,
        photometric: header.photometric.clone(),
        rows: header.rows,
        columns: header.columns,
        frames: header.frames,
        bits_allocated: header.bits_allocated,
        bits_stored: header.bits_stored,
        signed: header.signed,
        rescale_slope: header.slope,
        rescale_intercept: header.intercept,
        value_min: 0.0,
        value_max: 0.0,
        file_window: None,
        voi_function: header.voi_function,
        window: None,
        window_source: None,
    };
    // Values are read from the frame's bytes where they are used: no per-pixel copies beyond
    // the output image.
    let samples = frame_bytes / (usize::from(header.bits_allocated) / 8);
    let stored = |i: usize| header.stored(frame, i);
    let (w, h) = (header.columns, header.rows);
    if header.samples == 3 {
        // Colour: no modality or VOI transform applies; scale the stored range to [0, 1].
        let max = ((1u64 << header.bits_stored) - 1) as f64;
        let n = (w * h) as usize;
        let sample = |i: usize, c: usize| {
            let idx = if planar { c * n + i } else { i * 3 + c };
            stored(idx) as f64
        };
        let ybr = (header.photometric == "YBR_FULL" || subsampled) && !converted_by_codec;
        // YBR_FULL to RGB by PS3.3 C.7.6.3.1.2 (the inverse of its ITU-R BT.601 full-range
        // equations), chroma centred on half the stored range.
        let half = (1u64 << (header.bits_stored - 1)) as f64;
        let rgb = |i: usize| -> [f64; 3] {
            let v = [sample(i, 0), sample(i, 1), sample(i, 2)];
            if !ybr {
                return v;
            }
            let (y, cb, cr) = (v[0], v[1] - half, v[2] - half);
            // Rounded to stored values, as a converted file would hold them (and pydicom).
            [
                y + 1.402 * cr,
                y - 0.344_136 * cb - 0.714_136 * cr,
                y + 1.772 * cb,
            ]
            .map(|c| (c + 0.5).floor().clamp(0.0, max))
        };
        let (lo, hi) = (0..samples)
            .map(stored)
            .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        info.value_min = lo as f64;
        info.value_max = hi as f64;
        let img = ImageBuffer::from_fn(w, h, |x, y| {
            let v = rgb((y * w + x) as usize);
            Rgb(v.map(|c| ((c / max).clamp(0.0, 1.0) * 65535.0).round() as u16))
        });
        return Ok(DicomImage {
            image: DynamicImage::ImageRgb16(img),
            info,
        });
    }
    if let Some(palette) = palette {
        // Colour through the file's lookup tables; no modality or VOI transform applies.
        let (lo, hi) = (0..samples)
            .map(stored)
            .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        info.value_min = lo as f64;
        info.value_max = hi as f64;
        let img =
            ImageBuffer::from_fn(
                w,
                h,
                |x, y| Rgb(palette.rgb16(stored((y * w + x) as usize))),
            );
        return Ok(DicomImage {
            image: DynamicImage::ImageRgb16(img),
            info,
        });
    }
    let modality = |i: usize| stored(i) as f64 * header.slope + header.intercept;
    let (lo, hi) = (0..samples)
        .map(modality)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return Err("the rescaled pixel values are not finite".into());
    }
    info.value_min = lo;
    info.value_max = hi;
    info.file_window = header
        .window
        .filter(|w| window_is_valid(*w, header.voi_function));
    let (applied, source) = match (window, info.file_window) {
        (Some(w), _) => (w, WindowSource::User),
        (None, Some(w)) => (w, WindowSource::File),
        (None, None) => (min_max_window(lo, hi), WindowSource::MinMax),
    };
    // The min-max window is a LINEAR one by construction.
    let function = if source == WindowSource::MinMax {
        VoiFunction::Linear
    } else {
        header.voi_function
    };
    info.window = Some(applied);
    info.window_source = Some(source);
    let invert = header.photometric == "MONOCHROME1";
    let img = ImageBuffer::from_fn(w, h, |x, y| {
        let v = apply_window(modality((y * w + x) as usize), applied, function);
        let v = if invert { 1.0 - v } else { v };
        Luma([(v.clamp(0.0, 1.0) * 65535.0).round() as u16])
    });
    Ok(DicomImage {
        image: DynamicImage::ImageLuma16(img),
        info,
    })
}

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// Deflated Explicit VR Little Endian, and JPIP Referenced Deflate (its pixels are elsewhere).
const DEFLATED: [&str; 2] = ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"];
/// JPEG 2000 Image Compression, lossless only and lossy.
const JPEG_2000: [&str; 2] = ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"];
const ENCAPSULATED_UNCOMPRESSED: &str = "1.2.840.10008.1.2.1.98";

/// JPEG Baseline (Process 1) and Extended (Processes 2 & 4, 8-bit samples only).
const JPEG_8BIT: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];

/// JPEG Lossless, Non-Hierarchical (Process 14) and its first-order prediction (SV1).
const JPEG_LOSSLESS: [&str; 2] = ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"];

/// How the pixel data of a transfer syntax Triscope reads is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PixelEncoding {
    /// Native (uncompressed) pixel data in one value.
    Native,
    /// RLE Lossless (PS3.5 Annex G), one fragment per frame.
    Rle,
    /// Uncompressed frames split into fragments.
    EncapsulatedUncompressed,
    /// 8-bit JPEG, decoded by the `image` crate with the image caps.
    Jpeg,
    /// Lossless JPEG, decoded by [`crate::io::jpeg_lossless`].
    JpegLossless,
    /// JPEG 2000, decoded by [`crate::io::jpeg2000`].
    Jpeg2000,
}

/// DICOM PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID),
/// with the output range [0, 1].
pub fn apply_window(x: f64, window: Window, function: VoiFunction) -> f64 {
    let Window { center, width } = window;
    match function {
        VoiFunction::Linear | VoiFunction::LinearExact => {
            let (c, w) = if function == VoiFunction::Linear {
                (center - 0.5, (width - 1.0).max(0.0))
            } else {
                (center, width)
            };
            if x <= c - w / 2.0 {
                0.0
            } else if x > c + w / 2.0 {
                1.0
            } else {
                (x - c) / w + 0.5
            }
        }
        VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - center) / width).exp()),
    }
}

fn min_max_window(lo: f64, hi: f64) -> Window {
    Window {
        center: (lo + hi) / 2.0 + 0.5,
        width: hi - lo + 1.0,
    }
}

fn window_is_valid(w: Window, function: VoiFunction) -> bool {
    let min_width = if function == VoiFunction::Linear {
        1.0
    } else {
        f64::MIN_POSITIVE
    };
    w.center.is_finite() && w.width.is_finite() && w.width >= min_width
}

/// The attributes that describe the pixel data, all checked.
struct PixelHeader {
    rows: u32,
    columns: u32,
    samples: u32,
    frames: u32,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    /// Colour planes stored one after the other (PlanarConfiguration 1).
    planar: bool,
    photometric: String,
    slope: f64,
    intercept: f64,
    window: Option<Window>,
    voi_function: VoiFunction,
}

impl PixelHeader {
    fn read(obj: &InMemDicomObject) -> std::result::Result<Self, String> {
        let rows = required_int(obj, tags::ROWS, "Rows")?;
        let columns = required_int(obj, tags::COLUMNS, "Columns")?;
        let samples = int_attr(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?.unwrap_or(1);
        let bits_allocated = required_int(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
        let bits_stored = int_attr(obj, tags::BITS_STORED, "BitsStored")?.unwrap_or(bits_allocated);
        let high_bit = int_attr(obj, tags::HIGH_BIT, "HighBit")?.unwrap_or(bits_stored - 1);
        let pixel_rep =
            int_attr(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation")?.unwrap_or(0);
        let planar = int_attr(obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration")?.unwrap_or(0);
        let frames = int_attr(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?.unwrap_or(1);
        let photometric = str_attr(obj, tags::PHOTOMETRIC_INTERPRETATION)
            .ok_or("it has no PhotometricInterpretation (0028,0004)")?;

        if rows <= 0 || columns <= 0 {
            return Err(format!("it declares an empty image ({columns}x{rows})"));
        }
        if rows > i64::from(MAX_IMAGE_SIDE) || columns > i64::from(MAX_IMAGE_SIDE) {
            return Err(format!(
                "it is {columns}x{rows} pixels, larger than the {MAX_IMAGE_SIDE}-pixel limit per side"
            ));
        }
        if !(bits_allocated == 8 || bits_allocated == 16) {
            return Err(format!(
                "BitsAllocated {bits_allocated} is not supported (8 or 16)"
            ));
        }
        if bits_stored < 1 || bits_stored > bits_allocated {
            return Err(format!(
                "BitsStored {bits_stored} does not fit BitsAllocated {bits_allocated}"
            ));
        }
        if high_bit < bits_stored - 1 || high_bit >= bits_allocated {
            return Err(format!(
                "HighBit {high_bit} does not fit BitsStored {bits_stored} and BitsAllocated \
                 {bits_allocated}"
            ));
        }
        if !(pixel_rep == 0 || pixel_rep == 1) {
            return Err(format!("PixelRepresentation {pixel_rep} is not 0 or 1"));
        }
        if frames < 1 {
            return Err(format!("NumberOfFrames {frames} is not positive"));
        }
        match (samples, photometric.as_str()) {
            (1, "MONOCHROME1" | "MONOCHROME2" | "PALETTE COLOR") => {}
            (3, "RGB" | "YBR_FULL" | "YBR_FULL_422" | "YBR_RCT" | "YBR_ICT") => {}
            (1 | 3, other) => {
                return Err(format!(
                    "photometric interpretation {other} with {samples} sample(s) per pixel is \
                     not supported (MONOCHROME1, MONOCHROME2, PALETTE COLOR, RGB, YBR_FULL, \
                     YBR_FULL_422, or YBR_RCT / YBR_ICT in JPEG 2000)"
                ));
            }
            _ => {
                return Err(format!(
                    "SamplesPerPixel {samples} is not supported (1 or 3)"
                ));
            }
        }
        if !(planar == 0 || planar == 1) {
            return Err(format!("PlanarConfiguration {planar} is not 0 or 1"));
        }
        let frame_bytes =
            rows as u64 * columns as u64 * samples as u64 * (bits_allocated as u64 / 8);
        if frame_bytes > MAX_DECODE_BYTES / 8 {
            return Err(format!(
                "one frame of {columns}x{rows}x{samples} at {bits_allocated} bits needs {} MiB, \
                 over the {} MiB limit",
                frame_bytes >> 20,
                MAX_DECODE_BYTES >> 23
            ));
        }
        let slope = float_attr(obj, tags::RESCALE_SLOPE, "RescaleSlope")?.unwrap_or(1.0);
        let intercept =
            float_attr(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept")?.unwrap_or(0.0);
        if !(slope.is_finite() && intercept.is_finite()) || slope == 0.0 {
            return Err(format!(
                "rescale slope {slope} / intercept {intercept} is not usable"
            ));
        }
        let voi_function = match str_attr(obj, tags::VOILUT_FUNCTION).as_deref() {
            None | Some("") | Some("LINEAR") => VoiFunction::Linear,
            Some("LINEAR_EXACT") => VoiFunction::LinearExact,
            Some("SIGMOID") => VoiFunction::Sigmoid,
            Some(other) => return Err(format!("VOI LUT function {other} is not supported")),
        };
        // A window attribute that does not parse is ignored (min-max is used instead).
        let center = float_attr(obj, tags::WINDOW_CENTER, "WindowCenter")
            .ok()
            .flatten();
        let width = float_attr(obj, tags::WINDOW_WIDTH, "WindowWidth")
            .ok()
            .flatten();
        let window = center
            .zip(width)
            .map(|(center, width)| Window { center, width });
        let as_u16 = |v: i64| v as u16; // all checked above to be in 0..=16
        Ok(Self {
            rows: rows as u32,
            columns: columns as u32,
            samples: samples as u32,
            frames: u32::try_from(frames).unwrap_or(u32::MAX),
            bits_allocated: as_u16(bits_allocated),
            bits_stored: as_u16(bits_stored),
            high_bit: as_u16(high_bit),
            signed: pixel_rep == 1,
            planar: planar == 1,
            photometric,
            slope,
            intercept,
            window,
            voi_function,
        })
    }

    fn frame_bytes(&self) -> usize {
        self.rows as usize
            * self.columns as usize
            * self.samples as usize
            * (self.bits_allocated as usize / 8)
    }

    /// Stored value `i` of `frame` (checked to hold every sample): the BitsStored bits below
    /// HighBit, sign-extended when signed.
    fn stored(&self, frame: &[u8], i: usize) -> i64 {
        let raw = if self.bits_allocated == 8 {
            u32::from(frame[i])
        } else {
            u32::from(u16::from_le_bytes([frame[2 * i], frame[2 * i + 1]]))
        };
        let shift = u32::from(self.high_bit + 1 - self.bits_stored);
        let v = (raw >> shift) & ((1u32 << self.bits_stored) - 1);
        if self.signed && v & (1u32 << (self.bits_stored - 1)) != 0 {
            i64::from(v) - (1i64 << self.bits_stored)
        } else {
            i64::from(v)
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

fn element(obj: &InMemDicomObject, tag: Tag) -> Option<&dicom_object::mem::InMemElement> {
    obj.element_opt(tag).ok().flatten()
}

fn int_attr(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
) -> std::result::Result<Option<i64>, String> {
    match element(obj, tag) {
        None => Ok(None),
        Some(e) if e.is_empty() => Ok(None),
        Some(e) => e
            .to_int::<i64>()
            .map(Some)
            .map_err(|err| format!("{name} {tag} is not an integer ({err})")),
    }
}

fn required_int(obj: &InMemDicomObject, tag: Tag, name: &str) -> std::result::Result<i64, String> {
    int_attr(obj, tag, name)?.ok_or_else(|| format!("it has no {name} {tag}"))
}

fn float_attr(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
) -> std::result::Result<Option<f64>, String> {
    match element(obj, tag) {
        None => Ok(None),
        Some(e) if e.is_empty() => Ok(None),
        Some(e) => e
            .to_multi_float64()
            .map_err(|err| format!("{name} {tag} is not a number ({err})"))
            .map(|v| v.first().copied()),
    }
}

fn str_attr(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    element(obj, tag).and_then(|e| e.to_str().ok()).map(|s| {
        s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflating_stops_at_the_limit() {
        let zeros = vec![0u8; 2 << 20];
        let deflated = miniz_oxide::deflate::compress_to_vec(&zeros, 6);
        assert!(deflated.len() < 10_000);
        assert_eq!(inflate(&deflated, 4 << 20).unwrap(), zeros);
        let e = inflate(&deflated, 1 << 20).unwrap_err();
        assert!(e.contains("more than the 1 MiB limit"), "{e}");
        let e = inflate(&deflated[..deflated.len() / 2], 4 << 20).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn linear_window_matches_the_standard() {
        let w = Window {
            center: 2048.0,
            width: 4096.0,
        };
        assert_eq!(apply_window(0.0, w, VoiFunction::Linear), 0.0);
        assert_eq!(apply_window(4096.0, w, VoiFunction::Linear), 1.0);
        let mid = apply_window(2047.5, w, VoiFunction::Linear);
        assert!((mid - 0.5).abs() < 1e-12, "{mid}");
        let exact = apply_window(2048.0, w, VoiFunction::LinearExact);
        assert!((exact - 0.5).abs() < 1e-12);
        let s = apply_window(2048.0, w, VoiFunction::Sigmoid);
        assert!((s - 0.5).abs() < 1e-12);
        // Width 1 (LINEAR) is a threshold at centre - 0.5.
        let t = Window {
            center: 10.0,
            width: 1.0,
        };
        assert_eq!(apply_window(9.5, t, VoiFunction::Linear), 0.0);
        assert_eq!(apply_window(9.6, t, VoiFunction::Linear), 1.0);
    }

    #[test]
    fn min_max_window_spans_the_values() {
        let w = min_max_window(-100.0, 300.0);
        assert_eq!(apply_window(-100.0, w, VoiFunction::Linear), 0.0);
        assert_eq!(apply_window(300.0, w, VoiFunction::Linear), 1.0);
        assert!((apply_window(100.0, w, VoiFunction::Linear) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn lying_lengths_are_refused_before_parsing() {
        // Preamble, DICM, a meta group with the transfer syntax, then pixel data declaring
        // 4 GiB in a file of a few hundred bytes.
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        let ts = b"1.2.840.10008.1.2.1\0";
        b.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        b.extend_from_slice(&(8 + ts.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        b.extend_from_slice(&(ts.len() as u16).to_le_bytes());
        b.extend_from_slice(ts);
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        b.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 64]);
        let err = decode_dicom_bytes(&b, None).unwrap_err();
        assert!(err.contains("declares 4294967280 bytes"), "{err}");
    }
}
