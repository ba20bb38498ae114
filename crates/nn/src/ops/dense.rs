//! Flattening in TensorFlow's element order and the dense (fully connected) op.
//!
//! TF flattens NHWC activations row-major, i.e. in `(h, w, c)` order per example
//! (`tf.keras.layers.Flatten`, `tf.reshape(x, [N, -1])`). ferroflow holds NCHW activations,
//! so [`flatten`] moves the channels last before flattening: given the same data, its
//! output equals TF's element for element, and a dense kernel trained by (or imported
//! from) TensorFlow applies unchanged.

use candle_core::Tensor;

use crate::{NnError, Result};

/// Flattens `[N, C, d1, d2, ...]` to `[N, d1 * d2 * ... * C]` in TF's channels-last order:
/// element `(h, w, c)` of example `n` lands at `(h * W + w) * C + c`, as TF's `Flatten` of
/// the NHWC tensor. A rank-2 input is returned as is.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (any rank >= 2)
/// - result: `[N, H * W * C]`
pub fn flatten(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(NnError::shape("flatten", format!("expected [N, C, ...] (rank >= 2), got {dims:?}")));
    }
    if dims.len() == 2 {
        return Ok(x.clone());
    }
    // NCHW -> NHWC (channels last), then row-major flatten.
    let mut order: Vec<usize> = (0..dims.len()).filter(|&d| d != 1).collect();
    order.push(1);
    let n = dims[0];
    let rest = x.elem_count() / n.max(1);
    x.permute(order).and_then(|t| t.contiguous()).and_then(|t| t.reshape((n, rest))).map_err(NnError::candle("flatten"))
}

/// TF's dense layer op: `x @ kernel + bias` with the kernel in TF's `[in, units]` layout.
///
/// # Shapes
/// - `x`: `[N, in]`
/// - `kernel`: `[in, units]`
/// - `bias`: `[units]` (optional)
/// - result: `[N, units]`
pub fn dense(x: &Tensor, kernel: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "dense";
    let (&[_, fan_in], &[k_in, units]) = (x.dims(), kernel.dims()) else {
        return Err(NnError::shape(
            OP,
            format!("expected x [N, in] and kernel [in, units], got x {:?}, kernel {:?}", x.dims(), kernel.dims()),
        ));
    };
    if fan_in != k_in {
        return Err(NnError::shape(
            OP,
            format!("x {:?} has {fan_in} features but the kernel {:?} expects {k_in}", x.dims(), kernel.dims()),
        ));
    }
    if let Some(b) = bias
        && b.dims() != [units]
    {
        return Err(NnError::shape(OP, format!("bias must have shape [{units}], got {:?}", b.dims())));
    }
    let y = x.matmul(kernel).map_err(NnError::candle(OP))?;
    match bias {
        Some(b) => y.broadcast_add(b).map_err(NnError::candle(OP)),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn flatten_uses_tf_channels_last_order() {
        let dev = Device::Cpu;
        // NHWC data 0..12 for N=1, H=2, W=3, C=2; TF's flatten is 0..12 in that order.
        let nhwc = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((1, 2, 3, 2)).unwrap();
        let nchw = nhwc.permute((0, 3, 1, 2)).unwrap();
        let flat = flatten(&nchw).unwrap();
        assert_eq!(flat.dims(), &[1, 12]);
        assert_eq!(
            flat.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..12).map(|v| v as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn dense_checks_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        let k = Tensor::ones((3, 4), DType::F32, &dev).unwrap();
        let b = Tensor::ones(4, DType::F32, &dev).unwrap();
        let y = dense(&x, &k, Some(&b)).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![4f32; 4]; 2]);
        let e = dense(&x, &k.t().unwrap(), None).unwrap_err().to_string();
        assert!(e.contains("3 features") && e.contains("expects 4"), "{e}");
    }
}
