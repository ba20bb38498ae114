//! The input pipeline: a seeded shuffle buffer over a stream of examples,
//! parallel decode and preprocessing, batching across epochs, and prefetch on
//! a background thread. Its position is a [`Cursor`]; a pipeline restarted
//! from a batch's cursor yields exactly the batches that would have followed.
//!
//! Determinism: the shuffle order of epoch `e` is a pure function of
//! `(seed, e)`, and the augmentation of the example at position `p` of epoch
//! `e` draws from `Rng::derive(seed, [e, p])`, so neither depends on thread
//! timing or on where a run was interrupted.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfrecord::{Example, FileRecordReader, ReaderOptions, RecordError};

use crate::decode::{DEFAULT_MAX_PIXELS, DecodeOptions, decode_image};
use crate::decode_planar::{Decoded, decode_image_planar, recycle_planar};
use crate::example_codec::{DecodedExample, decode_example, decode_example_planar};
use crate::preprocess::Preprocess;
use ferroflow_rng::Rng;

/// Where examples come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// TFRecord files of `tf.train.Example`s (either encoding), read in order.
    Records {
        /// The files.
        files: Vec<PathBuf>,
    },
    /// Image files read from disk per batch, with their labels.
    Files {
        /// `(path, label)` pairs (shared: a pipeline per validation does not copy the list).
        entries: Arc<Vec<(PathBuf, Label)>>,
    },
    /// Encoded images preloaded in memory, with their labels.
    Memory {
        /// `(encoded bytes, label)` pairs.
        entries: Arc<Vec<(Vec<u8>, Label)>>,
    },
}

/// The label of one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Label {
    /// A class index.
    Class(i64),
    /// Regression targets (for a [`TargetImage`](Label::TargetImage): the target
    /// image, preprocessed as its input, `[C, H, W]` values).
    Target(Vec<f32>),
    /// A [`Source::Files`] example's target image (image-to-image data): read,
    /// decoded and preprocessed with its input's random draws (the same flip
    /// and crop), it arrives in [`Batch::targets`] as a [`Label::Target`].
    TargetImage(PathBuf),
}

/// Training (shuffled, augmented, repeated) or evaluation (in order, once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Shuffle buffer, train preprocessing, epochs as configured.
    Train,
    /// No shuffle, eval preprocessing, one pass, partial last batch kept.
    Eval,
}

/// Pipeline settings. Defaults: batch 32, shuffle buffer 10,000, shards
/// shuffled per epoch, all cores, prefetch 2 batches, last partial batch
/// dropped in training, repeat forever, seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Examples per batch.
    pub batch_size: usize,
    /// `tf.data.Dataset.shuffle(buffer_size)`: each example is drawn at
    /// random from the next `shuffle_buffer` of the stream (TF1's
    /// `min_after_dequeue` is this minus one). 0 or 1: no shuffling.
    pub shuffle_buffer: usize,
    /// Shuffle the order of record files every epoch.
    pub shuffle_files: bool,
    /// Decode/preprocess threads; 0 uses every core.
    pub num_workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Drop a final partial batch when `epochs` ends the stream (training only).
    pub drop_remainder: bool,
    /// Stop after this many epochs; `None` repeats forever.
    pub epochs: Option<u64>,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// Pixel limit per image.
    pub max_pixels: u64,
    /// The fast JPEG path (faster, slightly different pixels): JPEGs decode
    /// at a reduced DCT scale when that still covers the target size
    /// (`DecodeOptions::jpeg_min_size`), and, when the preprocessing is a plain
    /// resize + flip + normalisation, colour JPEGs decoded at full scale are
    /// resized from their YCbCr planes (`decode_image_planar`,
    /// `resize_ycc_into_chw`). Accuracy cost: `DecodeOptions::jpeg_min_size`
    /// and tests/decode_planar.rs (mean |difference| 0.39 on the 0–255 scale
    /// for the planes).
    pub fast_jpeg: bool,
    /// This rank's part of each batch in data-parallel training: the
    /// stream (order, augmentation draws, cursor) is the whole job's, and
    /// of each batch of `batch_size` examples this rank keeps its
    /// contiguous share, so the ranks' parts of a step together are what
    /// one process would batch. `None`: the whole batch.
    #[serde(skip)]
    pub shard: Option<Shard>,
}

/// One rank's share of every batch: part `index` of `count` equal parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank.
    pub index: usize,
    /// Ranks in all.
    pub count: usize,
}

impl Shard {
    /// The range of a batch of `len` examples that part `index` keeps:
    /// contiguous, sizes differing by at most one.
    ///
    /// ```
    /// use ferroflow_data::Shard;
    /// let parts: Vec<_> = (0..3).map(|index| Shard { index, count: 3 }.range(8)).collect();
    /// assert_eq!(parts, vec![0..2, 2..5, 5..8]);
    /// ```
    pub fn range(self, len: usize) -> std::ops::Range<usize> {
        len * self.index / self.count..len * (self.index + 1) / self.count
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: 32,
            shuffle_buffer: 10_000,
            shuffle_files: true,
            num_workers: 0,
            prefetch: 2,
            drop_remainder: true,
            epochs: None,
            seed: 0,
            max_pixels: DEFAULT_MAX_PIXELS,
            fast_jpeg: false,
            shard: None,
        }
    }
}

/// A position in the example stream: the next example to batch is number
/// `offset` (in shuffled order) of epoch `epoch`. Saved in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Examples of that epoch already batched.
    pub offset: u64,
}

/// One batch, in the model's NCHW layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[size, channels, height, width]` floats.
    pub images: Vec<f32>,
    /// Class labels (`size` of them) for classification data.
    pub labels: Vec<i64>,
    /// Regression targets, `size × target width`, for regression data.
    pub targets: Vec<f32>,
    /// Examples in the batch.
    pub size: usize,
    /// `[channels, height, width]` of each image.
    pub shape: [usize; 3],
    /// Where the stream stands after this batch: restart here to continue.
    pub cursor: Cursor,
}

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading records failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A bad setting.
    #[error("pipeline.{key}: {reason}")]
    Config {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The source has no examples.
    #[error("the data source has no examples")]
    Empty,
    /// The record files changed while reading.
    #[error("{0}")]
    Changed(String),
}

/// The order in which epoch `epoch` emits stream positions `0..n`: TF's
/// shuffle buffer (fill `buffer` slots, then repeatedly emit a random slot
/// and refill it from the stream), as a pure function of `(seed, epoch)`.
///
/// ```
/// let order = ferroflow_data::shuffle_order(10, 4, 7, 0);
/// let mut sorted = order.clone();
/// sorted.sort();
/// assert_eq!(sorted, (0..10).collect::<Vec<_>>());
/// // With a buffer of 4, the k-th emission is one of stream positions 0..=k+3.
/// assert!(order.iter().enumerate().all(|(k, &s)| s <= k + 3));
/// assert_eq!(order, ferroflow_data::shuffle_order(10, 4, 7, 0)); // a pure function
/// ```
pub fn shuffle_order(n: usize, buffer: usize, seed: u64, epoch: u64) -> Vec<usize> {
    if buffer <= 1 {
        return (0..n).collect();
    }
    let mut rng = Rng::derive(seed, &[3, epoch]);
    let mut slots: Vec<usize> = (0..buffer.min(n)).collect();
    let mut next = slots.len();
    let mut order = Vec::with_capacity(n);
    while !slots.is_empty() {
        let j = rng.below(slots.len() as u64) as usize;
        order.push(slots[j]);
        if next < n {
            slots[j] = next;
            next += 1;
        } else {
            slots.swap_remove(j);
        }
    }
    order
}

/// Streams raw records of `files` in a given file order, keeping those read
/// ahead of their turn until they are asked for.
struct RecordStream {
    files: Vec<PathBuf>,
    file_index: usize,
    reader: Option<FileRecordReader>,
    position: usize,
    pending: HashMap<usize, Vec<u8>>,
}

impl RecordStream {
    fn new(files: Vec<PathBuf>) -> Self {
        RecordStream { files, file_index: 0, reader: None, position: 0, pending: HashMap::new() }
    }

    fn next_record(&mut self) -> Result<Option<Vec<u8>>, PipelineError> {
        loop {
            if self.reader.is_none() {
                let Some(path) = self.files.get(self.file_index) else { return Ok(None) };
                self.reader = Some(FileRecordReader::open(path, ReaderOptions::default())?);
            }
            let mut buf = Vec::new();
            match self.reader.as_mut().map(|r| r.read_next(&mut buf)).transpose()?.flatten() {
                Some(_) => return Ok(Some(buf)),
                None => {
                    self.reader = None;
                    self.file_index += 1;
                }
            }
        }
    }

    /// The record at stream position `s` (each asked for once).
    fn take(&mut self, s: usize, keep: bool) -> Result<Option<Vec<u8>>, PipelineError> {
        while self.position <= s {
            let record = self.next_record()?.ok_or_else(|| {
                PipelineError::Changed(format!(
                    "the record files ended after {} records; were they changed while training?",
                    self.position
                ))
            })?;
            if keep || self.position == s {
                self.pending.insert(self.position, record);
            }
            self.position += 1;
        }
        Ok(self.pending.remove(&s))
    }
}

fn count_records(files: &[PathBuf]) -> Result<usize, PipelineError> {
    let mut n = 0;
    let mut buf = Vec::new();
    for f in files {
        let mut r = FileRecordReader::open(f, ReaderOptions::default())?;
        while r.read_next(&mut buf)?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// One example's raw material, before decoding.
enum Raw {
    Record(Vec<u8>),
    Encoded(Arc<Vec<(Vec<u8>, Label)>>, usize),
    File(PathBuf, Label),
}

/// A running pipeline; iterate it for batches.
pub struct Pipeline {
    receiver: Receiver<Result<Batch, PipelineError>>,
    worker: Option<JoinHandle<()>>,
    skipped: Arc<AtomicU64>,
    skipped_files: SkippedFiles,
    len: usize,
    buffers: BufferPool,
}

/// Files of a [`Source::Files`] that could not be read or decoded, with why,
/// not yet taken by [`Pipeline::take_skipped_files`].
type SkippedFiles = Arc<Mutex<Vec<String>>>;

/// Image buffers handed back by the consumer for reuse: a batch at 224x224
/// is ~38 MB, and a fresh allocation of that size is page-faulted in (and
/// zeroed by the kernel) every batch otherwise.
type BufferPool = Arc<Mutex<Vec<Vec<f32>>>>;

/// Where the producer is in the stream of examples.
struct Reader {
    epoch: u64,
    /// Position in `order` within the epoch.
    offset: usize,
    /// The epoch's example order.
    order: Vec<usize>,
    /// The epoch's record stream (TFRecord sources).
    stream: Option<RecordStream>,
}

/// The producer thread's state: what the decode threads share, and its own.
struct Producer {
    shared: Arc<Shared>,
    buffers: BufferPool,
    target_width: usize,
}

/// What the producer and the decode threads read.
struct Shared {
    source: Source,
    n: usize,
    mode: Mode,
    config: PipelineConfig,
    preprocess: Preprocess,
    skipped: Arc<AtomicU64>,
    skipped_files: SkippedFiles,
}

/// A decoded batch: its buffer and each example's label (`None`: skipped).
type DecodedBatch = (Vec<f32>, Vec<Option<Label>>);

/// Batches on the decode threads at once: while the last images of one are
/// decoded, the other thread starts on the next instead of waiting.
const IN_FLIGHT: usize = 2;

impl Pipeline {
    /// Starts a pipeline at `start` (use `Cursor::default()` to begin).
    pub fn new(
        source: Source,
        mode: Mode,
        config: PipelineConfig,
        preprocess: Preprocess,
        start: Cursor,
    ) -> Result<Pipeline, PipelineError> {
        if config.batch_size == 0 {
            return Err(PipelineError::Config { key: "batch_size", reason: "must be at least 1".into() });
        }
        if let Some(shard) = config.shard
            && (shard.index >= shard.count || shard.count > config.batch_size)
        {
            return Err(PipelineError::Config {
                key: "shard",
                reason: format!(
                    "part {} of {} of batches of {}: expected a part below the count, and at most one part per example",
                    shard.index, shard.count, config.batch_size
                ),
            });
        }
        if config.prefetch == 0 {
            return Err(PipelineError::Config { key: "prefetch", reason: "must be at least 1".into() });
        }
        preprocess.validate().map_err(|e| PipelineError::Config { key: "preprocess", reason: e.to_string() })?;
        let n = match &source {
            Source::Records { files } => count_records(files)?,
            Source::Files { entries } => entries.len(),
            Source::Memory { entries } => entries.len(),
        };
        if n == 0 {
            return Err(PipelineError::Empty);
        }
        let skipped = Arc::new(AtomicU64::new(0));
        let skipped_files = SkippedFiles::default();
        let (sender, receiver) = sync_channel(config.prefetch);
        let buffers: BufferPool = Arc::default();
        let shared = Shared {
            source,
            n,
            mode,
            config,
            preprocess,
            skipped: Arc::clone(&skipped),
            skipped_files: Arc::clone(&skipped_files),
        };
        let producer = Producer { shared: Arc::new(shared), buffers: Arc::clone(&buffers), target_width: 0 };
        let worker = std::thread::Builder::new()
            .name("ferroflow-input".into())
            .spawn(move || producer.run(start, sender))
            .map_err(|e| PipelineError::Changed(format!("cannot start the input thread: {e}")))?;
        Ok(Pipeline { receiver, worker: Some(worker), skipped, skipped_files, len: n, buffers })
    }

    /// Hands a consumed batch's buffer back for reuse (optional; it saves
    /// allocating and page-faulting a fresh buffer per batch).
    pub fn recycle(&self, batch: Batch) {
        if let Ok(mut pool) = self.buffers.lock()
            && pool.len() < 4
        {
            pool.push(batch.images);
        }
    }

    /// Examples per epoch.
    pub fn examples_per_epoch(&self) -> usize {
        self.len
    }

    /// Examples skipped so far because they failed to decode.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The files of a [`Source::Files`] skipped since the last call, each as
    /// `path: why` (a file deleted or damaged after the run started): the
    /// example is left out of its batch, never a crash.
    pub fn take_skipped_files(&self) -> Vec<String> {
        self.skipped_files.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
}

impl Iterator for Pipeline {
    type Item = Result<Batch, PipelineError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.receiver.recv().ok()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Unblock the producer (its sends fail once the receiver is gone).
        let (_, dummy) = sync_channel(1);
        drop(std::mem::replace(&mut self.receiver, dummy));
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Producer {
    fn run(mut self, start: Cursor, sender: SyncSender<Result<Batch, PipelineError>>) {
        let threads = self.shared.config.num_workers;
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ferroflow-decode-{i}"))
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                let _ = sender.send(Err(PipelineError::Changed(format!("cannot start decode threads: {e}"))));
                return;
            }
        };
        if let Err(e) = self.produce(start, &sender, &pool) {
            let _ = sender.send(Err(e));
        }
    }

    fn produce(
        &mut self,
        start: Cursor,
        sender: &SyncSender<Result<Batch, PipelineError>>,
        pool: &rayon::ThreadPool,
    ) -> Result<(), PipelineError> {
        let shared = Arc::clone(&self.shared);
        let mut reader = Reader {
            epoch: start.epoch,
            offset: start.offset as usize,
            order: shared.epoch_order(start.epoch),
            stream: shared.stream_for(start.epoch),
        };
        // Skip what the cursor says was consumed, reading without decoding.
        if reader.offset > 0 {
            for &s in &reader.order[..reader.offset.min(shared.n)] {
                shared.raw(&mut reader.stream, s, true)?;
            }
        }
        let len = shared.preprocess.output_len();
        let mut in_flight: VecDeque<(Receiver<DecodedBatch>, Cursor)> = VecDeque::with_capacity(IN_FLIGHT);
        // The next batch's records, read while the decode threads work on the
        // batches in flight: `Ok(None)` once the stream has ended, `Err` if
        // reading failed (delivered after the batches already read).
        let mut next = shared.gather(&mut reader);
        loop {
            while in_flight.len() < IN_FLIGHT {
                let (items, cursor) = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) | Err(_) => break,
                };
                let mut images = self.buffers.lock().ok().and_then(|mut p| p.pop()).unwrap_or_default();
                if images.len() != items.len() * len {
                    images.resize(items.len() * len, 0.0);
                }
                let (done, decoded) = sync_channel(1);
                let job = Arc::clone(&shared);
                // Each decode thread writes its examples straight into their slots.
                // A panic (a bug) drops `done`, which the receiving end reports,
                // instead of aborting the process as a panic in `spawn` would.
                pool.spawn(move || {
                    let decode = std::panic::AssertUnwindSafe(|| -> Vec<Option<Label>> {
                        images
                            .par_chunks_mut(len)
                            .zip(items.into_par_iter())
                            .map(|(out, (e, p, raw))| job.process(e, p, raw, out))
                            .collect()
                    });
                    if let Ok(labels) = std::panic::catch_unwind(decode) {
                        let _ = done.send((images, labels));
                    }
                });
                in_flight.push_back((decoded, cursor));
                next = shared.gather(&mut reader);
            }
            let Some((decoded, cursor)) = in_flight.pop_front() else {
                // Every batch read is delivered; the stream ended, or failed after them.
                return next.map(|_| ());
            };
            let Ok((images, labels)) = decoded.recv() else {
                return Err(PipelineError::Changed("a decode thread panicked (a bug in ferroflow)".into()));
            };
            let batch = self.assemble(images, labels, cursor);
            if sender.send(Ok(batch)).is_err() {
                return Ok(()); // the consumer is gone
            }
        }
    }
}

impl Shared {
    fn epochs(&self) -> Option<u64> {
        match self.mode {
            Mode::Train => self.config.epochs,
            Mode::Eval => Some(1),
        }
    }

    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        match self.mode {
            Mode::Train => shuffle_order(self.n, self.config.shuffle_buffer, self.config.seed, epoch),
            Mode::Eval => (0..self.n).collect(),
        }
    }

    fn stream_for(&self, epoch: u64) -> Option<RecordStream> {
        match &self.source {
            Source::Records { files } => {
                let mut files = files.clone();
                if self.mode == Mode::Train && self.config.shuffle_files {
                    Rng::derive(self.config.seed, &[4, epoch]).shuffle(&mut files);
                }
                Some(RecordStream::new(files))
            }
            _ => None,
        }
    }

    fn raw(&self, stream: &mut Option<RecordStream>, s: usize, keep: bool) -> Result<Option<Raw>, PipelineError> {
        Ok(match (&self.source, stream) {
            (Source::Records { .. }, Some(stream)) => stream.take(s, keep)?.map(Raw::Record),
            (Source::Files { entries }, _) => Some(Raw::File(entries[s].0.clone(), entries[s].1.clone())),
            (Source::Memory { entries }, _) => Some(Raw::Encoded(Arc::clone(entries), s)),
            _ => None,
        })
    }

    /// Reads the next batch's raw examples, crossing into the next epoch if
    /// needed, with the cursor after them; `None` at the end of the stream.
    #[allow(clippy::type_complexity)]
    fn gather(&self, reader: &mut Reader) -> Result<Option<(Vec<(u64, usize, Raw)>, Cursor)>, PipelineError> {
        let batch = self.config.batch_size;
        if self.epochs().is_some_and(|e| reader.epoch >= e) {
            return Ok(None);
        }
        let mut items: Vec<(u64, usize, Raw)> = Vec::with_capacity(batch);
        while items.len() < batch {
            if reader.offset == self.n {
                reader.epoch += 1;
                reader.offset = 0;
                if self.epochs().is_some_and(|e| reader.epoch >= e) {
                    break;
                }
                reader.order = self.epoch_order(reader.epoch);
                reader.stream = self.stream_for(reader.epoch);
            }
            let s = reader.order[reader.offset];
            if let Some(raw) = self.raw(&mut reader.stream, s, true)? {
                items.push((reader.epoch, reader.offset, raw));
            }
            reader.offset += 1;
        }
        if items.is_empty() || (items.len() < batch && self.mode == Mode::Train && self.config.drop_remainder) {
            return Ok(None);
        }
        let cursor = if reader.offset == self.n {
            Cursor { epoch: reader.epoch + 1, offset: 0 }
        } else {
            Cursor { epoch: reader.epoch, offset: reader.offset as u64 }
        };
        if let Some(shard) = self.config.shard {
            // This rank's share; the others' raw examples are dropped undecoded.
            let range = shard.range(items.len());
            items.truncate(range.end);
            items.drain(..range.start);
            if items.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some((items, cursor)))
    }

    fn decode_options(&self) -> DecodeOptions {
        let [h, w] = self.preprocess.image_size;
        DecodeOptions {
            channels: Some(self.preprocess.channels),
            max_pixels: self.config.max_pixels,
            jpeg_min_size: self.config.fast_jpeg.then_some((h, w)),
        }
    }

    /// Decodes and preprocesses one example into `out`; `None` (counted) if it is bad.
    ///
    /// With `fast_jpeg`, and preprocessing that is a plain resize + flip +
    /// normalisation ([`Preprocess::takes_planes`]), colour JPEGs decoded at
    /// full scale come back as their YCbCr planes and are resized from those
    /// (`decode_image_planar`, `resize_ycc_into_chw`).
    fn process(&self, epoch: u64, position: usize, raw: Raw, out: &mut [f32]) -> Option<Label> {
        let options = self.decode_options();
        let train = self.mode == Mode::Train;
        let planar = self.config.fast_jpeg && self.preprocess.takes_planes(train);
        let decode = |bytes: &[u8]| {
            if planar {
                decode_image_planar(bytes, &options)
            } else {
                decode_image(bytes, &options).map(Decoded::Pixels)
            }
        };
        // An image-to-image record's target image (`image/target/encoded`).
        let mut target_bytes: Option<Vec<u8>> = None;
        let decoded = match raw {
            Raw::Record(bytes) => {
                let example = Example::from_bytes(&bytes).ok();
                target_bytes =
                    example.as_ref().and_then(|ex| ex.bytes("image/target/encoded").ok()).map(<[u8]>::to_vec);
                let decoded = example.and_then(|ex| {
                    if planar {
                        decode_example_planar(&ex, &options)
                    } else {
                        decode_example(&ex, &options).map(pixels)
                    }
                    .ok()
                });
                decoded.map(|d| {
                    let label = match d.label {
                        Some(l) => Label::Class(l),
                        None => Label::Target(d.target),
                    };
                    (d.image, label)
                })
            }
            Raw::Encoded(entries, i) => decode(&entries[i].0).ok().map(|img| (img, entries[i].1.clone())),
            Raw::File(path, label) => {
                let read = std::fs::read(&path).map_err(|e| format!("cannot read: {e}"));
                match read.and_then(|b| decode(&b).map_err(|e| e.to_string())) {
                    Ok(img) => Some((img, label)),
                    Err(why) => {
                        if let Ok(mut files) = self.skipped_files.lock() {
                            files.push(format!("{}: {why}", path.display()));
                        }
                        None
                    }
                }
            }
        };
        let Some((image, label)) = decoded else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let rng = Rng::derive(self.config.seed, &[5, epoch, position as u64]);
        let preprocess = |image: &Decoded, out: &mut [f32]| {
            if train {
                self.preprocess.train_decoded_into(image, &mut rng.clone(), out);
            } else {
                self.preprocess.eval_decoded_into(image, out);
            }
        };
        preprocess(&image, out);
        let size = image.size();
        recycle_planar(image);
        let target = match (&label, target_bytes) {
            (Label::TargetImage(path), _) => {
                Some((path.display().to_string(), std::fs::read(path).map_err(|e| format!("cannot read: {e}"))))
            }
            (_, Some(bytes)) => Some((format!("record {position} of epoch {epoch}'s target"), Ok(bytes))),
            _ => None,
        };
        if let Some((name, read)) = target {
            // The target with the input's random draws (the same stream, cloned), decoded the
            // same way; crops are drawn in pixels, so the two must be the same size.
            let target = read.and_then(|b| decode(&b).map_err(|e| e.to_string())).and_then(|t| {
                if t.size() == size {
                    Ok(t)
                } else {
                    Err(format!("decoded {:?} (height, width), but its input decoded {size:?}", t.size()))
                }
            });
            return match target {
                Ok(target) => {
                    let mut values = vec![0.0; out.len()];
                    preprocess(&target, &mut values);
                    recycle_planar(target);
                    Some(Label::Target(values))
                }
                Err(why) => {
                    if let Ok(mut files) = self.skipped_files.lock() {
                        files.push(format!("{name}: {why}"));
                    }
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
        }
        Some(label)
    }
}

/// A pixel-decoded example as a [`Decoded`] one.
fn pixels(d: DecodedExample) -> DecodedExample<Decoded> {
    DecodedExample { image: Decoded::Pixels(d.image), label: d.label, target: d.target }
}

impl Producer {
    /// Builds the batch, closing the gaps left by examples that failed to decode.
    fn assemble(&mut self, mut images: Vec<f32>, labels: Vec<Option<Label>>, cursor: Cursor) -> Batch {
        let [h, w] = self.shared.preprocess.image_size;
        let c = self.shared.preprocess.channels;
        let len = c * h * w;
        let mut batch =
            Batch { images: Vec::new(), labels: Vec::new(), targets: Vec::new(), size: 0, shape: [c, h, w], cursor };
        for (i, label) in labels.into_iter().enumerate() {
            let Some(label) = label else { continue };
            if batch.size != i {
                images.copy_within(i * len..(i + 1) * len, batch.size * len);
            }
            match label {
                Label::Class(l) => batch.labels.push(l),
                Label::Target(t) => {
                    self.target_width = t.len();
                    batch.targets.extend(t);
                }
                // `process` turns every target image into its values.
                Label::TargetImage(_) => continue,
            }
            batch.size += 1;
        }
        images.truncate(batch.size * len);
        batch.images = images;
        batch
    }
}
