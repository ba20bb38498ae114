//! Conv2d → training-mode batch norm → optional ReLU (the block of every benchmark CNN)
//! as one candle custom op with its own backward (f32, NCHW input, OIHW filter, CPU).
//!
//! Why: as three ops (the [`super::conv2d`](mod@super::conv2d), [`super::batch_norm`] and ReLU kernels) the
//! block costs, besides the gemms, two full reading sweeps over the conv output for the
//! statistics, a full `dz` tensor in the backward (written by batch norm, read back by
//! both conv gradients), and two autograd nodes whose gradients candle zero-fills and adds
//! into (perf: that bookkeeping was 11.5% of cifar_cnn's step). Here:
//! - forward: per image, the conv's gemms (lowered as `kernels::lowering` picks), then the
//!   image's per-channel mean and sum of squared deviations while its output is still in
//!   cache; the images' statistics are merged in image order (Chan, Golub & LeVeque's
//!   pairwise update, in f64); then one sweep writes `relu((z - mean) · scale + beta)`;
//! - backward: one reading sweep for the per-channel sums of batch norm's gradient, then
//!   per image: `dz` into a per-thread buffer, and from it the filter gradient and the
//!   input gradient (the conv's gemms and col2im) while `dz` is in cache.
//!
//! One autograd node: inputs `x`, `w` and `gamma_beta` (`[2, C]`, gamma and beta stacked).
//! The conv output `z` lives inside the op (the backward needs it) instead of in the graph.
//!
//! Semantics are those of the three ops in sequence (TF's `Conv2D`, `FusedBatchNormV3`
//! with `is_training=True`, `Relu`): the batch variance is the biased one, the ReLU mask is
//! `y > 0` (recomputed from `z` with the forward's f32 operations, so bitwise the
//! forward's), and the returned statistics are detached.
//!
//! Determinism: the forward's per-image statistics are merged in image order and the
//! filter gradient is summed over fixed image chunks (`conv2d::dw_chunks`) in
//! chunk order, so every pass gives bitwise-identical results whatever the number of rayon
//! threads.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, bail};
use gemm::Parallelism;
use rayon::prelude::*;

use super::batch_norm::{self as bn, Affine, Stats};
use super::buffers::{filled, pair_in_tasks, recycle, recycled, with_scratch, zeroed, zeroed_in_tasks};
use super::conv2d::{Conv2dParams, Geometry, batch_plan, dw_chunks, sum_chunks};
use super::lane_sums::{Terms, lane_sums};
use super::lowering::Lowered;
use super::pool::{Geometry as PoolGeometry, NO_PIXEL, Pool2dParams, check_plane_index, max_plane};
use super::simd::simd_kernel;

/// Whether [`conv2d_batch_norm_train`] handles these tensors (f32 on the CPU, at least one
/// input channel): the condition for taking the fused path.
pub fn supports(x: &Tensor, w: &Tensor, gamma: &Tensor, beta: &Tensor) -> bool {
    super::conv2d::supports(x, w) && bn::supports(x, gamma, beta) && x.dims().get(1).is_some_and(|&c| c > 0)
}

/// `relu?(batch_norm_train(conv2d(x, w), gamma, beta))` in one op, on candle's CPU device
/// in f32, with the gradients to `x`, `w`, `gamma` and `beta` through candle's autograd
/// (first order only). The input gradient is skipped when `x` does not take part in
/// autograd (a network's first layer), as [`super::conv2d`](fn@super::conv2d) does.
///
/// Returns `(y, batch_mean, batch_variance_biased)` of the conv output; the statistics are
/// detached.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - `w`: `[O, C, kh, kw]`
/// - `gamma`, `beta`: `[O]`
/// - results: `y` `[N, O, H_out, W_out]` (sizes from [`Conv2dParams::output_size`]);
///   `batch_mean`, `batch_variance_biased`: `[O]`
///
/// # Errors
/// A non-CPU device, a dtype other than f32, wrong ranks, mismatched channels, parameters
/// of the wrong shape, no input channels, or a geometry without output.
pub fn conv2d_batch_norm_train(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    params: Conv2dParams,
    epsilon: f64,
    relu: bool,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    train(x, w, gamma, beta, params, epsilon, relu, None)
}

/// [`conv2d_batch_norm_train`] with the ReLU, then a max-pool, in one op: the block's
/// activation exists only plane by plane inside the op (normalised, rectified and pooled
/// while in cache), and the backward scatters the pooled gradient back through the
/// remembered winners inside the op too, so neither the full-size activation nor its
/// gradient is ever a tensor (or an autograd node). The pool's semantics are
/// [`super::max_pool2d`]'s (ties to the first maximum in row-major order, `-inf` padding).
///
/// Returns `(pool(relu(y)), batch_mean, batch_variance_biased)`; the statistics (of the
/// conv output) are detached.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - `w`: `[O, C, kh, kw]`
/// - `gamma`, `beta`: `[O]`
/// - results: `[N, O, P_h, P_w]` (the pool's output for the conv's `[H_out, W_out]`,
///   [`Pool2dParams::output_size`]); `batch_mean`, `batch_variance_biased`: `[O]`
///
/// # Errors
/// As [`conv2d_batch_norm_train`]; also a pool geometry without output.
pub fn conv2d_batch_norm_relu_max_pool_train(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    params: Conv2dParams,
    pool: Pool2dParams,
    epsilon: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    train(x, w, gamma, beta, params, epsilon, true, Some(pool))
}

#[allow(clippy::too_many_arguments)]
fn train(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    params: Conv2dParams,
    epsilon: f64,
    relu: bool,
    pool: Option<Pool2dParams>,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    if !supports(x, w, gamma, beta) {
        bail!(
            "ferroflow conv2d+batch_norm kernel: f32 CPU tensors with at least one input channel only (x {:?} {:?} \
             on {:?})",
            x.dims(),
            x.dtype(),
            x.device().location()
        );
    }
    let gamma_beta = Tensor::stack(&[gamma, beta], 0)?; // [2, O]
    let saved = Arc::new(OnceLock::new());
    let op = ConvBnOp { block: Block { params, epsilon, relu, pool }, saved: Arc::clone(&saved) };
    // The kernels read plain row-major slices.
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &gamma_beta, op)?;
    let Some(saved) = saved.get() else { bail!("conv2d+batch_norm: the forward pass left no statistics") };
    let (mean, var) = saved.stats.as_f32();
    let c = mean.len();
    Ok((y, Tensor::from_vec(mean, c, x.device())?, Tensor::from_vec(var, c, x.device())?))
}

/// The max-pool of a [`conv2d_batch_norm_relu_max_pool_train`]: its geometry and, per
/// pooled output, the plane-local index of the winning pixel ([`NO_PIXEL`] for none).
struct Pooled {
    geometry: PoolGeometry,
    argmax: Vec<u32>,
    /// `z` at each winner (0 where there is none), `[N, O, P_out]`: the backward's
    /// gradient sums read these instead of gathering from all of `z` (a quarter of the
    /// memory for 2x2 pools; perf: the gather was 2-3% of vgg_small's step).
    z_at: Vec<f32>,
}

/// What the forward pass keeps for the backward.
pub(super) struct Saved {
    /// The conv output `[N, O, H_out·W_out]`.
    pub(super) z: Vec<f32>,
    pub(super) stats: Stats,
    /// The normalisation's f32 coefficients (the ReLU mask is recomputed with them).
    pub(super) affine: Affine,
    gamma: Vec<f32>,
    /// The max-pool after the ReLU, if any.
    pooled: Option<Pooled>,
}

impl Drop for Saved {
    /// The conv output goes back to the buffer pool: the next training step's forward
    /// takes it instead of zero-filling (and faulting in) a new one.
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.z));
    }
}

/// One conv → batch norm (→ ReLU) (→ max-pool) block's settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct Block {
    pub(super) params: Conv2dParams,
    pub(super) epsilon: f64,
    pub(super) relu: bool,
    /// A max-pool after the ReLU (only with `relu`).
    pub(super) pool: Option<Pool2dParams>,
}

impl Block {
    fn name(&self) -> &'static str {
        match (self.relu, self.pool) {
            (true, Some(_)) => "ferroflow-conv2d-batch-norm-relu-max-pool",
            (true, None) => "ferroflow-conv2d-batch-norm-relu",
            (false, _) => "ferroflow-conv2d-batch-norm",
        }
    }
}

/// The candle custom op over `(x, w, gamma_beta)`.
struct ConvBnOp {
    block: Block,
    saved: Arc<OnceLock<Saved>>,
}

/// `gamma_beta` `[2, O]` as `(gamma, beta)`.
fn split_gamma_beta<'a>(s: &'a CpuStorage, l: &Layout, o: usize) -> candle_core::Result<(&'a [f32], &'a [f32])> {
    if l.dims() != [2, o] {
        bail!(
            "ferroflow conv2d+batch_norm kernel: gamma and beta must be [{o}] each (stacked [2, {o}]), got {:?}",
            l.dims()
        );
    }
    Ok(super::f32_contiguous(s, l, "conv2d+batch_norm", "gamma_beta")?.split_at(o))
}

impl CustomOp3 for ConvBnOp {
    fn name(&self) -> &'static str {
        self.block.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let x = super::f32_contiguous(s1, l1, "conv2d+batch_norm", "x")?;
        let w = super::f32_contiguous(s2, l2, "conv2d+batch_norm", "w")?;
        let o = l2.dims().first().copied().unwrap_or(0);
        let (gamma, beta) = split_gamma_beta(s3, l3, o)?;
        let (y, dims, saved) = forward_block(&self.block, x, l1.dims(), w, l2.dims(), gamma, beta, None)?;
        // A fresh op per call, so the cell is empty; a second forward (never done by
        // candle) would compute the same values.
        let _ = self.saved.set(saved);
        Ok((CpuStorage::F32(y), Shape::from_dims(&dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gamma_beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // As in `conv2d`: no input gradient for an input outside autograd (data).
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        let out = Arc::new(Mutex::new(None));
        let op = ConvBnBackward {
            block: self.block,
            need_dx,
            need_dw,
            saved: Arc::clone(&self.saved),
            out: Arc::clone(&out),
        };
        run_backward(&op, &out, [x, dy, w, gamma_beta], need_dw, "conv2d+batch_norm")
    }
}

/// Runs a backward op over `(x, dy, w)` that returns `dw` and leaves `(dx,
/// dgamma_beta)` in `out` (the single-block and the chain ops' backward), and
/// returns the gradients of `(x, w, gamma_beta)` as candle's `bwd` does.
pub(super) fn run_backward<C: CustomOp3>(
    op: &C,
    out: &Mutex<Option<Gradients>>,
    [x, dy, w, gamma_beta]: [&Tensor; 4],
    need_dw: bool,
    what: &str,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let dw = x.contiguous()?.apply_op3_no_bwd(&dy.contiguous()?, &w.contiguous()?, op)?;
    let taken = out.lock().map_err(|_| candle_core::Error::Msg(format!("{what}: poisoned")))?.take();
    let Some((dx, dgamma_beta)) = taken else { bail!("{what} backward: no gradients") };
    let dx = dx.map(|dx| Tensor::from_vec(dx, x.shape(), x.device())).transpose()?;
    let dgamma_beta = Tensor::from_vec(dgamma_beta, gamma_beta.shape(), x.device())?;
    Ok((dx, need_dw.then_some(dw), Some(dgamma_beta)))
}

/// One block's forward pass: the output `[N, O, H_out, W_out]` (or the pool's output
/// size), its dims, and what the backward needs. With `residual`, a block without ReLU
/// or pool writes `relu(normalise(z) + residual)` instead (a residual unit's identity
/// shortcut, added in the normalising sweep).
///
/// # Shapes
/// - `x`: `x_dims` `[N, C, H, W]`; `w`: `w_dims` `[O, C, kh, kw]`; `gamma`, `beta`: `[O]`
/// - `residual`: the output's shape `[N, O, H_out, W_out]`
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_block(
    block: &Block,
    x: &[f32],
    x_dims: &[usize],
    w: &[f32],
    w_dims: &[usize],
    gamma: &[f32],
    beta: &[f32],
    residual: Option<&[f32]>,
) -> candle_core::Result<(Vec<f32>, [usize; 4], Saved)> {
    let g = Geometry::new(x_dims, w_dims, block.params)?;
    if g.n == 0 || g.c == 0 || g.o == 0 {
        bail!("ferroflow conv2d+batch_norm kernel: empty batch or channels (x {x_dims:?}, w {w_dims:?})");
    }
    if gamma.len() != g.o || beta.len() != g.o {
        bail!("ferroflow conv2d+batch_norm kernel: gamma and beta must be [{}] each", g.o);
    }
    if let Some(r) = residual
        && (block.relu || block.pool.is_some() || r.len() != g.n * g.y_image())
    {
        bail!(
            "ferroflow conv2d+batch_norm kernel: a residual of {} values after a block without ReLU or pool and of \
             the output's shape {:?} only",
            r.len(),
            [g.n, g.o, g.oh, g.ow]
        );
    }
    let (z, moments) = forward_conv(&g, x, w);
    let stats = merge_moments(&moments, g.o, g.col_cols());
    let affine = Affine::new(&stats, gamma, beta, block.epsilon);
    let bg = bn::Geometry { n: g.n, c: g.o, s: g.col_cols() };
    let (y, out_hw, pooled) = match block.pool.filter(|_| block.relu) {
        None => {
            let relu = block.relu;
            let y = bn::new_planes(bg, |ch, at, out| {
                let zs = &z[at..at + out.len()];
                match residual {
                    None => bn::normalise_plane(out, zs, affine.of(ch), relu),
                    Some(r) => bn::normalise_add_relu_plane(out, zs, &r[at..at + out.len()], affine.of(ch)),
                }
            });
            (y, [g.oh, g.ow], None)
        }
        Some(pool) => {
            let geometry = PoolGeometry::new("conv2d+batch_norm+max_pool", &[g.n, g.o, g.oh, g.ow], pool)?;
            check_plane_index(&geometry)?;
            let (y, argmax, z_at) = normalise_and_pool(&z, &affine, g.o, &geometry);
            (y, geometry.output_hw(), Some(Pooled { geometry, argmax, z_at }))
        }
    };
    let saved = Saved { z, stats, affine, gamma: gamma.to_vec(), pooled };
    Ok((y, [g.n, g.o, out_hw[0], out_hw[1]], saved))
}

/// `max_pool(relu(normalise(z)))`, the winners and `z` at the winners, plane by plane:
/// each plane of the block's activation exists only in a per-thread buffer.
///
/// # Shapes
/// - `z`: `[N·O, P]`; results `[N·O, P_out]` (values, plane-local winner indices, `z` at
///   the winners or 0 where there is none)
fn normalise_and_pool(
    z: &[f32],
    affine: &Affine,
    channels: usize,
    geometry: &PoolGeometry,
) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let (pi, po) = (geometry.plane_in(), geometry.plane_out());
    let planes = z.len() / pi;
    let mut y = zeroed(planes * po);
    let mut argmax = filled(planes * po, NO_PIXEL);
    let mut z_at = zeroed(planes * po);
    let per = (bn::TASK_ELEMS / pi).max(1);
    let outs = y.par_chunks_mut(per * po).zip(argmax.par_chunks_mut(per * po)).zip(z_at.par_chunks_mut(per * po));
    outs.enumerate().for_each(|(task, ((ys, args), zs_at))| {
        with_scratch([pi], |[act]| {
            let planes = ys.chunks_exact_mut(po).zip(args.chunks_exact_mut(po)).zip(zs_at.chunks_exact_mut(po));
            for (j, ((y_plane, arg_plane), z_at_plane)) in planes.enumerate() {
                let plane = task * per + j;
                let zs = &z[plane * pi..][..pi];
                bn::normalise_plane(act, zs, affine.of(plane % channels), true);
                max_plane(geometry, act, y_plane, arg_plane);
                for (v, &at) in z_at_plane.iter_mut().zip(arg_plane.iter()) {
                    *v = if at == NO_PIXEL { 0.0 } else { zs[at as usize] };
                }
            }
        });
    });
    (y, argmax, z_at)
}

/// The conv output `z` `[N, O, P]` and, per image and channel, `[mean, Σ (z - mean)²]` of
/// the image's `P` values (f64), computed right after the task's forward passes, while its outputs are in cache.
fn forward_conv(g: &Geometry, x: &[f32], w: &[f32]) -> (Vec<f32>, Vec<[f64; 2]>) {
    let p = g.col_cols();
    // Every element is written by the per-image forward passes below.
    let mut z = recycled(g.n * g.y_image());
    let mut moments = vec![[0f64; 2]; g.n * g.o];
    let (per, par) = batch_plan(g.n);
    let lowered = Lowered::new(g, w, true);
    z.par_chunks_mut(per * g.y_image())
        .zip(moments.par_chunks_mut(per * g.o))
        .zip(x.par_chunks(per * g.x_image()))
        .for_each(|((zs, ms), xs)| {
            with_scratch([lowered.col_len()], |[col]| lowered.forward_images(xs, col, zs, par));
            for (z_n, m_n) in zs.chunks_exact(g.y_image()).zip(ms.chunks_exact_mut(g.o)) {
                image_moments(z_n, m_n, p);
            }
        });
    (z, moments)
}

simd_kernel! {
/// [`plane_moments`] of each `[P]` plane of one image's `[O, P]` output.
fn image_moments<'a>(z_n: &'a [f32], m_n: &'a mut [[f64; 2]], p: usize) -> () {
    for (plane, m) in z_n.chunks_exact(p).zip(m_n.iter_mut()) {
        *m = plane_moments(plane);
    }
}
}

/// `[mean, Σ (v - mean)²]` of one plane in f64, two-pass with the compensation
/// `(Σ (v - mean))² / P` (as [`bn`]'s statistics).
#[inline(always)]
fn plane_moments(plane: &[f32]) -> [f64; 2] {
    let p = plane.len() as f64;
    let mean = lane_sums(plane, plane, Terms::Values)[0] / p;
    let [sd, sd2] = lane_sums(plane, plane, Terms::Centred(mean));
    [mean, (sd2 - sd * sd / p).max(0.0)]
}

/// The batch statistics from the per-image moments `[N, O]` of `p` values each, merged in
/// image order with the pairwise update of Chan, Golub & LeVeque ("Algorithms for
/// computing the sample variance", 1983): `δ = mean_b - mean_a`,
/// `mean = mean_a + δ · n_b / n`, `M2 = M2_a + M2_b + δ² · n_a · n_b / n`.
fn merge_moments(moments: &[[f64; 2]], channels: usize, p: usize) -> Stats {
    let pf = p as f64;
    let (mean, var) = (0..channels)
        .map(|ch| {
            let (mut count, mut mean, mut m2) = (0f64, 0f64, 0f64);
            for m in moments.iter().skip(ch).step_by(channels) {
                let [mb, m2b] = *m;
                if count == 0.0 {
                    (count, mean, m2) = (pf, mb, m2b);
                    continue;
                }
                let total = count + pf;
                let delta = mb - mean;
                mean += delta * pf / total;
                m2 += m2b + delta * delta * count * pf / total;
                count = total;
            }
            (mean, (m2 / count).max(0.0))
        })
        .unzip();
    Stats { mean, var, replicas_count: None }
}

/// The backward op over `(x, dy, w)`: returns `dw` (zeros when `w` needs none) and leaves
/// `(dx, [dgamma; dbeta])` in `out`.
struct ConvBnBackward {
    block: Block,
    need_dx: bool,
    need_dw: bool,
    saved: Arc<OnceLock<Saved>>,
    out: Arc<Mutex<Option<Gradients>>>,
}

/// The backward's side outputs: `dx` (when wanted) and `[dgamma; dbeta]`.
pub(super) type Gradients = (Option<Vec<f32>>, Vec<f32>);

/// A block's gradients: `dx` (when wanted), `dw`, `[dgamma; dbeta]`.
pub(super) type BlockGradients = (Option<Vec<f32>>, Vec<f32>, Vec<f32>);

/// What one chunk of images of the backward reads.
struct Ctx<'a> {
    g: Geometry,
    x: &'a [f32],
    dy: &'a [f32],
    lowered: &'a Lowered<'a>,
    saved: &'a Saved,
    coef: &'a [bn::DxCoef],
    relu: bool,
    need_dw: bool,
    /// Images per chunk.
    per: usize,
    par: Parallelism,
}

impl CustomOp3 for ConvBnBackward {
    fn name(&self) -> &'static str {
        "ferroflow-conv2d-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        const OP: &str = "conv2d+batch_norm backward";
        let Some(saved) = self.saved.get() else { bail!("{OP}: the forward pass left nothing") };
        let x = super::f32_contiguous(s1, l1, "conv2d+batch_norm", "x")?;
        let dy = super::f32_contiguous(s2, l2, "conv2d+batch_norm", "dy")?;
        let w = super::f32_contiguous(s3, l3, "conv2d+batch_norm", "w")?;
        let (dx, dw, dgamma_beta) = backward_block(
            &self.block,
            saved,
            BlockOperands { x, x_dims: l1.dims(), w, w_dims: l3.dims(), dy, dy_dims: l2.dims() },
            self.need_dx,
            self.need_dw,
        )?;
        *self.out.lock().map_err(|_| candle_core::Error::Msg(format!("{OP}: poisoned")))? = Some((dx, dgamma_beta));
        Ok((CpuStorage::F32(dw), Shape::from_dims(l3.dims())))
    }
}

/// A block's operands in its backward pass.
pub(super) struct BlockOperands<'a> {
    pub(super) x: &'a [f32],
    pub(super) x_dims: &'a [usize],
    pub(super) w: &'a [f32],
    pub(super) w_dims: &'a [usize],
    pub(super) dy: &'a [f32],
    pub(super) dy_dims: &'a [usize],
}

/// One block's backward pass: `(dx` (when `need_dx`), `dw` (zeros unless `need_dw`),
/// `[dgamma; dbeta])`.
///
/// # Shapes
/// - as [`forward_block`]; `dy` the block's output shape; results `x`'s, `w`'s and `[2·O]`
pub(super) fn backward_block(
    block: &Block,
    saved: &Saved,
    ops: BlockOperands<'_>,
    need_dx: bool,
    need_dw: bool,
) -> candle_core::Result<BlockGradients> {
    const OP: &str = "conv2d+batch_norm backward";
    let BlockOperands { x, x_dims, w, w_dims, dy, dy_dims } = ops;
    let g = Geometry::new(x_dims, w_dims, block.params)?;
    if saved.z.len() != g.n * g.y_image() {
        bail!("{OP}: the forward pass had another shape");
    }
    if let Some(pooled) = &saved.pooled {
        let [ph, pw] = pooled.geometry.output_hw();
        if dy_dims != [g.n, g.o, ph, pw] {
            bail!("{OP}: dy {dy_dims:?} is not the pooled output shape {:?}", [g.n, g.o, ph, pw]);
        }
    } else {
        g.check_dy(dy_dims)?;
    }
    let bg = bn::Geometry { n: g.n, c: g.o, s: g.col_cols() };
    let relu = block.relu.then_some(&saved.affine);
    let (coef, dgamma, dbeta) = match &saved.pooled {
        None => bn::backward_coefficients(bg, &saved.z, dy, &saved.gamma, &saved.stats, relu, block.epsilon),
        Some(pooled) => {
            let sums = pooled_gradient_sums(dy, pooled, &saved.stats, &saved.affine, g.o);
            bn::coefficients_from_sums(&sums, bg.count(), &saved.gamma, &saved.stats, block.epsilon)
        }
    };

    // Chunks of consecutive images, a function of the shapes only (see the module docs).
    let per = g.n.div_ceil(dw_chunks(g.n, g.o * g.col_rows()));
    let chunks = g.n.div_ceil(per);
    let threads = rayon::current_num_threads().max(1);
    let par = if chunks >= threads { Parallelism::None } else { Parallelism::Rayon(threads.div_ceil(chunks)) };
    let lowered = Lowered::new(&g, w, false);
    let ctx = Ctx { g, x, dy, lowered: &lowered, saved, coef: &coef, relu: block.relu, need_dw, per, par };
    let dw_len = lowered.filter_len();
    // Each chunk's partial filter gradient is zeroed, and its input gradient initialised
    // (zeroed, or written in full by the Winograd pass), by the task that computes them
    // (`buffers::pair_in_tasks`).
    let (mut partial, dx) = if need_dx {
        let (partial, dx) =
            pair_in_tasks((chunks * dw_len, dw_len), (g.n * g.x_image(), per * g.x_image()), |ci, dw, dx| {
                backward_chunk(&ctx, ci, dw, Some(dx)).expect("an input gradient was asked for")
            });
        (partial, Some(dx))
    } else {
        let partial = zeroed_in_tasks(chunks * dw_len, dw_len, 1, (0..chunks).into_par_iter(), |ci, _, dw| {
            backward_chunk(&ctx, ci, dw, None);
        });
        (partial, None)
    };
    let dw = lowered.finish_filter(sum_chunks(&mut partial, dw_len));
    let mut dgamma_beta = dgamma;
    dgamma_beta.extend(dbeta);
    Ok((dx, dw, dgamma_beta))
}

simd_kernel! {
/// One image's `dz` `[O, P]` from its `z` and `dy` (batch norm's and the ReLU's gradient).
fn image_dz<'a>(dz: &'a mut [f32], z_n: &'a [f32], dy_n: &'a [f32], ctx: &'a Ctx<'a>) -> () {
    let p = ctx.g.col_cols();
    for (o, ((out, zs), ds)) in dz.chunks_exact_mut(p).zip(z_n.chunks_exact(p)).zip(dy_n.chunks_exact(p)).enumerate() {
        let relu = ctx.relu.then(|| ctx.saved.affine.of(o));
        bn::dx_plane_inline(out, zs, ds, ctx.coef[o], relu);
    }
}
}

/// Per channel `[Σ dy, Σ dy · (z - mean)]` of the full-size gradient (`dy` masked by the
/// ReLU) when it is the pooled gradient scattered to the winners: summed over the pooled
/// outputs directly, in a fixed order (images, then outputs in order), reading `z` at the
/// winners only (as the forward saved them, [`Pooled::z_at`]).
///
/// # Shapes
/// - `dy`, `pooled.argmax`, `pooled.z_at`: `[N, O, P_out]`; result `[O]`
fn pooled_gradient_sums(dy: &[f32], pooled: &Pooled, stats: &Stats, affine: &Affine, channels: usize) -> Vec<[f64; 2]> {
    let po = pooled.geometry.plane_out();
    let n = pooled.argmax.len() / (po * channels);
    (0..channels)
        .into_par_iter()
        .map(|ch| {
            let (mean, coef) = (stats.mean[ch], affine.of(ch));
            let mut sums = [0f64; 2];
            for b in 0..n {
                let at = (b * channels + ch) * po;
                let outputs = pooled.argmax[at..][..po].iter().zip(&pooled.z_at[at..][..po]).zip(&dy[at..][..po]);
                for ((&winner, &v), &d) in outputs {
                    if winner == NO_PIXEL {
                        continue;
                    }
                    let d = f64::from(bn::masked(d, v, Some(coef)));
                    sums[0] += d;
                    sums[1] += d * (f64::from(v) - mean);
                }
            }
            sums
        })
        .collect()
}

/// One image's full-size `dy` `[O, P]` from its pooled gradient `[O, P_out]`: zeros, plus
/// each pooled gradient at its winner (in output order, so overlapping windows add up in a
/// fixed order).
fn unpool_image(dy_full: &mut [f32], dy_n: &[f32], argmax_n: &[u32], geometry: &PoolGeometry) {
    let (pi, po) = (geometry.plane_in(), geometry.plane_out());
    dy_full.fill(0.0);
    for ((full, ds), args) in dy_full.chunks_exact_mut(pi).zip(dy_n.chunks_exact(po)).zip(argmax_n.chunks_exact(po)) {
        for (&at, &d) in args.iter().zip(ds) {
            if at != NO_PIXEL {
                full[at as usize] += d;
            }
        }
    }
}

/// The images of chunk `ci`: for each, `dz` (batch norm's and the ReLU's gradient) into a
/// buffer; then `dw (+)= Σ dz · colᵀ` over the chunk's images and, when wanted, per image
/// `dx = col2im(wᵀ · dz)` (`dx` may arrive uninitialised; it is returned initialised).
fn backward_chunk<'d>(
    ctx: &Ctx<'_>,
    ci: usize,
    dw: &mut [f32],
    dx: Option<&'d mut [MaybeUninit<f32>]>,
) -> Option<&'d mut [f32]> {
    let g = &ctx.g;
    let images = ci * ctx.per..((ci + 1) * ctx.per).min(g.n);
    let count = images.len();
    let col_len = if ctx.need_dw { ctx.lowered.filter_col_len(count) } else { 0 };
    let dcol_len = if dx.is_some() { ctx.lowered.col_len() } else { 0 };
    let full_len = if ctx.saved.pooled.is_some() { g.y_image() } else { 0 };
    with_scratch([count * g.y_image(), col_len, dcol_len, full_len], |[dzs, col, dcol, dy_full]| {
        for (dz, n) in dzs.chunks_exact_mut(g.y_image()).zip(images.clone()) {
            let z_n = &ctx.saved.z[n * g.y_image()..][..g.y_image()];
            let dy_n: &[f32] = match &ctx.saved.pooled {
                None => &ctx.dy[n * g.y_image()..][..g.y_image()],
                Some(pooled) => {
                    let out = g.o * pooled.geometry.plane_out();
                    let (dy_p, args) = (&ctx.dy[n * out..][..out], &pooled.argmax[n * out..][..out]);
                    unpool_image(dy_full, dy_p, args, &pooled.geometry);
                    dy_full
                }
            };
            image_dz(dz, z_n, dy_n, ctx);
        }
        if ctx.need_dw {
            let xs = &ctx.x[images.start * g.x_image()..images.end * g.x_image()];
            ctx.lowered.filter_images(count, xs, dzs, col, dw, false, ctx.par);
        }
        dx.map(|dx| ctx.lowered.input_images_into(dzs, dcol, dx, ctx.par))
    })
}
