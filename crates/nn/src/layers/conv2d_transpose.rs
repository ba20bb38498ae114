//! Transposed convolution with an explicit output size (TF's
//! `conv2d_transpose(output_shape=…)`).

use candle_core::Tensor;
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::init::Init;
use crate::layer::{Activation, Layer};
use crate::ops::{self, Padding};
use crate::var_store::{Param, Scope};

/// `scope/name/weights` `[C_in, filters, kh, kw]` and `biases`.
#[derive(Debug)]
pub struct Conv2dTranspose {
    name: String,
    weights: Param,
    biases: Option<Param>,
    stride: [usize; 2],
    padding: Padding,
    activation: Activation,
    out_shape: Vec<usize>,
}

/// Settings of [`Conv2dTranspose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dTransposeConfig {
    /// Output channels.
    pub filters: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
    /// `[H, W]` of the output; `None`: TF's default (`in * stride` for SAME,
    /// `(in - 1) * stride + k` for VALID).
    pub output_size: Option<[usize; 2]>,
    /// Add a bias.
    pub use_bias: bool,
    /// Activation.
    pub activation: Activation,
}

impl Conv2dTranspose {
    /// Creates the layer for an input `[C, H, W]`; an output size TF would
    /// reject is an error naming the sizes.
    pub fn new(scope: &Scope, name: &str, in_shape: &[usize], config: Conv2dTransposeConfig) -> Result<Self> {
        let full = scope.full_name(name);
        let &[c, h, w] = in_shape else {
            return Err(NnError::shape(full, format!("expects a [C, H, W] input, got {in_shape:?}")));
        };
        if config.filters == 0 {
            return Err(NnError::Config { context: full, reason: "filters must be at least 1".into() });
        }
        let default = |n: usize, k: usize, s: usize| match config.padding {
            Padding::Same => n * s,
            Padding::Valid => (n - 1) * s + k,
        };
        let [oh, ow] = config.output_size.unwrap_or([
            default(h, config.kernel[0], config.stride[0]),
            default(w, config.kernel[1], config.stride[1]),
        ]);
        // TF accepts an output size when a forward conv of it gives the input size.
        for (axis, out, inp, k, s) in [
            ("height", oh, h, config.kernel[0], config.stride[0]),
            ("width", ow, w, config.kernel[1], config.stride[1]),
        ] {
            let back = ops::output_size(out, k, s, 1, config.padding).ok();
            if back != Some(inp) {
                return Err(NnError::shape(
                    full,
                    format!(
                        "output {axis} {out} is inconsistent with input {axis} {inp}: a {} conv2d of size {out} with kernel {k} and stride {s} gives {}",
                        config.padding,
                        back.map_or("nothing".to_string(), |b| b.to_string())
                    ),
                ));
            }
        }
        let s = scope.sub(name);
        let weights =
            s.get_param("weights", &[c, config.filters, config.kernel[0], config.kernel[1]], Init::GlorotUniform)?;
        let biases = if config.use_bias { Some(s.get_param("biases", &[config.filters], Init::Zeros)?) } else { None };
        Ok(Conv2dTranspose {
            name: full,
            weights,
            biases,
            stride: config.stride,
            padding: config.padding,
            activation: config.activation,
            out_shape: vec![config.filters, oh, ow],
        })
    }
}

impl Layer for Conv2dTranspose {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, filters, out_h, out_w]`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let hw = [self.out_shape[1], self.out_shape[2]];
        let mut y = ops::conv2d_transpose(x, &self.weights.tensor(), hw, self.stride, self.padding)
            .map_err(|e| NnError::shape(&self.name, e.to_string()))?;
        if let Some(b) = &self.biases {
            y = crate::kernels::bias_add_nchw(&y, &b.tensor()).map_err(NnError::candle(&self.name))?;
        }
        self.activation.apply(&y)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.out_shape.clone()
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let w = g.node("VariableV2", "weights", &[]);
            let mut out = g.node("Conv2DBackpropInput", "conv2d_transpose", &[&w, input]);
            if self.biases.is_some() {
                let b = g.node("VariableV2", "biases", &[]);
                out = g.node("BiasAdd", "BiasAdd", &[&out, &b]);
            }
            self.activation.graph(g, &out)
        })
    }
}
