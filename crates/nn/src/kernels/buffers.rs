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
use std::mem::MaybeUninit;
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
    /// This thread's free sets of scratch buffers. A set is taken out while in use; a
    /// nested call (a rayon task stolen while the thread waits inside a parallel gemm or
    /// join) takes the next set, or makes one, and both go back afterwards. Why a stack:
    /// with a single set, the nested call's buffers were allocated and zero-filled afresh
    /// and then one of the two sets dropped, on every step (perf: 3.9% of resnet20's
    /// two-thread step in that `memset`).
    static SCRATCH: RefCell<Vec<Vec<Vec<f32>>>> = const { RefCell::new(Vec::new()) };
}

/// Sets of scratch buffers kept per thread (deeper nesting allocates and drops its own).
const SCRATCH_SETS: usize = 4;

/// Runs `f` with `N` buffers of the given lengths from this thread's scratch space. Their
/// contents are unspecified (whatever a previous call left, or zeros): `f` must write every
/// element before reading it.
pub(crate) fn with_scratch<const N: usize, R>(lens: [usize; N], f: impl FnOnce([&mut [f32]; N]) -> R) -> R {
    let mut bufs = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
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
        if s.len() < SCRATCH_SETS {
            s.push(bufs);
        }
    });
    out
}

/// A vector of `n` f32 computed in parallel chunks of `chunk` elements (the last may be
/// shorter): each rayon task zeroes its chunk, while it is about to be in cache anyway,
/// and hands it to `f(index, item, chunk)` with the matching item of `items`; tasks take
/// at least `min_chunks` chunks.
///
/// Why: a kernel output zeroed up front ([`zeroed`]) is one extra write pass over memory
/// before the kernel writes it again (perf: 7.9% of resnet20's two-thread step was that
/// fill, for the conv + batch norm outputs and input gradients of 4 MiB each); a chunk
/// zeroed just before use costs stores into L1/L2 only.
///
/// `items` must yield exactly one item per chunk; otherwise the vector is zeroed up front
/// and the chunks zipped with `items` as given (the plain way: same values).
pub(crate) fn zeroed_in_tasks<I>(
    n: usize,
    chunk: usize,
    min_chunks: usize,
    items: I,
    f: impl Fn(usize, I::Item, &mut [f32]) + Sync + Send,
) -> Vec<f32>
where
    I: IndexedParallelIterator,
{
    let chunk = chunk.max(1);
    if items.len() != n.div_ceil(chunk) {
        let mut v = zeroed(n);
        v.par_chunks_mut(chunk).zip(items).enumerate().for_each(|(i, (c, item))| f(i, item, c));
        return v;
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .with_min_len(min_chunks.max(1))
        .zip(items)
        .enumerate()
        .for_each(|(i, (c, item))| f(i, item, zero(c)));
    // SAFETY: `par_chunks_mut` covers `[0, n)` exactly, `items` has one item per chunk (so
    // the zip visits every chunk), and `zero` wrote each visited chunk in full; a panic in
    // `f` unwinds before this line, leaving `v` empty.
    #[allow(unsafe_code)]
    unsafe {
        v.set_len(n);
    }
    v
}

/// Two vectors as [`zeroed_in_tasks`], in the same tasks: chunk `i` of `a` (`(n, chunk)`),
/// zeroed, and chunk `i` of `b`, uninitialised, go to `f(i, a_i, b_i)`, which initialises
/// `b_i` (zeros, or a kernel that writes every element) and returns it as f32, the same
/// memory. Both must have the same number of chunks; otherwise both are zeroed up front
/// (the plain way: same values).
///
/// Why: a kernel that overwrites its whole output (the Winograd input gradient) needs no
/// zeros first; zeroing the input gradients was 2.7% of resnet20's two-thread step (perf).
///
/// # Panics
/// When `f` returns another slice than the chunk it was given.
pub(crate) fn pair_in_tasks(
    a: (usize, usize),
    b: (usize, usize),
    f: impl for<'c> Fn(usize, &mut [f32], &'c mut [MaybeUninit<f32>]) -> &'c mut [f32] + Sync + Send,
) -> (Vec<f32>, Vec<f32>) {
    let ((na, ca), (nb, cb)) = ((a.0, a.1.max(1)), (b.0, b.1.max(1)));
    // `f`'s result must be its chunk, now initialised: checked, so that `set_len` below
    // only ever covers memory that safe code (or a documented `unsafe` block) initialised.
    let run = |i: usize, ca: &mut [f32], cb: &mut [MaybeUninit<f32>]| {
        let (at, len) = (cb.as_ptr().cast::<f32>(), cb.len());
        let init = f(i, ca, cb);
        assert!(
            std::ptr::eq(init.as_ptr(), at) && init.len() == len,
            "pair_in_tasks: chunk {i} not initialised in place"
        );
    };
    if na.div_ceil(ca) != nb.div_ceil(cb) {
        let mut vb = zeroed(nb);
        let va = zeroed_in_tasks(na, ca, 1, vb.par_chunks_mut(cb), |i, cb, ca| run(i, ca, as_uninit(cb)));
        return (va, vb);
    }
    let mut vb: Vec<f32> = Vec::with_capacity(nb);
    let va = zeroed_in_tasks(na, ca, 1, vb.spare_capacity_mut()[..nb].par_chunks_mut(cb), |i, cb, ca| run(i, ca, cb));
    // SAFETY: the chunks of `vb` cover `[0, nb)`, their count is `va`'s (checked above, so
    // `zeroed_in_tasks` took the path that visits every item), and `run` checked that each
    // came back from `f` as initialised f32 in place.
    #[allow(unsafe_code)]
    unsafe {
        vb.set_len(nb);
    }
    (va, vb)
}

/// Initialised f32 seen as possibly uninitialised, for kernels that write f32 only (never
/// `MaybeUninit::uninit()`, which would leave the caller's f32 uninitialised).
pub(crate) fn as_uninit(c: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the callers write only initialised f32 through it.
    #[allow(unsafe_code)]
    unsafe {
        &mut *(std::ptr::from_mut::<[f32]>(c) as *mut [MaybeUninit<f32>])
    }
}

/// Writes zeros to every element of `c` and returns it as initialised f32.
pub(crate) fn zero(c: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for e in c.iter_mut() {
        e.write(0.0);
    }
    // SAFETY: every element was written just above, and `MaybeUninit<f32>` has `f32`'s
    // size and alignment.
    #[allow(unsafe_code)]
    unsafe {
        &mut *(std::ptr::from_mut::<[MaybeUninit<f32>]>(c) as *mut [f32])
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each chunk arrives zeroed, with its own index and item, and the whole vector is
    /// what the chunks wrote; with one item too few, the plain path gives the chunks it
    /// zips the same way and leaves the rest zero.
    #[test]
    fn chunks_arrive_zeroed_with_their_items() {
        for (n, chunk) in [(0usize, 4usize), (1, 4), (10, 3), (1 << 20, 1000), (12, 4)] {
            let chunks = n.div_ceil(chunk);
            let write = |i: usize, item: usize, c: &mut [f32]| {
                assert!(c.iter().all(|&v| v == 0.0), "chunk {i} was not zeroed");
                assert_eq!(i, item);
                for (j, v) in c.iter_mut().enumerate() {
                    *v = (i * chunk + j) as f32 + 0.5;
                }
            };
            let v = zeroed_in_tasks(n, chunk, 2, (0..chunks).into_par_iter(), write);
            let expect: Vec<f32> = (0..n).map(|k| k as f32 + 0.5).collect();
            assert_eq!(v, expect, "n {n}, chunk {chunk}");
            if chunks > 0 {
                let short = zeroed_in_tasks(n, chunk, 1, (0..chunks - 1).into_par_iter(), write);
                let cut = (chunks - 1) * chunk;
                assert_eq!(&short[..cut], &expect[..cut]);
                assert!(short[cut..].iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn pairs_share_the_task_index() {
        for ((na, ca), (nb, cb)) in
            [((40usize, 10usize), (8usize, 2usize)), ((40, 10), (9, 2)), ((7, 3), (300_000, 100_000))]
        {
            let (a, b) = pair_in_tasks((na, ca), (nb, cb), |i, x, y| {
                assert!(x.iter().all(|&v| v == 0.0));
                x.fill(i as f32 + 1.0);
                let y = zero(y);
                y.fill(-(i as f32) - 1.0);
                y
            });
            assert_eq!(a.len(), na);
            assert_eq!(b.len(), nb);
            for (k, v) in a.iter().enumerate() {
                assert_eq!(*v, (k / ca) as f32 + 1.0, "a[{k}]");
            }
            // Mismatched chunk counts: `b` has one chunk per `a` chunk it zips with.
            for (k, v) in b.iter().enumerate() {
                let i = k / cb;
                let want = if i < na.div_ceil(ca) { -(i as f32) - 1.0 } else { 0.0 };
                assert_eq!(*v, want, "b[{k}]");
            }
        }
    }

    /// A closure that hands back other memory than its chunk is caught (`b` would be left
    /// uninitialised otherwise).
    #[test]
    #[should_panic(expected = "not initialised in place")]
    fn a_chunk_must_come_back_initialised_in_place() {
        pair_in_tasks((4, 2), (4, 2), |_, _, y| Box::leak(vec![0.0f32; y.len()].into_boxed_slice()));
    }
}
