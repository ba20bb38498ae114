//! A fast CPU conv2d (f32, NCHW input, OIHW filter) as a candle custom op with its own
//! backward: im2col + gemm for the forward pass and the filter gradient, gemm + col2im for
//! the input gradient.
//!
//! Why: candle's CPU conv2d backward computes the input gradient with a naive
//! transposed-convolution loop, which dominates the training step of the benchmark CNNs.
//! Here all three passes are one gemm per image over an explicit im2col matrix, with the
//! batch split across rayon threads.
//!
//! Geometry is fully explicit (per-axis stride, dilation and padding before/after), so
//! TensorFlow's asymmetric SAME padding needs no pad/crop copies: padded pixels are zeros
//! of the im2col matrix and are skipped by col2im.
//!
//! Determinism: every pass gives bitwise-identical results for identical inputs, whatever
//! the number of rayon threads. The forward pass and the input gradient write disjoint
//! per-image outputs; the filter gradient is summed over images in contiguous chunks whose
//! boundaries depend on the shapes only (`dw_chunks`), and the chunk partial sums are
//! added in chunk order. gemm's own threading splits the output, never the reduction.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, bail};
use gemm::Parallelism;
use rayon::prelude::*;

use super::buffers::{with_scratch, zeroed, zeroed_in_tasks};
use super::lowering::Lowered;
use super::simd::simd_kernel;

/// Upper bound on the number of image chunks the filter gradient is split into. It fixes
/// the summation order (hence the bits of `dw`) independently of the thread count, while
/// leaving enough chunks to keep up to 16 threads busy.
pub(super) const DW_CHUNKS: usize = 16;

/// The fewest chunks [`dw_chunks`] takes for a large filter gradient: enough for 4 threads.
const DW_MIN_CHUNKS: usize = 4;

/// Bytes of per-chunk partial filter gradients [`dw_chunks`] aims to stay under: each
/// partial is zeroed, accumulated into once per image group and summed, so 16 partials of a
/// 256-channel 3x3 layer (16 x 2.4 MB) made its filter gradient memory-bound. Measured
/// (`examples/conv_passes.rs`, batch 64, 256 → 256 at 8x8, Winograd filter gradient): 16
/// chunks 87 ms (one thread) and 41-48 ms (two), 8 chunks 54-56 and 23-27, 4 chunks 47-54
/// and 24-27; 128 → 128 at 16x16 (0.6 MB per partial) 41-49 / 19-21 ms whatever the count.
const DW_PARTIALS_BYTES: usize = 16 << 20;

/// How many chunks of consecutive images the filter gradient of a batch of `n` images is
/// split into, for a gradient of `dw_len` elements: [`DW_CHUNKS`], or fewer (a power of two,
/// at least [`DW_MIN_CHUNKS`]) when that many partials would pass [`DW_PARTIALS_BYTES`].
/// A function of the shapes only, never of the thread count (see the module docs).
pub(super) fn dw_chunks(n: usize, dw_len: usize) -> usize {
    let fit = DW_PARTIALS_BYTES / (dw_len.max(1) * std::mem::size_of::<f32>());
    let chunks = if fit >= DW_CHUNKS { DW_CHUNKS } else { (1usize << fit.max(1).ilog2()).max(DW_MIN_CHUNKS) };
    chunks.min(n).max(1)
}

/// Stride, dilation and explicit zero padding of a 2-D convolution, each per spatial axis
/// (`[height, width]`).
///
/// Output size per axis: `(in + pad_before + pad_after - k_eff) / stride + 1` with
/// `k_eff = (k - 1) * dilation + 1`. TensorFlow's SAME/VALID map to this through
/// `ops::padding::window` (`pad_before`/`pad_after` of each [`crate::ops::padding::Window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between output pixels, in input pixels. At least 1.
    pub stride: [usize; 2],
    /// Step between kernel taps, in input pixels. At least 1.
    pub dilation: [usize; 2],
    /// Zero rows/columns before the input (top, left).
    pub pad_before: [usize; 2],
    /// Zero rows/columns after the input (bottom, right).
    pub pad_after: [usize; 2],
}

impl Conv2dParams {
    /// No padding, unit stride and dilation.
    pub const UNIT: Self = Self { stride: [1, 1], dilation: [1, 1], pad_before: [0, 0], pad_after: [0, 0] };

    /// The output `[height, width]` for an input of `input` pixels and a kernel of `kernel`
    /// taps per axis, or `None` when a stride, dilation or kernel size is zero or the
    /// (dilated) kernel does not fit in the padded input.
    pub fn output_size(&self, input: [usize; 2], kernel: [usize; 2]) -> Option<[usize; 2]> {
        let mut out = [0; 2];
        for a in 0..2 {
            if self.stride[a] == 0 || self.dilation[a] == 0 || kernel[a] == 0 {
                return None;
            }
            let k_eff = (kernel[a] - 1) * self.dilation[a] + 1;
            let padded = input[a] + self.pad_before[a] + self.pad_after[a];
            out[a] = padded.checked_sub(k_eff)? / self.stride[a] + 1;
        }
        Some(out)
    }
}

/// The convolution `x ⋆ w` with explicit geometry, on candle's CPU device in f32, with
/// gradients to `x` and `w` through candle's autograd (first order only).
///
/// The input gradient is skipped when `x` does not take part in autograd (neither a `Var`
/// nor computed from one: [`Tensor::track_op`]), as for a network's first layer fed with
/// data.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - `w`: `[O, C, kh, kw]`
/// - result: `[N, O, H_out, W_out]`, sizes from [`Conv2dParams::output_size`]
///
/// # Errors
/// A non-CPU device, a dtype other than f32, wrong ranks, mismatched channels or a
/// geometry without output (see [`Conv2dParams::output_size`]).
pub fn conv2d(x: &Tensor, w: &Tensor, params: Conv2dParams) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() || !w.device().is_cpu() {
        bail!("ferroflow conv2d kernel: CPU tensors only (x on {:?}, w on {:?})", x.device(), w.device());
    }
    // The kernels read plain row-major slices.
    x.contiguous()?.apply_op2(&w.contiguous()?, Conv2dOp { params })
}

/// Whether [`conv2d`] handles these tensors (CPU, f32): the condition for taking the fast
/// path instead of candle's conv.
pub fn supports(x: &Tensor, w: &Tensor) -> bool {
    super::fast_kernels_on(x.device())
        && w.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && w.dtype() == x.dtype()
}

/// The gradient of [`conv2d`] with respect to `x`, for an input of `input_hw` pixels.
///
/// # Shapes
/// - `dy`: `[N, O, H_out, W_out]`
/// - `w`: `[O, C, kh, kw]`
/// - result: `[N, C, input_hw[0], input_hw[1]]`
///
/// # Errors
/// As [`conv2d`]; also when `dy`'s size is not the output size for `input_hw`.
pub fn conv2d_backward_input(
    dy: &Tensor,
    w: &Tensor,
    input_hw: [usize; 2],
    params: Conv2dParams,
) -> candle_core::Result<Tensor> {
    dy.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &Conv2dBackwardInput { params, input_hw })
}

/// The gradient of [`conv2d`] with respect to `w`, for a kernel of `kernel_hw` taps.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - `dy`: `[N, O, H_out, W_out]`
/// - result: `[O, C, kernel_hw[0], kernel_hw[1]]`
///
/// # Errors
/// As [`conv2d`]; also when `dy`'s size is not the output size for `kernel_hw`.
pub fn conv2d_backward_filter(
    x: &Tensor,
    dy: &Tensor,
    kernel_hw: [usize; 2],
    params: Conv2dParams,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &Conv2dBackwardFilter { params, kernel_hw })
}

/// Sizes of one convolution, validated once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) p: Conv2dParams,
}

impl Geometry {
    /// From `x` `[N, C, H, W]` and `w` `[O, C, kh, kw]` dims.
    pub(super) fn new(xs: &[usize], ws: &[usize], p: Conv2dParams) -> candle_core::Result<Self> {
        let (&[n, c, h, w], &[o, wc, kh, kw]) = (xs, ws) else {
            bail!("ferroflow conv2d kernel: expected NCHW x and OIHW w, got x {xs:?}, w {ws:?}");
        };
        if c != wc {
            bail!("ferroflow conv2d kernel: x has {c} channels, w expects {wc} (x {xs:?}, w {ws:?})");
        }
        let Some([oh, ow]) = p.output_size([h, w], [kh, kw]) else {
            bail!("ferroflow conv2d kernel: no output for x {xs:?}, w {ws:?}, {p:?}");
        };
        Ok(Self { n, c, h, w, o, kh, kw, oh, ow, p })
    }

    /// Checks that `dy` has the output shape `[N, O, H_out, W_out]`.
    pub(super) fn check_dy(&self, dys: &[usize]) -> candle_core::Result<()> {
        if dys != [self.n, self.o, self.oh, self.ow] {
            bail!(
                "ferroflow conv2d kernel: dy {dys:?} is not the output shape {:?} ({:?})",
                [self.n, self.o, self.oh, self.ow],
                self.p
            );
        }
        Ok(())
    }

    /// Rows of the im2col matrix: one per (channel, kernel row, kernel column).
    pub(super) fn col_rows(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Columns of the im2col matrix: one per output pixel.
    pub(super) fn col_cols(&self) -> usize {
        self.oh * self.ow
    }

    pub(super) fn x_image(&self) -> usize {
        self.c * self.h * self.w
    }

    pub(super) fn y_image(&self) -> usize {
        self.o * self.oh * self.ow
    }

    /// No input, output or channels: every result is empty or zero, and the per-image
    /// chunking below would split by zero.
    pub(super) fn is_degenerate(&self) -> bool {
        self.n == 0 || self.c == 0 || self.o == 0
    }

    /// A 1x1 unit-stride unpadded conv: the im2col matrix of an image is the image itself.
    pub(super) fn is_pointwise(&self) -> bool {
        let p = &self.p;
        self.kh == 1 && self.kw == 1 && p.stride == [1, 1] && p.pad_before == [0, 0] && p.pad_after == [0, 0]
    }
}

/// The candle custom op of [`conv2d`]: forward by im2col + gemm, backward by the two ops
/// below.
struct Conv2dOp {
    params: Conv2dParams,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "ferroflow-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let g = Geometry::new(l1.dims(), l2.dims(), self.params)?;
        let y =
            forward(&g, super::f32_contiguous(s1, l1, "conv2d", "x")?, super::f32_contiguous(s2, l2, "conv2d", "w")?);
        Ok((CpuStorage::F32(y), Shape::from_dims(&[g.n, g.o, g.oh, g.ow])))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // `track_op` is false for a tensor that is neither a Var nor computed from one: its
        // gradient would be dropped by candle anyway, so do not compute it (the data input
        // of a network's first layer).
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let dx = if x.track_op() { Some(conv2d_backward_input(dy, w, [h, wd], self.params)?) } else { None };
        let dw = if w.track_op() { Some(conv2d_backward_filter(x, dy, [kh, kw], self.params)?) } else { None };
        Ok((dx, dw))
    }
}

/// Which passes of a conv run as direct AVX-512 convolutions on this CPU, under the kernel
/// choice in force on this thread (the others take Winograd, see [`winograd_passes`], or
/// im2col + gemm): `[forward, input gradient, filter gradient]`, all `false` for shapes
/// this kernel does not take.
///
/// # Shapes
/// - `x_dims`: `[N, C, H, W]`, `w_dims`: `[O, C, kh, kw]`
pub fn direct_passes(x_dims: [usize; 4], w_dims: [usize; 4], params: Conv2dParams) -> [bool; 3] {
    match Geometry::new(&x_dims, &w_dims, params) {
        Ok(g) if !g.is_degenerate() => {
            let [forward, input, filter] = super::direct::Direct::passes(&g, true);
            let [wino_forward, wino_input, wino_filter] = super::winograd::Winograd::passes(&g);
            [forward && !wino_forward, input && !wino_input, filter && !wino_filter]
        }
        _ => [false; 3],
    }
}

/// Which passes of a conv run as Winograd F(4x4, 3x3) convolutions on this CPU, under the
/// kernel choice in force on this thread: `[forward, input gradient, filter gradient]`
/// (3x3, unit stride, SAME, channel counts in and out that are multiples of 16, AVX-512F).
///
/// # Shapes
/// - `x_dims`: `[N, C, H, W]`, `w_dims`: `[O, C, kh, kw]`
pub fn winograd_passes(x_dims: [usize; 4], w_dims: [usize; 4], params: Conv2dParams) -> [bool; 3] {
    match Geometry::new(&x_dims, &w_dims, params) {
        Ok(g) if !g.is_degenerate() => super::winograd::Winograd::passes(&g),
        _ => [false; 3],
    }
}

/// `dx` of [`conv2d`] as a custom op over `(dy, w)`; no backward of its own.
struct Conv2dBackwardInput {
    params: Conv2dParams,
    input_hw: [usize; 2],
}

impl CustomOp2 for Conv2dBackwardInput {
    fn name(&self) -> &'static str {
        "ferroflow-conv2d-backward-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let (&[n, _, _, _], &[_, c, _, _]) = (l1.dims(), l2.dims()) else {
            bail!("ferroflow conv2d backward input: expected rank-4 dy and w, got {:?}, {:?}", l1.dims(), l2.dims());
        };
        let [h, w] = self.input_hw;
        let g = Geometry::new(&[n, c, h, w], l2.dims(), self.params)?;
        g.check_dy(l1.dims())?;
        let dx = backward_input(
            &g,
            super::f32_contiguous(s1, l1, "conv2d", "dy")?,
            super::f32_contiguous(s2, l2, "conv2d", "w")?,
        );
        Ok((CpuStorage::F32(dx), Shape::from_dims(&[n, c, h, w])))
    }
}

/// `dw` of [`conv2d`] as a custom op over `(x, dy)`; no backward of its own.
struct Conv2dBackwardFilter {
    params: Conv2dParams,
    kernel_hw: [usize; 2],
}

impl CustomOp2 for Conv2dBackwardFilter {
    fn name(&self) -> &'static str {
        "ferroflow-conv2d-backward-filter"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let (&[_, c, _, _], &[_, o, _, _]) = (l1.dims(), l2.dims()) else {
            bail!("ferroflow conv2d backward filter: expected rank-4 x and dy, got {:?}, {:?}", l1.dims(), l2.dims());
        };
        let [kh, kw] = self.kernel_hw;
        let g = Geometry::new(l1.dims(), &[o, c, kh, kw], self.params)?;
        g.check_dy(l2.dims())?;
        let dw = backward_filter(
            &g,
            super::f32_contiguous(s1, l1, "conv2d", "x")?,
            super::f32_contiguous(s2, l2, "conv2d", "dy")?,
        );
        Ok((CpuStorage::F32(dw), Shape::from_dims(&[o, c, kh, kw])))
    }
}

/// How the batch is spread over threads: `(images per rayon task, gemm parallelism)`. With
/// at least one image per thread, images run in parallel and each gemm is single-threaded,
/// in up to four tasks per thread (so that a thread slowed by another process hands work
/// to the others instead of holding the whole op up; the per-image passes give the same
/// bits however the batch is split); otherwise (small batches, inference) images run one
/// after the other and gemm uses all threads.
pub(super) fn batch_plan(n: usize) -> (usize, Parallelism) {
    let threads = rayon::current_num_threads().max(1);
    if n >= threads { (n.div_ceil(4 * threads).max(1), Parallelism::None) } else { (1, Parallelism::Rayon(threads)) }
}

/// # Shapes
/// - `x`: `[N, C, H, W]`, `w`: `[O, C·kh·kw]` (OIHW flattened), result `[N, O, H_out·W_out]`
fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    if g.is_degenerate() {
        return zeroed(g.n * g.y_image());
    }
    let (per, par) = batch_plan(g.n);
    let lowered = Lowered::new(g, w, true);
    // Each task zeroes its own images' outputs (`buffers::zeroed_in_tasks`).
    zeroed_in_tasks(g.n * g.y_image(), per * g.y_image(), 1, x.par_chunks(per * g.x_image()), |_, xs, ys| {
        with_scratch([lowered.col_len()], |[col]| lowered.forward_images(xs, col, ys, par));
    })
}

/// # Shapes
/// - `dy`: `[N, O, H_out·W_out]`, `w`: `[O, C·kh·kw]`, result `[N, C, H, W]`
fn backward_input(g: &Geometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    if g.is_degenerate() {
        return zeroed(g.n * g.x_image());
    }
    let (per, par) = batch_plan(g.n);
    let lowered = Lowered::new(g, w, false);
    zeroed_in_tasks(g.n * g.x_image(), per * g.x_image(), 1, dy.par_chunks(per * g.y_image()), |_, dys, dxs| {
        with_scratch([lowered.col_len()], |[dcol]| lowered.input_images(dys, dcol, dxs, par));
    })
}

/// # Shapes
/// - `x`: `[N, C, H, W]`, `dy`: `[N, O, H_out·W_out]`, result `[O, C·kh·kw]`
fn backward_filter(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if g.is_degenerate() {
        return vec![0f32; g.o * g.col_rows()];
    }
    // Chunks of consecutive images, a function of the shapes only (see the module docs).
    let per = g.n.div_ceil(dw_chunks(g.n, g.o * g.col_rows()));
    let chunks = g.n.div_ceil(per);
    let threads = rayon::current_num_threads().max(1);
    let par = if chunks >= threads { Parallelism::None } else { Parallelism::Rayon(threads.div_ceil(chunks)) };
    let lowered = Lowered::without_weights(g);
    let len = lowered.filter_len();
    // Each chunk's partial is zeroed by its own task: 16 partials of vgg_small's
    // 256-channel filter gradient are 38 MB, which `vec![0; n]` zeroed serially while
    // the others waited.
    let items = x.par_chunks(per * g.x_image()).zip(dy.par_chunks(per * g.y_image()));
    let mut partial = zeroed_in_tasks(chunks * len, len, 1, items, |_, (xs, dys), acc| {
        let images = xs.len() / g.x_image();
        with_scratch([lowered.filter_col_len(images)], |[col]| {
            lowered.filter_images(images, xs, dys, col, acc, false, par);
        });
    });
    lowered.finish_filter(sum_chunks(&mut partial, len))
}

/// The per-chunk partials `[chunks, len]` summed in chunk order (a fixed order, so fixed
/// bits), in place: the first `len` elements. Slices of the sum run on the rayon threads
/// (each element's additions keep the chunk order): for vgg_small's 256-channel filter
/// gradient the partials are 16 x 2.4 MB, and a serial sum held the other threads up.
pub(super) fn sum_chunks(partial: &mut [f32], len: usize) -> &[f32] {
    /// Elements per task: large enough that the task overhead is small.
    const SLICE: usize = 16 * 1024;
    let (first, rest) = partial.split_at_mut(len);
    first.par_chunks_mut(SLICE).enumerate().for_each(|(i, out)| {
        for part in rest.chunks_exact(len) {
            for (a, b) in out.iter_mut().zip(&part[i * SLICE..]) {
                *a += b;
            }
        }
    });
    first
}

/// The output positions `j` in `[0, out)` whose input position `j * stride + offset - pad`
/// lies in `[0, len)`: a range `lo..hi` (empty when none do).
pub(super) fn valid_range(out: usize, len: usize, offset: usize, stride: usize, pad: usize) -> (usize, usize) {
    let hi = (len + pad).saturating_sub(offset).div_ceil(stride).min(out);
    let lo = pad.saturating_sub(offset).div_ceil(stride).min(hi);
    (lo, hi)
}

/// Fills `col` `[C·kh·kw, H_out·W_out]` with the input pixel each (channel, tap) reads at
/// each output pixel, zero where the tap falls in the padding.
///
/// # Shapes
/// - `x`: `[C, H, W]` (one image), `col`: `[C·kh·kw, H_out·W_out]`
pub(super) fn im2col(g: &Geometry, x: &[f32], col: &mut [f32]) {
    im2col_kernel(g, x, col);
}

simd_kernel! {
/// [`im2col`], dispatched to the CPU's widest SIMD (the copies and zero-fills vectorise).
fn im2col_kernel<'a>(g: &'a Geometry, x: &'a [f32], col: &'a mut [f32]) -> () {
    let Conv2dParams { stride: [sh, sw], dilation: [dh, dw], pad_before: [pt, pl], .. } = g.p;
    // Unit strides with an output as wide as the input (e.g. SAME 3x3): output pixel `t`
    // of a tap's row reads input pixel `t + offset` of the plane, so the tap's valid rows
    // are one contiguous copy, after which the few columns that wrapped around (reading
    // the neighbouring row instead of the padding) are zeroed.
    let contiguous = sh == 1 && sw == 1 && g.ow == g.w;
    let mut rows = col.chunks_exact_mut(g.col_cols());
    for plane in x.chunks_exact(g.h * g.w) {
        for a in 0..g.kh {
            let (i0, i1) = valid_range(g.oh, g.h, a * dh, sh, pt);
            for e in 0..g.kw {
                let (j0, j1) = valid_range(g.ow, g.w, e * dw, sw, pl);
                let Some(row) = rows.next() else { return };
                row[..i0 * g.ow].fill(0.0);
                row[i1 * g.ow..].fill(0.0);
                if contiguous && i0 < i1 && j0 < j1 {
                    // Output `(i, j)` reads `(i + a·dh - pt, j + e·dw - pl)`: plane index
                    // `t + a·dh·w + e·dw - pt·w - pl` for `t = i·w + j`. Copy from the
                    // first valid output to the last one (all their sources are in the
                    // plane), then zero the invalid columns of the rows.
                    let (first, last) = (i0 * g.ow + j0, (i1 - 1) * g.ow + j1);
                    let src = first + a * dh * g.w + e * dw - pt * g.w - pl;
                    row[first..last].copy_from_slice(&plane[src..src + (last - first)]);
                    for i in i0..i1 {
                        let out = &mut row[i * g.ow..(i + 1) * g.ow];
                        out[..j0].fill(0.0);
                        out[j1..].fill(0.0);
                    }
                    continue;
                }
                for i in i0..i1 {
                    let r = i * sh + a * dh - pt;
                    let src = &plane[r * g.w..(r + 1) * g.w];
                    let out = &mut row[i * g.ow..(i + 1) * g.ow];
                    out[..j0].fill(0.0);
                    out[j1..].fill(0.0);
                    if j0 == j1 {
                        continue;
                    }
                    let q0 = j0 * sw + e * dw - pl;
                    if sw == 1 {
                        out[j0..j1].copy_from_slice(&src[q0..q0 + (j1 - j0)]);
                    } else {
                        for (d, s) in out[j0..j1].iter_mut().zip(src[q0..].iter().step_by(sw)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}
}

/// The adjoint of [`im2col`]: adds each entry of `col` to the input pixel it was read from
/// (entries in the padding are dropped). `x` must be zeros (the callers' outputs come
/// zero-filled, so it is not cleared again here).
///
/// # Shapes
/// - `col`: `[C·kh·kw, H_out·W_out]`, `x`: `[C, H, W]` (one image)
pub(super) fn col2im(g: &Geometry, col: &[f32], x: &mut [f32]) {
    col2im_kernel(g, col, x);
}

simd_kernel! {
/// [`col2im`], dispatched to the CPU's widest SIMD (the row additions vectorise).
fn col2im_kernel<'a>(g: &'a Geometry, col: &'a [f32], x: &'a mut [f32]) -> () {
    let Conv2dParams { stride: [sh, sw], dilation: [dh, dw], pad_before: [pt, pl], .. } = g.p;
    let mut rows = col.chunks_exact(g.col_cols());
    for plane in x.chunks_exact_mut(g.h * g.w) {
        for a in 0..g.kh {
            let (i0, i1) = valid_range(g.oh, g.h, a * dh, sh, pt);
            for e in 0..g.kw {
                let (j0, j1) = valid_range(g.ow, g.w, e * dw, sw, pl);
                let Some(row) = rows.next() else { return };
                if j0 == j1 {
                    continue;
                }
                let q0 = j0 * sw + e * dw - pl;
                for i in i0..i1 {
                    let r = i * sh + a * dh - pt;
                    let dst = &mut plane[r * g.w..(r + 1) * g.w];
                    let src = &row[i * g.ow + j0..i * g.ow + j1];
                    if sw == 1 {
                        for (d, s) in dst[q0..q0 + src.len()].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (d, s) in dst[q0..].iter_mut().step_by(sw).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}
}

/// `dst [m, n] = (accumulate ? dst : 0) + lhs [m, k] · rhs [k, n]`, every matrix given as
/// `(data, row stride, column stride)` (`dst`'s strides as `(row, column)`), so a
/// transposed operand, a column-major `dst` or a row of a wider matrix are just strides.
///
/// # Panics
/// If a slice is too short for its shape and strides (checked before the unchecked gemm
/// call), or `dst`'s strides make two of its elements overlap.
pub(super) fn gemm_strided(
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    [m, n, k]: [usize; 3],
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    // Distinct elements: one stride is 1 and the other spans the whole other axis.
    let distinct = (dst_cs == 1 && (m == 1 || dst_rs >= n)) || (dst_rs == 1 && (n == 1 || dst_cs >= m));
    assert!(distinct, "matmul: dst strides ({dst_rs}, {dst_cs}) overlap for {m}x{n}");
    assert!(last(m, n, dst_rs, dst_cs) < dst.len(), "matmul: dst has {} elements, needs {m}x{n}", dst.len());
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = 0.0;
                }
            }
        }
        return;
    }
    assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len(), "matmul: lhs too short for {m}x{k}");
    assert!(last(k, n, rhs_rs, rhs_cs) < rhs.len(), "matmul: rhs too short for {k}x{n}");
    // SAFETY: the asserts above keep every element gemm reads (lhs, rhs) or writes (dst,
    // m x n at the given strides, which address distinct elements) inside its slice; `dst`
    // is borrowed mutably, so it aliases neither operand; with `read_dst == false` gemm
    // ignores dst's old values (which are initialised anyway).
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_filter_gradients_take_fewer_chunks() {
        // 64 → 64 3x3 (0.15 MB per partial) and 128 → 128 (0.6 MB): 16 chunks.
        assert_eq!(dw_chunks(64, 64 * 64 * 9), 16);
        assert_eq!(dw_chunks(64, 128 * 128 * 9), 16);
        // 128 → 256 (1.2 MB): 8; 256 → 256 (2.4 MB): 4; ResNet-50's 512 → 512 (9.4 MB): 4.
        assert_eq!(dw_chunks(64, 128 * 256 * 9), 8);
        assert_eq!(dw_chunks(64, 256 * 256 * 9), 4);
        assert_eq!(dw_chunks(64, 512 * 512 * 9), DW_MIN_CHUNKS);
        // Never more chunks than images, never none.
        assert_eq!(dw_chunks(3, 64 * 64 * 9), 3);
        assert_eq!(dw_chunks(2, 256 * 256 * 9), 2);
        assert_eq!(dw_chunks(1, 0), 1);
    }
}
