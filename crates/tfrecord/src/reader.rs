//! Streaming TFRecord reader with CRC verification.
//!
//! Each record is framed as (`tensorflow/core/lib/io/record_writer.h`):
//!
//! ```text
//! uint64 length            little-endian
//! uint32 masked_crc32c(length)
//! byte   data[length]
//! uint32 masked_crc32c(data)
//! ```

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::{MultiGzDecoder, ZlibDecoder};

use crate::compression::Compression;
use crate::crc::masked_crc32c;
use crate::error::{Offset, RecordError};

/// Read buffer size: large enough that syscalls are not the bottleneck on
/// ~100 KB records, small enough to keep memory constant.
const BUFFER_SIZE: usize = 1 << 20;

/// Options for [`RecordReader::open`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ReaderOptions {
    /// The file's compression; `None` detects it from the first bytes.
    pub compression: Option<Compression>,
    /// Skip (and count) corrupt records instead of failing on the first.
    /// After a corrupt length header the reader scans forward for the next
    /// valid header; a truncated tail ends the file.
    pub skip_corrupt: bool,
}

/// Where a record was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Zero-based index among the records returned.
    pub index: u64,
    /// Where its header starts.
    pub offset: Offset,
}

/// One record: its position and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position.
    pub info: RecordInfo,
    /// Its data.
    pub data: Vec<u8>,
}

/// What a reader skipped (only with [`ReaderOptions::skip_corrupt`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipStats {
    /// Corrupt records (or corrupt regions, after a bad length header) skipped.
    pub corrupt: u64,
    /// Where the truncated tail record started, if the file ended inside one.
    pub truncated_at: Option<u64>,
}

/// Reads records one at a time, in constant memory.
///
/// ```
/// use tfrecord::{RecordReader, write_record};
/// let mut file = Vec::new();
/// write_record(&mut file, b"first").unwrap();
/// write_record(&mut file, b"second").unwrap();
/// let records: Vec<Vec<u8>> = RecordReader::new(&file[..], "<memory>", false, false)
///     .map(|r| r.unwrap().data)
///     .collect();
/// assert_eq!(records, [b"first".to_vec(), b"second".to_vec()]);
/// ```
pub struct RecordReader<R> {
    inner: R,
    path: String,
    decompressed: bool,
    skip_corrupt: bool,
    /// Offset of the next record's header.
    offset: u64,
    /// Index of the next record returned.
    index: u64,
    skipped: SkipStats,
    done: bool,
}

/// The reader [`RecordReader::open`] returns.
pub type FileRecordReader = RecordReader<Box<dyn BufRead + Send>>;

impl FileRecordReader {
    /// Opens a file, detecting its compression unless `options` names it.
    pub fn open(path: impl AsRef<Path>, options: ReaderOptions) -> Result<Self, RecordError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|cause| RecordError::Open { path: name.clone(), cause })?;
        let mut buffered = BufReader::with_capacity(BUFFER_SIZE, file);
        let compression = match options.compression {
            Some(c) => c,
            None => {
                let head = buffered.fill_buf().map_err(|cause| RecordError::Read {
                    path: name.clone(),
                    index: 0,
                    offset: Offset { bytes: 0, decompressed: false },
                    cause,
                })?;
                Compression::detect(head)
            }
        };
        let inner: Box<dyn BufRead + Send> = match compression {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(BufReader::with_capacity(BUFFER_SIZE, MultiGzDecoder::new(buffered))),
            Compression::Zlib => Box::new(BufReader::with_capacity(BUFFER_SIZE, ZlibDecoder::new(buffered))),
        };
        Ok(RecordReader::new(inner, name, compression != Compression::None, options.skip_corrupt))
    }
}

impl<R: BufRead> RecordReader<R> {
    /// Reads records from `inner`; `path` names it in errors, and
    /// `decompressed` says whether offsets count decompressed bytes.
    pub fn new(inner: R, path: impl Into<String>, decompressed: bool, skip_corrupt: bool) -> Self {
        RecordReader {
            inner,
            path: path.into(),
            decompressed,
            skip_corrupt,
            offset: 0,
            index: 0,
            skipped: SkipStats::default(),
            done: false,
        }
    }

    /// The file name used in errors.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What was skipped so far (always zero without `skip_corrupt`).
    pub fn skipped(&self) -> SkipStats {
        self.skipped
    }

    /// Reads the next record into `buf` (replacing its contents), reusing its
    /// allocation. Returns `None` at the end of the file. After an error the
    /// reader is finished.
    pub fn read_next(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordInfo>, RecordError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_next_inner(buf);
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn offset_at(&self, bytes: u64) -> Offset {
        Offset { bytes, decompressed: self.decompressed }
    }

    fn read_error(&self, cause: io::Error) -> RecordError {
        RecordError::Read { path: self.path.clone(), index: self.index, offset: self.offset_at(self.offset), cause }
    }

    fn truncated(&mut self, part: &'static str, needed: u64, got: u64) -> Result<Option<RecordInfo>, RecordError> {
        if self.skip_corrupt {
            self.skipped.corrupt += 1;
            self.skipped.truncated_at = Some(self.offset);
            return Ok(None);
        }
        Err(RecordError::Truncated {
            path: self.path.clone(),
            index: self.index,
            offset: self.offset_at(self.offset),
            part,
            needed,
            got,
        })
    }

    fn read_next_inner(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordInfo>, RecordError> {
        let mut header = [0u8; 12];
        loop {
            let got = read_full(&mut self.inner, &mut header).map_err(|e| self.read_error(e))?;
            if got == 0 {
                return Ok(None);
            }
            if got < header.len() {
                return self.truncated("header", 12, got as u64);
            }
            if !self.header_ok(&header) {
                if !self.skip_corrupt {
                    return Err(self.length_crc_error(&header));
                }
                self.skipped.corrupt += 1;
                if !self.resync(&mut header)? {
                    return Ok(None);
                }
            }
            let length = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
            let got = read_exactly(&mut self.inner, buf, length).map_err(|e| self.read_error(e))?;
            if got < length {
                return self.truncated("data", length, got);
            }
            let mut footer = [0u8; 4];
            let got = read_full(&mut self.inner, &mut footer).map_err(|e| self.read_error(e))?;
            if got < footer.len() {
                return self.truncated("data CRC", 4, got as u64);
            }
            let stored = u32::from_le_bytes(footer);
            let computed = masked_crc32c(buf);
            let info = RecordInfo { index: self.index, offset: self.offset_at(self.offset) };
            self.offset += 16 + length;
            if stored != computed {
                if self.skip_corrupt {
                    self.skipped.corrupt += 1;
                    continue;
                }
                return Err(RecordError::DataCrc {
                    path: self.path.clone(),
                    index: info.index,
                    offset: info.offset,
                    length,
                    stored,
                    computed,
                });
            }
            self.index += 1;
            return Ok(Some(info));
        }
    }

    fn header_ok(&self, header: &[u8; 12]) -> bool {
        let stored = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        masked_crc32c(&header[..8]) == stored
    }

    fn length_crc_error(&self, header: &[u8; 12]) -> RecordError {
        RecordError::LengthCrc {
            path: self.path.clone(),
            index: self.index,
            offset: self.offset_at(self.offset),
            length: u64::from_le_bytes(header[..8].try_into().expect("8 bytes")),
            stored: u32::from_le_bytes(header[8..].try_into().expect("4 bytes")),
            computed: masked_crc32c(&header[..8]),
        }
    }

    /// Slides the 12-byte window forward one byte at a time until it holds a
    /// valid header. Returns false at the end of the file.
    fn resync(&mut self, header: &mut [u8; 12]) -> Result<bool, RecordError> {
        loop {
            let mut next = [0u8; 1];
            let got = read_full(&mut self.inner, &mut next).map_err(|e| self.read_error(e))?;
            if got == 0 {
                return Ok(false);
            }
            header.copy_within(1.., 0);
            header[11] = next[0];
            self.offset += 1;
            if self.header_ok(header) {
                return Ok(true);
            }
        }
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut data = Vec::new();
        match self.read_next(&mut data) {
            Ok(Some(info)) => Some(Ok(Record { info, data })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Replaces `buf` with the next `len` bytes (fewer if the stream ends),
/// returning the bytes read. `read_to_end` on a `take(len)` writes into the
/// buffer's spare capacity without zeroing it and grows the buffer only as
/// data actually arrives, so a corrupt length over a short file allocates
/// about what the file holds, not what the length claims.
fn read_exactly(r: &mut impl Read, buf: &mut Vec<u8>, len: u64) -> io::Result<u64> {
    buf.clear();
    // (`read_to_end` retries interrupted reads itself.)
    Ok(r.by_ref().take(len).read_to_end(buf)? as u64)
}
