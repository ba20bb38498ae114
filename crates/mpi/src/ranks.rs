//! Ranks over MPI (rsmpi on the system's OpenMPI): blocking collectives
//! for the data, behind a synchronisation with a timeout.
//!
//! MPI's blocking collectives wait forever for a rank that died or hangs.
//! So every group of collectives starts with [`Collective::sync`]: each
//! rank sends an empty message to rank 0, which answers each once all have
//! arrived. Empty messages hold no buffer, so a request that times out is
//! simply dropped (an error the trainer returns), and rank 0 knows exactly
//! which ranks did not arrive.
//!
//! The collectives with data are immediate (`MPI_Iallreduce`,
//! `MPI_Ibcast`) and polled until the same timeout. One that times out
//! cannot be abandoned: MPI may still write into its buffer. So this rank
//! ends there, through the `fatal` handler its creator gave (the CLI prints
//! the error and exits); the launcher then ends the others. When a launcher
//! notices a dead rank first (`mpirun` does, for a rank killed by a
//! signal), it ends the job itself and names the rank.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, Scope, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use ferroflow_dist::{Collective, DistError, ReplicaSum, Result, detect_launcher};

/// The tags of the synchronisation's messages.
const ARRIVE: i32 = 7001;
const RELEASE: i32 = 7002;
const ALIVE: i32 = 7003;

/// How long rank 0 waits, after a collective timed out, for the other
/// ranks' word that they are alive (their own timeouts fire within
/// milliseconds of its own).
const ROLL_CALL: Duration = Duration::from_secs(2);

/// One communicator with what its collectives need to fail cleanly.
struct Link {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Ends this rank when a collective holding buffers times out.
    fatal: fn(DistError) -> !,
}

/// MPI ranks: `MPI_COMM_WORLD` of the job.
pub struct Mpi {
    // Dropped before the universe (MPI_Finalize).
    link: Link,
    local_rank: usize,
    hosts: usize,
    /// What the last [`Collective::sync`] was for, to name a timeout after it.
    phase: String,
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {} }}", self.link.rank, self.link.size)
    }
}

impl Mpi {
    /// Joins the job's ranks (`MPI_Init`). `timeout` bounds every
    /// collective; `fatal` ends this rank when one that holds buffers times
    /// out (it must not return: MPI may still write into them).
    pub fn init(timeout: Duration, fatal: fn(DistError) -> !) -> Result<Self> {
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
        Ok(Mpi {
            link: Link { comm: world, rank, size, timeout, fatal },
            local_rank,
            hosts: hosts[0] as usize,
            phase: "the start".to_string(),
            _universe: universe,
        })
    }
}

impl Link {
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
        limit: Duration,
    ) -> Vec<usize> {
        let mut spins = 0u32;
        loop {
            requests = requests.into_iter().filter_map(|(i, r)| r.test().err().map(|r| (i, r))).collect();
            if requests.is_empty() {
                return Vec::new();
            }
            if start.elapsed() >= limit {
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

impl Link {
    /// Polls `request` (a collective over buffers) until it completes; past
    /// the timeout, ends this rank through `fatal` (`what` names it).
    fn finish<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>, what: &str) {
        let start = Instant::now();
        let mut polls = 0u64;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            if start.elapsed() >= self.timeout {
                let missing = self.roll_call();
                (self.fatal)(self.timeout_error(what, missing));
            }
            // Immediate collectives progress only inside MPI calls: poll
            // without pause for the first second, then every millisecond.
            polls += 1;
            if polls.is_multiple_of(1024) && start.elapsed() > Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Link {
    /// After a collective over buffers timed out: which rank stopped or
    /// died in it. Every rank that is still alive times out too and sends
    /// rank 0 an empty message; rank 0 names the ranks it did not hear from.
    fn roll_call(&self) -> String {
        if self.rank != 0 {
            let sent = self.comm.process_at_rank(0).immediate_send_with_tag(StaticScope, empty(), ALIVE);
            let _ = self.wait_all(vec![(0, sent)], Instant::now(), ROLL_CALL);
            return "every rank had arrived, so one stopped or died during it (rank 0's message names it)".into();
        }
        let calls: Vec<_> = (1..self.size)
            .map(|r| {
                (r, self.comm.process_at_rank(r as i32).immediate_receive_into_with_tag(StaticScope, empty(), ALIVE))
            })
            .collect();
        let silent = self.wait_all(calls, Instant::now(), ROLL_CALL);
        if silent.is_empty() {
            return "every rank is alive but the collective did not finish (the network?)".into();
        }
        let list: Vec<String> = silent.iter().map(usize::to_string).collect();
        format!("rank(s) {} stopped or died during it (no word from them)", list.join(", "))
    }
}

/// An empty message buffer that lives forever (a zero-length array is promoted to `'static`).
fn empty() -> &'static mut [u8; 0] {
    &mut []
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.link.rank
    }
    fn world_size(&self) -> usize {
        self.link.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn describe(&self) -> String {
        format!("MPI, {} ranks on {} host(s)", self.link.size, self.hosts)
    }

    fn sync(&mut self, what: &str) -> Result<()> {
        self.phase = what.to_string();
        self.link.sync(what)
    }

    fn all_reduce_sum(&mut self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.link.sum(send, recv, &format!("the all-reduce after {}", self.phase))
    }

    fn all_reduce_sum_f64(&mut self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        self.link.sum(send, recv, &format!("the all-reduce after {}", self.phase))
    }

    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<()> {
        let what = format!("the broadcast after {}", self.phase);
        let mut len = [data.len() as u64];
        self.link.bcast(&mut len[..], root, &what);
        check_len(self.link.rank, "broadcast", len[0] as usize, data.len())?;
        self.link.bcast(data, root, &what);
        Ok(())
    }

    fn broadcast_bytes(&mut self, data: &mut Vec<u8>, root: usize) -> Result<()> {
        let what = format!("the broadcast after {}", self.phase);
        let mut len = [data.len() as u64];
        self.link.bcast(&mut len[..], root, &what);
        data.resize(len[0] as usize, 0);
        self.link.bcast(&mut data[..], root, &what);
        Ok(())
    }

    fn replica_sum(&mut self) -> Result<Arc<dyn ReplicaSum>> {
        // MPI_Comm_dup is itself a blocking collective: every rank first
        // shows it is there.
        self.sync("the set-up of synchronised batch norm")?;
        Ok(Arc::new(MpiReplicaSum::new(self.link.on(self.link.comm.duplicate()))))
    }
}

impl Link {
    /// The same ranks and limits on `comm` (a duplicate of this one's).
    fn on(&self, comm: SimpleCommunicator) -> Link {
        Link { comm, rank: self.rank, size: self.size, timeout: self.timeout, fatal: self.fatal }
    }

    /// Every rank's arrival at `what`, within the timeout (see the module docs).
    fn sync(&self, what: &str) -> Result<()> {
        let start = Instant::now();
        if self.rank == 0 {
            let arrivals: Vec<_> = (1..self.size)
                .map(|r| {
                    let p = self.comm.process_at_rank(r as i32);
                    (r, p.immediate_receive_into_with_tag(StaticScope, empty(), ARRIVE))
                })
                .collect();
            let missing = self.wait_all(arrivals, start, self.timeout);
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(usize::to_string).collect();
                return Err(self
                    .timeout_error(what, format!("rank(s) {} did not reach it (no word from them)", list.join(", "))));
            }
            let releases: Vec<_> = (1..self.size)
                .map(|r| {
                    let p = self.comm.process_at_rank(r as i32);
                    (r, p.immediate_send_with_tag(StaticScope, empty(), RELEASE))
                })
                .collect();
            // Sends of empty messages complete at once (eager protocol).
            let missing = self.wait_all(releases, start, self.timeout);
            if !missing.is_empty() {
                return Err(self.timeout_error(what, "the release could not be sent".into()));
            }
        } else {
            let root = self.comm.process_at_rank(0);
            let sent = root.immediate_send_with_tag(StaticScope, empty(), ARRIVE);
            let released = root.immediate_receive_into_with_tag(StaticScope, empty(), RELEASE);
            let missing = self.wait_all(vec![(0, sent), (1, released)], start, self.timeout);
            if !missing.is_empty() {
                return Err(self.timeout_error(
                    what,
                    "rank 0 did not release it (rank 0 or another rank is gone; rank 0's message names it)".into(),
                ));
            }
        }
        Ok(())
    }

    /// `MPI_Iallreduce` with `MPI_SUM`, polled with the timeout.
    fn sum<T: mpi::datatype::Equivalence>(&self, send: &[T], recv: &mut [T], what: &str) -> Result<()> {
        check_len(self.rank, "all-reduce", send.len(), recv.len())?;
        mpi::request::scope(|scope| {
            let r = self.comm.immediate_all_reduce_into(scope, send, recv, mpi::collective::SystemOperation::sum());
            self.finish(r, what);
        });
        Ok(())
    }

    /// `MPI_Ibcast` from `root`, polled with the timeout.
    fn bcast<B: mpi::datatype::BufferMut + ?Sized>(&self, data: &mut B, root: usize, what: &str) {
        mpi::request::scope(|scope| {
            let r = self.comm.process_at_rank(root as i32).immediate_broadcast_into(scope, data);
            self.finish(r, what);
        });
    }
}

thread_local! {
    /// The communicators of the [`MpiReplicaSum`]s this thread created, by
    /// id: they stay on the thread that made them (ferroflow initialises
    /// MPI without thread support), and the `Send + Sync` handle the ops
    /// hold only names them.
    static REPLICA_LINKS: RefCell<Vec<(u64, KeptLink)>> = const { RefCell::new(Vec::new()) };
}

/// A [`Link`] in [`REPLICA_LINKS`]: freed (`MPI_Comm_free`) only before
/// `MPI_Finalize`; one still there after it (the thread's storage is torn
/// down at the process's end) is left to the process's exit.
struct KeptLink(Option<Link>);

impl Drop for KeptLink {
    fn drop(&mut self) {
        if let Some(link) = self.0.take()
            && mpi::environment::is_finalized()
        {
            std::mem::forget(link);
        }
    }
}

/// Ids for [`REPLICA_LINKS`].
static NEXT_REPLICA_LINK: AtomicU64 = AtomicU64::new(0);

/// [`ReplicaSum`] over a duplicate of the job's communicator, so that the
/// model ops' sums never match the trainer's collectives by mistake. Only
/// the thread that created it can sum: another finds no communicator.
#[derive(Debug)]
struct MpiReplicaSum {
    id: u64,
    rank: usize,
    size: usize,
}

impl MpiReplicaSum {
    /// Keeps `link` on this thread, for the handle returned.
    fn new(link: Link) -> Self {
        let id = NEXT_REPLICA_LINK.fetch_add(1, Ordering::Relaxed);
        let (rank, size) = (link.rank, link.size);
        REPLICA_LINKS.with_borrow_mut(|links| links.push((id, KeptLink(Some(link)))));
        MpiReplicaSum { id, rank, size }
    }
}

impl ReplicaSum for MpiReplicaSum {
    fn replicas(&self) -> usize {
        self.size
    }

    fn sum_f64(&self, values: &mut [f64], what: &str) -> Result<()> {
        let send = values.to_vec();
        REPLICA_LINKS.with_borrow(|links| match links.iter().find(|(id, _)| *id == self.id) {
            Some((_, KeptLink(Some(link)))) => link.sum(&send, values, &format!("the all-reduce of {what}")),
            _ => Err(DistError::Mismatch {
                rank: self.rank,
                what: what.to_string(),
                reason: "called from a thread other than the training thread (MPI runs without thread support)".into(),
            }),
        })
    }
}

impl Drop for MpiReplicaSum {
    fn drop(&mut self) {
        // Freed here on the owner thread (KeptLink's drop minds MPI_Finalize).
        REPLICA_LINKS.with_borrow_mut(|links| links.retain(|(id, _)| *id != self.id));
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
