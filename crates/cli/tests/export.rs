//! `ferroflow export --format tf-checkpoint`: TensorFlow 2.21 (the venv
//! scripts/test.sh creates) finds the exported bundle, lists every variable
//! with ferroflow's values, restores it into a TF1 graph of the model with
//! `tf.compat.v1.train.Saver`, and that graph's probabilities on real MNIST
//! digits equal `ferroflow predict`'s; one flipped byte is reported by both.
//! `ferroflow export --format onnx`: ONNX Runtime, on the same digits
//! preprocessed from the steps the model's metadata records, gives
//! `ferroflow predict`'s probabilities at batch sizes 7 and 1.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).args(args).current_dir(repo()).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(venv.exists(), "no Python with TensorFlow: run scripts/test.sh (it creates .venv) or set FERROFLOW_PYTHON");
    venv
}

/// Seven validation digits, two classes each of 0-2 and one 7.
fn digits() -> Vec<String> {
    let mut out = Vec::new();
    for (class, n) in [("0", 2), ("1", 2), ("2", 2), ("7", 1)] {
        let dir = repo().join("testdata/data/mnist5k/val").join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        out.extend(files.into_iter().take(n).map(|p| p.display().to_string()));
    }
    out
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tensorflow_restores_an_exported_bundle_and_computes_the_same_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_lenet(&run);

    let prefix = dir.path().join("exported/model.ckpt-40");
    let out = ferroflow(&["export", "--train-dir", path(&run), "--format", "tf-checkpoint", "--out", path(&prefix)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("21 tensors"), "{}", text(&out));

    // ferroflow reads what it wrote: the same variables, step 40; and fine-tunes from it.
    let inspect = ferroflow(&["inspect", path(&prefix)]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    assert!(text(&inspect).contains("21 variables"), "{}", text(&inspect));
    let tuned = dir.path().join("tuned");
    let out = ferroflow(&[
        "train",
        "--data",
        "testdata/data/mnist5k",
        "--model",
        "lenet",
        "--steps",
        "1",
        "--train-dir",
        path(&tuned),
        "--checkpoint-path",
        path(&prefix),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("warm start from {}: restored 10 variable(s)", path(&prefix))),
        "{}",
        text(&out)
    );

    // ferroflow's probabilities of every class (batch 7).
    let images = digits();
    let ours = predict_probabilities(&run, &images, "7");

    let tf = tensorflow_reads(prefix.parent().unwrap(), &run.join("model.ckpt-40.safetensors"), &images);
    assert_eq!(tf["latest"], path(&prefix));
    assert_eq!(tf["all_paths"], serde_json::json!([path(&prefix)]));
    let variables = tf["variables"].as_object().unwrap();
    assert_eq!(variables.len(), 21, "{variables:?}");
    assert_eq!(variables["conv1/weights"], serde_json::json!([5, 5, 1, 6]), "HWIO");
    assert_eq!(variables["fc1/weights/Momentum"], serde_json::json!([400, 120]));
    assert_eq!(tf["mismatched"], serde_json::json!([]), "values differ from ferroflow's");

    let mut worst: f64 = 0.0;
    for (image, probs) in tf["probabilities"].as_object().unwrap() {
        let probs: Vec<f64> = probs.as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
        for (class, p) in probs.iter().enumerate() {
            let d = (p - ours[image][&class]).abs();
            worst = worst.max(d);
            assert!(d <= 1e-5, "{image} class {class}: TensorFlow {p}, ferroflow {}", ours[image][&class]);
        }
    }
    // The model moved off uniform, so equal probabilities mean something.
    let top = ours.values().map(|p| p.values().copied().fold(0.0, f64::max)).fold(0.0, f64::max);
    assert!(top > 0.3, "top probability {top}; worst difference {worst}");

    let corrupt = tf["corrupt_error"].as_str().unwrap_or_default();
    assert!(corrupt.contains("Checksum does not match"), "TensorFlow on a flipped byte: {corrupt:?}");

    // One flipped byte in ferroflow's own copy: ferroflow names the tensor.
    let data = PathBuf::from(format!("{}.data-00000-of-00001", prefix.display()));
    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&data, &bytes).unwrap();
    let out = ferroflow(&["inspect", path(&prefix)]);
    assert!(!out.status.success());
    let e = text(&out);
    assert!(e.contains("tensor checksum mismatch") && e.contains("data-00000-of-00001"), "{e}");
}

/// Runs tests/python/tf_restores_bundle.py on the bundles in `dir`, against `source`.
fn tensorflow_reads(dir: &Path, source: &Path, images: &[String]) -> Json {
    let py = Command::new(python())
        .arg(repo().join("tests/python/tf_restores_bundle.py"))
        .arg(dir)
        .arg(source)
        .args(images)
        .current_dir(repo())
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    serde_json::from_slice(&py.stdout).unwrap()
}

#[test]
fn tensorflow_reads_the_bundles_a_tf_format_run_saves() {
    let dir = tempfile::tempdir().unwrap();
    let (st, tf_run) = (dir.path().join("st"), dir.path().join("tf"));
    train_lenet(&st);
    train_lenet_with(&tf_run, &["--set", "checkpoint.format=\"tf\"", "--set", "checkpoint.every_steps=20"]);
    let images = digits();
    let ours = predict_probabilities(&tf_run, &images, "7");
    assert_eq!(ours, predict_probabilities(&st, &images, "7"), "both formats hold the same model");

    // The same training in safetensors is the reference for every value.
    let tf = tensorflow_reads(&tf_run, &st.join("model.ckpt-40.safetensors"), &images);
    assert_eq!(tf["latest"], path(&tf_run.join("model.ckpt-40")));
    let listed = [20, 40].map(|s| tf_run.join(format!("model.ckpt-{s}")).display().to_string());
    assert_eq!(tf["all_paths"], serde_json::json!(listed));
    assert_eq!(tf["variables"].as_object().unwrap().len(), 21);
    assert_eq!(tf["variables"]["conv2/weights"], serde_json::json!([5, 5, 6, 16]), "HWIO");
    assert_eq!(tf["variables"]["global_step"], serde_json::json!([]));
    assert_eq!(tf["mismatched"], serde_json::json!([]), "values differ from ferroflow's");
    for (image, probs) in tf["probabilities"].as_object().unwrap() {
        for (class, p) in probs.as_array().unwrap().iter().enumerate() {
            let (p, q) = (p.as_f64().unwrap(), ours[image][&class]);
            assert!((p - q).abs() <= 1e-5, "{image} class {class}: TensorFlow {p}, ferroflow {q}");
        }
    }
    let corrupt = tf["corrupt_error"].as_str().unwrap_or_default();
    assert!(corrupt.contains("Checksum does not match"), "TensorFlow on a flipped byte: {corrupt:?}");
    let truncated = tf["truncated_error"].as_str().unwrap_or_default();
    assert!(!truncated.is_empty(), "TensorFlow must refuse a bundle whose .data is cut in half");

    // ferroflow on the same damage: one error naming the file.
    let data = tf_run.join("model.ckpt-40.data-00000-of-00001");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let out = ferroflow(&["inspect", path(&tf_run)]);
    assert!(!out.status.success());
    let e = text(&out);
    assert!(e.contains("model.ckpt-40") && e.lines().filter(|l| l.starts_with("error")).count() == 1, "{e}");
    eprintln!("TensorFlow: {truncated}\nferroflow: {e}");
}

/// ferroflow predict's probabilities of every class per image, at `batch`.
fn predict_probabilities(run: &Path, images: &[String], batch: &str) -> BTreeMap<String, BTreeMap<usize, f64>> {
    let mut args = vec!["predict", "--train-dir", path(run), "--json", "--top-k", "10", "--batch-size", batch];
    args.extend(images.iter().map(String::as_str));
    let out = ferroflow(&args);
    assert!(out.status.success(), "{}", text(&out));
    let mut ours = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let j: Json = serde_json::from_str(line).unwrap();
        let probs = j["top"].as_array().unwrap().iter();
        let probs = probs.map(|t| (t["label"].as_u64().unwrap() as usize, t["probability"].as_f64().unwrap()));
        ours.insert(j["path"].as_str().unwrap().to_string(), probs.collect());
    }
    assert_eq!(ours.len(), images.len());
    ours
}

fn train_lenet(run: &Path) {
    train_lenet_with(run, &[]);
}

fn train_lenet_with(run: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--data",
        "testdata/data/mnist5k",
        "--model",
        "lenet",
        "--steps",
        "40",
        "--batch-size",
        "32",
        "--save-every",
        "40",
        "--train-dir",
        path(run),
    ];
    args.extend(extra);
    let out = ferroflow(&args);
    assert!(out.status.success(), "{}", text(&out));
}

#[cfg(feature = "onnx")]
#[test]
fn onnx_runtime_on_an_exported_model_gives_predicts_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_lenet(&run);
    let model = dir.path().join("exported/lenet.onnx");
    let out = ferroflow(&["export", "--train-dir", path(&run), "--format", "onnx", "--out", path(&model)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ONNX opset 17") && text(&out).contains("[batch, 1, 28, 28] NCHW"), "{}", text(&out));

    let images = digits();
    let batch7 = predict_probabilities(&run, &images, "7");
    let batch1 = predict_probabilities(&run, &images, "1");
    let py = Command::new(python())
        .arg(repo().join("tests/python/onnx_predict.py"))
        .arg(&model)
        .args(&images)
        .current_dir(repo())
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    let ort: Json = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(ort["classes"], serde_json::json!(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]));
    for (key, ours) in [("batch", &batch7), ("single", &batch1)] {
        for (image, probs) in ort[key].as_object().unwrap() {
            for (class, p) in probs.as_array().unwrap().iter().enumerate() {
                let (p, q) = (p.as_f64().unwrap(), ours[image][&class]);
                assert!((p - q).abs() <= 1e-5, "{key} {image} class {class}: ONNX Runtime {p}, ferroflow {q}");
            }
        }
    }
    let top = batch7.values().map(|p| p.values().copied().fold(0.0, f64::max)).fold(0.0, f64::max);
    assert!(top > 0.3, "the model should have moved off uniform: top probability {top}");
}

#[cfg(not(feature = "onnx"))]
#[test]
fn onnx_export_without_the_feature_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_lenet(&run);
    let model = dir.path().join("lenet.onnx");
    let out = ferroflow(&["export", "--train-dir", path(&run), "--format", "onnx", "--out", path(&model)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--features onnx"), "{}", text(&out));
    assert!(!model.exists());
}
