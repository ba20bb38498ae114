//! The operations data-parallel training needs between ranks.

use std::sync::Arc;

use crate::error::Result;
use crate::replica_sum::ReplicaSum;

/// What the trainer asks of the other ranks. Every rank calls the same
/// operations in the same order with buffers of the same length (the
/// trainer's loop is the same on every rank); the results are the same on
/// every rank.
pub trait Collective {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Ranks in all.
    fn world_size(&self) -> usize;
    /// This rank's index among the ranks on its machine (picks its GPU).
    fn local_rank(&self) -> usize;
    /// What the ranks run on, in words (`"one process"`, `"MPI, 2 ranks on 1 host(s)"`).
    fn describe(&self) -> String;
    /// Waits until every rank has reached this point of `what`, or fails
    /// after the timeout naming the ranks that did not (the guard against a
    /// rank that died or hangs: the blocking collectives after it only run
    /// once every rank is known to be there).
    fn sync(&mut self, what: &str) -> Result<()>;
    /// Element-wise sum over the ranks of `send`, into `recv` (same length).
    fn all_reduce_sum(&mut self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// [`Collective::all_reduce_sum`] for `f64` (metric sums and counts).
    fn all_reduce_sum_f64(&mut self, send: &[f64], recv: &mut [f64]) -> Result<()>;
    /// `data` becomes `root`'s `data` on every rank.
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<()>;
    /// `data` becomes `root`'s bytes on every rank (any length: the length
    /// is broadcast first).
    fn broadcast_bytes(&mut self, data: &mut Vec<u8>, root: usize) -> Result<()>;
    /// A sum over the same ranks for a model's ops to call during their
    /// forward and backward passes (synchronised batch norm), on a channel
    /// of its own so its messages never mix with the trainer's. Call it,
    /// and use what it returns, on the training thread.
    fn replica_sum(&mut self) -> Result<Arc<dyn ReplicaSum>>;
}
