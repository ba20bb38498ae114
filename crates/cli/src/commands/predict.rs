//! `ferroflow predict`: the top-k classes of images, with the eval
//! preprocessing recorded in the checkpoint.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferroflow_train::{PredictOptions, RestoredModel, TrainError, collect_images, predict};

use super::BareArgs;

/// Arguments of `ferroflow predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A checkpoint file (model.ckpt-N.safetensors) or prefix.
    #[arg(long, value_name = "PATH", conflicts_with = "train_dir")]
    pub checkpoint: Option<PathBuf>,
    /// A train dir: use its latest checkpoint.
    #[arg(long, value_name = "DIR")]
    pub train_dir: Option<PathBuf>,
    /// Image files, directories searched recursively for images, or .npy files of preprocessed float32 NHWC
    /// inputs (skipping decoding and preprocessing, to debug them against another framework's).
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
    /// Also print each image's raw logits (JSON: "logits").
    #[arg(long)]
    pub logits: bool,
    #[command(flatten)]
    pub bare: BareArgs,
}

/// Runs the command.
pub fn run(args: &PredictArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let checkpoint = super::checkpoint_source(args.checkpoint.as_deref(), args.train_dir.as_deref(), args.best)?;
    if args.top_k == 0 {
        bail!(TrainError::config("--top-k", "must be at least 1"));
    }
    let device = ferroflow_train::device(&args.device)?;
    let restored = match args.bare.resolve()? {
        Some(bare) => RestoredModel::load_bare(&checkpoint, &bare, &device),
        None => RestoredModel::load(&checkpoint, &device),
    }
    .with_context(|| format!("restoring {}", checkpoint.display()))?;
    if let Some(notice) = &restored.integrity_notice {
        eprintln!("{notice}");
    }
    let images = collect_images(&args.images)?;
    if images.is_empty() {
        bail!(TrainError::config("IMAGE_OR_DIR", "no image files found"));
    }
    let options = PredictOptions {
        top_k: args.top_k,
        batch_size: args.batch_size,
        out_dir: args.out.clone(),
        logits: args.logits,
    };
    let predictions = predict(&restored, &images, &options)?;
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
            let mut line = serde_json::json!({"path": p.path, "top": top});
            if args.logits {
                line["logits"] = serde_json::json!(p.logits);
            }
            writeln!(out, "{line}")?;
        } else {
            let top: Vec<String> = p.top.iter().map(|(class, _, prob)| format!("{class} {prob:.4}")).collect();
            writeln!(out, "{}: {}", p.path.display(), top.join(", "))?;
            if args.logits {
                let logits: Vec<String> = p.logits.iter().map(|v| format!("{v:.6}")).collect();
                writeln!(out, "  logits: {}", logits.join(" "))?;
            }
        }
    }
    Ok(())
}
