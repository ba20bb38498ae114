//! Fast CPU 2-D max- and average-pooling (f32, NCHW) as candle custom ops with their own
//! backward.
//!
//! Why: `ops::max_pool2d` built on candle ops takes one strided slice (an `index_select`
//! copy) of the padded input per window offset, compares them all, and its backward goes
//! through candle's `where_cond`/`index_add`/slice machinery, once per window offset; it
//! dominated the training step of the benchmark CNNs once conv2d got its own kernel. Here
//! each pass is one sweep over the planes, split across rayon threads.
//!
//! - max-pooling remembers the winning input pixel of every output in the forward pass
//!   (cached inside the op, so the backward is a plain scatter of `dy`; it is recomputed
//!   from `x` if the cache is missing);
//! - average-pooling divides each window sum by the number of real (unpadded) pixels in it,
//!   as TF's `avgpooling_op.cc` does for SAME.
//!
//! Semantics are those of `ops::max_pool2d` (which TF's golden tests pin):
//! - the padding of a max-pool is `-inf` and takes part in the row-major window order;
//!   the running maximum starts at the window's first cell and is replaced only by a
//!   strictly greater value (`if best < v`, the fold of candle's `maximum`), so ties go to
//!   the first element (TF's CPU rule, `SpatialMaxPoolWithArgMaxHelper` in
//!   `tensorflow/core/kernels/maxpooling_op.cc`);
//! - NaN: a NaN never replaces the running maximum, so a NaN anywhere but in the window's
//!   first cell is ignored; a NaN in the first cell sticks, and such an output is `0` with
//!   no gradient (what `ops::max_pool2d`'s `eq(max)` selection gives: NaN equals nothing).
//!
//! Determinism: planes are independent and each is swept in a fixed order, so every pass
//! gives bitwise-identical results whatever the number of rayon threads.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

use super::buffers::{filled, zeroed};

/// The argmax entry of an output whose gradient goes nowhere (a padded pixel won, or a
/// NaN in the window's first cell).
pub(super) const NO_PIXEL: u32 = u32::MAX;

/// About how many input elements one rayon task sweeps: small planes (cifar_cnn's 16x16)
/// are grouped so that the task overhead stays small next to the work.
const TASK_ELEMS: usize = 16 * 1024;

/// Window size, stride and explicit padding of a 2-D pool, each per spatial axis
/// (`[height, width]`).
///
/// Output size per axis: `(in + pad_before + pad_after - ksize) / stride + 1`. TensorFlow's
/// SAME/VALID map to this through `ops::padding::window` (`pad_before`/`pad_after` of each
/// [`crate::ops::padding::Window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window size. At least 1.
    pub ksize: [usize; 2],
    /// Step between windows, in input pixels. At least 1.
    pub stride: [usize; 2],
    /// Padded rows/columns before the input (top, left).
    pub pad_before: [usize; 2],
    /// Padded rows/columns after the input (bottom, right).
    pub pad_after: [usize; 2],
}

impl Pool2dParams {
    /// The output `[height, width]` for an input of `input` pixels, or `None` when a window
    /// size or stride is zero, the window does not fit in the padded input, or some window
    /// would hold padding only (never the case for TF's SAME/VALID; an average over no
    /// pixel has no value).
    pub fn output_size(&self, input: [usize; 2]) -> Option<[usize; 2]> {
        let mut out = [0; 2];
        for a in 0..2 {
            let (k, s, pb) = (self.ksize[a], self.stride[a], self.pad_before[a]);
            if k == 0 || s == 0 || input[a] == 0 || pb >= k {
                return None;
            }
            let padded = input[a] + pb + self.pad_after[a];
            out[a] = padded.checked_sub(k)? / s + 1;
            // The last window must start inside the input (the first does: `pb < k`).
            if (out[a] - 1) * s >= input[a] + pb {
                return None;
            }
        }
        Some(out)
    }
}

/// Whether the pool kernels handle `x` (CPU, f32): the condition for taking the fast path
/// instead of the candle-ops one.
pub fn supports(x: &Tensor) -> bool {
    super::fast_kernels_on(x.device()) && x.dtype() == DType::F32
}

/// Max-pooling with explicit geometry, on candle's CPU device in f32, with its gradient
/// through candle's autograd (first order only). Padding is `-inf`; see the module docs for
/// ties and NaN.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - result: `[N, C, H_out, W_out]`, sizes from [`Pool2dParams::output_size`]
///
/// # Errors
/// A non-CPU device, a dtype other than f32, a rank other than 4 or a geometry without
/// output (see [`Pool2dParams::output_size`]).
pub fn max_pool2d(x: &Tensor, params: Pool2dParams) -> candle_core::Result<Tensor> {
    check_device(x, "max_pool2d")?;
    // The kernels read plain row-major slices.
    x.contiguous()?.apply_op1(MaxPool2dOp { params, argmax: Arc::new(OnceLock::new()) })
}

/// The gradient of [`max_pool2d`] with respect to `x`, the winners recomputed from `x` (the
/// autograd path reuses the forward pass's instead).
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - `dy`: `[N, C, H_out, W_out]`
/// - result: `[N, C, H, W]`
///
/// # Errors
/// As [`max_pool2d`]; also when `dy` does not have the output shape.
pub fn max_pool2d_backward(x: &Tensor, dy: &Tensor, params: Pool2dParams) -> candle_core::Result<Tensor> {
    check_device(x, "max_pool2d backward")?;
    x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &MaxPool2dBackward { params, argmax: None })
}

/// Average-pooling with explicit geometry, on candle's CPU device in f32, with its gradient
/// through candle's autograd (first order only). Each output is the sum of the real pixels
/// of its window divided by their number (padding is excluded from the count).
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - result: `[N, C, H_out, W_out]`, sizes from [`Pool2dParams::output_size`]
///
/// # Errors
/// As [`max_pool2d`].
pub fn avg_pool2d(x: &Tensor, params: Pool2dParams) -> candle_core::Result<Tensor> {
    check_device(x, "avg_pool2d")?;
    x.contiguous()?.apply_op1(AvgPool2dOp { params })
}

/// The gradient of [`avg_pool2d`] with respect to `x`, for an input of `input_hw` pixels:
/// each `dy / count` spread over its window's real pixels.
///
/// # Shapes
/// - `dy`: `[N, C, H_out, W_out]`
/// - result: `[N, C, input_hw[0], input_hw[1]]`
///
/// # Errors
/// As [`avg_pool2d`]; also when `dy`'s size is not the output size for `input_hw`.
pub fn avg_pool2d_backward(dy: &Tensor, input_hw: [usize; 2], params: Pool2dParams) -> candle_core::Result<Tensor> {
    check_device(dy, "avg_pool2d backward")?;
    dy.contiguous()?.apply_op1_no_bwd(&AvgPool2dBackward { params, input_hw })
}

fn check_device(t: &Tensor, op: &str) -> candle_core::Result<()> {
    if !t.device().is_cpu() {
        bail!("ferroflow {op} kernel: CPU tensors only (got {:?})", t.device());
    }
    Ok(())
}

/// Sizes of one pool, validated once, and the clipped window of every output row and
/// column.
#[derive(Debug, Clone)]
pub(super) struct Geometry {
    /// Planes: `N·C`.
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Per output row: the real input rows `lo..hi` of its window, and whether the window's
    /// first row is a real one (not padding).
    rows: Vec<Span>,
    /// Per output column, as `rows`.
    cols: Vec<Span>,
    /// Whether every window is the 2x2 block of real pixels at `(2i, 2j)` (2x2 windows at
    /// stride 2 without padding, as in cifar_cnn and vgg_small): [`max_plane`]'s vector
    /// path.
    pairs: bool,
}

/// The real input pixels `lo..hi` of one window along one axis; `starts_real` is false when
/// the window's first cell is in the padding.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: usize,
    hi: usize,
    starts_real: bool,
}

impl Span {
    fn len(self) -> usize {
        self.hi - self.lo
    }
}

impl Geometry {
    /// From `x`'s `[N, C, H, W]` dims.
    pub(super) fn new(op: &str, xs: &[usize], p: Pool2dParams) -> candle_core::Result<Self> {
        let &[n, c, h, w] = xs else {
            bail!("ferroflow {op} kernel: expected an NCHW (rank 4) input, got {xs:?}");
        };
        let Some([oh, ow]) = p.output_size([h, w]) else {
            bail!("ferroflow {op} kernel: no output (or a window of padding only) for x {xs:?}, {p:?}");
        };
        // `output_size` guarantees that every window holds at least one real pixel.
        let spans = |axis: usize, input: usize, out: usize| -> Vec<Span> {
            (0..out)
                .map(|i| {
                    let start = i * p.stride[axis];
                    let pad = p.pad_before[axis];
                    let lo = start.saturating_sub(pad);
                    let hi = (start + p.ksize[axis] - pad).min(input);
                    Span { lo, hi, starts_real: start >= pad }
                })
                .collect()
        };
        let (rows, cols) = (spans(0, h, oh), spans(1, w, ow));
        let paired =
            |spans: &[Span]| spans.iter().enumerate().all(|(i, s)| s.starts_real && s.lo == 2 * i && s.hi == 2 * i + 2);
        let pairs = paired(&rows) && paired(&cols);
        Ok(Self { planes: n * c, h, w, oh, ow, rows, cols, pairs })
    }

    /// The output `[H_out, W_out]`.
    pub(super) fn output_hw(&self) -> [usize; 2] {
        [self.oh, self.ow]
    }

    pub(super) fn plane_in(&self) -> usize {
        self.h * self.w
    }

    pub(super) fn plane_out(&self) -> usize {
        self.oh * self.ow
    }

    /// Planes per rayon task (at least one).
    fn planes_per_task(&self) -> usize {
        (TASK_ELEMS / self.plane_in().max(1)).max(1)
    }

    fn check_dy(&self, op: &str, dys: &[usize], xs: &[usize]) -> candle_core::Result<()> {
        if dys.len() != 4 || dys[..2] != xs[..2] || dys[2..] != [self.oh, self.ow] {
            bail!("ferroflow {op} kernel: dy {dys:?} is not the output shape {:?}", [xs[0], xs[1], self.oh, self.ow]);
        }
        Ok(())
    }
}

/// The candle custom op of [`max_pool2d`]. The forward pass leaves the winner of every
/// output in `argmax`, which the backward pass then only has to scatter `dy` through.
struct MaxPool2dOp {
    params: Pool2dParams,
    /// Per output, the plane-local index of its winning input pixel ([`NO_PIXEL`] for
    /// none), set by the forward pass. Shared with the backward op without a copy.
    argmax: Arc<OnceLock<Vec<u32>>>,
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "ferroflow-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let g = Geometry::new("max_pool2d", l.dims(), self.params)?;
        check_plane_index(&g)?;
        let (y, argmax) = max_forward(&g, super::f32_contiguous(s, l, "pool", "x")?);
        // A second forward run of the same op (never done by candle) would compute the same
        // winners: keeping the first is right either way.
        let _ = self.argmax.set(argmax);
        let dims = l.dims();
        Ok((CpuStorage::F32(y), Shape::from_dims(&[dims[0], dims[1], g.oh, g.ow])))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let argmax = self.argmax.get().map(|_| Arc::clone(&self.argmax));
        let dx = x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPool2dBackward { params: self.params, argmax })?;
        Ok(Some(dx))
    }
}

/// `dx` of [`max_pool2d`] as a custom op over `(x, dy)`, from the forward pass's winners
/// when given, else recomputed from `x`; no backward of its own.
struct MaxPool2dBackward {
    params: Pool2dParams,
    argmax: Option<Arc<OnceLock<Vec<u32>>>>,
}

impl CustomOp2 for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "ferroflow-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let g = Geometry::new("max_pool2d backward", l1.dims(), self.params)?;
        check_plane_index(&g)?;
        g.check_dy("max_pool2d backward", l2.dims(), l1.dims())?;
        let dy = super::f32_contiguous(s2, l2, "pool", "dy")?;
        let cached = self.argmax.as_ref().and_then(|a| a.get()).filter(|a| a.len() == dy.len());
        let dx = match cached {
            Some(argmax) => max_backward(&g, argmax, dy),
            None => max_backward(&g, &max_forward(&g, super::f32_contiguous(s1, l1, "pool", "x")?).1, dy),
        };
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The argmax stores plane-local indices as `u32`, with `u32::MAX` reserved.
pub(super) fn check_plane_index(g: &Geometry) -> candle_core::Result<()> {
    if g.plane_in() >= NO_PIXEL as usize {
        bail!("ferroflow max_pool2d kernel: planes of {}x{} pixels are too large", g.h, g.w);
    }
    Ok(())
}

/// The forward max-pool and the winner of every output.
///
/// # Shapes
/// - `x`: `[N·C, H, W]`, results `[N·C, H_out, W_out]` (values and plane-local indices)
fn max_forward(g: &Geometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (pi, po) = (g.plane_in(), g.plane_out());
    let mut y = zeroed(g.planes * po);
    let mut argmax = filled(g.planes * po, NO_PIXEL);
    if po == 0 || pi == 0 {
        return (y, argmax);
    }
    let per = g.planes_per_task();
    y.par_chunks_mut(per * po).zip(argmax.par_chunks_mut(per * po)).zip(x.par_chunks(per * pi)).for_each(
        |((ys, args), xs)| {
            for ((y, arg), x) in ys.chunks_exact_mut(po).zip(args.chunks_exact_mut(po)).zip(xs.chunks_exact(pi)) {
                max_plane(g, x, y, arg);
            }
        },
    );
    (y, argmax)
}

/// One plane of [`max_forward`]: 2x2 windows at stride 2 16 outputs at a time with
/// AVX-512 ([`max_plane_pairs`]), any other geometry (and CPU) by [`max_plane_reference`].
/// Both give the same values and winners.
///
/// Why: the reference's compare-and-branch per pixel was 4% of vgg_small's two-thread
/// step (perf).
pub(super) fn max_plane(g: &Geometry, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if g.pairs && super::direct::cpu_supported() {
        // SAFETY: AVX-512F was just checked.
        #[allow(unsafe_code)]
        return unsafe { max_plane_pairs(g, x, y, arg) };
    }
    max_plane_reference(g, x, y, arg);
}

/// [`max_plane`] for 2x2 windows at stride 2 (`g.pairs`): each output row from two input
/// rows, 16 outputs per step. The four candidates of an output come in the reference's
/// row-major order, each replacing the running maximum only when strictly greater (an
/// ordered `<`, false for NaN), and a NaN first cell gives 0 with no winner, so values and
/// winners are the reference's.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
unsafe fn max_plane_pairs(g: &Geometry, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    use std::arch::x86_64::{
        _CMP_LT_OQ, _CMP_UNORD_Q, _mm512_add_epi32, _mm512_cmp_ps_mask, _mm512_mask_blend_epi32, _mm512_mask_blend_ps,
        _mm512_mask_storeu_epi32, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps,
        _mm512_set1_epi32, _mm512_setr_epi32, _mm512_setzero_ps,
    };
    let (w, oh, ow) = (g.w, g.oh, g.ow);
    assert!(g.pairs && 2 * oh <= g.h && 2 * ow <= w, "max pool: not 2x2 windows at stride 2");
    assert!(x.len() == g.h * w && y.len() == oh * ow && arg.len() == oh * ow, "max pool: plane lengths");
    assert!(g.h * w < NO_PIXEL as usize, "max pool: plane too large for u32 winners");
    // The k lowest lanes.
    let mask = |k: usize| -> u16 { if k >= 16 { u16::MAX } else { (1u16 << k) - 1 } };
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (one, below, below_right) =
        (_mm512_set1_epi32(1), _mm512_set1_epi32(w as i32), _mm512_set1_epi32(w as i32 + 1));
    let (zero, none) = (_mm512_setzero_ps(), _mm512_set1_epi32(NO_PIXEL as i32));
    let (xp, yp, ap) = (x.as_ptr(), y.as_mut_ptr(), arg.as_mut_ptr());
    for i in 0..oh {
        for j0 in (0..ow).step_by(16) {
            let n = (ow - j0).min(16);
            // Inputs 2·j0 .. 2·(j0 + n) of rows 2i and 2i + 1, in two vectors each (lanes past
            // them masked off: not read).
            let (lo, hi) = (mask(2 * n), mask((2 * n).saturating_sub(16)));
            let top = xp.wrapping_add(2 * i * w + 2 * j0);
            let bottom = top.wrapping_add(w);
            // SAFETY: the unmasked lanes are inputs 2·j0 .. 2·(j0 + n) <= 2·ow <= w of rows
            // 2i + 1 < 2·oh <= h, inside `x`; masked-off lanes are not accessed.
            let (t0, t1, b0, b1) = unsafe {
                (
                    _mm512_maskz_loadu_ps(lo, top),
                    _mm512_maskz_loadu_ps(hi, top.wrapping_add(16)),
                    _mm512_maskz_loadu_ps(lo, bottom),
                    _mm512_maskz_loadu_ps(hi, bottom.wrapping_add(16)),
                )
            };
            // The window's cells in row-major order, and the first one's plane index.
            let cells = [
                (_mm512_permutex2var_ps(t0, odd, t1), one),
                (_mm512_permutex2var_ps(b0, even, b1), below),
                (_mm512_permutex2var_ps(b0, odd, b1), below_right),
            ];
            let first = _mm512_add_epi32(_mm512_set1_epi32((2 * i * w + 2 * j0) as i32), even);
            let (mut best, mut at) = (_mm512_permutex2var_ps(t0, even, t1), first);
            for (v, offset) in cells {
                let greater = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(best, v);
                best = _mm512_mask_blend_ps(greater, best, v);
                at = _mm512_mask_blend_epi32(greater, at, _mm512_add_epi32(first, offset));
            }
            let stuck = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
            best = _mm512_mask_blend_ps(stuck, best, zero);
            at = _mm512_mask_blend_epi32(stuck, at, none);
            // SAFETY: outputs i·ow + j0 .. + n of `y` and `arg` (lengths asserted).
            unsafe {
                _mm512_mask_storeu_ps(yp.add(i * ow + j0), mask(n), best);
                _mm512_mask_storeu_epi32(ap.add(i * ow + j0).cast::<i32>(), mask(n), at);
            }
        }
    }
}

/// [`max_plane`] for any geometry, one window at a time: the slow, obvious reference.
pub(super) fn max_plane_reference(g: &Geometry, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    for (i, rs) in g.rows.iter().enumerate() {
        let (y_row, arg_row) = (&mut y[i * g.ow..(i + 1) * g.ow], &mut arg[i * g.ow..(i + 1) * g.ow]);
        for ((out, out_arg), cs) in y_row.iter_mut().zip(arg_row.iter_mut()).zip(&g.cols) {
            // The running maximum starts at the window's first cell: a real pixel, or the
            // `-inf` padding (which wins only if nothing is greater; its gradient is dropped).
            let (mut best, mut best_at) = if rs.starts_real && cs.starts_real {
                let at = rs.lo * g.w + cs.lo;
                (x[at], at)
            } else {
                (f32::NEG_INFINITY, NO_PIXEL as usize)
            };
            for r in rs.lo..rs.hi {
                let row = &x[r * g.w + cs.lo..r * g.w + cs.hi];
                for (q, &v) in row.iter().enumerate() {
                    // Strictly greater only: the first maximum wins; NaN never wins.
                    if best < v {
                        best = v;
                        best_at = r * g.w + cs.lo + q;
                    }
                }
            }
            if best.is_nan() {
                // A NaN first cell stuck (see the module docs): `ops::max_pool2d` gives 0.
                (*out, *out_arg) = (0.0, NO_PIXEL);
            } else {
                (*out, *out_arg) = (best, best_at as u32);
            }
        }
    }
}

/// Scatters `dy` to the winners: the gradient of [`max_forward`].
///
/// # Shapes
/// - `argmax`, `dy`: `[N·C, H_out, W_out]`, result `[N·C, H, W]`
fn max_backward(g: &Geometry, argmax: &[u32], dy: &[f32]) -> Vec<f32> {
    let (pi, po) = (g.plane_in(), g.plane_out());
    let mut dx = zeroed(g.planes * pi);
    if po == 0 || pi == 0 {
        return dx;
    }
    let per = g.planes_per_task();
    dx.par_chunks_mut(per * pi).zip(argmax.par_chunks(per * po)).zip(dy.par_chunks(per * po)).for_each(
        |((dxs, args), dys)| {
            for ((dx, arg), dy) in dxs.chunks_exact_mut(pi).zip(args.chunks_exact(po)).zip(dys.chunks_exact(po)) {
                // In output order: overlapping windows add up in a fixed order.
                for (&a, &d) in arg.iter().zip(dy) {
                    if a != NO_PIXEL {
                        dx[a as usize] += d;
                    }
                }
            }
        },
    );
    dx
}

/// The candle custom op of [`avg_pool2d`]; backward by [`AvgPool2dBackward`].
struct AvgPool2dOp {
    params: Pool2dParams,
}

impl CustomOp1 for AvgPool2dOp {
    fn name(&self) -> &'static str {
        "ferroflow-avg-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let g = Geometry::new("avg_pool2d", l.dims(), self.params)?;
        let y = avg_forward(&g, super::f32_contiguous(s, l, "pool", "x")?);
        let dims = l.dims();
        Ok((CpuStorage::F32(y), Shape::from_dims(&[dims[0], dims[1], g.oh, g.ow])))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (_, _, h, w) = x.dims4()?;
        Ok(Some(avg_pool2d_backward(dy, [h, w], self.params)?))
    }
}

/// `dx` of [`avg_pool2d`] as a custom op over `dy`; no backward of its own.
struct AvgPool2dBackward {
    params: Pool2dParams,
    input_hw: [usize; 2],
}

impl CustomOp1 for AvgPool2dBackward {
    fn name(&self) -> &'static str {
        "ferroflow-avg-pool2d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let dys = l.dims();
        let &[n, c, _, _] = dys else {
            bail!("ferroflow avg_pool2d backward kernel: expected a rank-4 dy, got {dys:?}");
        };
        let xs = [n, c, self.input_hw[0], self.input_hw[1]];
        let g = Geometry::new("avg_pool2d backward", &xs, self.params)?;
        g.check_dy("avg_pool2d backward", dys, &xs)?;
        let dx = avg_backward(&g, super::f32_contiguous(s, l, "pool", "dy")?);
        Ok((CpuStorage::F32(dx), Shape::from_dims(&xs)))
    }
}

/// # Shapes
/// - `x`: `[N·C, H, W]`, result `[N·C, H_out, W_out]`
fn avg_forward(g: &Geometry, x: &[f32]) -> Vec<f32> {
    let (pi, po) = (g.plane_in(), g.plane_out());
    let mut y = zeroed(g.planes * po);
    if po == 0 || pi == 0 {
        return y;
    }
    let per = g.planes_per_task();
    y.par_chunks_mut(per * po).zip(x.par_chunks(per * pi)).for_each(|(ys, xs)| {
        for (y, x) in ys.chunks_exact_mut(po).zip(xs.chunks_exact(pi)) {
            for (y_row, rs) in y.chunks_exact_mut(g.ow).zip(&g.rows) {
                for (out, cs) in y_row.iter_mut().zip(&g.cols) {
                    let mut sum = 0f32;
                    for r in rs.lo..rs.hi {
                        sum += x[r * g.w + cs.lo..r * g.w + cs.hi].iter().sum::<f32>();
                    }
                    // `Geometry::new` guarantees at least one real pixel per window.
                    *out = sum / (rs.len() * cs.len()) as f32;
                }
            }
        }
    });
    y
}

/// # Shapes
/// - `dy`: `[N·C, H_out, W_out]`, result `[N·C, H, W]`
fn avg_backward(g: &Geometry, dy: &[f32]) -> Vec<f32> {
    let (pi, po) = (g.plane_in(), g.plane_out());
    let mut dx = zeroed(g.planes * pi);
    if po == 0 || pi == 0 {
        return dx;
    }
    let per = g.planes_per_task();
    dx.par_chunks_mut(per * pi).zip(dy.par_chunks(per * po)).for_each(|(dxs, dys)| {
        for (dx, dy) in dxs.chunks_exact_mut(pi).zip(dys.chunks_exact(po)) {
            for (dy_row, rs) in dy.chunks_exact(g.ow).zip(&g.rows) {
                for (&d, cs) in dy_row.iter().zip(&g.cols) {
                    // The gradient of `sum / count`, as `ops::avg_pool2d`'s division gives it.
                    let share = d / (rs.len() * cs.len()) as f32;
                    for r in rs.lo..rs.hi {
                        for v in &mut dx[r * g.w + cs.lo..r * g.w + cs.hi] {
                            *v += share;
                        }
                    }
                }
            }
        }
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector path gives the reference's values and winners bit for bit, on planes
    /// with ties, NaN (in first cells and elsewhere), infinities and signed zeros, for
    /// widths that fill 16 outputs, part of them, and more than one vector; odd sizes
    /// (VALID) take it too.
    #[test]
    fn paired_windows_match_the_reference() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, 1.0];
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let pool = Pool2dParams { ksize: [2, 2], stride: [2, 2], pad_before: [0, 0], pad_after: [0, 0] };
        let mut taken = 0;
        for (h, w) in [(2, 2), (4, 4), (8, 8), (16, 16), (32, 32), (6, 34), (5, 7), (3, 66), (64, 2)] {
            let g = Geometry::new("test", &[1, 1, h, w], pool).unwrap();
            taken += usize::from(g.pairs);
            let mut x: Vec<f32> = (0..h * w)
                .map(|_| {
                    let r = next();
                    if r % 7 == 0 { specials[(r / 7) as usize % specials.len()] } else { (r % 9) as f32 - 4.0 }
                })
                .collect();
            // A NaN first cell sticks: the first output is 0 with no winner.
            x[0] = f32::NAN;
            let (mut y, mut arg) = (vec![0.0; g.plane_out()], vec![0u32; g.plane_out()]);
            let (mut y_ref, mut arg_ref) = (vec![0.0; g.plane_out()], vec![0u32; g.plane_out()]);
            max_plane(&g, &x, &mut y, &mut arg);
            max_plane_reference(&g, &x, &mut y_ref, &mut arg_ref);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&y_ref), "values, {h}x{w}");
            assert_eq!(arg, arg_ref, "winners, {h}x{w}");
            assert_eq!((y[0], arg[0]), (0.0, NO_PIXEL), "a stuck NaN, {h}x{w}");
        }
        assert_eq!(taken, 9, "every geometry here has 2x2 windows at stride 2");
        // SAME padding on an odd size: the last window is cut, so not paired.
        let same = Pool2dParams { pad_after: [1, 1], ..pool };
        assert!(!Geometry::new("test", &[1, 1, 5, 5], same).unwrap().pairs);
    }
}
