//! The layer interface: an explicit train/eval forward, shape inference, and
//! a description of itself for TensorBoard's graph view.

use std::sync::Arc;

use candle_core::Tensor;
use ferroflow_dist::ReplicaSum;
use serde::{Deserialize, Serialize};
use tfrecord::GraphBuilder;

use crate::error::Result;
use crate::ops;

/// A layer of a model. Implementations document their `# Shapes`.
pub trait Layer: Send + Sync + std::fmt::Debug {
    /// The forward pass; `train` selects batch statistics, dropout, and
    /// moving-statistics updates (candle's `forward_t` convention).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// The layer's name (its variable scope).
    fn name(&self) -> &str;

    /// The output shape (without the batch dimension) for an input shape.
    fn output_shape(&self) -> Vec<usize>;

    /// Adds the layer's ops to `g` under its name scope, reading `input`;
    /// returns the name of its output node.
    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String;

    /// The states of the layer's random streams (dropout masks), by stream
    /// name, so a checkpoint can resume them. Most layers have none.
    fn rng_states(&self) -> Vec<(String, [u64; 4])> {
        Vec::new()
    }

    /// Restores the stream `name` (from [`rng_states`](Self::rng_states));
    /// false when the layer has no such stream.
    fn set_rng_state(&self, name: &str, state: [u64; 4]) -> bool {
        let _ = (name, state);
        false
    }

    /// A layer of parallel branches (a `concat`): its branches' layers, in order, for
    /// exporters that must walk inside it. `None` for every other layer.
    fn branches(&self) -> Option<&[Vec<Box<dyn Layer>>]> {
        None
    }

    /// Makes the layer's batch norms (its own, or its sub-layers') normalise training
    /// batches with the statistics of every replica's batch together, summed through
    /// `replicas` (`model.sync_batch_norm`); they then leave the fused conv → BN kernels.
    /// Most layers have no batch norm.
    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        let _ = replicas;
    }

    /// This layer as one block of a chain of conv → batch norm (→ ReLU) blocks that
    /// [`Model::forward_t`](crate::Model::forward_t) runs as one op in training (see
    /// [`ops::conv2d_batch_norm_chain_train`]; the model fills in a following max-pool);
    /// `None` for every other layer, and outside training. A layer that returns `Some`
    /// gets its block's batch statistics through
    /// [`chain_block_done`](Self::chain_block_done).
    fn chain_block(&self, train: bool) -> Option<ops::ConvBnBlock> {
        let _ = train;
        None
    }

    /// After a chain ran this layer's block: its batch statistics (of the conv output,
    /// `batch` images), for the moving statistics.
    ///
    /// # Shapes
    /// `mean`, `variance`: `[C_out]`.
    fn chain_block_done(&self, mean: &Tensor, variance: Tensor, batch: usize) -> Result<()> {
        let _ = (mean, variance, batch);
        Ok(())
    }

    /// This layer's window when it is a max-pool, so that the layer before it may fuse it
    /// (see [`forward_t_max_pool`](Self::forward_t_max_pool)). Most layers are not.
    fn max_pool_window(&self) -> Option<ops::MaxPoolWindow> {
        None
    }

    /// The forward pass followed by the max-pool `pool`, as one fused op, when the layer
    /// has one for this input and mode (a conv → batch norm → ReLU block training on the
    /// CPU: the full-size activation and its gradient never become tensors); `None` when
    /// it has not, and the caller runs the layer and then the pool. `Some` equals
    /// `max_pool(self.forward_t(x, train))` up to rounding.
    ///
    /// # Shapes
    /// As [`forward_t`](Self::forward_t), then the pool's output size.
    fn forward_t_max_pool(&self, x: &Tensor, pool: ops::MaxPoolWindow, train: bool) -> Option<Result<Tensor>> {
        let _ = (x, pool, train);
        None
    }
}

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Identity.
    #[default]
    Linear,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
    /// x for x > 0, else 0.2·x (TF's default alpha).
    LeakyRelu,
    /// 1 / (1 + e^-x).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// Softmax over the last axis.
    Softmax,
}

impl Activation {
    /// Applies it.
    ///
    /// # Shapes
    /// Any shape → the same shape.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => ops::relu(x),
            Activation::Relu6 => ops::relu6(x),
            Activation::LeakyRelu => ops::leaky_relu(x, 0.2),
            Activation::Sigmoid => ops::sigmoid(x),
            Activation::Tanh => ops::tanh(x),
            Activation::Softmax => ops::softmax(x, x.rank().saturating_sub(1)),
        }
    }

    /// TF's op name (`Relu`, `Relu6`, `LeakyRelu`, …), `None` for linear.
    pub fn tf_op(self) -> Option<&'static str> {
        match self {
            Activation::Linear => None,
            Activation::Relu => Some("Relu"),
            Activation::Relu6 => Some("Relu6"),
            Activation::LeakyRelu => Some("LeakyRelu"),
            Activation::Sigmoid => Some("Sigmoid"),
            Activation::Tanh => Some("Tanh"),
            Activation::Softmax => Some("Softmax"),
        }
    }

    /// Adds the activation node after `input` (nothing for linear).
    pub fn graph(self, g: &mut GraphBuilder, input: &str) -> String {
        match self.tf_op() {
            Some(op) => g.node(op, op, &[input]),
            None => input.to_string(),
        }
    }
}
