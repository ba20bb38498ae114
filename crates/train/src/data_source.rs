//! Where a training run's examples come from: a prepared dataset
//! (TFRecords + dataset.json; class labels, or regression targets from
//! `prepare --labels-csv`) or an image folder (classes) loaded in memory.

use std::path::Path;
use std::sync::Arc;

use ferroflow_data::{
    ChannelStats, Dataset, DecodeOptions, FolderFiles, Label, Source, Task, decode_image, list_folder,
    list_paired_folder,
};

use crate::error::{Result, TrainError};

/// The size up to which an image folder is loaded into memory by default
/// (`data.in_memory` unset): 512 MiB of files.
pub const IN_MEMORY_LIMIT: u64 = 512 << 20;

/// The train and validation sources, with what the model needs to know.
#[derive(Debug, Clone)]
pub struct DataSource {
    /// Training examples.
    pub train: Source,
    /// Validation examples (`None` when the split is empty).
    pub validation: Option<Source>,
    /// Classification or regression.
    pub task: Task,
    /// Class names (empty for regression).
    pub classes: Vec<String>,
    /// Regression targets per example (0 for classification).
    pub target_size: usize,
    /// Training examples per class, by label (empty for regression).
    pub class_counts: Vec<usize>,
    /// Per-channel mean of the training split, 0–255.
    pub mean: [f64; 3],
    /// Per-channel std of the training split, 0–255.
    pub std: [f64; 3],
    /// Training examples per epoch.
    pub train_count: usize,
    /// A short description for logs.
    pub description: String,
    /// An `inputs/` + `targets/` folder: each example's target is an image
    /// (in the batch's `targets`, preprocessed like the input).
    pub paired: bool,
}

impl DataSource {
    /// Opens `path`: a directory with dataset.json, an image folder (in
    /// memory or streamed from disk: `in_memory`, default by its size), or with
    /// `paired` an `inputs/` + `targets/` folder (streamed).
    pub fn open(
        path: &Path,
        val_fraction: f64,
        seed: u64,
        in_memory: Option<bool>,
        paired: bool,
    ) -> Result<DataSource> {
        if !path.exists() {
            return Err(TrainError::config("data.path", format!("{}: no such file or directory", path.display())));
        }
        if path.join(ferroflow_data::DATASET_JSON).exists() {
            let ds = Dataset::open(path).map_err(|e| TrainError::config("data.path", e.to_string()))?;
            let image_targets = ds.meta.task == Task::ImageToImage;
            if paired != image_targets {
                return Err(TrainError::config(
                    "data.targets",
                    if paired {
                        format!(
                            "\"paired\" needs target images, and {} has none (prepare it with --paired)",
                            path.display()
                        )
                    } else {
                        format!("{} holds target images: set data.targets = \"paired\"", path.display())
                    },
                ));
            }
            let files = |split: &str| ds.files(split).map_err(|e| TrainError::config("data.path", e.to_string()));
            let train_count = ds.meta.splits.get("train").map_or(0, |s| s.count);
            let val_count = ds.meta.splits.get("validation").map_or(0, |s| s.count);
            return Ok(DataSource {
                train: Source::Records { files: files("train")? },
                validation: (val_count > 0)
                    .then(|| files("validation"))
                    .transpose()?
                    .map(|files| Source::Records { files }),
                task: ds.meta.task,
                class_counts: ds
                    .meta
                    .classes
                    .iter()
                    .map(|c| ds.meta.splits.get("train").and_then(|s| s.per_class.get(c)).copied().unwrap_or(0))
                    .collect(),
                classes: ds.meta.classes.clone(),
                target_size: ds.meta.target_size,
                mean: ds.meta.mean,
                std: ds.meta.std,
                train_count,
                description: format!("{} (prepared: {train_count} train / {val_count} validation)", path.display()),
                paired: image_targets,
            });
        }
        if !path.is_dir() {
            return Err(TrainError::config(
                "data.path",
                format!("{}: expected a dataset directory (with dataset.json) or an image folder", path.display()),
            ));
        }
        let subdirs: Vec<String> = std::fs::read_dir(path)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let looks_paired = subdirs.iter().any(|d| d == "inputs") && subdirs.iter().any(|d| d == "targets");
        if looks_paired && !paired {
            return Err(TrainError::config(
                "data.targets",
                format!(
                    "{} has inputs/ and targets/: set data.targets = \"paired\" to train image-to-image on it \
                     (as it is, they would be two classes)",
                    path.display()
                ),
            ));
        }
        let FolderFiles { classes, train, validation, bytes } =
            if paired { list_paired_folder(path, val_fraction, seed) } else { list_folder(path, val_fraction, seed) }
                .map_err(|e| TrainError::config("data.path", e.to_string()))?;
        // Paired folders are always read per batch (the targets are files too).
        let in_memory = !paired && in_memory.unwrap_or(bytes <= IN_MEMORY_LIMIT);
        let read = |file: &Path| {
            std::fs::read(file)
                .map_err(|cause| TrainError::config("data.path", format!("{}: cannot read: {cause}", file.display())))
        };
        // Statistics of the training split, as prepare computes them (streamed: one
        // file at a time, so memory does not grow with the folder).
        let mut stats = ChannelStats::default();
        let mut loaded = Vec::new();
        for (file, label) in &train {
            let bytes = read(file)?;
            if let Ok(img) = decode_image(&bytes, &DecodeOptions::default()) {
                stats.merge(&ChannelStats::of_image(&img));
            }
            if in_memory {
                loaded.push((bytes, label.clone()));
            }
        }
        let (nt, nv) = (train.len(), validation.len());
        let mut class_counts = vec![0; classes.len()];
        for (_, label) in train.iter() {
            if let Label::Class(l) = label
                && let Some(c) = usize::try_from(*l).ok().and_then(|l| class_counts.get_mut(l))
            {
                *c += 1;
            }
        }
        let (train, validation, how) = if in_memory {
            let validation = validation
                .iter()
                .map(|(file, label)| read(file).map(|b| (b, label.clone())))
                .collect::<Result<Vec<_>>>()?;
            (
                Source::Memory { entries: Arc::new(loaded) },
                Source::Memory { entries: Arc::new(validation) },
                "image folder in memory",
            )
        } else {
            (
                Source::Files { entries: Arc::new(train) },
                Source::Files { entries: Arc::new(validation) },
                if paired {
                    "image-to-image folder read from disk per batch"
                } else {
                    "image folder read from disk per batch"
                },
            )
        };
        Ok(DataSource {
            train,
            validation: (nv > 0).then_some(validation),
            task: Task::Classification,
            classes,
            target_size: 0,
            class_counts,
            paired,
            mean: stats.mean(),
            std: stats.std(),
            train_count: nt,
            description: format!(
                "{} ({how}: {nt} train / {nv} validation, {:.1} MB)",
                path.display(),
                bytes as f64 / 1e6
            ),
        })
    }
}

/// Checks class labels against the model's class count and converts them for the loss.
pub fn class_labels(labels: &[i64], classes: usize) -> Result<Vec<u32>> {
    labels
        .iter()
        .map(|&l| {
            if l < 0 || l as usize >= classes {
                Err(TrainError::config("data", format!("label {l} is outside the model's {classes} classes")))
            } else {
                Ok(l as u32)
            }
        })
        .collect()
}
