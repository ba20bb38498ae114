//! TF-slim's ResNet v1 bottleneck unit (`bottleneck` in
//! `tf_slim/nets/resnet_v1.py`; He et al. 2016, "Deep Residual Learning",
//! figure 5 right): 1x1 conv → 3x3 conv → 1x1 conv, each followed by batch
//! norm (ReLU after the first two), added to the shortcut, then ReLU. The
//! scopes are TF-slim's (`…/bottleneck_v1/{shortcut,conv1,conv2,conv3}`), so
//! TF-slim's `resnet_v1_*.ckpt` variables load by name.
//!
//! The shortcut is a 1x1 conv + batch norm (stride `stride`) when the depth
//! changes, else the input subsampled by `stride` (`resnet_utils.subsample`: a
//! 1x1 max-pool). The 3x3 conv carries the stride: with stride 1 it is SAME;
//! with a larger stride it is `resnet_utils.conv2d_same`, an explicit even
//! split of the padding (`(k - 1) / 2` before, the rest after) and a VALID conv,
//! which differs from a strided SAME conv on even sizes.

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

/// The shortcut branch.
#[derive(Debug)]
enum Shortcut {
    /// 1x1 conv + batch norm, linear.
    Projection(Box<Conv2d>),
    /// The input, subsampled by this stride (1: the input itself).
    Subsample(usize),
}

/// A bottleneck unit: `depth` outputs, `depth_bottleneck` inside, `stride` on the 3x3 conv.
#[derive(Debug)]
pub struct Bottleneck {
    name: String,
    shortcut: Shortcut,
    conv1: Conv2d,
    /// `conv2d_same`'s explicit padding before a strided conv2.
    pad: Option<[usize; 4]>,
    conv2: Conv2d,
    conv3: Conv2d,
}

impl Bottleneck {
    /// The unit `scope/name` (e.g. `resnet_v1_50/block1/unit_1/bottleneck_v1`) for an
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
        let conv =
            |filters: usize, kernel: usize, stride: usize, padding: Padding, activation: Activation| Conv2dConfig {
                filters,
                kernel: [kernel, kernel],
                stride: [stride, stride],
                padding,
                use_bias: false,
                batch_norm: Some(bn),
                activation,
                ..Default::default()
            };
        let (relu, linear) = (Activation::Relu, Activation::Linear);
        let shortcut = if depth == depth_in {
            Shortcut::Subsample(stride)
        } else {
            Shortcut::Projection(Box::new(Conv2d::new(
                &s,
                "shortcut",
                in_shape,
                conv(depth, 1, stride, Padding::Same, linear),
            )?))
        };
        let conv1 = Conv2d::new(&s, "conv1", in_shape, conv(depth_bottleneck, 1, 1, Padding::Same, relu))?;
        let (pad, mid, padding) = conv2d_same_3x3(&conv1.output_shape(), stride);
        let conv2 = Conv2d::new(&s, "conv2", &mid, conv(depth_bottleneck, 3, stride, padding, relu))?;
        let conv3 = Conv2d::new(&s, "conv3", &conv2.output_shape(), conv(depth, 1, 1, Padding::Same, linear))?;
        if let Shortcut::Projection(p) = &shortcut
            && p.output_shape() != conv3.output_shape()
        {
            return Err(NnError::shape(
                s.prefix(),
                format!("shortcut {:?} and residual {:?} differ", p.output_shape(), conv3.output_shape()),
            ));
        }
        Ok(Bottleneck { name: s.prefix().to_string(), shortcut, conv1, pad, conv2, conv3 })
    }
}

/// Checks a unit's settings and input `[C, H, W]`; returns the input depth `C`.
pub(crate) fn check_unit(
    s: &Scope,
    in_shape: &[usize],
    depth: usize,
    depth_bottleneck: usize,
    stride: usize,
) -> Result<usize> {
    let Some(&depth_in) = in_shape.first() else {
        return Err(NnError::shape(s.prefix(), format!("expects a [C, H, W] input, got {in_shape:?}")));
    };
    if stride == 0 || depth == 0 || depth_bottleneck == 0 {
        return Err(NnError::Config {
            context: s.prefix().to_string(),
            reason: format!("depth {depth}, depth_bottleneck {depth_bottleneck} and stride {stride} must be positive"),
        });
    }
    Ok(depth_in)
}

/// TF-slim's `conv2d_same` for a unit's 3x3 conv on an input `[C, H, W]`: at stride 1
/// no padding and a SAME conv; above, the explicit padding (kernel 3: one pixel on each
/// side), the padded shape, and a VALID conv.
pub fn conv2d_same_3x3(shape: &[usize], stride: usize) -> (Option<[usize; 4]>, Vec<usize>, Padding) {
    if stride > 1 {
        (Some([1, 1, 1, 1]), vec![shape[0], shape[1] + 2, shape[2] + 2], Padding::Valid)
    } else {
        (None, shape.to_vec(), Padding::Same)
    }
}

impl Layer for Bottleneck {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, depth, ceil(H / stride), ceil(W / stride)]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shortcut = match &self.shortcut {
            Shortcut::Projection(p) => p.forward_t(x, train)?, // [N, depth, H', W']
            Shortcut::Subsample(1) => x.clone(),
            Shortcut::Subsample(s) => ops::max_pool2d(x, [1, 1], [*s, *s], Padding::Same)?, // [N, C, H', W']
        };
        let mut r = self.conv1.forward_t(x, train)?; // [N, depth_bottleneck, H, W]
        if let Some(pads) = self.pad {
            r = ops::zero_pad(&r, pads)?; // [N, depth_bottleneck, H + 2, W + 2]
        }
        let r = self.conv2.forward_t(&r, train)?; // [N, depth_bottleneck, H', W']
        let r = self.conv3.forward_t(&r, train)?; // [N, depth, H', W']
        ops::add_relu(&r, &shortcut) // [N, depth, H', W']
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.conv3.output_shape()
    }

    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        if let Shortcut::Projection(p) = &mut self.shortcut {
            p.synchronise_batch_norm(replicas);
        }
        for c in [&mut self.conv1, &mut self.conv2, &mut self.conv3] {
            c.synchronise_batch_norm(replicas);
        }
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let s = match &self.shortcut {
                Shortcut::Projection(p) => p.graph(g, input),
                Shortcut::Subsample(1) => input.to_string(),
                Shortcut::Subsample(_) => g.node("MaxPool", "shortcut", &[input]),
            };
            let mut r = self.conv1.graph(g, input);
            if self.pad.is_some() {
                r = g.node("Pad", "Pad", &[&r]);
            }
            let r = self.conv2.graph(g, &r);
            let r = self.conv3.graph(g, &r);
            let add = g.node("AddV2", "add", &[&r, &s]);
            g.node("Relu", "Relu", &[&add])
        })
    }
}
