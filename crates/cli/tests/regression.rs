//! Regression end to end on real images: a dataset of the bundled MNIST
//! digits with two targets computed from each image (its brightness, and
//! its top half's minus its bottom half's), prepared with `--labels-csv`,
//! trains to R² above 0.9, resumes bitwise exactly, and `eval`, `predict`,
//! TensorBoard and `inspect` report in the targets' units.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{mnist_regression_dataset, repo};
use ferroflow_train::checkpoint::{Checkpoint, latest_checkpoint};
use serde_json::Value as Json;

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn train(data: &Path, dir: &Path, steps: u32, extra: &[&str]) -> String {
    let steps = steps.to_string();
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "lenet",
        "--train-dir",
        dir.to_str().unwrap(),
        "--steps",
        &steps,
        "--batch-size",
        "32",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.001",
        "--save-every",
        "100",
    ];
    args.extend(extra);
    let out = ferroflow(&args);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn r2(output: &str) -> f64 {
    output.lines().find_map(|l| l.strip_prefix("validation r2: ")).unwrap().parse().unwrap()
}

#[test]
fn regression_on_real_images_reaches_r2_above_0_9_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist_regression_dataset(dir.path());
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    let out = train(&data, &whole, 300, &[]);
    assert!(out.contains("2 regression target(s), Mse loss") || out.contains("target_1"), "{out}");
    let score = r2(&out);
    assert!(score > 0.9, "validation R² {score}\n{out}");

    // Interrupted at step 100 and resumed: bitwise the uninterrupted run.
    train(&data, &split, 100, &[]);
    let resumed = train(&data, &split, 300, &[]);
    assert!(resumed.contains("resuming from"), "{resumed}");
    let load = |d: &Path| Checkpoint::load(&latest_checkpoint(d).unwrap().unwrap()).unwrap();
    let (a, b) = (load(&whole), load(&split));
    assert_eq!(a.tensors, b.tensors, "a resumed regression run must end identical");
    assert_eq!(r2(&resumed), score);
    // The target statistics are in the checkpoint, in the targets' units.
    let stats = a.meta.targets.clone().unwrap();
    assert_eq!(stats.mean.len(), 2);
    assert!((20.0..50.0).contains(&stats.mean[0]) && stats.std[0] > 1.0, "{stats:?}");

    // eval reproduces training's final validation, in JSON too.
    let e = ferroflow(&["eval", "--train-dir", whole.to_str().unwrap(), "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    let json: Json = serde_json::from_slice(&e.stdout).unwrap();
    let reg = &json["regression"];
    assert_eq!(format!("{:.4}", reg["r2"].as_f64().unwrap()), format!("{score:.4}"));
    assert_eq!(reg["targets"].as_array().unwrap().len(), 2);
    assert!(reg["targets"][0]["rmse"].as_f64().unwrap() < 5.0, "brightness RMSE in grey levels: {reg}");

    // predict prints the values in the targets' units, near the true ones.
    let csv = std::fs::read_to_string(dir.path().join("targets.csv")).unwrap();
    let image = "testdata/data/mnist5k/val/3/01502.png";
    let truth: Vec<f64> = csv
        .lines()
        .find_map(|l| l.strip_prefix("val/3/01502.png,"))
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let p = ferroflow(&["predict", "--train-dir", whole.to_str().unwrap(), "--json", image]);
    assert!(p.status.success(), "{}", text(&p));
    let p: Json = serde_json::from_slice(&p.stdout).unwrap();
    let values: Vec<f64> = p["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((values[0] - truth[0]).abs() < 6.0, "predicted brightness {values:?}, true {truth:?}");

    // TensorBoard gets the regression scalars.
    let events: Vec<_> = std::fs::read_dir(whole.join("validation")).unwrap().map(|e| e.unwrap().path()).collect();
    let r = ferroflow(&["records", "--json", events[0].to_str().unwrap()]);
    let tags = String::from_utf8_lossy(&r.stdout);
    for tag in ["\"mse\"", "\"mae\"", "\"rmse\"", "\"r2\"", "\"r2/target_1\""] {
        assert!(tags.contains(tag), "no {tag} scalar in the validation events");
    }
}

#[test]
fn regression_settings_that_cannot_work_are_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist_regression_dataset(dir.path());
    let td = dir.path().join("never");
    for (extra, want) in [
        (&["--set", "train.loss=\"cross_entropy\""][..], "cross_entropy needs class labels"),
        (&["--set", "model.num_classes=10"][..], "2 regression target(s) per example"),
        (&["--set", "train.huber_delta=0"][..], "train.huber_delta: must be > 0"),
    ] {
        let mut args = vec!["train", "--data", data.to_str().unwrap(), "--train-dir", td.to_str().unwrap()];
        args.extend(extra);
        let out = ferroflow(&args);
        assert!(!out.status.success());
        assert!(text(&out).contains(want), "{extra:?}: {}", text(&out));
    }
    let out = ferroflow(&[
        "train",
        "--data",
        "testdata/data/mnist5k",
        "--train-dir",
        td.to_str().unwrap(),
        "--set",
        "train.loss=\"mse\"",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("regression loss, but the data has class labels"), "{}", text(&out));
}
