//! Checksums of a checkpoint file. safetensors has none, so a flipped bit on
//! disk or in a copy would otherwise be trained on without a word; TF's
//! bundles carry a CRC-32C per tensor for the same reason
//! (`tensor_bundle.proto`'s `BundleEntryProto.crc32c`).
//!
//! Every checkpoint ferroflow writes holds, in its safetensors metadata:
//! - `ferroflow.format = "2"`: the format with checksums;
//! - `ferroflow.checksums`: JSON `{"algorithm": "crc32c", "tensors": {name:
//!   crc}, "header": crc}`: a CRC-32C (Castagnoli, hardware-accelerated by
//!   the `crc32c` crate) of each tensor's bytes, and one of the header: every
//!   tensor's name, dtype, shape and stored CRC plus every other metadata
//!   entry, in a canonical order.
//!
//! Two keys, so that no single damaged byte can make a new checkpoint look
//! like one written before checksums: a file is taken as unchecked only when
//! it has neither. The safetensors header's padding must be spaces (what the
//! writer pads with), so that even a flip that leaves the JSON meaning
//! unchanged is reported.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The metadata key of the checksums.
pub const CHECKSUMS_KEY: &str = "ferroflow.checksums";
/// The metadata key of the format version.
pub const FORMAT_KEY: &str = "ferroflow.format";
/// The format version that carries checksums.
pub const FORMAT_WITH_CHECKSUMS: &str = "2";

/// What a loaded checkpoint's values are known to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Integrity {
    /// Every checksum matched (or the checkpoint was captured in memory).
    #[default]
    Verified,
    /// The file has no checksums (written before ferroflow stored them, or by
    /// another tool): its values could not be checked.
    NoChecksums,
}

/// The checksums stored in a checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksums {
    /// Always `crc32c`.
    pub algorithm: String,
    /// CRC-32C of each tensor's little-endian bytes, by name.
    pub tensors: BTreeMap<String, u32>,
    /// CRC-32C of the canonical header text ([`header_text`]).
    pub header: u32,
}

/// One tensor's entry in the header checksum.
#[derive(Debug, Clone)]
pub struct TensorEntry<'a> {
    /// Its name.
    pub name: &'a str,
    /// safetensors dtype, as `Debug` prints it (`F32`).
    pub dtype: String,
    /// Its shape.
    pub shape: &'a [usize],
}

/// The canonical text the header checksum covers: one line per tensor
/// (sorted by name: name, dtype, shape, stored CRC) and one per metadata
/// entry except the checksums (sorted by key; lengths first, so no two
/// different headers give the same text).
pub fn header_text(
    tensors: &[TensorEntry<'_>],
    crcs: &BTreeMap<String, u32>,
    meta: &HashMap<String, String>,
) -> String {
    let mut sorted: Vec<&TensorEntry<'_>> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(b.name));
    let mut text = String::new();
    for t in sorted {
        let crc = crcs.get(t.name).copied().unwrap_or(0);
        text.push_str(&format!("tensor {} {} {} {:?} {crc:08x}\n", t.name.len(), t.name, t.dtype, t.shape));
    }
    let mut keys: Vec<&String> = meta.keys().filter(|k| k.as_str() != CHECKSUMS_KEY).collect();
    keys.sort();
    for k in keys {
        let v = &meta[k];
        text.push_str(&format!("meta {} {k} {} {v}\n", k.len(), v.len()));
    }
    text
}

/// The CRC-32C of a tensor's bytes (the caller computes them, in parallel
/// and in the same pass as its conversion of the values).
pub fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The checksums of a checkpoint about to be written: `tensors` with the
/// [`crc`] of their bytes, `meta` its metadata (without the checksums, with
/// the format key).
pub fn compute(tensors: &[(TensorEntry<'_>, u32)], meta: &HashMap<String, String>) -> Checksums {
    let crcs: BTreeMap<String, u32> = tensors.iter().map(|(t, crc)| (t.name.to_string(), *crc)).collect();
    let entries: Vec<TensorEntry<'_>> = tensors.iter().map(|(t, _)| t.clone()).collect();
    let header = crc32c::crc32c(header_text(&entries, &crcs, meta).as_bytes());
    Checksums { algorithm: "crc32c".to_string(), tensors: crcs, header }
}

fn damaged(path: &str, reason: String) -> TrainError {
    TrainError::Checkpoint { path: path.to_string(), reason: format!("damaged checkpoint: {reason}") }
}

/// Checks the header padding of safetensors `bytes`: the writer pads the
/// JSON header with spaces, so any other byte there is damage (JSON would
/// take a tab or newline as whitespace and never notice).
pub fn check_padding(bytes: &[u8], path: &str) -> Result<()> {
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))) else {
        return Ok(());
    };
    let Some(header) = usize::try_from(len).ok().and_then(|n| bytes.get(8..8usize.checked_add(n)?)) else {
        return Ok(()); // safetensors reports a bad length itself
    };
    let end = header.iter().rposition(|&b| b == b'}').map_or(0, |i| i + 1);
    if let Some(i) = header[end..].iter().position(|&b| b != b' ') {
        return Err(damaged(
            path,
            format!("byte {} (in the header's padding) is 0x{:02x}, not a space", 8 + end + i, header[end + i]),
        ));
    }
    Ok(())
}

/// Verifies a parsed file: `tensors` with the [`crc`] of their bytes as
/// read, `meta` its whole metadata. Returns [`Integrity::NoChecksums`] for a file with
/// neither checksum key; any mismatch is an error naming the tensor (or the
/// header) and both checksums.
pub fn verify(tensors: &[(TensorEntry<'_>, u32)], meta: &HashMap<String, String>, path: &str) -> Result<Integrity> {
    let (stored, format) = (meta.get(CHECKSUMS_KEY), meta.get(FORMAT_KEY));
    let stored = match (stored, format) {
        (None, None) => return Ok(Integrity::NoChecksums),
        (None, Some(f)) => {
            return Err(damaged(path, format!("{FORMAT_KEY} is {f:?} but the metadata has no {CHECKSUMS_KEY}")));
        }
        (Some(s), _) => s,
    };
    let stored: Checksums = serde_json::from_str(stored)
        .map_err(|e| damaged(path, format!("metadata {CHECKSUMS_KEY} is not valid ({e}): {stored:?}")))?;
    if stored.algorithm != "crc32c" {
        return Err(damaged(path, format!("checksum algorithm {:?}; ferroflow writes crc32c", stored.algorithm)));
    }
    let entries: Vec<TensorEntry<'_>> = tensors.iter().map(|(t, _)| t.clone()).collect();
    let header = crc32c::crc32c(header_text(&entries, &stored.tensors, meta).as_bytes());
    if header != stored.header {
        return Err(damaged(
            path,
            format!(
                "the header (tensor names, dtypes, shapes, metadata) has crc32c {header:08x}, but {:08x} was stored",
                stored.header
            ),
        ));
    }
    if format.map(String::as_str) != Some(FORMAT_WITH_CHECKSUMS) {
        return Err(damaged(path, format!("{FORMAT_KEY} is {format:?}, expected {FORMAT_WITH_CHECKSUMS:?}")));
    }
    let names: Vec<&str> = tensors.iter().map(|(t, _)| t.name).collect();
    if let Some(missing) = stored.tensors.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(damaged(path, format!("tensor {missing:?} has a checksum but is not in the file")));
    }
    for (t, got) in tensors {
        let got = *got;
        let Some(&want) = stored.tensors.get(t.name) else {
            return Err(damaged(path, format!("tensor {:?} has no stored checksum", t.name)));
        };
        if got != want {
            return Err(damaged(path, format!("tensor {:?} has crc32c {got:08x}, but {want:08x} was stored", t.name)));
        }
    }
    Ok(Integrity::Verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(name: &'a str, shape: &'a [usize]) -> TensorEntry<'a> {
        TensorEntry { name, dtype: "F32".into(), shape }
    }

    #[test]
    fn verifies_what_it_computed_and_names_the_damage() {
        let meta: HashMap<String, String> = [(FORMAT_KEY.to_string(), FORMAT_WITH_CHECKSUMS.to_string())].into();
        let (a, b) = ([1u8, 2, 3, 4], [9u8; 8]);
        let tensors = [(entry("w", &[1]), crc(&a)), (entry("b", &[2]), crc(&b))];
        let sums = compute(&tensors, &meta);
        let mut full = meta.clone();
        full.insert(CHECKSUMS_KEY.into(), serde_json::to_string(&sums).unwrap());
        assert_eq!(verify(&tensors, &full, "f").unwrap(), Integrity::Verified);

        let bad = [4u8, 2, 3, 4];
        let e = verify(&[(entry("w", &[1]), crc(&bad)), (entry("b", &[2]), crc(&b))], &full, "f").unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with("f: damaged checkpoint: tensor \"w\"") && e.contains(&format!("{:08x}", sums.tensors["w"]))
        );

        // A shape or a metadata value that changed is the header's damage.
        let e = verify(&[(entry("w", &[4]), crc(&a)), (entry("b", &[2]), crc(&b))], &full, "f").unwrap_err();
        assert!(e.to_string().contains("the header"), "{e}");
        let mut other = full.clone();
        other.insert("ferroflow.version".into(), "x".into());
        assert!(verify(&tensors, &other, "f").unwrap_err().to_string().contains("the header"));

        // Neither key: an old file; one of the two: damage.
        assert_eq!(verify(&tensors, &HashMap::new(), "f").unwrap(), Integrity::NoChecksums);
        assert!(verify(&tensors, &meta, "f").is_err());
    }

    #[test]
    fn header_padding_must_be_spaces() {
        let mut bytes = 16u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{\"a\":1}         ");
        check_padding(&bytes, "f").unwrap();
        bytes[20] = b'\t';
        assert!(check_padding(&bytes, "f").unwrap_err().to_string().contains("byte 20"));
    }
}
