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

/// `root/inputs/<class>/<photo>` and `root/targets/<class>/<photo>`: the bundled
/// photos and their grey versions (RGB, PNG bytes under the photo's name).
fn colour_to_grey_folder(root: &Path) {
    let src = repo().join("testdata/data/photos-mini");
    for class in std::fs::read_dir(&src).unwrap() {
        let class = class.unwrap().path();
        let name = class.file_name().unwrap();
        for d in ["inputs", "targets"] {
            std::fs::create_dir_all(root.join(d).join(name)).unwrap();
        }
        for photo in std::fs::read_dir(&class).unwrap() {
            let photo = photo.unwrap().path();
            let file = photo.file_name().unwrap();
            std::fs::copy(&photo, root.join("inputs").join(name).join(file)).unwrap();
            let options = ferroflow_data::DecodeOptions { channels: Some(3), ..Default::default() };
            let image = ferroflow_data::decode_image(&std::fs::read(&photo).unwrap(), &options).unwrap();
            let grey: Vec<u8> = image
                .data
                .chunks_exact(3)
                .flat_map(|p| {
                    let y = (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])).round() as u8;
                    [y, y, y]
                })
                .collect();
            let png =
                tfrecord::Image { height: image.height as u32, width: image.width as u32, channels: 3, pixels: &grey }
                    .to_png("test")
                    .unwrap();
            std::fs::write(root.join("targets").join(name).join(file), png).unwrap();
        }
    }
}

/// Trains encoder_decoder 200 steps on paired `data` into `run`; returns the
/// output and `eval`'s validation MSE and the input's.
fn train_paired(data: &Path, run: &Path, extra: &[&str]) -> (String, f64, f64) {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "encoder_decoder",
        "--steps",
        "200",
        "--batch-size",
        "16",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.001",
        "--train-dir",
        run.to_str().unwrap(),
        "--set",
        "data.targets=\"paired\"",
    ];
    args.extend(extra);
    let out = ferroflow(&args);
    assert!(out.status.success(), "{}", text(&out));
    let e = ferroflow(&["eval", "--train-dir", run.to_str().unwrap(), "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    let json: Json = serde_json::from_slice(&e.stdout).unwrap();
    let r = &json["reconstruction"];
    (text(&out), r["mse"].as_f64().unwrap(), r["input_mse"].as_f64().unwrap())
}

#[test]
fn paired_inputs_and_targets_train_an_image_to_image_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colour-to-grey");
    colour_to_grey_folder(&data);
    let (out, mse, input_mse) =
        train_paired(&data, &dir.path().join("run"), &["--set", "data.augment.flip_left_right=true"]);
    assert!(out.contains("image-to-image folder read from disk per batch"), "{out}");
    assert!(mse < 0.3 * input_mse, "colour-to-grey MSE {mse}, the colour input's {input_mse}");

    // The same pairs as TFRecords (`prepare --paired`: image/target/encoded) train the same way.
    let prepared = dir.path().join("prepared");
    let out = ferroflow(&["prepare", data.to_str().unwrap(), "--out", prepared.to_str().unwrap(), "--paired"]);
    assert!(out.status.success(), "{}", text(&out));
    let meta: Json = serde_json::from_str(&std::fs::read_to_string(prepared.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(meta["task"], "image_to_image");
    assert_eq!(meta["features"]["image/target/encoded"], "bytes");
    let (_, mse, input_mse) = train_paired(&prepared, &dir.path().join("run-records"), &[]);
    assert!(mse < 0.3 * input_mse, "from TFRecords: colour-to-grey MSE {mse}, the colour input's {input_mse}");
    let out = ferroflow(&[
        "train",
        "--data",
        prepared.to_str().unwrap(),
        "--train-dir",
        dir.path().join("z").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("holds target images: set data.targets = \"paired\""), "{}", text(&out));

    // Without data.targets = "paired", inputs/ and targets/ are not taken for classes.
    let out =
        ferroflow(&["train", "--data", data.to_str().unwrap(), "--train-dir", dir.path().join("x").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("set data.targets = \"paired\""), "{}", text(&out));
    // A missing target is one error naming both files.
    let lost = data.join("targets/coffee").read_dir().unwrap().next().unwrap().unwrap().path();
    std::fs::remove_file(&lost).unwrap();
    let out = ferroflow(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "encoder_decoder",
        "--train-dir",
        dir.path().join("y").to_str().unwrap(),
        "--set",
        "data.targets=\"paired\"",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("has no target: expected") && text(&out).contains(lost.to_str().unwrap()),
        "{}",
        text(&out)
    );
}
