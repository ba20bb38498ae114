//! `ferroflow bench …`: throughput measurements users size hardware with.
//! (`bench train` arrives with the model milestone.)

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use ferroflow_data::{Augment, Cursor, Dataset, Mode, Pipeline, PipelineConfig, Preprocess, Source};

use super::prepare::parse_size;

/// `ferroflow bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Input pipeline throughput: TFRecords → decode → resize → random flip → subtract mean → batch.
    Input(InputArgs),
}

/// Arguments of `ferroflow bench input`.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// A dataset directory (its train split) or TFRecord files of tf.train.Examples.
    #[arg(required = true)]
    pub data: Vec<PathBuf>,
    /// Examples per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Output size HxW (bilinear, as tf.image.resize).
    #[arg(long, value_parser = parse_size, default_value = "224x224")]
    pub size: [usize; 2],
    /// Batches to time (after the warm-up); the stream repeats over epochs.
    #[arg(long, default_value_t = 60)]
    pub batches: usize,
    /// Batches run before timing starts.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Decode/preprocess threads (0: every core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Shuffle buffer (0: none).
    #[arg(long, default_value_t = 0)]
    pub shuffle_buffer: usize,
    /// Decode JPEGs at a reduced DCT scale when that still covers --size.
    #[arg(long)]
    pub fast_jpeg: bool,
}

/// Runs a bench subcommand.
pub fn run(command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Input(args) => input(args),
    }
}

fn input(args: &InputArgs) -> Result<()> {
    if args.batch == 0 || args.batches == 0 {
        bail!("--batch and --batches must be at least 1");
    }
    let (files, mean) = match args.data.as_slice() {
        [dir] if dir.is_dir() => {
            let ds = Dataset::open(dir)?;
            (ds.files("train")?, ds.meta.mean.map(|v| v as f32))
        }
        files => (files.to_vec(), [123.68, 116.78, 103.94]), // ImageNet means, as TF-slim's vgg_preprocessing
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
    let mut pipeline = Pipeline::new(Source::Records { files }, Mode::Train, config, preprocess, Cursor::default())?;
    let mut checksum = 0.0f64;
    for _ in 0..args.warmup {
        if let Some(b) = pipeline.next() {
            pipeline.recycle(b?);
        }
    }
    let start = Instant::now();
    let mut images = 0usize;
    for _ in 0..args.batches {
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
    if pipeline.skipped() > 0 {
        println!("skipped {} undecodable example(s)", pipeline.skipped());
    }
    println!("images/s: {:.1}", images as f64 / secs);
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
