//! A built model: its layers in order over a variable store.

use std::sync::Arc;

use candle_core::Tensor;
use ferroflow_dist::ReplicaSum;
use tfrecord::GraphBuilder;
use tfrecord::proto::graph::GraphDef;

use crate::error::{NnError, Result};
use crate::layer::Layer;
use crate::ops;
use crate::var_store::VarStore;

/// A model: layers applied in order. Build one with
/// [`ModelSpec::build`](crate::ModelSpec::build) or from the zoo.
#[derive(Debug)]
pub struct Model {
    name: String,
    input_shape: [usize; 3],
    layers: Vec<Box<dyn Layer>>,
    store: VarStore,
}

/// One row of [`Model::summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSummary {
    /// Scope name.
    pub name: String,
    /// Output shape without the batch dimension.
    pub output_shape: Vec<usize>,
    /// Trainable parameters under the layer's scope.
    pub parameters: usize,
}

impl Model {
    /// Assembles a model (see [`ModelSpec::build`](crate::ModelSpec::build)).
    pub fn new(name: String, input_shape: [usize; 3], layers: Vec<Box<dyn Layer>>, store: VarStore) -> Self {
        Model { name, input_shape, layers, store }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Input `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Output shape without the batch dimension (`[classes]` for classifiers).
    pub fn output_shape(&self) -> Vec<usize> {
        self.layers.last().map_or(self.input_shape.to_vec(), |l| l.output_shape())
    }

    /// The variables.
    pub fn store(&self) -> &VarStore {
        &self.store
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Training batches' batch norms normalise with the statistics of every replica's
    /// batch together, summed through `replicas` (`model.sync_batch_norm`; see
    /// [`ops::batch_norm_train_across`]). Every replica must then run the same training
    /// forward and backward passes in the same order. Evaluation is unchanged (moving
    /// statistics).
    pub fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        for layer in &mut self.layers {
            layer.synchronise_batch_norm(replicas);
        }
    }

    /// The forward pass in training (`train = true`: batch statistics,
    /// dropout, moving-statistics updates) or evaluation mode.
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]` (the model's input shape) → `[N, …output_shape]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let want: Vec<usize> = self.input_shape.to_vec();
        if x.rank() != 4 || x.dims()[1..] != want[..] {
            return Err(NnError::shape(
                format!("model {:?}", self.name),
                format!("expected input [N, {}, {}, {}] (NCHW), got {:?}", want[0], want[1], want[2], x.dims()),
            ));
        }
        let mut y = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            // Two or more conv → BN (→ ReLU) (→ max-pool) blocks in a row, training: one op
            // (ops::conv2d_batch_norm_chain_train), so the activations between them are
            // never autograd tensors.
            let (blocks, owners, used) = self.chain_at(i, train);
            if blocks.len() >= 2 {
                let (out, stats) = ops::conv2d_batch_norm_chain_train(&y, &blocks).map_err(|e| {
                    let names: Vec<&str> = owners.iter().map(|l| l.name()).collect();
                    NnError::shape(format!("layers {}", names.join(", ")), e.to_string())
                })?;
                let batch = y.dim(0).map_err(NnError::candle(format!("model {:?}", self.name)))?;
                for (layer, (mean, variance)) in owners.iter().zip(stats) {
                    layer.chain_block_done(&mean, variance, batch)?;
                }
                y = out;
                i += used;
                continue;
            }
            let layer = &self.layers[i];
            // A max-pool after a layer that can fuse it (conv → BN → ReLU in training on
            // the CPU) runs inside that layer's op; the pool layer is then skipped.
            if let Some(pool) = self.layers.get(i + 1).and_then(|next| next.max_pool_window())
                && let Some(fused) = layer.forward_t_max_pool(&y, pool, train)
            {
                y = fused?;
                i += 2;
                continue;
            }
            y = layer.forward_t(&y, train)?;
            i += 1;
        }
        Ok(y)
    }

    /// The chain of conv → BN blocks starting at layer `start` (each block's layer and a
    /// max-pool layer after a ReLU block): the blocks, their layers, and how many layers
    /// they span.
    fn chain_at(&self, start: usize, train: bool) -> (Vec<ops::ConvBnBlock>, Vec<&dyn Layer>, usize) {
        let (mut blocks, mut owners, mut i) = (Vec::new(), Vec::new(), start);
        while let Some(mut block) = self.layers.get(i).and_then(|l| l.chain_block(train)) {
            owners.push(self.layers[i].as_ref());
            i += 1;
            if block.relu
                && let Some(pool) = self.layers.get(i).and_then(|l| l.max_pool_window())
            {
                block.pool = Some(pool);
                i += 1;
            }
            blocks.push(block);
        }
        (blocks, owners, i - start)
    }

    /// The states of every random stream of the model (dropout masks), by
    /// stream name, for checkpoints.
    pub fn rng_states(&self) -> Vec<(String, [u64; 4])> {
        self.layers.iter().flat_map(|l| l.rng_states()).collect()
    }

    /// Restores the random stream `name`; an unknown name is an error.
    pub fn set_rng_state(&self, name: &str, state: [u64; 4]) -> Result<()> {
        if self.layers.iter().any(|l| l.set_rng_state(name, state)) {
            Ok(())
        } else {
            Err(NnError::Config {
                context: format!("model {:?}", self.name),
                reason: format!("has no random stream named {name:?} (the checkpoint is from another model?)"),
            })
        }
    }

    /// Per-layer output shapes and trainable parameter counts.
    pub fn summary(&self) -> Vec<LayerSummary> {
        let vars = self.store.trainable_variables();
        self.layers
            .iter()
            .map(|l| {
                let prefix = format!("{}/", l.name());
                LayerSummary {
                    name: l.name().to_string(),
                    output_shape: l.output_shape(),
                    parameters: vars.iter().filter(|v| v.name.starts_with(&prefix)).map(|v| v.var.elem_count()).sum(),
                }
            })
            .collect()
    }

    /// The model as a TensorFlow `GraphDef` whose node names carry the
    /// layers' name scopes, for TensorBoard's graph view.
    pub fn graph_def(&self) -> GraphDef {
        let mut g = GraphBuilder::new();
        let mut out = g.node("Placeholder", "input", &[]);
        for layer in &self.layers {
            out = layer.graph(&mut g, &out);
        }
        g.node("Identity", "output", &[&out]);
        g.build()
    }
}
