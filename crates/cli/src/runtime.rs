//! Process-wide settings of the libraries under ferroflow, made once at the
//! start of `main` and measured in docs/PERFORMANCE.md ("Threads and
//! memory"). An environment variable the user set always wins.

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_t` in
/// `c_src/mimalloc/v3/include/mimalloc.h` of libmimalloc-sys 0.1.49 (the
/// version the workspace pins; its build compiles v3, and v2 has the option at
/// the same position). The crate exports no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies both settings below.
pub fn configure() {
    candle_threads();
    rank_threads();
    allocator();
}

/// Shares the cores among the ranks a launcher started on this machine:
/// `mpirun -np 2` on 2 cores gives each rank one rayon thread, not two
/// (two ranks of two threads each on two cores spin against each other).
/// From the launcher's count of ranks on this node: OpenMPI's
/// `OMPI_COMM_WORLD_LOCAL_SIZE`, Hydra's `MPI_LOCALNRANKS`, Slurm's
/// `SLURM_STEP_TASKS_PER_NODE` (`2(x3)`: the count before the parenthesis).
#[allow(unsafe_code)]
fn rank_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_TASKS_PER_NODE"].iter().find_map(|k| {
        let v = std::env::var(k).ok()?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()
    });
    let Some(local) = local.filter(|&n| n > 1) else { return };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: as in `candle_threads`: first in `main`, before any thread exists.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", (cores / local).max(1).to_string()) };
}

/// Leaves candle's element-wise work on the calling thread. candle keeps its
/// own pool (`CANDLE_NUM_THREADS`, default one thread per core, the caller
/// included) beside rayon's (ferroflow's kernels and the matrix products);
/// with both, each core has two busy threads while candle's serial parts of
/// a step run, and they spin against each other.
#[allow(unsafe_code)]
fn candle_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: `set_var` is unsound only while another thread may read the
        // environment; this runs first in `main`, before any thread exists
        // (candle creates its pool on first use, after this).
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

/// Keeps freed memory mapped for reuse. By default mimalloc returns freed
/// memory to the OS after a delay (`purge_delay`, scaled per arena); a
/// training step frees and reallocates the same activation-sized buffers
/// every 60-70 ms, and each re-fault makes the kernel zero the pages again
/// (9,662 page faults in a 70-step `bench train --model cifar_cnn`, 318
/// without purging; 5% less CPU time, +5% images/s; +32% images/s on 16
/// cores). Setting `MIMALLOC_PURGE_DELAY` (or its old name
/// `MIMALLOC_RESET_DELAY`) keeps mimalloc's own handling.
#[allow(unsafe_code)]
fn allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() && std::env::var_os("MIMALLOC_RESET_DELAY").is_none() {
        // SAFETY: a plain option setter of the linked mimalloc, valid at any
        // time; -1 means "never purge" (mimalloc.h).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// The process's peak resident set (`VmHWM` of /proc/self/status), in MiB; None off Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: f64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}
