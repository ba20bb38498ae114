//! One module per command; each exposes its clap arguments and a `run`.

pub mod bench;
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
