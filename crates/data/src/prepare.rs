//! `prepare`: converts an image folder into sharded TFRecords of
//! `tf.train.Example`s, with `labels.txt` and `dataset.json`, the way
//! TF-slim's `download_and_convert_*.py` scripts do, but parallel, seeded and
//! resumable per shard.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfrecord::{Compression, Example, RecordError, RecordWriter};

use crate::dataset::{DATASET_JSON, DatasetMeta, Encoding, LABELS_TXT, Skipped, SplitMeta, Task, shard_name};
use crate::decode::{DEFAULT_MAX_PIXELS, DecodeOptions, ImageFormat, decode_image, image_info};
use crate::discover::{DiscoverError, Discovered, ImageEntry, Split, discover};
use crate::image::ImageU8;
use crate::pipeline::Label as PipelineLabel;
use crate::resize::resize_bilinear_u8;
use crate::split::split_items;
use crate::stats::{ChannelStats, Summary};

/// Images per shard when the shard count is not given.
pub const IMAGES_PER_SHARD: usize = 1000;
/// Images decoded in parallel before their records are written in order;
/// bounds memory whatever the dataset size.
const CHUNK: usize = 64;

/// Options for [`prepare`]. Defaults: 10% validation, one shard per 1,000
/// training images, original encoding, no resize, no compression, seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrepareOptions {
    /// Fraction of each class held out for validation (ignored when the
    /// folder already has `train/` and `val/`).
    pub val_fraction: f64,
    /// Shards per split; `None` picks one per [`IMAGES_PER_SHARD`] training images.
    pub shards: Option<usize>,
    /// How images are stored.
    pub encoding: Encoding,
    /// Resize every image to `[height, width]` (TF bilinear). Required for
    /// `raw` unless all images share one size; with `original` the resized
    /// image is stored as PNG.
    pub resize: Option<[usize; 2]>,
    /// Channels to store (1 or 3); `None`: 1 when every image is greyscale, else 3.
    pub channels: Option<usize>,
    /// A CSV of `filename,target[,target…]` rows: a regression dataset.
    pub labels_csv: Option<PathBuf>,
    /// The folder holds `inputs/` and `targets/` with the same file names: an
    /// image-to-image dataset (`image/target/encoded`; `original` encoding).
    pub paired: bool,
    /// Write GZIP-compressed shards (`.tfrecord.gz`).
    pub gzip: bool,
    /// Seed of the split and of the shuffle.
    pub seed: u64,
    /// Convert only shard `index` of `count` (both splits), for cluster jobs.
    pub slice: Option<(usize, usize)>,
    /// Pixel limit per image.
    pub max_pixels: u64,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            val_fraction: 0.1,
            shards: None,
            encoding: Encoding::Original,
            resize: None,
            channels: None,
            labels_csv: None,
            paired: false,
            gzip: false,
            seed: 0,
            slice: None,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Errors of [`prepare`].
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Finding images failed.
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    /// Writing a shard failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A file operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A bad CSV line.
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The CSV.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An option that cannot work.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError + '_ {
    move |cause| PrepareError::Io { path: path.display().to_string(), cause }
}

/// What [`prepare`] did.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    /// The dataset's metadata (complete once `finished`).
    pub meta: DatasetMeta,
    /// Shard files this call wrote.
    pub written: Vec<String>,
    /// True when `dataset.json` was written (always, unless a slice still
    /// waits for other slices).
    pub finished: bool,
}

/// One image to convert.
#[derive(Debug, Clone)]
struct Item {
    entry: ImageEntry,
    label: Label,
}

#[derive(Debug, Clone)]
enum Label {
    Class(usize),
    Target(Vec<f32>),
    /// The target image's file.
    Image(PathBuf),
}

/// Statistics one shard (or a slice of shards) contributes; merged in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PartStats {
    splits: BTreeMap<String, SplitMeta>,
    skipped: Vec<Skipped>,
    sum: [f64; 3],
    sum_sq: [f64; 3],
    pixels: u64,
    widths: Vec<u32>,
    heights: Vec<u32>,
}

fn read_csv(path: &Path, root: &Path) -> Result<(HashMap<String, Vec<f32>>, usize), PrepareError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut map = HashMap::new();
    let mut width = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let err = |reason: String| PrepareError::Csv { path: path.display().to_string(), line: i + 1, reason };
        if fields.len() < 2 {
            return Err(err(format!("expected `filename,target[,target…]`, got {line:?}")));
        }
        let parsed: Result<Vec<f32>, _> = fields[1..].iter().map(|f| f.parse::<f32>()).collect();
        let values = match parsed {
            Ok(v) => v,
            Err(_) if map.is_empty() && width.is_none() => continue, // a header row
            Err(e) => return Err(err(format!("target {:?} is not a number: {e}", fields[1..].join(",")))),
        };
        if let Some(w) = width
            && w != values.len()
        {
            return Err(err(format!("{} targets, but earlier rows have {w}", values.len())));
        }
        width = Some(values.len());
        let name = fields[0].trim_start_matches("./").to_string();
        let name = root.join(&name).strip_prefix(root).map_or(name, |p| p.to_string_lossy().replace('\\', "/"));
        map.insert(name, values);
    }
    let width = width.ok_or_else(|| PrepareError::Csv {
        path: path.display().to_string(),
        line: 0,
        reason: "no rows with targets".into(),
    })?;
    Ok((map, width))
}

/// Converts the images under `src` into a dataset in `out`. `progress(done,
/// total)` is called as images finish.
pub fn prepare(
    src: &Path,
    out: &Path,
    options: &PrepareOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<PrepareReport, PrepareError> {
    if !(0.0..1.0).contains(&options.val_fraction) {
        return Err(PrepareError::Invalid(format!("val_fraction must be in [0, 1), got {}", options.val_fraction)));
    }
    if let Some(c) = options.channels
        && c != 1
        && c != 3
    {
        return Err(PrepareError::Invalid(format!("channels must be 1 or 3, got {c}")));
    }
    if let Some([h, w]) = options.resize
        && (h == 0 || w == 0)
    {
        return Err(PrepareError::Invalid(format!("resize must be positive, got {h}x{w}")));
    }
    if options.paired && (options.labels_csv.is_some() || options.encoding == Encoding::Raw) {
        return Err(PrepareError::Invalid(
            "--paired stores image files (--encoding original) and takes no --labels-csv".into(),
        ));
    }
    let found = if options.paired {
        Discovered { classes: Vec::new(), images: Vec::new(), presplit: false }
    } else {
        discover(src)?
    };
    let mut skipped = Vec::new();

    // Labels.
    let (task, classes, target_size, mut items) = match &options.labels_csv {
        _ if options.paired => {
            let files =
                crate::folder::list_paired_folder(src, 0.0, 0).map_err(|e| PrepareError::Invalid(e.to_string()))?;
            let inputs = src.join("inputs");
            let items = files
                .train
                .into_iter()
                .filter_map(|(path, label)| match label {
                    PipelineLabel::TargetImage(target) => Some(Item {
                        entry: ImageEntry {
                            relative: path.strip_prefix(&inputs).unwrap_or(&path).to_string_lossy().replace('\\', "/"),
                            path,
                            label: None,
                            split: None,
                        },
                        label: Label::Image(target),
                    }),
                    _ => None,
                })
                .collect();
            (Task::ImageToImage, Vec::new(), 0, items)
        }
        Some(csv) => {
            let (targets, width) = read_csv(csv, src)?;
            let mut items = Vec::new();
            for entry in &found.images {
                let file_name = entry.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                match targets.get(&entry.relative).or_else(|| targets.get(&file_name)) {
                    Some(t) => items.push(Item { entry: entry.clone(), label: Label::Target(t.clone()) }),
                    None => skipped.push(Skipped {
                        path: entry.relative.clone(),
                        reason: format!("no row for it in {}", csv.display()),
                    }),
                }
            }
            (Task::Regression, Vec::new(), width, items)
        }
        None => {
            if found.classes.is_empty() {
                return Err(PrepareError::Invalid(format!(
                    "{}: no class sub-folders; put each class's images in its own folder, or give --labels-csv for a regression dataset",
                    src.display()
                )));
            }
            let items = found
                .images
                .iter()
                .map(|e| Item { entry: e.clone(), label: Label::Class(e.label.unwrap_or(0)) })
                .collect();
            (Task::Classification, found.classes.clone(), 0, items)
        }
    };

    // Split (stratified per class, seeded), unless the folder is pre-split.
    let (train, validation) = split_items(
        std::mem::take(&mut items),
        |i| i.entry.split,
        |i| match i.label {
            Label::Class(c) => c,
            Label::Target(_) | Label::Image(_) => 0,
        },
        options.val_fraction,
        options.seed,
    );
    let mut by_split: BTreeMap<Split, Vec<Item>> = BTreeMap::new();
    by_split.insert(Split::Train, train);
    by_split.insert(Split::Validation, validation);
    let n_train = by_split[&Split::Train].len();
    let shards = options.shards.unwrap_or_else(|| n_train.div_ceil(IMAGES_PER_SHARD).max(1));
    if shards == 0 {
        return Err(PrepareError::Invalid("shards must be at least 1".into()));
    }
    if let Some((index, count)) = options.slice
        && (count != shards || index >= count)
    {
        return Err(PrepareError::Invalid(format!(
            "--shard-index {index} --num-shards {count}: the index must be below the count, and the count must equal --shards ({shards})"
        )));
    }

    // Channels and size, decided from the headers of every image so that
    // every slice of a cluster job decides the same.
    let all: Vec<&Item> = by_split.values().flatten().collect();
    let infos: Vec<Option<crate::ImageInfo>> =
        all.par_iter().map(|i| std::fs::read(&i.entry.path).ok().and_then(|b| image_info(&b).ok())).collect();
    let channels =
        options.channels.unwrap_or(if infos.iter().flatten().all(|i| i.grey) && !infos.is_empty() { 1 } else { 3 });
    let image_size = match (options.resize, options.encoding) {
        (Some(size), _) => Some(size),
        (None, Encoding::Raw) => {
            let sizes: std::collections::BTreeSet<(u32, u32)> =
                infos.iter().flatten().map(|i| (i.height, i.width)).collect();
            match sizes.len() {
                1 => sizes.first().map(|&(h, w)| [h as usize, w as usize]),
                _ => {
                    return Err(PrepareError::Invalid(format!(
                        "raw encoding stores fixed-size pixels, but the images have {} different sizes: give --resize HxW",
                        sizes.len()
                    )));
                }
            }
        }
        (None, Encoding::Original) => None,
    };

    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let total: usize = by_split.values().map(Vec::len).sum();
    let done = AtomicUsize::new(0);
    let ctx = Ctx { options, channels, image_size, classes: &classes, done: &done, total, progress };
    let mut part = PartStats { skipped, ..Default::default() };
    let mut written = Vec::new();
    for split in [Split::Train, Split::Validation] {
        let list = &by_split[&split];
        let meta = part.splits.entry(split.name().to_string()).or_default();
        for c in &classes {
            meta.per_class.entry(c.clone()).or_default();
        }
        meta.files = (0..shards).map(|k| shard_name(split.name(), k, shards, options.gzip)).collect();
        for k in 0..shards {
            let name = shard_name(split.name(), k, shards, options.gzip);
            if options.slice.is_some_and(|(index, _)| index != k) {
                continue;
            }
            let items = &list[k * list.len() / shards..(k + 1) * list.len() / shards];
            write_shard(&ctx, out, &name, split, items, &mut part)?;
            written.push(name);
        }
    }

    let meta_template = DatasetMeta {
        created_by: format!("ferroflow {}", env!("CARGO_PKG_VERSION")),
        source: src.display().to_string(),
        task,
        classes: classes.clone(),
        target_size,
        encoding: options.encoding,
        compression: if options.gzip { "gzip" } else { "none" }.to_string(),
        features: feature_kinds(options.encoding, task),
        image_size,
        channels,
        splits: BTreeMap::new(),
        mean: [0.0; 3],
        std: [0.0; 3],
        width: None,
        height: None,
        skipped: Vec::new(),
        seed: options.seed,
        val_fraction: options.val_fraction,
    };
    let parts = match options.slice {
        None => Some(vec![part]),
        Some((index, count)) => {
            let path = out.join(part_name(index, count));
            write_atomic(&path, serde_json::to_string(&part).unwrap_or_default().as_bytes())?;
            collect_parts(out, count)?
        }
    };
    let Some(parts) = parts else {
        return Ok(PrepareReport { meta: meta_template, written, finished: false });
    };
    let meta = merge(meta_template, parts);
    let labels: String = meta.classes.iter().enumerate().map(|(i, c)| format!("{i}:{c}\n")).collect();
    write_atomic(&out.join(LABELS_TXT), labels.as_bytes())?;
    let json = serde_json::to_string_pretty(&meta).map_err(|e| PrepareError::Invalid(e.to_string()))?;
    write_atomic(&out.join(DATASET_JSON), json.as_bytes())?;
    if let Some((_, count)) = options.slice {
        for i in 0..count {
            let _ = std::fs::remove_file(out.join(part_name(i, count)));
        }
    }
    Ok(PrepareReport { meta, written, finished: true })
}

struct Ctx<'a> {
    options: &'a PrepareOptions,
    channels: usize,
    image_size: Option<[usize; 2]>,
    classes: &'a [String],
    done: &'a AtomicUsize,
    total: usize,
    progress: &'a (dyn Fn(usize, usize) + Sync),
}

fn part_name(index: usize, count: usize) -> String {
    format!(".prepare-part-{index:05}-of-{count:05}.json")
}

/// Reads every slice's statistics, or `None` while some are missing.
fn collect_parts(out: &Path, count: usize) -> Result<Option<Vec<PartStats>>, PrepareError> {
    let mut parts = Vec::new();
    for i in 0..count {
        let path = out.join(part_name(i, count));
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let part = serde_json::from_str(&text)
            .map_err(|e| PrepareError::Invalid(format!("{}: corrupt slice statistics: {e}", path.display())))?;
        parts.push(part);
    }
    Ok(Some(parts))
}

fn merge(mut meta: DatasetMeta, parts: Vec<PartStats>) -> DatasetMeta {
    let mut stats = ChannelStats::default();
    let (mut widths, mut heights) = (Vec::new(), Vec::new());
    for part in parts {
        for (name, s) in part.splits {
            let m = meta.splits.entry(name).or_default();
            m.count += s.count;
            if m.files.is_empty() {
                m.files = s.files;
            }
            for (c, n) in s.per_class {
                *m.per_class.entry(c).or_default() += n;
            }
        }
        meta.skipped.extend(part.skipped);
        stats.merge(&ChannelStats { count: part.pixels, sum: part.sum, sum_sq: part.sum_sq });
        widths.extend(part.widths.iter().map(|&w| f64::from(w)));
        heights.extend(part.heights.iter().map(|&h| f64::from(h)));
    }
    meta.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    meta.skipped.dedup();
    meta.mean = stats.mean();
    meta.std = stats.std();
    meta.width = Summary::of(&widths);
    meta.height = Summary::of(&heights);
    meta
}

fn feature_kinds(encoding: Encoding, task: Task) -> BTreeMap<String, String> {
    let keys: &[(&str, &str)] = match (encoding, task) {
        (Encoding::Original, Task::Classification) => &[
            ("image/encoded", "bytes"),
            ("image/format", "bytes"),
            ("image/class/label", "int64"),
            ("image/height", "int64"),
            ("image/width", "int64"),
            ("image/filename", "bytes"),
        ],
        (Encoding::Original, Task::Regression) => &[
            ("image/encoded", "bytes"),
            ("image/format", "bytes"),
            ("image/target", "float"),
            ("image/height", "int64"),
            ("image/width", "int64"),
            ("image/filename", "bytes"),
        ],
        (Encoding::Original, Task::ImageToImage) => &[
            ("image/encoded", "bytes"),
            ("image/format", "bytes"),
            ("image/target/encoded", "bytes"),
            ("image/target/format", "bytes"),
            ("image/height", "int64"),
            ("image/width", "int64"),
            ("image/filename", "bytes"),
        ],
        (Encoding::Raw, Task::ImageToImage) => &[],
        (Encoding::Raw, Task::Classification) => {
            &[("img_raw", "bytes"), ("label", "int64"), ("height", "int64"), ("width", "int64"), ("channels", "int64")]
        }
        (Encoding::Raw, Task::Regression) => {
            &[("img_raw", "bytes"), ("target", "float"), ("height", "int64"), ("width", "int64"), ("channels", "int64")]
        }
    };
    keys.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PrepareError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

struct Converted {
    record: Vec<u8>,
    stats: ChannelStats,
    width: u32,
    height: u32,
}

fn convert(ctx: &Ctx<'_>, item: &Item) -> Result<Converted, String> {
    let bytes = std::fs::read(&item.entry.path).map_err(|e| format!("cannot read: {e}"))?;
    let format = ImageFormat::sniff(&bytes);
    let decode =
        DecodeOptions { channels: Some(ctx.channels), max_pixels: ctx.options.max_pixels, jpeg_min_size: None };
    let decoded = decode_image(&bytes, &decode).map_err(|e| e.to_string())?;
    let (src_w, src_h) = (decoded.width as u32, decoded.height as u32);
    let (decoded_h, decoded_w) = (decoded.height, decoded.width);
    let stored: ImageU8 = match ctx.image_size {
        Some([h, w]) if (h, w) != (decoded.height, decoded.width) => resize_bilinear_u8(&decoded, h, w).to_u8(),
        _ => decoded,
    };
    let stats = ChannelStats::of_image(&stored);
    let mut b = Example::builder();
    match ctx.options.encoding {
        Encoding::Original => {
            let (encoded, format_name) = if ctx.image_size.is_some() {
                (stored.to_png("prepare")?, "png")
            } else {
                (bytes, format.map_or("unknown", ImageFormat::name))
            };
            b = b
                .bytes("image/encoded", encoded)
                .bytes("image/format", format_name)
                .int64("image/height", stored.height as i64)
                .int64("image/width", stored.width as i64)
                .bytes("image/filename", item.entry.relative.as_str());
            b = match &item.label {
                Label::Class(c) => b.int64("image/class/label", *c as i64),
                Label::Target(t) => b.floats("image/target", t.iter().copied()),
                Label::Image(target) => {
                    // The target as the input: its own bytes, or resized to the same size as PNG.
                    let bytes = std::fs::read(target)
                        .map_err(|e| format!("its target {}: cannot read: {e}", target.display()))?;
                    let image =
                        decode_image(&bytes, &decode).map_err(|e| format!("its target {}: {e}", target.display()))?;
                    if (image.height, image.width) != (decoded_h, decoded_w) {
                        return Err(format!(
                            "its target {} is {}x{}, the input {decoded_h}x{decoded_w} (they must be the same size)",
                            target.display(),
                            image.height,
                            image.width
                        ));
                    }
                    let (encoded, format_name) = match ctx.image_size {
                        Some([h, w]) => {
                            let resized = if (h, w) != (image.height, image.width) {
                                resize_bilinear_u8(&image, h, w).to_u8()
                            } else {
                                image
                            };
                            (resized.to_png("prepare")?, "png")
                        }
                        None => {
                            let name = ImageFormat::sniff(&bytes).map_or("unknown", ImageFormat::name);
                            (bytes, name)
                        }
                    };
                    b.bytes("image/target/encoded", encoded).bytes("image/target/format", format_name)
                }
            };
        }
        Encoding::Raw => {
            b = b
                .int64("height", stored.height as i64)
                .int64("width", stored.width as i64)
                .int64("channels", stored.channels as i64);
            b = match &item.label {
                Label::Class(c) => b.int64("label", *c as i64),
                Label::Target(t) => b.floats("target", t.iter().copied()),
                // Refused before any work (--paired stores image files).
                Label::Image(_) => return Err("an image target needs --encoding original".into()),
            };
            b = b.bytes("img_raw", stored.data);
        }
    }
    Ok(Converted { record: b.build().to_bytes(), stats, width: src_w, height: src_h })
}

fn write_shard(
    ctx: &Ctx<'_>,
    out: &Path,
    name: &str,
    split: Split,
    items: &[Item],
    part: &mut PartStats,
) -> Result<(), PrepareError> {
    // Written under a temporary name and renamed when complete, so an
    // interrupted run never leaves a shard that looks whole.
    let final_path = out.join(name);
    let tmp_path = out.join(format!(".{name}.partial"));
    let compression = if ctx.options.gzip { Compression::Gzip } else { Compression::None };
    let mut writer = RecordWriter::create(&tmp_path, compression)?;
    for chunk in items.chunks(CHUNK) {
        let results: Vec<Result<Converted, String>> = chunk
            .par_iter()
            .map(|item| {
                let r = convert(ctx, item);
                (ctx.progress)(ctx.done.fetch_add(1, Ordering::Relaxed) + 1, ctx.total);
                r
            })
            .collect();
        for (item, result) in chunk.iter().zip(results) {
            match result {
                Ok(c) => {
                    writer.write(&c.record)?;
                    let meta = part.splits.entry(split.name().to_string()).or_default();
                    meta.count += 1;
                    if let Label::Class(label) = item.label {
                        *meta.per_class.entry(ctx.classes[label].clone()).or_default() += 1;
                    }
                    if split == Split::Train {
                        part.pixels += c.stats.count;
                        for ch in 0..3 {
                            part.sum[ch] += c.stats.sum[ch];
                            part.sum_sq[ch] += c.stats.sum_sq[ch];
                        }
                    }
                    part.widths.push(c.width);
                    part.heights.push(c.height);
                }
                Err(reason) => part.skipped.push(Skipped { path: item.entry.relative.clone(), reason }),
            }
        }
    }
    writer.close()?;
    std::fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))
}
