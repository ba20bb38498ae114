//! Global average pooling (`tf.reduce_mean(x, [1, 2], keepdims=True)`, TF-slim
//! ResNets' `pool5`): the mean of each channel over the whole feature map,
//! whatever its size, so a net takes other input sizes than it was built for.

use candle_core::Tensor;
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::layer::Layer;
use crate::var_store::Scope;

/// The mean over the spatial dimensions, kept as 1x1.
#[derive(Debug)]
pub struct GlobalAvgPool {
    name: String,
    channels: usize,
}

impl GlobalAvgPool {
    /// A global average pool for an input of shape `[C, H, W]`.
    pub fn new(scope: &Scope, name: &str, in_shape: &[usize]) -> Result<Self> {
        let full = scope.full_name(name);
        let &[channels, _, _] = in_shape else {
            return Err(NnError::shape(full, format!("expects a [C, H, W] input, got {in_shape:?}")));
        };
        Ok(GlobalAvgPool { name: full, channels })
    }
}

impl Layer for GlobalAvgPool {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, 1, 1]`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        x.mean_keepdim(2).and_then(|m| m.mean_keepdim(3)).map_err(NnError::candle(&self.name)) // [N, C, 1, 1]
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        vec![self.channels, 1, 1]
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| g.node("Mean", "Mean", &[input]))
    }
}
