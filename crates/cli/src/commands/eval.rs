//! `ferroflow eval`: restore a checkpoint and report loss, accuracy, top-5,
//! per-class accuracy and the confusion matrix on a split.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferroflow_train::{EvalOptions, Metrics, evaluate_checkpoint};

use super::BareArgs;
use crate::progress::Progress;

/// Arguments of `ferroflow eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A train dir: evaluate its latest checkpoint (results also go to <DIR>/eval/ for TensorBoard).
    #[arg(long, value_name = "DIR", conflicts_with = "checkpoint")]
    pub train_dir: Option<PathBuf>,
    /// A checkpoint file (model.ckpt-N.safetensors) or prefix (model.ckpt-N).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// The dataset directory or image folder (default: the run's own data.path).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The split: validation or train.
    #[arg(long, default_value = "validation")]
    pub split: String,
    /// Examples per batch (default: the run's batch size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Print one JSON object: step, loss, accuracy, top5, count, confusion, per_class_accuracy, classes
    /// (and regression: mse, mae, rmse, r2 per target).
    #[arg(long)]
    pub json: bool,
    /// With --train-dir: evaluate the best checkpoint (kept in DIR/best/ by checkpoint.keep_best).
    #[arg(long, requires = "train_dir")]
    pub best: bool,
    /// cpu or cuda[:N] (CUDA needs a build with --features cuda: scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub bare: BareArgs,
}

/// Above this many classes the text report leaves out the confusion matrix.
const MAX_PRINTED_CLASSES: usize = 30;

/// Runs the command.
pub fn run(args: &EvalArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let checkpoint = super::checkpoint_source(args.checkpoint.as_deref(), args.train_dir.as_deref(), args.best)?;
    let options = EvalOptions {
        checkpoint: checkpoint.clone(),
        data: args.data.clone(),
        split: args.split.clone(),
        batch_size: args.batch_size,
        write_summaries: true,
        device: args.device.clone(),
        bare: args.bare.resolve()?,
    };
    let mut bar: Option<Progress> = None;
    let result = evaluate_checkpoint(&options, &mut |done, total| {
        bar.get_or_insert_with(|| Progress::new("evaluating", total as u64)).update(done as u64, total as u64);
    })
    .with_context(|| format!("evaluating {}", checkpoint.display()))?;
    if let Some(bar) = bar {
        bar.finish(result.report.count as u64);
    }
    if let Some(notice) = &result.integrity_notice {
        eprintln!("{notice}");
    }
    let r = &result.report;
    if args.json {
        let json = serde_json::json!({
            "step": result.step,
            "checkpoint": result.checkpoint,
            "split": result.split,
            "ema": result.ema,
            "loss": r.loss,
            "accuracy": r.accuracy,
            "top5": r.top5,
            "count": r.count,
            "classes": result.classes,
            "per_class_accuracy": r.per_class_accuracy(),
            "confusion": r.confusion,
            "regression": r.regression,
            "reconstruction": r.reconstruction,
        });
        writeln!(out, "{json}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{} (step {}{}), {} split: {} examples",
        result.checkpoint.display(),
        result.step,
        if result.ema { ", moving-average weights" } else { "" },
        result.split,
        r.count
    )?;
    if let Some(rec) = &r.reconstruction {
        writeln!(out, "mse (0-255 pixels): {:.2}; the model's input: {:.2}", rec.mse, rec.input_mse)?;
        writeln!(out, "mae (0-255 pixels): {:.2}", rec.mae)?;
        writeln!(out, "psnr: {:.2} dB; the model's input: {:.2} dB", rec.psnr, rec.input_psnr)?;
        writeln!(out, "loss: {:.4}", r.loss)?;
        return Ok(());
    }
    if let Some(reg) = &r.regression {
        writeln!(out, "{}", crate::report::regression_table(reg))?;
        writeln!(out, "loss: {:.4}", r.loss)?;
        writeln!(out, "r2: {:.4}", reg.r2)?;
        return Ok(());
    }
    let metrics =
        Metrics { count: r.count, loss_sum: 0.0, correct: 0, correct_top5: 0, confusion: r.confusion.clone() };
    // A 1000-class matrix is no use on a terminal: --json has it.
    let many = result.classes.len() > MAX_PRINTED_CLASSES;
    if many {
        writeln!(out, "confusion matrix: {} classes, printed by --json", result.classes.len())?;
    } else {
        let text = metrics.confusion_text(&result.classes);
        writeln!(out, "confusion matrix (rows: label, columns: prediction):\n{text}")?;
    }
    writeln!(out, "per-class accuracy{}:", if many { " (classes with examples)" } else { "" })?;
    for (name, acc) in result.classes.iter().zip(r.per_class_accuracy()) {
        match acc {
            Some(a) => writeln!(out, "  {name:>12}  {a:.4}")?,
            None if !many => writeln!(out, "  {name:>12}  (no examples)")?,
            None => {}
        }
    }
    writeln!(out, "loss: {:.4}", r.loss)?;
    writeln!(out, "top-5 accuracy: {:.4}", r.top5)?;
    writeln!(out, "accuracy: {:.4}", r.accuracy)?;
    Ok(())
}
