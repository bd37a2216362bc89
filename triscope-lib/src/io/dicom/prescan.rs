//! The structural pre-scan: the file's element structure walked before dicom-rs sees it (every
//! declared length within the bytes that follow, sequences nested at most
//! [`MAX_SEQUENCE_DEPTH`] deep), the transfer syntax read as dicom-rs reads it, a deflated data
//! set inflated with a cap, and the VR encoding a data set really uses.

use super::*;

/// Where the file meta group lies, which transfer syntax it names, and how the data set is
/// really encoded.
pub(super) struct Layout {
    /// Offset of the "DICM" marker (what `FileMetaTable::from_reader` expects first).
    pub(super) meta_start: usize,
    /// Offset of the data set's first byte (in the file; in `inflated` it is 0).
    pub(super) meta_end: usize,
    pub(super) transfer_syntax: String,
    /// The encoding the transfer syntax names, and the one its data set uses.
    pub(super) declared: Encoding,
    pub(super) encoding: Encoding,
    /// The inflated data set of a deflated syntax.
    pub(super) inflated: Option<Vec<u8>>,
}

impl Layout {
    /// The data set's bytes.
    pub(super) fn data_set<'a>(&'a self, file: &'a [u8]) -> &'a [u8] {
        self.inflated.as_deref().unwrap_or(&file[self.meta_end..])
    }

    /// The native syntax dicom-rs reads the data set with: the file's own unless the data set
    /// was inflated here or contradicts its VR rule.
    pub(super) fn read_syntax(&self) -> &str {
        if self.inflated.is_none() && self.encoding == self.declared {
            &self.transfer_syntax
        } else if !self.encoding.explicit {
            IMPLICIT_LE
        } else if self.encoding.big_endian {
            "1.2.840.10008.1.2.2"
        } else {
            EXPLICIT_LE
        }
    }
}

pub(super) const UNDEFINED: u32 = 0xFFFF_FFFF;
pub(super) const ITEM: (u16, u16) = (0xFFFE, 0xE000);
pub(super) const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
pub(super) const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
pub(super) const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Encoding {
    pub(super) explicit: bool,
    pub(super) big_endian: bool,
}

impl Encoding {
    pub(super) fn u16(self, b: &[u8], at: usize) -> std::result::Result<u16, String> {
        let s = b
            .get(at..at + 2)
            .ok_or_else(|| format!("the file is truncated at byte {at}"))?;
        Ok(if self.big_endian {
            u16::from_be_bytes([s[0], s[1]])
        } else {
            u16::from_le_bytes([s[0], s[1]])
        })
    }

    pub(super) fn u32(self, b: &[u8], at: usize) -> std::result::Result<u32, String> {
        let s = b
            .get(at..at + 4)
            .ok_or_else(|| format!("the file is truncated at byte {at}"))?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }
}

pub(super) const LE_EXPLICIT: Encoding = Encoding {
    explicit: true,
    big_endian: false,
};
pub(super) const LE_IMPLICIT: Encoding = Encoding {
    explicit: false,
    big_endian: false,
};

/// One element header.
pub(super) struct Header {
    pub(super) tag: (u16, u16),
    /// Explicit VR, or the dictionary's for implicit VR.
    pub(super) is_sequence: bool,
    /// An explicit UN of undefined length: its items are implicit VR little endian.
    pub(super) implicit_inside: bool,
    /// Size of one value of a binary VR (1 for text and bytes): dicom-rs reads
    /// `len / unit` values, so a length that is not a multiple would shift everything after.
    pub(super) unit: usize,
    pub(super) len: u32,
    /// Offset of the value.
    pub(super) value: usize,
}

pub(super) fn read_header(
    b: &[u8],
    at: usize,
    enc: Encoding,
) -> std::result::Result<Header, String> {
    let tag = (enc.u16(b, at)?, enc.u16(b, at + 2)?);
    // Item and delimitation tags have no VR in any encoding.
    if tag.0 == 0xFFFE {
        return Ok(Header {
            tag,
            is_sequence: false,
            implicit_inside: false,
            unit: 1,
            len: enc.u32(b, at + 4)?,
            value: at + 8,
        });
    }
    if enc.explicit {
        let vr = b
            .get(at + 4..at + 6)
            .ok_or_else(|| format!("the file is truncated at byte {}", at + 4))?;
        // The VRs with a 2-byte length (PS3.5 7.1.2); dicom-rs reads any other one, unknown
        // ones as UN, with a 4-byte length, and so must this check.
        let short = matches!(
            vr,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FL"
                | b"FD"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        );
        let long = !short;
        let (len, value) = if long {
            (enc.u32(b, at + 8)?, at + 12)
        } else {
            (u32::from(enc.u16(b, at + 6)?), at + 8)
        };
        // UN (or an unknown VR) with an undefined length holds an implicit-VR sequence.
        let implicit_inside = vr != b"SQ" && len == UNDEFINED;
        Ok(Header {
            tag,
            is_sequence: vr == b"SQ" || implicit_inside,
            implicit_inside,
            unit: vr_unit(vr),
            len,
            value,
        })
    } else {
        let len = enc.u32(b, at + 4)?;
        let entry = StandardDataDictionary.by_tag(Tag(tag.0, tag.1));
        let (is_sq, unit) = match entry.map(|e| e.vr()) {
            Some(VirtualVr::Exact(vr)) => (vr == dicom_core::VR::SQ, vr_unit(&vr.to_bytes())),
            Some(VirtualVr::Xs | VirtualVr::Ox | VirtualVr::Px) => (false, 2),
            _ => (false, 1),
        };
        Ok(Header {
            tag,
            is_sequence: len == UNDEFINED || is_sq,
            implicit_inside: false,
            unit,
            len,
            value: at + 8,
        })
    }
}

/// Bytes per value of a binary VR; 1 for the others.
pub(super) fn vr_unit(vr: &[u8]) -> usize {
    match vr {
        b"US" | b"SS" | b"OW" => 2,
        b"UL" | b"SL" | b"FL" | b"AT" | b"OL" | b"OF" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => 1,
    }
}

pub(super) fn scan(b: &[u8]) -> std::result::Result<Layout, String> {
    let meta_start = if b.get(128..132) == Some(b"DICM") {
        128
    } else if b.starts_with(b"DICM") {
        0
    } else {
        return Err("not a DICOM Part 10 file (no DICM marker at byte 128)".into());
    };
    // dicom-rs reads the file meta group by its group length (0002,0000), which must come
    // first; the elements must fill exactly that many bytes, or the parser and this check
    // would disagree on where the data set starts.
    let group = read_header(b, meta_start + 4, LE_EXPLICIT)?;
    if group.tag != (0x0002, 0x0000) || group.len != 4 {
        return Err("its file meta group does not start with its group length (0002,0000)".into());
    }
    let group_end = value_end(b, &group, b.len())?;
    let meta_end = group_end
        .checked_add(LE_EXPLICIT.u32(b, group.value)? as usize)
        .filter(|&e| e <= b.len())
        .ok_or("the file meta group length (0002,0000) points past the end of the file")?;
    let mut at = group_end;
    let mut transfer_syntax = None;
    while at < meta_end {
        let h = read_header(b, at, LE_EXPLICIT)?;
        if h.tag.0 != 0x0002 {
            return Err(format!(
                "element ({:04X},{:04X}) inside the file meta group",
                h.tag.0, h.tag.1
            ));
        }
        let end = value_end(b, &h, meta_end)?;
        if h.tag == (0x0002, 0x0010) {
            if transfer_syntax.is_some() {
                return Err("its file meta group names a transfer syntax (0002,0010) twice".into());
            }
            // Trimmed as dicom-rs trims it (trailing whitespace of any kind and NULs; here
            // only ASCII ones, so a UID this accepts is the one dicom-rs reads): the walk
            // below must use the encoding the parser will use, or its length checks are
            // about other bytes (a trailing newline once made this walk read an implicit-VR
            // data set as explicit, and dicom-rs allocate 2 GiB).
            let uid = String::from_utf8_lossy(&b[h.value..end]);
            transfer_syntax = Some(
                uid.trim_end_matches(|c: char| c.is_ascii_whitespace() || c == '\0')
                    .to_string(),
            );
        }
        at = end;
    }
    let transfer_syntax =
        transfer_syntax.ok_or("its file meta group has no transfer syntax (0002,0010)")?;
    let declared = match transfer_syntax.as_str() {
        IMPLICIT_LE => LE_IMPLICIT,
        "1.2.840.10008.1.2.2" => Encoding {
            explicit: true,
            big_endian: true,
        },
        _ => LE_EXPLICIT,
    };
    let inflated = if DEFLATED.contains(&transfer_syntax.as_str()) {
        Some(inflate(&b[meta_end..], MAX_DICOM_FILE_BYTES as usize)?)
    } else {
        None
    };
    let (data, data_at) = match &inflated {
        Some(d) => (d.as_slice(), 0),
        None => (b, meta_end),
    };
    let encoding = detect_vr(data, data_at, declared);
    walk_items(data, data_at, data.len(), encoding, 0, false)?;
    Ok(Layout {
        meta_start,
        meta_end,
        transfer_syntax,
        declared,
        encoding,
        inflated,
    })
}

/// The data set of a deflated syntax (PS3.5 A.5: raw deflate, RFC 1951), inflated to at most
/// `limit` bytes ([`MAX_DICOM_FILE_BYTES`]): a few kilobytes of deflate can claim gigabytes.
pub(super) fn inflate(deflated: &[u8], limit: usize) -> std::result::Result<Vec<u8>, String> {
    use miniz_oxide::inflate::TINFLStatus;
    miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, limit).map_err(|e| {
        let why = match e.status {
            TINFLStatus::HasMoreOutput => {
                return format!(
                    "its deflated data set inflates to more than the {} MiB limit",
                    limit >> 20
                );
            }
            TINFLStatus::FailedCannotMakeProgress => "the deflate stream is truncated".into(),
            other => format!("not a valid deflate stream: {other:?}"),
        };
        format!("its deflated data set cannot be inflated ({why})")
    })
}

/// The encoding the data set really uses. Little-endian data sets whose first element
/// contradicts the syntax's VR rule are read the way they are written, as pydicom reads them
/// (with a warning): an explicit-VR syntax over implicit-VR elements is a known export fault.
pub(super) fn detect_vr(data: &[u8], at: usize, declared: Encoding) -> Encoding {
    if declared.big_endian {
        return declared;
    }
    let Some(vr) = data.get(at + 4..at + 6) else {
        return declared;
    };
    let is_vr = dicom_core::VR::from_binary([vr[0], vr[1]]).is_some();
    match (declared.explicit, is_vr) {
        (true, false) => LE_IMPLICIT,
        (false, true) => LE_EXPLICIT,
        _ => declared,
    }
}

/// The end of a defined-length value, which must lie inside its container.
pub(super) fn value_end(
    b: &[u8],
    h: &Header,
    container_end: usize,
) -> std::result::Result<usize, String> {
    if h.len == UNDEFINED {
        return Err(format!(
            "element ({:04X},{:04X}) has an undefined length where one is required",
            h.tag.0, h.tag.1
        ));
    }
    if !(h.len as usize).is_multiple_of(h.unit) {
        return Err(format!(
            "element ({:04X},{:04X}) has a length of {} bytes, not a multiple of its {}-byte \
             values",
            h.tag.0, h.tag.1, h.len, h.unit
        ));
    }
    let end = h.value.saturating_add(h.len as usize);
    if end > container_end.min(b.len()) {
        return Err(format!(
            "element ({:04X},{:04X}) declares {} bytes but only {} follow (truncated or corrupt \
             file)",
            h.tag.0,
            h.tag.1,
            h.len,
            container_end.min(b.len()).saturating_sub(h.value)
        ));
    }
    Ok(end)
}

/// Walk the elements of a data set from `at` to `end` (or to an item delimiter when
/// `undefined_item`); returns the offset after the last byte consumed.
pub(super) fn walk_items(
    b: &[u8],
    mut at: usize,
    end: usize,
    enc: Encoding,
    depth: usize,
    undefined_item: bool,
) -> std::result::Result<usize, String> {
    if depth > MAX_SEQUENCE_DEPTH {
        return Err(format!(
            "sequences are nested deeper than {MAX_SEQUENCE_DEPTH} levels"
        ));
    }
    while at < end {
        // Trailing padding shorter than a header is tolerated at the top level.
        if depth == 0 && end - at < 8 {
            return Ok(end);
        }
        let h = read_header(b, at, enc)?;
        // dicom-rs reads any (FFFE,xxxx) tag as an 8-byte item or delimiter header and goes
        // on with what follows as elements: only an item's end is valid here, anything else
        // is refused rather than read differently from the parser.
        if h.tag.0 == 0xFFFE {
            if h.tag == ITEM_END && undefined_item {
                return Ok(h.value);
            }
            return Err(format!(
                "an item or delimiter tag ({:04X},{:04X}) at byte {at} where a data element \
                 belongs",
                h.tag.0, h.tag.1
            ));
        }
        at = if h.len == UNDEFINED {
            if h.tag == PIXEL_DATA {
                walk_fragments(b, h.value, end, enc)?
            } else if h.is_sequence {
                let inner = if h.implicit_inside {
                    Encoding {
                        explicit: false,
                        big_endian: false,
                    }
                } else {
                    enc
                };
                walk_sequence(b, h.value, end, inner, depth + 1, None)?
            } else {
                return Err(format!(
                    "element ({:04X},{:04X}) has an undefined length but is not a sequence",
                    h.tag.0, h.tag.1
                ));
            }
        } else {
            let value_end = value_end(b, &h, end)?;
            if h.is_sequence {
                walk_sequence(b, h.value, value_end, enc, depth + 1, Some(value_end))?;
            }
            value_end
        };
    }
    if undefined_item {
        return Err("an item of undefined length is not closed (truncated file)".into());
    }
    Ok(at)
}

/// Items of a sequence, up to `defined_end` or a sequence delimiter.
pub(super) fn walk_sequence(
    b: &[u8],
    mut at: usize,
    end: usize,
    enc: Encoding,
    depth: usize,
    defined_end: Option<usize>,
) -> std::result::Result<usize, String> {
    loop {
        if let Some(e) = defined_end
            && at >= e
        {
            return Ok(e);
        }
        if at >= end {
            return Err("a sequence of undefined length is not closed (truncated file)".into());
        }
        let h = read_header(b, at, enc)?;
        match h.tag {
            SEQUENCE_END if defined_end.is_none() => return Ok(h.value),
            ITEM if h.len == UNDEFINED => {
                at = walk_items(b, h.value, end, enc, depth, true)?;
            }
            ITEM => {
                let item_end = value_end(b, &h, end)?;
                walk_items(b, h.value, item_end, enc, depth, false)?;
                at = item_end;
            }
            (g, e) => {
                return Err(format!(
                    "a sequence holds ({g:04X},{e:04X}) at byte {at} where an item belongs"
                ));
            }
        }
    }
}

/// Encapsulated pixel data: items of defined length up to a sequence delimiter.
pub(super) fn walk_fragments(
    b: &[u8],
    mut at: usize,
    end: usize,
    enc: Encoding,
) -> std::result::Result<usize, String> {
    loop {
        if at >= end {
            return Err("the encapsulated pixel data is not closed (truncated file)".into());
        }
        let h = read_header(b, at, enc)?;
        match h.tag {
            SEQUENCE_END => return Ok(h.value),
            ITEM => at = value_end(b, &h, end)?,
            (g, e) => {
                return Err(format!(
                    "the encapsulated pixel data holds ({g:04X},{e:04X}) at byte {at} where a \
                     fragment belongs"
                ));
            }
        }
    }
}
