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
