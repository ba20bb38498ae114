//! Checkpoints: safetensors files (or TensorFlow bundles with a side file,
//! `checkpoint.format = "tf"`) holding every variable by its TF name plus
//! the training state, a TF-format `checkpoint` state file, crash-safe
//! writes, retention, resume and warm start; TensorFlow checkpoints are read
//! too (for inspection and warm start).

mod atomic;
mod decode;
mod file;
mod header;
mod integrity;
mod manager;
mod reader;
mod recovery;
mod restore;
mod state;
mod tf_bundle;
mod tf_export;
mod tf_sidecar;

pub use atomic::{TEMP_SUFFIX, remove_stale_temps, write_atomic};
pub use decode::{Decoded, ValuesBuilder, decode_reference};
pub use file::{Checkpoint, CheckpointMeta, DataFingerprint, RngStates, StoredTensor, TensorStats, Values};
pub use integrity::{CHECKSUMS_KEY, Checksums, FORMAT_KEY, Integrity, without_checksums};
pub use manager::{
    CheckpointManager, EXTENSION, RETIRING_FILE, checkpoint_prefix, file_of_prefix, latest_checkpoint, now, read_state,
    remove_unlisted_newer, resolve_checkpoint,
};
pub use recovery::{DAMAGED_SUFFIX, Damaged, Intact, latest_intact, listed_checkpoints, set_aside};
pub use restore::{WarmStartReport, apply_trainable_scopes, check_scopes, in_scope, restore_exact, warm_start};
pub use state::{CheckpointState, STATE_FILE};
pub use tf_bundle::{TF_FORMAT_KEY, bundle_prefix, load_tensor_bundle};
pub use tf_export::{ExportedBundle, export_tensor_bundle, tensor_bundle_bytes};
pub use tf_sidecar::{SIDECAR_SUFFIX, read_sidecar, sidecar_bytes, sidecar_path};
