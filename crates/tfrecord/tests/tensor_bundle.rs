//! The TF1 `Saver` checkpoint TensorFlow wrote (testdata/tf-files/checkpoint):
//! every tensor of `model.ckpt-3` reads back with the values TensorFlow
//! exported to `tf1_saver_values.safetensors`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tfrecord::proto::tensor::DataType;
use tfrecord::{BundleError, BundleWriter, TensorBundle, is_tensor_bundle};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tf-files/checkpoint")
}

/// The tensors of the reference safetensors file: name → (dtype, shape, bytes).
fn reference() -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(dir().join("tf1_saver_values.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let [a, b] = [0, 1].map(|i| v["data_offsets"][i].as_u64().unwrap() as usize);
            let shape = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (k.clone(), v["dtype"].as_str().unwrap().to_string(), shape, data[a..b].to_vec())
        })
        .collect()
}

#[test]
fn reads_every_tensor_tensorflow_saved() {
    let prefix = dir().join("tf1_saver/model.ckpt-3");
    assert!(is_tensor_bundle(&prefix));
    let bundle = TensorBundle::open(&prefix).unwrap();
    let reference = reference();
    assert_eq!(bundle.entries().len(), reference.len());
    for (name, dtype, shape, bytes) in reference {
        let entry = &bundle.entries()[&name];
        assert_eq!(entry.dtype_name(), if dtype == "F32" { "float32" } else { "int64" }, "{name}");
        // global_step is a scalar in TF; the reference stores it as [1].
        if name != "global_step" {
            assert_eq!(entry.shape, shape, "{name}");
        }
        assert_eq!(bundle.read(&name).unwrap(), bytes, "{name}");
    }
    assert_eq!(bundle.entries()["conv1/weights"].shape, [3, 3, 3, 4]); // HWIO, as TF stores kernels
}

#[test]
fn damage_is_reported_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dir().join("tf1_saver/model.ckpt-3");
    let prefix = tmp.path().join("model.ckpt-3");
    for ext in ["index", "data-00000-of-00001"] {
        std::fs::copy(format!("{}.{ext}", src.display()), format!("{}.{ext}", prefix.display())).unwrap();
    }
    // A flipped byte in a tensor's data.
    let data_path = format!("{}.data-00000-of-00001", prefix.display());
    let mut data = std::fs::read(&data_path).unwrap();
    let offset = TensorBundle::open(&prefix).unwrap().entries()["logits/weights"].offset as usize;
    data[offset + 3] ^= 0x40;
    std::fs::write(&data_path, &data).unwrap();
    let bundle = TensorBundle::open(&prefix).unwrap();
    let e = bundle.read("logits/weights").unwrap_err().to_string();
    assert!(e.contains("data-00000-of-00001") && e.contains("logits/weights") && e.contains("checksum"), "{e}");
    assert!(bundle.read("conv1/weights").is_ok());
    assert!(matches!(bundle.read("nope"), Err(BundleError::Missing { .. })));
    // A flipped byte anywhere in the index.
    let index_path = format!("{}.index", prefix.display());
    let index = std::fs::read(&index_path).unwrap();
    for i in (0..index.len()).step_by(7) {
        let mut bad = index.clone();
        bad[i] ^= 0x01;
        std::fs::write(&index_path, &bad).unwrap();
        match TensorBundle::open(&prefix) {
            Err(e) => assert!(e.to_string().contains(".index"), "{e}"),
            // A flip in the footer's padding changes nothing TF reads.
            Ok(b) => assert_eq!(b.entries().len(), 13, "byte {i}"),
        }
    }
}

/// Writes the tensors of TF's `model.ckpt-3` again, in name order as TF's
/// Saver adds them: both files must be TensorFlow's, byte for byte.
#[test]
fn the_writer_writes_tensorflows_bytes() {
    let prefix = dir().join("tf1_saver/model.ckpt-3");
    let bundle = TensorBundle::open(&prefix).unwrap();
    let mut writer = BundleWriter::new();
    for (name, entry) in bundle.entries() {
        let dtype = DataType::try_from(entry.dtype).unwrap();
        writer.add(name, dtype, &entry.shape, &bundle.read(name).unwrap()).unwrap();
    }
    let files = writer.finish();
    let tf_index = std::fs::read(dir().join("tf1_saver/model.ckpt-3.index")).unwrap();
    let tf_data = std::fs::read(dir().join("tf1_saver/model.ckpt-3.data-00000-of-00001")).unwrap();
    assert_eq!(files.data, tf_data);
    assert_eq!(files.index, tf_index);
}

#[test]
fn what_the_writer_writes_reads_back_and_bad_tensors_are_refused() {
    // Many tensors (several restart intervals) and big ones (several data
    // blocks in the index).
    let mut writer = BundleWriter::new();
    let mut want = Vec::new();
    for i in 0..40 {
        let n = if i % 10 == 0 { 30_000 } else { i + 1 };
        let values: Vec<f32> = (0..n).map(|k| (k * 7 + i) as f32 * 0.5).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let name = format!("layer{i:02}/weights");
        writer.add(&name, DataType::DtFloat, &[n], &bytes).unwrap();
        want.push((name, bytes));
    }
    writer.add("global_step", DataType::DtInt64, &[], &7i64.to_le_bytes()).unwrap();
    let e = writer.add("global_step", DataType::DtInt64, &[], &7i64.to_le_bytes()).unwrap_err();
    assert!(e.to_string().contains("added twice"), "{e}");
    let e = writer.add("x", DataType::DtFloat, &[3], &[0; 8]).unwrap_err();
    assert!(e.to_string().contains("8 bytes do not hold shape [3]"), "{e}");
    assert!(writer.add("s", DataType::DtString, &[], &[]).is_err());
    let files = writer.finish();

    let out = tempfile::tempdir().unwrap();
    let prefix = out.path().join("model.ckpt-7");
    std::fs::write(out.path().join("model.ckpt-7.index"), &files.index).unwrap();
    std::fs::write(out.path().join("model.ckpt-7.data-00000-of-00001"), &files.data).unwrap();
    let back = TensorBundle::open(&prefix).unwrap();
    assert_eq!(back.entries().len(), 41);
    for (name, bytes) in &want {
        assert_eq!(&back.read(name).unwrap(), bytes, "{name}");
    }
    assert_eq!(back.read("global_step").unwrap(), 7i64.to_le_bytes());
    assert_eq!(back.entries()["global_step"].shape, Vec::<usize>::new());
}

#[test]
fn read_all_equals_reading_one_by_one_and_reports_damage() {
    let prefix = dir().join("tf1_saver/model.ckpt-3");
    let bundle = TensorBundle::open(&prefix).unwrap();
    let all = bundle.read_all().unwrap();
    assert_eq!(all.len(), bundle.entries().len());
    for (name, bytes) in &all {
        assert_eq!(bytes, &bundle.read(name).unwrap(), "{name}");
    }
    // A copy with a flipped byte, and one cut short.
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("model.ckpt-3");
    std::fs::copy(dir().join("tf1_saver/model.ckpt-3.index"), out.path().join("model.ckpt-3.index")).unwrap();
    let data = std::fs::read(dir().join("tf1_saver/model.ckpt-3.data-00000-of-00001")).unwrap();
    let data_path = out.path().join("model.ckpt-3.data-00000-of-00001");
    let mut flipped = data.clone();
    flipped[100] ^= 1;
    std::fs::write(&data_path, &flipped).unwrap();
    let e = TensorBundle::open(&copy).unwrap().read_all().unwrap_err().to_string();
    assert!(e.contains("tensor checksum mismatch") && e.contains("data-00000-of-00001"), "{e}");
    std::fs::write(&data_path, &data[..data.len() - 3]).unwrap();
    let e = TensorBundle::open(&copy).unwrap().read_all().unwrap_err().to_string();
    assert!(e.contains("past the end of the file"), "{e}");
}
