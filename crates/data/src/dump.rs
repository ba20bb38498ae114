//! `dump`: decodes records back into PNG files (`<i>_label_<l>.png`), to check
//! a dataset by eye.

use std::path::{Path, PathBuf};

use tfrecord::{Example, FileRecordReader, ReaderOptions, RecordError};

use crate::dataset::{DATASET_JSON, Dataset, DatasetError};
use crate::decode::DecodeOptions;
use crate::example_codec::{ExampleError, decode_example};

/// Errors of [`dump`].
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Reading records failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The dataset directory is not usable.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A record is not an image Example.
    #[error("{path}: record {index} at byte offset {offset}: {cause}")]
    Example {
        /// The file.
        path: String,
        /// Record index.
        index: u64,
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        cause: String,
    },
    /// Writing a PNG failed.
    #[error("{path}: {cause}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        cause: String,
    },
}

/// Decodes up to `limit` records per input into PNGs under `out`. `input` is
/// a TFRecord file, or a dataset directory (then each split goes to
/// `out/<split>/`). Returns the number of images written.
pub fn dump(input: &Path, out: &Path, limit: Option<usize>) -> Result<usize, DumpError> {
    let jobs: Vec<(Vec<PathBuf>, PathBuf)> = if input.is_dir() && input.join(DATASET_JSON).exists() {
        let ds = Dataset::open(input)?;
        ds.meta.splits.keys().map(|s| Ok((ds.files(s)?, out.join(s)))).collect::<Result<_, DatasetError>>()?
    } else if input.is_dir() {
        return Err(Dataset::open(input).err().map_or_else(|| unreachable_dataset(input), DumpError::Dataset));
    } else {
        vec![(vec![input.to_path_buf()], out.to_path_buf())]
    };
    let mut written = 0;
    for (files, dir) in jobs {
        std::fs::create_dir_all(&dir)
            .map_err(|e| DumpError::Write { path: dir.display().to_string(), cause: e.to_string() })?;
        let mut i = 0usize;
        'files: for file in files {
            let mut reader = FileRecordReader::open(&file, ReaderOptions::default())?;
            let mut buf = Vec::new();
            while let Some(info) = reader.read_next(&mut buf)? {
                if limit.is_some_and(|l| i >= l) {
                    break 'files;
                }
                let err = |cause: String| DumpError::Example {
                    path: file.display().to_string(),
                    index: info.index,
                    offset: info.offset.bytes,
                    cause,
                };
                let example = Example::from_bytes(&buf).map_err(|e| err(format!("not a tf.train.Example: {e}")))?;
                let decoded = decode_example(&example, &DecodeOptions::default())
                    .map_err(|e: ExampleError| err(e.to_string()))?;
                let name = match (decoded.label, decoded.target.as_slice()) {
                    (Some(l), _) => format!("{i}_label_{l}.png"),
                    (None, []) => format!("{i}.png"),
                    (None, t) => {
                        format!("{i}_target_{}.png", t.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("_"))
                    }
                };
                let path = dir.join(name);
                let png = decoded.image.to_png("dump").map_err(err)?;
                std::fs::write(&path, png)
                    .map_err(|e| DumpError::Write { path: path.display().to_string(), cause: e.to_string() })?;
                i += 1;
                written += 1;
            }
        }
    }
    Ok(written)
}

fn unreachable_dataset(input: &Path) -> DumpError {
    DumpError::Dataset(DatasetError::Missing { dir: input.display().to_string() })
}
