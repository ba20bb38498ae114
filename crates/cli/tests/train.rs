//! `ferroflow train` on the bundled MNIST digits: it learns, it logs what
//! TensorBoard reads, and bad settings stop it before any work.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn python() -> PathBuf {
    std::env::var_os("FERROFLOW_PYTHON").map_or_else(|| repo().join(".venv/bin/python"), PathBuf::from)
}

fn tensorboard_sees(run: &Path) -> Json {
    let out = Command::new(python()).arg(repo().join("tests/python/tensorboard_read.py")).arg(run).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn lenet_learns_mnist5k_and_tensorboard_reads_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let train_dir = dir.path().join("run");
    let out = ferroflow(&[
        "train",
        "--config",
        "examples/mnist.toml",
        "--train-dir",
        train_dir.to_str().unwrap(),
        "--steps",
        "150",
        "--set",
        "train.validate_every=75",
        "--set",
        "summary.histograms_every=50",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let accuracy: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("validation accuracy: "))
        .unwrap_or_else(|| panic!("no accuracy in:\n{text}"))
        .parse()
        .unwrap();
    // 150 steps of batch 64 (2.4 epochs) on 4,000 real digits.
    assert!(accuracy > 0.85, "validation accuracy {accuracy}");
    assert!(text.contains("confusion matrix"));
    let config = std::fs::read_to_string(train_dir.join("config.toml")).unwrap();
    assert!(config.contains("steps = 150") && config.contains("kind = \"momentum\""), "{config}");

    let train = tensorboard_sees(&train_dir.join("train"));
    let scalars = train["scalars"].as_object().unwrap();
    for tag in ["loss", "accuracy", "learning_rate", "images_per_sec"] {
        assert!(scalars.contains_key(tag), "{tag} missing: {:?}", scalars.keys());
    }
    let loss = scalars["loss"].as_array().unwrap();
    assert_eq!(loss.len(), 15, "every 10 steps");
    assert!(loss.last().unwrap()[1].as_f64().unwrap() < loss[0][1].as_f64().unwrap(), "loss falls");
    // The logged rate is the schedule's (cosine_decay(0.05, 620)) for the step taken,
    // i.e. of the global step before it.
    for p in scalars["learning_rate"].as_array().unwrap() {
        let step = p[0].as_f64().unwrap() - 1.0;
        let want = 0.05 * 0.5 * (1.0 + (std::f64::consts::PI * step / 620.0).cos());
        assert!((p[1].as_f64().unwrap() - want).abs() < 1e-6, "step {step}: {p:?} vs {want}");
    }
    let hist = train["histograms"].as_object().unwrap();
    assert!(hist.contains_key("conv1/weights") && hist.contains_key("conv1/weights/gradient"), "{:?}", hist.keys());
    assert_eq!(train["images"]["input"]["count"], 4);
    assert_eq!(train["images"]["input"]["width"], 28);
    assert!(train["text"]["config"].as_str().unwrap().contains("[optimizer]"));
    let nodes: Vec<&str> = train["graph_nodes"].as_array().unwrap().iter().map(|n| n[0].as_str().unwrap()).collect();
    assert!(nodes.contains(&"conv1/Conv2D") && nodes.contains(&"fc3/MatMul"), "{nodes:?}");

    let val = tensorboard_sees(&train_dir.join("validation"));
    let steps: Vec<i64> =
        val["scalars"]["accuracy"].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert_eq!(steps, [75, 150]);
    let last = val["scalars"]["accuracy"][1][1].as_f64().unwrap();
    assert!((last - accuracy).abs() < 1e-6);
    assert!(val["scalars"].as_object().unwrap().contains_key("top5"));
}

#[test]
fn same_seed_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = ferroflow(&[
            "train",
            "--data",
            "testdata/data/mnist5k",
            "--model",
            "lenet",
            "--steps",
            "20",
            "--batch-size",
            "32",
            "--train-dir",
            dir.path().join(name).to_str().unwrap(),
            "--set",
            "data.augment.flip_left_right=true",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .filter(|l| l.starts_with("validation") || l.contains("final loss"))
            .map(|l| {
                // Drop the timing part of "trained N steps in Xs (Y images/s); final loss Z".
                l.rsplit(';').next().unwrap().to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run("a"), run("b"));
}

#[test]
fn a_diverging_run_stops_at_the_nan_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferroflow(&[
        "train",
        "--data",
        "testdata/data/mnist5k",
        "--steps",
        "50",
        "--learning-rate",
        "1e6",
        "--optimizer",
        "sgd",
        "--set",
        "data.normalize=\"none\"",
        "--train-dir",
        dir.path().join("nan").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("step ") && err.contains("the loss is") && err.contains("training stopped"), "{err}");
}

#[test]
fn bad_settings_fail_before_any_work_with_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let td = dir.path().join("never");
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "train.bach_size=3"], "did you mean `batch_size`"),
        (&["--set", "optimizer.kind=lion"], "unknown variant `lion`"),
        (&["--batch-size", "0"], "train.batch_size: must be at least 1"),
        (&["--learning-rate=-0.1"], "learning_rate"),
        (&["--set", "trian.steps=3"], "did you mean `train`"),
        (&["--device", "cuda:0"], "built without CUDA"),
        (&["--model", "resnet21"], "neither a zoo model"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["train", "--data", "testdata/data/mnist5k", "--train-dir", td.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = ferroflow(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: a usage error");
        let err = stderr(&out);
        assert!(err.contains(want), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: one message, got {err}");
    }
    let out = ferroflow(&["train", "--data", "testdata/data/bad-images", "--train-dir", td.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no class sub-folders"), "{}", stderr(&out));
    assert!(!td.exists(), "nothing written before the settings were checked");
}

fn train_ok(args: &[&str]) -> String {
    let out = ferroflow(args);
    assert!(out.status.success(), "{}", stderr(&out));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out))
}

fn load_latest(dir: &Path) -> ferroflow_train::checkpoint::Checkpoint {
    use ferroflow_train::checkpoint::{Checkpoint, latest_checkpoint};
    Checkpoint::load(&latest_checkpoint(dir).unwrap().unwrap()).unwrap()
}

#[test]
fn gradient_accumulation_equals_the_whole_batch_and_class_weights_steer_the_loss() {
    use ferroflow_train::checkpoint::Values;
    let dir = tempfile::tempdir().unwrap();
    // LeNet has no batch norm or dropout, so 4 micro-batches of 16 give the gradient of
    // the batch of 64 (summed in another order: equal to float rounding).
    let mut runs = Vec::new();
    for k in ["1", "4"] {
        let td = dir.path().join(format!("acc{k}"));
        let setting = format!("train.accumulate_steps={k}");
        let args =
            ["train", "--data", "testdata/data/mnist5k", "--model", "lenet", "--steps", "20", "--batch-size", "64"];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["--train-dir", td.to_str().unwrap(), "--set", &setting]);
        train_ok(&args);
        runs.push(load_latest(&td));
    }
    let mut worst = 0f64;
    for (name, a) in &runs[0].tensors {
        let (Values::F32(a), Values::F32(b)) = (&a.values, &runs[1].tensors[name].values) else { continue };
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        worst = worst.max(f64::from(d / scale));
    }
    assert!(worst < 1e-5, "accumulated and whole-batch weights differ by {worst} (relative)");
    assert!(worst > 0.0 || runs[0].tensors == runs[1].tensors);
    assert_eq!(runs[0].meta.cursor, runs[1].meta.cursor, "the same examples per step");

    // Only class 0 weighs: the model learns to answer 0.
    let td = dir.path().join("weighted");
    let out = train_ok(&[
        "train",
        "--data",
        "testdata/data/mnist5k",
        "--model",
        "lenet",
        "--steps",
        "60",
        "--batch-size",
        "32",
        "--train-dir",
        td.to_str().unwrap(),
        "--set",
        "train.class_weights=[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]",
    ]);
    assert!(out.contains("class weights: 0 1.000, 1 0.000"), "{out}");
    let e = ferroflow(&["eval", "--train-dir", td.to_str().unwrap(), "--json"]);
    let json: Json = serde_json::from_slice(&e.stdout).unwrap();
    let per_class: Vec<f64> =
        json["per_class_accuracy"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(per_class[0] > 0.95 && per_class[1..].iter().all(|&a| a < 0.1), "{per_class:?}");

    // "balanced": n / (classes * count) from the training split's own counts.
    let td = dir.path().join("balanced");
    let out = train_ok(&[
        "train",
        "--data",
        "testdata/data/mnist5k",
        "--model",
        "lenet",
        "--steps",
        "2",
        "--train-dir",
        td.to_str().unwrap(),
        "--set",
        "train.class_weights=\"balanced\"",
    ]);
    let counts: Vec<usize> = (0..10)
        .map(|c| std::fs::read_dir(repo().join(format!("testdata/data/mnist5k/train/{c}"))).unwrap().count())
        .collect();
    let n: usize = counts.iter().sum();
    let want: Vec<String> =
        counts.iter().enumerate().map(|(c, &k)| format!("{c} {:.3}", n as f64 / (10.0 * k as f64))).collect();
    assert!(out.contains(&format!("class weights: {}", want.join(", "))), "{out}");

    for (setting, want) in [
        ("train.accumulate_steps=3", "must be at least 1 and divide train.batch_size (64)"),
        ("train.class_weights=[1, 2]", "2 weights for 10 classes"),
        ("train.class_weights=\"even\"", "expected \"balanced\" or a list of weights, one per class, got \"even\""),
    ] {
        let out = ferroflow(&[
            "train",
            "--data",
            "testdata/data/mnist5k",
            "--train-dir",
            td.to_str().unwrap(),
            "--set",
            setting,
        ]);
        assert_eq!(out.status.code(), Some(2), "{setting}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{setting}: {}", stderr(&out));
    }
}
