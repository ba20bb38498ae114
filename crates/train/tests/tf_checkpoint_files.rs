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

/// The TF1 Saver checkpoint itself (`model.ckpt-3.index` + `.data`) warm
/// starts the same model declared in ferroflow: every variable restored,
/// conv kernels transposed from TF's HWIO.
#[test]
fn warm_starts_from_a_tensorflow_checkpoint() {
    use ferroflow_nn::{ModelSpec, VarStore};
    use ferroflow_train::checkpoint::{resolve_checkpoint, warm_start};

    let spec = ModelSpec::from_toml(
        r#"
        name = "tf1_saver_model"
        input = [6, 6, 3]
        [[layers]]
        type = "conv2d"
        name = "conv1"
        filters = 4
        kernel = 3
        use_bias = false
        batch_norm = true
        activation = "relu"
        [[layers]]
        type = "flatten"
        [[layers]]
        type = "dense"
        name = "logits"
        units = 5
        "#,
    )
    .unwrap();
    let store = VarStore::new(candle_core::Device::Cpu, 0);
    spec.build(&store, 0).unwrap();
    // A TF train dir resolves through its state file to the bundle prefix.
    let path = resolve_checkpoint(&tf_files().join("tf1_saver")).unwrap();
    assert!(path.ends_with("model.ckpt-3"), "{}", path.display());
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.meta.global_step, 3);
    let report = warm_start(&store, &store.global_variables(), &ck, "tf", &[], false).unwrap();
    assert_eq!(report.restored.len(), 7, "{report:?}");

    let reference = Checkpoint::load(&tf_files().join("tf1_saver_values.safetensors")).unwrap();
    let values = |name: &str| -> Vec<f32> { store.get(name).unwrap().var.flatten_all().unwrap().to_vec1().unwrap() };
    let Values::F32(hwio) = &reference.get("conv1/weights").unwrap().values else { panic!() };
    let oihw = values("conv1/weights");
    for (o, i, h, w) in [(0, 0, 0, 0), (3, 2, 1, 0), (1, 2, 2, 1)] {
        assert_eq!(oihw[((o * 3 + i) * 3 + h) * 3 + w], hwio[((h * 3 + w) * 3 + i) * 4 + o]);
    }
    for name in ["conv1/BatchNorm/moving_variance", "logits/weights", "logits/biases"] {
        let Values::F32(v) = &reference.get(name).unwrap().values else { panic!() };
        assert_eq!(&values(name), v, "{name}");
    }
}
