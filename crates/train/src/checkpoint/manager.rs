//! The checkpoint manager: TF's `tf.train.CheckpointManager` / `Saver`
//! behaviour over ferroflow's files. Saving writes
//! `<dir>/model.ckpt-<step>.safetensors` atomically (or, with
//! `checkpoint.format = "tf"`, the bundle's `.data-00000-of-00001`, its
//! `.index` and the `.ferroflow.json` side file, each atomically, in that
//! order), then the `checkpoint` state file (also atomically), then deletes
//! checkpoints that retention drops — in that order, so the state file only
//! ever lists complete checkpoints. The prefixes retention drops are written
//! to the [`RETIRING_FILE`] journal before the state file stops listing them
//! and the journal is removed once they are deleted: a crash between the two
//! would otherwise leave a complete, unlisted older checkpoint that looks like
//! one `keep_checkpoint_every_n_hours` preserved, and nothing would delete it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checkpoint::atomic::{remove_stale_temps, replace_unsynced, sync_dir, write_atomic};
use crate::checkpoint::file::Checkpoint;
use crate::checkpoint::state::{CheckpointState, STATE_FILE};
use crate::checkpoint::tf_export::tensor_bundle_bytes;
use crate::checkpoint::tf_sidecar::{sidecar_bytes, sidecar_path};
use crate::config::CheckpointFormat;
use crate::error::{Result, TrainError};

/// The checkpoint file extension.
pub const EXTENSION: &str = "safetensors";

/// The journal of the prefixes a save's retention is deleting, one per line
/// (`model.ckpt-30`), beside the state file; TensorFlow ignores it.
pub const RETIRING_FILE: &str = "checkpoint.retiring";

/// The prefix of step `step`'s checkpoint (`model.ckpt-300`), as TF-slim names them.
pub fn checkpoint_prefix(step: i64) -> String {
    format!("model.ckpt-{step}")
}

/// The file of a prefix: `model.ckpt-300` → `model.ckpt-300.safetensors`.
pub fn file_of_prefix(dir: &Path, prefix: &str) -> PathBuf {
    dir.join(format!("{prefix}.{EXTENSION}"))
}

/// The data file of the single-shard bundle at `prefix` (`model.ckpt-300.data-00000-of-00001`).
pub fn bundle_data_path(prefix: &Path) -> PathBuf {
    PathBuf::from(format!("{}.data-00000-of-00001", prefix.display()))
}

/// The `.index` file of the bundle at `prefix`.
pub fn bundle_index_path(prefix: &Path) -> PathBuf {
    PathBuf::from(format!("{}.index", prefix.display()))
}

/// The files of a checkpoint prefix in the TF format: `.index` first (without
/// it the rest is no longer a bundle), `.data-00000-of-00001`, the side file.
pub(crate) fn bundle_files(prefix: &Path) -> [PathBuf; 3] {
    [bundle_index_path(prefix), bundle_data_path(prefix), sidecar_path(prefix)]
}

/// Deletes the checkpoint files of `prefix` (a path without extension):
/// its safetensors file unless `keep` is safetensors, its bundle files unless
/// `keep` is TF.
fn remove_prefix_files(prefix: &Path, keep: Option<CheckpointFormat>) {
    let mut files = Vec::new();
    if keep != Some(CheckpointFormat::Safetensors) {
        files.push(PathBuf::from(format!("{}.{EXTENSION}", prefix.display())));
    }
    if keep != Some(CheckpointFormat::Tf) {
        files.extend(bundle_files(prefix));
    }
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

/// A listed prefix as a path without extension (`dir/model.ckpt-30`).
fn prefix_path(dir: &Path, prefix: &str) -> PathBuf {
    let p = Path::new(prefix);
    let p = if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
    if p.extension().is_some_and(|e| e == EXTENSION) { p.with_extension("") } else { p }
}

/// The step of a checkpoint file name (`model.ckpt-30.index` → 30), for the
/// files a save writes; `None` for anything else.
fn checkpoint_file_step(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("model.ckpt-")?;
    let (step, suffix) = rest.split_once('.')?;
    let ours = [EXTENSION, "index", "data-00000-of-00001", "ferroflow.json"];
    if ours.contains(&suffix) { step.parse().ok() } else { None }
}

/// Removes the checkpoint files of a save that was interrupted after they
/// were written but before the state file listed them: files of a step
/// above the latest listed one that the state file does not list (a TF-format
/// save writes three files, so a crash can leave one or two). Also the
/// remnants of an interrupted retention deletion: an unlisted step's bundle
/// data or side file whose `.index` (deleted first) is gone, so they are no
/// longer a checkpoint. A complete unlisted older checkpoint (kept by
/// `keep_checkpoint_every_n_hours`) stays. Returns the names, sorted; nothing
/// when there is no state file.
pub fn remove_unlisted_newer(dir: &Path) -> Result<Vec<String>> {
    let Some(state) = read_state(dir)? else { return Ok(Vec::new()) };
    let mut retired = finish_retirement(dir, &state);
    // Listed prefixes: `model.ckpt-30`, maybe absolute, maybe with `.safetensors`.
    let step_of = |p: &str| -> Option<i64> {
        let name = Path::new(p).file_name()?.to_str()?;
        let name = name.strip_suffix(&format!(".{EXTENSION}")).unwrap_or(name);
        name.strip_prefix("model.ckpt-")?.parse().ok()
    };
    let Some(latest) = step_of(&state.model_checkpoint_path) else { return Ok(Vec::new()) };
    let listed: Vec<i64> = state.all_model_checkpoint_paths.iter().filter_map(|p| step_of(p)).collect();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut removed: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = checkpoint_file_step(&name)?;
            let unlisted = !listed.contains(&step);
            let prefix = dir.join(checkpoint_prefix(step));
            let remnant = !name.ends_with(".index")
                && !name.ends_with(&format!(".{EXTENSION}"))
                && !bundle_index_path(&prefix).exists();
            (unlisted && (step > latest || remnant) && std::fs::remove_file(e.path()).is_ok()).then_some(name)
        })
        .collect();
    removed.append(&mut retired);
    removed.sort();
    Ok(removed)
}

/// Completes the retention of a save that was interrupted after its state
/// file was written: deletes the files of every prefix in the
/// [`RETIRING_FILE`] journal that `state` no longer lists (a save killed
/// before its state file still lists them all, and they stay), then the
/// journal. Returns the names of the deleted files.
fn finish_retirement(dir: &Path, state: &CheckpointState) -> Vec<String> {
    let journal = dir.join(RETIRING_FILE);
    let Ok(text) = std::fs::read_to_string(&journal) else { return Vec::new() };
    let listed: Vec<PathBuf> = state.all_model_checkpoint_paths.iter().map(|p| prefix_path(dir, p)).collect();
    let mut removed = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let prefix = prefix_path(dir, line);
        // Only checkpoint files of this directory's naming (a damaged journal
        // must not make ferroflow delete anything else).
        let ours = prefix.parent() == Some(dir)
            && prefix
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.strip_prefix("model.ckpt-").is_some_and(|s| s.parse::<i64>().is_ok()));
        if !ours || listed.contains(&prefix) {
            continue;
        }
        let mut files = vec![PathBuf::from(format!("{}.{EXTENSION}", prefix.display()))];
        files.extend(bundle_files(&prefix));
        for file in files {
            if std::fs::remove_file(&file).is_ok() {
                removed.extend(file.file_name().map(|n| n.to_string_lossy().into_owned()));
            }
        }
    }
    let _ = std::fs::remove_file(&journal);
    removed
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
        let missing = if path.extension().is_some_and(|e| e == EXTENSION) {
            path.clone()
        } else {
            bundle_index_path(&path) // other files of the bundle are there
        };
        return Err(TrainError::Checkpoint {
            path: dir.join(STATE_FILE).display().to_string(),
            reason: format!("lists {:?}, but {} does not exist", state.model_checkpoint_path, missing.display()),
        });
    }
    Ok(Some(path))
}

/// The file (or, for a TF-format checkpoint, the bundle prefix) of a prefix
/// listed in `dir`'s state file: the safetensors file when it exists, else
/// the bundle prefix when any of the bundle's files exists (so that errors
/// and retention name the bundle even when its `.index` is lost), else the
/// (missing) safetensors file.
pub(crate) fn resolve_listed(dir: &Path, prefix: &str) -> PathBuf {
    let path = resolve_prefix(dir, prefix);
    if !path.exists() {
        let bundle = prefix_path(dir, prefix);
        if bundle_files(&bundle).iter().any(|f| f.exists()) {
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
/// (its latest checkpoint; TensorFlow's train dirs too). A prefix with both
/// a safetensors file and a bundle resolves to the safetensors file, as a
/// listed prefix does.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    let with_ext = PathBuf::from(format!("{}.{EXTENSION}", path.display()));
    let named_index = path.extension().is_some_and(|e| e == "index");
    if !named_index && with_ext.is_file() {
        return Ok(with_ext);
    }
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
    format: CheckpointFormat,
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
        if let Some(state) = &state {
            finish_retirement(dir, state);
        }
        Ok(CheckpointManager {
            dir: dir.to_path_buf(),
            max_to_keep,
            keep_every_n_hours,
            state,
            format: CheckpointFormat::Safetensors,
        })
    }

    /// Saves in `format` from now on (safetensors by default). Checkpoints
    /// already listed keep their format: resolving a listed prefix finds either.
    pub fn with_format(mut self, format: CheckpointFormat) -> Self {
        self.format = format;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The latest listed checkpoint (file, or bundle prefix).
    pub fn latest(&self) -> Option<PathBuf> {
        self.state.as_ref().map(|s| resolve_listed(&self.dir, &s.model_checkpoint_path))
    }

    /// Every listed checkpoint (file, or bundle prefix), oldest first.
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        self.state
            .as_ref()
            .map(|s| s.all_model_checkpoint_paths.iter().map(|p| resolve_listed(&self.dir, p)).collect())
            .unwrap_or_default()
    }

    /// Writes step `prefix`'s checkpoint in the manager's format; returns its
    /// path (the safetensors file, or the bundle prefix).
    fn write(&self, checkpoint: &Checkpoint, prefix: &str) -> Result<PathBuf> {
        let saving = |path: &Path| {
            let path = path.display().to_string();
            move |cause: std::io::Error| TrainError::Save { path, cause }
        };
        match self.format {
            CheckpointFormat::Safetensors => {
                let path = file_of_prefix(&self.dir, prefix);
                let bytes = checkpoint.to_bytes()?;
                write_atomic(&path, &bytes).map_err(saving(&path))?;
                Ok(path)
            }
            CheckpointFormat::Tf => {
                let path = self.dir.join(prefix);
                let files = tensor_bundle_bytes(checkpoint)?;
                let mut metadata = checkpoint.meta.to_map();
                metadata.extend(checkpoint.other_metadata.clone());
                let side = sidecar_bytes(&metadata, &files.index);
                // The data before the index that describes it, the side file last (it
                // names the index's checksum): a crash leaves no listed bundle incomplete.
                for (file, bytes) in [
                    (bundle_data_path(&path), &files.data),
                    (bundle_index_path(&path), &files.index),
                    (sidecar_path(&path), &side),
                ] {
                    write_atomic(&file, bytes).map_err(saving(&file))?;
                }
                Ok(path)
            }
        }
    }

    /// Writes `checkpoint` as step `step`'s file, lists it, and applies
    /// retention; returns its path. On any error the previous checkpoint
    /// stays complete and listed, and the manager's state is unchanged.
    pub fn save(&mut self, checkpoint: &Checkpoint, step: i64) -> Result<PathBuf> {
        let prefix = checkpoint_prefix(step);
        let path = self.write(checkpoint, &prefix)?;

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
        state.model_checkpoint_path = prefix.clone();

        let mut delete = Vec::new();
        while self.max_to_keep > 0 && state.all_model_checkpoint_paths.len() > self.max_to_keep {
            let old = state.all_model_checkpoint_paths.remove(0);
            let stamp = state.all_model_checkpoint_timestamps.remove(0);
            let preserve =
                self.keep_every_n_hours.is_some_and(|h| stamp - state.last_preserved_timestamp >= h * 3600.0);
            if preserve {
                state.last_preserved_timestamp = stamp;
            } else {
                delete.push(prefix_path(&self.dir, &old));
            }
        }
        // The journal first, so a crash after the state file leaves the deletion
        // to be finished at the next start (see the module docs). Not fsynced: a
        // power loss that drops it leaves at worst an unlisted old checkpoint, never
        // a listed incomplete one. Its two fsyncs measured 0.1-0.7 ms of resnet20's
        // 4.6-5.7 ms save (`ferroflow bench checkpoint --model resnet20`, this VM's
        // virtio disk; more on slower disks).
        let saved = prefix_path(&self.dir, &prefix);
        let delete: Vec<PathBuf> = delete.into_iter().filter(|old| *old != saved).collect();
        let journal = self.dir.join(RETIRING_FILE);
        if !delete.is_empty() {
            let names: String =
                delete.iter().filter_map(|p| p.file_name()).map(|n| format!("{}\n", n.to_string_lossy())).collect();
            replace_unsynced(&journal, names.as_bytes())
                .map_err(|cause| TrainError::Save { path: journal.display().to_string(), cause })?;
        }
        let state_path = self.dir.join(STATE_FILE);
        if let Err(cause) = write_atomic(&state_path, state.to_text().as_bytes()) {
            let _ = std::fs::remove_file(&journal);
            return Err(TrainError::Save { path: state_path.display().to_string(), cause });
        }
        self.state = Some(state);
        // Only now that the state file no longer lists them: every file of their
        // prefixes, in either format.
        for old in &delete {
            remove_prefix_files(old, None);
        }
        if !delete.is_empty() {
            let _ = std::fs::remove_file(&journal);
        }
        // A save of the same step in the other format is superseded (a listed prefix
        // resolves to its safetensors file first).
        remove_prefix_files(&saved, Some(self.format));
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
    fn tf_format_round_trips_every_tensor_and_the_training_state() {
        use crate::checkpoint::file::{StoredTensor, Values};
        let dir = tempfile::tempdir().unwrap();
        let mut m = CheckpointManager::open(dir.path(), 2, None).unwrap().with_format(CheckpointFormat::Tf);
        let mut saved = Vec::new();
        for step in [10, 20, 30] {
            let mut c = ck(step);
            c.meta.config = Some(format!("[train]\nsteps = {step}\n"));
            c.meta.classes = vec!["cat".into(), "dog".into()];
            // An OIHW kernel (transposed to HWIO in the bundle and back) and a vector.
            let kernel: Vec<f32> = (0..2 * 3 * 2 * 2).map(|i| i as f32 * 0.5 - step as f32).collect();
            c.tensors
                .insert("conv1/weights".into(), StoredTensor { shape: vec![2, 3, 2, 2], values: Values::F32(kernel) });
            c.tensors
                .insert("fc/biases".into(), StoredTensor { shape: vec![3], values: Values::F32(vec![1.0, -0.0, 3.5]) });
            saved.push((m.save(&c, step).unwrap(), c));
        }
        let (path, c) = &saved[2];
        assert_eq!(*path, dir.path().join("model.ckpt-30"));
        assert_eq!(latest_checkpoint(dir.path()).unwrap().unwrap(), *path);
        assert_eq!(m.checkpoints(), [dir.path().join("model.ckpt-20"), path.clone()]);
        let loaded = Checkpoint::load(path).unwrap();
        assert_eq!(loaded.tensors, c.tensors);
        assert_eq!(loaded.meta, c.meta);
        // Retention removed step 10's three files; nothing is left half-deleted.
        let mut names: Vec<String> =
            dir.path().read_dir().unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names.len(), 7, "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("model.ckpt-10")), "{names:?}");
        // Switching the format back: a new safetensors save of step 30 supersedes the bundle.
        let mut m = CheckpointManager::open(dir.path(), 2, None).unwrap();
        let p = m.save(c, 30).unwrap();
        assert_eq!(p, file_of_prefix(dir.path(), "model.ckpt-30"));
        assert!(!dir.path().join("model.ckpt-30.index").exists());
        assert_eq!(latest_checkpoint(dir.path()).unwrap().unwrap(), p);
        assert_eq!(m.checkpoints()[0], dir.path().join("model.ckpt-20"));
    }

    #[test]
    fn leftovers_of_an_interrupted_save_are_removed_and_lost_indexes_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = CheckpointManager::open(dir.path(), 0, None).unwrap().with_format(CheckpointFormat::Tf);
        m.save(&ck(10), 10).unwrap();
        m.save(&ck(20), 20).unwrap();
        // A save of step 30 killed after two of its three files; an older unlisted file
        // (kept by keep_checkpoint_every_n_hours, say) and other files stay.
        for name in
            ["model.ckpt-30.data-00000-of-00001", "model.ckpt-30.index", "model.ckpt-5.safetensors", "notes.txt"]
        {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        // A retention deletion of step 7 killed after its .index went; a complete older
        // bundle (step 3) stays.
        for name in ["model.ckpt-7.data-00000-of-00001", "model.ckpt-7.ferroflow.json"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        for name in ["model.ckpt-3.index", "model.ckpt-3.data-00000-of-00001", "model.ckpt-3.ferroflow.json"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = remove_unlisted_newer(dir.path()).unwrap();
        assert_eq!(
            removed,
            [
                "model.ckpt-30.data-00000-of-00001",
                "model.ckpt-30.index",
                "model.ckpt-7.data-00000-of-00001",
                "model.ckpt-7.ferroflow.json"
            ]
        );
        assert!(dir.path().join("model.ckpt-5.safetensors").exists() && dir.path().join("notes.txt").exists());
        assert!(dir.path().join("model.ckpt-3.ferroflow.json").exists(), "a complete older bundle stays");
        assert!(dir.path().join("model.ckpt-20.index").exists());
        // A listed bundle whose .index is lost still resolves to the bundle, so errors name it.
        std::fs::remove_file(dir.path().join("model.ckpt-20.index")).unwrap();
        let e = latest_checkpoint(dir.path()).unwrap_err().to_string();
        assert!(e.contains("lists \"model.ckpt-20\", but") && e.contains("model.ckpt-20.index does not exist"), "{e}");
        assert_eq!(m.checkpoints()[1], dir.path().join("model.ckpt-20"));
    }

    #[test]
    fn a_retention_killed_after_the_state_file_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = CheckpointManager::open(dir.path(), 2, None).unwrap().with_format(CheckpointFormat::Tf);
        for step in [10, 20, 30] {
            m.save(&ck(step), step).unwrap();
        }
        // The journal is gone once a save's deletions are done.
        assert!(!dir.path().join(RETIRING_FILE).exists());
        // A save of step 30 killed after its state file (listing 20, 30) but before step
        // 10's deletion: step 10's complete bundle is back, with the journal naming it.
        // The journal also names a listed step (it stays) and a foreign path (ignored).
        for name in ["model.ckpt-10.index", "model.ckpt-10.data-00000-of-00001", "model.ckpt-10.ferroflow.json"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let outside = tempfile::tempdir().unwrap();
        let foreign = outside.path().join("model.ckpt-1");
        std::fs::write(format!("{}.safetensors", foreign.display()), b"x").unwrap();
        let journal = format!("model.ckpt-10\nmodel.ckpt-20\n{}\nnotes\n", foreign.display());
        std::fs::write(dir.path().join(RETIRING_FILE), journal).unwrap();
        std::fs::write(dir.path().join("notes.safetensors"), b"x").unwrap();
        let removed = remove_unlisted_newer(dir.path()).unwrap();
        assert_eq!(
            removed,
            ["model.ckpt-10.data-00000-of-00001", "model.ckpt-10.ferroflow.json", "model.ckpt-10.index"]
        );
        assert!(!dir.path().join(RETIRING_FILE).exists());
        assert!(dir.path().join("model.ckpt-20.index").exists() && dir.path().join("notes.safetensors").exists());
        assert!(outside.path().join("model.ckpt-1.safetensors").exists());
        // Without a journal, an unlisted complete older checkpoint (a preserved one) stays.
        for name in ["model.ckpt-10.index", "model.ckpt-10.data-00000-of-00001", "model.ckpt-10.ferroflow.json"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert!(remove_unlisted_newer(dir.path()).unwrap().is_empty());
        // A journal left by a save killed before its state file (the steps are still
        // listed) deletes nothing; opening a manager finishes a journal too.
        std::fs::write(dir.path().join(RETIRING_FILE), "model.ckpt-20\n").unwrap();
        let m = CheckpointManager::open(dir.path(), 2, None).unwrap();
        assert_eq!(m.checkpoints().len(), 2);
        assert!(dir.path().join("model.ckpt-20.index").exists() && !dir.path().join(RETIRING_FILE).exists());
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
