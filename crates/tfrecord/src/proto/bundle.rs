//! `tensorflow.BundleHeaderProto` and `tensorflow.BundleEntryProto`
//! (`tensorflow/core/protobuf/tensor_bundle.proto`): the values of a
//! checkpoint's `.index` table.

use prost::Message;

use super::graph::VersionDef;
use super::tensor::TensorShapeProto;

/// `tensorflow.BundleHeaderProto`: the value of the empty key.
#[derive(Clone, PartialEq, Message)]
pub struct BundleHeaderProto {
    /// `num_shards = 1`: data files `<prefix>.data-0000i-of-0000N`.
    #[prost(int32, tag = "1")]
    pub num_shards: i32,
    /// `endianness = 2`: 0 little, 1 big.
    #[prost(int32, tag = "2")]
    pub endianness: i32,
    /// `version = 3`.
    #[prost(message, optional, tag = "3")]
    pub version: Option<VersionDef>,
}

/// `tensorflow.TensorSliceProto` (partitioned variables), kept only to be reported.
#[derive(Clone, PartialEq, Message)]
pub struct TensorSliceProto {
    /// `extent = 1`, unparsed.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub extent: Vec<Vec<u8>>,
}

/// `tensorflow.BundleEntryProto`: where one tensor's bytes are.
#[derive(Clone, PartialEq, Message)]
pub struct BundleEntryProto {
    /// `dtype = 1` (`tensorflow.DataType`).
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// `shape = 2`.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
    /// `shard_id = 3`.
    #[prost(int32, tag = "3")]
    pub shard_id: i32,
    /// `offset = 4` in the data file.
    #[prost(int64, tag = "4")]
    pub offset: i64,
    /// `size = 5` in bytes.
    #[prost(int64, tag = "5")]
    pub size: i64,
    /// `crc32c = 6`: the masked CRC-32C of the bytes.
    #[prost(fixed32, tag = "6")]
    pub crc32c: u32,
    /// `slices = 7`: set for partitioned variables.
    #[prost(message, repeated, tag = "7")]
    pub slices: Vec<TensorSliceProto>,
}
