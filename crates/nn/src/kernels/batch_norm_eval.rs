//! Inference-mode batch normalisation (f32 on the CPU, outside autograd), optionally with
//! the ReLU after it, in one pass.
//!
//! Why: `ops::batch_norm_eval` built on candle ops makes three passes over the activation
//! (subtract the mean, multiply by the scale, add beta), and the conv → BN → ReLU block's
//! ReLU a fourth; they were 14% of an `eval` profile of cifar_cnn, and every validation
//! inside `train` runs them. Here one pass reads `x` and writes `y`.
//!
//! The values are bitwise those of the candle-ops path: the per-channel scale comes from
//! the same candle ops on the `[C]` statistics (`gamma · 1/sqrt(var + epsilon)`), and each
//! element gets the same three f32 operations in the same order, `((x - mean) · scale) +
//! beta`, each rounded (Rust never fuses them into an FMA), then `max(·, 0)` as the ReLU
//! kernel computes it.
//!
//! Only for inputs no gradient flows through ([`supports`]: none of them is part of an
//! autograd graph, as inside `no_grad`, which evaluation and prediction use): the output
//! is a plain tensor with no backward.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::batch_norm::TASK_ELEMS;
use super::relu::relu_value;

/// Whether [`batch_norm_eval`] handles these tensors: all f32 on the CPU with the fast
/// kernels in force, and none of them tracked by autograd.
pub fn supports(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| super::fast_kernels_on(t.device()) && t.dtype() == DType::F32 && !t.track_op())
}

/// `y = ((x - moving_mean) · (gamma / sqrt(moving_var + epsilon))) + beta` per channel,
/// then `max(y, 0)` when `relu`.
///
/// # Shapes
/// - `x`: `[N, C, ...]` (channels at dimension 1); `gamma`, `beta`, `moving_mean`,
///   `moving_var`: `[C]`; result: like `x`
///
/// # Errors
/// Tensors that [`supports`] refuses, a rank below 2, or statistics of another length
/// than `C`.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    moving_mean: &Tensor,
    moving_var: &Tensor,
    epsilon: f64,
    relu: bool,
) -> candle_core::Result<Tensor> {
    if !supports(&[x, gamma, beta, moving_mean, moving_var]) {
        candle_core::bail!("ferroflow batch_norm_eval kernel: untracked f32 CPU tensors only");
    }
    let dims = x.dims();
    if dims.len() < 2 {
        candle_core::bail!("batch_norm_eval: x must be [N, C, ...], got {dims:?}");
    }
    let c = dims[1];
    for (name, t) in [("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean), ("moving_var", moving_var)] {
        if t.dims() != [c] {
            candle_core::bail!("batch_norm_eval: {name} must be [{c}], got {:?}", t.dims());
        }
    }
    // The per-channel scale by the candle-ops path's own operations.
    let scale = ((moving_var + epsilon)?.sqrt()?.recip()? * gamma)?.to_vec1::<f32>()?;
    let op = EvalAffine { mean: moving_mean.to_vec1::<f32>()?, scale, beta: beta.to_vec1::<f32>()?, relu };
    // No input is tracked, so candle records no backward node for the op.
    x.contiguous()?.apply_op1_no_bwd(&op)
}

/// The op: per-channel statistics, ready.
struct EvalAffine {
    mean: Vec<f32>,
    scale: Vec<f32>,
    beta: Vec<f32>,
    relu: bool,
}

impl CustomOp1 for EvalAffine {
    fn name(&self) -> &'static str {
        "ferroflow-batch-norm-eval"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let x = super::f32_contiguous(s, l, "batch_norm_eval", "x")?;
        let (c, dims) = (self.mean.len(), l.dims());
        let plane = dims[2..].iter().product::<usize>();
        let mut out = vec![0f32; x.len()];
        if plane > 0 {
            // Whole planes per task, about TASK_ELEMS values each.
            let per_task = TASK_ELEMS.div_ceil(plane).max(1) * plane;
            out.par_chunks_mut(per_task).zip(x.par_chunks(per_task)).enumerate().for_each(|(task, (ys, xs))| {
                let first = task * per_task / plane;
                for (k, (y, x)) in ys.chunks_mut(plane).zip(xs.chunks(plane)).enumerate() {
                    let ch = (first + k) % c;
                    let (m, s, b) = (self.mean[ch], self.scale[ch], self.beta[ch]);
                    if self.relu {
                        y.iter_mut().zip(x).for_each(|(y, &x)| *y = relu_value(((x - m) * s) + b));
                    } else {
                        y.iter_mut().zip(x).for_each(|(y, &x)| *y = ((x - m) * s) + b);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}
