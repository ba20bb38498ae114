//! Checkpoints end to end on the bundled MNIST digits: exact resume (also
//! after kill -9 at random moments), failed saves that keep the previous
//! checkpoint, fine-tuning, and `eval` / `predict` / `inspect`; Python's
//! safetensors and TensorFlow read the files.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

mod common;

use ferroflow_train::checkpoint::{Checkpoint, Values, latest_checkpoint, read_state};
use serde_json::Value as Json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferroflow"));
    c.current_dir(repo()).args(args);
    c
}

fn ferroflow(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn python() -> PathBuf {
    std::env::var_os("FERROFLOW_PYTHON").map_or_else(|| repo().join(".venv/bin/python"), PathBuf::from)
}

const MNIST: &str = "testdata/data/mnist5k";

/// `ferroflow train` arguments for a short run into `dir`.
fn train_args(dir: &Path, model: &str, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--data",
        MNIST,
        "--model",
        model,
        "--train-dir",
        dir.to_str().unwrap(),
        "--batch-size",
        "32",
        "--steps",
        &steps.to_string(),
        "--learning-rate",
        "0.02",
        "--set",
        "summary.histograms_every=0",
        "--set",
        "summary.images_every=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn train(dir: &Path, model: &str, steps: u64, extra: &[&str]) -> String {
    let args = train_args(dir, model, steps, extra);
    let out = command(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn latest(dir: &Path) -> Checkpoint {
    Checkpoint::load(&latest_checkpoint(dir).unwrap().unwrap()).unwrap()
}

/// Every tensor's values as bits, for bitwise comparison.
fn bits(ck: &Checkpoint) -> BTreeMap<String, Vec<u64>> {
    ck.tensors
        .iter()
        .map(|(k, t)| {
            let v = match &t.values {
                Values::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
                other => other.to_f64().iter().map(|x| x.to_bits()).collect(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn f32s(ck: &Checkpoint, name: &str) -> Vec<f32> {
    match &ck.get(name).unwrap_or_else(|| panic!("no {name}")).values {
        Values::F32(v) => v.clone(),
        other => panic!("{name} is {}", other.dtype_name()),
    }
}

fn validation_accuracy(output: &str) -> String {
    output.lines().find_map(|l| l.strip_prefix("validation accuracy: ")).unwrap().to_string()
}

#[test]
fn resume_is_bitwise_exact_and_eval_matches_training() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    // cifar_cnn on 28x28x1: batch norm (moving statistics), dropout (a random
    // stream) and a moving average of the weights (validated with).
    let extra = ["--save-every", "5", "--set", "model.input=[28, 28, 1]", "--set", "train.ema_decay=0.9"];
    let out = train(&whole, "cifar_cnn", 16, &extra);
    train(&split, "cifar_cnn", 7, &extra);
    assert_eq!(latest(&split).meta.global_step, 7);
    let resumed = train(&split, "cifar_cnn", 16, &extra);
    assert!(resumed.contains("resuming from") && resumed.contains("at step 7"), "{resumed}");
    let (a, b) = (latest(&whole), latest(&split));
    assert_eq!(a.meta.global_step, 16);
    assert_eq!(bits(&a), bits(&b), "a resumed run must end bitwise identical to an uninterrupted one");
    assert_eq!(a.meta.cursor, b.meta.cursor);
    assert_eq!(a.meta.rng, b.meta.rng);
    for name in ["conv1/BatchNorm/moving_mean", "fc1/weights/Momentum", "fc1/weights/ExponentialMovingAverage"] {
        assert!(a.get(name).is_some(), "no {name}");
    }
    assert_eq!(validation_accuracy(&out), validation_accuracy(&resumed));

    // eval reproduces the final validation of training exactly.
    let e = ferroflow(&["eval", "--train-dir", whole.to_str().unwrap(), "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    let json: Json = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(json["step"], 16);
    assert_eq!(json["count"], 1000);
    assert_eq!(json["ema"], true);
    assert_eq!(format!("{:.4}", json["accuracy"].as_f64().unwrap()), validation_accuracy(&out));
    let confusion: Vec<Vec<u64>> = serde_json::from_value(json["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 1000);
    assert!(whole.join("eval").read_dir().unwrap().count() > 0, "eval scalars for TensorBoard");

    // Python's safetensors and TensorFlow read the files.
    let py = Command::new(python())
        .arg(repo().join("tests/python/read_checkpoint.py"))
        .arg(&whole)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    let py: Json = serde_json::from_slice(&py.stdout).unwrap();
    let kept: Vec<String> = serde_json::from_value(py["all_model_checkpoint_paths"].clone()).unwrap();
    let want: Vec<String> =
        [5, 10, 15, 16].iter().map(|s| whole.join(format!("model.ckpt-{s}")).display().to_string()).collect();
    assert_eq!(kept, want);
    assert_eq!(py["model_checkpoint_path"], want[3].as_str());
    assert_eq!(py["global_step"], 16);
    assert_eq!(py["metadata"]["ferroflow.global_step"], "16");
    let sums: BTreeMap<String, f64> = serde_json::from_value(py["sums"].clone()).unwrap();
    assert_eq!(sums.len(), a.tensors.len());
    for (name, sum) in sums {
        let ours: f64 = a.get(&name).unwrap().values.to_f64().iter().sum();
        assert!((ours - sum).abs() <= 1e-6 * ours.abs().max(1.0), "{name}: {ours} vs numpy {sum}");
    }
}

#[test]
fn tf_format_checkpoints_resume_exactly_and_keep_complete_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let (safetensors, whole, split) = (dir.path().join("st"), dir.path().join("whole"), dir.path().join("split"));
    let extra = ["--save-every", "5", "--set", "model.input=[28, 28, 1]", "--set", "train.ema_decay=0.9"];
    let tf: Vec<&str> = extra.iter().copied().chain(["--set", "checkpoint.format=\"tf\""]).collect();
    let kept: Vec<&str> = tf.iter().copied().chain(["--set", "checkpoint.max_to_keep=2"]).collect();
    let reference = train(&safetensors, "cifar_cnn", 16, &extra);
    train(&whole, "cifar_cnn", 16, &kept);
    train(&split, "cifar_cnn", 7, &tf);
    let resumed = train(&split, "cifar_cnn", 16, &tf);
    assert!(resumed.contains("resuming from") && resumed.contains("model.ckpt-7 at step 7"), "{resumed}");

    // Bundles resume exactly, and hold the same values as the safetensors run.
    let (st, a, b) = (latest(&safetensors), latest(&whole), latest(&split));
    assert_eq!(latest_checkpoint(&whole).unwrap().unwrap(), whole.join("model.ckpt-16"));
    assert_eq!(a.meta.global_step, 16);
    assert_eq!(bits(&a), bits(&b), "a run resumed from a TF bundle must end bitwise identical");
    assert_eq!(bits(&a), bits(&st), "the TF bundles hold the safetensors checkpoint's values");
    assert_eq!((&a.meta.cursor, &a.meta.rng), (&b.meta.cursor, &b.meta.rng));
    assert_eq!((&a.meta.cursor, &a.meta.rng), (&st.meta.cursor, &st.meta.rng));
    assert_eq!(validation_accuracy(&reference), validation_accuracy(&resumed));

    // max_to_keep = 2: the two newest bundles, each complete with its side file; nothing else.
    let mut files: Vec<String> =
        whole.read_dir().unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.retain(|f| f.starts_with("model.ckpt"));
    files.sort();
    let want: Vec<String> = [15, 16]
        .iter()
        .flat_map(|s| ["data-00000-of-00001", "ferroflow.json", "index"].map(|x| format!("model.ckpt-{s}.{x}")))
        .collect();
    assert_eq!(files, want);
    let state = read_state(&whole).unwrap().unwrap();
    assert_eq!(state.all_model_checkpoint_paths, ["model.ckpt-15", "model.ckpt-16"]);

    // eval, predict and inspect --verify read the TF-format train dir.
    let e = ferroflow(&["eval", "--train-dir", whole.to_str().unwrap(), "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    let json: Json = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!((json["step"].as_i64(), json["ema"].as_bool()), (Some(16), Some(true)));
    assert_eq!(format!("{:.4}", json["accuracy"].as_f64().unwrap()), validation_accuracy(&reference));
    let v = ferroflow(&["inspect", "--verify", split.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));

    // A damaged side file is one error naming it, and train falls back to the previous bundle.
    let side = split.join("model.ckpt-16.ferroflow.json");
    let damaged = std::fs::read_to_string(&side)
        .unwrap()
        .replace("\"ferroflow.global_step\": \"16\"", "\"ferroflow.global_step\": \"61\"");
    std::fs::write(&side, damaged).unwrap();
    let v = ferroflow(&["inspect", "--verify", split.to_str().unwrap()]);
    assert!(!v.status.success());
    assert!(
        text(&v).contains("model.ckpt-16.ferroflow.json") && text(&v).contains("side file checksum mismatch"),
        "{}",
        text(&v)
    );
    let again = train(&split, "cifar_cnn", 16, &tf);
    assert!(again.contains("damaged") && again.contains("model.ckpt-15"), "{again}");
    assert_eq!(bits(&latest(&split)), bits(&a), "the fallback resumes from step 15 and ends identical");
    for file in ["index", "data-00000-of-00001", "ferroflow.json"] {
        assert!(split.join(format!("model.ckpt-16.{file}.damaged")).exists(), "{file} of the damaged bundle set aside");
    }

    // Without its side file a bundle cannot resume exactly: one error saying so, nothing trained.
    std::fs::remove_file(&side).unwrap();
    let args = train_args(&split, "cifar_cnn", 20, &tf);
    let out = command(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(!out.status.success());
    let e = text(&out);
    assert!(e.contains("without ferroflow's side file") && e.contains("model.ckpt-16.ferroflow.json"), "{e}");
    assert_eq!(latest(&split).meta.global_step, 16);
}

#[test]
fn kill_nine_at_random_moments_then_resume_ends_identical() {
    kill_nine_and_resume("safetensors", None, &[]);
}

#[test]
fn kill_nine_at_random_moments_then_resume_ends_identical_with_tf_bundles() {
    kill_nine_and_resume("tf", None, &[]);
}

#[test]
fn kill_nine_at_random_moments_then_resume_ends_identical_streaming_a_folder() {
    kill_nine_and_resume("safetensors", None, &["--set", "data.in_memory=false"]);
}

#[test]
fn kill_nine_at_random_moments_then_resume_ends_identical_for_regression() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::mnist_regression_dataset(dir.path());
    // Momentum at 0.02 diverges on unbounded targets; Adam at 1e-3 trains them.
    kill_nine_and_resume(
        "safetensors",
        Some(data),
        &["--set", "optimizer.kind=\"adam\"", "--set", "schedule.learning_rate=0.001"],
    );
}

/// Kills a run with SIGKILL at 10 moments, resuming after each, then checks
/// that it ends bitwise equal to an uninterrupted run, with checkpoints in
/// `format`, on the bundled digits or on the prepared dataset `data`.
fn kill_nine_and_resume(format: &str, data: Option<PathBuf>, more: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (whole, killed) = (dir.path().join("whole"), dir.path().join("killed"));
    let format_setting = format!("checkpoint.format=\"{format}\"");
    // `--set` overrides the `--data` flag of train_args.
    let data_setting = match data {
        Some(d) => format!("data.path={:?}", d.display().to_string()),
        None => format!("data.path=\"{MNIST}\""),
    };
    let extra = [
        "--set",
        &data_setting,
        "--set",
        &format_setting,
        "--save-every",
        "2",
        "--set",
        "train.batch_size=16",
        "--set",
        "model.input=[28, 28, 1]",
        "--set",
        "checkpoint.max_to_keep=3",
        "--set",
        "summary.scalars_every=1",
    ];
    let extra: Vec<&str> = extra.iter().chain(more).copied().collect();
    let steps = 24;
    let started = Instant::now();
    train(&whole, "cifar_cnn", steps, &extra);
    let full = started.elapsed();

    // Kill moments from a fixed-seed stream, spread over one run's length
    // (start-up, steps and saves alike).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let args = train_args(&killed, "cifar_cnn", steps, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut kills = 0;
    let mut rounds = 0;
    while kills < 10 {
        rounds += 1;
        assert!(rounds < 60, "the run kept finishing before the kill");
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let u = (state >> 11) as f64 / (1u64 << 53) as f64;
        // Within what is left of the run: resumed runs are shorter.
        let done = latest_checkpoint(&killed).unwrap().map_or(0, |p| Checkpoint::load(&p).unwrap().meta.global_step);
        let left = (steps as f64 - done as f64) / steps as f64;
        let delay = full.mul_f64(u * left.max(0.3));
        let mut child = command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        // Whatever the moment, the state file parses and lists a complete checkpoint.
        if let Some(state) = read_state(&killed).unwrap() {
            let path = latest_checkpoint(&killed).unwrap().unwrap();
            let ck = Checkpoint::load(&path).unwrap();
            assert_eq!(format!("model.ckpt-{}", ck.meta.global_step), state.model_checkpoint_path);
        }
        let last =
            if format == "tf" { format!("model.ckpt-{steps}") } else { format!("model.ckpt-{steps}.safetensors") };
        if latest_checkpoint(&killed).unwrap().is_some_and(|p| p.ends_with(&last)) {
            // Finished between kills: start over so every kill lands in a run.
            std::fs::remove_dir_all(&killed).unwrap();
        }
    }
    let out = train(&killed, "cifar_cnn", steps, &extra);
    let (a, b) = (latest(&whole), latest(&killed));
    assert_eq!(b.meta.global_step, steps as i64, "{out}");
    assert_eq!(bits(&a), bits(&b), "after 10 kills and resumes the weights differ from the uninterrupted run");
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // Every checkpoint file on disk belongs to a listed step (no leftovers of killed saves).
    let listed = read_state(&killed).unwrap().unwrap().all_model_checkpoint_paths;
    for e in std::fs::read_dir(&killed).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("model.ckpt-") {
            assert!(listed.iter().any(|p| name.starts_with(&format!("{p}."))), "{name} is not listed in {listed:?}");
        }
    }

    // TensorBoard shows each step's loss once, the uninterrupted run's
    // values: what killed runs logged past their checkpoint is purged by
    // the resumed runs' SessionLog.START events.
    let whole_loss = &tensorboard_sees(&whole.join("train"))["scalars"]["loss"];
    let killed_loss = &tensorboard_sees(&killed.join("train"))["scalars"]["loss"];
    let steps_seen: Vec<u64> = killed_loss.as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap()).collect();
    assert_eq!(steps_seen, (1..=steps).collect::<Vec<_>>());
    assert_eq!(killed_loss, whole_loss);
}

fn tensorboard_sees(run: &Path) -> Json {
    let out = Command::new(python())
        .arg(repo().join("tests/python/tensorboard_read.py"))
        .arg(run)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_failed_save_keeps_the_previous_checkpoint_listed() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(&run, "lenet", 10, &[]);
    let first = latest_checkpoint(&run).unwrap().unwrap();
    let size = std::fs::metadata(&first).unwrap().len();
    // A file-size limit below a checkpoint's size makes every checkpoint
    // write fail with EFBIG, as a full disk would (SIGXFSZ ignored, so the
    // write returns the error instead of killing the process).
    let limited = |extra: &[&str]| {
        let args = train_args(&run, "lenet", 20, &[&["--save-every", "5"], extra].concat());
        with_file_size_limit(&args, size / 1024 / 2, true)
    };
    let out = limited(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("saving checkpoint") && msg.contains("model.ckpt-15.safetensors") && msg.contains("intact"),
        "{msg}"
    );
    assert_eq!(latest_checkpoint(&run).unwrap().unwrap(), first);
    assert_eq!(Checkpoint::load(&first).unwrap().meta.global_step, 10);

    // Told to continue, training finishes; every save is reported, none listed.
    let out = limited(&["--set", "checkpoint.on_error=\"continue\""]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("training continues").count(), 2, "{}", text(&out));
    assert_eq!(latest_checkpoint(&run).unwrap().unwrap(), first);
    let names: Vec<String> =
        std::fs::read_dir(&run).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

/// Runs ferroflow with `args` under a file-size limit of `kib` KiB; with
/// `ignore_signal` a write past it fails with EFBIG (as a full disk would),
/// without, the kernel kills the process with SIGXFSZ mid-write.
fn with_file_size_limit(args: &[String], kib: u64, ignore_signal: bool) -> Output {
    let trap = if ignore_signal { "trap '' XFSZ; " } else { "" };
    Command::new("bash")
        .arg("-c")
        .arg(format!("{trap}ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ferroflow"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

/// A class-folder copy of mnist5k's digits 0–4 (symlinked files).
fn five_class_subset(root: &Path) -> PathBuf {
    let out = root.join("digits04");
    for split in ["train", "val"] {
        for class in 0..5 {
            let from = repo().join(MNIST).join(split).join(class.to_string());
            let to = out.join(split).join(class.to_string());
            std::fs::create_dir_all(&to).unwrap();
            for e in std::fs::read_dir(&from).unwrap().flatten() {
                std::os::unix::fs::symlink(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    out
}

#[test]
fn fine_tune_a_five_class_head_with_frozen_layers() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    train(&base, "lenet", 40, &[]);
    let base_ck = latest(&base);
    let subset = five_class_subset(dir.path());
    let tuned = dir.path().join("tuned");
    let ft = |extra: &[&str]| {
        let mut args = train_args(&tuned, "lenet", 20, extra);
        args[2] = subset.display().to_string(); // --data
        let out = command(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        (out.status.code(), text(&out))
    };
    let base_path = base.to_str().unwrap();

    // The 10-class logits cannot take 5 classes.
    let (code, msg) = ft(&["--checkpoint-path", base_path]);
    assert_eq!(code, Some(1), "{msg}");
    assert!(msg.contains("fc3/weights") && msg.contains("[84, 10]") && msg.contains("[84, 5]"), "{msg}");
    let (code, msg) = ft(&["--checkpoint-path", base_path, "--exclude-scopes", "fc"]);
    assert_eq!(code, Some(2), "{msg}");
    assert!(msg.contains("\"fc\" matches no variable"), "{msg}");

    let (code, msg) = ft(&["--checkpoint-path", base_path, "--exclude-scopes", "fc3", "--trainable-scopes", "fc2,fc3"]);
    assert_eq!(code, Some(0), "{msg}");
    assert!(msg.contains("warm start from") && msg.contains("excluded 2"), "{msg}");
    let t = latest(&tuned);
    assert_eq!(t.meta.global_step, 20);
    assert_eq!(t.get("fc3/weights").unwrap().shape, [84, 5]);
    // Frozen layers keep the base checkpoint's values bit for bit; trained ones moved.
    for frozen in ["conv1/weights", "conv2/biases", "fc1/weights"] {
        assert_eq!(f32s(&t, frozen), f32s(&base_ck, frozen), "{frozen} changed");
        assert!(t.get(&format!("{frozen}/Momentum")).is_none(), "a frozen variable has no optimizer slot");
    }
    assert_ne!(f32s(&t, "fc2/weights"), f32s(&base_ck, "fc2/weights"));
    assert_eq!(t.meta.trainable, ["fc2/weights", "fc2/biases", "fc3/weights", "fc3/biases"]);
    let accuracy: f64 = validation_accuracy(&msg).parse().unwrap();
    assert!(accuracy > 0.8, "a head fine-tuned on pretrained features should classify 5 digits: {accuracy}");

    // A train dir with a checkpoint resumes; the warm start is not applied again.
    let (code, msg) = ft(&["--checkpoint-path", base_path, "--exclude-scopes", "fc3", "--trainable-scopes", "fc2,fc3"]);
    assert_eq!(code, Some(0), "{msg}");
    assert!(msg.contains("resuming from") && !msg.contains("warm start from"), "{msg}");

    // Resuming on other data is refused, naming both.
    let mut args = train_args(&base, "lenet", 41, &[]);
    args[2] = subset.display().to_string();
    let out = ferroflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("cannot resume")
            && msg.contains("4000 examples")
            && msg.contains("2000 examples of classes [0, 1, 2, 3, 4]"),
        "{msg}"
    );

    // Resuming with another model is refused with what differs.
    let out = ferroflow(
        &train_args(&base, "cifar_cnn", 41, &["--set", "model.input=[28, 28, 1]"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("cannot resume") && text(&out).contains("conv1/BatchNorm"), "{}", text(&out));
}

#[test]
fn predict_names_the_digits_and_inspect_lists_everything() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(&run, "lenet", 250, &["--set", "schedule.learning_rate=0.05"]);
    // The first validation image of every class.
    let images: Vec<PathBuf> = (0..10)
        .map(|c| {
            let d = repo().join(MNIST).join("val").join(c.to_string());
            let mut files: Vec<_> = std::fs::read_dir(d).unwrap().flatten().map(|e| e.path()).collect();
            files.sort();
            files[0].clone()
        })
        .collect();
    let mut args = vec!["predict", "--train-dir", run.to_str().unwrap(), "--top-k", "3", "--json"];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let out = ferroflow(&args);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Json> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    for (digit, line) in lines.iter().enumerate() {
        assert_eq!(line["top"][0]["class"], digit.to_string().as_str(), "{line}");
        assert_eq!(line["top"].as_array().unwrap().len(), 3);
        let p: Vec<f64> = line["top"].as_array().unwrap().iter().map(|t| t["probability"].as_f64().unwrap()).collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p[0] <= 1.0);
    }

    // inspect: every variable of cifar_cnn, with moving statistics and slots.
    let cifar = dir.path().join("cifar");
    train(&cifar, "cifar_cnn", 1, &["--set", "model.input=[28, 28, 1]"]);
    let out = ferroflow(&["inspect", cifar.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: Json = serde_json::from_slice(&out.stdout).unwrap();
    let vars = json["variables"].as_array().unwrap();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    let trainable: Vec<&Json> = vars.iter().filter(|v| v["trainable"] == true).collect();
    for t in &trainable {
        let slot = format!("{}/Momentum", t["name"].as_str().unwrap());
        assert!(names.contains(&slot.as_str()), "no slot {slot}");
    }
    for conv in 1..=4 {
        for stat in ["moving_mean", "moving_variance"] {
            assert!(names.contains(&format!("conv{conv}/BatchNorm/{stat}").as_str()), "{names:?}");
        }
    }
    assert!(names.contains(&"global_step"));
    let params: u64 = trainable.iter().map(|v| v["size"].as_u64().unwrap()).sum();
    // 1,117,162 at 32x32x3; 28x28x1 has a 3x3x1 first conv and a 7x7x64 flatten.
    assert_eq!(params, 870_826);
    assert_eq!(json["metadata"]["ferroflow.global_step"], "1");

    let out = ferroflow(&["inspect", cifar.to_str().unwrap(), "--var", "conv1/BatchNorm/moving_variance", "--values"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("shape [32]") && t.contains("not trainable") && t.contains("mean"), "{t}");
    let out = ferroflow(&["inspect", cifar.to_str().unwrap(), "--var", "conv1/weight"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("similar: conv1/weights"), "{}", text(&out));
    let out = ferroflow(&["inspect", dir.path().join("nothing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no such checkpoint"), "{}", text(&out));
}

#[test]
fn saves_by_time_and_keeps_max_to_keep() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Every step is older than 1 µs: a time-based save after each.
    train(&run, "lenet", 4, &["--set", "checkpoint.every_secs=1e-6", "--set", "checkpoint.max_to_keep=3"]);
    let state = read_state(&run).unwrap().unwrap();
    assert_eq!(state.all_model_checkpoint_paths, ["model.ckpt-2", "model.ckpt-3", "model.ckpt-4"]);
    assert!(!run.join("model.ckpt-1.safetensors").exists());
    // Disabled: nothing is written, and there is nothing to resume.
    let off = dir.path().join("off");
    train(&off, "lenet", 2, &["--set", "checkpoint.enabled=false"]);
    assert!(read_state(&off).unwrap().is_none());
}

#[test]
fn inspect_reads_a_tensorflow_saver_checkpoint() {
    let out = ferroflow(&["inspect", "testdata/tf-files/checkpoint/tf1_saver", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["checkpoint"].as_str().unwrap().ends_with("tf1_saver/model.ckpt-3"));
    let vars = json["variables"].as_array().unwrap();
    assert_eq!(vars.len(), 13);
    let conv = vars.iter().find(|v| v["name"] == "conv1/weights").unwrap();
    assert_eq!(conv["shape"], serde_json::json!([4, 3, 3, 3])); // TF's HWIO [3, 3, 3, 4], as ferroflow's OIHW
    assert_eq!(json["metadata"]["ferroflow.global_step"], "3");
    let out = ferroflow(&[
        "inspect",
        "testdata/tf-files/checkpoint/tf1_saver/model.ckpt-2",
        "--var",
        "global_step",
        "--values",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).trim_end().ends_with("\n2"), "{}", text(&out));
}

#[test]
fn a_tensorflow_checkpoint_with_a_bad_crc_is_one_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("testdata/tf-files/checkpoint/tf1_saver");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let data = dir.path().join("model.ckpt-3.data-00000-of-00001");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, bytes).unwrap();
    let prefix = dir.path().join("model.ckpt-3");
    for args in [
        vec!["inspect".to_string(), prefix.display().to_string()],
        vec!["inspect".to_string(), "--verify".to_string(), dir.path().display().to_string()],
        train_args(&dir.path().join("run"), "lenet", 1, &["--checkpoint-path", prefix.to_str().unwrap()]),
    ] {
        let out = ferroflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let msg = text(&out);
        assert!(msg.contains("model.ckpt-3.data-00000-of-00001") && msg.contains("checksum"), "{msg}");
        assert!(!msg.contains("panicked"), "{msg}");
    }
}

#[test]
fn a_damaged_state_file_or_checkpoint_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(&run, "lenet", 2, &[]);
    let state = run.join("checkpoint");
    let good = std::fs::read_to_string(&state).unwrap();

    std::fs::write(&state, "model_checkpoint_path: \"model.ckpt-2\"\nbogus_field: 3\n").unwrap();
    let out = ferroflow(&train_args(&run, "lenet", 4, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    assert!(msg.contains("run/checkpoint: line 2") && msg.contains("bogus_field"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");

    // A listed checkpoint cut short (not by ferroflow: a damaged disk or copy).
    std::fs::write(&state, good).unwrap();
    let ck = run.join("model.ckpt-2.safetensors");
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    for args in [
        train_args(&run, "lenet", 4, &[]),
        vec!["eval".into(), "--train-dir".into(), run.display().to_string()],
        vec!["inspect".into(), run.display().to_string()],
    ] {
        let out = ferroflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let msg = text(&out);
        assert!(msg.contains("model.ckpt-2.safetensors") && msg.contains("not a safetensors checkpoint"), "{msg}");
        assert_eq!(msg.trim().lines().count(), 1, "one message: {msg}");
    }
}

/// Flips one byte in the middle of `file`'s tensor data.
fn flip_a_data_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header + (bytes.len() - 8 - header) / 2;
    bytes[at] ^= 0x20;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let (damaged, interrupted) = (dir.path().join("damaged"), dir.path().join("interrupted"));
    // cifar_cnn on 28x28x1: batch norm statistics, dropout streams, Momentum slots.
    let extra = ["--save-every", "4", "--set", "model.input=[28, 28, 1]", "--set", "train.batch_size=16"];
    train(&damaged, "cifar_cnn", 12, &extra);
    train(&interrupted, "cifar_cnn", 8, &extra);
    let newest = damaged.join("model.ckpt-12.safetensors");
    flip_a_data_byte(&newest);

    // inspect --verify names the damaged one, passes the others, exits 1.
    let out = ferroflow(&["inspect", "--verify", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("DAMAGED") && msg.contains("model.ckpt-12.safetensors: damaged checkpoint: tensor"), "{msg}");
    assert_eq!(msg.matches("\nok ").count() + usize::from(msg.starts_with("ok ")), 2, "{msg}");
    assert!(msg.contains("1 of 3 checkpoint(s) damaged"), "{msg}");
    let out = ferroflow(&["inspect", "--verify", interrupted.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    // eval and predict refuse it, naming the intact one to use instead.
    let image = repo().join(MNIST).join("val/7");
    for args in [
        vec!["eval", "--train-dir", damaged.to_str().unwrap()],
        vec!["predict", "--train-dir", damaged.to_str().unwrap(), image.to_str().unwrap()],
    ] {
        let out = ferroflow(&args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let msg = text(&out);
        assert!(msg.contains("model.ckpt-12.safetensors") && msg.contains("crc32c"), "{msg}");
        assert!(msg.contains("--checkpoint ") && msg.contains("model.ckpt-8.safetensors"), "{msg}");
        assert_eq!(msg.trim().lines().count(), 1, "one message: {msg}");
    }

    // With on_corrupt = error, train stops with the checksum error.
    let args =
        train_args(&damaged, "cifar_cnn", 16, &[&extra[..], &["--set", "checkpoint.on_corrupt=\"error\""]].concat());
    let out = ferroflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("model.ckpt-12.safetensors: damaged checkpoint"), "{}", text(&out));

    // By default it resumes from step 8 with a warning naming both, and ends
    // bitwise equal to the run that was interrupted at step 8.
    let out = train(&damaged, "cifar_cnn", 16, &extra);
    assert!(
        out.contains("warning: the latest checkpoint")
            && out.contains("model.ckpt-12.safetensors")
            && out.contains("resuming from the newest intact one")
            && out.contains("model.ckpt-8.safetensors"),
        "{out}"
    );
    assert!(out.contains("resuming from") && out.contains("at step 8"), "{out}");
    train(&interrupted, "cifar_cnn", 16, &extra);
    let (a, b) = (latest(&damaged), latest(&interrupted));
    assert_eq!(a.meta.global_step, 16);
    assert_eq!(bits(&a), bits(&b), "the fallen-back run must end bitwise identical to one resumed at step 8");
    assert_eq!((a.meta.cursor, a.meta.rng), (b.meta.cursor, b.meta.rng));
    // The damaged file is kept aside, no longer listed; everything listed verifies.
    assert!(damaged.join("model.ckpt-12.safetensors.damaged").is_file());
    let out = ferroflow(&["inspect", "--verify", damaged.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("DAMAGED"), "{}", text(&out));
}

#[test]
fn a_crash_while_saving_leaves_no_temporary_file_after_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(&run, "lenet", 5, &[]);
    let size = std::fs::metadata(run.join("model.ckpt-5.safetensors")).unwrap().len();
    // A file-size limit below a checkpoint's size: the kernel kills the
    // process with SIGXFSZ in the middle of writing the temporary file (a
    // crash at that instant, every time; kill -9 at random moments is
    // `kill_nine_at_random_moments_then_resume_ends_identical`).
    let args = train_args(&run, "lenet", 10, &["--save-every", "10"]);
    let out = with_file_size_limit(&args, size / 1024 / 2, false);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(25), "killed by SIGXFSZ: {}", text(&out));
    let temps = |run: &Path| -> Vec<String> {
        std::fs::read_dir(run)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp-ferroflow"))
            .collect()
    };
    let left = temps(&run);
    assert_eq!(left.len(), 1, "the crash leaves the temporary file: {left:?}");
    assert!(left[0].starts_with("model.ckpt-10.safetensors."), "{left:?}");
    assert_eq!(latest(&run).meta.global_step, 5, "the state file still lists step 5");

    let out = train(&run, "lenet", 10, &[]);
    assert!(
        out.contains("removed 1 leftover file(s) of a save that was interrupted") && out.contains(&left[0]),
        "{out}"
    );
    assert!(temps(&run).is_empty());
    assert_eq!(latest(&run).meta.global_step, 10);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() { Ok(Tmpfs(at.to_path_buf())) } else { Err(text(&out).trim().to_string()) }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_during_a_save_keeps_the_last_checkpoint_listed_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    let sizing = probe.join("run");
    train(&sizing, "lenet", 4, &[]);
    let size = std::fs::metadata(sizing.join("model.ckpt-4.safetensors")).unwrap().len();
    // Room for the logs and two checkpoints (kept: max_to_keep 5), not a third.
    let fs = match Tmpfs::mount(&dir.path().join("small"), &format!("{}k", (size * 5 / 2 + 192 * 1024) / 1024)) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs here ({why}); the test needs root or CAP_SYS_ADMIN");
            return;
        }
    };
    let run = fs.0.join("run");
    let args = train_args(&run, "lenet", 20, &["--save-every", "4"]);
    let out = ferroflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("saving checkpoint") && msg.contains("No space left on device") && msg.contains("intact"),
        "{msg}"
    );
    let listed = latest(&run);
    assert!(listed.meta.global_step >= 4 && listed.meta.global_step < 20, "{}", listed.meta.global_step);
    let names: Vec<String> =
        std::fs::read_dir(&run).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    // Copied to a disk with room, it verifies and resumes.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for n in &names {
        if run.join(n).is_file() {
            std::fs::copy(run.join(n), copy.join(n)).unwrap();
        }
    }
    let out = ferroflow(&["inspect", "--verify", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = train(&copy, "lenet", 20, &["--save-every", "4"]);
    assert!(out.contains(&format!("at step {}", listed.meta.global_step)), "{out}");
    assert_eq!(latest(&copy).meta.global_step, 20);
}
