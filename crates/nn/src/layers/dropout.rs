//! Dropout given as a rate: inverted scaling in training, identity in eval,
//! with masks from ferroflow's seeded stream.

use std::sync::Mutex;

use candle_core::Tensor;
use ferroflow_rng::Rng;
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::layer::Layer;
use crate::var_store::Scope;

/// `tf.nn.dropout(x, rate)` in training, identity in evaluation.
#[derive(Debug)]
pub struct Dropout {
    name: String,
    rate: f32,
    shape: Vec<usize>,
    rng: Mutex<Rng>,
}

impl Dropout {
    /// A dropout layer dropping `rate` of the units; its masks come from a
    /// stream derived from `seed` and the layer's name.
    pub fn new(scope: &Scope, name: &str, in_shape: &[usize], rate: f32, seed: u64) -> Result<Self> {
        let full = scope.full_name(name);
        if !(0.0..1.0).contains(&rate) {
            return Err(NnError::Config { context: full, reason: format!("rate must be in [0, 1), got {rate}") });
        }
        let name_hash =
            full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        Ok(Dropout { name: full, rate, shape: in_shape.to_vec(), rng: Mutex::new(Rng::derive(seed, &[name_hash])) })
    }

    /// The mask stream's state (for checkpoints).
    pub fn rng_state(&self) -> [u64; 4] {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).state()
    }

    /// Restores the mask stream.
    pub fn set_rng_state(&self, state: [u64; 4]) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = Rng::from_state(state);
    }
}

impl Layer for Dropout {
    /// # Shapes
    /// Any shape → the same shape.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.rate == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.rate;
        let scale = 1.0 / keep;
        let n = x.elem_count();
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (0..n).map(|_| if rng.uniform_f32() < keep { scale } else { 0.0 }).collect()
        };
        let mask = Tensor::from_vec(mask, x.dims(), x.device()).map_err(NnError::candle(&self.name))?;
        x.mul(&mask).map_err(NnError::candle(&self.name))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    fn rng_states(&self) -> Vec<(String, [u64; 4])> {
        vec![(self.name.clone(), self.rng_state())]
    }

    fn set_rng_state(&self, name: &str, state: [u64; 4]) -> bool {
        if name != self.name {
            return false;
        }
        Dropout::set_rng_state(self, state);
        true
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| g.node("Dropout", "dropout", &[input]))
    }
}
