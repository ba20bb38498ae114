//! One module per command; each exposes its clap arguments and a `run`.

pub mod bench;
pub mod bench_allreduce;
pub mod bench_checkpoint;
pub mod dump;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod models;
pub mod predict;
pub mod prepare;
pub mod records;
pub mod survey;
pub mod train;

/// The checkpoint `eval` and `predict` restore: `--checkpoint PATH`,
/// `--train-dir DIR` (its latest), or with `--best` the best checkpoint that
/// `checkpoint.keep_best` keeps in `DIR/best/`.
pub fn checkpoint_source(
    checkpoint: Option<&std::path::Path>,
    train_dir: Option<&std::path::Path>,
    best: bool,
) -> anyhow::Result<std::path::PathBuf> {
    use ferroflow_train::TrainError;
    if best {
        let Some(dir) = train_dir else {
            anyhow::bail!(TrainError::config("--best", "needs --train-dir DIR (the best checkpoint is in DIR/best/)"));
        };
        let best = dir.join("best");
        if !best.join(ferroflow_train::checkpoint::STATE_FILE).exists() {
            anyhow::bail!(TrainError::config(
                "--best",
                format!("{} holds no best checkpoint: train with --set checkpoint.keep_best=true", best.display())
            ));
        }
        return Ok(best);
    }
    match checkpoint.or(train_dir) {
        Some(p) => Ok(p.to_path_buf()),
        None => anyhow::bail!(TrainError::config("--checkpoint / --train-dir", "give one of them")),
    }
}

/// True when the error is a closed stdout (`ferroflow records … | head`),
/// which is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// True when the error is a bad setting (a config key or flag value), which
/// exits with the usage code 2 rather than the runtime code 1.
pub fn is_usage_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<ferroflow_train::TrainError>(), Some(ferroflow_train::TrainError::Config { .. }))
    })
}

/// Options of `eval` and `predict` for a checkpoint without ferroflow's
/// metadata, such as one of TF-slim's published ImageNet checkpoints.
#[derive(Debug, clap::Args)]
pub struct BareArgs {
    /// The checkpoint has no ferroflow metadata (a TF checkpoint prefix such as resnet_v1_50.ckpt, or a plain
    /// safetensors file): it holds this zoo model's variables, by TF-slim's names. The number of classes is read
    /// from its logits.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// With --model: vgg, inception or none (default: TF-slim's for the model: vgg for VGG, ResNet v1 and AlexNet;
    /// inception for Inception and ResNet v2).
    #[arg(long, value_name = "KIND", requires = "model")]
    pub preprocessing: Option<String>,
    /// With --model: the data's label i is output i + N (1 for TF-slim's 1001-class checkpoints, whose output 0 is
    /// the background class).
    #[arg(long, value_name = "N", requires = "model", default_value_t = 0)]
    pub labels_offset: usize,
    /// With --model: names of the model's outputs, one per line, or TF-slim's labels.txt (INDEX:NAME lines).
    #[arg(long, value_name = "FILE", requires = "model")]
    pub labels: Option<std::path::PathBuf>,
}

impl BareArgs {
    /// The bare-checkpoint reading these flags ask for (`None` without `--model`).
    pub fn resolve(&self) -> anyhow::Result<Option<ferroflow_train::BareCheckpoint>> {
        use ferroflow_train::TrainError;
        let Some(model) = &self.model else { return Ok(None) };
        let preprocessing = match &self.preprocessing {
            None => None,
            Some(name) => Some(ferroflow_data::SlimPreprocessing::from_name(name).ok_or_else(|| {
                TrainError::config("--preprocessing", format!("{name:?}: expected vgg, inception or none"))
            })?),
        };
        let labels = self.labels.as_deref().map(ferroflow_train::read_labels).transpose()?;
        Ok(Some(ferroflow_train::BareCheckpoint {
            model: model.clone(),
            preprocessing,
            labels_offset: self.labels_offset,
            labels,
        }))
    }
}
