//! Max and average pooling with TF's SAME/VALID semantics (average pooling
//! with SAME excludes the padding from the count).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use tfrecord::GraphBuilder;
use tfrecord::proto::graph::AttrValue;

use crate::error::{NnError, Result};
use crate::layer::Layer;
use crate::ops::{self, Padding};
use crate::var_store::Scope;

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// `tf.nn.max_pool2d`.
    Max,
    /// `tf.nn.avg_pool2d`.
    Avg,
}

/// A pooling layer (no variables).
#[derive(Debug)]
pub struct Pool2d {
    name: String,
    kind: PoolKind,
    pool: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    out_shape: Vec<usize>,
}

impl Pool2d {
    /// A pooling layer for an input of shape `[C, H, W]`.
    pub fn new(
        scope: &Scope,
        name: &str,
        in_shape: &[usize],
        kind: PoolKind,
        pool: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    ) -> Result<Self> {
        let full = scope.full_name(name);
        let &[c, h, w] = in_shape else {
            return Err(NnError::shape(full, format!("expects a [C, H, W] input, got {in_shape:?}")));
        };
        let err = |e: NnError| NnError::shape(&full, format!("input {c}x{h}x{w}, window {pool:?}: {e}"));
        let oh = ops::output_size(h, pool[0], stride[0], 1, padding).map_err(err)?;
        let ow = ops::output_size(w, pool[1], stride[1], 1, padding).map_err(err)?;
        Ok(Pool2d { name: full, kind, pool, stride, padding, out_shape: vec![c, oh, ow] })
    }
}

impl Layer for Pool2d {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H', W']`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let y = match self.kind {
            PoolKind::Max => ops::max_pool2d(x, self.pool, self.stride, self.padding),
            PoolKind::Avg => ops::avg_pool2d(x, self.pool, self.stride, self.padding),
        };
        y.map_err(|e| NnError::shape(&self.name, e.to_string()))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.out_shape.clone()
    }

    fn max_pool_window(&self) -> Option<ops::MaxPoolWindow> {
        (self.kind == PoolKind::Max).then_some(ops::MaxPoolWindow {
            ksize: self.pool,
            stride: self.stride,
            padding: self.padding,
        })
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        let op = match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => "AvgPool",
        };
        let padding = if self.padding == Padding::Same { "SAME" } else { "VALID" };
        g.scope(&leaf, |g| {
            g.node_with_attrs(
                op,
                op,
                &[input],
                vec![
                    ("ksize", AttrValue::ints(&[1, self.pool[0] as i64, self.pool[1] as i64, 1])),
                    ("strides", AttrValue::ints(&[1, self.stride[0] as i64, self.stride[1] as i64, 1])),
                    ("padding", AttrValue::string(padding)),
                ],
            )
        })
    }
}
