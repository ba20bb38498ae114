//! `ferroflow survey`, `prepare` and `dump` on the bundled data.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferroflow_data::{DecodeOptions, decode_image};
use serde_json::Value as Json;
use tfrecord::{Example, FileRecordReader, ReaderOptions};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).args(args).output().expect("run ferroflow")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstderr: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_json(p: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn survey_mnist5k_json() {
    let out = ok(ferroflow(&["survey", s(&testdata("data/mnist5k")), "--json"]));
    let j: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(j["images"], 5000);
    assert_eq!(j["classes"].as_object().unwrap().len(), 10);
    assert!(j["classes"].as_object().unwrap().values().all(|v| v == 500));
    assert_eq!(j["splits"]["train"], 4000);
    assert_eq!(j["splits"]["validation"], 1000);
    assert_eq!(j["unreadable"], serde_json::json!([]));
    assert_eq!(j["width"], serde_json::json!({"min": 28.0, "median": 28.0, "max": 28.0}));
    assert_eq!(j["recommended_size"], serde_json::json!([28, 28]));
    // Real MNIST: mostly black background, grey replicated to R=G=B.
    let mean = j["mean"][0].as_f64().unwrap();
    assert!((30.0..37.0).contains(&mean), "{mean}");
    assert_eq!(j["mean"][0], j["mean"][2]);
    assert!(j["aspect_ratio"].as_array().unwrap().iter().any(|b| b["count"] == 5000));
}

#[test]
fn survey_photos_recommends_a_square_crop_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("survey.png");
    let out = ok(ferroflow(&["survey", s(&testdata("data/photos-mini")), "--json", "--plot", s(&plot)]));
    let j: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(j["images"], 60);
    assert_eq!(j["classes"], serde_json::json!({"chelsea": 20, "coffee": 20, "rocket": 20}));
    assert_eq!(j["recommended_size"], serde_json::json!([224, 224]));
    let png = decode_image(&std::fs::read(&plot).unwrap(), &DecodeOptions::default()).unwrap();
    assert!(png.width >= 600 && png.height >= 600);
    // The text report shows histograms.
    let text = ok(ferroflow(&["survey", s(&testdata("data/photos-mini"))]));
    assert!(text.contains("width distribution:") && text.contains("recommended size: 224x224"), "{text}");
}

#[test]
fn survey_bad_images_lists_each_with_a_reason() {
    let out = ferroflow(&["survey", s(&testdata("data/bad-images")), "--json"]);
    assert!(out.status.success());
    let j: Json = serde_json::from_slice(&out.stdout).unwrap();
    let bad: Vec<(String, String)> = j["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["path"].as_str().unwrap().to_string(), u["reason"].as_str().unwrap().to_string()))
        .collect();
    let names: Vec<&str> = bad.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["corrupt-middle.jpg", "empty.jpg", "huge-dimensions.png", "not-an-image.jpg", "truncated.jpg"]);
    let reason = |n: &str| bad.iter().find(|(p, _)| p == n).unwrap().1.clone();
    assert!(reason("not-an-image.jpg").contains("not a recognised image format"));
    assert!(reason("empty.jpg").contains("empty"));
    assert!(reason("huge-dimensions.png").contains("over the limit"));
    assert!(reason("truncated.jpg").contains("truncated"));
    assert!(reason("corrupt-middle.jpg").contains("corrupt"));
    assert_eq!(j["images"], 8, "cmyk, grayscale, rgba, palette, gray16, one-pixel, bmp, gif decode");
}

fn prepare(src: &Path, out: &Path, extra: &[&str]) -> Json {
    let mut args = vec!["prepare", s(src), "--out", s(out)];
    args.extend_from_slice(extra);
    ok(ferroflow(&args));
    read_json(&out.join("dataset.json"))
}

fn count_records(files: &[PathBuf]) -> usize {
    files.iter().map(|f| FileRecordReader::open(f, ReaderOptions::default()).unwrap().count()).sum()
}

fn split_files(dir: &Path, meta: &Json, split: &str) -> Vec<PathBuf> {
    meta["splits"][split]["files"].as_array().unwrap().iter().map(|f| dir.join(f.as_str().unwrap())).collect()
}

#[test]
fn prepare_mnist5k_keeps_the_existing_split_and_round_trips_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    let meta = prepare(&testdata("data/mnist5k"), &ds, &[]);
    assert_eq!(meta["classes"].as_array().unwrap().len(), 10);
    assert_eq!(meta["splits"]["train"]["count"], 4000);
    assert_eq!(meta["splits"]["validation"]["count"], 1000);
    assert_eq!(meta["splits"]["train"]["files"][0], "train-00000-of-00004.tfrecord");
    assert_eq!(count_records(&split_files(&ds, &meta, "train")), 4000);
    assert_eq!(count_records(&split_files(&ds, &meta, "validation")), 1000);
    assert!(meta["splits"]["train"]["per_class"].as_object().unwrap().values().all(|v| v == 400));
    assert_eq!(meta["channels"], 1);
    let labels = std::fs::read_to_string(ds.join("labels.txt")).unwrap();
    assert_eq!(labels.lines().next(), Some("0:0"));
    assert_eq!(labels.lines().count(), 10);

    // dump writes <i>_label_<l>.png whose pixels equal the source PNG's.
    let dumped = dir.path().join("dump");
    ok(ferroflow(&["dump", s(&ds), "--out", s(&dumped), "--limit", "25"]));
    let first = &split_files(&ds, &meta, "train")[0];
    for (i, record) in FileRecordReader::open(first, ReaderOptions::default()).unwrap().take(25).enumerate() {
        let ex = Example::from_bytes(&record.unwrap().data).unwrap();
        let label = ex.int64("image/class/label").unwrap();
        let png = dumped.join("train").join(format!("{i}_label_{label}.png"));
        let got = decode_image(&std::fs::read(&png).unwrap(), &DecodeOptions::default()).unwrap();
        let src = testdata("data/mnist5k").join(ex.str("image/filename").unwrap());
        let want = decode_image(&std::fs::read(&src).unwrap(), &DecodeOptions::default()).unwrap();
        assert_eq!(got, want, "{}", src.display());
        // The source folder names the class.
        assert!(ex.str("image/filename").unwrap().starts_with(&format!("train/{label}/")));
    }
}

#[test]
fn prepare_raw_gzip_and_dump_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("raw");
    let meta =
        prepare(&testdata("data/mnist5k"), &ds, &["--encoding", "raw", "--compression", "gzip", "--shards", "2"]);
    assert_eq!(meta["encoding"], "raw");
    assert_eq!(meta["image_size"], serde_json::json!([28, 28]));
    let files = split_files(&ds, &meta, "validation");
    assert!(files[0].to_str().unwrap().ends_with("validation-00000-of-00002.tfrecord.gz"));
    assert_eq!(count_records(&files), 1000);
    let dumped = dir.path().join("dump");
    ok(ferroflow(&["dump", s(&files[0]), "--out", s(&dumped), "--limit", "5"]));
    for (i, record) in FileRecordReader::open(&files[0], ReaderOptions::default()).unwrap().take(5).enumerate() {
        let ex = Example::from_bytes(&record.unwrap().data).unwrap();
        let png = dumped.join(format!("{i}_label_{}.png", ex.int64("label").unwrap()));
        let got = decode_image(&std::fs::read(&png).unwrap(), &DecodeOptions::default()).unwrap();
        assert_eq!(got.data, ex.bytes("img_raw").unwrap());
    }
}

#[test]
fn prepare_photos_stratified_resized_and_sliced() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let meta = prepare(
        &testdata("data/photos-mini"),
        &whole,
        &["--val-fraction", "0.2", "--resize", "64x64", "--shards", "2", "--seed", "3"],
    );
    // 20 photos per class, 20% each held out.
    assert_eq!(meta["splits"]["validation"]["per_class"], serde_json::json!({"chelsea": 4, "coffee": 4, "rocket": 4}));
    assert_eq!(meta["splits"]["train"]["count"], 48);
    assert_eq!(meta["image_size"], serde_json::json!([64, 64]));
    // The same conversion as two cluster jobs gives the same dataset.
    let sliced = dir.path().join("sliced");
    for i in ["0", "1"] {
        let out = ok(ferroflow(&[
            "prepare",
            s(&testdata("data/photos-mini")),
            "--out",
            s(&sliced),
            "--val-fraction",
            "0.2",
            "--resize",
            "64x64",
            "--shards",
            "2",
            "--seed",
            "3",
            "--shard-index",
            i,
            "--num-shards",
            "2",
        ]));
        assert_eq!(sliced.join("dataset.json").exists(), i == "1", "{out}");
    }
    let sliced_meta = read_json(&sliced.join("dataset.json"));
    assert_eq!(sliced_meta["splits"], meta["splits"]);
    assert_eq!(sliced_meta["mean"], meta["mean"]);
    for f in meta["splits"]["train"]["files"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        assert_eq!(std::fs::read(whole.join(f)).unwrap(), std::fs::read(sliced.join(f)).unwrap(), "{f}");
    }
}

#[test]
fn prepare_regression_from_csv() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("imgs");
    std::fs::create_dir(&src).unwrap();
    let mut csv = String::from("filename,age\n");
    for (i, name) in ["a.png", "b.png", "c.png", "d.png"].iter().enumerate() {
        std::fs::copy(
            testdata("data/mnist5k/train/3").read_dir().unwrap().nth(i).unwrap().unwrap().path(),
            src.join(name),
        )
        .unwrap();
        csv.push_str(&format!("{name},{}\n", i as f32 * 1.5));
    }
    std::fs::write(dir.path().join("labels.csv"), csv).unwrap();
    let ds = dir.path().join("ds");
    let meta = prepare(
        &src,
        &ds,
        &["--labels-csv", s(&dir.path().join("labels.csv")), "--val-fraction", "0.25", "--encoding", "raw"],
    );
    assert_eq!(meta["task"], "regression");
    assert_eq!(meta["features"]["target"], "float");
    assert_eq!(meta["splits"]["train"]["count"], 3);
    let mut targets: Vec<f32> = ["train", "validation"]
        .iter()
        .flat_map(|sp| split_files(&ds, &meta, sp))
        .flat_map(|f| FileRecordReader::open(f, ReaderOptions::default()).unwrap().map(|r| r.unwrap()))
        .map(|r| Example::from_bytes(&r.data).unwrap().float("target").unwrap())
        .collect();
    targets.sort_by(f32::total_cmp);
    assert_eq!(targets, [0.0, 1.5, 3.0, 4.5]);
}

#[test]
fn prepare_errors_are_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferroflow(&["prepare", s(&testdata("data/bad-images")), "--out", s(&dir.path().join("x"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no class sub-folders"), "{err}");
    let out = ferroflow(&["prepare", "x", "--out", "y", "--resize", "12by4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected HEIGHTxWIDTH"));
    let out = ferroflow(&[
        "prepare",
        s(&testdata("data/photos-mini")),
        "--out",
        s(&dir.path().join("r")),
        "--encoding",
        "raw",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --resize HxW"));
    let out = ferroflow(&["dump", s(&testdata("data")), "--out", s(&dir.path().join("d"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a prepared dataset"));
}
