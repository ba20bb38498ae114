//! Image-to-image training: `encoder_decoder` learns to denoise the bundled
//! photos (`data.targets = "input"`, Gaussian noise on what it sees) to a
//! validation MSE well below the noisy input's, resumes bitwise exactly,
//! shows input | target | output in TensorBoard, and `predict --out`
//! writes its output images.

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

fn train(dir: &Path, steps: &str) -> String {
    let out = ferroflow(&[
        "train",
        "--data",
        "testdata/data/photos-mini",
        "--model",
        "encoder_decoder",
        "--steps",
        steps,
        "--batch-size",
        "16",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.001",
        "--save-every",
        "100",
        "--train-dir",
        dir.to_str().unwrap(),
        "--set",
        "data.targets=\"input\"",
        "--set",
        "data.noise_stddev=25",
        "--set",
        "train.validate_every=100",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn encoder_decoder_denoises_real_photos_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    let out = train(&whole, "200");
    let e = ferroflow(&["eval", "--train-dir", whole.to_str().unwrap(), "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    let json: Json = serde_json::from_slice(&e.stdout).unwrap();
    let r = &json["reconstruction"];
    let (mse, input_mse) = (r["mse"].as_f64().unwrap(), r["input_mse"].as_f64().unwrap());
    // Noise of stddev 25 on 0-255 pixels: the input's MSE is about 625 (less where clipped).
    assert!((500.0..700.0).contains(&input_mse), "{r}");
    assert!(mse < 0.6 * input_mse, "denoised MSE {mse} against the noisy input's {input_mse}\n{out}");
    assert!(out.contains(&format!("validation mse (0-255 pixels): {mse:.2}")), "{out}");

    // Interrupted at step 100 and resumed: the same weights (the noise is keyed by step).
    train(&split, "100");
    train(&split, "200");
    let load = |d: &Path| Checkpoint::load(&latest_checkpoint(d).unwrap().unwrap()).unwrap();
    assert_eq!(load(&split).tensors, load(&whole).tensors);

    // TensorBoard: the metrics and input | target | output pictures, three images wide.
    let events: Vec<_> = std::fs::read_dir(whole.join("validation")).unwrap().map(|e| e.unwrap().path()).collect();
    let r = ferroflow(&["records", "--json", events[0].to_str().unwrap()]);
    let records = String::from_utf8_lossy(&r.stdout);
    for tag in ["\"psnr\"", "\"input_mse\"", "\"reconstruction\""] {
        assert!(records.contains(tag), "no {tag} in the validation events");
    }
    assert!(records.contains("\"height\":32,\"width\":96"), "side by side: 3 x 32 wide: {records}");

    // predict --out: one 32x32 RGB PNG per photo, not the photo itself.
    let out_dir = dir.path().join("denoised");
    let photo = "testdata/data/photos-mini/coffee";
    let p = ferroflow(&[
        "predict",
        "--train-dir",
        whole.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
        photo,
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let lines: Vec<Json> =
        String::from_utf8(p.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), std::fs::read_dir(repo().join(photo)).unwrap().count());
    let first = lines[0]["output"].as_str().unwrap();
    let image = ferroflow_data::decode_image(&std::fs::read(first).unwrap(), &Default::default()).unwrap();
    assert_eq!((image.height, image.width, image.channels), (32, 32, 3));
    let without = ferroflow(&["predict", "--train-dir", whole.to_str().unwrap(), photo]);
    assert!(!without.status.success() && text(&without).contains("give --out DIR"), "{}", text(&without));
}
