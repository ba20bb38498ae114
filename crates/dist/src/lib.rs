//! Collectives for data-parallel training. The trainer sees only the
//! [`Collective`] trait: [`Local`] for one process, [`Mpi`] (feature `mpi`)
//! for ranks started by `mpirun`/`srun`. ferroflow invents no transport of
//! its own.

mod bucket;
mod collective;
mod error;
mod launcher;
mod local;
#[cfg(feature = "mpi")]
mod mpi_ranks;
mod replica_sum;

pub use bucket::{BUCKET_BYTES, buckets};
pub use collective::Collective;
pub use error::{DistError, Result};
pub use launcher::{Launcher, detect_launcher};
pub use local::Local;
#[cfg(feature = "mpi")]
pub use mpi_ranks::Mpi;
pub use replica_sum::ReplicaSum;

/// Whether this build can join MPI ranks (the `mpi` feature).
pub const MPI_BUILT: bool = cfg!(feature = "mpi");
