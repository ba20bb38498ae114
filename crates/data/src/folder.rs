//! An image folder for training without a `prepare` step, split like
//! `prepare` splits it: its files' paths (read per batch, in bounded
//! memory) or their encoded bytes loaded into memory.

use std::path::{Path, PathBuf};

use crate::discover::{DiscoverError, Discovered, discover};
use crate::pipeline::Label;
use crate::split::split_items;

/// A classification folder in memory.
#[derive(Debug, Clone)]
pub struct FolderDataset {
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// `(encoded bytes, label)` of the training images.
    pub train: Vec<(Vec<u8>, Label)>,
    /// `(encoded bytes, label)` of the validation images.
    pub validation: Vec<(Vec<u8>, Label)>,
}

/// Errors loading a folder.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// Finding the images failed.
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    /// The folder has no class sub-folders.
    #[error("{0}: no class sub-folders (each class's images go in a folder named after it)")]
    NoClasses(String),
    /// Not an image-to-image folder.
    #[error("{0}: an image-to-image folder needs inputs/ and targets/ sub-folders with the same file names")]
    NotPaired(String),
    /// An input without its target.
    #[error("{input} has no target: expected {target}")]
    MissingTarget {
        /// The input image.
        input: String,
        /// Where its target should be.
        target: String,
    },
    /// A file could not be read.
    #[error("{path}: cannot read: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
}

/// A classification folder's files, split, not read.
#[derive(Debug, Clone)]
pub struct FolderFiles {
    /// Class names; label `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// `(path, label)` of the training images.
    pub train: Vec<(PathBuf, Label)>,
    /// `(path, label)` of the validation images.
    pub validation: Vec<(PathBuf, Label)>,
    /// The files' total size in bytes.
    pub bytes: u64,
}

/// Lists `root`'s images (class folders, optionally under `train/` and
/// `val/`), splitting off `val_fraction` per class with `seed` when the
/// folder has no split of its own, in the order [`load_folder`] loads them.
pub fn list_folder(root: &Path, val_fraction: f64, seed: u64) -> Result<FolderFiles, FolderError> {
    let Discovered { classes, images, .. } = discover(root)?;
    if classes.is_empty() {
        return Err(FolderError::NoClasses(root.display().to_string()));
    }
    let bytes = images.iter().map(|e| std::fs::metadata(&e.path).map_or(0, |m| m.len())).sum();
    let (train, validation) = split_items(images, |e| e.split, |e| e.label.unwrap_or(0), val_fraction, seed);
    let pairs = |entries: Vec<crate::ImageEntry>| -> Vec<(PathBuf, Label)> {
        entries.into_iter().map(|e| (e.path, Label::Class(e.label.unwrap_or(0) as i64))).collect()
    };
    Ok(FolderFiles { classes, train: pairs(train), validation: pairs(validation), bytes })
}

/// Lists an image-to-image folder: `root/inputs/…` and `root/targets/…`
/// with the same relative names (sub-folders allowed), paired; each input's
/// label is its [`Label::TargetImage`]. `val_fraction` of the pairs (drawn
/// with `seed`) are the validation split. A missing target is an error
/// naming both files.
pub fn list_paired_folder(root: &Path, val_fraction: f64, seed: u64) -> Result<FolderFiles, FolderError> {
    let inputs = root.join("inputs");
    let targets = root.join("targets");
    if !inputs.is_dir() || !targets.is_dir() {
        return Err(FolderError::NotPaired(root.display().to_string()));
    }
    // Every image under inputs/, at any depth (sub-folders only organise the pairs).
    let mut pairs = Vec::new();
    let mut bytes = 0;
    for input in crate::discover::images_under(&inputs)? {
        let target = targets.join(input.strip_prefix(&inputs).unwrap_or(&input));
        if !target.is_file() {
            return Err(FolderError::MissingTarget {
                input: input.display().to_string(),
                target: target.display().to_string(),
            });
        }
        bytes += std::fs::metadata(&input).map_or(0, |m| m.len()) + std::fs::metadata(&target).map_or(0, |m| m.len());
        pairs.push((input, Label::TargetImage(target)));
    }
    let (train, validation) = split_items(pairs, |_| None, |_| 0, val_fraction, seed);
    Ok(FolderFiles { classes: Vec::new(), train, validation, bytes })
}

/// Loads `root`'s images into memory: [`list_folder`]'s files, read.
/// Undecodable files are kept here and skipped (and counted) by the pipeline.
pub fn load_folder(root: &Path, val_fraction: f64, seed: u64) -> Result<FolderDataset, FolderError> {
    let FolderFiles { classes, train, validation, .. } = list_folder(root, val_fraction, seed)?;
    let load = |entries: Vec<(PathBuf, Label)>| -> Result<Vec<(Vec<u8>, Label)>, FolderError> {
        entries
            .into_iter()
            .map(|(path, label)| {
                let bytes = std::fs::read(&path)
                    .map_err(|cause| FolderError::Read { path: path.display().to_string(), cause })?;
                Ok((bytes, label))
            })
            .collect()
    };
    Ok(FolderDataset { classes, train: load(train)?, validation: load(validation)? })
}
