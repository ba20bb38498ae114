//! `ferroflow bench …`: throughput measurements users size hardware with.
//! `bench input` times the input pipeline, `bench train` the training step
//! (random data, training mode, momentum SGD). Both print a summary line and
//! end with `images/s: N`, the line scripts read (`bench/*.py`). `bench
//! checkpoint` times checkpoint save and restore (`bench/checkpoint_io.py`),
//! `bench allreduce` the exchange between data-parallel ranks.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferroflow_data::{Augment, Cursor, Dataset, Mode, Pipeline, PipelineConfig, Preprocess, Source};
use ferroflow_train::{BenchConfig, BenchStep, Distributed, bench_train_on};

use super::prepare::parse_size;

/// `ferroflow bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Input pipeline throughput: TFRecords → decode → resize → random flip → subtract mean → batch.
    Input(InputArgs),
    /// Training-step throughput on random data (training mode, sparse softmax CE, momentum SGD 0.9).
    ///
    /// Each step is forward in training mode (batch statistics, dropout), mean sparse softmax
    /// cross-entropy, backward and a momentum-0.9 update, on a few random batches made up front.
    /// Prints model, step times, peak RSS and a digest of the final weights (equal seeds give
    /// equal digests), then `images/s: N`. Threads: set RAYON_NUM_THREADS (default: every core).
    ///
    /// Under a launcher (`mpirun -np N ferroflow bench train`, a build with --features mpi)
    /// the ranks train data-parallel: --batch is the global batch, each rank takes its share
    /// and every step ends with the trainer's gradient all-reduce; rank 0 reports (the ranks
    /// on a machine share its cores, as in `train`).
    Train(TrainArgs),
    /// Checkpoint save (crash-safe, fsynced) and restore time for a zoo model with Momentum slots.
    Checkpoint(super::bench_checkpoint::CheckpointArgs),
    /// The trainer's exchange between data-parallel ranks per step (mean gradient in 25 MiB
    /// buckets, then the moving statistics), per model size: ms per step and bytes/s.
    ///
    /// Run it under the launcher the training will use, e.g. `mpirun -np 4 --hostfile hosts
    /// ferroflow bench allreduce --parameters 25.6M` (a build with --features mpi). Rank 0
    /// prints one row per model: gradient MiB, all-reduce calls per step, median and fastest
    /// ms per step, algorithm bandwidth (gradient bytes / time) and bus bandwidth (times
    /// 2(n-1)/n, comparable with the link's speed, as NCCL's tests report it).
    Allreduce(super::bench_allreduce::AllReduceArgs),
}

/// Arguments of `ferroflow bench input`.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// A dataset directory (`prepare`'s output; `--split` picks the split), TFRecord files
    /// of tf.train.Examples, or an image folder (class sub-folders, read from disk per batch,
    /// as `train` streams a folder with data.in_memory = false).
    #[arg(value_name = "DATA", required_unless_present = "data")]
    pub paths: Vec<PathBuf>,
    /// The same as DATA, as a flag (`--data DATASET_DIR`).
    #[arg(long = "data", value_name = "DATA")]
    pub data: Vec<PathBuf>,
    /// The split of a dataset directory to read.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Examples per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Output size: N (square) or HxW (bilinear, as tf.image.resize).
    #[arg(long, value_parser = parse_square_or_size, default_value = "224x224")]
    pub size: [usize; 2],
    /// Batches to time (after the warm-up); the stream repeats over epochs.
    #[arg(long, default_value_t = 60, conflicts_with = "epochs")]
    pub batches: usize,
    /// Time as many batches as this many passes over the data hold (rounded up to whole
    /// batches), instead of --batches.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Batches run before timing starts.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Decode/preprocess threads (0: every core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Shuffle buffer (0: none).
    #[arg(long, default_value_t = 0)]
    pub shuffle_buffer: usize,
    /// The fast JPEG path (also --fast-decode): decode at a reduced DCT scale when that still covers
    /// --size, otherwise resize from the YCbCr planes (skipping libjpeg's upsampling and colour
    /// conversion). Pixels differ slightly from TF's decode (docs/PERFORMANCE.md).
    #[arg(long, visible_alias = "fast-decode")]
    pub fast_jpeg: bool,
}

/// `--size`: `N` for N x N, or `HxW`.
fn parse_square_or_size(s: &str) -> Result<[usize; 2], String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("{s:?}: sizes must be positive")),
        Ok(n) => Ok([n, n]),
        Err(_) => parse_size(s).map_err(|e| format!("{e} (or one number for a square)")),
    }
}

/// Arguments of `ferroflow bench train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A zoo model (`ferroflow models`) or a .toml model declaration; it must end in a dense layer.
    #[arg(long, default_value = "cifar_cnn")]
    pub model: String,
    /// Examples per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Steps to time (after the warm-up).
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// Steps run before timing starts.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Seed of the weights, the random data and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Classes (outputs of the last dense layer, range of the random labels).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Learning rate (constant).
    #[arg(long, default_value_t = 0.01)]
    pub learning_rate: f64,
    /// Override the model's input size HxWxC (e.g. 28x28x1).
    #[arg(long, value_name = "HxWxC", value_parser = parse_input)]
    pub input: Option<[usize; 3]>,
    /// cpu or cuda[:N] (CUDA needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Comma-separated scopes that train, the rest frozen (a fine-tuning step, e.g. resnet_v1_50/logits):
    /// frozen layers compute no weight gradients, and nothing below the lowest trainable one is back-propagated.
    #[arg(long, value_name = "SCOPES", value_delimiter = ',')]
    pub trainable_scopes: Vec<String>,
}

/// Parses `HxWxC` (`28x28x1`).
fn parse_input(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split(['x', 'X', ',']).collect();
    let [h, w, c] = parts.as_slice() else {
        return Err(format!("{s:?}: expected HEIGHTxWIDTHxCHANNELS, e.g. 32x32x3"));
    };
    let mut dims = [0usize; 3];
    for (d, (part, what)) in dims.iter_mut().zip([(h, "height"), (w, "width"), (c, "channels")]) {
        *d = part.trim().parse().map_err(|_| format!("{s:?}: {what} {part:?} is not a number"))?;
        if *d == 0 {
            return Err(format!("{s:?}: {what} must be positive"));
        }
    }
    Ok(dims)
}

/// Runs a bench subcommand.
pub fn run(command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Input(args) => input(args),
        BenchCommand::Train(args) => train(args),
        BenchCommand::Checkpoint(args) => super::bench_checkpoint::run(args),
        BenchCommand::Allreduce(args) => super::bench_allreduce::run(args),
    }
}

fn input(args: &InputArgs) -> Result<()> {
    if args.batch == 0 || args.batches == 0 || args.epochs == Some(0) {
        bail!("--batch, --batches and --epochs must be at least 1");
    }
    let paths: Vec<PathBuf> = args.paths.iter().chain(&args.data).cloned().collect();
    // ImageNet means, as TF-slim's vgg_preprocessing.
    const IMAGENET_MEAN: [f32; 3] = [123.68, 116.78, 103.94];
    let (source, mean) = match paths.as_slice() {
        [] => bail!("no data: give a dataset directory, TFRecord files or an image folder (DATA or --data)"),
        [dir] if dir.is_dir() && !dir.join(ferroflow_data::DATASET_JSON).exists() => {
            let folder = ferroflow_data::list_folder(dir, 0.0, 0)?;
            let entries = if args.split == "train" { folder.train } else { folder.validation };
            (Source::Files { entries: std::sync::Arc::new(entries) }, IMAGENET_MEAN)
        }
        [dir] if dir.is_dir() => {
            let ds = Dataset::open(dir)?;
            (Source::Records { files: ds.files(&args.split)? }, ds.meta.mean.map(|v| v as f32))
        }
        files => (Source::Records { files: files.to_vec() }, IMAGENET_MEAN),
    };
    let config = PipelineConfig {
        batch_size: args.batch,
        shuffle_buffer: args.shuffle_buffer,
        shuffle_files: false,
        num_workers: args.workers,
        prefetch: 4,
        fast_jpeg: args.fast_jpeg,
        ..Default::default()
    };
    let preprocess = Preprocess {
        image_size: args.size,
        channels: 3,
        train: Augment { flip_left_right: true, ..Default::default() },
        mean: Some(mean),
        ..Default::default()
    };
    let mut pipeline = Pipeline::new(source, Mode::Train, config, preprocess, Cursor::default())?;
    let mut checksum = 0.0f64;
    for _ in 0..args.warmup {
        if let Some(b) = pipeline.next() {
            pipeline.recycle(b?);
        }
    }
    // --epochs E: as many batches as E passes over the data hold.
    let batches = match args.epochs {
        Some(e) => {
            usize::try_from(e).unwrap_or(usize::MAX).saturating_mul(pipeline.examples_per_epoch()).div_ceil(args.batch)
        }
        None => args.batches,
    };
    let start = Instant::now();
    let mut images = 0usize;
    for _ in 0..batches {
        let Some(batch) = pipeline.next() else { break };
        let batch = batch?;
        checksum += f64::from(batch.images[0]);
        images += batch.size;
        pipeline.recycle(batch);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "input pipeline: {images} images in {secs:.2}s, batch {}, {}x{}, {} decode threads, fast_jpeg {} (checksum {checksum:.1})",
        args.batch,
        args.size[0],
        args.size[1],
        if args.workers == 0 { rayon_threads() } else { args.workers },
        args.fast_jpeg
    );
    println!(
        "JPEG decoder: libjpeg-turbo, SIMD {}",
        if ferroflow_data::jpeg_simd() { "on" } else { "OFF (built without nasm: install nasm and rebuild)" }
    );
    if pipeline.skipped() > 0 {
        println!("skipped {} undecodable example(s)", pipeline.skipped());
    }
    println!("images/s: {:.1}", images as f64 / secs);
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn train(args: &TrainArgs) -> Result<()> {
    let config = BenchConfig {
        model: args.model.clone(),
        input: args.input,
        classes: args.classes,
        batch_size: args.batch,
        steps: args.steps,
        warmup: args.warmup,
        seed: args.seed,
        learning_rate: args.learning_rate,
        device: args.device.clone(),
        trainable_scopes: args.trainable_scopes.clone(),
        ..Default::default()
    };
    let total = args.warmup + args.steps;
    let live = std::io::stderr().is_terminal();
    let on_step = |s: &BenchStep| {
        if live {
            let phase = if s.warmup { "warm-up" } else { "timed" };
            eprint!("\rstep {}/{total} ({phase}): loss {:.4}, {:.1} ms   ", s.step, s.loss, s.secs * 1e3);
            let _ = std::io::stderr().flush();
        }
    };
    let (mut ranks, note) = crate::ranks::collective_for(Distributed::Auto, Duration::from_secs(300))?;
    if let Some(note) = note {
        crate::ranks::say(&note);
    }
    let leader = ranks.rank() == 0;
    let report = bench_train_on(&config, ranks.as_mut(), &mut |s: &BenchStep| {
        if leader {
            on_step(s)
        }
    })
    .with_context(|| format!("bench train {}", args.model))?;
    if live && leader {
        eprintln!();
    }
    if ranks.world_size() > 1 {
        crate::ranks::say(&format!(
            "rank {} of {}: weights digest {:016x}",
            ranks.rank(),
            ranks.world_size(),
            report.weights_digest
        ));
    }
    if !leader {
        return Ok(());
    }
    let [h, w, c] = report.input;
    let rss = crate::runtime::peak_rss_mib().map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "bench train: {} ({h}x{w}x{c}, {} parameters), batch {}, {} steps after {} warm-up, {} threads, {}: \
         {:.2}s, {:.1} ms/step (median {:.1}, min {:.1}), final loss {:.4}, peak RSS {rss}, weights digest {:016x}",
        report.model,
        report.parameters,
        report.batch_size,
        report.steps,
        report.warmup,
        if report.ranks > 1 {
            format!("{} ranks ({}) x {}", report.ranks, ranks.describe(), report.threads)
        } else {
            report.threads.to_string()
        },
        report.device,
        report.secs,
        report.step_ms_mean,
        report.step_ms_median,
        report.step_ms_min,
        report.final_loss,
        report.weights_digest,
    )?;
    writeln!(out, "images/s: {:.1}", report.images_per_sec)?;
    Ok(())
}
