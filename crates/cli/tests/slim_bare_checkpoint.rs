//! `predict` and `eval` on a TF-slim checkpoint that has no ferroflow metadata
//! (issue 16): `--model inception_v1 --labels-offset 1` reads a Saver
//! checkpoint written by TF-slim itself (tests/python/slim_reference.py: 1001
//! classes, output 0 the background), with TF-slim's inception eval
//! preprocessing by default. The logits must be TensorFlow's, both for photos
//! (ferroflow's preprocessing against TF-slim's) and for a `.npy` batch of TF's
//! own preprocessed inputs; `eval`'s accuracy must agree with `predict`'s
//! labels.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ferroflow_ok, python, repo};
use serde_json::Value;

fn tf_logits(io: &safetensors::SafeTensors<'_>, key: &str) -> Vec<Vec<f32>> {
    let view = io.tensor(key).unwrap();
    let classes = view.shape()[1];
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    values.chunks(classes).map(<[f32]>::to_vec).collect()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The worst |ferroflow - TF| of a row, relative to TF's largest logit.
fn worst(got: &Value, want: &[f32]) -> f32 {
    let got: Vec<f32> = got["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn predict_and_eval_run_a_bare_tf_slim_checkpoint_with_tfs_logits() {
    let dir = tempfile::tempdir().unwrap();
    let photos: Vec<PathBuf> = ["chelsea/00001.jpg", "coffee/00002.jpg", "rocket/00007.jpg", "chelsea/01097.png"]
        .iter()
        .map(|p| repo().join("testdata/data/photos-mini").join(p))
        .collect();
    let out = Command::new(python())
        .arg(repo().join("tests/python/slim_reference.py"))
        .arg("inception_v1")
        .arg(dir.path())
        .args(&photos)
        .output()
        .unwrap();
    assert!(out.status.success(), "TF-slim reference failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(dir.path().join("io.safetensors")).unwrap();
    let io = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ckpt = s(&dir.path().join("model.ckpt"));
    let bare = ["--checkpoint", &ckpt, "--model", "inception_v1", "--labels-offset", "1"].map(String::from);

    // TF's own preprocessed inputs as .npy, and the photos through ferroflow's TF-slim preprocessing.
    let mut args: Vec<String> = vec!["predict".into(), "--json".into(), "--logits".into()];
    args.extend(bare.iter().cloned());
    args.push(s(&dir.path().join("input.npy")));
    args.extend(photos.iter().map(|p| s(p)));
    let lines = json_lines(&ferroflow_ok(&args));
    assert_eq!(lines.len(), 2 * photos.len(), "one line per .npy example and per photo");
    for (i, (npy, photo)) in lines[..photos.len()].iter().zip(&lines[photos.len()..]).enumerate() {
        assert!(npy["path"].as_str().unwrap().ends_with(&format!("input.npy[{i}]")), "{npy}");
        let w = worst(npy, &tf_logits(&io, "logits")[i]);
        assert!(w < 1e-4, "example {i} of the .npy: logits differ from TF's by {w:e} of the largest");
        let w = worst(photo, &tf_logits(&io, "slim_logits")[i]);
        assert!(w < 1e-4, "{}: logits differ from TF-slim's by {w:e} of the largest", photos[i].display());
        // Labels are the data's: output index - 1; output 0 is the background.
        let want = &tf_logits(&io, "slim_logits")[i];
        let argmax = (0..want.len()).fold(0, |b, j| if want[j] > want[b] { j } else { b });
        let top = &photo["top"][0];
        assert_eq!(top["label"].as_i64().unwrap(), argmax as i64 - 1, "{photo}");
        let name = top["class"].as_str().unwrap();
        assert_eq!(name, if argmax == 0 { "background".to_string() } else { (argmax - 1).to_string() });
    }

    // predict's labels over the whole folder against eval's accuracy on its two splits.
    let folder = repo().join("testdata/data/photos-mini");
    let mut args: Vec<String> = vec!["predict".into(), "--json".into(), "--top-k".into(), "1".into()];
    args.extend(bare.iter().cloned());
    args.push(s(&folder));
    let lines = json_lines(&ferroflow_ok(&args));
    assert_eq!(lines.len(), 60);
    let classes = ["chelsea", "coffee", "rocket"];
    let correct = lines
        .iter()
        .filter(|l| {
            let path = l["path"].as_str().unwrap();
            let label = classes.iter().position(|c| path.contains(&format!("/{c}/"))).unwrap() as i64;
            l["top"][0]["label"].as_i64().unwrap() == label
        })
        .count();
    let mut eval_correct = 0.0;
    let mut eval_count = 0;
    for split in ["train", "validation"] {
        let mut args: Vec<String> = vec!["eval".into(), "--json".into(), "--data".into(), s(&folder)];
        args.extend(["--split".into(), split.into()]);
        args.extend(bare.iter().cloned());
        let r = json_lines(&ferroflow_ok(&args)).pop().unwrap();
        let names = r["classes"].as_array().unwrap();
        assert_eq!((names.len(), names[0].as_str().unwrap()), (1001, "background"), "{split}");
        let count = r["count"].as_u64().unwrap() as usize;
        eval_correct += r["accuracy"].as_f64().unwrap() * count as f64;
        eval_count += count;
    }
    assert_eq!(eval_count, 60);
    assert_eq!(eval_correct.round() as usize, correct, "eval's correct answers against predict's");
}

#[test]
fn a_bare_checkpoint_of_another_model_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/python/slim_reference.py"))
        .arg("inception_v1")
        .arg(dir.path())
        .arg(repo().join("testdata/data/photos-mini/chelsea/00001.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ckpt = s(&dir.path().join("model.ckpt"));
    let photo = s(&repo().join("testdata/data/photos-mini/chelsea/00001.jpg"));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["predict", "--checkpoint", &ckpt, "--model", "resnet_v1_50", &photo]);
    assert!(e.contains("holds no logits variable of resnet_v1_50") && e.contains("model.ckpt"), "{e}");
    let e = run(&["predict", "--checkpoint", &ckpt, "--model", "inception_v1", "--preprocessing", "vg", &photo]);
    assert!(e.contains("--preprocessing") && e.contains("expected vgg, inception or none"), "{e}");
    let e = run(&["predict", "--checkpoint", &ckpt, "--model", "inception_v1", &s(&dir.path().join("io.safetensors"))]);
    assert!(e.contains("io.safetensors"), "{e}");
    // A .npy of the wrong size names the file, its shape and the model's.
    let npy = dir.path().join("small.npy");
    let header = format!("{:<117}\n", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2, 3), }");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 48]);
    std::fs::write(&npy, bytes).unwrap();
    let e = run(&["predict", "--checkpoint", &ckpt, "--model", "inception_v1", &s(&npy)]);
    assert!(e.contains("small.npy") && e.contains("[1, 2, 2, 3]") && e.contains("[N, 224, 224, 3]"), "{e}");
}
