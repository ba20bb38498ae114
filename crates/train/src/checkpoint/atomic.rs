//! Crash-safe file replacement: write a temporary file beside the target,
//! fsync it, rename it over the target, fsync the directory. A crash at any
//! instant leaves either the old file or the complete new one, never a
//! partial one (rename is atomic within a POSIX filesystem; the directory
//! fsync makes the rename itself durable).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The suffix of temporary files; a directory scan removes leftovers of a
/// killed writer (they were never renamed, so nothing lists them).
pub const TEMP_SUFFIX: &str = ".tmp-ferroflow";

/// The temporary name used while writing `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}{TEMP_SUFFIX}", std::process::id()));
    path.with_file_name(name)
}

/// Atomically replaces `path` with `bytes` (see the module docs). On error
/// the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, true)
}

/// [`write_atomic`] without the fsyncs: a process killed at any instant still
/// leaves the old file or the new one (the page cache outlives the process),
/// but a power loss may lose the replacement. For files whose loss costs
/// nothing but disk space (the retention journal).
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false)
}

/// Writes a temporary file beside `path` and renames it over `path`, with the
/// file and the directory fsynced when `durable`; removes the temporary file
/// on error.
fn replace(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, path)?;
        if durable {
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory, so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir)?.sync_all()
}

/// Removes temporary files left in `dir` by a killed writer; returns their
/// names (sorted). Nothing lists them, so nothing is lost.
pub fn remove_stale_temps(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut removed: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(TEMP_SUFFIX))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        fs::write(temp_path(&p), b"partial").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).len(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_unsynced_replacement_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal");
        replace_unsynced(&p, b"model.ckpt-10\n").unwrap();
        replace_unsynced(&p, b"model.ckpt-20\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"model.ckpt-20\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory in the temporary file's place: an error, the old file kept.
        fs::create_dir(temp_path(&p)).unwrap();
        assert!(replace_unsynced(&p, b"x").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"model.ckpt-20\n");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"old").unwrap();
        // A directory in the temporary file's place makes the write fail.
        fs::create_dir(temp_path(&p)).unwrap();
        assert!(write_atomic(&p, b"new").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
    }
}
