//! `tensorflow.Event` (`tensorflow/core/util/event.proto`): one record of a
//! TensorBoard event file.

use prost::{Enumeration, Message};

use super::summary::Summary;

/// `tensorflow.SessionLog.SessionStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum SessionStatus {
    /// `STATUS_UNSPECIFIED`.
    Unspecified = 0,
    /// `START`: TensorBoard discards later-step events written before a restart.
    Start = 1,
    /// `STOP`.
    Stop = 2,
    /// `CHECKPOINT`.
    Checkpoint = 3,
}

/// `tensorflow.SessionLog`.
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    /// Status.
    #[prost(enumeration = "SessionStatus", tag = "1")]
    pub status: i32,
    /// Checkpoint path, for `CHECKPOINT`.
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    /// Message.
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// `tensorflow.TaggedRunMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct TaggedRunMetadata {
    /// Tag.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// A serialised `RunMetadata`.
    #[prost(bytes = "vec", tag = "2")]
    pub run_metadata: Vec<u8>,
}

/// `tensorflow.LogMessage` (deprecated in TF, still parsed).
#[derive(Clone, PartialEq, Message)]
pub struct LogMessage {
    /// Level.
    #[prost(int32, tag = "1")]
    pub level: i32,
    /// Text.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The `oneof what` of `tensorflow.Event`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// `file_version = 3`: `brain.Event:2` in the first record.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// `graph_def = 4`: a serialised `GraphDef`.
    #[prost(bytes, tag = "4")]
    GraphDef(Vec<u8>),
    /// `summary = 5`.
    #[prost(message, tag = "5")]
    Summary(Summary),
    /// `log_message = 6`.
    #[prost(message, tag = "6")]
    LogMessage(LogMessage),
    /// `session_log = 7`.
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
    /// `tagged_run_metadata = 8`.
    #[prost(message, tag = "8")]
    TaggedRunMetadata(TaggedRunMetadata),
    /// `meta_graph_def = 9`: a serialised `MetaGraphDef`.
    #[prost(bytes, tag = "9")]
    MetaGraphDef(Vec<u8>),
}

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// The payload.
    #[prost(oneof = "What", tags = "3, 4, 5, 6, 7, 8, 9")]
    pub what: Option<What>,
}
