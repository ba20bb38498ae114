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

use std::borrow::Cow;
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

/// [`Checksums`] as read, borrowing the names from the metadata string (no
/// allocation per tensor; escaped names, which ferroflow never writes, are
/// copied).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredChecksums<'a> {
    #[serde(borrow)]
    algorithm: Cow<'a, str>,
    /// By name; a `Vec` of the map's entries, sorted after reading (the
    /// writer's JSON is sorted already), because a `BTreeMap` built entry by
    /// entry was a third of [`verify`]'s time for resnet20's 173 tensors.
    #[serde(borrow, deserialize_with = "entries")]
    tensors: Vec<(Cow<'a, str>, u32)>,
    header: u32,
}

/// Reads a JSON object into its entries, in the file's order.
fn entries<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<(Cow<'de, str>, u32)>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<(Cow<'de, str>, u32)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of tensor names to CRC-32C values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((k, v)) = map.next_entry::<BorrowedName<'de>, u32>()? {
                out.push((k.0, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Entries)
}

/// A map key borrowed from the JSON text where it has no escapes.
struct BorrowedName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wrap<'a>(#[serde(borrow)] Cow<'a, str>);
        Wrap::deserialize(d).map(|w| BorrowedName(w.0))
    }
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
/// `crc_of` gives each tensor's stored CRC (0 when it has none).
pub fn header_text<'t>(
    tensors: impl IntoIterator<Item = &'t TensorEntry<'t>>,
    crc_of: impl Fn(&str) -> Option<u32>,
    meta: &HashMap<String, String>,
) -> String {
    use std::fmt::Write;
    let mut sorted: Vec<&TensorEntry<'_>> = tensors.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(b.name));
    // Written in place (a `format!` per line was half of verify's 50 us).
    let mut text = String::with_capacity(64 * (sorted.len() + meta.len()));
    // Numbers are appended by hand: `write!`'s formatter machinery was most
    // of this function's time (173 tensors: resnet20 with its Momentum slots).
    for t in sorted {
        let crc = crc_of(t.name).unwrap_or(0);
        text.push_str("tensor ");
        push_decimal(&mut text, t.name.len());
        text.push(' ');
        text.push_str(t.name);
        text.push(' ');
        text.push_str(&t.dtype);
        // The shape as `{:?}` prints it: `[3, 3, 64]`, `[]`.
        text.push_str(" [");
        for (i, &d) in t.shape.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            push_decimal(&mut text, d);
        }
        text.push_str("] ");
        push_hex8(&mut text, crc);
        text.push('\n');
    }
    let mut keys: Vec<&String> = meta.keys().filter(|k| k.as_str() != CHECKSUMS_KEY).collect();
    keys.sort_unstable();
    for k in keys {
        let v = &meta[k];
        let _ = writeln!(text, "meta {} {k} {} {v}", k.len(), v.len());
    }
    text
}

/// Appends `n` in decimal (what `{}` prints).
fn push_decimal(text: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend(digits[i..].iter().map(|&d| d as char));
}

/// Appends `v` as eight lowercase hex digits (what `{:08x}` prints).
fn push_hex8(text: &mut String, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    text.extend((0..8).rev().map(|i| HEX[((v >> (4 * i)) & 0xf) as usize] as char));
}

/// The CRC-32C of a tensor's bytes (on restore, the reader computes them
/// chunk by chunk as it reads: `reader.rs`).
pub fn crc(bytes: &[u8]) -> u32 {
    tfrecord::crc32c(bytes)
}

/// The checksums of a checkpoint about to be written: `tensors` with the
/// [`crc`] of their bytes, `meta` its metadata (without the checksums, with
/// the format key).
pub fn compute(tensors: &[(TensorEntry<'_>, u32)], meta: &HashMap<String, String>) -> Checksums {
    let crcs: BTreeMap<String, u32> = tensors.iter().map(|(t, crc)| (t.name.to_string(), *crc)).collect();
    let text = header_text(tensors.iter().map(|(t, _)| t), |name| crcs.get(name).copied(), meta);
    let header = tfrecord::crc32c(text.as_bytes());
    Checksums { algorithm: "crc32c".to_string(), tensors: crcs, header }
}

fn damaged(path: &str, reason: String) -> TrainError {
    TrainError::Checkpoint { path: path.to_string(), reason: format!("damaged checkpoint: {reason}") }
}

/// Checks the padding of a safetensors JSON `header` (the bytes after the
/// 8-byte length): the writer pads it with spaces, so any other byte there
/// is damage (JSON would take a tab or newline as whitespace and never
/// notice). Positions in the error count from the file's start.
pub fn check_padding(header: &[u8], path: &str) -> Result<()> {
    let end = header.iter().rposition(|&b| b == b'}').map_or(0, |i| i + 1);
    if let Some(i) = header[end..].iter().position(|&b| b != b' ') {
        return Err(damaged(
            path,
            format!("byte {} (in the header's padding) is 0x{:02x}, not a space", 8 + end + i, header[end + i]),
        ));
    }
    Ok(())
}

/// `bytes` (a safetensors checkpoint) without its checksum keys: the file as
/// a ferroflow before format 2 wrote it. For measuring what the checksums
/// cost (`ferroflow bench checkpoint`) and for tests of the older files.
pub fn without_checksums(bytes: &[u8], path: &str) -> Result<Vec<u8>> {
    let bad = |e: safetensors::SafeTensorError| TrainError::Checkpoint {
        path: path.to_string(),
        reason: format!("not a safetensors checkpoint: {e}"),
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut meta =
        safetensors::SafeTensors::read_metadata(bytes).map_err(bad)?.1.metadata().clone().unwrap_or_default();
    meta.remove(CHECKSUMS_KEY);
    meta.remove(FORMAT_KEY);
    safetensors::serialize(st.tensors(), Some(meta)).map_err(bad)
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
    let mut stored: StoredChecksums<'_> = serde_json::from_str(stored)
        .map_err(|e| damaged(path, format!("metadata {CHECKSUMS_KEY} is not valid ({e}): {stored:?}")))?;
    stored.tensors.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = stored.tensors.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(damaged(path, format!("metadata {CHECKSUMS_KEY} names tensor {:?} twice", w[0].0)));
    }
    let stored_crc =
        |name: &str| stored.tensors.binary_search_by(|(k, _)| k.as_ref().cmp(name)).ok().map(|i| stored.tensors[i].1);
    if stored.algorithm != "crc32c" {
        return Err(damaged(path, format!("checksum algorithm {:?}; ferroflow writes crc32c", stored.algorithm)));
    }
    let text = header_text(tensors.iter().map(|(t, _)| t), stored_crc, meta);
    let header = tfrecord::crc32c(text.as_bytes());
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
    if stored.tensors.len() != tensors.len() {
        let names: std::collections::HashSet<&str> = tensors.iter().map(|(t, _)| t.name).collect();
        if let Some((missing, _)) = stored.tensors.iter().find(|(k, _)| !names.contains(k.as_ref())) {
            return Err(damaged(path, format!("tensor {missing:?} has a checksum but is not in the file")));
        }
    }
    for (t, got) in tensors {
        let got = *got;
        let Some(want) = stored_crc(t.name) else {
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

        // A tensor named twice in the stored checksums is damage, whichever
        // value a map would have kept.
        let mut twice = full.clone();
        let json = serde_json::to_string(&sums).unwrap();
        let w = format!("\"w\":{}", sums.tensors["w"]);
        twice.insert(CHECKSUMS_KEY.into(), json.replace(&w, &format!("{w},{w}")));
        assert!(verify(&tensors, &twice, "f").unwrap_err().to_string().contains("names tensor \"w\" twice"));

        // Neither key: an old file; one of the two: damage.
        assert_eq!(verify(&tensors, &HashMap::new(), "f").unwrap(), Integrity::NoChecksums);
        assert!(verify(&tensors, &meta, "f").is_err());
    }

    #[test]
    fn the_header_text_is_the_format_2_text() {
        // Byte for byte what format 2 checkpoints were checksummed with (a
        // change here would make every existing checkpoint look damaged).
        let meta: HashMap<String, String> =
            [("ferroflow.global_step".to_string(), "7".to_string()), (CHECKSUMS_KEY.to_string(), "x".to_string())]
                .into();
        let crcs: BTreeMap<String, u32> = [("w".to_string(), 0xab), ("global_step".to_string(), 1)].into();
        let entries = [entry("w", &[3, 3, 64]), entry("global_step", &[])];
        let text = header_text(&entries, |name| crcs.get(name).copied(), &meta);
        assert_eq!(
            text,
            "tensor 11 global_step F32 [] 00000001\ntensor 1 w F32 [3, 3, 64] 000000ab\nmeta 21 ferroflow.global_step 1 7\n"
        );
    }

    #[test]
    fn header_padding_must_be_spaces() {
        let mut header = b"{\"a\":1}         ".to_vec();
        check_padding(&header, "f").unwrap();
        header[12] = b'\t';
        assert!(check_padding(&header, "f").unwrap_err().to_string().contains("byte 20"));
    }
}
