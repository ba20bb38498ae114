//! One module per command; each exposes its clap arguments and a `run`.

pub mod bench;
pub mod dump;
pub mod models;
pub mod prepare;
pub mod records;
pub mod survey;
pub mod train;

/// True when the error is a closed stdout (`ferroflow records … | head`),
/// which is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
