//! TF-slim's ImageNet nets in the zoo load TF-slim checkpoints and give
//! TensorFlow's logits (issue 16). For each model, tests/python/slim_reference.py
//! (TF 2.21 + tf-slim 1.1.0, in the venv scripts/test.sh creates) builds the
//! TF-slim net with seeded random weights and non-trivial biases, saves a
//! Saver checkpoint and its eval-mode logits for real photos; ferroflow
//! builds the zoo model, warm-starts every variable from that checkpoint by
//! name (no renaming table: the names are TF-slim's) and must give the same
//! logits within 1e-4 of their largest magnitude.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use ferroflow_golden::{python, repo_root};
use ferroflow_nn::{VarStore, zoo_model};
use ferroflow_train::checkpoint::{load_tensor_bundle, warm_start};

/// Two photos of different classes from the bundled photos.
fn photos() -> Vec<PathBuf> {
    ["chelsea/00001.jpg", "rocket/00007.jpg"]
        .iter()
        .map(|p| repo_root().join("testdata/data/photos-mini").join(p))
        .collect()
}

fn tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> Tensor {
    let view = st.tensor(name).unwrap();
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Tensor::from_vec(values, view.shape(), &Device::Cpu).unwrap()
}

/// TF-slim's logits for `model` against ferroflow's: the worst difference relative to
/// the largest TF logit.
fn conformance(model: &str, dir: &Path) -> f32 {
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/slim_reference.py"))
        .arg(model)
        .arg(dir)
        .args(photos())
        .output()
        .unwrap();
    assert!(out.status.success(), "TF-slim reference failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(dir.join("io.safetensors")).unwrap();
    let io = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (input, want) = (tensor(&io, "input"), tensor(&io, "logits"));

    let classes = want.dims()[1];
    let store = VarStore::new(Device::Cpu, 0);
    let net = zoo_model(model, classes).unwrap().build(&store, 0).unwrap();
    let prefix = dir.join("model.ckpt");
    let checkpoint = load_tensor_bundle(&prefix).unwrap();
    let variables = store.global_variables();
    let report = warm_start(&store, &variables, &checkpoint, "model.ckpt", &[], false).unwrap();
    assert_eq!(report.restored.len(), variables.len(), "every variable comes from the TF-slim checkpoint");
    let x = input.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap(); // NHWC → NCHW
    let got = net.forward_t(&x, false).unwrap();
    assert_eq!(got.dims(), want.dims());
    let (got, want) = (flat(&got), flat(&want));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.05, "{model}: TF's logits are all near 0 ({scale}): the test would prove little");
    got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

#[test]
fn vgg_16_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("vgg_16", dir.path());
    eprintln!("vgg_16: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "vgg_16 logits differ from TF-slim's by {worst:e} of the largest");
}

#[test]
fn vgg_19_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("vgg_19", dir.path());
    eprintln!("vgg_19: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "vgg_19 logits differ from TF-slim's by {worst:e} of the largest");
}

#[test]
fn resnet_v1_50_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("resnet_v1_50", dir.path());
    eprintln!("resnet_v1_50: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "resnet_v1_50 logits differ from TF-slim's by {worst:e} of the largest");
}

#[test]
fn resnet_v1_101_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("resnet_v1_101", dir.path());
    eprintln!("resnet_v1_101: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "resnet_v1_101 logits differ from TF-slim's by {worst:e} of the largest");
}

#[test]
fn alexnet_v2_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("alexnet_v2", dir.path());
    eprintln!("alexnet_v2: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "alexnet_v2 logits differ from TF-slim's by {worst:e} of the largest");
}

#[test]
fn resnet_v2_50_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("resnet_v2_50", dir.path());
    eprintln!("resnet_v2_50: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "resnet_v2_50 logits differ from TF-slim's by {worst:e} of the largest");
}

#[test]
fn inception_v1_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("inception_v1", dir.path());
    eprintln!("inception_v1: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "inception_v1 logits differ from TF-slim's by {worst:e} of the largest");
}

#[test]
fn inception_v3_gives_tf_slims_logits_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let worst = conformance("inception_v3", dir.path());
    eprintln!("inception_v3: worst |ferroflow - TF| = {worst:e} of the largest logit");
    assert!(worst < 1e-4, "inception_v3 logits differ from TF-slim's by {worst:e} of the largest");
}
