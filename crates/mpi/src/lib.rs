//! MPI ranks for data-parallel training: [`Mpi`], ferroflow-dist's
//! [`Collective`](ferroflow_dist::Collective) over the system's MPI (rsmpi on
//! OpenMPI), for ranks started by `mpirun`/`srun`.
//!
//! A crate of its own, which only the CLI's `mpi` feature pulls in: the
//! trainer and the layers see the `Collective` trait alone, and building
//! with or without MPI changes nothing else in the workspace.

mod ranks;

pub use ranks::Mpi;
