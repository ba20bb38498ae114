//! Flatten in TensorFlow's order: NCHW activations are flattened as TF
//! flattens the same data in NHWC (channels fastest), so a dense layer after
//! it has TF's kernel layout.

use candle_core::Tensor;
use tfrecord::GraphBuilder;

use crate::error::Result;
use crate::layer::Layer;
use crate::ops;
use crate::var_store::Scope;

/// `tf.keras.layers.Flatten` on the NHWC view.
#[derive(Debug)]
pub struct Flatten {
    name: String,
    features: usize,
}

impl Flatten {
    /// A flatten layer for an input of any shape.
    pub fn new(scope: &Scope, name: &str, in_shape: &[usize]) -> Self {
        Flatten { name: scope.full_name(name), features: in_shape.iter().product() }
    }
}

impl Layer for Flatten {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, H·W·C]` (NHWC row-major order).
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        ops::flatten(x)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        vec![self.features]
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| g.node("Reshape", "Reshape", &[input]))
    }
}
