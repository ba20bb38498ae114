//! Files written by TensorFlow itself (testdata/tf-files/checkpoint): the
//! `checkpoint` state file of a `tf.compat.v1.train.Saver`, and the values
//! of its variables as a plain safetensors file.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferroflow_train::checkpoint::{Checkpoint, Values, read_state};

fn tf_files() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tf-files/checkpoint")
}

#[test]
fn reads_the_state_file_tensorflow_wrote() {
    let state = read_state(&tf_files().join("tf1_saver")).unwrap().unwrap();
    assert_eq!(state.model_checkpoint_path, "model.ckpt-3");
    assert_eq!(state.all_model_checkpoint_paths, ["model.ckpt-2", "model.ckpt-3"]);
    // TF1's Saver writes no timestamps.
    assert!(state.all_model_checkpoint_timestamps.is_empty());
}

#[test]
fn reads_a_safetensors_file_of_tf_variables() {
    let ck = Checkpoint::load(&tf_files().join("tf1_saver_values.safetensors")).unwrap();
    assert_eq!(ck.tensors.len(), 13);
    assert_eq!(ck.get("conv1/weights").unwrap().shape, [3, 3, 3, 4]);
    assert_eq!(ck.get("logits/weights/Momentum").unwrap().shape, [144, 5]);
    assert_eq!(ck.get("global_step").unwrap().values, Values::I64(vec![3]));
    // Not written by ferroflow: no training state, its own metadata kept.
    assert!(ck.meta.config.is_none() && ck.meta.trainable.is_empty());
    assert!(ck.other_metadata["trainable"].contains("conv1/weights"));
    let stats = ck.get("conv1/BatchNorm/moving_variance").unwrap().stats();
    assert!(stats.min > 0.0 && stats.non_finite == 0, "{stats:?}");
}
