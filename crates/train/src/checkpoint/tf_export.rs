//! ferroflow checkpoints as TensorFlow checkpoints: a [`Checkpoint`] written
//! as a V2 tensor bundle (`<prefix>.index` + `<prefix>.data-00000-of-00001`,
//! the files of `tf.compat.v1.train.Saver`), with TF's names (they are
//! ferroflow's already, optimizer slots and `global_step` included) and TF's
//! layouts: 4-D kernels OIHW → HWIO (`[h, w, in, out]`), dense kernels
//! `[in, units]` in both. The directory's `checkpoint` state file names the
//! new prefix as the latest, so `tf.train.latest_checkpoint(dir)` finds it.
//!
//! The data file is written (temporary file, fsync, rename) before the
//! index, and the state file last: a crash leaves either the previous
//! state or a complete bundle listed. ferroflow's training state (RNG, data
//! cursor) is not in the bundle: TF has no place for it, so an exported
//! bundle warm-starts or fine-tunes a run but does not resume one exactly.

use std::path::{Path, PathBuf};

use tfrecord::BundleWriter;
use tfrecord::proto::tensor::DataType;

use crate::checkpoint::atomic::{sync_dir, write_atomic};
use crate::checkpoint::file::{Checkpoint, StoredTensor, Values};
use crate::checkpoint::manager::now;
use crate::checkpoint::state::{CheckpointState, STATE_FILE};
use crate::checkpoint::tf_bundle::oihw_to_hwio;
use crate::error::{Result, TrainError};

/// What [`export_tensor_bundle`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedBundle {
    /// `<prefix>.index`.
    pub index: PathBuf,
    /// `<prefix>.data-00000-of-00001`.
    pub data: PathBuf,
    /// The directory's state file.
    pub state: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data.
    pub bytes: usize,
}

/// The TF dtype and little-endian bytes of `t` in TF's layout.
fn tf_tensor(t: &StoredTensor) -> (DataType, Vec<usize>, Vec<u8>) {
    let t = if t.shape.len() == 4 { oihw_to_hwio(t) } else { t.clone() };
    let dtype = match t.values {
        Values::F32(_) => DataType::DtFloat,
        Values::F64(_) => DataType::DtDouble,
        Values::I32(_) => DataType::DtInt32,
        Values::I64(_) => DataType::DtInt64,
    };
    (dtype, t.shape.clone(), t.values.bytes())
}

/// The bundle's two files' bytes (no file is written).
pub fn tensor_bundle_bytes(checkpoint: &Checkpoint) -> Result<tfrecord::BundleFiles> {
    let mut writer = BundleWriter::new();
    // `tensors` is a BTreeMap: added in name order, as TF's Saver adds them.
    for (name, t) in &checkpoint.tensors {
        let (dtype, shape, bytes) = tf_tensor(t);
        writer
            .add(name, dtype, &shape, &bytes)
            .map_err(|e| TrainError::Checkpoint { path: format!("(export of {name})"), reason: e.to_string() })?;
    }
    Ok(writer.finish())
}

/// Writes `checkpoint` as the TF checkpoint `prefix` (`out/model.ckpt-300`)
/// and lists it as the latest in `prefix`'s directory's state file (added
/// to the paths a state file there already lists).
pub fn export_tensor_bundle(checkpoint: &Checkpoint, prefix: &Path) -> Result<ExportedBundle> {
    let files = tensor_bundle_bytes(checkpoint)?;
    let dir = prefix.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = prefix.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
        TrainError::config(
            "--out",
            format!("{} names no checkpoint prefix (e.g. out/model.ckpt-300)", prefix.display()),
        )
    })?;
    std::fs::create_dir_all(&dir).map_err(|cause| TrainError::Io { path: dir.display().to_string(), cause })?;
    let index = PathBuf::from(format!("{}.index", prefix.display()));
    let data = PathBuf::from(format!("{}.data-00000-of-00001", prefix.display()));
    let save = |path: &Path, bytes: &[u8]| {
        write_atomic(path, bytes).map_err(|cause| TrainError::Save { path: path.display().to_string(), cause })
    };
    // A side file left at this prefix by a TF-format training save belongs to the old
    // bundle: it would make every later load fail ("belongs to another bundle").
    let side = crate::checkpoint::tf_sidecar::sidecar_path(prefix);
    if side.exists() {
        std::fs::remove_file(&side).map_err(|cause| TrainError::Save { path: side.display().to_string(), cause })?;
    }
    save(&data, &files.data)?;
    save(&index, &files.index)?;

    let state_path = dir.join(STATE_FILE);
    let mut state = match std::fs::read_to_string(&state_path) {
        Ok(text) => CheckpointState::parse(&text)
            .map_err(|reason| TrainError::Checkpoint { path: state_path.display().to_string(), reason })?,
        Err(_) => CheckpointState::default(),
    };
    let stamp = now();
    if let Some(i) = state.all_model_checkpoint_paths.iter().position(|p| *p == name) {
        state.all_model_checkpoint_paths.remove(i);
        if i < state.all_model_checkpoint_timestamps.len() {
            state.all_model_checkpoint_timestamps.remove(i);
        }
    }
    state.all_model_checkpoint_timestamps.resize(state.all_model_checkpoint_paths.len(), stamp);
    state.all_model_checkpoint_paths.push(name.clone());
    state.all_model_checkpoint_timestamps.push(stamp);
    state.model_checkpoint_path = name;
    if state.last_preserved_timestamp == 0.0 {
        state.last_preserved_timestamp = stamp;
    }
    save(&state_path, state.to_text().as_bytes())?;
    let _ = sync_dir(&dir);
    Ok(ExportedBundle { index, data, state: state_path, tensors: checkpoint.tensors.len(), bytes: files.data.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::file::CheckpointMeta;
    use crate::checkpoint::tf_bundle::load_tensor_bundle;

    #[test]
    fn a_checkpoint_round_trips_through_a_bundle_with_tf_layouts() {
        let mut ck =
            Checkpoint { meta: CheckpointMeta { global_step: 12, ..Default::default() }, ..Default::default() };
        // OIHW [2, 1, 1, 3]: value = 100*o + w.
        let kernel: Vec<f32> = (0..2).flat_map(|o| (0..3).map(move |w| (100 * o + w) as f32)).collect();
        ck.tensors.insert("conv/weights".into(), StoredTensor { shape: vec![2, 1, 1, 3], values: Values::F32(kernel) });
        ck.tensors
            .insert("fc/weights".into(), StoredTensor { shape: vec![2, 2], values: Values::F32(vec![1., 2., 3., 4.]) });
        ck.tensors.insert("global_step".into(), StoredTensor { shape: vec![], values: Values::I64(vec![12]) });
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("model.ckpt-12");
        let out = export_tensor_bundle(&ck, &prefix).unwrap();
        assert_eq!(out.tensors, 3);

        // In the bundle the kernel is HWIO [1, 3, 1, 2]: value at (w, o) = 100*o + w.
        let bundle = tfrecord::TensorBundle::open(&prefix).unwrap();
        assert_eq!(bundle.entries()["conv/weights"].shape, vec![1, 3, 1, 2]);
        let hwio: Vec<f32> =
            bundle.read("conv/weights").unwrap().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(hwio, vec![0., 100., 1., 101., 2., 102.]);

        // Read back as a ferroflow checkpoint: the same tensors.
        let back = load_tensor_bundle(&prefix).unwrap();
        assert_eq!(back.tensors, ck.tensors);
        assert_eq!(back.meta.global_step, 12);
        let state = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(state.starts_with("model_checkpoint_path: \"model.ckpt-12\"\n"), "{state}");

        // A second export lists both, the new one last.
        export_tensor_bundle(&ck, &dir.path().join("model.ckpt-13")).unwrap();
        let state = CheckpointState::parse(&std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(state.all_model_checkpoint_paths, vec!["model.ckpt-12", "model.ckpt-13"]);
        assert_eq!(state.model_checkpoint_path, "model.ckpt-13");
    }
}
