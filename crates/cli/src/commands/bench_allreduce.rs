//! `ferroflow bench allreduce`: the trainer's per-step exchange between the
//! ranks (`mpirun -np N ferroflow bench allreduce`), timed for several model
//! sizes, so users can size a cluster before they train on it.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferroflow_train::{AllReduceBenchConfig, AllReduceModel, Distributed, bench_allreduce};

/// Arguments of `ferroflow bench allreduce`.
#[derive(Debug, Args)]
pub struct AllReduceArgs {
    /// Models whose gradients to exchange: zoo names or .toml declarations, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "lenet,cifar_cnn,resnet20,vgg_small")]
    pub model: Vec<String>,
    /// Also made-up models of these many trainable parameters (e.g. 25.6M for ResNet-50,
    /// 138M for VGG-16), comma-separated; K, M and G suffixes allowed.
    #[arg(long, value_delimiter = ',', value_parser = parse_count)]
    pub parameters: Vec<usize>,
    /// Variables each made-up model is split into (ResNet-50 has 161 trainable ones).
    #[arg(long, default_value_t = 161)]
    pub variables: usize,
    /// Outputs of the models' last layer.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Steps to time per model (after the warm-up).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Steps run before timing starts.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// MiB per gradient all-reduce call (the trainer uses 25).
    #[arg(long, default_value_t = 25.0)]
    pub bucket_mib: f64,
    /// Seconds a collective may wait for the other ranks (train.collective_timeout_secs).
    #[arg(long, default_value_t = 300.0)]
    pub timeout_secs: f64,
}

/// `12`, `25.6M`, `138m`, `1.2G`.
fn parse_count(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, scale) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    match digits.parse::<f64>() {
        Ok(v) if v > 0.0 && (v * scale).is_finite() => Ok((v * scale).round() as usize),
        _ => Err(format!("{s:?}: expected a positive count such as 61706, 25.6M or 1.2G")),
    }
}

/// Runs `ferroflow bench allreduce`.
pub fn run(args: &AllReduceArgs) -> Result<()> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(args.bucket_mib) || !positive(args.timeout_secs) {
        bail!("--bucket-mib and --timeout-secs must be positive");
    }
    let (mut ranks, note) =
        crate::ranks::collective_for(Distributed::Auto, Duration::from_secs_f64(args.timeout_secs))?;
    let leader = ranks.rank() == 0;
    if let Some(note) = note {
        crate::ranks::say(&note);
    }
    let cfg = AllReduceBenchConfig {
        steps: args.steps,
        warmup: args.warmup,
        bucket_bytes: (args.bucket_mib * 1024.0 * 1024.0) as usize,
    };
    let models =
        args.model.iter().map(|name| AllReduceModel::Model { name: name.clone(), classes: args.classes }).chain(
            args.parameters
                .iter()
                .map(|&parameters| AllReduceModel::Synthetic { parameters, variables: args.variables }),
        );
    let mut out = std::io::stdout().lock();
    if leader {
        writeln!(
            out,
            "all-reduce per training step over {} rank(s) ({}), {} MiB buckets, median of {} steps after {} warm-up:",
            ranks.world_size(),
            ranks.describe(),
            args.bucket_mib,
            args.steps,
            args.warmup
        )?;
        writeln!(
            out,
            "{:<12} {:>12} {:>9} {:>7} {:>11} {:>9} {:>11} {:>11}",
            "model", "parameters", "MiB", "calls", "ms/step", "min ms", "algbw MB/s", "busbw MB/s"
        )?;
    }
    for model in models {
        let what = match &model {
            AllReduceModel::Model { name, .. } => name.clone(),
            AllReduceModel::Synthetic { parameters, .. } => format!("{parameters} parameters"),
        };
        let r = bench_allreduce(&model, &cfg, ranks.as_mut()).with_context(|| format!("bench allreduce {what}"))?;
        if leader {
            let name =
                if r.model == "synthetic" { format!("{:.1}M", r.parameters as f64 / 1e6) } else { r.model.clone() };
            let mib = r.gradient_bytes() as f64 / (1024.0 * 1024.0);
            let (p, calls) = (r.parameters, r.buckets + 1);
            if r.ranks == 1 {
                // Nothing was exchanged: no times to show.
                writeln!(
                    out,
                    "{name:<12} {p:>12} {mib:>9.2} {calls:>7} {:>11} {:>9} {:>11} {:>11}",
                    "-", "-", "-", "-"
                )?;
            } else {
                writeln!(
                    out,
                    "{name:<12} {p:>12} {mib:>9.2} {calls:>7} {:>11.3} {:>9.3} {:>11.1} {:>11.1}",
                    r.median_secs * 1e3,
                    r.min_secs * 1e3,
                    r.algorithm_bandwidth() / 1e6,
                    r.bus_bandwidth() / 1e6
                )?;
            }
        }
    }
    if leader && ranks.world_size() == 1 {
        writeln!(
            out,
            "one process: nothing crosses between ranks, so there is nothing to time; run it as \
             `mpirun -np N ferroflow bench allreduce` from a build with --features mpi"
        )?;
    }
    Ok(())
}
