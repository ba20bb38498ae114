//! A safetensors checkpoint restored: arbitrary bytes through
//! `Checkpoint::from_bytes` (the safetensors parse, the checksums, the
//! metadata), `restore_exact` into a small variable store, and a round trip
//! of whatever parsed.

use candle_core::Device;
use ferroflow_nn::{Init, VarStore};
use ferroflow_train::checkpoint::{Checkpoint, Integrity, Values, restore_exact};

/// The body of the `checkpoint_restore` target.
pub fn checkpoint_restore(data: &[u8]) {
    let ck = match Checkpoint::from_bytes(data, "fuzz.safetensors") {
        Ok(ck) => ck,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for (name, t) in &ck.tensors {
        let _ = t.stats();
        let _ = ck.integrity_notice(std::path::Path::new(name));
    }
    let _ = ck.meta.entries();

    // What parsed writes out, with checksums, and reads back the same.
    let bytes = ck.to_bytes().expect("a parsed checkpoint writes");
    let again = Checkpoint::from_bytes(&bytes, "again.safetensors").expect("a written checkpoint reads back");
    assert_eq!(again.integrity, Integrity::Verified);
    assert_eq!(again.meta, ck.meta, "the round trip changed the metadata");
    assert_eq!(again.other_metadata, ck.other_metadata, "the round trip changed the other metadata");
    assert_eq!(bits(&again), bits(&ck), "the round trip changed a tensor");

    // Restoring may fail (names, shapes), never panic.
    let store = VarStore::new(Device::Cpu, 0);
    let root = store.root();
    if root.sub("conv1").get_variable("weights", &[2, 1, 3, 3], Init::Zeros, true).is_ok()
        && root.get_variable("bias", &[2], Init::Zeros, true).is_ok()
        && let Err(e) = restore_exact(&store, &ck, "fuzz.safetensors")
    {
        let _ = e.to_string();
    }
}

/// Every tensor's shape and value bits (NaN-safe equality).
fn bits(ck: &Checkpoint) -> Vec<(String, Vec<usize>, &'static str, Vec<u64>)> {
    ck.tensors
        .iter()
        .map(|(k, t)| {
            let v = match &t.values {
                Values::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
                Values::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
                Values::I64(v) => v.iter().map(|&x| x as u64).collect(),
                Values::I32(v) => v.iter().map(|&x| x as u64).collect(),
            };
            (k.clone(), t.shape.clone(), t.values.dtype_name(), v)
        })
        .collect()
}
