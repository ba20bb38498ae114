//! The basic residual block of CIFAR ResNets (He et al. 2016, "Deep Residual
//! Learning", section 4.2): two 3x3 conv + batch norm, with a 1x1 conv +
//! batch norm projection when the shape changes, added, then ReLU.

use std::sync::Arc;

use candle_core::Tensor;
use ferroflow_dist::ReplicaSum;
use tfrecord::GraphBuilder;

use crate::error::Result;
use crate::layer::{Activation, Layer};
use crate::layers::batch_norm::BatchNormConfig;
use crate::layers::conv2d::{Conv2d, Conv2dConfig, forward_chained, forward_residual};
use crate::ops;
use crate::var_store::Scope;

/// `conv1 → BN → ReLU → conv2 → BN`, plus the shortcut, then ReLU.
#[derive(Debug)]
pub struct Residual {
    name: String,
    conv1: Conv2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Residual {
    /// A block with `filters` outputs and `stride` on its first conv, for an input `[C, H, W]`.
    pub fn new(
        scope: &Scope,
        name: &str,
        in_shape: &[usize],
        filters: usize,
        stride: usize,
        bn: BatchNormConfig,
    ) -> Result<Self> {
        let s = scope.sub(name);
        let conv = |filters, kernel, stride, activation| Conv2dConfig {
            filters,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            use_bias: false,
            batch_norm: Some(bn),
            activation,
            ..Default::default()
        };
        let conv1 = Conv2d::new(&s, "conv1", in_shape, conv(filters, 3, stride, Activation::Relu))?;
        let conv2 = Conv2d::new(&s, "conv2", &conv1.output_shape(), conv(filters, 3, 1, Activation::Linear))?;
        let shortcut = if stride != 1 || in_shape.first() != Some(&filters) {
            Some(Conv2d::new(&s, "shortcut", in_shape, conv(filters, 1, stride, Activation::Linear))?)
        } else {
            None
        };
        Ok(Residual { name: s.prefix().to_string(), conv1, conv2, shortcut })
    }
}

impl Layer for Residual {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, filters, H / stride, W / stride]` (SAME padding).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if self.shortcut.is_none() {
            return forward_residual(&[&self.conv1, &self.conv2], x, train); // [N, C, H, W]
        }
        let branch = forward_chained(&[&self.conv1, &self.conv2], x, train)?; // [N, filters, H', W']
        let shortcut = match &self.shortcut {
            Some(s) => s.forward_t(x, train)?,
            None => x.clone(),
        };
        ops::add_relu(&branch, &shortcut)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.conv2.output_shape()
    }

    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        self.conv1.synchronise_batch_norm(replicas);
        self.conv2.synchronise_batch_norm(replicas);
        if let Some(s) = &mut self.shortcut {
            s.synchronise_batch_norm(replicas);
        }
    }

    fn rng_states(&self) -> Vec<(String, [u64; 4])> {
        let mut states = self.conv1.rng_states();
        states.extend(self.conv2.rng_states());
        states.extend(self.shortcut.iter().flat_map(|s| s.rng_states()));
        states
    }

    fn set_rng_state(&self, name: &str, state: [u64; 4]) -> bool {
        self.conv1.set_rng_state(name, state)
            || self.conv2.set_rng_state(name, state)
            || self.shortcut.as_ref().is_some_and(|s| s.set_rng_state(name, state))
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let a = self.conv1.graph(g, input);
            let b = self.conv2.graph(g, &a);
            let s = match &self.shortcut {
                Some(sc) => sc.graph(g, input),
                None => input.to_string(),
            };
            let add = g.node("AddV2", "add", &[&b, &s]);
            g.node("Relu", "Relu", &[&add])
        })
    }
}
