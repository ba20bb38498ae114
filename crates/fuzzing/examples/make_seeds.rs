//! Writes the generated seeds of the `checkpoint_restore` and
//! `train_config` fuzz targets into `fuzz/seeds/` (the other seeds are
//! files from testdata/; see fuzz/seeds/README.md):
//!
//! ```sh
//! cargo run --release -p ferroflow-fuzzing --example make_seeds
//! ```

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::Device;
use ferroflow_nn::{Init, VarStore};
use ferroflow_train::TrainConfig;
use ferroflow_train::checkpoint::{CHECKSUMS_KEY, Checkpoint, CheckpointMeta, FORMAT_KEY};

fn main() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");

    // A small checkpoint with every kind of metadata ferroflow writes: the
    // two variables the target restores into, a slot and global_step.
    let store = VarStore::new(Device::Cpu, 1);
    let conv = store.root().sub("conv1");
    conv.get_variable("weights", &[2, 1, 3, 3], Init::GlorotUniform, true).unwrap();
    store.root().get_variable("bias", &[2], Init::Constant { value: 0.5 }, true).unwrap();
    conv.get_variable("weights/Momentum", &[2, 1, 3, 3], Init::Zeros, false).unwrap();
    let config = TrainConfig::resolve("[train]\nbatch_size = 4\n", &[]).unwrap();
    let meta = CheckpointMeta {
        version: "0.1.0".into(),
        global_step: 3,
        cursor: Some(ferroflow_data::Cursor { epoch: 0, offset: 12 }),
        config: Some(config.to_toml()),
        trainable: vec!["conv1/weights".into(), "bias".into()],
        classes: vec!["a".into(), "b".into()],
        preprocess: Some(ferroflow_data::Preprocess::default()),
        created: 1.5,
        ..Default::default()
    };
    let ck = Checkpoint::capture(&store.global_variables(), meta).unwrap();
    let bytes = ck.to_bytes().unwrap();
    let dir = seeds.join("checkpoint_restore");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("small.safetensors"), &bytes).unwrap();

    // The same as an older ferroflow wrote it: no checksums.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut old: HashMap<String, String> =
        safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap();
    old.remove(CHECKSUMS_KEY);
    old.remove(FORMAT_KEY);
    std::fs::write(
        dir.join("small-no-checksums.safetensors"),
        safetensors::serialize(st.tensors(), Some(old)).unwrap(),
    )
    .unwrap();

    // Every setting, as `ferroflow train` writes config.toml.
    let dir = seeds.join("train_config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("defaults.toml"), TrainConfig::resolve("", &[]).unwrap().to_toml()).unwrap();
    std::fs::write(
        dir.join("overrides.txt"),
        "train.steps=100\noptimizer.kind=\"adam\"\nschedule.kind=\"piecewise_constant\"\n\
         schedule.boundaries=[10, 20]\nschedule.values=[0.1, 0.01, 0.001]\ncheckpoint.on_corrupt=\"error\"\n",
    )
    .unwrap();
}
