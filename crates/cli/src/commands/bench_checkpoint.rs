//! `ferroflow bench checkpoint`: how long saving and restoring a training
//! checkpoint takes — every variable of a zoo model plus its Momentum slots
//! and `global_step`, written the crash-safe way (temporary file, fsync,
//! rename, directory fsync, state file) and restored exactly.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::Device;
use clap::Args;
use ferroflow_nn::{VarStore, zoo_model};
use ferroflow_train::TrainError;
use ferroflow_train::checkpoint::{Checkpoint, CheckpointManager, CheckpointMeta, restore_exact};
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
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let mut manager = CheckpointManager::open(&args.dir, 2, None)?;
    let (mut save, mut restore) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for step in 1..=args.repeats as i64 {
        store.set_global_step(step);
        let t = Instant::now();
        let ck = Checkpoint::capture(
            &store.global_variables(),
            CheckpointMeta { global_step: step, version: env!("CARGO_PKG_VERSION").into(), ..Default::default() },
        )?;
        let path = manager.save(&ck, step)?;
        save.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = std::fs::metadata(&path)?.len();

        let t = Instant::now();
        let loaded = Checkpoint::load(&path)?;
        restore_exact(&store, &loaded, &path.display().to_string())?;
        restore.push(t.elapsed().as_secs_f64() * 1e3);
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
    println!("save (capture, write, fsync, rename, state file): median {:.2} ms", median(save.clone()));
    println!("restore (read, parse, assign): median {:.2} ms", median(restore.clone()));
    println!("save_ms: {:.3} restore_ms: {:.3}", median(save), median(restore));
    Ok(())
}
