#![allow(clippy::unwrap_used)]

//! `ferroflow bench train`: it trains, ends with the `images/s: N` line that
//! scripts read, is reproducible across processes, and rejects a bad model
//! with a usage error naming it. `ferroflow bench input`: the data issue's
//! interface on a prepared dataset.

use std::process::{Command, Output};

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `weights digest <hex>` of the summary line.
fn digest(text: &str) -> String {
    let (_, rest) = text.split_once("weights digest ").unwrap_or_else(|| panic!("no digest in:\n{text}"));
    rest.split_whitespace().next().unwrap().to_string()
}

#[test]
fn bench_train_prints_throughput_last_and_is_reproducible() {
    let args = ["bench", "train", "--model", "lenet", "--batch", "8", "--steps", "3", "--warmup", "1"];
    let out = ferroflow(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    let rate: f64 = last
        .strip_prefix("images/s: ")
        .unwrap_or_else(|| panic!("last line is not `images/s: N`: {last:?}"))
        .parse()
        .unwrap();
    assert!(rate.is_finite() && rate > 0.0, "{last}");
    let summary = text.lines().next().unwrap();
    for part in ["lenet", "28x28x1", "61706 parameters", "batch 8", "3 steps after 1 warm-up", "peak RSS"] {
        assert!(summary.contains(part), "{part:?} missing from {summary:?}");
    }

    // A second process with the same seed ends in the same weights; another seed does not.
    let again = ferroflow(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(digest(&text), digest(&stdout(&again)));
    let other = ferroflow(&[&args[..], &["--seed", "1"]].concat());
    assert!(other.status.success(), "{}", stderr(&other));
    assert_ne!(digest(&text), digest(&stdout(&other)));
}

#[test]
fn bench_train_rejects_a_bad_model_with_a_usage_error() {
    let out = ferroflow(&["bench", "train", "--model", "no_such_net", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no_such_net") && err.contains("cifar_cnn"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A model that is not a classifier cannot be trained with cross-entropy.
    let out = ferroflow(&["bench", "train", "--model", "encoder_decoder", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("classifier"), "{}", stderr(&out));

    let out = ferroflow(&["bench", "train", "--model", "lenet", "--input", "28x28"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("HEIGHTxWIDTHxCHANNELS"), "{}", stderr(&out));
}

/// `ferroflow bench input` in the form the data issue specifies (`--data DIR --split S
/// --size N --batch B --epochs E --fast-decode`) on prepared mnist5k: one epoch of the
/// validation split is exactly its 1,000 images, the last line is `images/s: N`, and a
/// split the dataset lacks is one error listing the ones it has.
#[test]
fn bench_input_times_epochs_of_a_prepared_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ds");
    let mnist = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/data/mnist5k");
    let prep = ferroflow(&["prepare", mnist, "--out", data.to_str().unwrap()]);
    assert!(prep.status.success(), "{}", stderr(&prep));
    let ds = data.to_str().unwrap();
    let args = ["bench", "input", "--data", ds, "--split", "validation", "--size", "28", "--batch", "64"];
    let out = ferroflow(&[&args[..], &["--epochs", "1", "--warmup", "1", "--fast-decode"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let summary = text.lines().next().unwrap();
    // ceil(1000 / 64) = 16 batches of a repeating stream: 1,024 images.
    for part in ["1024 images", "batch 64", "28x28", "fast_jpeg true"] {
        assert!(summary.contains(part), "{part:?} missing from {summary:?}");
    }
    let rate: f64 = text.lines().last().unwrap().strip_prefix("images/s: ").unwrap().parse().unwrap();
    assert!(rate.is_finite() && rate > 0.0);

    // The positional form and HxW sizes work too; --batches counts batches.
    let out = ferroflow(&["bench", "input", ds, "--size", "28x28", "--batch", "10", "--batches", "3", "--warmup", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).lines().next().unwrap().contains("30 images"), "{}", stdout(&out));

    let bad = ferroflow(&["bench", "input", "--data", ds, "--split", "test"]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(err.contains("\"test\"") && err.contains("train, validation"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bench_allreduce_in_one_process_lists_the_sizes_and_says_how_to_run_it() {
    let out = ferroflow(&["bench", "allreduce", "--model", "lenet", "--parameters", "2.5K", "--steps", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("over 1 rank(s) (one process)"), "{text}");
    let lenet = text.lines().find(|l| l.starts_with("lenet ")).unwrap();
    assert_eq!(lenet.split_whitespace().nth(1), Some("61706"), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().nth(1) == Some("2500")), "{text}");
    assert!(text.contains("run it as `mpirun -np N ferroflow bench allreduce`"), "{text}");
    // A bad count is a usage error naming it.
    let out = ferroflow(&["bench", "allreduce", "--parameters", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"lots\": expected a positive count"), "{}", stderr(&out));
}

#[test]
fn ferroflow_kernels_generic_trains_through_candle_ops_and_a_bad_value_is_a_usage_error() {
    let args = ["bench", "train", "--model", "cifar_cnn", "--batch", "4", "--steps", "2", "--warmup", "0"];
    let run = |kernels: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferroflow")).args(args).env("FERROFLOW_KERNELS", kernels).output().unwrap()
    };
    let (fast, generic) = (run("fast"), run("generic"));
    assert!(fast.status.success() && generic.status.success(), "{}{}", stderr(&fast), stderr(&generic));
    // Same model and data, other kernels: other rounding, so (almost surely) another digest.
    assert_ne!(digest(&stdout(&fast)), digest(&stdout(&generic)));
    let bad = run("cuda");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("FERROFLOW_KERNELS: \"cuda\" is not a kernel choice"), "{}", stderr(&bad));
}
