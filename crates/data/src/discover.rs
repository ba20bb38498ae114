//! Finding the images of a dataset folder: class sub-folders (one class per
//! folder, as `tf.keras.utils.image_dataset_from_directory` and TF-slim's
//! converters expect), an existing `train/` + `val/` (or `validation/`)
//! split of class folders, or one flat folder of images.

use std::fs;
use std::path::{Path, PathBuf};

/// File extensions treated as images (case-insensitive). Files with other
/// extensions (READMEs, CSVs) are not images and are ignored; files with
/// these extensions that fail to decode are reported as unreadable.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif"];

/// Which split an image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training.
    Train,
    /// Validation.
    Validation,
}

impl Split {
    /// `train` or `validation`, as in shard names.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
        }
    }
}

/// One image file found.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEntry {
    /// The file.
    pub path: PathBuf,
    /// Path relative to the dataset folder (stored as `image/filename`).
    pub relative: String,
    /// Class index into [`Discovered::classes`] (`None` in a flat folder).
    pub label: Option<usize>,
    /// The split the folder layout assigns (`None` unless pre-split).
    pub split: Option<Split>,
}

/// The images of a dataset folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    /// Class names, sorted (label `i` is `classes[i]`); empty for a flat folder.
    pub classes: Vec<String>,
    /// Every image, sorted by path.
    pub images: Vec<ImageEntry>,
    /// True when the folder had `train/` and `val/` or `validation/`.
    pub presplit: bool,
}

/// Errors finding a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The folder cannot be listed.
    #[error("{path}: cannot read directory: {cause}")]
    ReadDir {
        /// The folder.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// No image files anywhere.
    #[error(
        "{path}: no images found (expected class sub-folders of .jpg/.jpeg/.png/.bmp/.gif files, or such files directly)"
    )]
    Empty {
        /// The folder.
        path: String,
    },
    /// A pre-split folder whose validation split has a class the train split lacks.
    #[error("{path}: class {class:?} appears in the validation split but not in train/")]
    UnknownValClass {
        /// The folder.
        path: String,
        /// The class.
        class: String,
    },
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn list(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), DiscoverError> {
    let read_err = |cause| DiscoverError::ReadDir { path: dir.display().to_string(), cause };
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: datasets are often assembled from links.
        if path.is_dir() {
            dirs.push(path);
        } else if is_image(&path) {
            files.push(path);
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// Image files under `dir`, recursively, sorted.
pub(crate) fn images_under(dir: &Path) -> Result<Vec<PathBuf>, DiscoverError> {
    let (dirs, mut files) = list(dir)?;
    for d in dirs {
        files.extend(images_under(&d)?);
    }
    files.sort();
    Ok(files)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

fn name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Finds the classes and images of `root`.
pub fn discover(root: &Path) -> Result<Discovered, DiscoverError> {
    let (dirs, files) = list(root)?;
    let train = dirs.iter().find(|d| name_of(d) == "train");
    let val = dirs.iter().find(|d| matches!(name_of(d).as_str(), "val" | "validation"));
    let mut out = Discovered { classes: Vec::new(), images: Vec::new(), presplit: false };
    if let (Some(train), Some(val)) = (train, val) {
        out.presplit = true;
        let (class_dirs, _) = list(train)?;
        out.classes = class_dirs.iter().map(|d| name_of(d)).collect();
        for (split, dir) in [(Split::Train, train), (Split::Validation, val)] {
            let (class_dirs, _) = list(dir)?;
            for class_dir in class_dirs {
                let class = name_of(&class_dir);
                let label = out.classes.iter().position(|c| *c == class).ok_or_else(|| {
                    DiscoverError::UnknownValClass { path: root.display().to_string(), class: class.clone() }
                })?;
                for path in images_under(&class_dir)? {
                    out.images.push(ImageEntry {
                        relative: relative(root, &path),
                        path,
                        label: Some(label),
                        split: Some(split),
                    });
                }
            }
        }
    } else {
        for class_dir in &dirs {
            let images = images_under(class_dir)?;
            if images.is_empty() {
                continue;
            }
            let label = out.classes.len();
            out.classes.push(name_of(class_dir));
            for path in images {
                out.images.push(ImageEntry { relative: relative(root, &path), path, label: Some(label), split: None });
            }
        }
        if out.classes.len() < 2 && !files.is_empty() || out.classes.is_empty() {
            // A flat folder (or class folders plus loose files: treat all as flat).
            out.classes.clear();
            out.images = images_under(root)?
                .into_iter()
                .map(|path| ImageEntry { relative: relative(root, &path), path, label: None, split: None })
                .collect();
        }
    }
    if out.images.is_empty() {
        return Err(DiscoverError::Empty { path: root.display().to_string() });
    }
    Ok(out)
}
