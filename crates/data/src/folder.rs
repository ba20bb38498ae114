//! An image folder loaded into memory for training without a `prepare`
//! step: the files' encoded bytes, split like `prepare` splits them.

use std::path::Path;

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
    /// A file could not be read.
    #[error("{path}: cannot read: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
}

/// Loads `root`'s images (class folders, optionally under `train/` and
/// `val/`), splitting off `val_fraction` per class with `seed` when the
/// folder has no split of its own. Undecodable files are kept here and
/// skipped (and counted) by the pipeline.
pub fn load_folder(root: &Path, val_fraction: f64, seed: u64) -> Result<FolderDataset, FolderError> {
    let Discovered { classes, images, .. } = discover(root)?;
    if classes.is_empty() {
        return Err(FolderError::NoClasses(root.display().to_string()));
    }
    let (train, validation) = split_items(images, |e| e.split, |e| e.label.unwrap_or(0), val_fraction, seed);
    let load = |entries: Vec<crate::ImageEntry>| -> Result<Vec<(Vec<u8>, Label)>, FolderError> {
        entries
            .into_iter()
            .map(|e| {
                let bytes = std::fs::read(&e.path)
                    .map_err(|cause| FolderError::Read { path: e.path.display().to_string(), cause })?;
                Ok((bytes, Label::Class(e.label.unwrap_or(0) as i64)))
            })
            .collect()
    };
    Ok(FolderDataset { classes, train: load(train)?, validation: load(validation)? })
}
