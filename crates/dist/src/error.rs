//! Errors of the collectives.

/// What went wrong between ranks.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// Ranks did not all reach a collective within the timeout.
    #[error(
        "rank {rank} of {world}: {what} did not complete within {timeout_secs} s: {missing} \
         (dead, stopped or stalled; train.collective_timeout_secs sets the limit); ending this rank"
    )]
    Timeout {
        /// This rank.
        rank: usize,
        /// Ranks in all.
        world: usize,
        /// The collective (`the synchronisation before step 57`).
        what: String,
        /// The ranks that did not arrive, in words.
        missing: String,
        /// The limit.
        timeout_secs: f64,
    },
    /// Buffers of different lengths where the ranks must agree.
    #[error("rank {rank}: {what}: {reason}")]
    Mismatch {
        /// This rank.
        rank: usize,
        /// The collective.
        what: String,
        /// What differed.
        reason: String,
    },
    /// MPI could not start.
    #[error("MPI: {0}")]
    Init(String),
}

/// Results of the collectives.
pub type Result<T> = std::result::Result<T, DistError>;
