//! 2-D convolution with TF's padding semantics, optionally followed by batch
//! norm (TF-slim's `normalizer_fn`) and an activation.

use std::sync::Arc;

use candle_core::Tensor;
use ferroflow_dist::ReplicaSum;
use serde::{Deserialize, Serialize};
use tfrecord::GraphBuilder;
use tfrecord::proto::graph::AttrValue;

use crate::error::{NnError, Result};
use crate::init::Init;
use crate::layer::{Activation, Layer};
use crate::layers::batch_norm::{BatchNorm, BatchNormConfig};
use crate::ops::{self, Padding};
use crate::var_store::{Param, Scope};

/// Convolution settings. Defaults: stride 1, dilation 1, SAME padding, a
/// bias (dropped when batch norm follows, as TF-slim does), no activation,
/// Glorot-uniform weights (the default of TF-slim's `conv2d`, `xavier_initializer`, and of Keras).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Conv2dConfig {
    /// Output channels.
    pub filters: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
    /// Add a bias (ignored with batch norm).
    pub use_bias: bool,
    /// Batch norm after the convolution.
    pub batch_norm: Option<BatchNormConfig>,
    /// Activation last.
    pub activation: Activation,
    /// Weight initializer.
    pub init: Init,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            filters: 0,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Same,
            use_bias: true,
            batch_norm: None,
            activation: Activation::Linear,
            init: Init::GlorotUniform,
        }
    }
}

/// A conv layer: `scope/name/weights` (OIHW), `biases`, and `BatchNorm/…`.
#[derive(Debug)]
pub struct Conv2d {
    name: String,
    weights: Param,
    biases: Option<Param>,
    batch_norm: Option<BatchNorm>,
    config: Conv2dConfig,
    out_shape: Vec<usize>,
}

impl Conv2d {
    /// Creates the layer for an input of shape `[C, H, W]`.
    pub fn new(scope: &Scope, name: &str, in_shape: &[usize], config: Conv2dConfig) -> Result<Self> {
        let full = scope.full_name(name);
        let &[c, h, w] = in_shape else {
            return Err(NnError::shape(full, format!("expects a [C, H, W] input, got {in_shape:?}")));
        };
        if config.filters == 0 {
            return Err(NnError::Config { context: full, reason: "filters must be at least 1".into() });
        }
        let oh = ops::output_size(h, config.kernel[0], config.stride[0], config.dilation[0], config.padding)
            .map_err(|e| NnError::shape(&full, format!("input {c}x{h}x{w}: {e}")))?;
        let ow = ops::output_size(w, config.kernel[1], config.stride[1], config.dilation[1], config.padding)
            .map_err(|e| NnError::shape(&full, format!("input {c}x{h}x{w}: {e}")))?;
        let s = scope.sub(name);
        let weights = s.get_param("weights", &[config.filters, c, config.kernel[0], config.kernel[1]], config.init)?;
        let batch_norm = match config.batch_norm {
            Some(bn) => Some(BatchNorm::new(&s, "BatchNorm", &[config.filters, oh, ow], bn)?),
            None => None,
        };
        let biases = if config.use_bias && batch_norm.is_none() {
            Some(s.get_param("biases", &[config.filters], Init::Zeros)?)
        } else {
            None
        };
        Ok(Conv2d { name: full, weights, biases, batch_norm, config, out_shape: vec![config.filters, oh, ow] })
    }
}

/// `convs` one after the other on `x`: in training, when every one is a conv → BN
/// (→ ReLU) block (see [`Layer::chain_block`]), as one chained op (the activations
/// between them never become autograd tensors, and the backward pass has one node
/// instead of one per conv); otherwise layer by layer. Used inside resnet20's residual
/// units, whose convs the model's own chaining cannot see (+2% images/s there; on
/// ResNet-50's 56x56 maps the chain measured 3-5% slower than separate convs, so its
/// bottleneck units do not chain).
///
/// # Shapes
/// `x`: the first conv's input → the last conv's output.
pub(crate) fn forward_chained(convs: &[&Conv2d], x: &Tensor, train: bool) -> Result<Tensor> {
    chained(convs, x, train, false)
}

/// A residual unit with an identity shortcut, `relu(convs(x) + x)`: in training, when
/// every conv is a conv → BN (→ ReLU) block and the last has no activation, one op whose
/// last normalising sweep adds `x` and rectifies ([`ops::conv2d_batch_norm_residual_train`];
/// one autograd node instead of two, and `x` gets one gradient instead of two that
/// candle adds up); otherwise [`forward_chained`] then [`ops::add_relu`].
///
/// # Shapes
/// `x`: `[N, C, H, W]` → `[N, C, H, W]` (the convs keep the shape).
pub(crate) fn forward_residual(convs: &[&Conv2d], x: &Tensor, train: bool) -> Result<Tensor> {
    chained(convs, x, train, true)
}

fn chained(convs: &[&Conv2d], x: &Tensor, train: bool, residual: bool) -> Result<Tensor> {
    let blocks: Option<Vec<ops::ConvBnBlock>> = convs.iter().map(|c| c.chain_block(train)).collect();
    let fusable = |blocks: &[ops::ConvBnBlock]| {
        blocks.len() >= 2 && (!residual || blocks.last().is_some_and(|b| !b.relu && b.pool.is_none()))
    };
    match blocks {
        Some(blocks) if fusable(&blocks) => {
            let names = || convs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
            let run = if residual { ops::conv2d_batch_norm_residual_train } else { ops::conv2d_batch_norm_chain_train };
            let (y, stats) = run(x, &blocks).map_err(|e| NnError::shape(names(), e.to_string()))?;
            let batch = x.dim(0).map_err(NnError::candle(names()))?;
            for (conv, (mean, variance)) in convs.iter().zip(stats) {
                conv.chain_block_done(&mean, variance, batch)?;
            }
            Ok(y)
        }
        _ => {
            let y = convs.iter().try_fold(x.clone(), |y, c| c.forward_t(&y, train))?;
            if residual { ops::add_relu(&y, x) } else { Ok(y) }
        }
    }
}

impl Layer for Conv2d {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, filters, H', W']` (TF's SAME/VALID output size).
    fn forward_t_max_pool(&self, x: &Tensor, pool: ops::MaxPoolWindow, train: bool) -> Option<Result<Tensor>> {
        let c = &self.config;
        let bn = self.batch_norm.as_ref()?;
        if !train || c.activation != Activation::Relu || bn.synchronised() {
            return None;
        }
        let (gamma, beta, epsilon) = bn.parameters();
        let run = || -> Result<Tensor> {
            let (y, mean, var) = ops::conv2d_batch_norm_relu_max_pool_train(
                x,
                &self.weights.tensor(),
                &gamma,
                &beta,
                c.stride,
                c.dilation,
                c.padding,
                epsilon,
                pool,
            )
            .map_err(|e| NnError::shape(&self.name, e.to_string()))?; // [N, F, H'', W'']
            // The moving statistics count the conv output's values, before the pool.
            let per_channel = x.dim(0).map_err(NnError::candle(&self.name))? * self.out_shape[1] * self.out_shape[2];
            bn.update_moving_statistics(&mean, var, per_channel)?;
            Ok(y)
        };
        Some(run())
    }

    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        if let Some(bn) = &mut self.batch_norm {
            bn.synchronise_batch_norm(replicas);
        }
    }

    fn chain_block(&self, train: bool) -> Option<ops::ConvBnBlock> {
        let c = &self.config;
        let bn = self.batch_norm.as_ref()?;
        if !train || !matches!(c.activation, Activation::Relu | Activation::Linear) || bn.synchronised() {
            return None;
        }
        let (gamma, beta, epsilon) = bn.parameters();
        Some(ops::ConvBnBlock {
            w: self.weights.tensor(),
            gamma,
            beta,
            stride: c.stride,
            dilation: c.dilation,
            padding: c.padding,
            epsilon,
            relu: c.activation == Activation::Relu,
            pool: None,
        })
    }

    fn chain_block_done(&self, mean: &Tensor, variance: Tensor, batch: usize) -> Result<()> {
        let Some(bn) = &self.batch_norm else { return Ok(()) };
        // The moving statistics count the conv output's values, before any pool.
        bn.update_moving_statistics(mean, variance, batch * self.out_shape[1] * self.out_shape[2])
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = &self.config;
        if let (Some(bn), true) = (&self.batch_norm, train)
            && !bn.synchronised()
        {
            // Training conv → BN (→ ReLU): one fused op on the CPU (one autograd node,
            // statistics taken while each image's output is in cache), the ops in
            // sequence elsewhere; the batch-norm layer keeps its moving statistics.
            let (gamma, beta, epsilon) = bn.parameters();
            let relu = c.activation == Activation::Relu;
            let (y, mean, var) = ops::conv2d_batch_norm_train(
                x,
                &self.weights.tensor(),
                &gamma,
                &beta,
                c.stride,
                c.dilation,
                c.padding,
                epsilon,
                relu,
            )
            .map_err(|e| NnError::shape(&self.name, e.to_string()))?; // [N, F, H', W']
            bn.update_moving_statistics(&mean, var, ops::batch_norm_count(&y)?)?;
            return if relu { Ok(y) } else { c.activation.apply(&y) };
        }
        let mut y = ops::conv2d(x, &self.weights.tensor(), c.stride, c.dilation, c.padding) // [N, F, H', W']
            .map_err(|e| NnError::shape(&self.name, e.to_string()))?;
        if let Some(b) = &self.biases {
            y = crate::kernels::bias_add_nchw(&y, &b.tensor()).map_err(NnError::candle(&self.name))?; // [N, F, H', W']
        }
        if let Some(bn) = &self.batch_norm {
            if !train && c.activation == Activation::Relu {
                // Inference BN and its ReLU in one pass.
                return bn.forward_eval(&y, true); // [N, F, H', W']
            }
            y = bn.forward_t(&y, train)?;
        }
        c.activation.apply(&y)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.out_shape.clone()
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        let c = self.config;
        g.scope(&leaf, |g| {
            let w = g.node("VariableV2", "weights", &[]);
            let padding = if c.padding == Padding::Same { "SAME" } else { "VALID" };
            let mut out = g.node_with_attrs(
                "Conv2D",
                "Conv2D",
                &[input, &w],
                vec![
                    ("strides", AttrValue::ints(&[1, c.stride[0] as i64, c.stride[1] as i64, 1])),
                    ("dilations", AttrValue::ints(&[1, c.dilation[0] as i64, c.dilation[1] as i64, 1])),
                    ("padding", AttrValue::string(padding)),
                ],
            );
            if self.biases.is_some() {
                let b = g.node("VariableV2", "biases", &[]);
                out = g.node("BiasAdd", "BiasAdd", &[&out, &b]);
            }
            if let Some(bn) = &self.batch_norm {
                out = bn.graph(g, &out);
            }
            c.activation.graph(g, &out)
        })
    }
}
