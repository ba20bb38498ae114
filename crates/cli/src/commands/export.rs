//! `ferroflow export`: a checkpoint in another framework's format: a
//! TensorFlow checkpoint bundle (`--format tf-checkpoint`), readable by
//! `tf.train.load_checkpoint` and restorable by `tf.compat.v1.train.Saver`
//! into a graph with the same variable names, or an ONNX model
//! (`--format onnx`) for ONNX Runtime and other ONNX tools.

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
    /// An ONNX model (opset 17) of the inference graph: input `input` [batch, C, H, W] float32
    /// NCHW, preprocessed as its metadata says; outputs `logits` and `probabilities`
    /// (classifiers) or `output`. Batch norm uses the moving statistics, dropout is removed,
    /// and the moving averages replace the weights when the checkpoint has them (as eval).
    Onnx,
}

/// Arguments of `ferroflow export`.
#[derive(Debug, Args)]
#[command(after_help = "ONNX: the graph input is NCHW, already preprocessed; the model's metadata_props \
    hold the steps (ferroflow.preprocessing, and as JSON ferroflow.preprocessing.json) and the class \
    names (ferroflow.classes). Builds without the `onnx` cargo feature refuse --format onnx.")]
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
    /// The output: a TF checkpoint prefix (exported/model.ckpt-300), or a file for ONNX (model.onnx).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// Runs the command.
pub fn run(args: &ExportArgs) -> Result<()> {
    let Some(source) = args.checkpoint.as_ref().or(args.train_dir.as_ref()) else {
        bail!(TrainError::config("--train-dir / --checkpoint", "give one of them"));
    };
    match args.format {
        ExportFormat::TfCheckpoint => {
            let path = resolve_checkpoint(source)?;
            let checkpoint = Checkpoint::load(&path)?;
            if let Some(notice) = checkpoint.integrity_notice(&path) {
                eprintln!("{notice}");
            }
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
        ExportFormat::Onnx => onnx::run(source, &args.out)?,
    }
    Ok(())
}

#[cfg(feature = "onnx")]
mod onnx {
    use std::path::Path;

    use anyhow::{Context, Result};
    use ferroflow_onnx::{ExportOptions, OPSET, export_model, to_bytes};
    use ferroflow_train::checkpoint::write_atomic;
    use ferroflow_train::{Objective, RestoredModel};

    /// Exports `source`'s checkpoint (with its moving averages, as eval) as the ONNX file `out`.
    pub fn run(source: &Path, out: &Path) -> Result<()> {
        let restored = RestoredModel::load(source, &candle_core::Device::Cpu)?;
        if let Some(notice) = &restored.integrity_notice {
            eprintln!("{notice}");
        }
        let p = &restored.preprocess;
        let [h, w] = p.image_size;
        let metadata = vec![
            (
                "ferroflow.input".to_string(),
                format!(
                    "input: float32 [batch, {}, {h}, {w}], NCHW, images preprocessed as ferroflow.preprocessing says",
                    p.channels
                ),
            ),
            ("ferroflow.preprocessing".to_string(), p.describe_eval()),
            ("ferroflow.preprocessing.json".to_string(), serde_json::to_string(p)?),
            ("ferroflow.classes".to_string(), serde_json::to_string(&restored.classes)?),
            ("ferroflow.model".to_string(), serde_json::to_string(&restored.spec)?),
            ("ferroflow.checkpoint".to_string(), restored.path.display().to_string()),
            ("ferroflow.global_step".to_string(), restored.step.to_string()),
            ("ferroflow.moving_averages".to_string(), restored.ema.to_string()),
        ];
        let target_stats = match &restored.objective {
            Objective::Regression { stats, .. } => Some((stats.mean.clone(), stats.std.clone())),
            _ => None,
        };
        let options = ExportOptions {
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            metadata,
            doc: format!("{} exported by ferroflow from {}", restored.spec.name, restored.path.display()),
            target_stats,
        };
        let model = export_model(&restored.spec, &restored.model, &options)
            .with_context(|| format!("exporting {} to ONNX", restored.path.display()))?;
        let bytes = to_bytes(&model);
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
        let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
        println!(
            "{} (step {}{}) -> {}: ONNX opset {OPSET}, {} nodes, {:.1} MB; input `input` [batch, {}, {h}, {w}] NCHW",
            restored.path.display(),
            restored.step,
            if restored.ema { ", moving averages" } else { "" },
            out.display(),
            nodes,
            bytes.len() as f64 / 1e6,
            p.channels
        );
        Ok(())
    }
}

#[cfg(not(feature = "onnx"))]
mod onnx {
    use std::path::Path;

    use anyhow::{Result, bail};

    /// This build has no ONNX export.
    pub fn run(_source: &Path, _out: &Path) -> Result<()> {
        bail!(
            "--format onnx: this ferroflow was built without the `onnx` cargo feature; rebuild with \
             `cargo build --release --features onnx` (needs protoc: apt-get install protobuf-compiler)"
        )
    }
}
