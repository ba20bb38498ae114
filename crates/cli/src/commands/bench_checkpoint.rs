//! `ferroflow bench checkpoint`: how long saving and restoring a training
//! checkpoint takes — every variable of a zoo model plus its Momentum slots
//! and `global_step`, written the crash-safe way (temporary file, fsync,
//! rename, directory fsync, state file) and restored exactly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::Device;
use clap::Args;
use ferroflow_nn::{VarStore, zoo_model};
use ferroflow_train::TrainError;
use ferroflow_train::checkpoint::{
    Checkpoint, CheckpointManager, CheckpointMeta, EXTENSION, checkpoint_prefix, export_tensor_bundle, restore_exact,
    without_checksums, write_atomic,
};
use ferroflow_train::optimizer::{Optimizer, OptimizerConfig};

/// Arguments of `ferroflow bench checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// A zoo model (`ferroflow models`).
    #[arg(long, default_value = "cifar_cnn")]
    pub model: String,
    /// Saves and restores timed (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Where the checkpoints go (a directory on the disk to measure; emptied first).
    #[arg(long, value_name = "DIR", default_value = "bench/out/checkpoint-ferroflow")]
    pub dir: PathBuf,
    /// safetensors (ferroflow's checkpoints) or tf-checkpoint (a TF bundle, as `ferroflow export` writes).
    #[arg(long, default_value = "safetensors", value_parser = ["safetensors", "tf-checkpoint"])]
    pub format: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Step `step`'s training checkpoint of `store` (its `global_step` set).
fn capture(store: &VarStore, step: i64) -> Result<Checkpoint> {
    store.set_global_step(step);
    let meta = CheckpointMeta { global_step: step, version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    Ok(Checkpoint::capture(&store.global_variables(), meta)?)
}

/// Restore times by stage, in ms.
#[derive(Default)]
struct Restores {
    load: Vec<f64>,
    assign: Vec<f64>,
    total: Vec<f64>,
}

impl Restores {
    /// Restores `path` into `store` exactly, timing each stage.
    fn time(&mut self, store: &VarStore, path: &Path) -> Result<()> {
        let t = Instant::now();
        let loaded = Checkpoint::load(path)?;
        let load = t.elapsed();
        restore_exact(store, &loaded, &path.display().to_string())?;
        let total = t.elapsed();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        self.load.push(ms(load));
        self.assign.push(ms(total - load));
        self.total.push(ms(total));
        Ok(())
    }

    /// Prints the medians; returns the total's.
    fn report(&self, what: &str) -> f64 {
        let total = median(self.total.clone());
        println!(
            "{what} (read and verify, assign): median {total:.2} ms (read and verify {:.2}, assign {:.2})",
            median(self.load.clone()),
            median(self.assign.clone())
        );
        total
    }
}

/// Runs the command.
pub fn run(args: &CheckpointArgs) -> Result<()> {
    if args.repeats == 0 {
        bail!(TrainError::config("--repeats", "must be at least 1"));
    }
    let Some(spec) = zoo_model(&args.model, 10) else {
        bail!(TrainError::config("--model", format!("{:?} is not a zoo model (see `ferroflow models`)", args.model)));
    };
    let store = VarStore::new(Device::Cpu, 0);
    spec.build(&store, 0)?;
    let _optimizer = Optimizer::new(&OptimizerConfig::default(), &store)?;
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    if args.format == "tf-checkpoint" {
        return run_tf_bundle(args, &store);
    }
    let mut manager = CheckpointManager::open(&args.dir, 2, None)?;
    let mut save = Vec::new();
    let (mut first, mut checked, mut unchecked) = (Restores::default(), Restores::default(), Restores::default());
    let mut bytes = 0;
    for step in 1..=args.repeats as i64 {
        let t = Instant::now();
        let ck = capture(&store, step)?;
        let path = manager.save(&ck, step)?;
        save.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = std::fs::metadata(&path)?.len();

        // The same checkpoint as a ferroflow before checksums wrote it, restored
        // in the same loop, so that the checksums' cost is measured in this run.
        // The first restore after a save is 0.3-0.5 ms slower than later ones,
        // whichever file it reads: it is reported on its own (what `restore_ms`
        // has always measured), and the two compared ones then take turns.
        first.time(&store, &path)?;
        let old = args.dir.join(format!("without-checksums.{EXTENSION}"));
        write_atomic(&old, &without_checksums(&std::fs::read(&path)?, &path.display().to_string())?)?;
        if step % 2 == 0 {
            unchecked.time(&store, &old)?;
            checked.time(&store, &path)?;
        } else {
            checked.time(&store, &path)?;
            unchecked.time(&store, &old)?;
        }
    }
    let vars = store.global_variables();
    let values: usize = vars.iter().map(|v| v.var.elem_count()).sum();
    println!(
        "{}: {} variables (with Momentum slots), {values} values, {:.1} MB per checkpoint, {} saves in {}",
        args.model,
        vars.len() + 1,
        bytes as f64 / 1e6,
        args.repeats,
        args.dir.display()
    );
    println!("save (capture, checksum, write, fsync, rename, state file): median {:.2} ms", median(save.clone()));
    let cold = first.report("first restore after the save");
    let (with, without) =
        (checked.report("restore again"), unchecked.report("restore of the same file without checksums"));
    println!("checksums' cost on restore: {:+.1}% ({:+.3} ms)", (with / without - 1.0) * 100.0, with - without);
    println!(
        "save_ms: {:.3} restore_ms: {cold:.3} restore_again_ms: {with:.3} restore_unchecked_ms: {without:.3}",
        median(save)
    );
    Ok(())
}

/// The same loop for TF bundles: export (data, index and state file, each
/// written atomically), then load and restore exactly; the two latest
/// bundles are kept, like the safetensors run's `max_to_keep = 2`.
fn run_tf_bundle(args: &CheckpointArgs, store: &VarStore) -> Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let (mut save, mut restore) = (Vec::new(), Restores::default());
    let mut bytes = 0;
    for step in 1..=args.repeats as i64 {
        let t = Instant::now();
        let ck = capture(store, step)?;
        let prefix = args.dir.join(checkpoint_prefix(step));
        let out = export_tensor_bundle(&ck, &prefix)?;
        save.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = std::fs::metadata(&out.data)?.len() + std::fs::metadata(&out.index)?.len();
        restore.time(store, &prefix)?;
        if step > 2 {
            let old = args.dir.join(checkpoint_prefix(step - 2));
            for suffix in [".index", ".data-00000-of-00001"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", old.display()));
            }
        }
    }
    let vars = store.global_variables();
    println!(
        "{}: {} variables (with Momentum slots), {:.1} MB per TF bundle, {} saves in {}",
        args.model,
        vars.len() + 1,
        bytes as f64 / 1e6,
        args.repeats,
        args.dir.display()
    );
    println!(
        "save (capture, OIHW -> HWIO, write data and index, fsync, rename, state file): median {:.2} ms",
        median(save.clone())
    );
    let restore = restore.report("restore (CRC-checked)");
    println!("save_ms: {:.3} restore_ms: {restore:.3}", median(save));
    Ok(())
}
