//! Fixtures shared by the CLI tests.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ferroflow_data::{DecodeOptions, decode_image};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A regression dataset prepared from the bundled MNIST digits, with two
/// targets computed here from each real image: its mean brightness (0–255)
/// and the mean brightness of its top half minus its bottom half. Returns
/// the dataset directory (under `dir`).
pub fn mnist_regression_dataset(dir: &Path) -> PathBuf {
    let root = repo().join("testdata/data/mnist5k");
    let mut rows = String::new();
    for split in ["train", "val"] {
        let mut classes: Vec<PathBuf> =
            std::fs::read_dir(root.join(split)).unwrap().map(|e| e.unwrap().path()).collect();
        classes.sort();
        for class in classes {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&class).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for file in files {
                let image = decode_image(&std::fs::read(&file).unwrap(), &DecodeOptions::default()).unwrap();
                let (h, w) = (image.height, image.width);
                let mean = |rows: std::ops::Range<usize>| {
                    let n = (rows.len() * w) as f64;
                    rows.flat_map(|y| image.data[y * w..(y + 1) * w].iter().map(|&v| f64::from(v))).sum::<f64>() / n
                };
                let rel = file.strip_prefix(&root).unwrap().display().to_string();
                rows.push_str(&format!("{rel},{:.4},{:.4}\n", mean(0..h), mean(0..h / 2) - mean(h / 2..h)));
            }
        }
    }
    let csv = dir.join("targets.csv");
    std::fs::write(&csv, rows).unwrap();
    let out_dir = dir.join("mnist-regression");
    let out = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .current_dir(repo())
        .args(["prepare", "testdata/data/mnist5k", "--out"])
        .arg(&out_dir)
        .arg("--labels-csv")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out_dir
}

/// The Python with TensorFlow 2.21 and tf-slim (the venv scripts/test.sh creates, or
/// `FERROFLOW_PYTHON`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(venv.exists(), "no Python with TensorFlow: run scripts/test.sh (it creates .venv) or set FERROFLOW_PYTHON");
    venv
}

/// Runs `ferroflow ARGS` from the repository root; panics with its stderr when it fails.
pub fn ferroflow_ok(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(args).output().unwrap();
    assert!(out.status.success(), "ferroflow {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
