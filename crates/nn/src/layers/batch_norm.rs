//! Batch normalization with TF1 fused (default) or Keras semantics; the
//! moving statistics are non-trainable variables updated in the training
//! forward pass itself, so there are no separate update ops to forget.

use std::sync::Arc;

use candle_core::{Tensor, Var};
use ferroflow_dist::ReplicaSum;
use serde::{Deserialize, Serialize};
use tfrecord::GraphBuilder;

use crate::error::{NnError, Result};
use crate::init::Init;
use crate::layer::Layer;
use crate::ops;
use crate::var_store::{Param, Scope, grad_enabled};

/// Which variance the moving-variance update uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormSemantics {
    /// `tf.compat.v1.layers.batch_normalization(fused=True)`: normalise with
    /// the biased batch variance, update the moving variance with the
    /// unbiased one (n / (n - 1)).
    #[default]
    Tf1,
    /// Keras `BatchNormalization`: the biased variance for both.
    Keras,
}

/// Batch-norm settings. Defaults are TF's: momentum (decay) 0.99, epsilon
/// 0.001 (`tf.compat.v1.layers.batch_normalization`), TF1 semantics, with
/// gamma and beta.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchNormConfig {
    /// Moving-average decay.
    pub momentum: f64,
    /// Added to the variance.
    pub epsilon: f64,
    /// TF1 or Keras moving-variance update.
    pub semantics: BatchNormSemantics,
    /// A learned scale `gamma` (TF's `scale`, default true). TF-slim's
    /// `batch_norm` defaults to false, as its Inception nets use it: no
    /// `gamma` variable, the normalised values times 1.
    pub scale: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig { momentum: 0.99, epsilon: 0.001, semantics: BatchNormSemantics::Tf1, scale: true }
    }
}

/// A batch-norm layer over the channel axis of NCHW (or the features of NC) input.
#[derive(Debug)]
pub struct BatchNorm {
    name: String,
    /// The `gamma` variable, or `None` without `scale` (then constant `ones`).
    gamma: Option<Param>,
    ones: Tensor,
    beta: Param,
    moving_mean: Var,
    moving_variance: Var,
    config: BatchNormConfig,
    shape: Vec<usize>,
    /// Synchronised over these replicas in training (`model.sync_batch_norm`).
    replicas: Option<Arc<dyn ReplicaSum>>,
}

impl BatchNorm {
    /// Creates `scope/name/{gamma,beta,moving_mean,moving_variance}` for an
    /// input of `shape` (`[C, H, W]` or `[C]`).
    pub fn new(scope: &Scope, name: &str, shape: &[usize], config: BatchNormConfig) -> Result<Self> {
        let Some(&channels) = shape.first() else {
            return Err(NnError::shape(scope.full_name(name), "batch norm needs an input with a channel axis"));
        };
        if !(0.0..1.0).contains(&config.momentum) || config.epsilon <= 0.0 {
            return Err(NnError::Config {
                context: scope.full_name(name),
                reason: format!(
                    "momentum must be in [0, 1) and epsilon > 0, got {} and {}",
                    config.momentum, config.epsilon
                ),
            });
        }
        let s = scope.sub(name);
        Ok(BatchNorm {
            name: s.prefix().to_string(),
            gamma: if config.scale { Some(s.get_param("gamma", &[channels], Init::Ones)?) } else { None },
            ones: Tensor::ones(channels, candle_core::DType::F32, s.store().device())
                .map_err(NnError::candle(s.prefix()))?,
            beta: s.get_param("beta", &[channels], Init::Zeros)?,
            moving_mean: s.get_variable("moving_mean", &[channels], Init::Zeros, false)?,
            moving_variance: s.get_variable("moving_variance", &[channels], Init::Ones, false)?,
            config,
            shape: shape.to_vec(),
            replicas: None,
        })
    }
}

impl BatchNorm {
    /// Whether training batches are normalised over every replica's batch.
    pub(crate) fn synchronised(&self) -> bool {
        self.replicas.is_some()
    }

    /// `gamma`, `beta` and epsilon, for a layer that fuses the normalisation into its own
    /// op (conv → BN → ReLU).
    pub(crate) fn parameters(&self) -> (Tensor, Tensor, f64) {
        (self.gamma_tensor(), self.beta.tensor(), self.config.epsilon)
    }

    /// `gamma` for a forward pass (detached while frozen), or the constant ones.
    fn gamma_tensor(&self) -> Tensor {
        self.gamma.as_ref().map_or_else(|| self.ones.clone(), Param::tensor)
    }

    /// Updates the moving statistics from a training batch's `mean` and biased `var` over
    /// `count` values per channel (TF1 semantics: the moving variance gets the unbiased
    /// one).
    pub(crate) fn update_moving_statistics(&self, mean: &Tensor, var: Tensor, count: usize) -> Result<()> {
        let var_for_update = match self.config.semantics {
            BatchNormSemantics::Tf1 => ops::unbiased_variance(&var, count)?,
            BatchNormSemantics::Keras => var,
        };
        let new_mean = ops::moving_average_update(&self.moving_mean, mean, self.config.momentum)?;
        let new_var = ops::moving_average_update(&self.moving_variance, &var_for_update, self.config.momentum)?;
        self.moving_mean.set(&new_mean).map_err(NnError::candle(&self.name))?;
        self.moving_variance.set(&new_var).map_err(NnError::candle(&self.name))?;
        Ok(())
    }
}

impl BatchNorm {
    /// Inference mode with the moving statistics, then a ReLU when `relu` (a conv → BN →
    /// ReLU block); one fused pass when no gradient flows ([`ops::batch_norm_eval_relu`]).
    ///
    /// # Shapes
    /// `[N, C, H, W]` → the same shape.
    pub(crate) fn forward_eval(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let stat = |v: &Var| if grad_enabled() { v.as_tensor().clone() } else { v.as_detached_tensor() };
        let (mean, variance) = (stat(&self.moving_mean), stat(&self.moving_variance));
        let (gamma, beta) = (self.gamma_tensor(), self.beta.tensor());
        ops::batch_norm_eval_relu(x, &gamma, &beta, &mean, &variance, self.config.epsilon, relu)
    }
}

impl Layer for BatchNorm {
    /// # Shapes
    /// `[N, C, H, W]` or `[N, C]` → the same shape.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // 2-D input is normalised per feature, as a 1x1 image.
        let x4 = if x.rank() == 2 {
            x.unsqueeze(2).and_then(|t| t.unsqueeze(3)).map_err(NnError::candle(&self.name))?
        } else {
            x.clone()
        };
        let (gamma, beta) = (self.gamma_tensor(), self.beta.tensor());
        let y = if let (true, Some(replicas)) = (train, &self.replicas) {
            let eps = self.config.epsilon;
            let (y, mean, var, count) = ops::batch_norm_train_across(&x4, &gamma, &beta, eps, false, replicas)
                .map_err(|e| NnError::shape(&self.name, e.to_string()))?; // [N, C, H, W]
            // The statistics ran over every replica's values.
            self.update_moving_statistics(&mean, var, count)?;
            y
        } else if train {
            let (y, mean, var) = ops::batch_norm_train(&x4, &gamma, &beta, self.config.epsilon)?;
            self.update_moving_statistics(&mean, var, ops::batch_norm_count(&x4)?)?;
            y
        } else {
            self.forward_eval(&x4, false)?
        };
        if x.rank() == 2 { y.flatten_from(1).map_err(NnError::candle(&self.name)) } else { Ok(y) }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn synchronise_batch_norm(&mut self, replicas: &Arc<dyn ReplicaSum>) {
        self.replicas = Some(Arc::clone(replicas));
    }

    fn output_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    fn graph(&self, g: &mut GraphBuilder, input: &str) -> String {
        let leaf = self.name.rsplit('/').next().unwrap_or(&self.name).to_string();
        g.scope(&leaf, |g| {
            let names: &[&str] = if self.config.scale {
                &["gamma", "beta", "moving_mean", "moving_variance"]
            } else {
                &["beta", "moving_mean", "moving_variance"]
            };
            let vars: Vec<String> = names.iter().map(|v| g.node("VariableV2", v, &[])).collect();
            let mut inputs = vec![input];
            inputs.extend(vars.iter().map(String::as_str));
            g.node("FusedBatchNormV3", "FusedBatchNormV3", &inputs)
        })
    }
}
