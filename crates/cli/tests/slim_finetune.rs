//! Fine-tuning a TF-slim ImageNet net from a TF-slim checkpoint (issue 16):
//! `ferroflow train --model resnet_v1_50 --checkpoint-path model.ckpt
//! --exclude-scopes resnet_v1_50/logits --trainable-scopes resnet_v1_50/logits`
//! on the bundled photos (3 classes, where the checkpoint has 1000). The
//! checkpoint comes from TF-slim itself (tests/python/slim_reference.py); the
//! frozen variables must end bitwise equal to TF's, the new 3-class logits
//! layer must have trained.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{ferroflow_ok, python, repo};
use ferroflow_train::checkpoint::{Checkpoint, Values, load_tensor_bundle};

#[test]
fn fine_tuning_resnet_v1_50_from_a_tf_slim_checkpoint_trains_only_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("tf");
    std::fs::create_dir_all(&reference).unwrap();
    let photos = repo().join("testdata/data/photos-mini/coffee/00002.jpg");
    let out = Command::new(python())
        .arg(repo().join("tests/python/slim_reference.py"))
        .args(["resnet_v1_50".as_ref(), reference.as_os_str(), photos.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "TF-slim reference failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.path().join("run");
    let args: Vec<String> = [
        "train",
        "--data",
        "testdata/data/photos-mini",
        "--model",
        "resnet_v1_50",
        "--train-dir",
        run.to_str().unwrap(),
        "--checkpoint-path",
        reference.join("model.ckpt").to_str().unwrap(),
        "--exclude-scopes",
        "resnet_v1_50/logits",
        "--trainable-scopes",
        "resnet_v1_50/logits",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--optimizer",
        "momentum",
        "--learning-rate",
        "0.01",
        "--set",
        "summary.histograms_every=0",
        "--set",
        "summary.images_every=0",
        "--set",
        "data.preprocessing=\"vgg\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = ferroflow_ok(&args);
    assert!(log.contains("trained 3 steps"), "{log}");

    let tf = load_tensor_bundle(&reference.join("model.ckpt")).unwrap();
    let ours = Checkpoint::load(&run.join("model.ckpt-3.safetensors")).unwrap();
    let f32s = |v: &Values| match v {
        Values::F32(v) => v.clone(),
        other => panic!("not f32: {}", other.dtype_name()),
    };
    let mut frozen = 0;
    for (name, t) in &tf.tensors {
        let trainable_leaf = ["weights", "gamma", "beta"].iter().any(|l| name.ends_with(&format!("/{l}")));
        if !trainable_leaf || name.starts_with("resnet_v1_50/logits") {
            continue;
        }
        let mine = ours.get(name).unwrap_or_else(|| panic!("{name} missing from ferroflow's checkpoint"));
        assert_eq!(mine.shape, t.shape, "{name}");
        assert!(f32s(&mine.values) == f32s(&t.values), "{name}: a frozen variable changed");
        assert!(ours.get(&format!("{name}/Momentum")).is_none(), "{name}: a frozen variable has an optimizer slot");
        frozen += 1;
    }
    assert_eq!(frozen, 53 + 53 * 2, "conv weights and BN gamma/beta of resnet_v1_50 below the logits");
    // The new logits layer: 3 classes, trained (its momentum moved).
    let logits = ours.get("resnet_v1_50/logits/weights").unwrap();
    assert_eq!(logits.shape, [3, 2048, 1, 1]);
    let slot = f32s(&ours.get("resnet_v1_50/logits/weights/Momentum").unwrap().values);
    assert!(slot.iter().any(|&v| v != 0.0), "the logits layer did not train");
}

/// `--labels-offset 1` keeps a 1001-class checkpoint's logits layer, background
/// output included: the 3 photo classes train as outputs 1-3, and `eval` of
/// the run names output 0 `background`.
#[test]
fn fine_tuning_with_a_labels_offset_keeps_the_background_output() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("tf");
    std::fs::create_dir_all(&reference).unwrap();
    let photo = repo().join("testdata/data/photos-mini/coffee/00002.jpg");
    let out = Command::new(python())
        .arg(repo().join("tests/python/slim_reference.py"))
        .args(["inception_v1".as_ref(), reference.as_os_str(), photo.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "TF-slim reference failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.path().join("run");
    let mut args: Vec<String> = [
        "train",
        "--data",
        "testdata/data/photos-mini",
        "--model",
        "inception_v1",
        "--checkpoint-path",
        reference.join("model.ckpt").to_str().unwrap(),
        "--trainable-scopes",
        "InceptionV1/Logits",
        "--labels-offset",
        "1",
        "--set",
        "model.num_classes=1001",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--set",
        "summary.histograms_every=0",
        "--set",
        "summary.images_every=0",
        "--set",
        "data.preprocessing=\"inception\"",
        "--train-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(run.to_str().unwrap().to_string());
    let log = ferroflow_ok(&args);
    assert!(log.contains("trained 2 steps") && log.contains("1001 classes"), "{log}");
    let tf = load_tensor_bundle(&reference.join("model.ckpt")).unwrap();
    let ours = Checkpoint::load(&run.join("model.ckpt-2.safetensors")).unwrap();
    let name = "InceptionV1/Logits/Conv2d_0c_1x1/weights";
    assert_eq!(ours.get(name).unwrap().shape, tf.tensors[name].shape, "the 1001-class logits are kept");
    assert!(ours.get(name).unwrap().values != tf.tensors[name].values, "the logits layer trained");
    let out = ferroflow_ok(&["eval".into(), "--json".into(), "--train-dir".into(), run.to_str().unwrap().into()]);
    let report: serde_json::Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let names = report["classes"].as_array().unwrap();
    assert_eq!(names.len(), 1001);
    assert_eq!(names[..4], ["background", "chelsea", "coffee", "rocket"].map(serde_json::Value::from));

    // Too few outputs for the classes after the offset is one clear error.
    args.extend(["--set".into(), "model.num_classes=3".into()]);
    let out = Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(&args).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("model.num_classes") && e.contains("labels_offset = 1"), "{e}");
}
