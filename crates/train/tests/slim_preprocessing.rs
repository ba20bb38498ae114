//! TF-slim's eval preprocessing (`data.preprocessing = "vgg" | "inception"`)
//! equals TensorFlow's on every bundled photo (issue 16):
//! tests/python/slim_preprocessing.py runs TF-slim's eval branches with TF's
//! own ops on the photos of testdata/data/photos-mini (JPEGs and PNGs of
//! several sizes), and ferroflow's `Preprocess` must be within 1 grey level
//! of them everywhere (in practice float rounding: see the printed worst case).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use ferroflow_data::{DecodeOptions, Preprocess, SlimPreprocessing, decode_image};
use ferroflow_golden::{python, repo_root};

fn photos() -> Vec<PathBuf> {
    let root = repo_root().join("testdata/data/photos-mini");
    let mut out = Vec::new();
    for class in ["chelsea", "coffee", "rocket"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        out.extend(files);
    }
    out
}

/// The worst |ferroflow - TF| in grey levels (0–255) over all photos, for each kind.
fn worst_differences(size: usize) -> Vec<(SlimPreprocessing, f32)> {
    let dir = tempfile::tempdir().unwrap();
    let paths = photos();
    assert!(paths.len() >= 50, "expected the bundled photos, found {}", paths.len());
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/slim_preprocessing.py"))
        .arg(size.to_string())
        .arg(dir.path())
        .args(&paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "TF reference failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(dir.path().join("preprocessed.safetensors")).unwrap();
    let tf = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut result = Vec::new();
    for (kind, key, grey_per_unit) in
        [(SlimPreprocessing::Vgg, "vgg", 1.0f32), (SlimPreprocessing::Inception, "inception", 127.5)]
    {
        if kind == SlimPreprocessing::Vgg && size > 256 {
            // TF-slim's VGG crop must fit the 256-pixel side; ferroflow refuses it.
            let pre = Preprocess { image_size: [size, size], channels: 3, slim: kind, ..Default::default() };
            assert!(pre.validate().unwrap_err().to_string().contains("at most 256"));
            continue;
        }
        let pre = Preprocess { image_size: [size, size], channels: 3, slim: kind, ..Default::default() };
        pre.validate().unwrap();
        let mut worst = 0f32;
        for (i, path) in paths.iter().enumerate() {
            let image =
                decode_image(&std::fs::read(path).unwrap(), &DecodeOptions { channels: Some(3), ..Default::default() })
                    .unwrap();
            let got = pre.eval(&image); // [3, size, size]
            let view = tf.tensor(&format!("{key}/{i}")).unwrap();
            assert_eq!(view.shape(), [size, size, 3], "{}", path.display());
            let want: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            for (j, w) in want.iter().enumerate() {
                let (y, x, c) = (j / (size * 3), j / 3 % size, j % 3);
                let g = got[c * size * size + y * size + x];
                let d = (g - w).abs() * grey_per_unit;
                assert!(d <= 1.0, "{key} {}: pixel ({y}, {x}, {c}) is {g}, TF {w}", path.display());
                worst = worst.max(d);
            }
        }
        result.push((kind, worst));
    }
    result
}

#[test]
fn tf_slim_eval_preprocessing_matches_tensorflow_on_real_photos() {
    for size in [224, 299] {
        for (kind, worst) in worst_differences(size) {
            eprintln!("{} at {size}: worst |ferroflow - TF| = {worst:e} grey levels", kind.name());
        }
    }
}
