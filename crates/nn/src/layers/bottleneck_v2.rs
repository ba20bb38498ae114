//! TF-slim's ResNet v2 (pre-activation) bottleneck unit (`bottleneck` in
//! `tf_slim/nets/resnet_v2.py`; He et al. 2016, "Identity Mappings in Deep
//! Residual Networks", figure 1(b)): batch norm + ReLU first (`preact`), then
//! 1x1 conv → 3x3 conv (each with batch norm + ReLU) → 1x1 conv with biases,
//! added to the shortcut, with no activation after the sum. Scopes are
//! TF-slim's (`…/bottleneck_v2/{preact,shortcut,conv1,conv2,conv3}`).
//!
//! The shortcut is a 1x1 conv with biases (no batch norm) of the *pre-activated*
//! input when the depth changes, else the raw input subsampled by `stride`. The
//! 3x3 conv carries the stride, as in v1 ([`super::bottleneck`]): SAME at stride
//! 1, `conv2d_same`'s explicit even padding and a VALID conv above.

use std::sync::Arc;

use candle_core::Tensor;
use ferroflow_dist::ReplicaSum;
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::layer::{Activation, Layer};
use crate::layers::batch_norm::{BatchNorm, BatchNormConfig};
use crate::layers::bottleneck::{check_unit, conv2d_same_3x3};
use crate::layers::conv2d::{Conv2d, Conv2dConfig};
use crate::ops::{self, Padding};
use crate::var_store::Scope;

/// A pre-activation bottleneck unit: `depth` outputs, `depth_bottleneck` inside, `stride`
/// on the 3x3 conv.
#[derive(Debug)]
pub struct BottleneckV2 {
    name: String,
    preact: BatchNorm,
    /// The 1x1 projection of the pre-activated input, or `None`: the input subsampled.
    projection: Option<Box<Conv2d>>,
    stride: usize,
    conv1: Conv2d,
    pad: Option<[usize; 4]>,
    conv2: Conv2d,
    conv3: Conv2d,
}

impl BottleneckV2 {
    /// The unit `scope/name` (e.g. `resnet_v2_50/block1/unit_1/bottleneck_v2`) for an
    /// input `[C, H, W]`.
    pub fn new(
        scope: &Scope,
        name: &str,
        in_shape: &[usize],
        depth: usize,
        depth_bottleneck: usize,
        stride: usize,
        bn: BatchNormConfig,
    ) -> Result<Self> {
        let s = scope.sub(name);
        let depth_in = check_unit(&s, in_shape, depth, depth_bottleneck, stride)?;
        let conv = |filters: usize, kernel: usize, stride: usize, padding: Padding, normalised: bool| Conv2dConfig {
            filters,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            padding,
            // TF-slim: a conv without normalizer_fn has biases.
            use_bias: !normalised,
            batch_norm: normalised.then_some(bn),
            activation: if normalised { Activation::Relu } else { Activation::Linear },
            ..Default::default()
        };
        let preact = BatchNorm::new(&s, "preact", in_shape, bn)?;
        let projection = if depth == depth_in {
            None
        } else {
            Some(Box::new(Conv2d::new(&s, "shortcut", in_shape, conv(depth, 1, stride, Padding::Same, false))?))
        };
        let conv1 = Conv2d::new(&s, "conv1", in_shape, conv(depth_bottleneck, 1, 1, Padding::Same, true))?;
        let (pad, mid, padding) = conv2d_same_3x3(&conv1.output_shape(), stride);
        let conv2 = Conv2d::new(&s, "conv2", &mid, conv(depth_bottleneck, 3, stride, padding, true))?;
        let conv3 = Conv2d::new(&s, "conv3", &conv2.output_shape(), conv(depth, 1, 1, Padding::Same, false))?;
        Ok(BottleneckV2 { name: s.prefix().to_string(), preact, projection, stride, conv1, pad, conv2, conv3 })
    }
}

impl Layer for BottleneckV2 {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, depth, ceil(H / stride), ceil(W / stride)]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let preact = ops::relu(&self.preact.forward_t(x, train)?)?; // [N, C, H, W]
        let shortcut = match (&self.projection, self.stride) {
            (Some(p), _) => p.forward_t(&preact, train)?, // [N, depth, H', W']
            (None, 1) => x.clone(),
            (None, s) => ops::max_pool2d(x, [1, 1], [s, s], Padding::Same)?, // [N, C, H', W']
        };
        let mut r = self.conv1.forward_t(&preact, train)?; // [N, depth_bottleneck, H, W]
        if let Some(pads) = self.pad {
            r = ops::zero_pad(&r, pads)?; // [N, depth_bottleneck, H + 2, W + 2]
        }
        let r = self.conv2.forward_t(&r, train)?; // [N, depth_bottleneck, H', W']
        let r = self.conv3.forward_t(&r, train)?; // [N, depth, H', W']
        (r + shortcut).map_err(NnError::candle(&self.name))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.conv3.output_shape()
    }

    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        self.preact.synchronise_batch_norm(replicas);
        for c in [&mut self.conv1, &mut self.conv2] {
            c.synchronise_batch_norm(replicas);
        }
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let bn = self.preact.graph(g, input);
            let preact = g.node("Relu", "preact_relu", &[&bn]);
            let s = match (&self.projection, self.stride) {
                (Some(p), _) => p.graph(g, &preact),
                (None, 1) => input.to_string(),
                (None, _) => g.node("MaxPool", "shortcut", &[input]),
            };
            let mut r = self.conv1.graph(g, &preact);
            if self.pad.is_some() {
                r = g.node("Pad", "Pad", &[&r]);
            }
            let r = self.conv2.graph(g, &r);
            let r = self.conv3.graph(g, &r);
            g.node("AddV2", "add", &[&r, &s])
        })
    }
}
