//! Reads TensorBoard event files, for tests and tools.

use std::path::Path;

use prost::Message;

use crate::error::EventError;
use crate::proto::event::Event;
use crate::reader::{FileRecordReader, ReaderOptions, RecordInfo};

/// Iterates over the events of one file, each with its record's position.
pub struct EventReader {
    records: FileRecordReader,
    buf: Vec<u8>,
}

impl EventReader {
    /// Opens an event file (compression is detected, as for any TFRecord file).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EventError> {
        let records = FileRecordReader::open(path, ReaderOptions::default())?;
        Ok(EventReader { records, buf: Vec::new() })
    }
}

impl Iterator for EventReader {
    type Item = Result<(RecordInfo, Event), EventError>;

    fn next(&mut self) -> Option<Self::Item> {
        let info = match self.records.read_next(&mut self.buf) {
            Ok(Some(info)) => info,
            Ok(None) => return None,
            Err(e) => return Some(Err(e.into())),
        };
        Some(Event::decode(self.buf.as_slice()).map(|e| (info, e)).map_err(|cause| EventError::Decode {
            path: self.records.path().to_string(),
            index: info.index,
            offset: info.offset,
            cause,
        }))
    }
}

/// True when a file name looks like an event file (TensorBoard's own test:
/// the name contains `tfevents`).
pub fn is_event_file_name(path: impl AsRef<Path>) -> bool {
    path.as_ref().file_name().is_some_and(|n| n.to_string_lossy().contains("tfevents"))
}
