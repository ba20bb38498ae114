//! Ranks over MPI (rsmpi on the system's OpenMPI): blocking collectives
//! for the data, behind a synchronisation with a timeout.
//!
//! MPI's blocking collectives wait forever for a rank that died or hangs,
//! and an immediate collective cannot be abandoned while it holds a
//! buffer. So every group of collectives starts with [`Collective::sync`]:
//! each rank sends an empty message to rank 0, which answers each once all
//! have arrived. Empty messages hold no buffer, so a request that times out
//! is simply dropped, and rank 0 knows exactly which ranks did not arrive.
//! When a launcher notices a dead rank first (`mpirun` does, for a rank
//! killed by a signal), it ends the job itself and names the rank.

use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use crate::collective::Collective;
use crate::error::{DistError, Result};
use crate::launcher::detect_launcher;

/// The tags of the synchronisation's messages.
const ARRIVE: i32 = 7001;
const RELEASE: i32 = 7002;

/// MPI ranks: `MPI_COMM_WORLD` of the job.
pub struct Mpi {
    // Dropped last: MPI_Finalize.
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    hosts: usize,
    timeout: Duration,
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {} }}", self.rank, self.size)
    }
}

impl Mpi {
    /// Joins the job's ranks (`MPI_Init`); `timeout` bounds every
    /// [`Collective::sync`].
    pub fn init(timeout: Duration) -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| DistError::Init("MPI was already initialised".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        // The ranks sharing this machine's memory: their count and this rank's place.
        let node = world.split_shared(0);
        let local_rank = detect_launcher(|k| std::env::var(k).ok()).map_or(node.rank() as usize, |l| l.local_rank);
        // Hosts: the ranks that are local rank 0.
        let send = [if node.rank() == 0 { 1.0f64 } else { 0.0 }];
        let mut hosts = [0.0f64];
        world.all_reduce_into(&send[..], &mut hosts[..], mpi::collective::SystemOperation::sum());
        Ok(Mpi { world, rank, size, local_rank, hosts: hosts[0] as usize, timeout, _universe: universe })
    }

    fn timeout_error(&self, what: &str, missing: String) -> DistError {
        DistError::Timeout {
            rank: self.rank,
            world: self.size,
            what: what.to_string(),
            missing,
            timeout_secs: self.timeout.as_secs_f64(),
        }
    }

    /// Polls `requests` until all complete or the deadline passes; returns
    /// the indices of those still pending (dropped without harm: they hold
    /// no buffer).
    fn wait_all(
        &self,
        mut requests: Vec<(usize, Request<'static, [u8; 0], StaticScope>)>,
        start: Instant,
    ) -> Vec<usize> {
        let mut spins = 0u32;
        loop {
            requests = requests.into_iter().filter_map(|(i, r)| r.test().err().map(|r| (i, r))).collect();
            if requests.is_empty() {
                return Vec::new();
            }
            if start.elapsed() >= self.timeout {
                let pending = requests.iter().map(|(i, _)| *i).collect();
                // Empty messages: nothing for MPI to write into later.
                requests.into_iter().for_each(|(_, r)| std::mem::forget(r));
                return pending;
            }
            // Spin briefly (ranks usually arrive within microseconds), then yield the core.
            spins += 1;
            if spins > 2000 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// An empty message buffer that lives forever (a zero-length array is promoted to `'static`).
fn empty() -> &'static mut [u8; 0] {
    &mut []
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn describe(&self) -> String {
        format!("MPI, {} ranks on {} host(s)", self.size, self.hosts)
    }

    fn sync(&mut self, what: &str) -> Result<()> {
        let start = Instant::now();
        if self.rank == 0 {
            let arrivals: Vec<_> = (1..self.size)
                .map(|r| {
                    let p = self.world.process_at_rank(r as i32);
                    (r, p.immediate_receive_into_with_tag(StaticScope, empty(), ARRIVE))
                })
                .collect();
            let missing = self.wait_all(arrivals, start);
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(usize::to_string).collect();
                return Err(self
                    .timeout_error(what, format!("rank(s) {} did not reach it (no word from them)", list.join(", "))));
            }
            let releases: Vec<_> = (1..self.size)
                .map(|r| {
                    let p = self.world.process_at_rank(r as i32);
                    (r, p.immediate_send_with_tag(StaticScope, empty(), RELEASE))
                })
                .collect();
            // Sends of empty messages complete at once (eager protocol).
            let missing = self.wait_all(releases, start);
            if !missing.is_empty() {
                return Err(self.timeout_error(what, "the release could not be sent".into()));
            }
        } else {
            let root = self.world.process_at_rank(0);
            let sent = root.immediate_send_with_tag(StaticScope, empty(), ARRIVE);
            let released = root.immediate_receive_into_with_tag(StaticScope, empty(), RELEASE);
            let missing = self.wait_all(vec![(0, sent), (1, released)], start);
            if !missing.is_empty() {
                return Err(self.timeout_error(
                    what,
                    "rank 0 did not release it (rank 0 or another rank is gone; rank 0's message names it)".into(),
                ));
            }
        }
        Ok(())
    }

    fn all_reduce_sum(&mut self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_len(self.rank, "all-reduce", send.len(), recv.len())?;
        self.world.all_reduce_into(send, recv, mpi::collective::SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&mut self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        check_len(self.rank, "all-reduce", send.len(), recv.len())?;
        self.world.all_reduce_into(send, recv, mpi::collective::SystemOperation::sum());
        Ok(())
    }

    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<()> {
        let mut len = [data.len() as u64];
        self.world.process_at_rank(root as i32).broadcast_into(&mut len[..]);
        check_len(self.rank, "broadcast", len[0] as usize, data.len())?;
        self.world.process_at_rank(root as i32).broadcast_into(data);
        Ok(())
    }

    fn broadcast_bytes(&mut self, data: &mut Vec<u8>, root: usize) -> Result<()> {
        let mut len = [data.len() as u64];
        self.world.process_at_rank(root as i32).broadcast_into(&mut len[..]);
        data.resize(len[0] as usize, 0);
        self.world.process_at_rank(root as i32).broadcast_into(&mut data[..]);
        Ok(())
    }
}

fn check_len(rank: usize, what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(DistError::Mismatch {
            rank,
            what: what.to_string(),
            reason: format!("buffers of {a} and {b} elements (the ranks run different models?)"),
        });
    }
    Ok(())
}
