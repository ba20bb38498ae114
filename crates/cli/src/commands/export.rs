//! `ferroflow export`: a checkpoint in another framework's format. Today:
//! a TensorFlow checkpoint bundle (`--format tf-checkpoint`), readable by
//! `tf.train.load_checkpoint` and restorable by `tf.compat.v1.train.Saver`
//! into a graph with the same variable names. ONNX is not built yet.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ferroflow_train::TrainError;
use ferroflow_train::checkpoint::{Checkpoint, export_tensor_bundle, resolve_checkpoint};

/// The formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A TensorFlow V2 checkpoint: PREFIX.index + PREFIX.data-00000-of-00001, and the directory's
    /// `checkpoint` state file (conv kernels HWIO, TF's names, optimizer slots and global_step).
    TfCheckpoint,
}

/// Arguments of `ferroflow export`.
#[derive(Debug, Args)]
#[command(after_help = "Not yet built: --format onnx.")]
pub struct ExportArgs {
    /// A train dir: export its latest checkpoint.
    #[arg(long, value_name = "DIR", conflicts_with = "checkpoint")]
    pub train_dir: Option<PathBuf>,
    /// A checkpoint file (model.ckpt-N.safetensors), prefix (model.ckpt-N) or TF checkpoint.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// What to write.
    #[arg(long, value_enum, default_value = "tf-checkpoint")]
    pub format: ExportFormat,
    /// The output: a TF checkpoint prefix, e.g. exported/model.ckpt-300.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

/// Runs the command.
pub fn run(args: &ExportArgs) -> Result<()> {
    let Some(source) = args.checkpoint.as_ref().or(args.train_dir.as_ref()) else {
        bail!(TrainError::config("--train-dir / --checkpoint", "give one of them"));
    };
    let path = resolve_checkpoint(source)?;
    let checkpoint = Checkpoint::load(&path)?;
    if let Some(notice) = checkpoint.integrity_notice(&path) {
        eprintln!("{notice}");
    }
    match args.format {
        ExportFormat::TfCheckpoint => {
            let out = export_tensor_bundle(&checkpoint, &args.out)
                .with_context(|| format!("exporting {} to {}", path.display(), args.out.display()))?;
            println!(
                "{} (step {}) -> {} and {}: {} tensors, {:.1} MB; listed in {}",
                path.display(),
                checkpoint.meta.global_step,
                out.index.display(),
                out.data.display(),
                out.tensors,
                out.bytes as f64 / 1e6,
                out.state.display()
            );
        }
    }
    Ok(())
}
