//! Minimal `.npy` (NumPy format 1.0) writer and reader for float32 arrays.

use std::path::Path;

use crate::error::{Result, TriscopeError};

/// Encode a C-order float32 array with `shape` as `.npy` bytes.
pub fn encode_f32(values: &[f32], shape: &[usize]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f4", shape, &data)
}

/// Encode raw little-endian `data` of NumPy `dtype` (e.g. `<f4`, `|u1`) and `shape`.
pub fn encode(dtype: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_str = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape_str}, }}");
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Write a float32 `.npy` file.
pub fn write_f32(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    debug_assert_eq!(values.len(), shape.iter().product::<usize>());
    std::fs::write(path, encode_f32(values, shape)).map_err(|source| TriscopeError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A decoded `.npy` array: shape, NumPy dtype string (e.g. `<f4`, `|u1`) and raw data.
#[derive(Debug, Clone)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub data: Vec<u8>,
}

impl NpyArray {
    /// Values as u8 (for `|u1` / `<u1` arrays).
    pub fn as_u8(&self) -> std::result::Result<&[u8], String> {
        match self.dtype.as_str() {
            "|u1" | "<u1" | "u1" => Ok(&self.data),
            other => Err(format!("expected uint8, found dtype {other}")),
        }
    }

    /// Values converted to i64 (integer dtypes up to 64 bits, little-endian).
    pub fn to_i64(&self) -> std::result::Result<Vec<i64>, String> {
        let d = &self.data;
        Ok(match self.dtype.as_str() {
            "|u1" | "<u1" | "u1" => d.iter().map(|&v| v as i64).collect(),
            "|i1" | "<i1" | "i1" => d.iter().map(|&v| v as i8 as i64).collect(),
            "<u2" => d
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            "<i2" => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            "<i4" => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            "<u4" => d
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            "<i8" => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            other => return Err(format!("expected an integer array, found dtype {other}")),
        })
    }
}

/// Decode a `.npy` file (version 1-3, C order, little-endian or byte-sized dtypes).
pub fn decode(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + header_len)
            .ok_or("truncated header")?,
    )
    .map_err(|_| "header is not UTF-8")?;
    if header.contains("'fortran_order': True") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let dtype = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .ok_or("no dtype in header")?
        .to_string();
    let itemsize: usize = dtype
        .trim_start_matches(['<', '|', '>', '='])
        .get(1..)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unsupported dtype {dtype}"))?;
    if dtype.starts_with('>') && itemsize > 1 {
        return Err(format!("big-endian dtype {dtype} is not supported"));
    }
    let shape_src = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or("no shape in header")?;
    let shape: Vec<usize> = shape_src
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension '{s}'"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let data = &bytes[start + header_len..];
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(itemsize))
        .ok_or("declared size overflows")?;
    if data.len() != n {
        return Err(format!(
            "{} data bytes, the header declares {n}",
            data.len()
        ));
    }
    Ok(NpyArray {
        shape,
        dtype,
        data: data.to_vec(),
    })
}

/// Decode a little-endian float32 `.npy` written by [`encode_f32`] or NumPy.
pub fn decode_f32(bytes: &[u8]) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    let a = decode(bytes)?;
    if a.dtype != "<f4" {
        return Err(format!(
            "only little-endian float32 is supported, found {}",
            a.dtype
        ));
    }
    let values = a
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((a.shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_alignment() {
        let values: Vec<f32> = (0..6).map(|v| v as f32 * 0.5).collect();
        let bytes = encode_f32(&values, &[2, 3]);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let (shape, back) = decode_f32(&bytes).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(back, values);
        assert!(decode_f32(b"garbage").is_err());
        // A header that lies about the size is refused, not trusted.
        let mut lying = bytes.clone();
        lying.truncate(lying.len() - 4);
        assert!(decode(&lying).unwrap_err().contains("data bytes"));
    }
}
