//! JPEG 2000 (ISO/IEC 15444-1) frames of DICOM files, decoded by `hayro-jpeg2000` (pure Rust,
//! no unsafe code of its own). The codestream's SIZ segment is read here first, so that the
//! image size, the number of components, their precision and the number of tiles are checked
//! against the caller's limits before the decoder allocates anything for them; the decoder's
//! samples are then rounded to integers in the stream's own signedness (it adds the DC level
//! shift of ISO/IEC 15444-1 G.1.2 to signed components too, and leaves lossy values
//! unrounded and unclamped).

use hayro_jpeg2000::{DecodeSettings, DecoderContext, Image};

/// The start of every JPEG 2000 codestream: SOC then SIZ.
const SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
/// Most tiles a codestream may have (its tile index Isot is 16 bits).
const MAX_TILES: u64 = 65_535;
/// Deepest component precision read (DICOM allocates at most 16 bits).
const MAX_PRECISION: u8 = 16;

/// What the SIZ segment declares for one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// Bits per sample, 1..=16.
    pub precision: u8,
    /// Two's-complement samples (Ssiz bit 7).
    pub signed: bool,
}

/// A decoded frame: interleaved integer samples, each in its component's own signedness
/// (unsigned in `0..2^p`, signed in `-2^(p-1)..2^(p-1)`).
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub components: Vec<Component>,
    pub samples: Vec<i32>,
}

/// The image geometry of a codestream's SIZ segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Siz {
    pub width: u32,
    pub height: u32,
    pub tiles: u64,
    pub components: Vec<Component>,
}

/// Read the SIZ segment (ISO/IEC 15444-1 A.5.1) of a raw codestream, or of one wrapped in a
/// JP2 file (the codestream box is found by its SOC+SIZ signature).
pub fn read_siz(stream: &[u8]) -> Result<Siz, String> {
    let at = stream
        .windows(4)
        .position(|w| w == SOC_SIZ)
        .ok_or("no JPEG 2000 codestream (SOC and SIZ markers) in the frame")?;
    let s = &stream[at + 4..];
    let u16_at = |i: usize| -> Result<u16, String> {
        s.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "the JPEG 2000 SIZ segment is truncated".to_string())
    };
    let u32_at = |i: usize| -> Result<u32, String> {
        s.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "the JPEG 2000 SIZ segment is truncated".to_string())
    };
    // Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz.
    let (xsiz, ysiz, xosiz, yosiz) = (u32_at(4)?, u32_at(8)?, u32_at(12)?, u32_at(16)?);
    let (xtsiz, ytsiz, xtosiz, ytosiz) = (u32_at(20)?, u32_at(24)?, u32_at(28)?, u32_at(32)?);
    let csiz = u16_at(36)?;
    if xosiz >= xsiz || yosiz >= ysiz {
        return Err(format!(
            "the JPEG 2000 image area is empty (size {xsiz}x{ysiz}, offset {xosiz}x{yosiz})"
        ));
    }
    if xtsiz == 0 || ytsiz == 0 || xtosiz > xosiz || ytosiz > yosiz {
        return Err(format!(
            "the JPEG 2000 tiles ({xtsiz}x{ytsiz} at {xtosiz}x{ytosiz}) do not cover the image"
        ));
    }
    let tiles_x = (u64::from(xsiz - xtosiz)).div_ceil(u64::from(xtsiz));
    let tiles_y = (u64::from(ysiz - ytosiz)).div_ceil(u64::from(ytsiz));
    let mut components = Vec::with_capacity(usize::from(csiz));
    for c in 0..usize::from(csiz) {
        let ssiz = *s
            .get(38 + 3 * c)
            .ok_or("the JPEG 2000 SIZ segment is truncated")?;
        let precision = (ssiz & 0x7F) + 1;
        if precision > MAX_PRECISION {
            return Err(format!(
                "JPEG 2000 component {c} has {precision}-bit samples (at most {MAX_PRECISION})"
            ));
        }
        components.push(Component {
            precision,
            signed: ssiz & 0x80 != 0,
        });
    }
    if components.is_empty() {
        return Err("the JPEG 2000 codestream declares no component".into());
    }
    Ok(Siz {
        width: xsiz - xosiz,
        height: ysiz - yosiz,
        tiles: tiles_x * tiles_y,
        components,
    })
}

/// Decode a codestream whose SIZ must declare `width` x `height` with `components`
/// components (the caller's attributes); nothing is decoded when it does not.
pub fn decode(stream: &[u8], width: u32, height: u32, components: usize) -> Result<Frame, String> {
    let siz = read_siz(stream)?;
    if (siz.width, siz.height, siz.components.len()) != (width, height, components) {
        return Err(format!(
            "the JPEG 2000 frame is {}x{} with {} component(s), the image attributes say \
             {width}x{height} with {components}",
            siz.width,
            siz.height,
            siz.components.len()
        ));
    }
    if siz.tiles > MAX_TILES {
        return Err(format!(
            "the JPEG 2000 frame has {} tiles, more than the standard's {MAX_TILES}",
            siz.tiles
        ));
    }
    // A JPEG 2000 decoder shows a cut codestream at a lower quality without a word (its
    // layers are progressive); a cut frame is a broken file, so the end-of-codestream marker
    // must be there, give or take the fragment's padding (pydicom's files end in 00 or FF).
    let tail = &stream[stream.len().saturating_sub(4)..];
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(
            "the codestream stops before its end-of-codestream marker (FF D9): the frame is \
             truncated"
                .into(),
        );
    }
    // Palette indices stay indices: DICOM describes colour itself.
    let settings = DecodeSettings {
        resolve_palette_indices: false,
        ..DecodeSettings::default()
    };
    let image = Image::new(stream, &settings).map_err(|e| format!("{e}"))?;
    let mut context = DecoderContext::default();
    let decoded = image.decode(&mut context).map_err(|e| format!("{e}"))?;
    let planes = decoded.components();
    let n = width as usize * height as usize;
    if planes.len() != components || planes.iter().any(|p| p.samples().len() != n) {
        return Err(format!(
            "the JPEG 2000 decoder returned {} plane(s) of {:?} samples for a {width}x{height} \
             image with {components} component(s)",
            planes.len(),
            planes.iter().map(|p| p.samples().len()).collect::<Vec<_>>()
        ));
    }
    let mut samples = vec![0i32; n * components];
    for (c, (plane, comp)) in planes.iter().zip(&siz.components).enumerate() {
        // [0, 2^p) with the level shift; signed samples are shifted back.
        let max = (1i64 << comp.precision) - 1;
        let offset = if comp.signed {
            1i64 << (comp.precision - 1)
        } else {
            0
        };
        for (i, &v) in plane.samples().iter().enumerate() {
            let v = if v.is_finite() { v.round() as i64 } else { 0 };
            samples[i * components + c] = (v.clamp(0, max) - offset) as i32;
        }
    }
    Ok(Frame {
        width,
        height,
        components: siz.components,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIZ segment for a `w` x `h` image in `tile`-pixel tiles with the given Ssiz bytes.
    fn siz(w: u32, h: u32, tile: u32, ssiz: &[u8]) -> Vec<u8> {
        let mut s = SOC_SIZ.to_vec();
        s.extend_from_slice(&(38 + 3 * ssiz.len() as u16).to_be_bytes());
        s.extend_from_slice(&0u16.to_be_bytes());
        for v in [w, h, 0, 0, tile, tile, 0, 0] {
            s.extend_from_slice(&v.to_be_bytes());
        }
        s.extend_from_slice(&(ssiz.len() as u16).to_be_bytes());
        for &b in ssiz {
            s.extend_from_slice(&[b, 1, 1]);
        }
        s
    }

    #[test]
    fn siz_is_read_with_sign_and_precision() {
        let s = read_siz(&siz(640, 480, 640, &[0x8F, 0x07])).unwrap();
        assert_eq!((s.width, s.height, s.tiles), (640, 480, 1));
        assert_eq!(
            s.components,
            vec![
                Component {
                    precision: 16,
                    signed: true
                },
                Component {
                    precision: 8,
                    signed: false
                }
            ]
        );
    }

    #[test]
    fn too_many_tiles_and_wrong_sizes_are_refused_before_decoding() {
        let eoc = |mut s: Vec<u8>| {
            s.extend_from_slice(&[0xFF, 0xD9]);
            s
        };
        // 4096 x 4096 in 1-pixel tiles: 16.7 million tiles.
        let e = decode(&eoc(siz(4096, 4096, 1, &[7])), 4096, 4096, 1).unwrap_err();
        assert!(e.contains("tiles"), "{e}");
        let e = decode(&siz(64, 64, 64, &[7]), 64, 64, 1).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = decode(&siz(64, 64, 64, &[7]), 32, 64, 1).unwrap_err();
        assert!(e.contains("the image attributes say 32x64"), "{e}");
        let e = read_siz(&siz(64, 64, 64, &[0x1F])).unwrap_err();
        assert!(e.contains("32-bit"), "{e}");
        let e = read_siz(&SOC_SIZ[..]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
}
