//! Seeded, reproducible variable initializers with TensorFlow's definitions
//! (`tensorflow/python/ops/init_ops_v2.py`, Keras `initializers`).

use candle_core::{Device, Tensor};
use ferroflow_rng::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// How a variable starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element `value`.
    Constant {
        /// The value.
        value: f32,
    },
    /// Uniform in ±sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010; Keras' default).
    GlorotUniform,
    /// Truncated normal, stddev sqrt(2 / fan_in) / 0.8796 (He et al. 2015; Keras
    /// divides by the truncated distribution's stddev, 0.87962566103423978).
    HeNormal,
    /// Normal with the given stddev, redrawn beyond two stddevs (`tf.truncated_normal_initializer`).
    TruncatedNormal {
        /// Mean.
        mean: f32,
        /// Standard deviation before truncation.
        stddev: f32,
    },
}

/// The Keras constant for truncated-normal variance scaling: the stddev of a
/// unit normal truncated to ±2.
const TRUNCATED_STDDEV: f32 = 0.879_625_7;

/// `(fan_in, fan_out)` of a shape as TF computes them: for a conv kernel,
/// the receptive field times the in/out channels. Shapes are ferroflow's:
/// conv kernels OIHW `[out, in, kh, kw]`, dense kernels `[in, out]`.
pub fn fans(shape: &[usize]) -> (f32, f32) {
    match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f32, *n as f32),
        [i, o] => (*i as f32, *o as f32),
        [o, i, rest @ ..] => {
            let field: usize = rest.iter().product();
            ((i * field) as f32, (o * field) as f32)
        }
    }
}

fn truncated(rng: &mut Rng, mean: f32, stddev: f32) -> f32 {
    loop {
        let z = rng.normal_f32();
        if z.abs() <= 2.0 {
            return mean + stddev * z;
        }
    }
}

impl Init {
    /// A tensor of `shape` drawn from `rng` (which advances).
    pub fn tensor(&self, shape: &[usize], rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let (fan_in, fan_out) = fans(shape);
        let values: Vec<f32> = match *self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant { value } => vec![value; n],
            Init::GlorotUniform => {
                let limit = (6.0 / (fan_in + fan_out)).sqrt();
                (0..n).map(|_| rng.range_f32(-limit, limit)).collect()
            }
            Init::HeNormal => {
                let stddev = (2.0 / fan_in).sqrt() / TRUNCATED_STDDEV;
                (0..n).map(|_| truncated(rng, 0.0, stddev)).collect()
            }
            Init::TruncatedNormal { mean, stddev } => (0..n).map(|_| truncated(rng, mean, stddev)).collect(),
        };
        Tensor::from_vec(values, shape, device).map_err(NnError::candle("initializer"))
    }
}
