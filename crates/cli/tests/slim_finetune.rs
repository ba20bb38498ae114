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
