//! [`bench_train`] with the system allocator (glibc malloc on Linux), to
//! measure what the `ferroflow` binary's mimalloc buys (docs/PERFORMANCE.md):
//!
//! ```sh
//! cargo run --release -p ferroflow-train --example bench_glibc -- [MODEL] [BATCH] [STEPS] [WARMUP]
//! ferroflow bench train --model MODEL --batch BATCH --steps STEPS --warmup WARMUP   # the same, with mimalloc
//! ```
//!
//! It prints the same two lines as `ferroflow bench train` (the second `images/s: N`).

use std::process::ExitCode;

use ferroflow_train::{BenchConfig, bench_train};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    args.get(i).map_or(Ok(default), |s| s.parse().map_err(|_| format!("argument {}: {s:?} is not valid", i + 1)))
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let defaults = BenchConfig::default();
    let config = BenchConfig {
        model: arg(&args, 0, defaults.model.clone())?,
        batch_size: arg(&args, 1, defaults.batch_size)?,
        steps: arg(&args, 2, defaults.steps)?,
        warmup: arg(&args, 3, defaults.warmup)?,
        ..defaults
    };
    let report = bench_train(&config, &mut |_| {}).map_err(|e| e.to_string())?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).map_or("n/a", str::trim);
    println!(
        "bench train (system allocator): {}, batch {}, {} steps after {} warm-up: {:.2}s, {:.1} ms/step \
         (median {:.1}), peak RSS {peak}, weights digest {:016x}",
        report.model,
        report.batch_size,
        report.steps,
        report.warmup,
        report.secs,
        report.step_ms_mean,
        report.step_ms_median,
        report.weights_digest
    );
    println!("images/s: {:.1}", report.images_per_sec);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
