//! A prepared dataset: its `dataset.json` (what `prepare` wrote) and the
//! shard files it lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// The name of the metadata file in a dataset directory.
pub const DATASET_JSON: &str = "dataset.json";
/// The TF-slim label file (`id:name` lines).
pub const LABELS_TXT: &str = "labels.txt";

/// How images are stored in the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The encoded file bytes with the TF-slim keys (`image/encoded`, `image/format`,
    /// `image/class/label`, `image/height`, `image/width`, `image/filename`).
    #[default]
    Original,
    /// Decoded, resized 8-bit pixels (`img_raw`, `label`, `height`, `width`,
    /// `channels`), the style of the notes.
    Raw,
}

/// Whether labels are classes or regression targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Integer class labels.
    #[default]
    Classification,
    /// Float targets from a CSV.
    Regression,
    /// A target image per input (`image/target/encoded`), from an `inputs/` +
    /// `targets/` folder.
    #[serde(rename = "image_to_image")]
    ImageToImage,
}

/// One split of a prepared dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SplitMeta {
    /// Examples written.
    pub count: usize,
    /// Shard file names, relative to the dataset directory.
    pub files: Vec<String>,
    /// Examples per class name (classification only).
    pub per_class: BTreeMap<String, usize>,
}

/// A skipped source image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The image, relative to the source folder.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The contents of `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Written by.
    pub created_by: String,
    /// The source folder.
    pub source: String,
    /// Classification or regression.
    pub task: Task,
    /// Class names; label `i` is `classes[i]` (empty for regression).
    pub classes: Vec<String>,
    /// Regression target width (0 for classification).
    pub target_size: usize,
    /// Storage encoding.
    pub encoding: Encoding,
    /// `none` or `gzip`.
    pub compression: String,
    /// Feature key → kind (`bytes`, `int64`, `float`) of every stored Example.
    pub features: BTreeMap<String, String>,
    /// `[height, width]` of every stored image, when fixed (raw, or `--resize`).
    pub image_size: Option<[usize; 2]>,
    /// Channels of the stored pixels (raw), or of decoding (original: 3 unless all grey).
    pub channels: usize,
    /// The splits, by name (`train`, `validation`).
    pub splits: BTreeMap<String, SplitMeta>,
    /// Per-channel mean of the train split's stored pixels, 0–255.
    pub mean: [f64; 3],
    /// Per-channel standard deviation of the train split's stored pixels, 0–255.
    pub std: [f64; 3],
    /// Source widths.
    pub width: Option<Summary>,
    /// Source heights.
    pub height: Option<Summary>,
    /// Source images that were skipped.
    pub skipped: Vec<Skipped>,
    /// The seed of the split and shuffle.
    pub seed: u64,
    /// The validation fraction asked for (unused for pre-split folders).
    pub val_fraction: f64,
}

/// Errors opening a dataset directory.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// No dataset.json.
    #[error("{dir}: not a prepared dataset (no {DATASET_JSON}; run `ferroflow prepare` first)")]
    Missing {
        /// The directory.
        dir: String,
    },
    /// Unreadable.
    #[error("{path}: cannot read: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Malformed JSON.
    #[error("{path}: invalid {DATASET_JSON}: {cause}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's words.
        cause: String,
    },
    /// A split the dataset lacks.
    #[error("{dir}: no split {split:?} (the dataset has: {available})")]
    NoSplit {
        /// The directory.
        dir: String,
        /// The split asked for.
        split: String,
        /// The splits present.
        available: String,
    },
}

/// A prepared dataset on disk.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: DatasetMeta,
}

impl Dataset {
    /// Opens `dir/dataset.json`.
    pub fn open(dir: &Path) -> Result<Dataset, DatasetError> {
        let path = dir.join(DATASET_JSON);
        if !path.exists() {
            return Err(DatasetError::Missing { dir: dir.display().to_string() });
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|cause| DatasetError::Read { path: path.display().to_string(), cause })?;
        let meta = serde_json::from_str(&text)
            .map_err(|e| DatasetError::Parse { path: path.display().to_string(), cause: e.to_string() })?;
        Ok(Dataset { dir: dir.to_path_buf(), meta })
    }

    /// The shard files of a split.
    pub fn files(&self, split: &str) -> Result<Vec<PathBuf>, DatasetError> {
        let s = self.meta.splits.get(split).ok_or_else(|| DatasetError::NoSplit {
            dir: self.dir.display().to_string(),
            split: split.to_string(),
            available: self.meta.splits.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        Ok(s.files.iter().map(|f| self.dir.join(f)).collect())
    }
}

/// `train-00001-of-00004.tfrecord` (TF-slim's shard naming), with `.gz` for GZIP.
pub fn shard_name(split: &str, index: usize, count: usize, gzip: bool) -> String {
    format!("{split}-{index:05}-of-{count:05}.tfrecord{}", if gzip { ".gz" } else { "" })
}
