//! Early stopping and the best checkpoint on the bundled MNIST digits: the
//! run stops at the step the patience rule gives on its own validation
//! losses (recomputed here by hand), a run interrupted before that stops
//! at the same step with the same weights, and `eval --best` / `predict
//! --best` use the checkpoint of the best validation.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::repo;
use ferroflow_train::checkpoint::{Checkpoint, latest_checkpoint};
use serde_json::Value as Json;

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const PATIENCE: usize = 2;
/// Large enough to change where the run stops (without it, this run stops later).
const MIN_DELTA: f64 = 0.2;

fn train(dir: &Path, steps: u32) -> String {
    let steps = steps.to_string();
    let early =
        format!("train.early_stopping={{metric=\"validation/loss\", patience={PATIENCE}, min_delta={MIN_DELTA}}}");
    let out = ferroflow(&[
        "train",
        "--data",
        "testdata/data/mnist5k",
        "--model",
        "lenet",
        "--batch-size",
        "32",
        "--steps",
        &steps,
        "--train-dir",
        dir.to_str().unwrap(),
        "--save-every",
        "1000",
        "--set",
        "train.validate_every=20",
        "--set",
        &early,
        "--set",
        "checkpoint.keep_best=true",
        "--set",
        "summary.histograms_every=0",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// `(step, loss)` of every validation, from the run's TensorBoard events
/// (float32, so decisions can be checked to 1e-6 rather than to the 4
/// printed decimals).
fn validations(run: &Path) -> Vec<(i64, f64)> {
    let mut seen = Vec::new();
    for file in std::fs::read_dir(run.join("validation")).unwrap() {
        let out = ferroflow(&["records", "--json", file.unwrap().path().to_str().unwrap()]);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let event: Json = serde_json::from_str(line).unwrap();
            for v in event["summary"].as_array().into_iter().flatten() {
                if v["tag"] == "loss" {
                    seen.push((event["step"].as_i64().unwrap(), v["value"].as_f64().unwrap()));
                }
            }
        }
    }
    seen.sort_by_key(|s| s.0);
    seen
}

#[test]
fn early_stopping_stops_where_the_patience_rule_says_and_resumes_to_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    let out = train(&whole, 2000);
    let seen = validations(&whole);

    // The rule by hand (Keras's EarlyStopping in validations): an improvement
    // is a loss below the best by more than min_delta; stop after PATIENCE
    // validations in a row without one.
    let (mut best, mut best_step, mut wait, mut expected) = (f64::INFINITY, 0, 0, None);
    for &(step, loss) in &seen {
        assert!((loss + MIN_DELTA - best).abs() > 1e-6, "too close to call at step {step}: {loss} vs {best}");
        if loss + MIN_DELTA < best {
            (best, best_step, wait) = (loss, step, 0);
        } else {
            wait += 1;
            if wait >= PATIENCE {
                expected = Some(step);
                break;
            }
        }
    }
    let stop = expected.expect("the rule never stops within 2000 steps");
    assert!(stop < 2000, "{out}");
    assert_eq!(seen.last().unwrap().0, stop, "no validation after the stop: {seen:?}");
    assert!(out.contains(&format!("stopped early at step {stop}")), "{out}");
    assert!(out.contains(&format!("at step {best_step}")), "best at step {best_step}: {out}");
    let load = |d: &Path| Checkpoint::load(&latest_checkpoint(d).unwrap().unwrap()).unwrap();
    assert_eq!(load(&whole).meta.global_step, stop);

    // Interrupted one validation before the stop, then resumed: the same stop and weights.
    let cut = u32::try_from(stop - 20).unwrap();
    train(&split, cut);
    let resumed = train(&split, 2000);
    assert!(resumed.contains(&format!("stopped early at step {stop}")), "{resumed}");
    assert_eq!(load(&split).tensors, load(&whole).tensors);
    // Run again, a stopped run does not train on.
    let again = train(&whole, 2000);
    assert!(again.contains("nothing to train"), "{again}");
    assert_eq!(load(&whole).meta.global_step, stop);

    // The best checkpoint: its own directory, the best step, what eval --best restores.
    let best_ck = latest_checkpoint(&whole.join("best")).unwrap().unwrap();
    assert!(best_ck.ends_with(format!("model.ckpt-{best_step}.safetensors")), "{best_ck:?}");
    let e = ferroflow(&["eval", "--train-dir", whole.to_str().unwrap(), "--best", "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    let json: Json = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(json["step"].as_i64(), Some(best_step));
    assert!((json["loss"].as_f64().unwrap() - best).abs() < 1e-6, "{json}");
    let p = ferroflow(&["predict", "--train-dir", whole.to_str().unwrap(), "--best", "testdata/data/mnist5k/val/7"]);
    assert!(p.status.success(), "{}", text(&p));
    // max_to_keep of the run does not touch it; the best keeps one.
    assert_eq!(
        std::fs::read_dir(whole.join("best"))
            .unwrap()
            .filter(|e| { e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".safetensors") })
            .count(),
        1
    );
}

#[test]
fn early_stopping_settings_that_cannot_work_are_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let td = dir.path().join("never");
    for (extra, want) in [
        (vec!["--set", "train.early_stopping={patience=3}"], "needs validations during training"),
        (vec!["--set", "checkpoint.keep_best=true"], "needs validations during training"),
        (
            vec!["--set", "train.validate_every=5", "--set", "train.early_stopping={metric=\"validation/r2\"}"],
            "validation/r2 is not reported for a classifier",
        ),
        (
            vec!["--set", "train.validate_every=5", "--set", "train.early_stopping={metric=\"loss\"}"],
            "expected one of validation/loss",
        ),
    ] {
        let mut args =
            vec!["train", "--data", "testdata/data/mnist5k", "--steps", "10", "--train-dir", td.to_str().unwrap()];
        args.extend(&extra);
        let out = ferroflow(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{extra:?}: {}", text(&out));
    }
    let out = ferroflow(&[
        "train",
        "--data",
        "testdata/data/photos-mini",
        "--steps",
        "10",
        "--train-dir",
        td.to_str().unwrap(),
        "--set",
        "data.val_fraction=0",
        "--set",
        "train.validate_every=5",
        "--set",
        "checkpoint.keep_best=true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("needs a validation split"), "{}", text(&out));
    let out = ferroflow(&["eval", "--train-dir", td.to_str().unwrap(), "--best"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("holds no best checkpoint"), "{}", text(&out));
}
