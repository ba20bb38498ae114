//! Batch normalisation as functions, with TF's two training semantics.
//!
//! - TF1 (`tf.compat.v1.layers.batch_normalization(fused=True)`, the `FusedBatchNormV3` op in
//!   `tensorflow/core/kernels/fused_batch_norm_op.cc`): normalise with the *biased* batch
//!   variance, update the moving variance with the *unbiased* one (`n / (n - 1)`).
//! - Keras (`tf.keras.layers.BatchNormalization`, `tf.nn.moments` in
//!   `tensorflow/python/ops/nn_impl.py`): the biased variance for both.
//!
//! Both normalise identically; they differ only in which variance feeds
//! [`moving_average_update`] (use [`unbiased_variance`] for TF1). In training the batch
//! statistics are part of the graph, so the gradients to `x`, `gamma` and `beta` are TF's.
//! Half-precision inputs are normalised in f32 (as TF's fused kernels do) and cast back.
//! Training on f32 CPU tensors goes through the fused kernel of
//! [`crate::kernels::batch_norm`] (same semantics, statistics accumulated in f64, returned
//! detached); everything else through candle ops.

use candle_core::{DType, Tensor};

use crate::{NnError, Result};

/// The shape `[1, C, 1, ...]` per-channel parameters broadcast to, and the reduced dims.
fn channel_layout(op: &str, x: &Tensor, params: &[(&str, &Tensor)]) -> Result<(Vec<usize>, Vec<usize>)> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(NnError::shape(op, format!("x must have rank >= 2 ([N, C, ...]), got {dims:?}")));
    }
    let c = dims[1];
    for (name, t) in params {
        if t.dims() != [c] {
            return Err(NnError::shape(op, format!("{name} must have shape [{c}] for x {dims:?}, got {:?}", t.dims())));
        }
    }
    let mut shape = vec![1; dims.len()];
    shape[1] = c;
    let reduce: Vec<usize> = (0..dims.len()).filter(|&d| d != 1).collect();
    Ok((shape, reduce))
}

/// The computation dtype: f32 for half precision, else the input's.
fn compute_dtype(x: &Tensor) -> DType {
    match x.dtype() {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// The number of values each channel's statistics average over: `N * H * W` (every
/// dimension but the channel dimension 1).
///
/// # Shapes
/// - `x`: `[N, C, ...]`
pub fn batch_norm_count(x: &Tensor) -> Result<usize> {
    let dims = x.dims();
    if dims.len() < 2 || dims[1] == 0 {
        return Err(NnError::shape("batch_norm", format!("x must have shape [N, C, ...] with C > 0, got {dims:?}")));
    }
    Ok(x.elem_count() / dims[1])
}

/// Training-mode batch normalisation: normalises with the batch mean and the *biased*
/// batch variance over every dimension but the channels (TF1's fused kernel and Keras
/// both do): `y = (x - mean) * (gamma * rsqrt(var + epsilon)) + beta`.
///
/// Returns `(y, batch_mean, batch_variance_biased)`; the statistics are part of `y`'s graph,
/// so `y`'s gradients to `x`, `gamma` and `beta` are TF's (the returned statistics
/// themselves are detached on the f32 CPU kernel path). Feed them to
/// [`moving_average_update`] (TF1: with [`unbiased_variance`] of the variance).
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`: `[C]`
/// - results: `y` like `x`; `batch_mean`, `batch_variance_biased`: `[C]`
pub fn batch_norm_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, epsilon: f64) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm_train";
    let (shape, reduce) = channel_layout(OP, x, &[("gamma", gamma), ("beta", beta)])?;
    if x.elem_count() == 0 {
        return Err(NnError::shape(OP, format!("empty batch {:?}", x.dims())));
    }
    // f32 on the CPU: the fused kernel (statistics in f64, one backward op instead of
    // candle's chain of broadcasts and strided reductions); its statistics are detached,
    // which changes nothing here as they only feed `moving_average_update`.
    if crate::kernels::batch_norm::supports(x, gamma, beta) {
        return crate::kernels::batch_norm_train(x, gamma, beta, epsilon).map_err(NnError::candle(OP));
    }
    let run = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let dt = compute_dtype(x);
        let xf = x.to_dtype(dt)?;
        let mean = xf.mean_keepdim(reduce.as_slice())?;
        let centered = xf.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(reduce.as_slice())?;
        let y = normalize(&centered, &var, gamma, beta, &shape, epsilon, dt)?.to_dtype(x.dtype())?;
        Ok((y, mean.flatten_all()?, var.flatten_all()?))
    };
    run().map_err(NnError::candle(OP))
}

/// [`batch_norm_train`] followed by TF's ReLU (`max(y, 0)`, no gradient where `y <= 0`):
/// one fused op for f32 CPU tensors ([`crate::kernels::batch_norm_relu_train`]), the two
/// ops one after the other otherwise.
///
/// Returns `(relu(y), batch_mean, batch_variance_biased)`, as [`batch_norm_train`].
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`: `[C]`
/// - results: `relu(y)` like `x`; `batch_mean`, `batch_variance_biased`: `[C]`
pub fn batch_norm_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    epsilon: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm_relu_train";
    channel_layout(OP, x, &[("gamma", gamma), ("beta", beta)])?;
    if x.elem_count() > 0 && crate::kernels::batch_norm::supports(x, gamma, beta) {
        return crate::kernels::batch_norm_relu_train(x, gamma, beta, epsilon).map_err(NnError::candle(OP));
    }
    let (y, mean, var) = batch_norm_train(x, gamma, beta, epsilon)?;
    Ok((super::relu(&y)?, mean, var))
}

/// Synchronised training-mode batch normalisation (`model.sync_batch_norm`): as
/// [`batch_norm_train`] (or [`batch_norm_relu_train`] with `relu`), with the statistics
/// over the batches of every replica of `replicas` together (see
/// [`crate::kernels::batch_norm_train_across`]). f32 CPU tensors only.
///
/// Returns `(y, batch_mean, batch_variance_biased, count)` of all replicas' batches,
/// `count` the values per channel over all of them.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` per replica (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`: `[C]`
/// - results: `y` like `x`; `batch_mean`, `batch_variance_biased`: `[C]`
pub fn batch_norm_train_across(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    epsilon: f64,
    relu: bool,
    replicas: &std::sync::Arc<dyn ferroflow_dist::ReplicaSum>,
) -> Result<(Tensor, Tensor, Tensor, usize)> {
    const OP: &str = "synchronised batch_norm_train";
    channel_layout(OP, x, &[("gamma", gamma), ("beta", beta)])?;
    if !crate::kernels::batch_norm::supports(x, gamma, beta) {
        let reason = if x.device().is_cpu() && crate::kernels::Kernels::current() == crate::kernels::Kernels::Generic {
            "model.sync_batch_norm runs inside ferroflow's CPU batch-norm kernel, which FERROFLOW_KERNELS=generic \
             turns off (it has no generic path yet)"
                .to_string()
        } else {
            format!(
                "model.sync_batch_norm runs on f32 CPU tensors; got {:?} on {:?} (GPU ranks need NCCL, not built yet)",
                x.dtype(),
                x.device().location()
            )
        };
        return Err(NnError::Config { context: OP.into(), reason });
    }
    if x.elem_count() == 0 {
        return Err(NnError::shape(OP, format!("empty batch {:?}", x.dims())));
    }
    crate::kernels::batch_norm_train_across(x, gamma, beta, epsilon, relu, replicas).map_err(NnError::candle(OP))
}

/// `centered * (gamma * rsqrt(var + epsilon)) + beta`, the order of TF's fused kernel.
fn normalize(
    centered: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    shape: &[usize],
    epsilon: f64,
    dt: DType,
) -> candle_core::Result<Tensor> {
    let inv = (var + epsilon)?.sqrt()?.recip()?;
    let scale = inv.broadcast_mul(&gamma.to_dtype(dt)?.reshape(shape)?)?;
    centered.broadcast_mul(&scale)?.broadcast_add(&beta.to_dtype(dt)?.reshape(shape)?)
}

/// Inference-mode batch normalisation with the moving statistics:
/// `y = (x - moving_mean) * (gamma * rsqrt(moving_var + epsilon)) + beta`
/// (TF's `FusedBatchNormV3` with `is_training=False`).
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (any rank >= 2, channels at dimension 1)
/// - `gamma`, `beta`, `moving_mean`, `moving_var`: `[C]`
/// - result: like `x`
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    moving_mean: &Tensor,
    moving_var: &Tensor,
    epsilon: f64,
) -> Result<Tensor> {
    batch_norm_eval_relu(x, gamma, beta, moving_mean, moving_var, epsilon, false)
}

/// [`batch_norm_eval`], then a ReLU when `relu` (a conv → BN → ReLU block at inference).
/// Inputs outside autograd (evaluation and prediction run under `no_grad`) take one fused
/// pass on the CPU ([`crate::kernels::batch_norm_eval`], bitwise the same values); the
/// others the candle ops, so gradients still flow (fine-tuning with frozen statistics).
///
/// # Shapes
/// As [`batch_norm_eval`].
pub fn batch_norm_eval_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    moving_mean: &Tensor,
    moving_var: &Tensor,
    epsilon: f64,
    relu: bool,
) -> Result<Tensor> {
    const OP: &str = "batch_norm_eval";
    let (shape, _) = channel_layout(
        OP,
        x,
        &[("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean), ("moving_var", moving_var)],
    )?;
    if crate::kernels::batch_norm_eval::supports(&[x, gamma, beta, moving_mean, moving_var]) {
        return crate::kernels::batch_norm_eval::batch_norm_eval(
            x,
            gamma,
            beta,
            moving_mean,
            moving_var,
            epsilon,
            relu,
        )
        .map_err(NnError::candle(OP));
    }
    let y = batch_norm_eval_graph(x, gamma, beta, moving_mean, moving_var, epsilon, &shape)?;
    if relu { crate::ops::relu(&y) } else { Ok(y) }
}

/// [`batch_norm_eval`] by candle's tensor ops (any device, with autograd).
fn batch_norm_eval_graph(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    moving_mean: &Tensor,
    moving_var: &Tensor,
    epsilon: f64,
    shape: &[usize],
) -> Result<Tensor> {
    let run = || -> candle_core::Result<Tensor> {
        let dt = compute_dtype(x);
        let centered = x.to_dtype(dt)?.broadcast_sub(&moving_mean.to_dtype(dt)?.reshape(shape)?)?;
        let var = moving_var.to_dtype(dt)?.reshape(shape)?;
        normalize(&centered, &var, gamma, beta, shape, epsilon, dt)?.to_dtype(x.dtype())
    };
    run().map_err(NnError::candle("batch_norm_eval"))
}

/// TF's moving-average update (`assign_moving_average` in
/// `tensorflow/python/training/moving_averages.py`): `moving - (moving - value) * (1 - momentum)`.
/// The result is detached from the graph (moving statistics are not trained).
///
/// # Shapes
/// - `moving`, `value`: the same shape (e.g. `[C]`); result: that shape, in `moving`'s dtype
pub fn moving_average_update(moving: &Tensor, value: &Tensor, momentum: f64) -> Result<Tensor> {
    const OP: &str = "moving_average_update";
    if moving.dims() != value.dims() {
        return Err(NnError::shape(
            OP,
            format!("moving {:?} and value {:?} must have the same shape", moving.dims(), value.dims()),
        ));
    }
    let run = || -> candle_core::Result<Tensor> {
        let moving = moving.detach();
        let value = value.detach().to_dtype(moving.dtype())?;
        &moving - ((&moving - &value)? * (1.0 - momentum))?
    };
    run().map_err(NnError::candle(OP))
}

/// The unbiased (Bessel-corrected) variance `var * n / (n - 1)` from the biased one over
/// `count` values, as TF's fused batch norm reports its batch variance (and TF1 updates its
/// moving variance with). As TF (`fused_batch_norm_op.cc`), `n - 1` is clamped to 1, so a
/// count of 1 leaves the variance unchanged.
///
/// # Shapes
/// - `var_biased`: any (e.g. `[C]`); result: the same
pub fn unbiased_variance(var_biased: &Tensor, count: usize) -> Result<Tensor> {
    let factor = count as f64 / count.saturating_sub(1).max(1) as f64;
    (var_biased * factor).map_err(NnError::candle("unbiased_variance"))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn train_normalises_with_biased_variance_and_eval_uses_moving_stats() {
        let dev = Device::Cpu;
        // Two channels, N=2, 1x2 spatial: channel 0 values 1,2,3,4; channel 1 values 0,0,2,2.
        let x = Tensor::from_vec(vec![1f32, 2., 0., 0., 3., 4., 2., 2.], (2, 2, 1, 2), &dev).unwrap();
        let gamma = Tensor::from_vec(vec![1f32, 2.], 2, &dev).unwrap();
        let beta = Tensor::from_vec(vec![0f32, 1.], 2, &dev).unwrap();
        let (y, mean, var) = batch_norm_train(&x, &gamma, &beta, 0.0).unwrap();
        assert_eq!(mean.to_vec1::<f32>().unwrap(), vec![2.5, 1.0]);
        assert_eq!(var.to_vec1::<f32>().unwrap(), vec![1.25, 1.0]);
        let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, -0.5 / s, -1.0, -1.0, 0.5 / s, 1.5 / s, 3.0, 3.0];
        for (g, w) in yv.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{yv:?}");
        }
        assert_eq!(batch_norm_count(&x).unwrap(), 4);
        let unbiased = unbiased_variance(&var, 4).unwrap().to_vec1::<f32>().unwrap();
        assert!((unbiased[0] - 1.25 * 4.0 / 3.0).abs() < 1e-6);
        let mm = moving_average_update(&mean, &Tensor::zeros(2, DType::F32, &dev).unwrap(), 0.9).unwrap();
        let mm = mm.to_vec1::<f32>().unwrap();
        assert!((mm[0] - 2.25).abs() < 1e-6 && (mm[1] - 0.9).abs() < 1e-6, "{mm:?}");
        let ye = batch_norm_eval(&x, &gamma, &beta, &mean, &var, 0.0).unwrap();
        let ye = ye.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, w) in ye.iter().zip(want) {
            assert!((g - w).abs() < 1e-5);
        }
    }

    #[test]
    fn train_gradients_include_the_batch_statistics() {
        // With dy = 1 everywhere, dx is exactly 0 (the mean absorbs it), dbeta = N*H*W.
        let dev = Device::Cpu;
        let x = Var::from_vec((0..24).map(|i| (i * i % 7) as f32).collect(), (2, 3, 2, 2), &dev).unwrap();
        let gamma = Var::ones(3, DType::F32, &dev).unwrap();
        let beta = Var::zeros(3, DType::F32, &dev).unwrap();
        let (y, _, _) = batch_norm_train(&x, &gamma, &beta, 1e-3).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let dx = grads.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(dx.iter().all(|v| v.abs() < 1e-5), "{dx:?}");
        assert_eq!(grads.get(&beta).unwrap().to_vec1::<f32>().unwrap(), vec![8.0; 3]);
    }

    #[test]
    fn rejects_mismatched_parameters() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 2, 2), DType::F32, &dev).unwrap();
        let g = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let e = batch_norm_train(&x, &g, &g, 1e-3).unwrap_err().to_string();
        assert!(e.contains("gamma must have shape [3]") && e.contains("[4]"), "{e}");
        assert!(moving_average_update(&g, &Tensor::zeros(3, DType::F32, &dev).unwrap(), 0.9).is_err());
    }
}
