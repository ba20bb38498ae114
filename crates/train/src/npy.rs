//! NumPy's `.npy` format, version 1.0–3.0 (`numpy/lib/format.py`): the magic
//! `\x93NUMPY`, a version, a little-endian header length (2 bytes in 1.0, 4
//! in 2.0+), a Python-literal dict header `{'descr': …, 'fortran_order': …,
//! 'shape': (…)}`, then the raw data. Only what `predict` needs: the header
//! and the data bytes, checked against the shape.

/// A parsed `.npy` file, borrowing its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy<'a> {
    /// The dtype string, e.g. `<f4`.
    pub descr: String,
    /// Column-major data.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// The data bytes (exactly `product(shape) * itemsize`).
    pub data: &'a [u8],
}

/// A malformed `.npy` file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a valid .npy file: {0}")]
pub struct NpyError(pub String);

impl<'a> Npy<'a> {
    /// Parses `bytes`.
    ///
    /// ```
    /// use ferroflow_train::npy::Npy;
    /// let mut file = b"\x93NUMPY\x01\x00".to_vec();
    /// let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    /// let padded = format!("{header:<117}\n"); // 10 + 118 = 128 bytes, as NumPy aligns
    /// file.extend((padded.len() as u16).to_le_bytes());
    /// file.extend(padded.as_bytes());
    /// file.extend(1.5f32.to_le_bytes());
    /// file.extend((-2f32).to_le_bytes());
    /// let npy = Npy::parse(&file).unwrap();
    /// assert_eq!((npy.descr.as_str(), npy.shape.as_slice(), npy.data.len()), ("<f4", &[2][..], 8));
    /// ```
    pub fn parse(bytes: &'a [u8]) -> Result<Npy<'a>, NpyError> {
        let bad = |m: String| Err(NpyError(m));
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return bad("it does not start with \\x93NUMPY".into());
        }
        let (header_len, start) = match bytes[6] {
            1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
            2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
            v => return bad(format!("unknown format version {v}")),
        };
        let Some(header) = bytes.get(start..start + header_len) else {
            return bad(format!("the header claims {header_len} bytes but the file has {}", bytes.len()));
        };
        let header = std::str::from_utf8(header).map_err(|_| NpyError("the header is not text".into()))?;
        let descr = quoted_value(header, "descr").ok_or_else(|| NpyError(format!("no 'descr' in {header:?}")))?;
        let fortran_order = match raw_value(header, "fortran_order") {
            Some(v) if v.starts_with("True") => true,
            Some(v) if v.starts_with("False") => false,
            _ => return bad(format!("no 'fortran_order' in {header:?}")),
        };
        let shape_text = raw_value(header, "shape")
            .and_then(|v| v.strip_prefix('('))
            .and_then(|v| v.split_once(')'))
            .map(|(inside, _)| inside)
            .ok_or_else(|| NpyError(format!("no 'shape' tuple in {header:?}")))?;
        let shape = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('L').parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| NpyError(format!("bad shape ({shape_text})")))?;
        let itemsize: usize = descr
            .get(2..)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| NpyError(format!("unsupported dtype {descr:?}")))?;
        let want = shape.iter().product::<usize>() * itemsize;
        let data = &bytes[start + header_len..];
        if data.len() != want {
            return bad(format!("shape {shape:?} of {descr} needs {want} data bytes, the file has {}", data.len()));
        }
        Ok(Npy { descr, fortran_order, shape, data })
    }
}

/// The text after `'key':` in a header dict, trimmed.
fn raw_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

/// A quoted string value in a header dict.
fn quoted_value(header: &str, key: &str) -> Option<String> {
    let v = raw_value(header, key)?;
    let quote = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = v[1..].find(quote)?;
    Some(v[1..1 + end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_shapes_and_rejects_damage() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2, 1), }\n";
        let f = file(h, &[0; 16]);
        assert_eq!(Npy::parse(&f).unwrap().shape, [1, 2, 2, 1]);
        let e = Npy::parse(&f[..f.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("needs 16 data bytes, the file has 15"), "{e}");
        assert!(Npy::parse(b"PK\x03\x04 a zip").unwrap_err().to_string().contains("\\x93NUMPY"));
        let scalar = file("{'descr': '<f8', 'fortran_order': True, 'shape': (), }\n", &[0; 8]);
        let npy = Npy::parse(&scalar).unwrap();
        assert_eq!((npy.descr.as_str(), npy.fortran_order, npy.shape.len()), ("<f8", true, 0));
    }
}
