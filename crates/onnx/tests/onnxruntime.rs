//! Every zoo model and a TOML model with every layer kind, exported to ONNX,
//! checked by `onnx.checker.check_model` and run by ONNX Runtime (the venv
//! scripts/test.sh creates) on real images: its outputs equal ferroflow's
//! eval-mode forward (and softmax, as `ferroflow predict`) within 1e-5, at
//! batch sizes 1 and 7. Batch-norm statistics, gammas, betas and biases are
//! set to random values first, so that none of them is an identity.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{D, Device, Tensor};
use ferroflow_data::{DecodeOptions, Preprocess, decode_image};
use ferroflow_nn::{Model, ModelSpec, VarStore, ops, zoo_model};
use ferroflow_onnx::{ExportOptions, export_model, to_bytes};
use serde_json::Value as Json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with onnxruntime: run scripts/test.sh (it creates .venv) or set FERROFLOW_PYTHON"
    );
    venv
}

/// Seven real images for a model's input: MNIST digits for one channel,
/// photos (of all three classes) for three.
fn images(channels: usize) -> Vec<PathBuf> {
    let (root, per_class): (&str, &[(&str, usize)]) = if channels == 1 {
        ("testdata/data/mnist5k/val", &[("3", 2), ("5", 2), ("8", 2), ("9", 1)])
    } else {
        ("testdata/data/photos-mini", &[("chelsea", 3), ("coffee", 2), ("rocket", 2)])
    };
    let mut out = Vec::new();
    for (class, n) in per_class {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(repo().join(root).join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        out.extend(files.into_iter().take(*n));
    }
    assert_eq!(out.len(), 7);
    out
}

/// A small deterministic generator (the values only need to be non-trivial).
struct Lcg(u64);
impl Lcg {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// Random moving statistics, gammas, betas and biases.
fn perturb(store: &VarStore, seed: u64) {
    let mut rng = Lcg(seed);
    for v in store.global_variables() {
        let leaf = v.name.rsplit('/').next().unwrap();
        let (lo, hi) = match leaf {
            "moving_mean" | "beta" | "biases" => (-0.3, 0.3),
            "moving_variance" => (0.2, 2.0),
            "gamma" => (0.5, 1.5),
            _ => continue,
        };
        let n = v.var.elem_count();
        let values: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi)).collect();
        store.assign(&v.name, &Tensor::from_vec(values, v.var.dims(), &Device::Cpu).unwrap()).unwrap();
    }
}

/// ferroflow's eval forward, with softmax for classifiers (as `predict`).
fn forward(model: &Model, x: &Tensor) -> (Tensor, Option<Tensor>) {
    let y = model.forward_t(x, false).unwrap();
    let probs = (y.rank() == 2).then(|| ops::softmax(&y, D::Minus1).unwrap());
    (y, probs)
}

struct Case {
    name: String,
    onnx: PathBuf,
    data: PathBuf,
}

/// Builds `spec`, exports it, and writes the inputs and ferroflow's outputs
/// at batch 7 and at batch 1 (image by image).
fn prepare(spec: &ModelSpec, dir: &Path, seed: u64) -> Case {
    let store = VarStore::new(Device::Cpu, seed);
    let model = spec.build(&store, seed).unwrap();
    perturb(&store, seed + 1);
    let [h, w, c] = spec.input;
    let preprocess = Preprocess {
        image_size: [h, w],
        channels: c,
        mean: Some([120.0, 115.0, 100.0]),
        std: Some([60.0, 62.0, 65.0]),
        ..Default::default()
    };
    let mut input = Vec::new();
    for path in images(c) {
        let image =
            decode_image(&std::fs::read(&path).unwrap(), &DecodeOptions { channels: Some(c), ..Default::default() })
                .unwrap();
        input.extend(preprocess.eval(&image));
    }
    let x = Tensor::from_vec(input, (7, c, h, w), &Device::Cpu).unwrap();
    let (y7, p7) = forward(&model, &x);
    let mut ones = Vec::new();
    for i in 0..7 {
        let (y, p) = forward(&model, &x.narrow(0, i, 1).unwrap());
        ones.push((y, p));
    }
    let y1 = Tensor::cat(&ones.iter().map(|o| o.0.clone()).collect::<Vec<_>>(), 0).unwrap();
    let mut tensors: HashMap<String, Tensor> =
        [("input".to_string(), x), ("out7".to_string(), y7), ("out1".to_string(), y1)].into();
    if let Some(p7) = p7 {
        tensors.insert("probs7".into(), p7);
        let p1: Vec<Tensor> = ones.iter().map(|o| o.1.clone().unwrap()).collect();
        tensors.insert("probs1".into(), Tensor::cat(&p1, 0).unwrap());
    }
    // A regression head for lenet: its outputs mapped back to the targets' units.
    let regression = spec.name == "lenet";
    let k = model.output_shape()[0];
    let target_stats = regression.then(|| {
        ((0..k).map(|i| i as f32 - 3.0).collect::<Vec<f32>>(), (0..k).map(|i| 0.5 + i as f32).collect::<Vec<f32>>())
    });
    if let Some((mean, std)) = &target_stats {
        let values = |y: &Tensor| {
            let s = Tensor::from_slice(std, (1, k), &Device::Cpu).unwrap();
            let m = Tensor::from_slice(mean, (1, k), &Device::Cpu).unwrap();
            y.broadcast_mul(&s).unwrap().broadcast_add(&m).unwrap()
        };
        let (v7, v1) = (values(&tensors["out7"]), values(&tensors["out1"]));
        tensors.insert("values7".into(), v7);
        tensors.insert("values1".into(), v1);
        tensors.remove("probs7");
        tensors.remove("probs1");
    }
    let options = ExportOptions {
        producer_version: "test".into(),
        metadata: vec![("ferroflow.preprocessing".into(), preprocess.describe_eval())],
        doc: String::new(),
        target_stats,
    };
    let proto = export_model(spec, &model, &options).unwrap();
    let onnx = dir.join(format!("{}.onnx", spec.name));
    std::fs::write(&onnx, to_bytes(&proto)).unwrap();
    let data = dir.join(format!("{}.safetensors", spec.name));
    candle_core::safetensors::save(&tensors, &data).unwrap();
    Case { name: spec.name.clone(), onnx, data }
}

#[test]
fn onnx_runtime_matches_ferroflow_on_every_zoo_model_and_every_layer_kind() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs: Vec<ModelSpec> = ["lenet", "cifar_cnn", "resnet20", "vgg_small", "encoder_decoder"]
        .iter()
        .map(|m| zoo_model(m, 10).unwrap())
        .collect();
    let toml = std::fs::read_to_string(repo().join("crates/onnx/tests/models/every_layer.toml")).unwrap();
    specs.push(ModelSpec::from_toml(&toml).unwrap());
    // A global average pool (TF-slim ResNets' pool5) between a conv and the logits.
    let global_pool = r#"
name = "global_pool_net"
input = [12, 10, 3]
[[layers]]
type = "conv2d"
filters = 6
kernel = 3
activation = "relu"
[[layers]]
type = "global_avg_pool"
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
units = 4
"#;
    specs.push(ModelSpec::from_toml(global_pool).unwrap());
    // Inception v3's parts: a concat of branches (1x7/7x1 convs, a SAME average pool,
    // a nested concat of a 1x3 and a 3x1 conv, a strided VALID branch beside a max pool
    // in the second), and explicit padding.
    let branches = r#"
name = "branches_net"
input = [13, 11, 3]
[[layers]]
type = "pad"
pad = [1, 2, 0, 3]
[[layers]]
type = "concat"
branches = [
  [{ type = "conv2d", filters = 4, kernel = 1, activation = "relu", batch_norm = true }],
  [{ type = "conv2d", filters = 3, kernel = [1, 7], activation = "relu" },
   { type = "conv2d", filters = 5, kernel = [7, 1], activation = "relu", batch_norm = true }],
  [{ type = "conv2d", filters = 3, kernel = 1 },
   { type = "concat", branches = [[{ type = "conv2d", filters = 2, kernel = [1, 3] }],
                                  [{ type = "conv2d", filters = 2, kernel = [3, 1] }]] }],
  [{ type = "avg_pool", pool = 3, stride = 1, padding = "SAME" }, { type = "conv2d", filters = 2, kernel = 1 }],
]
[[layers]]
type = "concat"
branches = [
  [{ type = "conv2d", filters = 4, kernel = 3, stride = 2, padding = "VALID" }],
  [{ type = "max_pool", pool = 3, stride = 2, padding = "VALID" }],
]
[[layers]]
type = "global_avg_pool"
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
units = 5
"#;
    specs.push(ModelSpec::from_toml(branches).unwrap());
    // (Last, so the cases above keep their seeds.) TF-slim's ResNet v1 units (projection and subsampling shortcuts, conv2d_same's explicit
    // padding; at 64x64 to keep the test quick: its global pool takes any size) and
    // Inception v1 modules.
    let mut resnet = zoo_model("resnet_v1_50", 10).unwrap();
    resnet.input = [64, 64, 3];
    specs.push(resnet);
    specs.push(zoo_model("inception_v1", 10).unwrap());
    let cases: Vec<Case> = specs.iter().enumerate().map(|(i, s)| prepare(s, dir.path(), 7 + i as u64)).collect();
    let manifest: Vec<Json> =
        cases.iter().map(|c| serde_json::json!({"name": c.name, "onnx": c.onnx, "data": c.data})).collect();
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();

    let py = Command::new(python())
        .arg(repo().join("tests/python/onnx_runtime_check.py"))
        .arg(&manifest_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&py.stderr);
    assert!(py.status.success(), "{stderr}");
    let report: Json = serde_json::from_slice(&py.stdout).unwrap();
    for case in &cases {
        let r = &report[&case.name];
        assert_eq!(r["checker"], "ok", "{}: {r}", case.name);
        assert_eq!(r["opset"], 17, "{}", case.name);
        assert_eq!(r["input_shape"][0], "batch", "{}: the batch dimension must be dynamic: {r}", case.name);
        let classifier = !["encoder_decoder", "lenet"].contains(&case.name.as_str());
        let outputs: Vec<&str> = r["outputs"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
        let want = match case.name.as_str() {
            "encoder_decoder" => vec!["output"],
            "lenet" => vec!["standardized", "values"], // exported as a regression model
            _ => vec!["logits", "probabilities"],
        };
        assert_eq!(outputs, want, "{}", case.name);
        for batch in ["7", "1"] {
            let d = r[format!("max_diff_out{batch}")].as_f64().unwrap();
            // Logits and images are compared relative to their largest magnitude.
            let scale = r[format!("max_abs_out{batch}")].as_f64().unwrap().max(1.0);
            assert!(d <= 1e-5 * scale, "{} batch {batch}: output differs by {d} (scale {scale})", case.name);
            if classifier {
                let d = r[format!("max_diff_probs{batch}")].as_f64().unwrap();
                assert!(d <= 1e-5, "{} batch {batch}: probabilities differ by {d}", case.name);
            }
            if case.name == "lenet" {
                let d = r[format!("max_diff_values{batch}")].as_f64().unwrap();
                assert!(d <= 1e-5 * 8.0, "{} batch {batch}: values differ by {d}", case.name);
            }
        }
        // The outputs vary between images (the comparison means something).
        assert!(r["spread"].as_f64().unwrap() > 1e-3, "{}: outputs barely vary: {r}", case.name);
        eprintln!("{}: {r}", case.name);
    }
}
