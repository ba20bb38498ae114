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
//! Determinism: each channel's sums run in a fixed order on one thread (eight fixed f64
//! lanes per plane, planes added in order), and the writing sweeps are element-wise, so
//! every pass gives bitwise-identical results whatever the number of rayon threads.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

/// About how many elements one rayon task of a writing sweep handles: small planes (7x7
/// at the end of a CNN, or 1 for rank-2 inputs) are grouped so that the task overhead
/// stays small next to the work.
const TASK_ELEMS: usize = 16 * 1024;

/// Independent f64 accumulators per reduction: breaks the add dependency chain (and lets
/// the compiler vectorise) while keeping a fixed summation order.
const LANES: usize = 8;

/// Whether the batch-norm kernel handles `x`, `gamma` and `beta` (all f32 on the CPU): the
/// condition for taking the fast path instead of the candle-ops one.
pub fn supports(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> bool {
    [x, gamma, beta].iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
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
    check(x, gamma, beta, "batch_norm_train")?;
    let stats = Arc::new(OnceLock::new());
    let op = BatchNormTrain { epsilon, stats: Arc::clone(&stats) };
    // The kernels read plain row-major slices.
    let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let Some(stats) = stats.get() else { bail!("batch_norm_train: the forward pass left no statistics") };
    let (mean, var) = stats.as_f32();
    let c = mean.len();
    Ok((y, Tensor::from_vec(mean, c, x.device())?, Tensor::from_vec(var, c, x.device())?))
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
    backward(&x.contiguous()?, &gamma.contiguous()?, dy, epsilon, None)
}

fn check(x: &Tensor, a: &Tensor, b: &Tensor, op: &str) -> candle_core::Result<()> {
    if !supports(x, a, b) {
        bail!("{op}: the kernel needs f32 tensors on the CPU, got {:?} on {:?}", x.dtype(), x.device().location());
    }
    Ok(())
}

/// The shared backward: `dx` from the op, `dgamma` and `dbeta` from the sums it leaves.
fn backward(
    x: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    epsilon: f64,
    stats: Option<Arc<OnceLock<Stats>>>,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let sums = Arc::new(OnceLock::new());
    let op = BatchNormTrainBackward { epsilon, stats, sums: Arc::clone(&sums) };
    let dx = x.apply_op3_no_bwd(&dy.contiguous()?, gamma, &op)?;
    let Some((dgamma, dbeta)) = sums.get() else { bail!("batch_norm_train backward: no parameter gradients") };
    let c = dgamma.len();
    Ok((dx, Tensor::from_vec(dgamma.clone(), c, x.device())?, Tensor::from_vec(dbeta.clone(), c, x.device())?))
}

/// `x` viewed as `[N, C, S]` (`S` the product of the dimensions after the channels).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    s: usize,
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
    fn count(self) -> usize {
        self.n * self.s
    }

    /// Channel `ch`'s `N` planes of `S` values in a `[N, C, S]` slice, in order.
    fn planes(self, t: &[f32], ch: usize) -> impl Iterator<Item = &[f32]> {
        (0..self.n).map(move |b| &t[(b * self.c + ch) * self.s..][..self.s])
    }
}

fn per_channel<'a>(s: &'a CpuStorage, l: &Layout, c: usize, what: &str) -> candle_core::Result<&'a [f32]> {
    if l.dims() != [c] {
        bail!("ferroflow batch_norm: {what} must be [{c}], got {:?}", l.dims());
    }
    super::f32_contiguous(s, l, "batch_norm", what)
}

/// `[Σ f(a, b).0, Σ f(a, b).1]` over two equally long slices, in f64 over [`LANES`] fixed
/// lanes (then the tail), so the order of the additions never changes.
fn sums2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) -> [f64; 2] {
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut acc = [[0f64; LANES]; 2];
    for (pa, pb) in ca.zip(cb) {
        for l in 0..LANES {
            let (u, v) = f(pa[l], pb[l]);
            acc[0][l] += u;
            acc[1][l] += v;
        }
    }
    let mut out = [acc[0].iter().sum::<f64>(), acc[1].iter().sum::<f64>()];
    for (&p, &q) in ra.iter().zip(rb) {
        let (u, v) = f(p, q);
        out[0] += u;
        out[1] += v;
    }
    out
}

/// Per-channel batch statistics in f64.
#[derive(Debug, Clone)]
struct Stats {
    mean: Vec<f64>,
    /// The biased variance.
    var: Vec<f64>,
}

impl Stats {
    fn of(x: &[f32], g: Geometry) -> Self {
        let m = g.count() as f64;
        let (mean, var) = (0..g.c)
            .into_par_iter()
            .map(|ch| {
                let mean = g.planes(x, ch).map(|p| sums2(p, p, |v, _| (f64::from(v), 0.0))[0]).sum::<f64>() / m;
                // Two-pass with the compensation `(Σ d)² / M`, which removes most of the
                // rounding error of the mean (Chan, Golub & LeVeque); never negative.
                let [sd, sd2] = g
                    .planes(x, ch)
                    .map(|p| {
                        sums2(p, p, |v, _| {
                            let d = f64::from(v) - mean;
                            (d, d * d)
                        })
                    })
                    .fold([0.0; 2], |a, s| [a[0] + s[0], a[1] + s[1]]);
                (mean, ((sd2 - sd * sd / m) / m).max(0.0))
            })
            .unzip();
        Stats { mean, var }
    }

    fn as_f32(&self) -> (Vec<f32>, Vec<f32>) {
        (self.mean.iter().map(|&v| v as f32).collect(), self.var.iter().map(|&v| v as f32).collect())
    }

    /// `rsqrt(var + epsilon)` per channel, in f64.
    fn inv_std(&self, epsilon: f64) -> Vec<f64> {
        self.var.iter().map(|&v| 1.0 / (v + epsilon).sqrt()).collect()
    }
}

/// Applies `f(channel, chunk)` to every `[S]` plane of a `[N, C, S]` output, in parallel.
fn for_each_plane(out: &mut [f32], g: Geometry, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(g.s).with_min_len(TASK_ELEMS.div_ceil(g.s)).enumerate().for_each(|(i, plane)| {
        f(i % g.c, i * g.s, plane);
    });
}

/// The forward op over `(x, gamma, beta)`; leaves the statistics in `stats` for the
/// backward and for the caller.
struct BatchNormTrain {
    epsilon: f64,
    stats: Arc<OnceLock<Stats>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "ferroflow-batch-norm-train"
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
        let g = Geometry::of(l1.dims(), "batch_norm_train")?;
        let x = super::f32_contiguous(s1, l1, "batch_norm", "x")?;
        let (gamma, beta) = (per_channel(s2, l2, g.c, "gamma")?, per_channel(s3, l3, g.c, "beta")?);
        let stats = Stats::of(x, g);
        // TF's order: `(x - mean) * (gamma * rsqrt(var + epsilon)) + beta`, the scale
        // formed in f64 and rounded once.
        let mean: Vec<f32> = stats.mean.iter().map(|&v| v as f32).collect();
        let scale: Vec<f32> =
            stats.inv_std(self.epsilon).iter().zip(gamma).map(|(&i, &gm)| (i * f64::from(gm)) as f32).collect();
        let mut y = vec![0f32; x.len()];
        for_each_plane(&mut y, g, |ch, at, out| {
            let (m, k, b) = (mean[ch], scale[ch], beta[ch]);
            let xs = &x[at..at + out.len()];
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = (v - m) * k + b;
            }
        });
        // A fresh op per call, so the cell is empty; a second forward (never done by
        // candle) would keep the first statistics, which are the same.
        let _ = self.stats.set(stats);
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
        let (dx, dgamma, dbeta) = backward(x, gamma, dy, self.epsilon, Some(Arc::clone(&self.stats)))?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The backward op over `(x, dy, gamma)`: returns `dx` and leaves `(dgamma, dbeta)` in
/// `sums`. Uses the forward's statistics when given, else recomputes them from `x`.
struct BatchNormTrainBackward {
    epsilon: f64,
    stats: Option<Arc<OnceLock<Stats>>>,
    sums: Arc<OnceLock<(Vec<f32>, Vec<f32>)>>,
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
        const OP: &str = "batch_norm_train backward";
        let g = Geometry::of(l1.dims(), OP)?;
        if l2.dims() != l1.dims() {
            bail!("{OP}: dy must have x's shape {:?}, got {:?}", l1.dims(), l2.dims());
        }
        let (x, dy) =
            (super::f32_contiguous(s1, l1, "batch_norm", "x")?, super::f32_contiguous(s2, l2, "batch_norm", "dy")?);
        let gamma = per_channel(s3, l3, g.c, "gamma")?;
        let cached = self.stats.as_ref().and_then(|s| s.get());
        let fresh;
        let stats = match cached {
            Some(s) => s,
            None => {
                fresh = Stats::of(x, g);
                &fresh
            }
        };
        let inv = stats.inv_std(self.epsilon);
        // Per channel `[Σ dy, Σ dy · (x - mean)]`; `dgamma` is the latter times `inv`.
        let sums: Vec<[f64; 2]> = (0..g.c)
            .into_par_iter()
            .map(|ch| {
                let mean = stats.mean[ch];
                g.planes(dy, ch)
                    .zip(g.planes(x, ch))
                    .map(|(d, v)| sums2(d, v, |d, v| (f64::from(d), f64::from(d) * (f64::from(v) - mean))))
                    .fold([0.0; 2], |a, s| [a[0] + s[0], a[1] + s[1]])
            })
            .collect();
        let m = g.count() as f64;
        // Per channel in f32: `dx = k · (dy - a - xhat · b)`, `xhat = (x - mean) · inv`,
        // `k = gamma · inv`, `a = dbeta / M`, `b = dgamma / M`.
        let coef: Vec<[f32; 5]> = (0..g.c)
            .map(|ch| {
                let [dbeta, sdx] = sums[ch];
                let dgamma = sdx * inv[ch];
                let k = f64::from(gamma[ch]) * inv[ch];
                [stats.mean[ch] as f32, inv[ch] as f32, k as f32, (dbeta / m) as f32, (dgamma / m) as f32]
            })
            .collect();
        let mut dx = vec![0f32; x.len()];
        for_each_plane(&mut dx, g, |ch, at, out| {
            let [mean, inv, k, a, b] = coef[ch];
            let (xs, ds) = (&x[at..at + out.len()], &dy[at..at + out.len()]);
            for ((o, &v), &d) in out.iter_mut().zip(xs).zip(ds) {
                *o = k * (d - a - (v - mean) * inv * b);
            }
        });
        let dgamma = sums.iter().zip(&inv).map(|(s, &i)| (s[1] * i) as f32).collect();
        let dbeta = sums.iter().map(|s| s[0] as f32).collect();
        let _ = self.sums.set((dgamma, dbeta));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
