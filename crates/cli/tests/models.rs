//! `ferroflow models` lists the zoo and describes zoo and TOML models.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).args(args).output().unwrap()
}

#[test]
fn lists_the_zoo_with_parameter_counts() {
    let out = ferroflow(&["models"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for (name, input, params) in [
        ("lenet", "28x28x1", "61706"),
        ("cifar_cnn", "32x32x3", "1117162"),
        ("resnet20", "32x32x3", "272474"),
        ("vgg_small", "32x32x3", "3249098"),
        ("encoder_decoder", "32x32x3", "38723"),
    ] {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(line.contains(input) && line.contains(params), "{line}");
    }
}

#[test]
fn describes_a_toml_model_and_rejects_bad_ones() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/small_cnn.toml");
    let out = ferroflow(&["models", example.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // conv 3x3x1x16 + BN(16) = 176; conv 3x3x16x32 + BN(32) = 4672; dense 7*7*32*10 + 10 = 15690.
    assert!(text.contains("trainable parameters: 20538"), "{text}");
    assert!(text.contains("conv2/BatchNorm") || text.contains("conv2"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&example).unwrap().replace("units = 10", "units = 0")).unwrap();
    let out = ferroflow(&["models", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("layers[6] (dense \"fc1\"") && err.contains("units must be at least 1"), "{err}");
    let out = ferroflow(&["models", "resnet21"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model \"resnet21\""));
}
