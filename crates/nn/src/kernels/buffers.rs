//! Buffers for the kernels: zero-initialised outputs filled in parallel, and per-thread
//! scratch space reused across calls.
//!
//! Why: perf showed 7.6% of cifar_cnn's training step zero-filling new buffers and 5.9%
//! faulting in fresh pages, most of it on the main thread while the rayon workers waited:
//! `vec![0.0; n]` is one serial `memset` (and the page faults of fresh memory come with
//! it). [`zeroed`] writes the zeros from the rayon threads instead, [`with_scratch`]
//! keeps the im2col-sized temporaries of the conv kernels alive per thread, and
//! [`recycled`]/[`recycle`] hand a kernel's own large buffers (the conv output a fused
//! block keeps for its backward) from one training step to the next, so they are neither
//! zeroed nor faulted in again on every call.

use std::cell::RefCell;
use std::sync::Mutex;

use rayon::prelude::*;

/// Elements per rayon task when zero-filling (large enough that the task overhead is
/// small next to the writes).
const ZERO_TASK: usize = 256 * 1024;

/// `n` zeros, written in parallel by the rayon threads (rayon collects straight into the
/// vector's allocation); small buffers the ordinary way.
pub(crate) fn zeroed(n: usize) -> Vec<f32> {
    filled(n, 0.0)
}

/// `n` copies of `value`, written in parallel as [`zeroed`].
pub(crate) fn filled<T: Copy + Send + Sync>(n: usize, value: T) -> Vec<T> {
    if n < 2 * ZERO_TASK {
        return vec![value; n];
    }
    (0..n).into_par_iter().with_min_len(ZERO_TASK).map(|_| value).collect()
}

thread_local! {
    /// This thread's scratch buffers, taken out while in use (so a nested call, e.g. from a
    /// rayon task stolen inside a parallel gemm, finds none and allocates its own).
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `N` buffers of the given lengths from this thread's scratch space. Their
/// contents are unspecified (whatever a previous call left, or zeros): `f` must write every
/// element before reading it.
pub(crate) fn with_scratch<const N: usize, R>(lens: [usize; N], f: impl FnOnce([&mut [f32]; N]) -> R) -> R {
    let mut bufs = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if bufs.len() < N {
        bufs.resize_with(N, Vec::new);
    }
    for (buf, &len) in bufs.iter_mut().zip(&lens) {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
    }
    let out = {
        let mut it = bufs.iter_mut().zip(lens);
        f(std::array::from_fn(|_| match it.next() {
            Some((buf, len)) => &mut buf[..len],
            None => &mut [],
        }))
    };
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        // Keep the larger set if a nested call left buffers meanwhile.
        if s.iter().map(Vec::len).sum::<usize>() < bufs.iter().map(Vec::len).sum::<usize>() {
            *s = bufs;
        }
    });
    out
}

/// Buffers given back by [`recycle`], for [`recycled`].
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// At most this many f32 are kept in [`POOL`] (1 GiB), so that a model that stops using a
/// size does not pin its memory for ever.
const POOL_LIMIT: usize = 256 * 1024 * 1024;

/// A buffer of `n` f32 from the pool (one of exactly that length given back earlier), or
/// fresh zeros. Its contents are unspecified: the caller must write every element before
/// reading it.
pub(crate) fn recycled(n: usize) -> Vec<f32> {
    let found = POOL.lock().ok().and_then(|mut pool| {
        let at = pool.iter().position(|b| b.len() == n)?;
        Some(pool.swap_remove(at))
    });
    found.unwrap_or_else(|| zeroed(n))
}

/// Gives `buf` back for a later [`recycled`] of its length.
pub(crate) fn recycle(buf: Vec<f32>) {
    if buf.is_empty() {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let held: usize = pool.iter().map(Vec::len).sum();
        if held + buf.len() <= POOL_LIMIT {
            pool.push(buf);
        }
    }
}
