//! The checkpoint manager: TF's `tf.train.CheckpointManager` / `Saver`
//! behaviour over ferroflow's files. Saving writes
//! `<dir>/model.ckpt-<step>.safetensors` atomically, then the `checkpoint`
//! state file (also atomically), then deletes checkpoints that retention
//! drops — in that order, so the state file only ever lists complete files.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checkpoint::atomic::{remove_stale_temps, sync_dir, write_atomic};
use crate::checkpoint::file::Checkpoint;
use crate::checkpoint::state::{CheckpointState, STATE_FILE};
use crate::error::{Result, TrainError};

/// The checkpoint file extension.
pub const EXTENSION: &str = "safetensors";

/// The prefix of step `step`'s checkpoint (`model.ckpt-300`), as TF-slim names them.
pub fn checkpoint_prefix(step: i64) -> String {
    format!("model.ckpt-{step}")
}

/// The file of a prefix: `model.ckpt-300` → `model.ckpt-300.safetensors`.
pub fn file_of_prefix(dir: &Path, prefix: &str) -> PathBuf {
    dir.join(format!("{prefix}.{EXTENSION}"))
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Reads `<dir>/checkpoint`; `None` when there is none. An unparsable state
/// file is an error naming it (it is never half-written by ferroflow).
pub fn read_state(dir: &Path) -> Result<Option<CheckpointState>> {
    let path = dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => CheckpointState::parse(&text)
            .map(Some)
            .map_err(|reason| TrainError::Checkpoint { path: path.display().to_string(), reason }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(TrainError::Io { path: path.display().to_string(), cause }),
    }
}

/// The latest checkpoint listed in `dir`'s state file (TF's
/// `tf.train.latest_checkpoint`), or `None` when the state file is absent.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    let Some(state) = read_state(dir)? else { return Ok(None) };
    let path = resolve_listed(dir, &state.model_checkpoint_path);
    if !path.exists() && crate::checkpoint::tf_bundle::bundle_prefix(&path).is_none() {
        return Err(TrainError::Checkpoint {
            path: dir.join(STATE_FILE).display().to_string(),
            reason: format!("lists {:?}, but {} does not exist", state.model_checkpoint_path, path.display()),
        });
    }
    Ok(Some(path))
}

/// The file (or, in a TensorFlow train dir, the bundle prefix) of a prefix
/// listed in `dir`'s state file.
pub(crate) fn resolve_listed(dir: &Path, prefix: &str) -> PathBuf {
    let path = resolve_prefix(dir, prefix);
    if !path.exists() {
        // A TensorFlow train dir: its state file lists bundle prefixes.
        let bundle = dir.join(prefix);
        if crate::checkpoint::tf_bundle::bundle_prefix(&bundle).is_some() {
            return bundle;
        }
    }
    path
}

fn resolve_prefix(dir: &Path, prefix: &str) -> PathBuf {
    let p = Path::new(prefix);
    let p = if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
    if p.extension().is_some_and(|e| e == EXTENSION) {
        p
    } else {
        PathBuf::from(format!("{}.{EXTENSION}", p.display()))
    }
}

/// A checkpoint path as users give it: a checkpoint file, a prefix
/// (`runs/x/model.ckpt-300`), a TensorFlow checkpoint prefix, or a train dir
/// (its latest checkpoint; TensorFlow's train dirs too).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if let Some(prefix) = crate::checkpoint::tf_bundle::bundle_prefix(path) {
        return Ok(prefix);
    }
    if path.is_dir() {
        return latest_checkpoint(path)?.ok_or_else(|| TrainError::Checkpoint {
            path: path.display().to_string(),
            reason:
                "holds no checkpoint (no `checkpoint` state file); train into it first, or name a .safetensors file"
                    .to_string(),
        });
    }
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let with_ext = PathBuf::from(format!("{}.{EXTENSION}", path.display()));
    if with_ext.is_file() {
        return Ok(with_ext);
    }
    Err(TrainError::Checkpoint {
        path: path.display().to_string(),
        reason: "no such checkpoint file, prefix or train dir".to_string(),
    })
}

/// Saves checkpoints into one directory with TF's retention rules.
#[derive(Debug)]
pub struct CheckpointManager {
    dir: PathBuf,
    max_to_keep: usize,
    keep_every_n_hours: Option<f64>,
    state: Option<CheckpointState>,
}

impl CheckpointManager {
    /// A manager over `dir` (created if needed), continuing the state file
    /// there if any. `max_to_keep` 0 keeps every checkpoint; checkpoints
    /// older than the newest `max_to_keep` are deleted, except that one per
    /// `keep_every_n_hours` is preserved (kept on disk, no longer listed),
    /// as TF's `CheckpointManager` does. Temporary files of a killed save
    /// are removed.
    pub fn open(dir: &Path, max_to_keep: usize, keep_every_n_hours: Option<f64>) -> Result<CheckpointManager> {
        std::fs::create_dir_all(dir).map_err(|cause| TrainError::Io { path: dir.display().to_string(), cause })?;
        remove_stale_temps(dir);
        let state = read_state(dir)?;
        Ok(CheckpointManager { dir: dir.to_path_buf(), max_to_keep, keep_every_n_hours, state })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The latest listed checkpoint file.
    pub fn latest(&self) -> Option<PathBuf> {
        self.state.as_ref().map(|s| resolve_prefix(&self.dir, &s.model_checkpoint_path))
    }

    /// Every listed checkpoint file, oldest first.
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        self.state
            .as_ref()
            .map(|s| s.all_model_checkpoint_paths.iter().map(|p| resolve_prefix(&self.dir, p)).collect())
            .unwrap_or_default()
    }

    /// Writes `checkpoint` as step `step`'s file, lists it, and applies
    /// retention; returns its path. On any error the previous checkpoint
    /// stays complete and listed, and the manager's state is unchanged.
    pub fn save(&mut self, checkpoint: &Checkpoint, step: i64) -> Result<PathBuf> {
        let prefix = checkpoint_prefix(step);
        let path = file_of_prefix(&self.dir, &prefix);
        let bytes = checkpoint.to_bytes()?;
        let saving = |cause: std::io::Error| TrainError::Save { path: path.display().to_string(), cause };
        write_atomic(&path, &bytes).map_err(saving)?;

        let now = now();
        let mut state = self.state.clone().unwrap_or_default();
        // Re-saving a step replaces its entry (TF does the same).
        if let Some(i) = state.all_model_checkpoint_paths.iter().position(|p| *p == prefix) {
            state.all_model_checkpoint_paths.remove(i);
            if i < state.all_model_checkpoint_timestamps.len() {
                state.all_model_checkpoint_timestamps.remove(i);
            }
        }
        // Older writers may list paths without timestamps: pad with "now".
        state.all_model_checkpoint_timestamps.resize(state.all_model_checkpoint_paths.len(), now);
        if self.state.is_none() {
            state.last_preserved_timestamp = now;
        }
        state.all_model_checkpoint_paths.push(prefix.clone());
        state.all_model_checkpoint_timestamps.push(now);
        state.model_checkpoint_path = prefix;

        let mut delete = Vec::new();
        while self.max_to_keep > 0 && state.all_model_checkpoint_paths.len() > self.max_to_keep {
            let old = state.all_model_checkpoint_paths.remove(0);
            let stamp = state.all_model_checkpoint_timestamps.remove(0);
            let preserve =
                self.keep_every_n_hours.is_some_and(|h| stamp - state.last_preserved_timestamp >= h * 3600.0);
            if preserve {
                state.last_preserved_timestamp = stamp;
            } else {
                delete.push(resolve_prefix(&self.dir, &old));
            }
        }
        let state_path = self.dir.join(STATE_FILE);
        write_atomic(&state_path, state.to_text().as_bytes())
            .map_err(|cause| TrainError::Save { path: state_path.display().to_string(), cause })?;
        self.state = Some(state);
        // Only now that the state file no longer lists them.
        for old in delete {
            if old != path {
                let _ = std::fs::remove_file(old);
            }
        }
        let _ = sync_dir(&self.dir);
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::file::CheckpointMeta;

    fn ck(step: i64) -> Checkpoint {
        Checkpoint::capture(&[], CheckpointMeta { global_step: step, ..Default::default() }).unwrap()
    }

    #[test]
    fn keeps_the_newest_and_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = CheckpointManager::open(dir.path(), 2, None).unwrap();
        for step in [10, 20, 30] {
            m.save(&ck(step), step).unwrap();
        }
        let state = read_state(dir.path()).unwrap().unwrap();
        assert_eq!(state.model_checkpoint_path, "model.ckpt-30");
        assert_eq!(state.all_model_checkpoint_paths, ["model.ckpt-20", "model.ckpt-30"]);
        assert!(!dir.path().join("model.ckpt-10.safetensors").exists());
        assert_eq!(latest_checkpoint(dir.path()).unwrap().unwrap(), dir.path().join("model.ckpt-30.safetensors"));
        // A new manager continues the list.
        let mut m = CheckpointManager::open(dir.path(), 2, None).unwrap();
        m.save(&ck(40), 40).unwrap();
        assert_eq!(m.checkpoints(), [dir.path().join("model.ckpt-30.safetensors"), m.latest().unwrap()]);
        assert!(!dir.path().join("model.ckpt-20.safetensors").exists());
    }

    #[test]
    fn preserves_one_every_n_hours() {
        let dir = tempfile::tempdir().unwrap();
        // A zero-hour interval preserves every checkpoint that falls out of the list.
        let mut m = CheckpointManager::open(dir.path(), 1, Some(0.0)).unwrap();
        for step in [1, 2, 3] {
            m.save(&ck(step), step).unwrap();
        }
        assert_eq!(m.checkpoints().len(), 1);
        for step in [1, 2, 3] {
            assert!(dir.path().join(format!("model.ckpt-{step}.safetensors")).exists());
        }
        // A long interval preserves none.
        let dir = tempfile::tempdir().unwrap();
        let mut m = CheckpointManager::open(dir.path(), 1, Some(10_000.0)).unwrap();
        for step in [1, 2, 3] {
            m.save(&ck(step), step).unwrap();
        }
        assert!(!dir.path().join("model.ckpt-1.safetensors").exists());
    }

    #[test]
    fn resolves_files_prefixes_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(resolve_checkpoint(dir.path()).unwrap_err().to_string().contains("holds no checkpoint"));
        let mut m = CheckpointManager::open(dir.path(), 0, None).unwrap();
        let p = m.save(&ck(5), 5).unwrap();
        assert_eq!(resolve_checkpoint(dir.path()).unwrap(), p);
        assert_eq!(resolve_checkpoint(&dir.path().join("model.ckpt-5")).unwrap(), p);
        assert_eq!(resolve_checkpoint(&p).unwrap(), p);
        assert!(resolve_checkpoint(&dir.path().join("model.ckpt-6")).is_err());
    }

    #[test]
    fn a_failed_save_keeps_the_previous_checkpoint_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = CheckpointManager::open(dir.path(), 3, None).unwrap();
        let first = m.save(&ck(1), 1).unwrap();
        // Make step 2's temporary file impossible to create.
        std::fs::create_dir(crate::checkpoint::atomic::temp_path(&dir.path().join("model.ckpt-2.safetensors")))
            .unwrap();
        let e = m.save(&ck(2), 2).unwrap_err().to_string();
        assert!(e.contains("model.ckpt-2.safetensors"), "{e}");
        assert_eq!(latest_checkpoint(dir.path()).unwrap().unwrap(), first);
        assert_eq!(m.checkpoints(), std::slice::from_ref(&first));
        assert_eq!(Checkpoint::load(&first).unwrap().meta.global_step, 1);
    }
}
