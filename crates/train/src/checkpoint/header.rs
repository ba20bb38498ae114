//! A safetensors header (the JSON object after the 8-byte length), parsed
//! in one pass.
//!
//! The `safetensors` crate's own `Metadata` deserialises through
//! `#[serde(flatten)]`, which first buffers the whole object as untyped
//! content and then reads it again: for resnet20's 173 tensors that was a
//! quarter of a restore's CPU time outside the byte copies. Here a map
//! visitor reads each entry straight into `TensorInfo` (or the
//! `__metadata__` strings); the crate's `Metadata::new` then validates the
//! result as its own parser would (offsets contiguous from 0, each tensor's
//! byte length its shape's).

use std::collections::{HashMap, HashSet};
use std::fmt;

use safetensors::tensor::{Metadata, TensorInfo};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

/// The key of the free-form string map in a safetensors header.
const METADATA_KEY: &str = "__metadata__";

/// A header as written: the metadata map and the tensors in file order.
struct Header {
    metadata: Option<HashMap<String, String>>,
    tensors: Vec<(String, TensorInfo)>,
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Header, D::Error> {
        deserializer.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of tensors and __metadata__")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        let mut header = Header { metadata: None, tensors: Vec::new() };
        let mut names = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == METADATA_KEY {
                if header.metadata.is_some() {
                    return Err(de::Error::custom(format!("{METADATA_KEY} appears twice")));
                }
                header.metadata = Some(map.next_value()?);
            } else {
                // The crate's parser would keep the last of two; two tensors
                // of one name are damage.
                if !names.insert(key.clone()) {
                    return Err(de::Error::custom(format!("tensor {key:?} appears twice")));
                }
                header.tensors.push((key, map.next_value()?));
            }
        }
        Ok(header)
    }
}

/// Parses and validates the header JSON `bytes`; the error says what is
/// wrong (a JSON error with its line and column, or the crate's validation
/// error naming the tensor).
pub fn parse_header(bytes: &[u8]) -> Result<Metadata, String> {
    let Header { metadata, mut tensors } = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    Metadata::new(metadata, tensors).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_crate_parses_and_refuses_what_it_refuses() {
        let ok = br#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"__metadata__":{"k":"v"},
            "a":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}"#;
        let ours = parse_header(ok).unwrap();
        let theirs: Metadata = serde_json::from_slice(ok).unwrap();
        assert_eq!(ours.offset_keys(), vec!["a", "b"]);
        assert_eq!(ours.offset_keys(), theirs.offset_keys());
        assert_eq!(ours.data_len(), 16);
        assert_eq!(ours.metadata(), theirs.metadata());
        assert_eq!(ours.info("b").unwrap().shape, vec![2]);

        for (bad, why) in [
            (&br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#[..], "invalid shape, data type, or offset"),
            (br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, "invalid offset for tensor `a`"),
            (br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, "appears twice"),
            (br#"{"__metadata__":{},"__metadata__":{}}"#, "appears twice"),
            (br#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, "F33"),
            (br#"[1]"#, "JSON object"),
            (br#"{"a":{"dtype":"F32""#, "EOF"),
        ] {
            let e = parse_header(bad).unwrap_err();
            assert!(e.contains(why), "{e} (wanted {why})");
            // The crate's own parser refuses each too (it keeps the last of
            // two same-named entries, so those are ours alone).
            if why != "appears twice" {
                assert!(serde_json::from_slice::<Metadata>(bad).is_err(), "{why}");
            }
        }
    }
}
