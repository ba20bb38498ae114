//! An activation on its own, as a layer.

use candle_core::Tensor;
use tfrecord::GraphBuilder;

use crate::error::Result;
use crate::layer::{Activation, Layer};
use crate::var_store::Scope;

/// Applies an [`Activation`].
#[derive(Debug)]
pub struct ActivationLayer {
    name: String,
    activation: Activation,
    shape: Vec<usize>,
}

impl ActivationLayer {
    /// The layer for an input of `shape`.
    pub fn new(scope: &Scope, name: &str, shape: &[usize], activation: Activation) -> Self {
        ActivationLayer { name: scope.full_name(name), activation, shape: shape.to_vec() }
    }
}

impl Layer for ActivationLayer {
    /// # Shapes
    /// Any shape → the same shape.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.activation.apply(x)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| self.activation.graph(g, input))
    }
}
