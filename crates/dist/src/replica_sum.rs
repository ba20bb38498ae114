//! A sum over the ranks that a model's op holds and calls inside its own
//! forward and backward pass (synchronised batch norm sums its batch
//! statistics and their gradients this way).

use std::fmt::Debug;

use crate::error::Result;

/// Element-wise sum over the ranks, in place, callable from inside a
/// candle op (hence `&self`, `Send + Sync`, and owned by the op through an
/// `Arc`). Every rank calls it the same number of times with buffers of
/// the same length: the ranks run the same graph in the same order.
///
/// ```
/// use ferroflow_dist::{Local, ReplicaSum};
/// let one = Local;
/// let mut stats = [3.0, 4.0];
/// one.sum_f64(&mut stats, "batch statistics").unwrap();
/// assert_eq!((one.replicas(), stats), (1, [3.0, 4.0]));
/// ```
pub trait ReplicaSum: Send + Sync + Debug {
    /// The ranks taking part.
    fn replicas(&self) -> usize;
    /// `values` becomes the element-wise sum of every rank's `values`;
    /// `what` names the sum in a timeout's message.
    fn sum_f64(&self, values: &mut [f64], what: &str) -> Result<()>;
}
