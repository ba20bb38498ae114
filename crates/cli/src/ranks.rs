//! Which ranks `ferroflow train` runs among: alone, or as one of the MPI
//! ranks a launcher started (`train.distributed`).

use anyhow::{Result, bail};
use ferroflow_dist::{Collective, Local, detect_launcher};
use ferroflow_train::{Distributed, TrainConfig};

/// Whether this build can join MPI ranks (the `mpi` feature, crates/mpi).
const MPI_BUILT: bool = cfg!(feature = "mpi");

/// The ranks of this run, and a note for the user when the choice is not
/// the obvious one.
pub fn collective(config: &TrainConfig) -> Result<(Box<dyn Collective>, Option<String>)> {
    let timeout = std::time::Duration::from_secs_f64(config.train.collective_timeout_secs);
    collective_for(config.train.distributed, timeout)
}

/// [`collective`] from the two settings it reads: `train.distributed` and
/// the collectives' timeout.
pub fn collective_for(
    distributed: Distributed,
    timeout: std::time::Duration,
) -> Result<(Box<dyn Collective>, Option<String>)> {
    let launcher = detect_launcher(|k| std::env::var(k).ok());
    match (distributed, launcher) {
        (Distributed::Off, Some(l)) => Ok((
            Box::new(Local),
            Some(format!(
                "warning: started by {} as rank {} of {}, but train.distributed = off: this rank trains alone",
                l.name, l.rank, l.world
            )),
        )),
        (Distributed::Off, None) | (Distributed::Auto, None) => Ok((Box::new(Local), None)),
        (Distributed::Auto, Some(l)) if !MPI_BUILT => bail!(
            "train.distributed: started by {} as rank {} of {}, but this ferroflow was built without MPI; rebuild \
             with `cargo build --release --features mpi` (needs OpenMPI: apt-get install openmpi-bin \
             libopenmpi-dev libclang-dev), or set train.distributed = off to train each rank alone",
            l.name,
            l.rank,
            l.world
        ),
        (Distributed::Mpi, _) if !MPI_BUILT => bail!(
            "train.distributed: mpi, but this ferroflow was built without MPI; rebuild with `cargo build --release \
             --features mpi` (needs OpenMPI: apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
        ),
        _ => mpi(timeout),
    }
}

/// Writes `line` and a newline to stderr in one write: the ranks share a
/// terminal through the launcher, which forwards each write as it comes
/// (`eprintln!` writes each formatted piece separately, and the ranks'
/// pieces interleave).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

#[cfg(feature = "mpi")]
fn mpi(timeout: std::time::Duration) -> Result<(Box<dyn Collective>, Option<String>)> {
    Ok((Box::new(ferroflow_mpi::Mpi::init(timeout, end_rank)?), None))
}

/// Ends this rank after a collective timed out while MPI held its buffers
/// (it cannot be abandoned and returned from): the one message, and
/// `main`'s runtime-error code, 1. The launcher then ends the other ranks.
#[cfg(feature = "mpi")]
fn end_rank(error: ferroflow_dist::DistError) -> ! {
    say(&format!("error: training: {error}"));
    std::process::exit(1)
}

#[cfg(not(feature = "mpi"))]
fn mpi(_timeout: std::time::Duration) -> Result<(Box<dyn Collective>, Option<String>)> {
    bail!("this ferroflow was built without MPI")
}
