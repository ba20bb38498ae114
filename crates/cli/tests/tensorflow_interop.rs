//! TensorFlow 2.21 (tensorflow-cpu from PyPI, in the venv scripts/test.sh
//! creates) reads what `ferroflow prepare` writes: every Example parses with
//! the documented feature spec, every image decodes, counts and labels match.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ferroflow_data::{Dataset, DecodeOptions, decode_example};
use serde_json::Value as Json;
use tfrecord::{Example, FileRecordReader, ReaderOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(venv.exists(), "no Python with TensorFlow: run scripts/test.sh (it creates .venv) or set FERROFLOW_PYTHON");
    venv
}

fn prepare(out: &Path, extra: &[&str]) {
    let mut args = vec!["prepare".to_string(), repo().join("testdata/data/photos-mini").display().to_string()];
    args.extend(["--out".to_string(), out.display().to_string(), "--val-fraction".into(), "0.25".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let st = Command::new(env!("CARGO_BIN_EXE_ferroflow")).args(&args).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

/// What ferroflow itself reads back: count, per class, and pixel checksum.
fn ferroflow_view(dir: &Path) -> Json {
    let ds = Dataset::open(dir).unwrap();
    let mut out = serde_json::Map::new();
    for split in ds.meta.splits.keys() {
        let (mut count, mut checksum) = (0u64, 0u64);
        let mut per_class = serde_json::Map::new();
        for f in ds.files(split).unwrap() {
            for r in FileRecordReader::open(&f, ReaderOptions::default()).unwrap() {
                let ex = Example::from_bytes(&r.unwrap().data).unwrap();
                let d = decode_example(&ex, &DecodeOptions::default()).unwrap();
                checksum += d.image.data.iter().map(|&v| u64::from(v)).sum::<u64>();
                let name = &ds.meta.classes[d.label.unwrap() as usize];
                let n = per_class.get(name).and_then(Json::as_u64).unwrap_or(0);
                per_class.insert(name.clone(), (n + 1).into());
                count += 1;
            }
        }
        out.insert(split.clone(), serde_json::json!({"count": count, "per_class": per_class, "checksum": checksum}));
    }
    Json::Object(out)
}

fn tensorflow_view(dir: &Path) -> Json {
    let out = Command::new(python()).arg(repo().join("tests/python/tf_reads_dataset.py")).arg(dir).output().unwrap();
    assert!(out.status.success(), "TensorFlow failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tensorflow_reads_prepared_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 3] = [
        ("original", &[]),
        ("raw-gzip", &["--encoding", "raw", "--resize", "32x40", "--compression", "gzip"]),
        ("original-resized-gzip", &["--resize", "48x48", "--compression", "gzip", "--shards", "3"]),
    ];
    for (name, extra) in cases {
        let ds = dir.path().join(name);
        prepare(&ds, extra);
        let tf = tensorflow_view(&ds);
        let ours = ferroflow_view(&ds);
        for split in ["train", "validation"] {
            assert_eq!(tf[split]["count"], ours[split]["count"], "{name} {split}");
            assert_eq!(tf[split]["per_class"], ours[split]["per_class"], "{name} {split}");
        }
        assert_eq!(tf["train"]["count"], 45, "{name}");
        assert_eq!(
            tf["validation"]["per_class"],
            serde_json::json!({"chelsea": 5, "coffee": 5, "rocket": 5}),
            "{name}"
        );
        if name != "original" {
            // Lossless storage: TF's decoded pixels are exactly ours.
            for split in ["train", "validation"] {
                assert_eq!(tf[split]["checksum"], ours[split]["checksum"], "{name} {split}");
            }
        }
        if name == "raw-gzip" {
            assert_eq!(tf["train"]["shapes"], serde_json::json!([[32, 40, 3]]));
        }
    }
}
