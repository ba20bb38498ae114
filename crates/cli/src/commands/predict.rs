//! `ferroflow predict`: the top-k classes of images, with the eval
//! preprocessing recorded in the checkpoint.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferroflow_train::{RestoredModel, TrainError, collect_images, predict};

/// Arguments of `ferroflow predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A checkpoint file (model.ckpt-N.safetensors) or prefix.
    #[arg(long, value_name = "PATH", conflicts_with = "train_dir")]
    pub checkpoint: Option<PathBuf>,
    /// A train dir: use its latest checkpoint.
    #[arg(long, value_name = "DIR")]
    pub train_dir: Option<PathBuf>,
    /// Image files, or directories searched recursively for images.
    #[arg(required = true, value_name = "IMAGE_OR_DIR")]
    pub images: Vec<PathBuf>,
    /// Classes shown per image.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Print one JSON object per line: {"path", "top": [{"class", "label", "probability"}]}
    /// (a regression model: {"path", "values"}).
    #[arg(long)]
    pub json: bool,
    /// With --train-dir: use the best checkpoint (kept in DIR/best/ by checkpoint.keep_best).
    #[arg(long, requires = "train_dir")]
    pub best: bool,
    /// An image-to-image model (data.targets = "input"): write its output images here, as PNG.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// cpu or cuda[:N] (CUDA needs a build with --features cuda: scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs the command.
pub fn run(args: &PredictArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let checkpoint = super::checkpoint_source(args.checkpoint.as_deref(), args.train_dir.as_deref(), args.best)?;
    if args.top_k == 0 {
        bail!(TrainError::config("--top-k", "must be at least 1"));
    }
    let device = ferroflow_train::device(&args.device)?;
    let restored =
        RestoredModel::load(&checkpoint, &device).with_context(|| format!("restoring {}", checkpoint.display()))?;
    if let Some(notice) = &restored.integrity_notice {
        eprintln!("{notice}");
    }
    let images = collect_images(&args.images)?;
    if images.is_empty() {
        bail!(TrainError::config("IMAGE_OR_DIR", "no image files found"));
    }
    let predictions = predict(&restored, &images, args.top_k, args.batch_size, args.out.as_deref())?;
    for p in &predictions {
        if let Some(file) = &p.output {
            if args.json {
                writeln!(out, "{}", serde_json::json!({"path": p.path, "output": file}))?;
            } else {
                writeln!(out, "{} -> {}", p.path.display(), file.display())?;
            }
            continue;
        }
        if !p.values.is_empty() {
            // A regression model: its predicted targets.
            if args.json {
                writeln!(out, "{}", serde_json::json!({"path": p.path, "values": p.values}))?;
            } else {
                let values: Vec<String> = p.values.iter().map(|v| format!("{v:.6}")).collect();
                writeln!(out, "{}: {}", p.path.display(), values.join(", "))?;
            }
            continue;
        }
        if args.json {
            let top: Vec<_> = p
                .top
                .iter()
                .map(|(class, label, prob)| serde_json::json!({"class": class, "label": label, "probability": prob}))
                .collect();
            writeln!(out, "{}", serde_json::json!({"path": p.path, "top": top}))?;
        } else {
            let top: Vec<String> = p.top.iter().map(|(class, _, prob)| format!("{class} {prob:.4}")).collect();
            writeln!(out, "{}: {}", p.path.display(), top.join(", "))?;
        }
    }
    Ok(())
}
