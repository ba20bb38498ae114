//! `tf.clip_by_global_norm` and `tf.linalg.global_norm`.

use candle_core::{DType, Tensor};

use crate::error::{Result, TrainError};

/// The global norm in float32: `sqrt(sum over tensors of sum(t²))`, as
/// `tf.linalg.global_norm` (which sums `l2_loss(t) = sum(t²) / 2` and takes
/// `sqrt(2 * total)`; halving and doubling are exact in float32).
fn global_norm_f32(tensors: &[Tensor]) -> Result<f32> {
    if tensors.is_empty() {
        return Ok(0.0);
    }
    let sums = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.to_dtype(DType::F32)
                .and_then(|t| t.sqr())
                .and_then(|t| t.sum_all())
                .map_err(TrainError::candle(format!("global norm: tensor {i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let sums: Vec<f32> =
        Tensor::stack(&sums, 0).and_then(|t| t.to_vec1()).map_err(TrainError::candle("global norm"))?;
    Ok(sums.iter().sum::<f32>().sqrt())
}

/// `tf.linalg.global_norm(tensors)`: the L2 norm of all their elements together.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let a = Tensor::new(&[3f32], &Device::Cpu).unwrap();
/// let b = Tensor::new(&[[4f32]], &Device::Cpu).unwrap();
/// assert_eq!(ferroflow_train::optimizer::global_norm(&[a, b]).unwrap(), 5.0);
/// ```
pub fn global_norm(tensors: &[Tensor]) -> Result<f64> {
    global_norm_f32(tensors).map(f64::from)
}

/// `tf.clip_by_global_norm(grads, clip_norm)`: scales every tensor by
/// `clip_norm / max(global_norm, clip_norm)`, so their global norm is at most
/// `clip_norm`, and returns the clipped tensors with the global norm before
/// clipping. In float32 exactly as TF writes it:
/// `scale = clip_norm * min(1 / global_norm, 1 / clip_norm)`, plus
/// `global_norm - global_norm` so that an infinite or NaN norm makes every
/// clipped value NaN (as in TF) instead of silently zeroing the step.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use ferroflow_train::optimizer::clip_by_global_norm;
/// let g = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
/// let (clipped, norm) = clip_by_global_norm(&[g], 1.0).unwrap();
/// assert_eq!(norm, 5.0);
/// assert_eq!(clipped[0].to_vec1::<f32>().unwrap(), [0.6, 0.8]);
/// ```
pub fn clip_by_global_norm(grads: &[Tensor], clip_norm: f64) -> Result<(Vec<Tensor>, f64)> {
    if !(clip_norm > 0.0 && clip_norm.is_finite()) {
        return Err(TrainError::config("clip_norm", format!("must be finite and > 0, got {clip_norm}")));
    }
    let norm = global_norm_f32(grads)?;
    let clip = clip_norm as f32;
    // TF adds `global_norm - global_norm`: 0 for a finite norm, NaN otherwise.
    let nan_unless_finite = if norm.is_finite() { 0.0f32 } else { f32::NAN };
    let scale = clip * (1.0f32 / norm).min(1.0f32 / clip) + nan_unless_finite;
    let clipped = grads
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.affine(f64::from(scale), 0.0).map_err(TrainError::candle(format!("clip_by_global_norm: tensor {i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((clipped, f64::from(norm)))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn clips_a_known_vector() {
        // Global norm of [1, 2, 2] and [4] = sqrt(1 + 4 + 4 + 16) = 5.
        let (clipped, norm) = clip_by_global_norm(&[t(&[1.0, 2.0, 2.0]), t(&[4.0])], 2.5).unwrap();
        assert_eq!(norm, 5.0);
        assert_eq!(clipped[0].to_vec1::<f32>().unwrap(), [0.5, 1.0, 1.0]);
        assert_eq!(clipped[1].to_vec1::<f32>().unwrap(), [2.0]);
        let after = global_norm(&clipped).unwrap();
        assert!((after - 2.5).abs() < 1e-6, "{after}");
    }

    #[test]
    fn leaves_small_gradients_alone() {
        let (clipped, norm) = clip_by_global_norm(&[t(&[0.3, -0.4])], 1.0).unwrap();
        assert!((norm - 0.5).abs() < 1e-7);
        assert_eq!(clipped[0].to_vec1::<f32>().unwrap(), [0.3, -0.4]);
        let (clipped, norm) = clip_by_global_norm(&[t(&[0.0, 0.0])], 4.0).unwrap();
        assert_eq!((norm, clipped[0].to_vec1::<f32>().unwrap()), (0.0, vec![0.0, 0.0]));
        let (clipped, norm) = clip_by_global_norm(&[], 1.0).unwrap();
        assert_eq!((norm, clipped.len()), (0.0, 0));
    }

    #[test]
    fn non_finite_norm_gives_nan_and_bad_clip_is_an_error() {
        let (clipped, norm) = clip_by_global_norm(&[t(&[f32::INFINITY, 1.0])], 1.0).unwrap();
        assert!(norm.is_infinite());
        assert!(clipped[0].to_vec1::<f32>().unwrap().iter().all(|v| v.is_nan()));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = clip_by_global_norm(&[t(&[1.0])], bad).unwrap_err().to_string();
            assert!(e.starts_with("clip_norm:"), "{e}");
        }
    }
}
