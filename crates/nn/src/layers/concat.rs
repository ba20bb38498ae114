//! Branches over the same input, concatenated along the channels
//! (`tf.concat(axis=3, values=[branch_0, …])` of TF-slim's Inception modules).
//! Each branch is a chain of layers; a branch may itself hold a `Concat`
//! (Inception v3's `Mixed_7b`, whose branches fork into a 1x3 and a 3x1 conv).
//! The layers carry their own full names (e.g.
//! `InceptionV3/Mixed_5b/Branch_1/Conv2d_0b_5x5`), so the variables are TF-slim's.

use std::sync::Arc;

use candle_core::Tensor;
use ferroflow_dist::ReplicaSum;
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::layer::Layer;

/// The branches of a module, concatenated.
#[derive(Debug)]
pub struct Concat {
    name: String,
    branches: Vec<Vec<Box<dyn Layer>>>,
    out_shape: Vec<usize>,
}

impl Concat {
    /// Concatenates `branches` (built for the input `[C, H, W]`), which must be
    /// non-empty and end in the same `[H, W]`.
    pub fn new(name: &str, in_shape: &[usize], branches: Vec<Vec<Box<dyn Layer>>>) -> Result<Self> {
        if branches.is_empty() {
            return Err(NnError::Config { context: name.to_string(), reason: "has no branches".into() });
        }
        let mut shapes = Vec::with_capacity(branches.len());
        for branch in &branches {
            shapes.push(branch.last().map_or_else(|| in_shape.to_vec(), |l| l.output_shape()));
        }
        let first = &shapes[0];
        if first.len() != 3 || shapes.iter().any(|s| s.len() != 3 || s[1..] != first[1..]) {
            return Err(NnError::shape(
                name,
                format!("its branches must end in [C, H, W] maps of one size to be concatenated, got {shapes:?}"),
            ));
        }
        let channels = shapes.iter().map(|s| s[0]).sum();
        Ok(Concat { name: name.to_string(), branches, out_shape: vec![channels, first[1], first[2]] })
    }

    fn layers(&self) -> impl Iterator<Item = &Box<dyn Layer>> {
        self.branches.iter().flatten()
    }
}

impl Layer for Concat {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, Σ branch channels, H', W']`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut outputs = Vec::with_capacity(self.branches.len());
        for branch in &self.branches {
            let mut y = x.clone();
            for layer in branch {
                y = layer.forward_t(&y, train)?; // [N, C_b, H', W']
            }
            outputs.push(y);
        }
        Tensor::cat(&outputs, 1).map_err(NnError::candle(&self.name)) // [N, Σ C_b, H', W']
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        self.out_shape.clone()
    }

    fn rng_states(&self) -> Vec<(String, [u64; 4])> {
        self.layers().flat_map(|l| l.rng_states()).collect()
    }

    fn set_rng_state(&self, name: &str, state: [u64; 4]) -> bool {
        self.layers().any(|l| l.set_rng_state(name, state))
    }

    fn branches(&self) -> Option<&[Vec<Box<dyn Layer>>]> {
        Some(&self.branches)
    }

    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        for layer in self.branches.iter_mut().flatten() {
            layer.synchronise_batch_norm(replicas);
        }
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let mut outputs = Vec::with_capacity(self.branches.len());
            for (i, branch) in self.branches.iter().enumerate() {
                let out = g.scope(&format!("Branch_{i}"), |g| {
                    branch.iter().fold(input.to_string(), |prev, layer| layer.graph(g, &prev))
                });
                outputs.push(out);
            }
            let inputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
            g.node("ConcatV2", "concat", &inputs)
        })
    }
}
