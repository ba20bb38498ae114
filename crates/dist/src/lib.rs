//! Collectives for data-parallel training. The trainer sees only the
//! [`Collective`] trait: [`Local`] for one process, and `ferroflow_mpi::Mpi`
//! (crates/mpi, the CLI's `mpi` feature) for ranks started by
//! `mpirun`/`srun`. ferroflow invents no transport of its own.

mod bucket;
mod collective;
mod error;
mod launcher;
mod local;
mod replica_sum;

pub use bucket::{BUCKET_BYTES, buckets};
pub use collective::Collective;
pub use error::{DistError, Result};
pub use launcher::{Launcher, detect_launcher};
pub use local::Local;
pub use replica_sum::ReplicaSum;
