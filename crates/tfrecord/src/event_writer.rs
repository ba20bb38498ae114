//! Writes TensorBoard event files (`events.out.tfevents.…`) the way
//! `tf.summary.create_file_writer` does, so the real TensorBoard reads them.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::compression::Compression;
use crate::error::{EventError, RecordError};
use crate::histogram::Histogram;
use crate::image::Image;
use crate::proto::event::{Event, What};
use crate::proto::graph::GraphDef;
use crate::proto::summary::{DataClass, Summary, SummaryMetadata, Value, ValueKind};
use crate::proto::tensor::TensorProto;
use crate::writer::RecordWriter;

/// The version string of the first record (`EventsWriter::kVersionPrefix` + 2).
pub const FILE_VERSION: &str = "brain.Event:2";

/// When an [`EventWriter`] pushes events to the OS.
///
/// The defaults are `tf.summary.create_file_writer`'s: at most 10 events
/// queued (`max_queue=10`) and at most 10 s between flushes
/// (`flush_millis=10000`). The time is checked whenever an event is written.
#[derive(Debug, Clone)]
pub struct EventWriterOptions {
    /// Flush once this many events are pending.
    pub max_queue: usize,
    /// Flush when the last flush is older than this.
    pub flush_every: Duration,
    /// Appended to the file name (TF's `filename_suffix`).
    pub filename_suffix: String,
}

impl Default for EventWriterOptions {
    fn default() -> Self {
        EventWriterOptions { max_queue: 10, flush_every: Duration::from_secs(10), filename_suffix: String::new() }
    }
}

/// Writes summaries to one event file in a log directory.
///
/// ```
/// use tfrecord::{EventReader, EventWriter};
/// let dir = tempfile::tempdir().unwrap();
/// let mut w = EventWriter::new(dir.path()).unwrap();
/// w.add_scalar("loss", 0.5, 1).unwrap();
/// let path = w.close().unwrap();
/// let events: Vec<_> = EventReader::open(&path).unwrap().map(|e| e.unwrap().1).collect();
/// assert_eq!(events.len(), 2); // the file version, then the scalar
/// ```
pub struct EventWriter {
    writer: RecordWriter,
    options: EventWriterOptions,
    pending: usize,
    last_flush: Instant,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// Creates `logdir` if needed and a new event file in it, with the default options.
    pub fn new(logdir: impl AsRef<Path>) -> Result<Self, EventError> {
        Self::with_options(logdir, EventWriterOptions::default())
    }

    /// Creates `logdir` if needed and a new event file in it.
    ///
    /// The file is `events.out.tfevents.<secs>.<host>.<pid><suffix>`, as
    /// TensorFlow's `EventsWriter` names it; a second writer in the same
    /// second and process gets `.1`, `.2`… appended rather than clobbering it.
    /// TensorBoard reads a run's files in name order, so when `logdir`
    /// already holds an event file named at this second or later (a run
    /// restarted within the second), `<secs>` is one past the newest name.
    pub fn with_options(logdir: impl AsRef<Path>, options: EventWriterOptions) -> Result<Self, EventError> {
        let logdir = logdir.as_ref();
        fs::create_dir_all(logdir)
            .map_err(|cause| EventError::CreateDir { path: logdir.display().to_string(), cause })?;
        let wall_time = now();
        let host = gethostname::gethostname().to_string_lossy().replace(['/', '\\'], "_");
        let newest = fs::read_dir(logdir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_prefix("events.out.tfevents.")?.split('.').next()?.parse::<u64>().ok()
                    })
                    .max()
            })
            .ok()
            .flatten();
        let secs = match newest {
            Some(n) if n >= wall_time as u64 => n + 1,
            _ => wall_time as u64,
        };
        let base =
            format!("events.out.tfevents.{:010}.{}.{}{}", secs, host, std::process::id(), options.filename_suffix);
        let mut attempt = 0;
        let (file, path) = loop {
            let name = if attempt == 0 { base.clone() } else { format!("{base}.{attempt}") };
            let path: PathBuf = logdir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => attempt += 1,
                Err(cause) => {
                    return Err(RecordError::Open { path: path.display().to_string(), cause }.into());
                }
            }
        };
        let writer = RecordWriter::from_file(file, path, Compression::None);
        let mut w = EventWriter { writer, options, pending: 0, last_flush: Instant::now() };
        w.write_event(&Event { wall_time, step: 0, what: Some(What::FileVersion(FILE_VERSION.to_string())) })?;
        w.flush()?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        self.writer.path()
    }

    /// Writes one event, flushing as the options say.
    pub fn write_event(&mut self, event: &Event) -> Result<(), EventError> {
        self.writer.write(&event.encode_to_vec())?;
        self.pending += 1;
        if self.pending >= self.options.max_queue || self.last_flush.elapsed() >= self.options.flush_every {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes a summary of several values at one step.
    pub fn add_summary(&mut self, summary: Summary, step: i64) -> Result<(), EventError> {
        self.write_event(&Event { wall_time: now(), step, what: Some(What::Summary(summary)) })
    }

    fn add_value(&mut self, value: Value, step: i64) -> Result<(), EventError> {
        self.add_summary(Summary { value: vec![value] }, step)
    }

    /// A scalar, in the form `tf.summary.scalar` writes: a float32 scalar
    /// tensor owned by the `scalars` plugin.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> Result<(), EventError> {
        self.add_value(
            Value {
                tag: tag.to_string(),
                metadata: Some(SummaryMetadata::plugin("scalars", DataClass::Scalar)),
                value: Some(ValueKind::Tensor(TensorProto::scalar_f32(value))),
                ..Default::default()
            },
            step,
        )
    }

    /// A histogram of `values` over TensorFlow's default buckets (a
    /// `HistogramProto`, which TensorBoard's histograms and distributions
    /// dashboards read). Non-finite values are an error, as in TensorFlow.
    pub fn add_histogram(&mut self, tag: &str, values: &[f64], step: i64) -> Result<(), EventError> {
        let mut h = Histogram::new();
        for (index, &value) in values.iter().enumerate() {
            if !value.is_finite() {
                return Err(EventError::NonFinite { tag: tag.to_string(), index, value });
            }
            h.add(value);
        }
        self.add_value(
            Value { tag: tag.to_string(), value: Some(ValueKind::Histo(h.to_proto())), ..Default::default() },
            step,
        )
    }

    /// One image; see [`add_images`](Self::add_images).
    pub fn add_image(&mut self, tag: &str, image: &Image<'_>, step: i64) -> Result<(), EventError> {
        self.add_images(tag, std::slice::from_ref(image), step)
    }

    /// A batch of images of one size, PNG-encoded, in the form
    /// `tf.summary.image` writes: a string tensor `[width, height, png…]`
    /// owned by the `images` plugin. Images of another size than the first
    /// are an error.
    pub fn add_images(&mut self, tag: &str, images: &[Image<'_>], step: i64) -> Result<(), EventError> {
        let (width, height) = images.first().map_or((0, 0), |i| (i.width, i.height));
        let mut blobs = vec![width.to_string().into_bytes(), height.to_string().into_bytes()];
        for image in images {
            if (image.width, image.height) != (width, height) {
                return Err(EventError::ImageShape {
                    tag: tag.to_string(),
                    height: image.height,
                    width: image.width,
                    channels: image.channels,
                    expected: height as usize * width as usize * image.channels as usize,
                    got: image.pixels.len(),
                });
            }
            blobs.push(image.to_png(tag)?);
        }
        let len = blobs.len() as i64;
        self.add_value(
            Value {
                tag: tag.to_string(),
                metadata: Some(SummaryMetadata::plugin("images", DataClass::BlobSequence)),
                value: Some(ValueKind::Tensor(TensorProto::strings(&[len], blobs))),
                ..Default::default()
            },
            step,
        )
    }

    /// Text (Markdown), in the form `tf.summary.text` writes: a scalar string
    /// tensor owned by the `text` plugin.
    pub fn add_text(&mut self, tag: &str, text: &str, step: i64) -> Result<(), EventError> {
        self.add_value(
            Value {
                tag: tag.to_string(),
                metadata: Some(SummaryMetadata::plugin("text", DataClass::Tensor)),
                value: Some(ValueKind::Tensor(TensorProto::strings(&[], vec![text.as_bytes().to_vec()]))),
                ..Default::default()
            },
            step,
        )
    }

    /// The model graph, for TensorBoard's graph view.
    pub fn add_graph(&mut self, graph: &GraphDef) -> Result<(), EventError> {
        self.write_event(&Event { wall_time: now(), step: 0, what: Some(What::GraphDef(graph.encode_to_vec())) })
    }

    /// Pushes pending events to the OS, so TensorBoard sees them.
    pub fn flush(&mut self) -> Result<(), EventError> {
        self.writer.flush()?;
        self.pending = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Flushes and fsyncs the file, and returns its path.
    pub fn close(self) -> Result<PathBuf, EventError> {
        let path = self.writer.path().to_path_buf();
        self.writer.close()?;
        Ok(path)
    }
}
