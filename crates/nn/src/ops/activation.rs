//! Activations with TensorFlow's values and gradients, including at the kinks: TF's
//! `ReluGrad`, `Relu6Grad` and `LeakyReluGrad` (`tensorflow/core/kernels/relu_op_functor.h`)
//! pass the gradient only where `x > 0` (and `x < 6` for relu6), so the gradient at exactly
//! 0 (or 6) is 0 (or `alpha`). candle's `relu` passes it at 0 and `clamp` halves it at the
//! bounds, so these are built with `where_cond`, which routes the gradient to the taken
//! branch only.

use candle_core::Tensor;
use candle_core::shape::Dim;

use crate::{NnError, Result};

/// TF's `tf.nn.relu`: `max(x, 0)`, gradient `dy * (x > 0)`.
///
/// f32 tensors on the CPU take ferroflow's kernel ([`crate::kernels::relu`](fn@crate::kernels::relu): one pass
/// each way, same values and gradients); others the candle ops.
///
/// # Shapes
/// - `x`: any; result: the same
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if crate::kernels::relu::supports(x) {
        return crate::kernels::relu(x).map_err(NnError::candle("relu"));
    }
    x.gt(0.0).and_then(|pos| pos.where_cond(x, &x.zeros_like()?)).map_err(NnError::candle("relu"))
}

/// `relu(a + b)`, a residual unit's output: one fused pass (and one backward pass) for
/// f32 CPU tensors, `add` then [`relu`] elsewhere.
///
/// # Shapes
/// - `a`, `b`: the same shape; result: that shape
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::kernels::relu::supports(a) && crate::kernels::relu::supports(b) && a.dims() == b.dims() {
        return crate::kernels::relu::add_relu(a, b).map_err(NnError::candle("add_relu"));
    }
    relu(&(a + b).map_err(NnError::candle("add_relu"))?)
}

/// TF's `tf.nn.relu6`: `min(max(x, 0), 6)`, gradient `dy * (0 < x < 6)`.
///
/// # Shapes
/// - `x`: any; result: the same
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    let run = || -> candle_core::Result<Tensor> {
        let inside = x.gt(0.0)?.mul(&x.lt(6.0)?)?;
        // Outside (0, 6) the value is the (constant) bound: 6 above, 0 below.
        let bound = x.ge(6.0)?.to_dtype(x.dtype())?.affine(6.0, 0.0)?;
        inside.where_cond(x, &bound)
    };
    run().map_err(NnError::candle("relu6"))
}

/// TF's `tf.nn.leaky_relu`: `x` where `x > 0`, else `alpha * x` (TF's default `alpha` is 0.2);
/// gradient `dy` or `alpha * dy` on the same condition.
///
/// # Shapes
/// - `x`: any; result: the same
pub fn leaky_relu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    x.gt(0.0).and_then(|pos| pos.where_cond(x, &x.affine(alpha, 0.0)?)).map_err(NnError::candle("leaky_relu"))
}

/// TF's `tf.math.sigmoid` (`1 / (1 + exp(-x))`, gradient `dy * y * (1 - y)`).
///
/// # Shapes
/// - `x`: any; result: the same
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(x).map_err(NnError::candle("sigmoid"))
}

/// TF's `tf.math.tanh` (gradient `dy * (1 - y^2)`).
///
/// # Shapes
/// - `x`: any; result: the same
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    x.tanh().map_err(NnError::candle("tanh"))
}

/// TF's `tf.nn.softmax` along `axis` (e.g. `candle_core::D::Minus1`, TF's default):
/// `exp(x - max) / sum(exp(x - max))`, the max detached (it cancels).
///
/// # Shapes
/// - `x`: any rank >= 1; result: the same
pub fn softmax<A: Dim>(x: &Tensor, axis: A) -> Result<Tensor> {
    let run = || -> candle_core::Result<Tensor> {
        let axis = axis.to_index(x.shape(), "softmax")?;
        let max = x.max_keepdim(axis)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(axis)?)
    };
    run().map_err(NnError::candle("softmax"))
}

/// TF's `tf.nn.log_softmax` along `axis`: `x - max - log(sum(exp(x - max)))`.
///
/// # Shapes
/// - `x`: any rank >= 1; result: the same
pub fn log_softmax<A: Dim>(x: &Tensor, axis: A) -> Result<Tensor> {
    let run = || -> candle_core::Result<Tensor> {
        let axis = axis.to_index(x.shape(), "log_softmax")?;
        let max = x.max_keepdim(axis)?.detach();
        let shifted = x.broadcast_sub(&max)?;
        shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(axis)?.log()?)
    };
    run().map_err(NnError::candle("log_softmax"))
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Var};

    use super::*;

    fn grad_of(f: impl Fn(&Tensor) -> Result<Tensor>, xs: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let x = Var::from_vec(xs.to_vec(), xs.len(), &Device::Cpu).unwrap();
        let y = f(&x).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap().get(&x).unwrap().to_vec1::<f32>().unwrap();
        (y.to_vec1::<f32>().unwrap(), g)
    }

    #[test]
    fn kinks_follow_tf() {
        let xs = [-2f32, 0.0, 3.0, 6.0, 7.0];
        assert_eq!(grad_of(relu, &xs), (vec![0., 0., 3., 6., 7.], vec![0., 0., 1., 1., 1.]));
        assert_eq!(grad_of(relu6, &xs), (vec![0., 0., 3., 6., 6.], vec![0., 0., 1., 0., 0.]));
        let (y, g) = grad_of(|x| leaky_relu(x, 0.2), &xs);
        assert!((y[0] + 0.4).abs() < 1e-7 && y[1] == 0.0 && y[2] == 3.0);
        assert!((g[0] - 0.2).abs() < 1e-7 && (g[1] - 0.2).abs() < 1e-7 && g[2] == 1.0);
    }

    #[test]
    fn smooth_activations() {
        let (y, g) = grad_of(sigmoid, &[0.0]);
        assert!((y[0] - 0.5).abs() < 1e-7 && (g[0] - 0.25).abs() < 1e-7);
        let (y, g) = grad_of(tanh, &[0.0]);
        assert!(y[0] == 0.0 && (g[0] - 1.0).abs() < 1e-7);
        let x = Tensor::from_vec(vec![1e4f32, 0.0, 1e4, 1.0, 2.0, 3.0], (2, 3), &Device::Cpu).unwrap();
        let s = softmax(&x, D::Minus1).unwrap().to_vec2::<f32>().unwrap();
        assert!((s[0][0] - 0.5).abs() < 1e-6 && s[0][1] == 0.0);
        let total: f32 = s[1].iter().sum();
        assert!((total - 1.0).abs() < 1e-6);
        let l = log_softmax(&x, 1).unwrap().to_vec2::<f32>().unwrap();
        assert!((l[0][0] + 2f32.ln()).abs() < 1e-6 && l[0][1].is_finite());
    }
}
