//! Writing TensorFlow checkpoints (the V2 tensor bundle that
//! `tf.compat.v1.train.Saver` writes and `tf.train.load_checkpoint` reads),
//! following TF's `core/util/tensor_bundle/tensor_bundle.cc`
//! (`BundleWriter`):
//! - `<prefix>.data-00000-of-00001`: the tensors' raw little-endian bytes,
//!   back to back in the order they were added (TF's Saver adds them sorted
//!   by name), with no alignment padding (`data_alignment = 1`);
//! - `<prefix>.index`: a table (`table_writer.rs`) whose empty key holds the
//!   `BundleHeaderProto` (one shard, little-endian, `version.producer = 1`)
//!   and whose other keys, the tensor names, hold `BundleEntryProto`s:
//!   dtype, shape, offset, size and the masked CRC-32C of the bytes.
//!
//! The files are built in memory; writing them (crash-safely, the data
//! file before the index) is the caller's.

use std::collections::BTreeMap;

use prost::Message;

use crate::crc::{crc32c, mask_crc};
use crate::proto::bundle::{BundleEntryProto, BundleHeaderProto};
use crate::proto::graph::VersionDef;
use crate::proto::tensor::{DataType, TensorShapeProto};
use crate::table_writer::TableWriter;
use crate::tensor_bundle::BundleError;

/// `kTensorBundleVersion` in `tensor_bundle.h`.
const BUNDLE_VERSION: i32 = 1;

/// The two files of a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleFiles {
    /// `<prefix>.index`.
    pub index: Vec<u8>,
    /// `<prefix>.data-00000-of-00001`.
    pub data: Vec<u8>,
}

/// A tensor bundle being built.
#[derive(Debug, Default)]
pub struct BundleWriter {
    data: Vec<u8>,
    entries: BTreeMap<String, BundleEntryProto>,
}

/// Bytes per element of the dtypes ferroflow writes.
fn element_size(dtype: DataType) -> Option<usize> {
    match dtype {
        DataType::DtFloat | DataType::DtInt32 => Some(4),
        DataType::DtDouble | DataType::DtInt64 => Some(8),
        _ => None,
    }
}

impl BundleWriter {
    /// An empty bundle.
    pub fn new() -> BundleWriter {
        BundleWriter::default()
    }

    /// Adds tensor `name` of `dtype` and `shape` (TF's layout) with its
    /// little-endian `bytes`. A repeated or empty name, a dtype other than
    /// float32/64 and int32/64, or a byte count that is not the shape's is
    /// an error naming the tensor.
    pub fn add(&mut self, name: &str, dtype: DataType, shape: &[usize], bytes: &[u8]) -> Result<(), BundleError> {
        let bad = |reason: String| BundleError::Corrupt { path: format!("tensor {name:?}"), reason };
        if name.is_empty() {
            return Err(bad("an empty name is the bundle header's key".into()));
        }
        if self.entries.contains_key(name) {
            return Err(bad("added twice".into()));
        }
        let size = element_size(dtype).ok_or_else(|| bad(format!("{dtype:?} is not written by ferroflow")))?;
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if count.and_then(|n| n.checked_mul(size)) != Some(bytes.len()) {
            return Err(bad(format!("{} bytes do not hold shape {shape:?} of {dtype:?}", bytes.len())));
        }
        let entry = BundleEntryProto {
            dtype: dtype as i32,
            shape: Some(TensorShapeProto::from_dims(&shape.iter().map(|&d| d as i64).collect::<Vec<_>>())),
            shard_id: 0,
            offset: self.data.len() as i64,
            size: bytes.len() as i64,
            crc32c: mask_crc(crc32c(bytes)),
            slices: Vec::new(),
        };
        self.data.extend_from_slice(bytes);
        self.entries.insert(name.to_string(), entry);
        Ok(())
    }

    /// The index and data files.
    pub fn finish(self) -> BundleFiles {
        let header = BundleHeaderProto {
            num_shards: 1,
            endianness: 0,
            version: Some(VersionDef { producer: BUNDLE_VERSION, ..Default::default() }),
        };
        let mut table = TableWriter::new();
        table.add(b"", &header.encode_to_vec());
        for (name, entry) in &self.entries {
            table.add(name.as_bytes(), &entry.encode_to_vec());
        }
        BundleFiles { index: table.finish(), data: self.data }
    }
}
