//! NumPy `.npy` files (format version 1.0/2.0/3.0): little-endian f64 or f32, C order,
//! 1-d or 2-d. Enough for points in and derivatives out; anything else is a clear error.
//! Checked by the round-trip and malformed-file tests below.

use crate::error::{Error, Result};
use std::path::Path;

/// A 2-d array of f64 (a 1-d file reads as `n × 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct Array2 {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Parse `.npy` bytes (`path` only names the source in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array2> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad(path, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad(path, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(path, "header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = &header[i + key.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| bad(path, "header has no 'descr'"))?;
    let size = if descr.starts_with("'<f8'") {
        8
    } else if descr.starts_with("'<f4'") {
        4
    } else {
        return Err(bad(
            path,
            format!(
                "dtype {} not supported; expected little-endian float64 ('<f8') or float32 ('<f4')",
                descr.split(',').next().unwrap_or("")
            ),
        ));
    };
    let fortran =
        field("fortran_order").ok_or_else(|| bad(path, "header has no 'fortran_order'"))?;
    if fortran.starts_with("True") {
        return Err(bad(
            path,
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let shape = field("shape").ok_or_else(|| bad(path, "header has no 'shape'"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(path, "malformed shape"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(path, format!("malformed shape ({inner})")))
        })
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        _ => {
            return Err(bad(
                path,
                format!("expected a 1-d or 2-d array, got shape ({inner})"),
            ))
        }
    };
    let body = &bytes[start + hlen..];
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| bad(path, "shape overflows"))?;
    if body.len() != n * size {
        return Err(bad(
            path,
            format!(
                "shape ({inner}) needs {} data bytes, the file has {}",
                n * size,
                body.len()
            ),
        ));
    }
    let data = if size == 8 {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    };
    Ok(Array2 { rows, cols, data })
}

pub fn read(path: &Path) -> Result<Array2> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// Encode a `rows × cols` f64 array as `.npy` (version 1.0).
pub fn encode(rows: usize, cols: usize, data: &[f64]) -> Vec<u8> {
    assert_eq!(
        rows * cols,
        data.len(),
        "npy::encode: shape does not match the data"
    );
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // pad so that the data starts at a multiple of 64 bytes, header ends with '\n'
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let data: Vec<f64> = (0..12).map(|i| i as f64 * 0.5 - 1.0).collect();
        let b = encode(4, 3, &data);
        assert_eq!((b.len() - 12 * 8) % 64, 0);
        let a = parse(Path::new("x.npy"), &b).unwrap();
        assert_eq!((a.rows, a.cols), (4, 3));
        assert_eq!(a.data, data);
    }

    #[test]
    fn reads_f32_and_1d() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in [1.5f32, -2.0, 3.25] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let a = parse(Path::new("x.npy"), &b).unwrap();
        assert_eq!((a.rows, a.cols), (3, 1));
        assert_eq!(a.data, vec![1.5, -2.0, 3.25]);
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let p = Path::new("bad.npy");
        assert!(parse(p, b"hello")
            .unwrap_err()
            .to_string()
            .contains("not a .npy"));
        let mut b = encode(2, 2, &[1.0, 2.0, 3.0, 4.0]);
        b.truncate(b.len() - 3);
        let e = parse(p, &b).unwrap_err().to_string();
        assert!(e.contains("bad.npy") && e.contains("data bytes"), "{e}");
        let mut b = encode(1, 1, &[1.0]);
        let at = b.windows(3).position(|w| w == b"<f8").unwrap();
        b[at] = b'>';
        let e = parse(p, &b).unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
    }
}
