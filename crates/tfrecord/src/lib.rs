//! TFRecord files, `tf.train.Example` and TensorBoard event files, read and
//! written exactly as TensorFlow does, with no ML dependencies.
//!
//! - [`RecordReader`] / [`RecordWriter`]: TFRecord framing with both CRCs
//!   checked, plain, GZIP or ZLIB, streaming in constant memory.
//! - [`Example`]: the `tf.train.Example` protocol buffer with typed getters.
//! - [`EventWriter`] / [`EventReader`]: TensorBoard event files (scalars,
//!   histograms, images, text, graphs).
//! - [`TensorBundle`]: TensorFlow checkpoints (`<prefix>.index` + `.data-*`), read.

mod bundle_writer;
mod compression;
mod crc;
mod error;
mod event_reader;
mod event_writer;
mod example;
mod graph_builder;
mod histogram;
mod image;
pub mod proto;
mod reader;
mod table_writer;
mod tensor_bundle;
mod writer;

pub use bundle_writer::{BundleFiles, BundleWriter};
pub use compression::Compression;
pub use crc::{Crc32c, crc32c, mask_crc, masked_crc32c, unmask_crc};
pub use error::{EventError, FeatureError, Offset, RecordError};
pub use event_reader::{EventReader, is_event_file_name};
pub use event_writer::{EventWriter, EventWriterOptions, FILE_VERSION};
pub use example::{BytesList, Example, ExampleBuilder, Feature, FeatureKind, Features, FloatList, Int64List, Kind};
pub use graph_builder::GraphBuilder;
pub use histogram::{Histogram, default_bucket_limits};
pub use image::Image;
pub use reader::{FileRecordReader, ReaderOptions, Record, RecordInfo, RecordReader, SkipStats};
pub use table_writer::TableWriter;
pub use tensor_bundle::{BundleEntry, BundleError, TensorBundle, is_tensor_bundle};
pub use writer::{RecordWriter, WriterStats, write_record};
