//! TF-slim's Inception v1 module (the `Mixed_*` blocks of `inception_v1_base` in
//! `tf_slim/nets/inception_v1.py`; Szegedy et al. 2014, "Going Deeper with
//! Convolutions"): four branches over the same input, concatenated along the
//! channels: a 1x1 conv; a 1x1 then a 3x3 conv; a 1x1 then a 3x3 conv (TF-slim
//! uses 3x3 where the paper has 5x5); a 3x3 stride-1 SAME max-pool then a 1x1
//! conv. Every conv is SAME with batch norm and ReLU. Scopes are TF-slim's
//! (`Branch_0/Conv2d_0a_1x1`, `Branch_1/Conv2d_0b_3x3`, …, `Branch_3/Conv2d_0b_1x1`).

use std::sync::Arc;

use candle_core::Tensor;
use ferroflow_dist::ReplicaSum;
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::layer::{Activation, Layer};
use crate::layers::batch_norm::BatchNormConfig;
use crate::layers::conv2d::{Conv2d, Conv2dConfig};
use crate::ops::{self, Padding};
use crate::var_store::Scope;

/// The filters of a module's six convs, in TF-slim's order: branch 0's 1x1; branch 1's
/// 1x1 and 3x3; branch 2's 1x1 and 3x3; branch 3's 1x1 after the pool.
pub type InceptionV1Filters = [usize; 6];

/// One `Mixed_*` module.
#[derive(Debug)]
pub struct InceptionV1Module {
    name: String,
    convs: [Conv2d; 6],
}

impl InceptionV1Module {
    /// The module `scope/name` (e.g. `InceptionV1/Mixed_3b`) for an input `[C, H, W]`.
    /// `branch_2_3x3` names branch 2's 3x3 conv (`Conv2d_0b_3x3`; TF-slim's `Mixed_5b`
    /// calls it `Conv2d_0a_3x3`).
    pub fn new(
        scope: &Scope,
        name: &str,
        in_shape: &[usize],
        filters: InceptionV1Filters,
        bn: BatchNormConfig,
        branch_2_3x3: &str,
    ) -> Result<Self> {
        let s = scope.sub(name);
        if filters.contains(&0) {
            return Err(NnError::Config {
                context: s.prefix().to_string(),
                reason: format!("every branch's filters must be positive, got {filters:?}"),
            });
        }
        let conv = |branch: &str, conv: &str, filters: usize, kernel: usize, shape: &[usize]| {
            let config = Conv2dConfig {
                filters,
                kernel: [kernel, kernel],
                padding: Padding::Same,
                use_bias: false,
                batch_norm: Some(bn),
                activation: Activation::Relu,
                ..Default::default()
            };
            Conv2d::new(&s.sub(branch), conv, shape, config)
        };
        let b0 = conv("Branch_0", "Conv2d_0a_1x1", filters[0], 1, in_shape)?;
        let b1a = conv("Branch_1", "Conv2d_0a_1x1", filters[1], 1, in_shape)?;
        let b1b = conv("Branch_1", "Conv2d_0b_3x3", filters[2], 3, &b1a.output_shape())?;
        let b2a = conv("Branch_2", "Conv2d_0a_1x1", filters[3], 1, in_shape)?;
        let b2b = conv("Branch_2", branch_2_3x3, filters[4], 3, &b2a.output_shape())?;
        // The stride-1 SAME pool keeps the input's shape.
        let b3 = conv("Branch_3", "Conv2d_0b_1x1", filters[5], 1, in_shape)?;
        Ok(InceptionV1Module { name: s.prefix().to_string(), convs: [b0, b1a, b1b, b2a, b2b, b3] })
    }
}

impl Layer for InceptionV1Module {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, f0 + f2 + f4 + f5, H, W]` (the branches' outputs concatenated).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let [b0, b1a, b1b, b2a, b2b, b3] = &self.convs;
        let y0 = b0.forward_t(x, train)?; // [N, f0, H, W]
        let y1 = b1b.forward_t(&b1a.forward_t(x, train)?, train)?; // [N, f2, H, W]
        let y2 = b2b.forward_t(&b2a.forward_t(x, train)?, train)?; // [N, f4, H, W]
        let pooled = ops::max_pool2d(x, [3, 3], [1, 1], Padding::Same)?; // [N, C, H, W]
        let y3 = b3.forward_t(&pooled, train)?; // [N, f5, H, W]
        Tensor::cat(&[y0, y1, y2, y3], 1).map_err(NnError::candle(&self.name))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        let [b0, _, b1b, _, b2b, b3] = &self.convs;
        let mut shape = b0.output_shape();
        shape[0] = [b0, b1b, b2b, b3].iter().map(|c| c.output_shape()[0]).sum();
        shape
    }

    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        for c in &mut self.convs {
            c.synchronise_batch_norm(replicas);
        }
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let [b0, b1a, b1b, b2a, b2b, b3] = &self.convs;
            let y0 = b0.graph(g, input);
            let y1 = b1a.graph(g, input);
            let y1 = b1b.graph(g, &y1);
            let y2 = b2a.graph(g, input);
            let y2 = b2b.graph(g, &y2);
            let pooled = g.node("MaxPool", "Branch_3/MaxPool_0a_3x3", &[input]);
            let y3 = b3.graph(g, &pooled);
            g.node("ConcatV2", "concat", &[&y0, &y1, &y2, &y3])
        })
    }
}
