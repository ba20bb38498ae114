//! Checkpoint checksums: every damaged byte of a real checkpoint (LeNet-5
//! with Momentum slots and the full training metadata) is caught at
//! restore, wherever it is (the header length, the JSON header with its
//! metadata, the tensor data); old checkpoints without checksums still load.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use candle_core::Device;
use ferroflow_data::{Cursor, Preprocess};
use ferroflow_nn::{VarStore, zoo_model};
use ferroflow_train::TrainConfig;
use ferroflow_train::checkpoint::{
    CHECKSUMS_KEY, Checkpoint, CheckpointMeta, Integrity, RngStates, restore_exact, without_checksums,
};
use ferroflow_train::optimizer::{Optimizer, OptimizerConfig};

/// A LeNet-5 checkpoint as `ferroflow train` writes it, and its store.
fn lenet_checkpoint() -> (Checkpoint, VarStore) {
    let spec = zoo_model("lenet", 10).unwrap();
    let store = VarStore::new(Device::Cpu, 7);
    spec.build(&store, 7).unwrap();
    Optimizer::new(&OptimizerConfig::default(), &store).unwrap(); // Momentum slots
    store.set_global_step(40);
    let config = TrainConfig::resolve("", &[]).unwrap();
    let meta = CheckpointMeta {
        version: "0.1.0".into(),
        global_step: 40,
        cursor: Some(Cursor { epoch: 1, offset: 320 }),
        rng: Some(RngStates { var_store: store.rng_state(), dropout: Default::default() }),
        config: Some(config.to_toml()),
        trainable: store.trainable_variables().into_iter().map(|v| v.name).collect(),
        classes: (0..10).map(|i| i.to_string()).collect(),
        model: Some(spec),
        preprocess: Some(Preprocess::default()),
        data: None,
        created: 1_764_000_000.25,
        targets: None,
        monitor: None,
    };
    (Checkpoint::capture(&store.global_variables(), meta).unwrap(), store)
}

/// A fixed-seed stream (SplitMix64), so failures reproduce.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn a_written_checkpoint_verifies_and_restores() {
    let (ck, store) = lenet_checkpoint();
    let bytes = ck.to_bytes().unwrap();
    let back = Checkpoint::from_bytes(&bytes, "model.ckpt-40.safetensors").unwrap();
    assert_eq!(back.integrity, Integrity::Verified);
    assert_eq!(back, ck);
    assert!(back.integrity_notice(std::path::Path::new("x")).is_none());
    restore_exact(&store, &back, "x").unwrap();
}

#[test]
fn every_single_byte_flip_at_200_positions_is_detected() {
    let (ck, _) = lenet_checkpoint();
    let bytes = ck.to_bytes().unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_start = 8 + header_len;
    assert!(header_len > 4000, "the header holds the metadata: {header_len} bytes");
    let mut stream = Stream(20);
    // All 8 bytes of the header length, 92 of the JSON header (tensor
    // index, metadata, checksums, padding), 100 of the tensor data.
    let mut positions: Vec<usize> = (0..8).collect();
    positions.extend((0..92).map(|_| 8 + stream.below(header_len)));
    positions.extend((0..100).map(|_| data_start + stream.below(bytes.len() - data_start)));
    // The header's last bytes (the padding and the end of the JSON) too.
    positions.extend((data_start - 8)..data_start);
    let mut data_errors = 0;
    for &at in &positions {
        let mut bad = bytes.clone();
        bad[at] ^= 1 + stream.below(255) as u8;
        match Checkpoint::from_bytes(&bad, "model.ckpt-40.safetensors") {
            Ok(_) => panic!("byte {at} of {} changed and the checkpoint still loaded", bytes.len()),
            Err(e) => {
                let e = e.to_string();
                assert!(e.starts_with("model.ckpt-40.safetensors: "), "{e}");
                assert_eq!(e.lines().count(), 1, "{e}");
                if at >= data_start {
                    // Names the tensor and both checksums.
                    assert!(e.contains("damaged checkpoint: tensor \"") && e.contains("was stored"), "{e}");
                    data_errors += 1;
                }
            }
        }
    }
    assert_eq!(data_errors, 100);

    // JSON takes a tab or newline for the padding's spaces; the check does not.
    let json_end = bytes[..data_start].iter().rposition(|&b| b == b'}').unwrap() + 1;
    for at in json_end..data_start {
        for c in [b'\t', b'\n', b'\r'] {
            let mut bad = bytes.clone();
            bad[at] = c;
            let e = Checkpoint::from_bytes(&bad, "f").unwrap_err().to_string();
            assert!(e.contains("padding"), "{e}");
        }
    }
}

#[test]
fn a_flip_in_a_tensor_names_it_and_both_checksums() {
    let (ck, _) = lenet_checkpoint();
    let bytes = ck.to_bytes().unwrap();
    // The last 4 bytes of the file are the last value of the last tensor in
    // safetensors' data order; find which one by comparing values.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 2] ^= 0x10;
    let e = Checkpoint::from_bytes(&bad, "f").unwrap_err().to_string();
    let stored = serde_json::from_str::<serde_json::Value>(
        &safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap()[CHECKSUMS_KEY],
    )
    .unwrap();
    let name = e.split('"').nth(1).unwrap().to_string();
    let want = stored["tensors"][&name].as_u64().unwrap();
    assert!(e.contains(&format!("but {want:08x} was stored")), "{e}");
    assert!(ck.tensors.contains_key(&name), "{name}");
}

#[test]
fn a_checkpoint_without_checksums_loads_with_a_notice() {
    // What ferroflow wrote before checksums: the same file without the two keys.
    let (ck, _) = lenet_checkpoint();
    let bytes = ck.to_bytes().unwrap();
    let old = without_checksums(&bytes, "new").unwrap();
    let back = Checkpoint::from_bytes(&old, "old.safetensors").unwrap();
    assert_eq!(back.integrity, Integrity::NoChecksums);
    assert_eq!(back.tensors, ck.tensors);
    let notice = back.integrity_notice(std::path::Path::new("runs/x/old.safetensors")).unwrap();
    assert!(notice.starts_with("note: runs/x/old.safetensors has no checksums"), "{notice}");
    assert_eq!(notice.lines().count(), 1);
    // Written again, it has them.
    assert_eq!(Checkpoint::from_bytes(&back.to_bytes().unwrap(), "new").unwrap().integrity, Integrity::Verified);

    // Only one of the two keys: damage, not an old file.
    let mut one: HashMap<String, String> =
        safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap();
    one.remove(CHECKSUMS_KEY);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let e = Checkpoint::from_bytes(&safetensors::serialize(st.tensors(), Some(one)).unwrap(), "f").unwrap_err();
    assert!(e.to_string().contains("has no ferroflow.checksums"), "{e}");
}

#[test]
fn a_checkpoint_an_earlier_ferroflow_wrote_still_verifies() {
    // testdata/checkpoints/lenet-format2-step2.safetensors: `ferroflow train
    // --model lenet --steps 2 --batch-size 8` on mnist5k by ferroflow at
    // commit 047ce55 (the first with checksums). Its header checksum covers
    // the canonical header text, so any change to that text would fail here.
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/checkpoints/lenet-format2-step2.safetensors");
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.integrity, Integrity::Verified);
    assert_eq!(ck.meta.global_step, 2);
    assert_eq!(ck.tensors.len(), 21);
    assert_eq!(ck.get("conv1/weights").unwrap().shape, vec![6, 1, 5, 5]); // ferroflow stores OIHW
    // The same bytes through the in-memory path give the same checkpoint.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes, "mem").unwrap(), ck);
    // And one flipped value bit in it is found, by tensor.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 100;
    flipped[at] ^= 0x10;
    let e = Checkpoint::from_bytes(&flipped, "f").unwrap_err().to_string();
    assert!(e.contains("damaged checkpoint: tensor"), "{e}");
}
