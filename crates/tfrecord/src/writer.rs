//! Buffered TFRecord writer with a durable close.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::{GzEncoder, ZlibEncoder};

use crate::compression::Compression;
use crate::crc::masked_crc32c;
use crate::error::RecordError;

const BUFFER_SIZE: usize = 1 << 20;

/// Writes one framed record (length, masked CRC of the length, data, masked
/// CRC of the data) to `w`.
pub fn write_record<W: Write + ?Sized>(w: &mut W, data: &[u8]) -> io::Result<()> {
    let length = (data.len() as u64).to_le_bytes();
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&length);
    header[8..].copy_from_slice(&masked_crc32c(&length).to_le_bytes());
    w.write_all(&header)?;
    w.write_all(data)?;
    w.write_all(&masked_crc32c(data).to_le_bytes())
}

enum Sink {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
    Zlib(ZlibEncoder<BufWriter<File>>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
            Sink::Zlib(w) => w,
        }
    }
}

/// What a closed writer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Records written.
    pub records: u64,
    /// Uncompressed bytes written, framing included.
    pub bytes: u64,
}

/// Writes records to a file, plain or compressed.
///
/// [`RecordWriter::close`] flushes, finishes the compressed stream and
/// fsyncs, so a file that closed without error is on disk. Dropping a writer
/// without closing it flushes on a best-effort basis only.
pub struct RecordWriter {
    sink: Option<Sink>,
    path: PathBuf,
    stats: WriterStats,
}

impl RecordWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, compression: Compression) -> Result<Self, RecordError> {
        let path = path.as_ref().to_path_buf();
        let file =
            File::create(&path).map_err(|cause| RecordError::Open { path: path.display().to_string(), cause })?;
        Ok(Self::from_file(file, path, compression))
    }

    /// Writes to an already open file; `path` names it in errors.
    pub fn from_file(file: File, path: impl Into<PathBuf>, compression: Compression) -> Self {
        let path = path.into();
        let buffered = BufWriter::with_capacity(BUFFER_SIZE, file);
        let sink = match compression {
            Compression::None => Sink::Plain(buffered),
            Compression::Gzip => Sink::Gzip(GzEncoder::new(buffered, flate2::Compression::default())),
            Compression::Zlib => Sink::Zlib(ZlibEncoder::new(buffered, flate2::Compression::default())),
        };
        RecordWriter { sink: Some(sink), path, stats: WriterStats { records: 0, bytes: 0 } }
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_error(&self, cause: io::Error) -> RecordError {
        RecordError::Write { path: self.path.display().to_string(), cause }
    }

    /// Appends one record.
    pub fn write(&mut self, data: &[u8]) -> Result<(), RecordError> {
        let sink = self.sink.as_mut().expect("sink is present until close");
        write_record(sink.writer(), data).map_err(|e| self.write_error(e))?;
        self.stats.records += 1;
        self.stats.bytes += 16 + data.len() as u64;
        Ok(())
    }

    /// Pushes buffered bytes to the OS (not to the disk; see [`close`](Self::close)).
    /// For compressed files this ends a deflate block, costing a little ratio.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        let sink = self.sink.as_mut().expect("sink is present until close");
        sink.writer().flush().map_err(|e| self.write_error(e))
    }

    /// Flushes, finishes the compressed stream, and fsyncs the file.
    pub fn close(mut self) -> Result<WriterStats, RecordError> {
        let sink = self.sink.take().expect("sink is present until close");
        let buffered = match sink {
            Sink::Plain(w) => Ok(w),
            Sink::Gzip(w) => w.finish(),
            Sink::Zlib(w) => w.finish(),
        }
        .map_err(|e| self.write_error(e))?;
        let file = buffered.into_inner().map_err(|e| self.write_error(e.into_error()))?;
        file.sync_all().map_err(|e| self.write_error(e))?;
        Ok(self.stats)
    }
}
