//! Process-wide settings of the libraries under ferroflow, made once at the
//! start of `main` and measured in docs/PERFORMANCE.md ("Threads and
//! memory"). An environment variable the user set always wins.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`,
/// `c_src/mimalloc/v2/include/mimalloc.h` of libmimalloc-sys 0.1.49, which
/// the workspace pins; the crate exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies both settings below.
pub fn configure() {
    candle_threads();
    allocator();
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

/// Keeps freed memory mapped for reuse. mimalloc returns freed segments to
/// the OS 10 ms after their last use by default; a training step frees and
/// reallocates the same activation-sized buffers every 60-70 ms, and each
/// re-fault makes the kernel zero the pages again (9,662 faults in a 70-step
/// `bench train`, 310 without purging; 5% less CPU time).
#[allow(unsafe_code)]
fn allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain option setter of the linked mimalloc, valid at any
        // time; -1 means "never purge" (mimalloc.h).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
