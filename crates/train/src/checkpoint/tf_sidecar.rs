//! ferroflow's training state beside a TensorFlow bundle. A V2 bundle holds
//! only tensors, so a run saving TF checkpoints (`checkpoint.format = "tf"`)
//! writes the rest (data cursor, random streams, config, model, classes,
//! preprocessing: the safetensors metadata of the other format) to
//! `<prefix>.ferroflow.json`. TensorFlow never reads it; ferroflow reads it
//! with the bundle, so a resume from a TF-format train dir is exact.
//!
//! The file carries a CRC-32C of its content and of the bundle's `.index`
//! it belongs to (which holds every tensor's CRC-32C), so a damaged side
//! file, or one left from another save of that prefix, is an error naming
//! it and both checksums, never a silent resume from the wrong position.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::integrity::crc;
use crate::error::{Result, TrainError};

/// The side file's suffix after the bundle prefix.
pub const SIDECAR_SUFFIX: &str = ".ferroflow.json";

/// The side file's format name.
const FORMAT: &str = "ferroflow-tf-sidecar-1";

/// `<prefix>.ferroflow.json`.
pub fn sidecar_path(prefix: &Path) -> PathBuf {
    PathBuf::from(format!("{}{SIDECAR_SUFFIX}", prefix.display()))
}

/// What the checksum covers.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// [`FORMAT`].
    format: String,
    /// CRC-32C of the bundle's `.index` file.
    index_crc32c: u32,
    /// The metadata entries (`ferroflow.*` keys and others), sorted.
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(flatten)]
    body: Body,
    /// CRC-32C of the compact JSON of the other fields.
    crc32c: u32,
}

fn body_crc(body: &Body) -> u32 {
    // A plain struct of strings and integers always serialises.
    crc(serde_json::to_string(body).unwrap_or_default().as_bytes())
}

/// The side file's bytes for `metadata`, bound to the bundle's `index` bytes.
pub fn sidecar_bytes(metadata: &HashMap<String, String>, index: &[u8]) -> Vec<u8> {
    let body = Body {
        format: FORMAT.to_string(),
        index_crc32c: crc(index),
        metadata: metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let file = File { crc32c: body_crc(&body), body };
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

/// The metadata of the side file of the bundle at `prefix`, verified against
/// its own checksum and the bundle's `index` bytes; `None` when there is no
/// side file (a bundle TensorFlow or `ferroflow export` wrote).
pub fn read_sidecar(prefix: &Path, index: &[u8]) -> Result<Option<HashMap<String, String>>> {
    let path = sidecar_path(prefix);
    let name = path.display().to_string();
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => return Err(TrainError::Io { path: name, cause }),
    };
    let bad = |reason: String| TrainError::Checkpoint { path: name.clone(), reason };
    let file: File = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("is not a ferroflow side file ({e}); the bundle beside it is fine for TensorFlow")))?;
    if file.body.format != FORMAT {
        return Err(bad(format!("format {:?}, expected {FORMAT:?}", file.body.format)));
    }
    let computed = body_crc(&file.body);
    if computed != file.crc32c {
        return Err(bad(format!(
            "side file checksum mismatch: stored crc32c {:#010x}, computed {computed:#010x} (the file is damaged)",
            file.crc32c
        )));
    }
    let index_crc = crc(index);
    if index_crc != file.body.index_crc32c {
        return Err(bad(format!(
            "belongs to another bundle: it records the .index's crc32c as {:#010x}, the .index beside it has \
             {index_crc:#010x}",
            file.body.index_crc32c
        )));
    }
    Ok(Some(file.body.metadata.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_damage_and_a_foreign_index() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("model.ckpt-3");
        assert!(read_sidecar(&prefix, b"index").unwrap().is_none());
        let meta: HashMap<String, String> =
            [("ferroflow.global_step".to_string(), "3".to_string()), ("other".to_string(), "x".to_string())].into();
        let bytes = sidecar_bytes(&meta, b"index");
        std::fs::write(sidecar_path(&prefix), &bytes).unwrap();
        assert_eq!(read_sidecar(&prefix, b"index").unwrap().unwrap(), meta);

        let e = read_sidecar(&prefix, b"other index").unwrap_err().to_string();
        assert!(e.contains("belongs to another bundle") && e.contains("model.ckpt-3.ferroflow.json"), "{e}");

        let text = String::from_utf8(bytes).unwrap().replace("\"3\"", "\"4\"");
        std::fs::write(sidecar_path(&prefix), text).unwrap();
        let e = read_sidecar(&prefix, b"index").unwrap_err().to_string();
        assert!(e.contains("side file checksum mismatch") && e.contains("stored crc32c 0x"), "{e}");

        std::fs::write(sidecar_path(&prefix), "{").unwrap();
        let e = read_sidecar(&prefix, b"index").unwrap_err().to_string();
        assert!(e.contains("is not a ferroflow side file"), "{e}");
    }
}
