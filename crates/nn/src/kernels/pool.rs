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
        Ok(Self { planes: n * c, h, w, oh, ow, rows: spans(0, h, oh), cols: spans(1, w, ow) })
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

/// One plane of [`max_forward`].
pub(super) fn max_plane(g: &Geometry, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
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
