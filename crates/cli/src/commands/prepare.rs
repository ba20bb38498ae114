//! `ferroflow prepare DIR --out DATASET_DIR`: image folder → sharded TFRecords.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use ferroflow_data::{Encoding, PrepareOptions, prepare};

use crate::progress::Progress;

/// Storage encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    /// The original file bytes, TF-slim keys (image/encoded, image/format, image/class/label, …).
    Original,
    /// Decoded, resized pixels: img_raw, label, height, width, channels.
    Raw,
}

/// Compression of the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Plain TFRecords.
    None,
    /// GZIP (TFRecordOptions compression_type="GZIP"), files end in .tfrecord.gz.
    Gzip,
}

/// Arguments of `ferroflow prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Class sub-folders (or train/ and val/ of class sub-folders, or a flat folder with --labels-csv).
    pub dir: PathBuf,
    /// Output dataset directory (shards, labels.txt, dataset.json).
    #[arg(long, value_name = "DATASET_DIR")]
    pub out: PathBuf,
    /// Fraction of each class held out for validation (ignored for a train/ + val/ folder).
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Shards per split [default: one per 1,000 training images].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// How to store images.
    #[arg(long, value_enum, default_value_t = EncodingArg::Original)]
    pub encoding: EncodingArg,
    /// Resize every image to HxW (TF bilinear), e.g. 224x224.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    pub resize: Option<[usize; 2]>,
    /// Channels to store, 1 or 3 [default: 1 if every image is greyscale, else 3].
    #[arg(long, value_name = "C")]
    pub channels: Option<usize>,
    /// CSV of `filename,target[,target…]`: makes a regression dataset with float targets.
    #[arg(long, value_name = "FILE")]
    pub labels_csv: Option<PathBuf>,
    /// DIR holds inputs/ and targets/ with the same file names: an image-to-image dataset
    /// (each record's image/target/encoded; train it with data.targets = "paired").
    #[arg(long, conflicts_with = "labels_csv")]
    pub paired: bool,
    /// Shard compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Seed of the train/validation split and of the shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Convert only this shard (with --num-shards), so a cluster can run many jobs.
    #[arg(long, value_name = "I", requires = "num_shards")]
    pub shard_index: Option<usize>,
    /// Total shards when converting one slice (must equal --shards).
    #[arg(long, value_name = "N", requires = "shard_index")]
    pub num_shards: Option<usize>,
}

/// Parses `HxW` (also `H,W`).
pub fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let parts: Vec<&str> = s.split(['x', 'X', ',']).collect();
    match parts.as_slice() {
        [h, w] => {
            let h: usize = h.trim().parse().map_err(|_| format!("{s:?}: height {h:?} is not a number"))?;
            let w: usize = w.trim().parse().map_err(|_| format!("{s:?}: width {w:?} is not a number"))?;
            if h == 0 || w == 0 {
                return Err(format!("{s:?}: sizes must be positive"));
            }
            Ok([h, w])
        }
        _ => Err(format!("{s:?}: expected HEIGHTxWIDTH, e.g. 224x224")),
    }
}

/// Runs the command.
pub fn run(args: &PrepareArgs) -> Result<()> {
    if let Some(n) = args.shards
        && n == 0
    {
        bail!("--shards must be at least 1");
    }
    let shards = args.shards.or(args.num_shards);
    let options = PrepareOptions {
        val_fraction: args.val_fraction,
        shards,
        encoding: match args.encoding {
            EncodingArg::Original => Encoding::Original,
            EncodingArg::Raw => Encoding::Raw,
        },
        resize: args.resize,
        channels: args.channels,
        labels_csv: args.labels_csv.clone(),
        paired: args.paired,
        gzip: args.compression == CompressionArg::Gzip,
        seed: args.seed,
        slice: args.shard_index.zip(args.num_shards),
        ..Default::default()
    };
    let progress = Progress::new("prepare", 0);
    let report = prepare(&args.dir, &args.out, &options, &|d, t| progress.update(d as u64, t as u64))?;
    let meta = &report.meta;
    let written: usize = meta.splits.values().map(|s| s.count).sum();
    progress.finish(written as u64);
    for s in &meta.skipped {
        eprintln!("warning: skipped {}: {}", s.path, s.reason);
    }
    if !report.finished {
        println!(
            "wrote {} ({} shard file(s)); dataset.json is written when every slice has finished",
            report.written.join(", "),
            report.written.len()
        );
        return Ok(());
    }
    println!("{}: {} classes, encoding {:?}", args.out.display(), meta.classes.len(), meta.encoding);
    for (name, split) in &meta.splits {
        println!("  {name}: {} examples in {} shard(s)", split.count, split.files.len());
    }
    if !meta.skipped.is_empty() {
        println!("  skipped: {} unreadable image(s)", meta.skipped.len());
    }
    println!(
        "  train mean (0-255): [{:.2}, {:.2}, {:.2}]  std: [{:.2}, {:.2}, {:.2}]",
        meta.mean[0], meta.mean[1], meta.mean[2], meta.std[0], meta.std[1], meta.std[2]
    );
    Ok(())
}
