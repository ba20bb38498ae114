//! A fully connected layer with TF's kernel layout `[in, units]`.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::init::Init;
use crate::layer::{Activation, Layer};
use crate::ops;
use crate::var_store::{Param, Scope};

/// Dense settings. Defaults: a bias, no activation, Glorot-uniform weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseConfig {
    /// Output features.
    pub units: usize,
    /// Add a bias.
    pub use_bias: bool,
    /// Activation.
    pub activation: Activation,
    /// Weight initializer.
    pub init: Init,
}

impl Default for DenseConfig {
    fn default() -> Self {
        DenseConfig { units: 0, use_bias: true, activation: Activation::Linear, init: Init::GlorotUniform }
    }
}

/// `scope/name/weights` `[in, units]` and `scope/name/biases` `[units]`.
#[derive(Debug)]
pub struct Dense {
    name: String,
    weights: Param,
    biases: Option<Param>,
    config: DenseConfig,
}

impl Dense {
    /// Creates the layer for an input of shape `[in]`.
    pub fn new(scope: &Scope, name: &str, in_shape: &[usize], config: DenseConfig) -> Result<Self> {
        let full = scope.full_name(name);
        let &[fan_in] = in_shape else {
            return Err(NnError::shape(
                full,
                format!("expects a flat [features] input, got {in_shape:?} (add a flatten layer before it)"),
            ));
        };
        if config.units == 0 {
            return Err(NnError::Config { context: full, reason: "units must be at least 1".into() });
        }
        let s = scope.sub(name);
        let weights = s.get_param("weights", &[fan_in, config.units], config.init)?;
        let biases = if config.use_bias { Some(s.get_param("biases", &[config.units], Init::Zeros)?) } else { None };
        Ok(Dense { name: full, weights, biases, config })
    }
}

impl Layer for Dense {
    /// # Shapes
    /// `[N, in]` → `[N, units]`.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let biases = self.biases.as_ref().map(Param::tensor);
        let y = ops::dense(x, &self.weights.tensor(), biases.as_ref())
            .map_err(|e| NnError::shape(&self.name, e.to_string()))?; // [N, units]
        self.config.activation.apply(&y)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn output_shape(&self) -> Vec<usize> {
        vec![self.config.units]
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let w = g.node("VariableV2", "weights", &[]);
            let mut out = g.node("MatMul", "MatMul", &[input, &w]);
            if self.biases.is_some() {
                let b = g.node("VariableV2", "biases", &[]);
                out = g.node("BiasAdd", "BiasAdd", &[&out, &b]);
            }
            self.config.activation.graph(g, &out)
        })
    }
}
