//! Data-parallel training under `mpirun` on the bundled MNIST digits (the
//! `mpi` feature; CI installs OpenMPI): 2 ranks equal 1 process, both
//! ranks end bitwise equal, one writer, batch norm + dropout train to the
//! same accuracy band and the checkpoint evaluates in one process, a
//! killed or stalled rank ends the job with a message naming it, and the
//! rerun resumes to the uninterrupted run's weights. Without the feature,
//! a launcher's variables give one clear error.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// stdout then stderr, without `mpirun --tag-output`'s `[job,rank]<stderr>:` prefixes.
fn text(out: &Output) -> String {
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let untag = |l: &str| match (l.starts_with('['), l.find(">:")) {
        (true, Some(i)) if l[..i].contains("]<std") => l[i + 2..].to_string(),
        _ => l.to_string(),
    };
    all.lines().map(untag).collect::<Vec<_>>().join("\n")
}

const MNIST: &str = "testdata/data/mnist5k";

/// `train` arguments: LeNet-style runs on the digits into `dir`.
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
        "64",
        "--steps",
        &steps.to_string(),
        "--optimizer",
        "momentum",
        "--learning-rate",
        "0.01",
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

/// One process.
#[cfg(feature = "mpi")]
fn alone(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).current_dir(repo()).args(args).output().unwrap()
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_launcher_without_mpi_in_the_build_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .current_dir(repo())
        .args(train_args(&dir.path().join("run"), "lenet", 2, &[]))
        .env("OMPI_COMM_WORLD_RANK", "0")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("started by mpirun (OpenMPI) as rank 0 of 2, but this ferroflow was built without MPI")
            && t.contains("--features mpi"),
        "{t}"
    );
    assert_eq!(t.lines().filter(|l| l.starts_with("error")).count(), 1, "{t}");
    // train.distributed = off trains this rank alone, with a warning.
    let out = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .current_dir(repo())
        .args(train_args(&dir.path().join("off"), "lenet", 2, &["--set", "train.distributed=\"off\""]))
        .env("OMPI_COMM_WORLD_RANK", "0")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("train.distributed = off: this rank trains alone"));
}

#[cfg(feature = "mpi")]
mod mpi {
    use super::*;
    use ferroflow_train::checkpoint::{Checkpoint, Values};
    use std::time::{Duration, Instant};

    /// One job at a time: two jobs of two ranks on a 2-core machine would
    /// stretch the fault tests' time bounds.
    static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_job() -> std::sync::MutexGuard<'static, ()> {
        ONE_JOB.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `mpirun -np n ferroflow …`, as root and in containers too.
    fn mpirun(n: usize, args: &[String]) -> Command {
        let mut c = Command::new("mpirun");
        c.current_dir(repo())
            // --tag-output: each line whole, prefixed by its rank (the ranks print at the same time).
            .args(["--oversubscribe", "--tag-output", "-np", &n.to_string(), env!("CARGO_BIN_EXE_ferroflow")])
            .args(args)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
        c
    }

    fn ranks(n: usize, args: &[String]) -> Output {
        mpirun(n, args).output().expect("mpirun (OpenMPI) must be installed for the mpi feature's tests")
    }

    fn f32s(ck: &Checkpoint) -> Vec<(String, Vec<f32>)> {
        ck.tensors
            .iter()
            .filter_map(|(name, t)| match &t.values {
                Values::F32(v) => Some((name.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// The largest |a - b| / max |a| over the tensors (each scaled by its own largest value).
    fn worst_relative(a: &Checkpoint, b: &Checkpoint) -> f64 {
        let (a, b) = (f32s(a), f32s(b));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|((na, va), (nb, vb))| {
                assert_eq!(na, nb);
                let scale = va.iter().fold(1e-12f64, |m, x| m.max(f64::from(x.abs())));
                va.iter().zip(vb).map(|(x, y)| f64::from((x - y).abs()) / scale).fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    }

    /// The digests each rank printed (`rank r of n: variables digest …`).
    fn digests(out: &str) -> Vec<String> {
        let mut d: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_once(": variables digest ").map(|(_, d)| d.trim().to_string()))
            .collect();
        d.sort();
        d
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn two_ranks_train_lenet_like_one_process_with_one_writer() {
        let _one = one_job();
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        let out = alone(&train_args(&one, "lenet", 200, &[]));
        assert!(out.status.success(), "{}", text(&out));
        let out = ranks(2, &train_args(&two, "lenet", 200, &[]));
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("rank 0 of 2 (MPI, 2 ranks on 1 host(s)): global batch 64, 32 per rank"), "{t}");
        let a = Checkpoint::load(&one.join("model.ckpt-200.safetensors")).unwrap();
        let b = Checkpoint::load(&two.join("model.ckpt-200.safetensors")).unwrap();
        let worst = worst_relative(&a, &b);
        // The same mean gradients, summed in another order (2 x 32 then the ranks, not 64).
        assert!(worst < 1e-5, "2 ranks vs 1 process after 200 steps: {worst:e} relative");
        assert!(worst > 0.0, "bitwise equal: were the ranks really two?");
        // Both ranks' variables are bitwise equal.
        let d = digests(&t);
        assert_eq!(d.len(), 2, "{t}");
        assert_eq!(d[0], d[1], "{t}");
        assert!(!t.contains("differ from rank 0"), "{t}");
        // One writer: one event file per run, one config, rank 0's checkpoints.
        assert_eq!(files_under(&two.join("train")).len(), 1, "{:?}", files_under(&two.join("train")));
        assert_eq!(files_under(&two.join("validation")).len(), 1);
        assert_eq!(
            files_under(&two).iter().filter(|f| f.ends_with(".safetensors")).count(),
            files_under(&one).iter().filter(|f| f.ends_with(".safetensors")).count()
        );
        // The progress is rank 0's alone: one summary.
        assert_eq!(t.matches("trained 200 steps").count(), 1, "{t}");
    }

    #[test]
    fn batch_norm_and_dropout_train_under_two_ranks_and_restore_in_one_process() {
        let _one = one_job();
        let dir = tempfile::tempdir().unwrap();
        let extra = ["--set", "model.input=[28, 28, 1]", "--set", "schedule.learning_rate=0.02"];
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        let accuracy = |t: &str| -> f64 {
            // `train` prints "validation accuracy: x", `eval` "accuracy: x".
            let line = t.lines().find(|l| l.starts_with("validation accuracy: ") || l.starts_with("accuracy: "));
            line.and_then(|l| l.rsplit(' ').next()).unwrap().parse().unwrap()
        };
        let out = alone(&train_args(&one, "cifar_cnn", 120, &extra));
        assert!(out.status.success(), "{}", text(&out));
        let a1 = accuracy(&text(&out));
        let out = ranks(2, &train_args(&two, "cifar_cnn", 120, &extra));
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        let a2 = accuracy(&t);
        assert!(a1 > 0.9 && (a1 - a2).abs() < 0.03, "1 process {a1}, 2 ranks {a2}");
        let d = digests(&t);
        assert_eq!((d.len(), &d[0]), (2, &d[1]), "{t}");
        // The 2-rank checkpoint in a 1-process eval: the accuracy the ranks' validation reported.
        let out = alone(&["eval".into(), "--checkpoint".into(), two.display().to_string()]);
        assert!(out.status.success(), "{}", text(&out));
        assert!((accuracy(&text(&out)) - a2).abs() < 1e-9, "{}\n{t}", text(&out));
        // The moving statistics were averaged, not left as rank 0's alone: they moved from 0/1.
        let ck = Checkpoint::load(&two.join("model.ckpt-120.safetensors")).unwrap();
        let moving = f32s(&ck).into_iter().find(|(n, _)| n.ends_with("moving_mean")).unwrap();
        assert!(moving.1.iter().any(|&m| m != 0.0), "{}", moving.0);
    }

    /// A small CNN with batch norm in both of its conv blocks (TF1 and Keras semantics) and
    /// no dropout, so that runs can be compared weight for weight.
    const BN_CNN: &str = r#"
name = "bn_cnn"
input = [28, 28, 1]
[[layers]]
type = "conv2d"
filters = 8
kernel = 3
batch_norm = true
activation = "relu"
[[layers]]
type = "max_pool"
pool = 2
[[layers]]
type = "conv2d"
filters = 16
kernel = 3
batch_norm = { momentum = 0.9, epsilon = 1e-5, semantics = "keras" }
activation = "relu"
[[layers]]
type = "max_pool"
pool = 2
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
units = 10
"#;

    #[test]
    fn synchronised_batch_norm_makes_two_ranks_train_like_one_process() {
        let _one = one_job();
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("bn_cnn.toml");
        std::fs::write(&model, BN_CNN).unwrap();
        let model = model.to_str().unwrap();
        let (one, synced, own) = (dir.path().join("one"), dir.path().join("synced"), dir.path().join("own"));
        let sync = ["--set", "model.sync_batch_norm=true"];
        let out = alone(&train_args(&one, model, 60, &sync));
        assert!(out.status.success(), "{}", text(&out));
        let out = ranks(2, &train_args(&synced, model, 60, &sync));
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("batch norm statistics of the global batch (model.sync_batch_norm)"), "{t}");
        let out = ranks(2, &train_args(&own, model, 60, &[]));
        assert!(out.status.success(), "{}", text(&out));
        let load = |d: &Path| Checkpoint::load(&d.join("model.ckpt-60.safetensors")).unwrap();
        let (a, b, c) = (load(&one), load(&synced), load(&own));
        // Global-batch statistics: the weights and the moving statistics are one process's
        // up to the order of the sums.
        let synced_gap = worst_relative(&a, &b);
        assert!(synced_gap < 1e-5, "synchronised 2 ranks vs 1 process after 60 steps: {synced_gap:e} relative");
        // Per-rank statistics (half batches) train to other weights.
        let own_gap = worst_relative(&a, &c);
        eprintln!("after 60 steps vs 1 process: synchronised BN {synced_gap:e}, per-rank BN {own_gap:e} relative");
        assert!(own_gap > 100.0 * synced_gap.max(1e-7), "per-rank BN {own_gap:e} vs synchronised {synced_gap:e}");
        let d = digests(&t);
        assert_eq!((d.len(), &d[0]), (2, &d[1]), "{t}");
    }

    #[test]
    fn a_run_resumes_under_another_world_size() {
        let _one = one_job();
        let dir = tempfile::tempdir().unwrap();
        let (straight, moved) = (dir.path().join("straight"), dir.path().join("moved"));
        let every = ["--save-every", "100"];
        let out = alone(&train_args(&straight, "lenet", 200, &every));
        assert!(out.status.success(), "{}", text(&out));
        // 100 steps on 2 ranks, then 100 more in one process from the 2-rank checkpoint.
        let out = ranks(2, &train_args(&moved, "lenet", 100, &every));
        assert!(out.status.success(), "{}", text(&out));
        let out = alone(&train_args(&moved, "lenet", 200, &every));
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("at step 100 (epoch 1, example"), "{t}");
        // The same global batches in the same order, so LeNet (no batch norm, no dropout)
        // ends where the 1-process run did, up to the 2-rank half's summation order.
        let a = Checkpoint::load(&straight.join("model.ckpt-200.safetensors")).unwrap();
        let b = Checkpoint::load(&moved.join("model.ckpt-200.safetensors")).unwrap();
        let worst = worst_relative(&a, &b);
        eprintln!("2 ranks then 1 process vs 1 process after 200 steps: {worst:e} relative");
        assert!(worst < 1e-5, "2 ranks then 1 process vs 1 process: {worst:e} relative");
    }

    #[test]
    fn bench_allreduce_and_bench_train_run_as_ranks_with_rank_0_reporting() {
        let _one = one_job();
        let strings = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
        let args = strings(&[
            "bench",
            "allreduce",
            "--model",
            "lenet,cifar_cnn",
            "--parameters",
            "1M",
            "--steps",
            "3",
            "--warmup",
            "1",
        ]);
        let out = ranks(2, &args);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert_eq!(
            t.matches("all-reduce per training step over 2 rank(s) (MPI, 2 ranks on 1 host(s))").count(),
            1,
            "{t}"
        );
        let row = |name: &str| t.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} row: {t}"));
        assert!(row("lenet ").split_whitespace().nth(1) == Some("61706"), "{t}");
        assert!(row("cifar_cnn ").split_whitespace().nth(1) == Some("1117162"), "{t}");
        // The made-up model: 1,000,000 values, 3.81 MiB, one bucket plus the small call.
        let fields: Vec<&str> = row("1.0M ").split_whitespace().collect();
        assert_eq!(&fields[1..4], ["1000000", "3.81", "2"], "{t}");
        let ms: f64 = fields[4].parse().unwrap();
        assert!(ms > 0.0, "{t}");

        let args = strings(&[
            "bench", "train", "--model", "lenet", "--input", "28x28x1", "--steps", "3", "--warmup", "1", "--batch",
            "32",
        ]);
        let out = ranks(2, &args);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert_eq!(
            t.matches("batch 32, 3 steps after 1 warm-up, 2 ranks (MPI, 2 ranks on 1 host(s)) x 1 threads").count(),
            1,
            "{t}"
        );
        let d: Vec<&str> = t.lines().filter_map(|l| l.split_once(": weights digest ").map(|(_, d)| d)).collect();
        assert_eq!(d.len(), 2, "{t}");
        assert_eq!(d[0], d[1], "the ranks trained apart: {t}");
        // An odd global batch cannot be shared.
        let mut odd = args.clone();
        *odd.last_mut().unwrap() = "33".into();
        let out = ranks(2, &odd);
        assert!(!out.status.success());
        assert!(text(&out).contains("33 is the global batch of 2 ranks"), "{}", text(&out));
    }

    #[test]
    fn ranks_started_with_different_settings_stop_with_one_error_each() {
        let _one = one_job();
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let same = train_args(&run, "lenet", 5, &[]);
        let other = train_args(&run, "lenet", 5, &["--set", "model.sync_batch_norm=true"]);
        // MPMD: rank 0 runs `same`, rank 1 `other`.
        let out = Command::new("mpirun")
            .current_dir(repo())
            .args(["--oversubscribe", "--tag-output", "-np", "1", env!("CARGO_BIN_EXE_ferroflow")])
            .args(&same)
            .args([":", "-np", "1", env!("CARGO_BIN_EXE_ferroflow")])
            .args(&other)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        assert!(
            t.contains("rank 1 of 2 runs other settings than rank 0 (\"sync_batch_norm = true\" here, \"sync_batch_norm = false\" on rank 0)"),
            "{t}"
        );
        assert!(t.contains("1 rank(s) run other settings than rank 0"), "{t}");
        // Nothing was trained or written.
        assert!(!run.join("checkpoint").exists());
    }

    #[test]
    fn a_killed_rank_ends_the_job_and_the_rerun_resumes_to_the_uninterrupted_weights() {
        let _one = one_job();
        let dir = tempfile::tempdir().unwrap();
        let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
        let extra = ["--save-every", "100", "--set", "train.collective_timeout_secs=20"];
        let out = ranks(2, &train_args(&whole, "lenet", 1500, &extra));
        assert!(out.status.success(), "{}", text(&out));

        // Kill rank 1 once the run has saved a checkpoint.
        let (job, rank1) = start_and_find_rank1(&train_args(&cut, "lenet", 1500, &extra), &cut);
        let killed = Instant::now();
        Command::new("kill").args(["-9", &rank1.to_string()]).status().unwrap();
        let out = job.wait_with_output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        assert!(killed.elapsed() < Duration::from_secs(20), "the job took {:?} to end", killed.elapsed());
        // mpirun notices the signal first and names the rank; ferroflow's own
        // message (a stalled rank) is the next test's.
        assert!(t.contains("rank 1"), "{t}");
        // The listed checkpoint is complete.
        let verify = alone(&["inspect".into(), "--verify".into(), cut.display().to_string()]);
        assert!(verify.status.success(), "{}", text(&verify));
        // The same command resumes and ends where the uninterrupted run did.
        let out = ranks(2, &train_args(&cut, "lenet", 1500, &extra));
        let t = text(&out);
        assert!(out.status.success() && t.contains("resuming from"), "{t}");
        let a = Checkpoint::load(&whole.join("model.ckpt-1500.safetensors")).unwrap();
        let b = Checkpoint::load(&cut.join("model.ckpt-1500.safetensors")).unwrap();
        assert_eq!(worst_relative(&a, &b), 0.0, "resumed 2-rank run vs uninterrupted");
    }

    #[test]
    fn a_stalled_rank_is_named_after_the_timeout() {
        let _one = one_job();
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let extra = ["--save-every", "100", "--set", "train.collective_timeout_secs=3"];
        let (job, rank1) = start_and_find_rank1(&train_args(&run, "lenet", 100_000, &extra), &run);
        let stopped = Instant::now();
        Command::new("kill").args(["-STOP", &rank1.to_string()]).status().unwrap();
        let out = job.wait_with_output().unwrap();
        // Whatever happened, the stopped rank must not outlive the test.
        let _ = Command::new("kill").args(["-9", &rank1.to_string()]).status();
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        let waited = stopped.elapsed();
        assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(30), "ended after {waited:?}: {t}");
        // Rank 1 stopped before the step's synchronisation, or inside one of its collectives.
        assert!(
            t.contains("rank 0 of 2: ")
                && t.contains("did not complete within 3 s: rank(s) 1 ")
                && (t.contains("rank(s) 1 did not reach it") || t.contains("rank(s) 1 stopped or died during it")),
            "{t}"
        );
        assert_eq!(t.lines().filter(|l| l.starts_with("error:")).count(), 1, "{t}");
    }

    /// Starts 2 ranks training into `dir` and waits for their first
    /// checkpoint; returns the job and rank 1's pid.
    fn start_and_find_rank1(args: &[String], dir: &Path) -> (std::process::Child, u32) {
        let job =
            mpirun(2, args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        while !dir.join("checkpoint").exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint after 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        (job, rank_pid(dir, 1))
    }

    /// The pid of rank `rank` of the job training into `dir` (from its environment).
    fn rank_pid(dir: &Path, rank: usize) -> u32 {
        let needle = dir.to_str().unwrap();
        for entry in std::fs::read_dir("/proc").unwrap() {
            let entry = entry.unwrap();
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if !cmdline.contains(needle) || cmdline.starts_with("mpirun") {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
            if environ.split(|&b| b == 0).any(|kv| kv == wanted.as_bytes()) {
                return pid;
            }
        }
        panic!("no rank {rank} training into {needle}");
    }
}
