//! Lossless JPEG (ITU-T T.81 Annex H, Process 14), the codec of DICOM's JPEG Lossless transfer
//! syntaxes (1.2.840.10008.1.2.4.57 and .70, the common storage format of CR and DX images):
//! Huffman-coded differences from one of seven predictors, 2 to 16 bits per sample.
//!
//! Written here because neither the `image` crate's decoder nor dicom-rs's default features
//! read it. Every length, table and count is checked against the stream and against the
//! size the caller expects before anything is allocated; a corrupt stream is an error, never
//! a panic.
//!
//! Supported: one scan holding every component interleaved, sampling factors 1x1, any
//! predictor, point transform. Not supported (refused by name): restart intervals, several
//! scans, subsampled components, arithmetic coding, DNL.

/// A decoded frame: `samples` interleaved by component, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct LosslessFrame {
    pub width: u32,
    pub height: u32,
    pub components: u8,
    /// Sample precision in bits (SOF3's P).
    pub precision: u8,
    pub samples: Vec<u16>,
}

/// The image header of a lossless stream (SOF3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub width: u32,
    pub height: u32,
    pub components: u8,
    pub precision: u8,
}

#[derive(Clone)]
struct HuffmanTable {
    /// For each code length 1..=16: the first code, the number of codes and the index of the
    /// first value (T.81 F.2.2.3's MINCODE, count and VALPTR).
    min_code: [i32; 17],
    count: [i32; 17],
    first_value: [usize; 17],
    values: Vec<u8>,
}

impl HuffmanTable {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Self, String> {
        let mut table = HuffmanTable {
            min_code: [0; 17],
            count: [0; 17],
            first_value: [0; 17],
            values,
        };
        let (mut code, mut index) = (0i32, 0usize);
        for length in 1..=16 {
            let n = i32::from(counts[length - 1]);
            table.min_code[length] = code;
            table.count[length] = n;
            table.first_value[length] = index;
            code += n;
            index += n as usize;
            // Codes of this length must fit in `length` bits.
            if code > 1 << length {
                return Err(format!(
                    "a Huffman table assigns more codes of {length} bits than exist"
                ));
            }
            code <<= 1;
        }
        if let Some(&v) = table.values.iter().find(|&&v| v > 16) {
            return Err(format!(
                "a Huffman table holds the difference category {v} (at most 16)"
            ));
        }
        Ok(table)
    }
}

/// Reads the entropy-coded segment bit by bit, removing stuffed zero bytes (FF 00).
struct BitReader<'a> {
    data: &'a [u8],
    at: usize,
    bits: u32,
    available: u32,
}

impl<'a> BitReader<'a> {
    fn bit(&mut self) -> Result<u32, String> {
        if self.available == 0 {
            let byte = *self
                .data
                .get(self.at)
                .ok_or("the entropy-coded data ends before the last sample")?;
            self.at += 1;
            if byte == 0xFF {
                match self.data.get(self.at) {
                    Some(0x00) => self.at += 1,
                    _ => return Err("a marker interrupts the entropy-coded data".into()),
                }
            }
            self.bits = u32::from(byte);
            self.available = 8;
        }
        self.available -= 1;
        Ok((self.bits >> self.available) & 1)
    }

    fn bits(&mut self, n: u32) -> Result<u32, String> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn decode(&mut self, table: &HuffmanTable) -> Result<u8, String> {
        let mut code = 0i32;
        for length in 1..=16 {
            code = (code << 1) | self.bit()? as i32;
            let offset = code - table.min_code[length];
            if offset >= 0 && offset < table.count[length] {
                return table
                    .values
                    .get(table.first_value[length] + offset as usize)
                    .copied()
                    .ok_or_else(|| "a Huffman code points past its table".to_string());
            }
        }
        Err("a Huffman code of more than 16 bits".into())
    }
}

struct Component {
    id: u8,
    table: usize,
}

/// Decode a lossless JPEG stream; `max_samples` bounds width x height x components (the
/// caller's frame) before anything is allocated.
pub fn decode(stream: &[u8], max_samples: usize) -> Result<LosslessFrame, String> {
    let (header, samples) = parse(stream, max_samples)?;
    Ok(LosslessFrame {
        width: header.width,
        height: header.height,
        components: header.components,
        precision: header.precision,
        samples,
    })
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("the stream ends inside a marker segment at byte {at}"))
}

/// Walk the markers to the scan and decode it.
fn parse(b: &[u8], max_samples: usize) -> Result<(FrameHeader, Vec<u16>), String> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return Err("it does not start with a JPEG SOI marker (FF D8)".into());
    }
    let mut at = 2;
    let mut header: Option<FrameHeader> = None;
    let mut components: Vec<Component> = Vec::new();
    let mut tables: [Option<HuffmanTable>; 4] = [None, None, None, None];
    loop {
        // A marker: FF, any fill FFs, then its code.
        if b.get(at) != Some(&0xFF) {
            return Err(format!("no JPEG marker at byte {at}"));
        }
        while b.get(at) == Some(&0xFF) {
            at += 1;
        }
        let code = *b.get(at).ok_or("the stream ends after a marker prefix")?;
        at += 1;
        match code {
            0xD9 => return Err("the stream ends (EOI) before a scan".into()),
            0xC3 => {
                let len = usize::from(u16_at(b, at)?);
                let seg = b
                    .get(at + 2..at + len)
                    .filter(|_| len >= 8)
                    .ok_or("a truncated frame header (SOF3)")?;
                let precision = seg[0];
                let height = u16::from_be_bytes([seg[1], seg[2]]);
                let width = u16::from_be_bytes([seg[3], seg[4]]);
                let n = seg[5];
                if !(2..=16).contains(&precision) {
                    return Err(format!("sample precision {precision} (2 to 16 bits)"));
                }
                if height == 0 {
                    return Err(
                        "the height is given by a DNL marker, which is not supported".into(),
                    );
                }
                if width == 0 || n == 0 || n > 4 || seg.len() != 6 + 3 * usize::from(n) {
                    return Err(format!(
                        "a frame header of {width} columns and {n} components"
                    ));
                }
                for c in seg[6..].chunks(3) {
                    if c[1] != 0x11 {
                        return Err("subsampled components are not supported".into());
                    }
                    components.push(Component { id: c[0], table: 0 });
                }
                header = Some(FrameHeader {
                    width: u32::from(width),
                    height: u32::from(height),
                    components: n,
                    precision,
                });
                at += len;
            }
            0xC0..=0xC2 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!(
                    "a JPEG frame of type SOF{} where lossless (SOF3) was expected",
                    code - 0xC0
                ));
            }
            0xC4 => {
                let len = usize::from(u16_at(b, at)?);
                let mut seg = b
                    .get(at + 2..at + len)
                    .filter(|_| len >= 2)
                    .ok_or("a truncated Huffman table segment (DHT)")?;
                while !seg.is_empty() {
                    let class_id = seg[0];
                    let counts: [u8; 16] = seg
                        .get(1..17)
                        .and_then(|s| s.try_into().ok())
                        .ok_or("a truncated Huffman table")?;
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let values = seg
                        .get(17..17 + total)
                        .ok_or("a Huffman table with fewer values than codes")?
                        .to_vec();
                    if class_id >> 4 != 0 || class_id & 0x0F > 3 {
                        return Err(format!("Huffman table class/id {class_id:#04x}"));
                    }
                    tables[usize::from(class_id & 0x0F)] =
                        Some(HuffmanTable::new(&counts, values)?);
                    seg = &seg[17 + total..];
                }
                at += len;
            }
            0xDD => {
                let interval = u16_at(b, at + 2)?;
                if interval != 0 {
                    return Err("restart intervals in lossless JPEG are not supported".into());
                }
                at += usize::from(u16_at(b, at)?);
            }
            0xDA => {
                let frame = header.ok_or("a scan (SOS) before the frame header (SOF3)")?;
                let len = usize::from(u16_at(b, at)?);
                let seg = b
                    .get(at + 2..at + len)
                    .filter(|_| len >= 6)
                    .ok_or("a truncated scan header (SOS)")?;
                let ns = usize::from(seg[0]);
                if ns != components.len() || seg.len() != 1 + 2 * ns + 3 {
                    return Err(format!(
                        "a scan of {ns} of the {} components: only one interleaved scan is \
                         supported",
                        components.len()
                    ));
                }
                for (i, c) in seg[1..1 + 2 * ns].chunks(2).enumerate() {
                    if c[0] != components[i].id {
                        return Err("the scan lists the components out of frame order".into());
                    }
                    let table = usize::from(c[1] >> 4);
                    if table > 3 || tables[table].is_none() {
                        return Err(format!(
                            "the scan uses Huffman table {table}, never defined"
                        ));
                    }
                    components[i].table = table;
                }
                let predictor = seg[1 + 2 * ns];
                let point_transform = seg[3 + 2 * ns] & 0x0F;
                if !(1..=7).contains(&predictor) {
                    return Err(format!("predictor {predictor} (1 to 7 for lossless)"));
                }
                if point_transform >= frame.precision {
                    return Err(format!(
                        "point transform {point_transform} for {}-bit samples",
                        frame.precision
                    ));
                }
                let samples = decode_scan(
                    &b[at + len..],
                    frame,
                    &components,
                    &tables,
                    predictor,
                    point_transform,
                    max_samples,
                )?;
                return Ok((frame, samples));
            }
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => {}
            // Anything else (APPn, COM, DQT, ...) is skipped by its length.
            _ => {
                let len = usize::from(u16_at(b, at)?);
                if len < 2 || at + len > b.len() {
                    return Err(format!("marker FF{code:02X} has a length past the end"));
                }
                at += len;
            }
        }
    }
}

fn decode_scan(
    data: &[u8],
    frame: FrameHeader,
    components: &[Component],
    tables: &[Option<HuffmanTable>; 4],
    predictor: u8,
    point_transform: u8,
    max_samples: usize,
) -> Result<Vec<u16>, String> {
    let (w, h, nc) = (
        frame.width as usize,
        frame.height as usize,
        components.len(),
    );
    let total = w * h * nc;
    if total > max_samples {
        return Err(format!(
            "it declares {w}x{h}x{nc} samples, more than the {max_samples} expected"
        ));
    }
    // Every sample takes at least one bit: a stream too short for the image is refused before
    // the image is allocated.
    if total > data.len().saturating_mul(8) {
        return Err(format!(
            "{} bytes of coded data cannot hold {total} samples",
            data.len()
        ));
    }
    let tables: Vec<&HuffmanTable> = components
        .iter()
        .map(|c| tables[c.table].as_ref().ok_or("a missing Huffman table"))
        .collect::<Result<_, _>>()?;
    let mut bits = BitReader {
        data,
        at: 0,
        bits: 0,
        available: 0,
    };
    let precision = u32::from(frame.precision - point_transform);
    let initial = 1i32 << (precision - 1);
    let mut out = vec![0u16; total];
    let stride = w * nc;
    for row in 0..h {
        for col in 0..w {
            for (c, table) in tables.iter().enumerate() {
                let i = row * stride + col * nc + c;
                let ra = || i32::from(out[i - nc]);
                let rb = || i32::from(out[i - stride]);
                let rc = || i32::from(out[i - stride - nc]);
                // T.81 H.1.2.1: the first row predicts from the left, the first column from
                // above, the first sample from half the range.
                let prediction = match (row, col) {
                    (0, 0) => initial,
                    (0, _) => ra(),
                    (_, 0) => rb(),
                    _ => match predictor {
                        1 => ra(),
                        2 => rb(),
                        3 => rc(),
                        4 => ra() + rb() - rc(),
                        5 => ra() + ((rb() - rc()) >> 1),
                        6 => rb() + ((ra() - rc()) >> 1),
                        _ => (ra() + rb()) >> 1,
                    },
                };
                let category = u32::from(bits.decode(table)?);
                let difference = match category {
                    0 => 0,
                    16 => 32768,
                    t => {
                        let v = bits.bits(t)? as i32;
                        if v < 1 << (t - 1) {
                            v - (1 << t) + 1
                        } else {
                            v
                        }
                    }
                };
                // Modulo 2^16 (H.1.2.1).
                out[i] = (prediction + difference) as u16;
            }
        }
    }
    if point_transform > 0 {
        for v in &mut out {
            *v <<= point_transform;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-component 4x2 stream by hand: predictor 1, one Huffman table giving category 0
    /// the code `0` and category 2 the code `10`, category 1 `11`.
    fn tiny_stream(predictor: u8) -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8];
        // SOF3: P 8, Y 2, X 4, one component id 1, 1x1, Tq 0.
        s.extend_from_slice(&[0xFF, 0xC3, 0, 11, 8, 0, 2, 0, 4, 1, 1, 0x11, 0]);
        // DHT: class 0 id 0, one code of length 1 (value 0), two of length 2 (values 2, 1).
        let mut counts = [0u8; 16];
        counts[0] = 1;
        counts[1] = 2;
        s.extend_from_slice(&[0xFF, 0xC4, 0, 2 + 1 + 16 + 3, 0x00]);
        s.extend_from_slice(&counts);
        s.extend_from_slice(&[0, 2, 1]);
        // SOS: one component id 1 table 0, Ss predictor, Se 0, Ah/Al 0.
        s.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0x00, predictor, 0, 0]);
        s
    }

    #[test]
    fn decodes_a_hand_made_stream() {
        // Codes: category 0 "0", category 2 "10", category 1 "11" (then 1 or 2 extra bits).
        // Row 0 (left neighbour): 128 (half the range, diff 0) "0"; 129 (+1) "11 1"; 129 "0";
        // 127 (-2) "10 01". Row 1: 128 (from above, 0) "0"; 130 (predictor 1: left +2)
        // "10 10"; 130 "0"; 129 (-1) "11 0".
        let mut s = tiny_stream(1);
        let predictor_at = s.len() - 3;
        let mut padded = "0".to_string() + "111" + "0" + "1001" + "0" + "1010" + "0" + "110";
        while !padded.len().is_multiple_of(8) {
            padded.push('1');
        }
        for chunk in padded.as_bytes().chunks(8) {
            let byte = u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 2).unwrap();
            s.push(byte);
            if byte == 0xFF {
                s.push(0);
            }
        }
        s.extend_from_slice(&[0xFF, 0xD9]);
        let f = decode(&s, 8).unwrap();
        assert_eq!((f.width, f.height, f.components, f.precision), (4, 2, 1, 8));
        assert_eq!(f.samples, vec![128, 129, 129, 127, 128, 130, 130, 129]);
        // Predictor 2 (above) reads the same bits differently from the second row's second
        // sample on: 129 + 2, 129 + 0, 127 - 1.
        let mut above = s.clone();
        above[predictor_at] = 2;
        assert_eq!(
            decode(&above, 8).unwrap().samples,
            vec![128, 129, 129, 127, 128, 131, 129, 126]
        );
        // A tighter cap, a cut, an unknown predictor.
        assert!(decode(&s, 7).unwrap_err().contains("more than the 7"));
        assert!(decode(&s[..s.len() - 4], 8).is_err());
        let mut bad = s.clone();
        bad[predictor_at] = 9;
        assert!(decode(&bad, 8).unwrap_err().contains("predictor 9"));
    }

    #[test]
    fn refuses_what_it_does_not_read() {
        assert!(decode(b"\x89PNG", 8).unwrap_err().contains("SOI"));
        let mut baseline = tiny_stream(1);
        baseline[3] = 0xC0;
        assert!(decode(&baseline, 8).unwrap_err().contains("SOF0"));
        assert!(
            decode(&[0xFF, 0xD8, 0xFF, 0xD9], 8)
                .unwrap_err()
                .contains("EOI")
        );
        // A Huffman table with three codes of one bit.
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xC4, 0, 22, 0, 3];
        s.extend_from_slice(&[0; 15]);
        s.extend_from_slice(&[0, 1, 2]);
        assert!(decode(&s, 8).unwrap_err().contains("more codes of 1 bits"));
    }
}
