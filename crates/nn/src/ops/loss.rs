//! Losses with TensorFlow's semantics: softmax cross-entropy (sparse and dense, with TF1's
//! label smoothing) and the mean squared error.
//!
//! The cross-entropies use TF's stable form (`tensorflow/core/kernels/xent_op.h`,
//! `sparse_xent_op.h`): `shifted = logits - max(logits)`, `loss = log(sum(exp(shifted))) -
//! shifted[label]`, so logits of any magnitude give finite losses and gradients. The max
//! is detached: it cancels mathematically, and the gradient is `softmax - targets`.

use candle_core::{D, DType, Tensor};

use crate::{NnError, Result};

/// Checks integer class labels against `num_classes` on the host and returns them as a
/// `u32` tensor on `labels`' device.
fn checked_labels(op: &str, labels: &Tensor, num_classes: usize) -> Result<Tensor> {
    let values: Vec<i64> = match labels.dtype() {
        DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64 => labels
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::I64))
            .and_then(|t| t.to_vec1::<i64>())
            .map_err(NnError::candle(op))?,
        other => {
            return Err(NnError::shape(op, format!("labels must be an integer tensor, got {other:?}")));
        }
    };
    let mut ids = Vec::with_capacity(values.len());
    for (i, &label) in values.iter().enumerate() {
        if label < 0 || label as u64 >= num_classes as u64 {
            // TF: "Received a label value of {label} which is outside the valid range of [0, {K})".
            return Err(NnError::shape(
                op,
                format!(
                    "label {label} (example {i}) is outside the valid range [0, {num_classes}) of {num_classes} classes"
                ),
            ));
        }
        ids.push(label as u32);
    }
    Tensor::from_vec(ids, labels.dims(), labels.device()).map_err(NnError::candle(op))
}

fn logits_dims(op: &str, logits: &Tensor) -> Result<(usize, usize)> {
    match *logits.dims() {
        [n, k] if k > 0 => Ok((n, k)),
        _ => Err(NnError::shape(op, format!("logits must have shape [N, K] with K > 0, got {:?}", logits.dims()))),
    }
}

/// `logits - max(logits)` along the classes (max detached) and `log(sum(exp(shifted)))`.
fn shifted_and_lse(logits: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok((shifted, lse))
}

/// TF's `tf.nn.sparse_softmax_cross_entropy_with_logits`: the per-example loss
/// `log(sum(exp(logits))) - logits[label]`, computed stably (max subtracted). The gradient
/// is `softmax(logits) - one_hot(label)` per example.
///
/// # Shapes
/// - `logits`: `[N, K]` (float)
/// - `labels`: `[N]`, an integer tensor (`u8`, `u32`, `i16`, `i32` or `i64`)
/// - result: `[N]`
///
/// # Errors
/// Mismatched shapes, non-integer labels, or a label outside `[0, K)` (naming the label and
/// `K`, as TF's error does).
pub fn sparse_softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    const OP: &str = "sparse_softmax_cross_entropy";
    let (n, k) = logits_dims(OP, logits)?;
    if labels.dims() != [n] {
        return Err(NnError::shape(
            OP,
            format!("labels must have shape [{n}] for logits [{n}, {k}], got {:?}", labels.dims()),
        ));
    }
    let ids = checked_labels(OP, labels, k)?;
    let run = || -> candle_core::Result<Tensor> {
        let (shifted, lse) = shifted_and_lse(logits)?;
        let picked = shifted.gather(&ids.unsqueeze(1)?, 1)?;
        (lse - picked)?.squeeze(1)
    };
    run().map_err(NnError::candle(OP))
}

/// TF's `tf.nn.softmax_cross_entropy_with_logits` with dense targets: per example
/// `sum_k targets[k] * (log(sum(exp(logits))) - logits[k])`, computed stably. The gradient
/// to the logits is `sum(targets) * softmax(logits) - targets` (`softmax - targets` for
/// targets that sum to 1, as TF's).
///
/// # Shapes
/// - `logits`: `[N, K]`
/// - `targets`: `[N, K]` (cast to the logits' dtype)
/// - result: `[N]`
pub fn softmax_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_cross_entropy";
    logits_dims(OP, logits)?;
    if targets.dims() != logits.dims() {
        return Err(NnError::shape(
            OP,
            format!("targets {:?} must have the logits' shape {:?}", targets.dims(), logits.dims()),
        ));
    }
    let run = || -> candle_core::Result<Tensor> {
        let (shifted, lse) = shifted_and_lse(logits)?;
        let neg_log_probs = shifted.broadcast_sub(&lse)?.neg()?;
        (targets.to_dtype(logits.dtype())? * neg_log_probs)?.sum(D::Minus1)
    };
    run().map_err(NnError::candle(OP))
}

/// TF1's smoothed one-hot targets (`tf.compat.v1.losses.softmax_cross_entropy` in
/// `tensorflow/python/ops/losses/losses_impl.py`): `one_hot * (1 - label_smoothing) +
/// label_smoothing / num_classes`. `label_smoothing = 0` gives the plain one-hot.
///
/// # Shapes
/// - `labels`: `[N]`, an integer tensor
/// - result: `[N, num_classes]`, f32, on `labels`' device
///
/// # Errors
/// `num_classes == 0`, `label_smoothing` outside `[0, 1]`, non-integer labels, or a label
/// outside `[0, num_classes)`.
pub fn smoothed_one_hot(labels: &Tensor, num_classes: usize, label_smoothing: f64) -> Result<Tensor> {
    const OP: &str = "smoothed_one_hot";
    if num_classes == 0 {
        return Err(NnError::shape(OP, "num_classes must be at least 1"));
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(NnError::shape(OP, format!("label_smoothing {label_smoothing} is outside [0, 1]")));
    }
    if labels.rank() != 1 {
        return Err(NnError::shape(OP, format!("labels must have shape [N], got {:?}", labels.dims())));
    }
    let ids = checked_labels(OP, labels, num_classes)?;
    let run = || -> candle_core::Result<Tensor> {
        let classes = Tensor::arange(0u32, num_classes as u32, labels.device())?.unsqueeze(0)?;
        let one_hot = ids.unsqueeze(1)?.broadcast_eq(&classes)?.to_dtype(DType::F32)?;
        one_hot.affine(1.0 - label_smoothing, label_smoothing / num_classes as f64)
    };
    run().map_err(NnError::candle(OP))
}

/// The mean squared error `mean((pred - target)^2)` over every element (TF's
/// `tf.compat.v1.losses.mean_squared_error` with the default weights and reduction).
///
/// # Shapes
/// - `pred`, `target`: the same shape
/// - result: a scalar (rank 0)
pub fn mean_squared_error(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    const OP: &str = "mean_squared_error";
    if pred.dims() != target.dims() {
        return Err(NnError::shape(
            OP,
            format!("pred {:?} and target {:?} differ in shape", pred.dims(), target.dims()),
        ));
    }
    (pred - target.to_dtype(pred.dtype()).map_err(NnError::candle(OP))?)
        .and_then(|d| d.sqr())
        .and_then(|d| d.mean_all())
        .map_err(NnError::candle(OP))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn huge_logits_are_stable() {
        let dev = Device::Cpu;
        let logits = Var::from_vec(vec![1e4f32, -1e4, 5e3, -3e4, 2e4, 2e4 - 1.0], (2, 3), &dev).unwrap();
        let labels = Tensor::from_vec(vec![2i64, 0], 2, &dev).unwrap();
        let loss = sparse_softmax_cross_entropy(&logits, &labels).unwrap();
        let lv = loss.to_vec1::<f32>().unwrap();
        assert!((lv[0] - 5e3).abs() < 1.0, "{lv:?}");
        // Example 1: logits -3e4, 2e4, 2e4-1, label 0: loss 5e4 + log(1 + e^-1).
        assert!((lv[1] - (5e4 + (1.0 + (-1f32).exp()).ln())).abs() < 8.0, "{lv:?}");
        let grads = loss.mean(0).unwrap().backward().unwrap();
        let g = grads.get(&logits).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        // softmax - onehot, halved by the mean: example 0 puts all mass on class 0.
        assert!((g[0] - 0.5).abs() < 1e-6 && (g[2] + 0.5).abs() < 1e-6, "{g:?}");
        let targets = smoothed_one_hot(&labels, 3, 0.1).unwrap();
        let dense = softmax_cross_entropy(&logits, &targets).unwrap();
        assert!(dense.to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn smoothing_and_label_errors() {
        let dev = Device::Cpu;
        let labels = Tensor::from_vec(vec![1u32, 0], 2, &dev).unwrap();
        let t = smoothed_one_hot(&labels, 4, 0.2).unwrap().to_vec2::<f32>().unwrap();
        assert!((t[0][1] - 0.85).abs() < 1e-6 && (t[0][0] - 0.05).abs() < 1e-6, "{t:?}");
        let bad = Tensor::from_vec(vec![1i64, 7], 2, &dev).unwrap();
        let e = smoothed_one_hot(&bad, 4, 0.1).unwrap_err().to_string();
        assert!(e.contains("label 7") && e.contains("[0, 4)"), "{e}");
        let logits = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let neg = Tensor::from_vec(vec![-1i64, 0], 2, &dev).unwrap();
        let e = sparse_softmax_cross_entropy(&logits, &neg).unwrap_err().to_string();
        assert!(e.contains("label -1") && e.contains("4 classes"), "{e}");
        let float = Tensor::zeros(2, DType::F32, &dev).unwrap();
        assert!(sparse_softmax_cross_entropy(&logits, &float).is_err());
        // Uniform logits: loss log(K) per example.
        let l = sparse_softmax_cross_entropy(&logits, &labels).unwrap().to_vec1::<f32>().unwrap();
        assert!((l[0] - 4f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn mse() {
        let dev = Device::Cpu;
        let p = Tensor::from_vec(vec![1f32, 2., 3.], 3, &dev).unwrap();
        let t = Tensor::from_vec(vec![1f32, 0., 0.], 3, &dev).unwrap();
        let v = mean_squared_error(&p, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!((v - 13.0 / 3.0).abs() < 1e-6);
    }
}
