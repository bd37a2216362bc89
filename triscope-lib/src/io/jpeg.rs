//! JPEG streams beyond what the `image` crate does with a file: the completeness walk every
//! JPEG decode runs first (a cut file is refused, not shown with grey blocks), and DICOM's
//! frames, whose size is known before they are decoded and whose RGB may not be converted.

use std::borrow::Cow;

use crate::io::limits::MAX_IMAGE_SIDE;

/// Refuse a JPEG stream that stops before its end-of-image marker. The decoder fills the
/// blocks of a cut file with grey and says nothing (PIL refuses the same file as truncated), so
/// the marker structure is walked first: segment lengths, then each scan's entropy-coded data
/// up to the next marker (a stuffed `FF 00` or a restart marker is data), until EOI. Bytes after
/// EOI (padding, appended data) are not read.
pub fn check_jpeg_complete(reader: impl std::io::BufRead) -> std::result::Result<(), String> {
    let mut bytes = reader.bytes();
    let mut next = || match bytes.next() {
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => Err(format!("reading the JPEG data failed: {e}")),
        None => Err(
            "the JPEG data stops before its end-of-image marker: the file is truncated \
                     (cut short, as by an interrupted copy or download)"
                .to_string(),
        ),
    };
    if (next()?, next()?) != (0xFF, 0xD8) {
        return Err("it does not start with a JPEG start-of-image marker (FF D8)".into());
    }
    // A marker met at the end of a scan's entropy-coded data.
    let mut pending: Option<u8> = None;
    loop {
        let marker = match pending.take() {
            Some(m) => m,
            None => {
                // 0xFF, fill bytes, the code; stray bytes between segments are skipped as the
                // decoder skips them.
                let mut b = next()?;
                while b != 0xFF {
                    b = next()?;
                }
                while b == 0xFF {
                    b = next()?;
                }
                b
            }
        };
        match marker {
            0xD9 => return Ok(()),
            // Markers without a length: TEM, restart markers, SOI.
            0x01 | 0xD0..=0xD8 => {}
            _ => {
                let length = u16::from_be_bytes([next()?, next()?]);
                for _ in 2..length {
                    next()?;
                }
                if marker == 0xDA {
                    pending = Some(loop {
                        let mut b = next()?;
                        if b != 0xFF {
                            continue;
                        }
                        while b == 0xFF {
                            b = next()?;
                        }
                        if b != 0x00 && !(0xD0..=0xD7).contains(&b) {
                            break b;
                        }
                    });
                }
            }
        }
    }
}

/// Decode a JPEG frame of known size (a DICOM frame): the stream is checked complete first,
/// and its header must declare `width` x `height` with `components` components before
/// anything is decoded. Three components become RGB as a decoder converts them by default
/// (YCbCr to RGB), or, with `keep_components`, are returned as they were compressed: DICOM's
/// RGB in JPEG says they are red, green and blue already (PS3.3 C.7.6.3.1.2), and pydicom
/// reads them so. Returns the interleaved 8-bit samples.
pub fn decode_jpeg_frame(
    bytes: &[u8],
    width: u32,
    height: u32,
    components: usize,
    keep_components: bool,
) -> std::result::Result<Vec<u8>, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;

    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("it does not start with a JPEG SOI marker (FF D8)".into());
    }
    check_jpeg_complete(bytes)?;
    let bytes = without_short_adobe_segments(bytes);
    // The header is read under the file caps, so that a size mismatch is reported as one.
    let options = DecoderOptions::default()
        .set_max_width(MAX_IMAGE_SIDE as usize)
        .set_max_height(MAX_IMAGE_SIDE as usize);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(&bytes[..]), options);
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let (info, input) = decoder
        .info()
        .zip(decoder.input_colorspace())
        .ok_or("the JPEG header could not be read")?;
    let declared = (
        u32::from(info.width),
        u32::from(info.height),
        usize::from(info.components),
    );
    if declared != (width, height, components) {
        return Err(format!(
            "the JPEG frame is {}x{} with {} component(s), the image attributes say \
             {width}x{height} with {components}",
            declared.0, declared.1, declared.2
        ));
    }
    // Kept: the output space is the input space, so that the samples are copied, not
    // converted. Three components under Adobe's transform 0 are RGB (the decoder names that
    // space CMYK until it decodes).
    let out = match (components, input) {
        (1, _) => ColorSpace::Luma,
        (3, ColorSpace::YCbCr) if keep_components => ColorSpace::YCbCr,
        (3, _) => ColorSpace::RGB,
        _ => {
            return Err(format!(
                "a JPEG frame with {components} components is not read"
            ));
        }
    };
    decoder.set_options(options.jpeg_set_out_colorspace(out));
    let samples = decoder.decode().map_err(|e| e.to_string())?;
    if samples.len() != width as usize * height as usize * components {
        return Err(format!(
            "the JPEG decoder returned {} samples for {width}x{height} with {components} \
             component(s)",
            samples.len()
        ));
    }
    Ok(samples)
}

/// The stream without Adobe APP14 segments too short to hold their colour-transform byte
/// (some DICOM exporters write 10 of its 12 bytes). libjpeg, and so pydicom, ignores such a
/// segment; zune-jpeg refuses the whole image. Only the header segments before the first
/// scan are looked at; a stream without such a segment is returned as it is.
fn without_short_adobe_segments(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut drop = Vec::new();
    let mut at = 2;
    while let [0xFF, marker, hi, lo, ..] = bytes[at.min(bytes.len())..] {
        // Stop at the scan, and at markers without a length (the decoder will judge them).
        if marker == 0xDA || marker == 0xFF || (0xD0..=0xD9).contains(&marker) || marker == 0x01 {
            break;
        }
        let end = at + 2 + usize::from(u16::from_be_bytes([hi, lo]));
        if marker == 0xEE && end < at + 2 + 14 && bytes.get(at + 4..at + 9) == Some(b"Adobe") {
            drop.push(at..end.min(bytes.len()));
        }
        at = end;
    }
    if drop.is_empty() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut from = 0;
    for range in drop {
        out.extend_from_slice(&bytes[from..range.start]);
        from = range.end;
    }
    out.extend_from_slice(&bytes[from..]);
    Cow::Owned(out)
}
