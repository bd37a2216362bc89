//! The compressed and colour-coded frames: lossless JPEG, 8-bit JPEG and JPEG 2000 (through
//! their modules, checked against the image attributes), RLE Lossless (decoded here, every
//! offset and run checked), native YBR_FULL_422 and PALETTE COLOR tables.

use super::*;

/// Decode one lossless JPEG frame into the native layout (interleaved, little-endian 16-bit
/// or 8-bit samples), checked against the image attributes. The samples keep the stored
/// bit pattern, so signed data and BitsStored are handled downstream as for native data.
pub(super) fn decode_jpeg_lossless_frame(
    stream: &[u8],
    header: &PixelHeader,
) -> std::result::Result<Vec<u8>, String> {
    let expected = header.rows as usize * header.columns as usize * header.samples as usize;
    let frame = crate::io::jpeg_lossless::decode(stream, expected)
        .map_err(|e| format!("cannot decode the lossless JPEG frame: {e}"))?;
    if (frame.width, frame.height, u32::from(frame.components))
        != (header.columns, header.rows, header.samples)
    {
        return Err(format!(
            "the lossless JPEG frame is {}x{} with {} component(s), the image attributes say \
             {}x{} with {}",
            frame.width,
            frame.height,
            frame.components,
            header.columns,
            header.rows,
            header.samples
        ));
    }
    if u16::from(frame.precision) > header.bits_allocated {
        return Err(format!(
            "the lossless JPEG frame has {}-bit samples, more than BitsAllocated {}",
            frame.precision, header.bits_allocated
        ));
    }
    Ok(if header.bits_allocated == 8 {
        frame.samples.iter().map(|&v| v as u8).collect()
    } else {
        frame.samples.iter().flat_map(|v| v.to_le_bytes()).collect()
    })
}

/// Decode one 8-bit JPEG frame into interleaved samples, checked against the image
/// attributes before it is decoded: grey; YBR (the decoder converts it to RGB); or RGB,
/// whose components are read as compressed (no colour transform, as PS3.3 says and pydicom
/// reads).
pub(super) fn decode_jpeg_frame(
    stream: &[u8],
    header: &PixelHeader,
) -> std::result::Result<Vec<u8>, String> {
    if header.bits_allocated != 8 {
        return Err(format!(
            "JPEG with BitsAllocated {} is not supported (8-bit JPEG only)",
            header.bits_allocated
        ));
    }
    let keep_components = header.samples == 3 && header.photometric == "RGB";
    crate::io::jpeg::decode_jpeg_frame(
        stream,
        header.columns,
        header.rows,
        header.samples as usize,
        keep_components,
    )
    .map_err(|e| format!("cannot decode the JPEG frame: {e}"))
}

/// Decode one JPEG 2000 frame into the native layout (interleaved little-endian samples),
/// checked against the image attributes. Each sample keeps its codestream value's bit
/// pattern, so the stored-value reading downstream applies BitsStored and the file's pixel
/// representation, as pydicom does when the codestream's signedness disagrees with it.
pub(super) fn decode_jpeg2000_frame(
    stream: &[u8],
    header: &PixelHeader,
) -> std::result::Result<Vec<u8>, String> {
    let frame =
        crate::io::jpeg2000::decode(stream, header.columns, header.rows, header.samples as usize)
            .map_err(|e| format!("cannot decode the JPEG 2000 frame: {e}"))?;
    if let Some(c) = frame
        .components
        .iter()
        .find(|c| u16::from(c.precision) > header.bits_allocated)
    {
        return Err(format!(
            "the JPEG 2000 frame has {}-bit samples, more than BitsAllocated {}",
            c.precision, header.bits_allocated
        ));
    }
    Ok(if header.bits_allocated == 8 {
        frame.samples.iter().map(|&v| v as u8).collect()
    } else {
        frame
            .samples
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect()
    })
}

/// Native YBR_FULL_422 (Y1 Y2 Cb Cr for each pair of pixels) to interleaved YBR_FULL, each
/// chroma pair shared by its two pixels (as pydicom expands it). `frame` holds two thirds of
/// a full frame (checked by the caller).
pub(super) fn expand_ybr_422(frame: &[u8], header: &PixelHeader) -> Vec<u8> {
    let bytes = usize::from(header.bits_allocated) / 8;
    let mut out = Vec::with_capacity(frame.len() / 2 * 3);
    for group in frame.chunks_exact(4 * bytes) {
        let (y1, rest) = group.split_at(bytes);
        let (y2, chroma) = rest.split_at(bytes);
        for y in [y1, y2] {
            out.extend_from_slice(y);
            out.extend_from_slice(chroma);
        }
    }
    out
}

/// A PALETTE COLOR image's red, green and blue lookup tables (PS3.3 C.7.6.3.1.5-6).
#[derive(Debug)]
pub(super) struct Palette {
    /// The stored value mapped to each table's first entry.
    pub(super) first: [i64; 3],
    pub(super) tables: [Vec<u16>; 3],
    /// Largest value of an entry: 255 or 65535 by the tables' real width (as pydicom, which
    /// takes the width from the data's length, not the descriptor).
    pub(super) max: f64,
}

impl Palette {
    pub(super) fn read(obj: &InMemDicomObject) -> std::result::Result<Self, String> {
        let channels = [
            (
                "red",
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
            (
                "green",
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
            (
                "blue",
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
        ];
        let mut first = [0i64; 3];
        let mut tables: [Vec<u16>; 3] = Default::default();
        let mut wide = [false; 3];
        for (c, (name, descriptor, data, segmented)) in channels.into_iter().enumerate() {
            let desc = element(obj, descriptor)
                .ok_or_else(|| {
                    format!("PALETTE COLOR without a {name} LUT descriptor {descriptor}")
                })?
                .to_multi_int::<i64>()
                .map_err(|e| {
                    format!("the {name} LUT descriptor {descriptor} is not integers ({e})")
                })?;
            let [entries, first_mapped, _bits] = desc[..] else {
                return Err(format!(
                    "the {name} LUT descriptor {descriptor} has {} values, not 3",
                    desc.len()
                ));
            };
            // 0 stands for 65536 entries (PS3.3 C.7.6.3.1.5).
            let entries = match entries {
                0 => 65_536,
                1..=65_535 => entries as usize,
                _ => return Err(format!("the {name} LUT has {entries} entries")),
            };
            let Some(value) = element(obj, data) else {
                return Err(if element(obj, segmented).is_some() {
                    format!("segmented palette lookup tables ({segmented}) are not supported")
                } else {
                    format!("PALETTE COLOR without {name} LUT data {data}")
                });
            };
            // 16-bit entries, or 8-bit ones packed two to a word.
            let (table, is_wide) = match value.value() {
                dicom_core::DicomValue::Primitive(dicom_core::PrimitiveValue::U16(v)) => {
                    if v.len() == entries {
                        (v.to_vec(), true)
                    } else if v.len() * 2 == entries || v.len() * 2 == entries + 1 {
                        let bytes = v.iter().flat_map(|w| w.to_le_bytes());
                        (bytes.take(entries).map(u16::from).collect(), false)
                    } else {
                        (Vec::new(), true)
                    }
                }
                dicom_core::DicomValue::Primitive(dicom_core::PrimitiveValue::U8(v)) => {
                    if v.len() == entries {
                        (v.iter().map(|&b| u16::from(b)).collect(), false)
                    } else if v.len() == 2 * entries {
                        let words = v.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
                        (words.collect(), true)
                    } else {
                        (Vec::new(), false)
                    }
                }
                _ => (Vec::new(), false),
            };
            if table.len() != entries {
                return Err(format!(
                    "the {name} LUT data {data} does not hold the {entries} entries its \
                     descriptor declares"
                ));
            }
            first[c] = first_mapped;
            tables[c] = table;
            wide[c] = is_wide;
        }
        if wide[0] != wide[1] || wide[0] != wide[2] {
            return Err("the palette lookup tables have entries of different widths".into());
        }
        Ok(Self {
            first,
            tables,
            max: if wide[0] { 65_535.0 } else { 255.0 },
        })
    }

    /// The colour of a stored value, as 16-bit codes; values outside a table take its nearest
    /// end (PS3.3 C.7.6.3.1.5).
    pub(super) fn rgb16(&self, stored: i64) -> [u16; 3] {
        std::array::from_fn(|c| {
            let table = &self.tables[c];
            let i = (stored - self.first[c]).clamp(0, table.len() as i64 - 1) as usize;
            (f64::from(table[i]) / self.max * 65_535.0).round() as u16
        })
    }
}

/// Decode one RLE Lossless frame (PS3.5 Annex G) into interleaved little-endian samples,
/// `header.frame_bytes()` long. The fragment is a 64-byte header (the number of segments and
/// up to 15 offsets) and one PackBits segment per byte of each sample, most significant byte
/// first; every offset and run is checked against the fragment and the frame.
pub(super) fn decode_rle_frame(
    fragment: &[u8],
    header: &PixelHeader,
) -> std::result::Result<Vec<u8>, String> {
    let bad = |what: String| Err(format!("corrupt RLE pixel data: {what}"));
    let bytes_per_sample = usize::from(header.bits_allocated) / 8;
    let samples = header.samples as usize;
    let segments = samples * bytes_per_sample;
    let plane_len = header.rows as usize * header.columns as usize;
    if fragment.len() < 64 {
        return bad(format!(
            "a fragment of {} bytes has no 64-byte header",
            fragment.len()
        ));
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            fragment[4 * i],
            fragment[4 * i + 1],
            fragment[4 * i + 2],
            fragment[4 * i + 3],
        ]) as usize
    };
    let n = word(0);
    if n != segments {
        return bad(format!(
            "{n} segments where the image attributes ask for {segments}"
        ));
    }
    let mut offsets: Vec<usize> = (1..=n).map(word).collect();
    offsets.push(fragment.len());
    if offsets[0] != 64 || offsets.windows(2).any(|w| w[0] > w[1]) {
        return bad(format!(
            "segment offsets {:?} are out of order or outside the fragment",
            &offsets[..n]
        ));
    }
    // First only check that every segment fills its plane, so that nothing is allocated for
    // a frame the fragment cannot fill (a few bytes may declare a 256 MiB frame).
    let segment_at = |i: usize| &fragment[offsets[i]..offsets[i + 1]];
    for i in 0..n {
        let written = unpack_segment(segment_at(i), plane_len, |_| {})
            .map_err(|e| format!("corrupt RLE pixel data: segment {i} {e}"))?;
        if written < plane_len {
            return bad(format!(
                "segment {i} decodes to {written} bytes, fewer than the {plane_len} of a {}x{} \
                 plane",
                header.columns, header.rows
            ));
        }
    }
    let stride = segments; // bytes per pixel in the output
    let mut frame = vec![0u8; plane_len * stride];
    for i in 0..n {
        // Segment `sample * bytes_per_sample + k` holds byte k (0 = most significant) of that
        // sample; little-endian output puts the most significant byte last.
        let sample = i / bytes_per_sample;
        let byte = bytes_per_sample - 1 - i % bytes_per_sample;
        let mut out = frame
            .iter_mut()
            .skip(sample * bytes_per_sample + byte)
            .step_by(stride);
        unpack_segment(segment_at(i), plane_len, |run| match run {
            Run::Literal(bytes) => out.by_ref().zip(bytes).for_each(|(o, &v)| *o = v),
            Run::Repeat(v, count) => out.by_ref().take(count).for_each(|o| *o = v),
        })?;
    }
    Ok(frame)
}

/// One PackBits run of an RLE segment.
pub(super) enum Run<'a> {
    Literal(&'a [u8]),
    Repeat(u8, usize),
}

/// Walk one PackBits segment (PS3.5 G.3.1) until it has produced `plane_len` bytes (a longer
/// segment's tail is ignored), handing each run to `emit`; returns the bytes produced, or
/// what is wrong when a run does not fit the segment.
pub(super) fn unpack_segment(
    segment: &[u8],
    plane_len: usize,
    mut emit: impl FnMut(Run<'_>),
) -> std::result::Result<usize, String> {
    let (mut at, mut written) = (0usize, 0usize);
    while written < plane_len && at < segment.len() {
        let h = segment[at] as i8;
        at += 1;
        match h {
            // A literal run of h + 1 bytes.
            0..=127 => {
                let len = h as usize + 1;
                let literal = segment
                    .get(at..at + len)
                    .ok_or("ends inside a literal run")?;
                emit(Run::Literal(literal));
                at += len;
                written += len;
            }
            // The next byte 1 - h times.
            -127..=-1 => {
                let v = *segment.get(at).ok_or("ends inside a repeat run")?;
                let count = (1 - isize::from(h)) as usize;
                emit(Run::Repeat(v, count));
                at += 1;
                written += count;
            }
            // -128: no operation.
            _ => {}
        }
    }
    Ok(written)
}
