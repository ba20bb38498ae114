//! One process: every collective is the identity.

use std::sync::Arc;

use crate::collective::Collective;
use crate::error::Result;
use crate::replica_sum::ReplicaSum;

/// The collective of a run without other ranks.
///
/// ```
/// use ferroflow_dist::{Collective, Local};
/// let mut one = Local;
/// let mut out = [0.0; 2];
/// one.all_reduce_sum(&[1.5, -2.0], &mut out).unwrap();
/// assert_eq!((one.world_size(), out), (1, [1.5, -2.0]));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn describe(&self) -> String {
        "one process".to_string()
    }
    fn sync(&mut self, _what: &str) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum(&mut self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn broadcast(&mut self, _data: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&mut self, _data: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn replica_sum(&mut self) -> Result<Arc<dyn ReplicaSum>> {
        Ok(Arc::new(Local))
    }
}

impl ReplicaSum for Local {
    fn replicas(&self) -> usize {
        1
    }
    fn sum_f64(&self, _values: &mut [f64], _what: &str) -> Result<()> {
        Ok(())
    }
}
