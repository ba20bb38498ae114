//! Zero padding of the spatial dimensions (`tf.pad`, Keras' `ZeroPadding2D`):
//! TF-slim's `conv2d_same` pads this way before a strided VALID conv, where a
//! SAME conv would put the odd pixel after instead of splitting it evenly.

use candle_core::Tensor;
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::layer::Layer;
use crate::ops;
use crate::var_store::Scope;

/// Zeros around each image: `[top, bottom, left, right]` pixels.
#[derive(Debug)]
pub struct Pad {
    name: String,
    pads: [usize; 4],
    out_shape: Vec<usize>,
}

impl Pad {
    /// A padding layer for an input of shape `[C, H, W]`.
    pub fn new(scope: &Scope, name: &str, in_shape: &[usize], pads: [usize; 4]) -> Result<Self> {
        let full = scope.full_name(name);
        let &[c, h, w] = in_shape else {
            return Err(NnError::shape(full, format!("expects a [C, H, W] input, got {in_shape:?}")));
        };
        let [top, bottom, left, right] = pads;
        Ok(Pad { name: full, pads, out_shape: vec![c, h + top + bottom, w + left + right] })
    }
}

impl Layer for Pad {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H + top + bottom, W + left + right]`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        ops::zero_pad(x, self.pads)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.out_shape.clone()
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| g.node("Pad", "Pad", &[input]))
    }
}
