//! Falling back to the newest intact checkpoint: when the latest listed
//! checkpoint of a train dir is damaged or missing, a resume should not
//! fail (hours of training are in the older ones) and must not train on
//! damaged values. The listed checkpoints are tried newest first; the
//! damaged ones are taken out of the state file and renamed aside (kept,
//! never read again), so every later command sees a consistent train dir.

use std::path::{Path, PathBuf};

use crate::checkpoint::atomic::{sync_dir, write_atomic};
use crate::checkpoint::file::Checkpoint;
use crate::checkpoint::manager::{bundle_files, read_state, resolve_listed};
use crate::checkpoint::state::STATE_FILE;
use crate::error::{Result, TrainError};

/// The suffix a damaged checkpoint file is renamed with when set aside.
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// A listed checkpoint that could not be loaded.
#[derive(Debug)]
pub struct Damaged {
    /// Its file (or TF bundle prefix).
    pub path: PathBuf,
    /// Why it could not be loaded (a checksum mismatch, a missing file, …).
    pub error: TrainError,
}

/// The newest listed checkpoint that loads and verifies.
#[derive(Debug)]
pub struct Intact {
    /// Its file.
    pub path: PathBuf,
    /// Its contents, verified.
    pub checkpoint: Checkpoint,
    /// The newer listed checkpoints that were damaged or missing, newest first.
    pub damaged: Vec<Damaged>,
}

/// Every checkpoint listed in `dir`'s state file, newest first (the latest,
/// then the rest of `all_model_checkpoint_paths` from the newest); empty
/// when there is no state file.
pub fn listed_checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    let Some(state) = read_state(dir)? else { return Ok(Vec::new()) };
    let mut listed = vec![resolve_listed(dir, &state.model_checkpoint_path)];
    for p in state.all_model_checkpoint_paths.iter().rev() {
        let path = resolve_listed(dir, p);
        if !listed.contains(&path) {
            listed.push(path);
        }
    }
    Ok(listed)
}

/// The newest intact checkpoint listed in `dir` (see the module docs);
/// `None` when `dir` has no state file. When no listed checkpoint is
/// intact, the error names each of them and what is wrong with it.
pub fn latest_intact(dir: &Path) -> Result<Option<Intact>> {
    let listed = listed_checkpoints(dir)?;
    if listed.is_empty() {
        return Ok(None);
    }
    let mut damaged = Vec::new();
    for path in listed {
        match Checkpoint::load(&path) {
            Ok(checkpoint) => return Ok(Some(Intact { path, checkpoint, damaged })),
            Err(error) => damaged.push(Damaged { path, error }),
        }
    }
    let reasons: Vec<String> = damaged.iter().map(|d| d.error.to_string()).collect();
    Err(TrainError::Checkpoint {
        path: dir.join(STATE_FILE).display().to_string(),
        reason: format!(
            "none of the {} listed checkpoint(s) is intact ({}); train into a new --train-dir, or start over \
             from a copy you trust",
            reasons.len(),
            reasons.join("; ")
        ),
    })
}

/// Takes `damaged` out of `dir`'s state file, making `resumed` the latest,
/// and renames each damaged checkpoint's files that exist (a safetensors
/// file, or a bundle's `.index`, `.data-*` and side file) to
/// `<file>.damaged`. Returns the new names.
pub fn set_aside(dir: &Path, damaged: &[Damaged], resumed: &Path) -> Result<Vec<PathBuf>> {
    let state_path = dir.join(STATE_FILE);
    let Some(mut state) = read_state(dir)? else { return Ok(Vec::new()) };
    let is_damaged = |prefix: &str| {
        let path = resolve_listed(dir, prefix);
        damaged.iter().any(|d| d.path == path)
    };
    let mut kept_paths = Vec::new();
    let mut kept_stamps = Vec::new();
    for (i, p) in state.all_model_checkpoint_paths.iter().enumerate() {
        if !is_damaged(p) {
            kept_paths.push(p.clone());
            if let Some(t) = state.all_model_checkpoint_timestamps.get(i) {
                kept_stamps.push(*t);
            }
        }
    }
    let resumed_prefix = kept_paths.iter().find(|p| resolve_listed(dir, p) == resumed).cloned();
    state.model_checkpoint_path = match resumed_prefix {
        Some(p) => p,
        None => return Ok(Vec::new()), // not listed: leave the state file alone
    };
    state.all_model_checkpoint_paths = kept_paths;
    state.all_model_checkpoint_timestamps = kept_stamps;
    write_atomic(&state_path, state.to_text().as_bytes())
        .map_err(|cause| TrainError::Io { path: state_path.display().to_string(), cause })?;
    let mut moved = Vec::new();
    for d in damaged {
        let files: Vec<PathBuf> =
            if d.path.is_file() { vec![d.path.clone()] } else { bundle_files(&d.path).into_iter().collect() };
        for file in files.into_iter().filter(|f| f.is_file()) {
            let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            name.push(DAMAGED_SUFFIX);
            let to = file.with_file_name(name);
            std::fs::rename(&file, &to).map_err(|cause| TrainError::Io { path: file.display().to_string(), cause })?;
            moved.push(to);
        }
    }
    let _ = sync_dir(dir);
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::file::CheckpointMeta;
    use crate::checkpoint::manager::{CheckpointManager, latest_checkpoint};

    fn saved(steps: &[i64]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let mut m = CheckpointManager::open(dir.path(), 0, None).unwrap();
        let paths = steps
            .iter()
            .map(|&s| {
                let ck = Checkpoint::capture(&[], CheckpointMeta { global_step: s, ..Default::default() }).unwrap();
                m.save(&ck, s).unwrap()
            })
            .collect();
        (dir, paths)
    }

    #[test]
    fn a_missing_latest_falls_back_and_is_unlisted() {
        let (dir, paths) = saved(&[1, 2, 3]);
        std::fs::remove_file(&paths[2]).unwrap();
        let intact = latest_intact(dir.path()).unwrap().unwrap();
        assert_eq!(intact.path, paths[1]);
        assert_eq!(intact.checkpoint.meta.global_step, 2);
        assert_eq!(intact.damaged.len(), 1);
        assert!(intact.damaged[0].error.to_string().contains("model.ckpt-3.safetensors"));
        assert!(set_aside(dir.path(), &intact.damaged, &intact.path).unwrap().is_empty());
        assert_eq!(latest_checkpoint(dir.path()).unwrap().unwrap(), paths[1]);
        assert_eq!(listed_checkpoints(dir.path()).unwrap(), [paths[1].clone(), paths[0].clone()]);
    }

    #[test]
    fn damaged_ones_are_renamed_and_none_intact_is_an_error() {
        let (dir, paths) = saved(&[1, 2]);
        std::fs::write(&paths[1], b"not a checkpoint").unwrap();
        let intact = latest_intact(dir.path()).unwrap().unwrap();
        let moved = set_aside(dir.path(), &intact.damaged, &intact.path).unwrap();
        assert_eq!(moved, [dir.path().join("model.ckpt-2.safetensors.damaged")]);
        assert!(!paths[1].exists() && moved[0].exists());

        std::fs::write(&paths[0], b"").unwrap();
        let e = latest_intact(dir.path()).unwrap_err().to_string();
        assert!(e.contains("none of the 1 listed checkpoint(s) is intact") && e.contains("model.ckpt-1"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(latest_intact(empty.path()).unwrap().is_none());
    }
}
