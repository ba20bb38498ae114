//! The real TensorBoard (tensorboard==2.21.0 from PyPI, in the venv that
//! scripts/test.sh creates) reads an event file written by ferroflow and finds
//! the same tags as in TensorFlow's own file, with the right values.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use tfrecord::proto::graph::AttrValue;
use tfrecord::{EventWriter, GraphBuilder, Image};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with TensorBoard: `FERROFLOW_PYTHON`, else the repo's `.venv`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with TensorBoard: run scripts/test.sh (it creates .venv with tensorboard==2.21.0) \
         or set FERROFLOW_PYTHON"
    );
    venv
}

fn tensorboard_sees(run_dir: &Path) -> Json {
    let out = Command::new(python())
        .arg(repo().join("tests/python/tensorboard_read.py"))
        .arg(run_dir)
        .output()
        .expect("run python");
    assert!(out.status.success(), "tensorboard_read.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json from tensorboard_read.py")
}

/// Deterministic, roughly normal values (sum of uniforms from an LCG).
fn weights() -> Vec<f64> {
    let mut state: u64 = 42;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..1000).map(|_| (0..12).map(|_| uniform()).sum::<f64>() - 6.0).collect()
}

fn image_pixels(seed: u8) -> Vec<u8> {
    (0..8 * 6 * 3).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed)).collect()
}

#[test]
fn tensorboard_reads_ferroflow_event_files_like_tensorflows() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut w = EventWriter::new(&run).unwrap();

    let mut g = GraphBuilder::new();
    let x = g.node("Placeholder", "input", &[]);
    let conv = g.scope("conv1", |g| {
        let w = g.node("VariableV2", "weights", &[]);
        g.node_with_attrs("Conv2D", "Conv2D", &[&x, &w], vec![("strides", AttrValue::ints(&[1, 1, 1, 1]))])
    });
    g.node("Relu", "relu", &[&conv]);
    w.add_graph(&g.build()).unwrap();

    for s in 0..5i64 {
        w.add_scalar("loss", (2.0 / (s as f64 + 1.0)) as f32, s).unwrap();
        // As TF: computed in f64, stored as float32.
        w.add_scalar("learning_rate", (0.1 * 0.9f64.powi(s as i32)) as f32, s).unwrap();
    }
    let values = weights();
    w.add_histogram("weights", &values, 3).unwrap();
    let (a, b) = (image_pixels(0), image_pixels(100));
    let images = [
        Image { height: 8, width: 6, channels: 3, pixels: &a },
        Image { height: 8, width: 6, channels: 3, pixels: &b },
    ];
    w.add_images("input", &images, 2).unwrap();
    w.add_text("config", "lr = 0.1", 0).unwrap();
    w.close().unwrap();

    let ours = tensorboard_sees(&run);
    let theirs = tensorboard_sees(&repo().join("testdata/tf-files/events/run"));

    // Same tags per dashboard as TensorFlow's own file.
    for kind in ["scalars", "histograms", "images", "text"] {
        let keys = |j: &Json| j[kind].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&theirs), "{kind} tags");
    }
    // Scalars: identical float32 values at identical steps.
    assert_eq!(ours["scalars"], theirs["scalars"]);
    // Histogram: TensorBoard's view of our TF-default buckets.
    let h = &ours["histograms"]["weights"];
    assert_eq!(h["step"], 3);
    assert_eq!(h["n"].as_f64().unwrap(), 1000.0);
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(h["min"].as_f64().unwrap(), min as f32 as f64);
    assert_eq!(h["max"].as_f64().unwrap(), max as f32 as f64);
    assert!(h["buckets"].as_u64().unwrap() > 10);
    // Images: same shape and count as TF's, and our exact pixels.
    for field in ["step", "width", "height", "count"] {
        assert_eq!(ours["images"]["input"][field], theirs["images"]["input"][field], "{field}");
    }
    for (i, pixels) in [a, b].iter().enumerate() {
        let rows = ours["images"]["input"]["pixels"][i].as_array().unwrap();
        let decoded: Vec<u8> =
            rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8)).collect();
        assert_eq!(&decoded, pixels, "image {i}");
    }
    assert_eq!(ours["text"], theirs["text"]);
    // The graph, with its name scopes.
    let nodes = ours["graph_nodes"].as_array().expect("TensorBoard found no graph");
    let names: Vec<&str> = nodes.iter().map(|n| n[0].as_str().unwrap()).collect();
    assert_eq!(names, ["input", "conv1/weights", "conv1/Conv2D", "relu"]);
    assert_eq!(nodes[2][1], "Conv2D");
    assert_eq!(nodes[2][2], serde_json::json!(["input", "conv1/weights"]));
}
