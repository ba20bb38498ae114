//! Image folders read from disk per batch (`data.in_memory = false`): the
//! same weights as in memory, memory that does not grow with the folder,
//! and a file lost while the run goes on is skipped with a warning naming it.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::repo;
use ferroflow_train::checkpoint::{Checkpoint, latest_checkpoint};

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn train_args<'a>(data: &'a str, dir: &'a str, steps: &'a str, in_memory: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--model",
        "lenet",
        "--steps",
        steps,
        "--batch-size",
        "32",
        "--train-dir",
        dir,
        "--set",
        in_memory,
        "--set",
        "summary.histograms_every=0",
        "--set",
        "summary.images_every=0",
    ]
}

/// A class folder of `per_class` digits per class under `train/`, each file
/// hard-linked `copies` times under new names, and 10 per class under `val/`.
fn digit_folder(root: &Path, per_class: usize, copies: usize) -> PathBuf {
    let src = repo().join("testdata/data/mnist5k");
    for (split, n) in [("train", per_class), ("val", 10)] {
        for class in 0..10 {
            let dir = root.join(split).join(class.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(src.join(split).join(class.to_string()))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for (i, file) in files.iter().take(n).enumerate() {
                for c in 0..if split == "train" { copies } else { 1 } {
                    std::fs::hard_link(file, dir.join(format!("{i:05}_{c}.png"))).unwrap();
                }
            }
        }
    }
    root.to_path_buf()
}

fn peak_mib(output: &str) -> f64 {
    output.lines().find_map(|l| l.strip_prefix("peak memory: ")?.strip_suffix(" MiB")?.parse().ok()).unwrap()
}

#[test]
fn streaming_trains_bitwise_like_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpoints = Vec::new();
    for mode in ["data.in_memory=true", "data.in_memory=false"] {
        let td = dir.path().join(mode);
        let out = ferroflow(&train_args("testdata/data/mnist5k", td.to_str().unwrap(), "40", mode));
        assert!(out.status.success(), "{}", text(&out));
        let how = if mode.ends_with("true") { "in memory" } else { "read from disk per batch" };
        assert!(text(&out).contains(how), "{}", text(&out));
        checkpoints.push(Checkpoint::load(&latest_checkpoint(&td).unwrap().unwrap()).unwrap());
    }
    assert_eq!(checkpoints[0].tensors, checkpoints[1].tensors);
    assert_eq!(checkpoints[0].meta.cursor, checkpoints[1].meta.cursor);
}

#[test]
fn streaming_memory_does_not_grow_with_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let small = digit_folder(&dir.path().join("small"), 100, 1);
    let large = digit_folder(&dir.path().join("large"), 100, 10); // 10x the files
    let mut peaks = Vec::new();
    for mode in ["data.in_memory=false", "data.in_memory=true"] {
        for data in [&small, &large] {
            let td = dir.path().join(format!("run-{}-{}", mode, data.file_name().unwrap().to_string_lossy()));
            // One decode thread: with two, the allocator's per-thread heaps move the peak by
            // ±5 MiB from run to run, whatever the folder.
            let out = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
                .current_dir(repo())
                .args(train_args(data.to_str().unwrap(), td.to_str().unwrap(), "30", mode))
                .env("RAYON_NUM_THREADS", "1")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            peaks.push(peak_mib(&text(&out)));
        }
    }
    let [stream_small, stream_large, memory_small, memory_large] = peaks[..] else { unreachable!() };
    assert!(
        stream_large <= stream_small * 1.1,
        "streaming: {stream_small:.1} MiB for 1,000 files, {stream_large:.1} MiB for 10,000"
    );
    // The measurement can see a folder's size: in memory, the 10x folder costs at least half
    // of its extra bytes more.
    let mib = |root: &Path| -> f64 {
        let mut bytes = 0u64;
        for split in std::fs::read_dir(root).unwrap() {
            for class in std::fs::read_dir(split.unwrap().path()).unwrap() {
                for f in std::fs::read_dir(class.unwrap().path()).unwrap() {
                    bytes += f.unwrap().metadata().unwrap().len();
                }
            }
        }
        bytes as f64 / (1 << 20) as f64
    };
    let extra = mib(&large) - mib(&small);
    assert!(
        memory_large - memory_small > 0.5 * extra,
        "in memory: {memory_small:.1} vs {memory_large:.1} MiB for {extra:.1} MiB more files"
    );
}

#[test]
fn a_file_lost_during_a_streaming_run_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = digit_folder(&dir.path().join("digits"), 20, 1); // 200 train images
    let td = dir.path().join("run");
    let mut args = train_args(data.to_str().unwrap(), td.to_str().unwrap(), "40", "data.in_memory=false");
    args.extend(["--set", "train.log_every=1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .current_dir(repo())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lost = data.join("train/3/00007_0.png");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // After the first step (the run has listed the file), the file goes; 40 steps of 32 are
    // over 6 epochs of 200, so later epochs try to read it.
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the run ended before its first step: {log}");
        log.push_str(&line);
        if line.starts_with("step 1:") {
            std::fs::remove_file(&lost).unwrap();
            break;
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}{stdout}");
    let warning = format!("warning: skipped {}: cannot read", lost.display());
    assert!(log.contains(&warning), "no {warning:?} in:\n{log}");
    assert!(stdout.contains("training example(s) that could not be read or decoded"), "{stdout}");
    assert_eq!(Checkpoint::load(&latest_checkpoint(&td).unwrap().unwrap()).unwrap().meta.global_step, 40);
}
