//! Fused CPU training-mode batch normalisation (f32, channels at dimension 1) as a candle
//! custom op with its own backward.
//!
//! Why: `ops::batch_norm_train` built on candle ops materialises the centred input, its
//! square, the broadcast scale and shift and several strided reductions over dims 0, 2 and
//! 3, and candle's autograd then walks all of them back; once conv2d and the pools had
//! their own kernels this dominated cifar_cnn's training step. Here the forward is two
//! reading sweeps (statistics) and one writing sweep, the backward one reading sweep (the
//! two parameter gradients) and one writing sweep (`dx`).
//!
//! Semantics are TF's fused kernel (`FusedBatchNormV3`, `is_training=True`):
//! - per channel, the mean and the *biased* variance over the `M = N · H · W` values, both
//!   accumulated in f64 (the variance two-pass with the compensation term of
//!   `Σ (x - mean)`), so that they are at least as accurate as TF's;
//! - `y = (x - mean) · (gamma · rsqrt(var + epsilon)) + beta`;
//! - gradients with the statistics part of the graph: with `xhat = (x - mean) · rsqrt(var +
//!   epsilon)`, `dbeta = Σ dy`, `dgamma = Σ dy · xhat` and
//!   `dx = gamma · rsqrt(var + epsilon) · (dy - dbeta / M - xhat · dgamma / M)`.
//!
//! The returned batch statistics are detached (they feed the moving averages only).
//!
//! [`batch_norm_relu_train`] fuses a ReLU after the normalisation (conv → BN → ReLU, the
//! block of every benchmark CNN): the forward writes `max(y, 0)` in the same sweep, and
//! the backward masks `dy` inside its own sweeps, so the ReLU costs no pass, no tensor and
//! no autograd node of its own. The mask is recomputed from `x` with the forward's f32
//! operations, so it is bitwise the forward's `y > 0` (TF's `ReluGrad`: no gradient at
//! exactly 0) without reading `y` back.
//!
//! Determinism: each channel's sums run in a fixed order on one thread (eight fixed f64
//! lanes per plane, planes added in order), and the writing sweeps are element-wise, so
//! every pass gives bitwise-identical results whatever the number of rayon threads.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, bail};
use ferroflow_dist::ReplicaSum;
use rayon::prelude::*;

use super::lane_sums::{Terms, lane_sums};
use super::simd::simd_kernel;

/// About how many elements one rayon task of a writing sweep handles: small planes (7x7
/// at the end of a CNN, or 1 for rank-2 inputs) are grouped so that the task overhead
/// stays small next to the work.
pub(super) const TASK_ELEMS: usize = 16 * 1024;

/// Whether the batch-norm kernel handles `x`, `gamma` and `beta` (all f32 on the CPU): the
/// condition for taking the fast path instead of the candle-ops one.
pub fn supports(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> bool {
    [x, gamma, beta].iter().all(|t| super::fast_kernels_on(t.device()) && t.dtype() == DType::F32)
}

/// Training-mode batch normalisation of `x` with its batch statistics, on candle's CPU
/// device in f32, with the gradients to `x`, `gamma` and `beta` through candle's autograd
/// (first order only).
///
/// Returns `(y, batch_mean, batch_variance_biased)`; the statistics are detached.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`: `[C]`
/// - results: `y` like `x`; `batch_mean`, `batch_variance_biased`: `[C]`
///
/// # Errors
/// A non-CPU device, a dtype other than f32, a rank below 2, an empty batch or parameters
/// of the wrong shape.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    epsilon: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    Ok(train(x, gamma, beta, epsilon, false, None)?.0)
}

/// [`batch_norm_train`] followed by ReLU, in one op: `max(batch_norm(x), 0)`, with TF's
/// ReLU gradient (none where the normalised value is `<= 0`).
///
/// Returns `(y, batch_mean, batch_variance_biased)`; the statistics are detached.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`: `[C]`
/// - results: `y` like `x`; `batch_mean`, `batch_variance_biased`: `[C]`
///
/// # Errors
/// As [`batch_norm_train`].
pub fn batch_norm_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    epsilon: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    Ok(train(x, gamma, beta, epsilon, true, None)?.0)
}

/// Synchronised batch normalisation ([`batch_norm_train`], or [`batch_norm_relu_train`]
/// with `relu`) over the batches of every replica of `replicas` together: each channel's
/// mean and variance run over all of them (two sums over the replicas, the same two-pass
/// formula), and the backward's `Σ dy` and `Σ dy · (x - mean)` are summed over them too,
/// so `dx` is the gradient of the *sum* of every replica's loss (PyTorch's
/// `SyncBatchNorm`, Keras' `synchronized=True`). `dgamma` and `dbeta` stay this
/// replica's own: the trainer averages parameter gradients over the replicas anyway.
/// With equal per-replica batches and the gradients averaged, training then equals one
/// process on the concatenated batch up to rounding.
///
/// Every replica must call it (and run the backward) in the same order with the same
/// channels (the batch sizes may differ). Returns `(y, batch_mean,
/// batch_variance_biased, count)` of the whole batch, `count` the values per channel over
/// every replica (for the moving variance's Bessel correction).
///
/// # Shapes
/// - `x`: `[N, C, H, W]` per replica (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`: `[C]`
/// - results: `y` like `x`; `batch_mean`, `batch_variance_biased`: `[C]`
///
/// # Errors
/// As [`batch_norm_train`]; also a failed sum over the replicas.
pub fn batch_norm_train_across(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    epsilon: f64,
    relu: bool,
    replicas: &Arc<dyn ReplicaSum>,
) -> candle_core::Result<(Tensor, Tensor, Tensor, usize)> {
    let ((y, mean, var), count) = train(x, gamma, beta, epsilon, relu, Some(Arc::clone(replicas)))?;
    Ok((y, mean, var, count.unwrap_or(0)))
}

fn train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    epsilon: f64,
    relu: bool,
    replicas: Option<Arc<dyn ReplicaSum>>,
) -> candle_core::Result<((Tensor, Tensor, Tensor), Option<usize>)> {
    check(x, gamma, beta, "batch_norm_train")?;
    let stats = Arc::new(OnceLock::new());
    let op = BatchNormTrain { epsilon, relu, stats: Arc::clone(&stats), replicas };
    // The kernels read plain row-major slices.
    let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let Some((stats, _)) = stats.get() else { bail!("batch_norm_train: the forward pass left no statistics") };
    let (mean, var) = stats.as_f32();
    let c = mean.len();
    let out = (y, Tensor::from_vec(mean, c, x.device())?, Tensor::from_vec(var, c, x.device())?);
    Ok((out, stats.replicas_count))
}

/// The gradients of `Σ batch_norm_train(x, gamma, beta).0 · dy` with respect to `x`,
/// `gamma` and `beta` (`beta` does not enter them), the statistics recomputed from `x` (the
/// autograd path reuses the forward pass's instead).
///
/// # Shapes
/// - `x`, `dy`: `[N, C, H, W]` (any rank >= 2, channels at dimension 1)
/// - `gamma`: `[C]`
/// - results: `(dx, dgamma, dbeta)`: like `x`, `[C]`, `[C]`
///
/// # Errors
/// As [`batch_norm_train`]; also when `dy` does not have `x`'s shape.
pub fn batch_norm_train_backward(
    x: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    epsilon: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    check(x, gamma, dy, "batch_norm_train backward")?;
    backward(&x.contiguous()?, &gamma.contiguous()?, dy, epsilon, Cached::None, None)
}

/// The gradients of `Σ batch_norm_relu_train(x, gamma, beta).0 · dy` with respect to `x`,
/// `gamma` and `beta`, the statistics recomputed from `x` (the autograd path reuses the
/// forward pass's instead).
///
/// # Shapes
/// - `x`, `dy`: `[N, C, H, W]` (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`: `[C]`
/// - results: `(dx, dgamma, dbeta)`: like `x`, `[C]`, `[C]`
///
/// # Errors
/// As [`batch_norm_train`]; also when `dy` does not have `x`'s shape.
pub fn batch_norm_relu_train_backward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    dy: &Tensor,
    epsilon: f64,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    check(x, gamma, dy, "batch_norm_relu_train backward")?;
    check(x, beta, beta, "batch_norm_relu_train backward")?;
    let beta = beta.to_vec1::<f32>()?;
    backward(&x.contiguous()?, &gamma.contiguous()?, dy, epsilon, Cached::ReluBeta(beta), None)
}

fn check(x: &Tensor, a: &Tensor, b: &Tensor, op: &str) -> candle_core::Result<()> {
    if !supports(x, a, b) {
        bail!("{op}: the kernel needs f32 tensors on the CPU, got {:?} on {:?}", x.dtype(), x.device().location());
    }
    Ok(())
}

/// What the backward gets from the forward pass.
enum Cached {
    /// Nothing, no ReLU: statistics recomputed from `x`.
    None,
    /// Nothing, with a ReLU after the normalisation of this `beta`.
    ReluBeta(Vec<f32>),
    /// The forward pass's statistics (and ReLU coefficients when it had a ReLU).
    Forward(Arc<OnceLock<(Stats, Option<Affine>)>>),
}

/// The shared backward: `dx` from the op, `dgamma` and `dbeta` from the sums it leaves.
fn backward(
    x: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    epsilon: f64,
    cached: Cached,
    replicas: Option<Arc<dyn ReplicaSum>>,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let sums = Arc::new(OnceLock::new());
    let op = BatchNormTrainBackward { epsilon, cached, sums: Arc::clone(&sums), replicas };
    let dx = x.apply_op3_no_bwd(&dy.contiguous()?, gamma, &op)?;
    let Some((dgamma, dbeta)) = sums.get() else { bail!("batch_norm_train backward: no parameter gradients") };
    let c = dgamma.len();
    Ok((dx, Tensor::from_vec(dgamma.clone(), c, x.device())?, Tensor::from_vec(dbeta.clone(), c, x.device())?))
}

/// `x` viewed as `[N, C, S]` (`S` the product of the dimensions after the channels).
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) s: usize,
}

impl Geometry {
    fn of(dims: &[usize], what: &str) -> candle_core::Result<Self> {
        let &[n, c, ref rest @ ..] = dims else { bail!("{what}: x must be [N, C, ...], got {dims:?}") };
        let s = rest.iter().product();
        if n * c * s == 0 {
            bail!("{what}: empty batch {dims:?}");
        }
        Ok(Geometry { n, c, s })
    }

    /// The values each channel's statistics run over: `M = N · S`.
    pub(super) fn count(self) -> usize {
        self.n * self.s
    }

    /// Channel `ch`'s `N` planes of `S` values in a `[N, C, S]` slice, in order.
    pub(super) fn planes(self, t: &[f32], ch: usize) -> impl Iterator<Item = &[f32]> {
        (0..self.n).map(move |b| &t[(b * self.c + ch) * self.s..][..self.s])
    }
}

fn per_channel<'a>(s: &'a CpuStorage, l: &Layout, c: usize, what: &str) -> candle_core::Result<&'a [f32]> {
    if l.dims() != [c] {
        bail!("ferroflow batch_norm: {what} must be [{c}], got {:?}", l.dims());
    }
    super::f32_contiguous(s, l, "batch_norm", what)
}

/// Per-channel batch statistics in f64.
#[derive(Debug, Clone)]
pub(super) struct Stats {
    pub(super) mean: Vec<f64>,
    /// The biased variance.
    pub(super) var: Vec<f64>,
    /// Synchronised batch norm: the values per channel over every replica (the
    /// replicas' batches may differ in size).
    pub(super) replicas_count: Option<usize>,
}

simd_kernel! {
/// Channel `ch`'s mean and biased variance, in f64.
fn channel_stats<'a>(x: &'a [f32], g: Geometry, ch: usize) -> (f64, f64) {
    let m = g.count() as f64;
    let mean = channel_sum(x, g, ch) / m;
    let [sd, sd2] = channel_centred_sums(x, g, ch, mean);
    (mean, variance(sd, sd2, m))
}
}

/// Channel `ch`'s `Σ x`, in f64.
#[inline(always)]
fn channel_sum(x: &[f32], g: Geometry, ch: usize) -> f64 {
    g.planes(x, ch).map(|p| lane_sums(p, p, Terms::Values)[0]).sum::<f64>()
}

/// Channel `ch`'s `[Σ (x - mean), Σ (x - mean)²]`, in f64.
#[inline(always)]
fn channel_centred_sums(x: &[f32], g: Geometry, ch: usize, mean: f64) -> [f64; 2] {
    g.planes(x, ch).map(|p| lane_sums(p, p, Terms::Centred(mean))).fold([0.0; 2], |a, s| [a[0] + s[0], a[1] + s[1]])
}

/// The biased variance from the centred sums over `m` values: two-pass with the
/// compensation `(Σ d)² / M`, which removes most of the rounding error of the mean (Chan,
/// Golub & LeVeque); never negative.
fn variance(sd: f64, sd2: f64, m: f64) -> f64 {
    ((sd2 - sd * sd / m) / m).max(0.0)
}

impl Stats {
    fn of(x: &[f32], g: Geometry) -> Self {
        let (mean, var) = (0..g.c).into_par_iter().map(|ch| channel_stats(x, g, ch)).unzip();
        Stats { mean, var, replicas_count: None }
    }

    /// The statistics of every replica's `x` together: the same two passes, each
    /// channel's sums added over the replicas after each pass.
    fn across(x: &[f32], g: Geometry, replicas: &dyn ReplicaSum) -> candle_core::Result<Self> {
        // The channels' sums, then this replica's count: the replicas' batches may differ.
        let mut sum: Vec<f64> = (0..g.c).into_par_iter().map(|ch| channel_sum(x, g, ch)).collect();
        sum.push(g.count() as f64);
        replicas.sum_f64(&mut sum, "synchronised batch norm's means").map_err(candle_core::Error::wrap)?;
        let m = sum.pop().unwrap_or(0.0);
        let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
        let centred: Vec<[f64; 2]> =
            (0..g.c).into_par_iter().map(|ch| channel_centred_sums(x, g, ch, mean[ch])).collect();
        let mut centred: Vec<f64> = centred.into_iter().flatten().collect();
        replicas.sum_f64(&mut centred, "synchronised batch norm's variances").map_err(candle_core::Error::wrap)?;
        let var = centred.chunks_exact(2).map(|p| variance(p[0], p[1], m)).collect();
        Ok(Stats { mean, var, replicas_count: Some(m as usize) })
    }

    pub(super) fn as_f32(&self) -> (Vec<f32>, Vec<f32>) {
        (self.mean.iter().map(|&v| v as f32).collect(), self.var.iter().map(|&v| v as f32).collect())
    }

    /// `rsqrt(var + epsilon)` per channel, in f64.
    pub(super) fn inv_std(&self, epsilon: f64) -> Vec<f64> {
        self.var.iter().map(|&v| 1.0 / (v + epsilon).sqrt()).collect()
    }
}

/// A new `[N, C, S]` output written plane by plane in parallel: `f(channel, offset,
/// plane)` gets each `[S]` plane zeroed and must fill it (see
/// [`super::buffers::zeroed_in_tasks`]: no zero-filling pass of its own).
pub(super) fn new_planes(g: Geometry, f: impl Fn(usize, usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let planes = g.n * g.c;
    super::buffers::zeroed_in_tasks(
        planes * g.s,
        g.s,
        TASK_ELEMS.div_ceil(g.s.max(1)),
        (0..planes).into_par_iter(),
        |i, _, plane| f(i % g.c, i * g.s, plane),
    )
}

/// Applies `f(channel, chunk)` to every `[S]` plane of a `[N, C, S]` output, in parallel.
pub(super) fn for_each_plane(out: &mut [f32], g: Geometry, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(g.s).with_min_len(TASK_ELEMS.div_ceil(g.s)).enumerate().for_each(|(i, plane)| {
        f(i % g.c, i * g.s, plane);
    });
}

/// The per-channel f32 coefficients of the forward's normalisation, `(x - mean) · scale +
/// beta`; the ReLU mask of the backward recomputes the forward's values with them, bit for
/// bit.
#[derive(Debug, Clone)]
pub(super) struct Affine {
    mean: Vec<f32>,
    scale: Vec<f32>,
    beta: Vec<f32>,
}

impl Affine {
    /// TF's order: `(x - mean) * (gamma * rsqrt(var + epsilon)) + beta`, the scale formed in
    /// f64 and rounded once.
    pub(super) fn new(stats: &Stats, gamma: &[f32], beta: &[f32], epsilon: f64) -> Self {
        let mean = stats.mean.iter().map(|&v| v as f32).collect();
        let scale = stats.inv_std(epsilon).iter().zip(gamma).map(|(&i, &gm)| (i * f64::from(gm)) as f32).collect();
        Affine { mean, scale, beta: beta.to_vec() }
    }

    /// Channel `ch`'s `(mean, scale, beta)`.
    pub(super) fn of(&self, ch: usize) -> (f32, f32, f32) {
        (self.mean[ch], self.scale[ch], self.beta[ch])
    }
}

/// The normalised value; one function for the forward and the backward's ReLU mask, so
/// both round identically.
#[inline(always)]
pub(super) fn normalise(v: f32, (m, k, b): (f32, f32, f32)) -> f32 {
    (v - m) * k + b
}

simd_kernel! {
/// One `[S]` plane of the forward's output: `normalise(x)`, then the ReLU when `relu`.
pub(super) fn normalise_plane<'a>(out: &'a mut [f32], xs: &'a [f32], coef: (f32, f32, f32), relu: bool) -> () {
    if relu {
        for (o, &v) in out.iter_mut().zip(xs) {
            *o = super::relu::relu_value(normalise(v, coef));
        }
    } else {
        for (o, &v) in out.iter_mut().zip(xs) {
            *o = normalise(v, coef);
        }
    }
}
}

simd_kernel! {
/// One `[S]` plane of a residual unit's output: `relu(normalise(x) + r)`, rounded as
/// [`normalise_plane`] then [`super::add_relu`] round it.
pub(super) fn normalise_add_relu_plane<'a>(out: &'a mut [f32], xs: &'a [f32], rs: &'a [f32], coef: (f32, f32, f32)) -> () {
    for ((o, &v), &r) in out.iter_mut().zip(xs).zip(rs) {
        *o = super::relu::relu_value(normalise(v, coef) + r);
    }
}
}

simd_kernel! {
/// One `[S]` plane of a residual unit's `dy` masked by its ReLU: `dy` where
/// `normalise(x) + r > 0` (the forward's value, bit for bit), else 0.
pub(super) fn residual_mask_plane<'a>(
    out: &'a mut [f32],
    xs: &'a [f32],
    rs: &'a [f32],
    ds: &'a [f32],
    coef: (f32, f32, f32),
) -> () {
    for (((o, &v), &r), &d) in out.iter_mut().zip(xs).zip(rs).zip(ds) {
        // Not `> 0` (NaN included: the forward wrote 0 for it): no gradient.
        *o = if normalise(v, coef) + r > 0.0 { d } else { 0.0 };
    }
}
}

/// The forward op over `(x, gamma, beta)`; leaves the statistics (and, with a ReLU, the
/// coefficients of the mask) in `stats` for the backward and for the caller.
struct BatchNormTrain {
    epsilon: f64,
    relu: bool,
    stats: Arc<OnceLock<(Stats, Option<Affine>)>>,
    /// Synchronised batch norm: the statistics and the backward's sums run over every
    /// replica's batch.
    replicas: Option<Arc<dyn ReplicaSum>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        if self.relu { "ferroflow-batch-norm-relu-train" } else { "ferroflow-batch-norm-train" }
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
        let g = Geometry::of(l1.dims(), "batch_norm_train")?;
        let x = super::f32_contiguous(s1, l1, "batch_norm", "x")?;
        let (gamma, beta) = (per_channel(s2, l2, g.c, "gamma")?, per_channel(s3, l3, g.c, "beta")?);
        let stats = match &self.replicas {
            None => Stats::of(x, g),
            Some(r) => Stats::across(x, g, r.as_ref())?,
        };
        let affine = Affine::new(&stats, gamma, beta, self.epsilon);
        let relu = self.relu;
        let y = new_planes(g, |ch, at, out| {
            normalise_plane(out, &x[at..at + out.len()], affine.of(ch), relu);
        });
        // A fresh op per call, so the cell is empty; a second forward (never done by
        // candle) would keep the first statistics, which are the same.
        let _ = self.stats.set((stats, relu.then_some(affine)));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let cached = Cached::Forward(Arc::clone(&self.stats));
        let (dx, dgamma, dbeta) = backward(x, gamma, dy, self.epsilon, cached, self.replicas.clone())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The backward op over `(x, dy, gamma)`: returns `dx` and leaves `(dgamma, dbeta)` in
/// `sums`. Uses the forward's statistics when given, else recomputes them from `x`; with a
/// ReLU, `dy` counts only where the forward's normalised value was `> 0`.
struct BatchNormTrainBackward {
    epsilon: f64,
    cached: Cached,
    sums: Arc<OnceLock<(Vec<f32>, Vec<f32>)>>,
    /// As the forward's: the sums behind `dx` run over every replica.
    replicas: Option<Arc<dyn ReplicaSum>>,
}

impl CustomOp3 for BatchNormTrainBackward {
    fn name(&self) -> &'static str {
        "ferroflow-batch-norm-train-backward"
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
        const OP: &str = "batch_norm_train backward";
        let g = Geometry::of(l1.dims(), OP)?;
        if l2.dims() != l1.dims() {
            bail!("{OP}: dy must have x's shape {:?}, got {:?}", l1.dims(), l2.dims());
        }
        let (x, dy) =
            (super::f32_contiguous(s1, l1, "batch_norm", "x")?, super::f32_contiguous(s2, l2, "batch_norm", "dy")?);
        let gamma = per_channel(s3, l3, g.c, "gamma")?;
        let fresh;
        let (stats, affine) = match &self.cached {
            Cached::Forward(cell) => match cell.get() {
                Some((stats, affine)) => (stats, affine.as_ref()),
                None => bail!("{OP}: the forward pass left no statistics"),
            },
            Cached::None => {
                fresh = (Stats::of(x, g), None);
                (&fresh.0, None)
            }
            Cached::ReluBeta(beta) => {
                if beta.len() != g.c {
                    bail!("{OP}: beta must be [{}], got [{}]", g.c, beta.len());
                }
                let stats = Stats::of(x, g);
                let affine = Affine::new(&stats, gamma, beta, self.epsilon);
                fresh = (stats, Some(affine));
                (&fresh.0, fresh.1.as_ref())
            }
        };
        let (dx, dgamma, dbeta) =
            backward_sweeps(g, x, dy, gamma, stats, affine, self.epsilon, self.replicas.as_deref())?;
        let _ = self.sums.set((dgamma, dbeta));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `dy` masked by the forward's ReLU: `dy` where the normalised value was `> 0`, else 0;
/// `dy` itself without a ReLU.
#[inline(always)]
pub(super) fn masked(d: f32, v: f32, relu: Option<(f32, f32, f32)>) -> f32 {
    match relu {
        // Not `> 0` (NaN included: the forward wrote 0 for it): no gradient.
        Some(coef) => {
            if normalise(v, coef) > 0.0 {
                d
            } else {
                0.0
            }
        }
        None => d,
    }
}

/// Per channel, the coefficients of `dx = k · (dy - a - (x - mean) · inv · b)`:
/// `[mean, inv, k, a, b]` with `inv = rsqrt(var + epsilon)`, `k = gamma · inv`,
/// `a = dbeta / M`, `b = dgamma / M` (f32, as the writing sweep uses them).
pub(super) type DxCoef = [f32; 5];

/// The backward's reading sweep: per channel the [`DxCoef`], and `(dgamma, dbeta)`. `dy`
/// is masked by the forward's ReLU when `relu` is given.
pub(super) fn backward_coefficients(
    g: Geometry,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    stats: &Stats,
    relu: Option<&Affine>,
    epsilon: f64,
) -> (Vec<DxCoef>, Vec<f32>, Vec<f32>) {
    coefficients_from_sums(&gradient_sums(g, x, dy, stats, relu), g.count(), gamma, stats, epsilon)
}

/// Per channel `[Σ dy, Σ dy · (x - mean)]` (`dy` masked by the ReLU when given); `dgamma`
/// is the latter times `inv`.
fn gradient_sums(g: Geometry, x: &[f32], dy: &[f32], stats: &Stats, relu: Option<&Affine>) -> Vec<[f64; 2]> {
    (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let (mean, rc) = (stats.mean[ch], relu.map(|a| a.of(ch)));
            channel_gradient_sums(g, dy, x, ch, mean, rc)
        })
        .collect()
}

/// The [`DxCoef`]s and `(dgamma, dbeta)` from the per-channel sums `[Σ dy, Σ dy · (x -
/// mean)]` over `count` values per channel.
pub(super) fn coefficients_from_sums(
    sums: &[[f64; 2]],
    count: usize,
    gamma: &[f32],
    stats: &Stats,
    epsilon: f64,
) -> (Vec<DxCoef>, Vec<f32>, Vec<f32>) {
    let inv = stats.inv_std(epsilon);
    let m = count as f64;
    let coef = (0..sums.len())
        .map(|ch| {
            let [dbeta, sdx] = sums[ch];
            let dgamma = sdx * inv[ch];
            let k = f64::from(gamma[ch]) * inv[ch];
            [stats.mean[ch] as f32, inv[ch] as f32, k as f32, (dbeta / m) as f32, (dgamma / m) as f32]
        })
        .collect();
    let dgamma = sums.iter().zip(&inv).map(|(s, &i)| (s[1] * i) as f32).collect();
    let dbeta = sums.iter().map(|s| s[0] as f32).collect();
    (coef, dgamma, dbeta)
}

simd_kernel! {
/// Channel `ch`'s `[Σ dy, Σ dy · (x - mean)]`, `dy` masked by the ReLU of `relu`'s
/// coefficients when given.
fn channel_gradient_sums<'a>(
    g: Geometry,
    dy: &'a [f32],
    x: &'a [f32],
    ch: usize,
    mean: f64,
    relu: Option<(f32, f32, f32)>,
) -> [f64; 2] {
    let mut sums = [0f64; 2];
    for b in 0..g.n {
        let at = (b * g.c + ch) * g.s;
        let [s0, s1] = plane_gradient_sums(&dy[at..at + g.s], &x[at..at + g.s], mean, relu);
        sums = [sums[0] + s0, sums[1] + s1];
    }
    sums
}
}

/// One plane's `[Σ d, Σ d · (v - mean)]` (`d` masked by the ReLU when given) in f64, in
/// [`lane_sums`]' order.
#[inline(always)]
fn plane_gradient_sums(d: &[f32], v: &[f32], mean: f64, relu: Option<(f32, f32, f32)>) -> [f64; 2] {
    lane_sums(d, v, Terms::Gradient { mean, relu })
}

/// One value of `dx` from its (masked) `dy` and `x`.
#[inline(always)]
pub(super) fn dx_value(d: f32, v: f32, [mean, inv, k, a, b]: DxCoef) -> f32 {
    k * (d - a - (v - mean) * inv * b)
}

simd_kernel! {
/// One `[S]` plane of `dx` (channel `ch`) from the planes of `x` and `dy`.
pub(super) fn dx_plane<'a>(
    out: &'a mut [f32],
    xs: &'a [f32],
    ds: &'a [f32],
    coef: DxCoef,
    relu: Option<(f32, f32, f32)>,
) -> () {
    dx_plane_inline(out, xs, ds, coef, relu)
}
}

/// [`dx_plane`] without the dispatch, for callers that dispatch a larger loop.
#[inline(always)]
pub(super) fn dx_plane_inline(out: &mut [f32], xs: &[f32], ds: &[f32], coef: DxCoef, relu: Option<(f32, f32, f32)>) {
    match relu {
        Some(rc) => {
            for ((o, &v), &d) in out.iter_mut().zip(xs).zip(ds) {
                *o = dx_value(masked(d, v, Some(rc)), v, coef);
            }
        }
        None => {
            for ((o, &v), &d) in out.iter_mut().zip(xs).zip(ds) {
                *o = dx_value(d, v, coef);
            }
        }
    }
}

/// The backward's two sweeps: `(dx, dgamma, dbeta)`. With `replicas`, `dx`'s sums run over
/// every replica (see [`batch_norm_train_across`]); `dgamma` and `dbeta` stay this one's.
#[allow(clippy::too_many_arguments)]
fn backward_sweeps(
    g: Geometry,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    stats: &Stats,
    relu: Option<&Affine>,
    epsilon: f64,
    replicas: Option<&dyn ReplicaSum>,
) -> candle_core::Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (coef, dgamma, dbeta) = match replicas {
        None => backward_coefficients(g, x, dy, gamma, stats, relu, epsilon),
        Some(r) => {
            let local = gradient_sums(g, x, dy, stats, relu);
            let mut all: Vec<f64> = local.iter().flatten().copied().collect();
            r.sum_f64(&mut all, "synchronised batch norm's gradient sums").map_err(candle_core::Error::wrap)?;
            let all: Vec<[f64; 2]> = all.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
            let count = stats.replicas_count.unwrap_or(g.count() * r.replicas());
            let (coef, _, _) = coefficients_from_sums(&all, count, gamma, stats, epsilon);
            let (_, dgamma, dbeta) = coefficients_from_sums(&local, g.count(), gamma, stats, epsilon);
            (coef, dgamma, dbeta)
        }
    };
    let dx = new_planes(g, |ch, at, out| {
        let (xs, ds) = (&x[at..at + out.len()], &dy[at..at + out.len()]);
        dx_plane(out, xs, ds, coef[ch], relu.map(|r| r.of(ch)));
    });
    Ok((dx, dgamma, dbeta))
}
