//! Error types of the crate, one enum per concern, each carrying the offending
//! file, record, offset or key.
//!
//! Each message is complete on its own: underlying I/O or parse errors are
//! part of the message (fields named `cause`), not a separate `source()`, so
//! a caller printing the error chain does not print them twice.

use std::fmt;
use std::io;

/// Where a record starts: a byte offset in the file, or in the decompressed
/// stream for GZIP/ZLIB files (compressed files have no per-record offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// The byte offset.
    pub bytes: u64,
    /// True when the offset counts decompressed bytes.
    pub decompressed: bool,
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.decompressed {
            write!(f, "byte offset {} of the decompressed stream", self.bytes)
        } else {
            write!(f, "byte offset {}", self.bytes)
        }
    }
}

/// Errors from reading or writing TFRecord files.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be opened or created.
    #[error("{path}: cannot open: {cause}")]
    Open {
        /// The file.
        path: String,
        /// The OS error.
        cause: io::Error,
    },
    /// Reading failed (also: a corrupt GZIP/ZLIB stream).
    #[error("{path}: read error in record {index} at {offset}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Index of the record being read.
        index: u64,
        /// Where that record starts.
        offset: Offset,
        /// The underlying error.
        cause: io::Error,
    },
    /// The masked CRC-32C stored after the length does not match it.
    #[error(
        "{path}: record {index} at {offset}: corrupt length header (stored CRC {stored:#010x}, computed {computed:#010x} for length {length}); this is not a TFRecord file or it is damaged"
    )]
    LengthCrc {
        /// The file.
        path: String,
        /// Index of the record.
        index: u64,
        /// Where the record starts.
        offset: Offset,
        /// The length as read (untrustworthy).
        length: u64,
        /// The stored masked CRC.
        stored: u32,
        /// The masked CRC computed from the length bytes.
        computed: u32,
    },
    /// The masked CRC-32C stored after the data does not match it.
    #[error(
        "{path}: record {index} at {offset}: corrupt data ({length} bytes; stored CRC {stored:#010x}, computed {computed:#010x})"
    )]
    DataCrc {
        /// The file.
        path: String,
        /// Index of the record.
        index: u64,
        /// Where the record starts.
        offset: Offset,
        /// The record's data length.
        length: u64,
        /// The stored masked CRC.
        stored: u32,
        /// The masked CRC computed from the data.
        computed: u32,
    },
    /// The file ends inside a record.
    #[error(
        "{path}: truncated: record {index} at {offset} needs {needed} bytes of {part} but the file ends after {got}"
    )]
    Truncated {
        /// The file.
        path: String,
        /// Index of the record.
        index: u64,
        /// Where the record starts.
        offset: Offset,
        /// Which part was cut: "header", "data" or "data CRC".
        part: &'static str,
        /// Bytes that part needs.
        needed: u64,
        /// Bytes present.
        got: u64,
    },
    /// Writing failed.
    #[error("{path}: write error: {cause}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        cause: io::Error,
    },
}

/// Errors from getting a typed feature out of a `tf.train.Example`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// No feature has that key.
    #[error("feature {key:?} is missing (the example has: {available})")]
    Missing {
        /// The key asked for.
        key: String,
        /// The keys present, comma-separated.
        available: String,
    },
    /// The feature holds another kind of list.
    #[error("feature {key:?} is a {found} list, expected a {expected} list")]
    WrongKind {
        /// The key.
        key: String,
        /// The kind asked for.
        expected: crate::FeatureKind,
        /// The kind present.
        found: crate::FeatureKind,
    },
    /// A single value was asked for, and the list has another length.
    #[error("feature {key:?} has {found} values, expected exactly 1")]
    NotSingle {
        /// The key.
        key: String,
        /// The list's length.
        found: usize,
    },
    /// A text value was asked for, and the bytes are not UTF-8.
    #[error("feature {key:?} is not valid UTF-8 text")]
    NotUtf8 {
        /// The key.
        key: String,
    },
}

/// Errors from writing or reading TensorBoard event files.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The log directory could not be created.
    #[error("{path}: cannot create the log directory: {cause}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The OS error.
        cause: io::Error,
    },
    /// A record-level failure.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A record is not a valid `Event` protocol buffer.
    #[error("{path}: record {index} at {offset} is not a valid tensorflow.Event: {cause}")]
    Decode {
        /// The file.
        path: String,
        /// Index of the record.
        index: u64,
        /// Where the record starts.
        offset: Offset,
        /// The protobuf error.
        cause: prost::DecodeError,
    },
    /// The image's pixel buffer does not match its declared shape.
    #[error(
        "image summary {tag:?}: {height}x{width}x{channels} needs {expected} bytes, got {got} (channels must be 1, 2, 3 or 4)"
    )]
    ImageShape {
        /// The summary tag.
        tag: String,
        /// Declared height.
        height: u32,
        /// Declared width.
        width: u32,
        /// Declared channels.
        channels: u32,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// PNG encoding failed.
    #[error("image summary {tag:?}: PNG encoding failed: {cause}")]
    Png {
        /// The summary tag.
        tag: String,
        /// The encoder's error.
        cause: png::EncodingError,
    },
    /// A histogram got a NaN or infinite value (TensorFlow rejects these too).
    #[error("histogram summary {tag:?}: value {index} is {value}, histograms need finite values")]
    NonFinite {
        /// The summary tag.
        tag: String,
        /// Index of the bad value.
        index: usize,
        /// The value.
        value: f64,
    },
}
