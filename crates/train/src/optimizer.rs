//! TF1's optimizers (`tf.compat.v1.train.*Optimizer`) with their exact
//! update rules, slot variables and slot names, plus `tf.clip_by_global_norm`
//! and `tf.train.ExponentialMovingAverage`.
//!
//! The update rules are those of TensorFlow's kernels
//! (`tensorflow/core/kernels/training_ops.cc`), evaluated in float32 in the
//! same order of operations, so a trajectory matches TF's to float32
//! rounding (the golden cases check 6 steps of each optimizer). With `g` the
//! gradient, `lr` the learning rate and every hyper-parameter rounded to
//! float32 first, as TF converts them:
//!
//! | optimizer | slots (TF names) | update |
//! |---|---|---|
//! | `sgd` | — | `var -= g * lr` |
//! | `momentum` | `var/Momentum` (0) | `accum = accum * momentum + g`; `var -= accum * lr`, or with Nesterov `var -= g * lr + accum * momentum * lr` |
//! | `adagrad` | `var/Adagrad` (`initial_accumulator_value`) | `accum += g²`; `var -= g * lr * rsqrt(accum)` |
//! | `adam` | `var/Adam` (m, 0), `var/Adam_1` (v, 0); non-slot `beta1_power`, `beta2_power` (β) | `lr_t = lr * sqrt(1 - β2^t) / (1 - β1^t)`; `m += (g - m)(1 - β1)`; `v += (g² - v)(1 - β2)`; `var -= m * lr_t / (sqrt(v) + ε)` (TF's "epsilon hat": ε is added after the bias correction), then `β^t *= β` |
//! | `adamw` | as `adam` | first `var -= var * wd * lr` (decoupled weight decay, `tf.keras.optimizers.AdamW`; variables whose name contains an `exclude_from_weight_decay` entry are not decayed), then `adam`'s update |
//! | `rmsprop` | `var/RMSProp` (ms, **1**), centred: `var/RMSProp_1` (mg, 0); `var/RMSProp_1` or centred `var/RMSProp_2` (mom, 0) | `ms += (g² - ms)(1 - decay)`; centred: `mg += (g - mg)(1 - decay)`; `mom = mom * momentum + g * lr / sqrt(ms [- mg²] + ε)`; `var -= mom` |
//! | `adadelta` | `var/Adadelta` (accum, 0), `var/Adadelta_1` (accum_update, 0) | `accum = accum ρ + g²(1 - ρ)`; `u = sqrt(accum_update + ε) * rsqrt(accum + ε) * g`; `var -= u * lr`; `accum_update = accum_update ρ + u²(1 - ρ)` |
//! | `ftrl` | `var/Ftrl` (accum, `initial_accumulator_value`), `var/Ftrl_1` (linear, 0) | `n = accum + g²`; `linear += g - (n^-p - accum^-p) / lr * var`; `var = |linear| > l1 ? (l1 sign(linear) - linear) / (n^-p / lr + 2 l2) : 0`; `accum = n` (p = `learning_rate_power`) |
//!
//! Slots are non-trainable variables of the [`VarStore`], named after their
//! variable as TF1 names them (`conv1/weights/Momentum`, …), so checkpoints
//! carry them and TF checkpoints map onto them name for name. As in TF, the
//! optimizer does not touch `global_step`: the training loop increments it
//! after each [`Optimizer::apply`].

use std::collections::{HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use ferroflow_nn::{Init, NnError, VarStore, Variable};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

mod clip;
mod ema;
mod fused;

pub use clip::{clip_by_global_norm, global_norm};
pub use ema::{EMA_SLOT, ExponentialMovingAverage, SwappedWeights};

/// TF's name of Adam's β1^t accumulator (a non-slot variable at the root).
pub const BETA1_POWER: &str = "beta1_power";
/// TF's name of Adam's β2^t accumulator.
pub const BETA2_POWER: &str = "beta2_power";

fn default_momentum() -> f64 {
    0.9
}
fn default_keras_epsilon() -> f64 {
    1e-7
}
fn default_weight_decay() -> f64 {
    0.004
}
fn default_accumulator() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_adam_epsilon() -> f64 {
    1e-8
}
fn default_rmsprop_decay() -> f64 {
    0.9
}
fn default_rmsprop_epsilon() -> f64 {
    1e-10
}
fn default_rho() -> f64 {
    0.95
}
fn default_adadelta_epsilon() -> f64 {
    1e-8
}
fn default_ftrl_power() -> f64 {
    -0.5
}

/// Which optimizer, with its hyper-parameters (the learning rate comes from
/// the [`Schedule`](crate::schedule::Schedule) at every step). Defaults are
/// TF1's; `kind` selects the variant:
///
/// ```
/// use ferroflow_train::optimizer::OptimizerConfig;
/// let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "adam", "beta2": 0.99}"#).unwrap();
/// assert_eq!(c, OptimizerConfig::Adam { beta1: 0.9, beta2: 0.99, epsilon: 1e-8 });
/// assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind": "adam", "beta3": 0.9}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// `tf.compat.v1.train.GradientDescentOptimizer`. (A struct variant, so
    /// that stray keys are rejected like every other variant's.)
    Sgd {},
    /// `tf.compat.v1.train.MomentumOptimizer`. TF has no default momentum;
    /// ferroflow's is TF-slim's flag default, 0.9 (`train_image_classifier.py`).
    Momentum {
        /// The momentum, in [0, 1] (default 0.9).
        #[serde(default = "default_momentum")]
        momentum: f64,
        /// Nesterov momentum (default false).
        #[serde(default)]
        use_nesterov: bool,
    },
    /// `tf.compat.v1.train.AdagradOptimizer`.
    Adagrad {
        /// The accumulator's starting value, > 0 (default 0.1).
        #[serde(default = "default_accumulator")]
        initial_accumulator_value: f64,
    },
    /// `tf.compat.v1.train.AdamOptimizer`.
    Adam {
        /// The first moment's decay, in [0, 1) (default 0.9).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// The second moment's decay, in [0, 1) (default 0.999).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// TF's "epsilon hat", >= 0 (default 1e-8).
        #[serde(default = "default_adam_epsilon")]
        epsilon: f64,
    },
    /// `tf.keras.optimizers.AdamW` (Loshchilov & Hutter, "Decoupled Weight Decay
    /// Regularization", 2019): each step first decays the variable by
    /// `var * weight_decay * lr`, then applies Adam's update. Keras's defaults;
    /// the slots are Adam's, with TF1's names (`var/Adam`, `var/Adam_1`,
    /// `beta1_power`, `beta2_power`), as TF1's `AdamWOptimizer` named them.
    #[serde(rename = "adamw")]
    AdamW {
        /// The first moment's decay, in [0, 1) (default 0.9).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// The second moment's decay, in [0, 1) (default 0.999).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Added after the bias correction, >= 0 (default 1e-7, Keras's).
        #[serde(default = "default_keras_epsilon")]
        epsilon: f64,
        /// The decoupled decay rate, >= 0, multiplied by the learning rate (default 0.004, Keras's).
        #[serde(default = "default_weight_decay")]
        weight_decay: f64,
        /// Variables whose name contains one of these strings are not decayed
        /// (Keras's `exclude_from_weight_decay(var_names=…)`, which matches by
        /// `re.search`; here a plain substring, e.g. `["biases", "BatchNorm"]`).
        /// Default: none, every trainable variable decays.
        #[serde(default)]
        exclude_from_weight_decay: Vec<String>,
    },
    /// `tf.compat.v1.train.RMSPropOptimizer`.
    #[serde(rename = "rmsprop")]
    RmsProp {
        /// The mean square's decay, in [0, 1) (default 0.9).
        #[serde(default = "default_rmsprop_decay")]
        decay: f64,
        /// Momentum, in [0, 1] (default 0).
        #[serde(default)]
        momentum: f64,
        /// Added to the mean square under the root, >= 0 (default 1e-10).
        #[serde(default = "default_rmsprop_epsilon")]
        epsilon: f64,
        /// Normalise by the variance (`ms - mg²`) instead of the mean square (default false).
        #[serde(default)]
        centered: bool,
    },
    /// `tf.compat.v1.train.AdadeltaOptimizer`.
    Adadelta {
        /// The accumulators' decay, in [0, 1) (default 0.95).
        #[serde(default = "default_rho")]
        rho: f64,
        /// Added under both roots, > 0 (default 1e-8).
        #[serde(default = "default_adadelta_epsilon")]
        epsilon: f64,
    },
    /// `tf.compat.v1.train.FtrlOptimizer` (without l2 shrinkage).
    Ftrl {
        /// The power of the per-coordinate learning rate, <= 0 (default -0.5).
        #[serde(default = "default_ftrl_power")]
        learning_rate_power: f64,
        /// The accumulator's starting value, >= 0 (default 0.1).
        #[serde(default = "default_accumulator")]
        initial_accumulator_value: f64,
        /// L1 regularisation strength, >= 0 (default 0).
        #[serde(default)]
        l1: f64,
        /// L2 regularisation strength, >= 0 (default 0).
        #[serde(default)]
        l2: f64,
    },
}

impl Default for OptimizerConfig {
    /// Momentum 0.9 without Nesterov (the TF1 image-classification recipe).
    fn default() -> Self {
        OptimizerConfig::Momentum { momentum: 0.9, use_nesterov: false }
    }
}

/// One slot of an optimizer: TF's slot name (`get_slot_names`) and how it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotSpec {
    /// TF's slot name (`"m"`, `"momentum"`, …), as `Optimizer.get_slot(var, name)` takes it.
    pub name: &'static str,
    /// Its initial value.
    pub init: Init,
}

fn check(key: &str, value: f64, ok: bool, what: &str) -> Result<()> {
    if ok && value.is_finite() { Ok(()) } else { Err(TrainError::config(key, format!("must be {what}, got {value}"))) }
}

fn unit_open(key: &str, v: f64) -> Result<()> {
    check(key, v, (0.0..1.0).contains(&v), "in [0, 1)")
}

fn unit_closed(key: &str, v: f64) -> Result<()> {
    check(key, v, (0.0..=1.0).contains(&v), "in [0, 1]")
}

fn non_negative(key: &str, v: f64) -> Result<()> {
    check(key, v, v >= 0.0, ">= 0")
}

impl OptimizerConfig {
    /// The optimizer's TF name (`Optimizer._name`), the suffix of its slot
    /// variables: `GradientDescent`, `Momentum`, `Adagrad`, `Adam`,
    /// `RMSProp`, `Adadelta`, `Ftrl` (AdamW's slots are Adam's).
    pub fn tf_name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd {} => "GradientDescent",
            OptimizerConfig::Momentum { .. } => "Momentum",
            OptimizerConfig::Adagrad { .. } => "Adagrad",
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => "Adam",
            OptimizerConfig::RmsProp { .. } => "RMSProp",
            OptimizerConfig::Adadelta { .. } => "Adadelta",
            OptimizerConfig::Ftrl { .. } => "Ftrl",
        }
    }

    /// The slots of every variable, in TF's creation order (which numbers
    /// their variables: the first is `var/<tf_name>`, the next
    /// `var/<tf_name>_1`, …).
    pub fn slots(&self) -> Vec<SlotSpec> {
        let zeros = |name| SlotSpec { name, init: Init::Zeros };
        match *self {
            OptimizerConfig::Sgd {} => vec![],
            OptimizerConfig::Momentum { .. } => vec![zeros("momentum")],
            OptimizerConfig::Adagrad { initial_accumulator_value } => {
                vec![SlotSpec { name: "accumulator", init: Init::Constant { value: initial_accumulator_value as f32 } }]
            }
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => vec![zeros("m"), zeros("v")],
            OptimizerConfig::RmsProp { centered, .. } => {
                let mut slots = vec![SlotSpec { name: "rms", init: Init::Ones }];
                if centered {
                    slots.push(zeros("mg"));
                }
                slots.push(zeros("momentum"));
                slots
            }
            OptimizerConfig::Adadelta { .. } => vec![zeros("accum"), zeros("accum_update")],
            OptimizerConfig::Ftrl { initial_accumulator_value, .. } => vec![
                SlotSpec { name: "accum", init: Init::Constant { value: initial_accumulator_value as f32 } },
                zeros("linear"),
            ],
        }
    }

    /// The store name of slot number `index` of `var`: `var/<tf_name>` for
    /// the first, `var/<tf_name>_<index>` after.
    pub fn slot_variable_name(&self, var: &str, index: usize) -> String {
        if index == 0 { format!("{var}/{}", self.tf_name()) } else { format!("{var}/{}_{index}", self.tf_name()) }
    }

    /// Checks every hyper-parameter, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        match *self {
            OptimizerConfig::Sgd {} => Ok(()),
            OptimizerConfig::Momentum { momentum, .. } => unit_closed("momentum", momentum),
            OptimizerConfig::Adagrad { initial_accumulator_value: v } => {
                check("initial_accumulator_value", v, v > 0.0, "> 0")
            }
            OptimizerConfig::Adam { beta1, beta2, epsilon } => {
                unit_open("beta1", beta1)?;
                unit_open("beta2", beta2)?;
                non_negative("epsilon", epsilon)
            }
            OptimizerConfig::AdamW { beta1, beta2, epsilon, weight_decay, .. } => {
                unit_open("beta1", beta1)?;
                unit_open("beta2", beta2)?;
                non_negative("epsilon", epsilon)?;
                non_negative("weight_decay", weight_decay)
            }
            OptimizerConfig::RmsProp { decay, momentum, epsilon, .. } => {
                unit_open("decay", decay)?;
                unit_closed("momentum", momentum)?;
                non_negative("epsilon", epsilon)
            }
            OptimizerConfig::Adadelta { rho, epsilon } => {
                unit_open("rho", rho)?;
                check("epsilon", epsilon, epsilon > 0.0, "> 0")
            }
            OptimizerConfig::Ftrl { learning_rate_power, initial_accumulator_value, l1, l2 } => {
                check("learning_rate_power", learning_rate_power, learning_rate_power <= 0.0, "<= 0")?;
                non_negative("initial_accumulator_value", initial_accumulator_value)?;
                non_negative("l1", l1)?;
                non_negative("l2", l2)
            }
        }
    }
}

/// Names a variable of the store in [`Optimizer::apply`]: a name (`&str`,
/// `String`) or a [`Variable`].
pub trait VarRef {
    /// The variable's full name.
    fn var_name(&self) -> &str;
}

impl VarRef for str {
    fn var_name(&self) -> &str {
        self
    }
}

impl VarRef for String {
    fn var_name(&self) -> &str {
        self
    }
}

impl VarRef for Variable {
    fn var_name(&self) -> &str {
        &self.name
    }
}

impl<T: VarRef + ?Sized> VarRef for &T {
    fn var_name(&self) -> &str {
        (**self).var_name()
    }
}

/// The gradients `grads` holds for the store's trainable variables, in
/// creation order; variables without a gradient are left out (TF skips
/// `None` gradients).
pub fn trainable_gradients(store: &VarStore, grads: &GradStore) -> Vec<(Variable, Tensor)> {
    store
        .trainable_variables()
        .into_iter()
        .filter_map(|v| grads.get(v.var.as_tensor()).cloned().map(|g| (v, g)))
        .collect()
}

/// A TF1 optimizer over a [`VarStore`]: it owns its slot variables (in the
/// store, under TF's names) and applies one step at a time.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use ferroflow_nn::{Init, VarStore};
/// use ferroflow_train::optimizer::{Optimizer, OptimizerConfig};
///
/// let store = VarStore::new(Device::Cpu, 0);
/// let w = store.root().sub("dense").get_variable("kernel", &[2], Init::Ones, true).unwrap();
/// let mut opt = Optimizer::new(&OptimizerConfig::Momentum { momentum: 0.9, use_nesterov: false }, &store).unwrap();
/// let g = Tensor::new(&[1f32, -2.0], &Device::Cpu).unwrap();
/// opt.apply(&[("dense/kernel", g)], 0.1).unwrap();
/// assert_eq!(w.to_vec1::<f32>().unwrap(), [0.9, 1.2]);
/// let slot = store.get("dense/kernel/Momentum").unwrap();
/// assert!(!slot.trainable);
/// assert_eq!(slot.var.to_vec1::<f32>().unwrap(), [1.0, -2.0]);
/// ```
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    store: VarStore,
    /// Variable name → its slot variables, in `config.slots()` order.
    slots: HashMap<String, Vec<Var>>,
    /// Adam's `beta1_power`, `beta2_power`.
    beta_powers: Option<[Var; 2]>,
    /// Take [`fused`]'s in-place momentum update where it applies (always,
    /// except in the test that compares it with the tensor path).
    use_fused: bool,
}

/// `t * s` in float32 (`affine` multiplies by `s` exactly when `s` is a float32 value).
fn mul(t: &Tensor, s: f32) -> candle_core::Result<Tensor> {
    t.affine(f64::from(s), 0.0)
}

/// `t + s` in float32.
fn add(t: &Tensor, s: f32) -> candle_core::Result<Tensor> {
    t.affine(1.0, f64::from(s))
}

/// `t / s` in float32: a true division, as TF's kernels divide (not a multiplication by `1 / s`).
fn div(t: &Tensor, s: f32) -> candle_core::Result<Tensor> {
    t.broadcast_div(&Tensor::new(s, t.device())?)
}

/// The values one update step writes: `(variable, new value)`.
type Writes = Vec<(Var, Tensor)>;

impl Optimizer {
    /// Validates `config` and creates the slots of every trainable variable
    /// of `store` (and Adam's `beta1_power`/`beta2_power`). A slot name that
    /// already exists is an error (two optimizers on one store).
    pub fn new(config: &OptimizerConfig, store: &VarStore) -> Result<Optimizer> {
        config.validate()?;
        let config = config.clone();
        let beta_powers = match config {
            OptimizerConfig::Adam { beta1, beta2, .. } | OptimizerConfig::AdamW { beta1, beta2, .. } => {
                let root = store.root();
                let b1 = root.get_variable(BETA1_POWER, &[], Init::Constant { value: beta1 as f32 }, false)?;
                let b2 = root.get_variable(BETA2_POWER, &[], Init::Constant { value: beta2 as f32 }, false)?;
                Some([b1, b2])
            }
            _ => None,
        };
        let mut opt = Optimizer { config, store: store.clone(), slots: HashMap::new(), beta_powers, use_fused: true };
        for v in store.trainable_variables() {
            opt.ensure_slots(&v)?;
        }
        Ok(opt)
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// TF's `get_slot_names()`, in creation order.
    pub fn slot_names(&self) -> Vec<&'static str> {
        self.config.slots().iter().map(|s| s.name).collect()
    }

    /// TF's `get_slot(var, name)`: the slot `slot` (`"m"`, `"momentum"`, …)
    /// of the variable named `var`.
    pub fn slot(&self, var: &str, slot: &str) -> Option<Var> {
        let index = self.config.slots().iter().position(|s| s.name == slot)?;
        self.slots.get(var).map(|vars| vars[index].clone())
    }

    /// The store names of every variable this optimizer created (slots, then
    /// Adam's `beta1_power`, `beta2_power`), sorted.
    pub fn variable_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .slots
            .keys()
            .flat_map(|var| (0..self.config.slots().len()).map(move |i| self.config.slot_variable_name(var, i)))
            .collect();
        names.sort();
        if self.beta_powers.is_some() {
            names.extend([BETA1_POWER.to_string(), BETA2_POWER.to_string()]);
        }
        names
    }

    /// Creates `variable`'s slots unless it has them.
    fn ensure_slots(&mut self, variable: &Variable) -> Result<()> {
        if self.slots.contains_key(&variable.name) {
            return Ok(());
        }
        let scope = self.store.root();
        let shape = variable.var.dims().to_vec();
        let mut vars = Vec::new();
        for (i, spec) in self.config.slots().iter().enumerate() {
            let name = self.config.slot_variable_name(&variable.name, i);
            vars.push(scope.get_variable(&name, &shape, spec.init, false)?);
        }
        self.slots.insert(variable.name.clone(), vars);
        Ok(())
    }

    /// One step: updates each named variable (and its slots) from its
    /// gradient with TF1's rule at `learning_rate` (rounded to float32, as TF
    /// converts it). Every variable and gradient is checked before anything
    /// changes; variables created after the optimizer get their slots here.
    /// Adam's `beta1_power`/`beta2_power` advance once per call.
    pub fn apply<K: VarRef>(&mut self, grads: &[(K, Tensor)], learning_rate: f64) -> Result<()> {
        let ftrl = matches!(self.config, OptimizerConfig::Ftrl { .. });
        let lr_ok = learning_rate.is_finite() && if ftrl { learning_rate > 0.0 } else { learning_rate >= 0.0 };
        if !lr_ok {
            let what = if ftrl { "finite and > 0 (FTRL divides by it)" } else { "finite and >= 0" };
            return Err(TrainError::config("learning_rate", format!("must be {what}, got {learning_rate}")));
        }
        if grads.is_empty() {
            return Err(TrainError::config("gradients", "no gradients to apply (TF: \"No gradients provided\")"));
        }
        let mut seen = HashSet::new();
        let mut targets = Vec::with_capacity(grads.len());
        for (k, g) in grads {
            let name = k.var_name();
            let variable = self.store.get(name).ok_or_else(|| NnError::Variable {
                name: name.to_string(),
                reason: "has a gradient but is not in the variable store".into(),
            })?;
            if !seen.insert(name) {
                return Err(var_error(name, "has more than one gradient in one step"));
            }
            if g.dims() != variable.var.dims() {
                return Err(var_error(
                    name,
                    format!(
                        "the gradient's shape {:?} differs from the variable's {:?}",
                        g.dims(),
                        variable.var.dims()
                    ),
                ));
            }
            if variable.var.dtype() != DType::F32 {
                return Err(var_error(
                    name,
                    format!("is {:?}; optimizers update float32 variables", variable.var.dtype()),
                ));
            }
            targets.push((variable, g));
        }
        for (variable, _) in &targets {
            self.ensure_slots(variable)?;
        }
        let lr = learning_rate as f32;
        let adam = match (&self.config, &self.beta_powers) {
            (
                OptimizerConfig::Adam { beta1, beta2, .. } | OptimizerConfig::AdamW { beta1, beta2, .. },
                Some([b1p, b2p]),
            ) => {
                let read = |v: &Var, name: &str| v.to_scalar::<f32>().map_err(TrainError::candle(name));
                let (p1, p2) = (read(b1p, BETA1_POWER)?, read(b2p, BETA2_POWER)?);
                // TF: alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power), in float32.
                let alpha = lr * (1.0f32 - p2).sqrt() / (1.0f32 - p1);
                Some((alpha, p1 * (*beta1 as f32), p2 * (*beta2 as f32)))
            }
            _ => None,
        };
        for (variable, g) in &targets {
            let g = g.detach().to_dtype(DType::F32).map_err(TrainError::candle(&variable.name))?;
            if let (OptimizerConfig::Momentum { momentum, use_nesterov }, true) = (&self.config, self.use_fused) {
                let accum = &self.slots[&variable.name][0];
                let done = fused::momentum(&variable.var, accum, &g, lr, *momentum as f32, *use_nesterov)
                    .map_err(TrainError::candle(&variable.name))?;
                if done {
                    continue;
                }
            }
            let writes =
                self.update(variable, &g, lr, adam.map_or(0.0, |a| a.0)).map_err(TrainError::candle(&variable.name))?;
            for (var, value) in writes {
                var.set(&value).map_err(TrainError::candle(&variable.name))?;
            }
        }
        if let (Some((_, p1, p2)), Some([b1p, b2p])) = (adam, &self.beta_powers) {
            let device = self.store.device();
            let set = |v: &Var, x: f32, name: &str| {
                Tensor::new(x, device).and_then(|t| v.set(&t)).map_err(TrainError::candle(name))
            };
            set(b1p, p1, BETA1_POWER)?;
            set(b2p, p2, BETA2_POWER)?;
        }
        Ok(())
    }

    /// [`apply`](Self::apply) to every trainable variable that has a
    /// gradient in `grads` (see [`trainable_gradients`]); returns how many.
    pub fn apply_grad_store(&mut self, grads: &GradStore, learning_rate: f64) -> Result<usize> {
        let pairs = trainable_gradients(&self.store, grads);
        self.apply(&pairs, learning_rate)?;
        Ok(pairs.len())
    }

    /// The new values of `variable` and its slots after one step (TF's
    /// kernels, term for term, in float32).
    fn update(&self, variable: &Variable, g: &Tensor, lr: f32, adam_alpha: f32) -> candle_core::Result<Writes> {
        let w = variable.var.as_tensor().detach();
        let slot_vars = self.slots.get(&variable.name).map(Vec::as_slice).unwrap_or_default();
        let slot = |i: usize| slot_vars[i].as_tensor().detach();
        let var = variable.var.clone();
        let sv = |i: usize| slot_vars[i].clone();
        Ok(match self.config {
            OptimizerConfig::Sgd {} => vec![(var, (&w - mul(g, lr)?)?)],
            OptimizerConfig::Momentum { momentum, use_nesterov } => {
                let m = momentum as f32;
                let accum = (mul(&slot(0), m)? + g)?;
                let step = if use_nesterov { (mul(g, lr)? + mul(&mul(&accum, m)?, lr)?)? } else { mul(&accum, lr)? };
                vec![(var, (&w - step)?), (sv(0), accum)]
            }
            OptimizerConfig::Adagrad { .. } => {
                let accum = (slot(0) + g.sqr()?)?;
                let step = (mul(g, lr)? * accum.sqrt()?.recip()?)?;
                vec![(var, (&w - step)?), (sv(0), accum)]
            }
            OptimizerConfig::Adam { beta1, beta2, epsilon } => {
                let (m, v, step) = adam_step(g, &slot(0), &slot(1), beta1, beta2, epsilon, adam_alpha)?;
                vec![(var, (&w - step)?), (sv(0), m), (sv(1), v)]
            }
            OptimizerConfig::AdamW { beta1, beta2, epsilon, weight_decay, ref exclude_from_weight_decay } => {
                // Keras's `_apply_weight_decay`, before the update: `var - var * wd * lr`, in float32.
                let decays = !exclude_from_weight_decay.iter().any(|e| variable.name.contains(e.as_str()));
                let w = if decays { (&w - mul(&mul(&w, weight_decay as f32)?, lr)?)? } else { w };
                let (m, v, step) = adam_step(g, &slot(0), &slot(1), beta1, beta2, epsilon, adam_alpha)?;
                vec![(var, (&w - step)?), (sv(0), m), (sv(1), v)]
            }
            OptimizerConfig::RmsProp { decay, momentum, epsilon, centered } => {
                let one_rho = 1.0f32 - decay as f32;
                let ms = slot(0);
                let ms = (&ms + mul(&(g.sqr()? - &ms)?, one_rho)?)?;
                let mut writes = vec![];
                let denom = if centered {
                    let mg = slot(1);
                    let mg = (&mg + mul(&(g - &mg)?, one_rho)?)?;
                    let denom = add(&(&ms - mg.sqr()?)?, epsilon as f32)?;
                    writes.push((sv(1), mg));
                    denom
                } else {
                    add(&ms, epsilon as f32)?
                };
                let mom_index = if centered { 2 } else { 1 };
                let mom = (mul(&slot(mom_index), momentum as f32)? + (mul(g, lr)? / denom.sqrt()?)?)?;
                writes.push((var, (&w - &mom)?));
                writes.push((sv(0), ms));
                writes.push((sv(mom_index), mom));
                writes
            }
            OptimizerConfig::Adadelta { rho, epsilon } => {
                let (rho, eps) = (rho as f32, epsilon as f32);
                let one_rho = 1.0f32 - rho;
                let (accum, accum_update) = (slot(0), slot(1));
                let accum = (mul(&accum, rho)? + mul(&g.sqr()?, one_rho)?)?;
                let update = ((add(&accum_update, eps)?.sqrt()? * add(&accum, eps)?.sqrt()?.recip()?)? * g)?;
                let new_w = (&w - mul(&update, lr)?)?;
                let accum_update = (mul(&accum_update, rho)? + mul(&update.sqr()?, one_rho)?)?;
                vec![(var, new_w), (sv(0), accum), (sv(1), accum_update)]
            }
            OptimizerConfig::Ftrl { learning_rate_power, l1, l2, .. } => {
                let (power, l1, l2) = (learning_rate_power as f32, l1 as f32, l2 as f32);
                let (accum, linear) = (slot(0), slot(1));
                let new_accum = (&accum + g.sqr()?)?;
                let (p_new, p_old) = if power == -0.5 {
                    (new_accum.sqrt()?, accum.sqrt()?)
                } else {
                    (new_accum.powf(f64::from(-power))?, accum.powf(f64::from(-power))?)
                };
                let linear = (&linear + (g - (div(&(&p_new - &p_old)?, lr)? * &w)?)?)?;
                let x = (mul(&linear.sign()?, l1)? - &linear)?;
                let y = add(&div(&p_new, lr)?, 2.0f32 * l2)?;
                let new_w = linear.abs()?.gt(l1)?.where_cond(&(x / y)?, &w.zeros_like()?)?;
                vec![(var, new_w), (sv(0), new_accum), (sv(1), linear)]
            }
        })
    }
}

/// Adam's moments and step (`training_ops.cc` ApplyAdam, Keras's `Adam.update_step`):
/// `m += (g - m)(1 - β1)`, `v += (g² - v)(1 - β2)`, `step = m * alpha / (sqrt(v) + ε)`.
fn adam_step(
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    alpha: f32,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (one_b1, one_b2) = (1.0f32 - beta1 as f32, 1.0f32 - beta2 as f32);
    let m = (m + mul(&(g - m)?, one_b1)?)?;
    let v = (v + mul(&(g.sqr()? - v)?, one_b2)?)?;
    let step = (mul(&m, alpha)? / add(&v.sqrt()?, epsilon as f32)?)?;
    Ok((m, v, step))
}

fn var_error(name: &str, reason: impl Into<String>) -> TrainError {
    TrainError::Nn(NnError::Variable { name: name.to_string(), reason: reason.into() })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn store_with(name: &str, values: &[f32]) -> VarStore {
        let store = VarStore::new(Device::Cpu, 0);
        let t = Tensor::new(values, &Device::Cpu).unwrap();
        store.root().get_variable_from(name, &t, true).unwrap();
        store
    }

    fn values(store: &VarStore, name: &str) -> Vec<f32> {
        store.get(name).unwrap().var.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn slot_names_follow_tf() {
        let cases = [
            (OptimizerConfig::Sgd {}, vec![]),
            (OptimizerConfig::default(), vec!["w/Momentum"]),
            (OptimizerConfig::Adagrad { initial_accumulator_value: 0.1 }, vec!["w/Adagrad"]),
            (
                OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 },
                vec!["w/Adam", "w/Adam_1", "beta1_power", "beta2_power"],
            ),
            (
                OptimizerConfig::RmsProp { decay: 0.9, momentum: 0.0, epsilon: 1e-10, centered: false },
                vec!["w/RMSProp", "w/RMSProp_1"],
            ),
            (
                OptimizerConfig::RmsProp { decay: 0.9, momentum: 0.9, epsilon: 1.0, centered: true },
                vec!["w/RMSProp", "w/RMSProp_1", "w/RMSProp_2"],
            ),
            (OptimizerConfig::Adadelta { rho: 0.95, epsilon: 1e-8 }, vec!["w/Adadelta", "w/Adadelta_1"]),
            (
                OptimizerConfig::Ftrl { learning_rate_power: -0.5, initial_accumulator_value: 0.1, l1: 0.0, l2: 0.0 },
                vec!["w/Ftrl", "w/Ftrl_1"],
            ),
        ];
        for (config, want) in cases {
            let store = store_with("w", &[1.0, 2.0]);
            let opt = Optimizer::new(&config, &store).unwrap();
            assert_eq!(opt.variable_names(), want, "{config:?}");
            for name in &want {
                assert!(!store.get(name).unwrap().trainable, "{name}");
            }
            assert_eq!(store.trainable_variables().len(), 1);
        }
    }

    #[test]
    fn slot_initial_values() {
        let store = store_with("w", &[1.0, 2.0]);
        let opt = Optimizer::new(
            &OptimizerConfig::RmsProp { decay: 0.9, momentum: 0.0, epsilon: 1e-10, centered: true },
            &store,
        )
        .unwrap();
        assert_eq!(values(&store, "w/RMSProp"), [1.0, 1.0]); // TF starts the mean square at 1
        assert_eq!(values(&store, "w/RMSProp_1"), [0.0, 0.0]);
        assert_eq!(opt.slot("w", "mg").unwrap().to_vec1::<f32>().unwrap(), [0.0, 0.0]);
        assert!(opt.slot("w", "m").is_none());
        let store = store_with("w", &[1.0]);
        Optimizer::new(&OptimizerConfig::Adagrad { initial_accumulator_value: 0.25 }, &store).unwrap();
        assert_eq!(values(&store, "w/Adagrad"), [0.25]);
    }

    #[test]
    fn adam_first_step_moves_by_about_lr() {
        // With bias correction the first Adam step is lr * sign(g) (up to epsilon).
        let store = store_with("w", &[1.0, -1.0]);
        let mut opt =
            Optimizer::new(&OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }, &store).unwrap();
        let g = Tensor::new(&[0.5f32, -3.0], &Device::Cpu).unwrap();
        opt.apply(&[("w", g)], 0.01).unwrap();
        let w = values(&store, "w");
        assert!((w[0] - 0.99).abs() < 1e-6 && (w[1] + 0.99).abs() < 1e-6, "{w:?}");
        let b1: f32 = store.get(BETA1_POWER).unwrap().var.to_scalar().unwrap();
        assert_eq!(b1, 0.9f32 * 0.9f32);
    }

    #[test]
    fn ftrl_l1_zeroes_small_weights() {
        let store = store_with("w", &[0.0, 0.0]);
        let config =
            OptimizerConfig::Ftrl { learning_rate_power: -0.5, initial_accumulator_value: 0.1, l1: 1.0, l2: 0.0 };
        let mut opt = Optimizer::new(&config, &store).unwrap();
        opt.apply(&[("w", Tensor::new(&[0.5f32, 3.0], &Device::Cpu).unwrap())], 0.1).unwrap();
        let w = values(&store, "w");
        assert_eq!(w[0], 0.0); // |linear| = 0.5 <= l1
        assert!(w[1] < 0.0, "{w:?}");
    }

    #[test]
    fn bad_hyper_parameters_and_gradients_are_named() {
        let store = store_with("w", &[1.0, 2.0]);
        let err = |c: OptimizerConfig| Optimizer::new(&c, &store).unwrap_err().to_string();
        assert!(err(OptimizerConfig::Adam { beta1: 1.0, beta2: 0.999, epsilon: 1e-8 }).starts_with("beta1:"));
        assert!(err(OptimizerConfig::Momentum { momentum: -0.1, use_nesterov: false }).starts_with("momentum:"));
        assert!(
            err(OptimizerConfig::Adagrad { initial_accumulator_value: 0.0 }).starts_with("initial_accumulator_value")
        );
        assert!(
            err(OptimizerConfig::RmsProp { decay: f64::NAN, momentum: 0.0, epsilon: 1e-10, centered: false })
                .starts_with("decay:")
        );
        let mut opt = Optimizer::new(&OptimizerConfig::Sgd {}, &store).unwrap();
        let g = Tensor::new(&[1f32, 1.0], &Device::Cpu).unwrap();
        let e = opt.apply(&[("w", g.clone())], -0.1).unwrap_err().to_string();
        assert!(e.starts_with("learning_rate:"), "{e}");
        let e = opt.apply(&[("nope", g.clone())], 0.1).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = opt.apply(&[("w", Tensor::new(&[1f32], &Device::Cpu).unwrap())], 0.1).unwrap_err().to_string();
        assert!(e.contains("variable w") && e.contains("shape"), "{e}");
        let e = opt.apply(&[("w", g.clone()), ("w", g)], 0.1).unwrap_err().to_string();
        assert!(e.contains("more than one gradient"), "{e}");
        let none: [(&str, Tensor); 0] = [];
        assert!(opt.apply(&none, 0.1).is_err());
        assert_eq!(values(&store, "w"), [1.0, 2.0], "a failed step changes nothing");
        // A second optimizer on the same store would share TF's slot names.
        Optimizer::new(&OptimizerConfig::default(), &store).unwrap();
        assert!(Optimizer::new(&OptimizerConfig::default(), &store).unwrap_err().to_string().contains("w/Momentum"));
    }

    #[test]
    fn late_variables_get_slots_and_grad_store_works() {
        let store = VarStore::new(Device::Cpu, 0);
        let mut opt = Optimizer::new(&OptimizerConfig::default(), &store).unwrap();
        let w = store.root().get_variable("w", &[2], Init::Ones, true).unwrap();
        let loss = (w.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(opt.apply_grad_store(&grads, 0.5).unwrap(), 1);
        assert_eq!(w.to_vec1::<f32>().unwrap(), [-0.5, -0.5]);
        assert_eq!(values(&store, "w/Momentum"), [3.0, 3.0]);
    }

    #[test]
    fn config_serde_defaults_and_strictness() {
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "rmsprop"}"#).unwrap();
        assert_eq!(c, OptimizerConfig::RmsProp { decay: 0.9, momentum: 0.0, epsilon: 1e-10, centered: false });
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "ftrl"}"#).unwrap();
        assert_eq!(
            c,
            OptimizerConfig::Ftrl { learning_rate_power: -0.5, initial_accumulator_value: 0.1, l1: 0.0, l2: 0.0 }
        );
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "adadelta"}"#).unwrap();
        assert_eq!(c, OptimizerConfig::Adadelta { rho: 0.95, epsilon: 1e-8 });
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "adagrad"}"#).unwrap();
        assert_eq!(c, OptimizerConfig::Adagrad { initial_accumulator_value: 0.1 });
        // TF has no default momentum; TF-slim's flag default is 0.9.
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "momentum"}"#).unwrap();
        assert_eq!(c, OptimizerConfig::Momentum { momentum: 0.9, use_nesterov: false });
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "adamw"}"#).unwrap();
        assert_eq!(
            c,
            OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-7,
                weight_decay: 0.004,
                exclude_from_weight_decay: vec![]
            }
        );
        assert_eq!(c.tf_name(), "Adam");
        let bad = OptimizerConfig::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            weight_decay: -1.0,
            exclude_from_weight_decay: vec![],
        };
        assert!(bad.validate().unwrap_err().to_string().contains("weight_decay"));
        assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind": "sgd", "momentum": 0.9}"#).is_err());
        assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind": "lion"}"#).is_err());
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind": "sgd"}"#).unwrap();
        assert_eq!(c, OptimizerConfig::Sgd {});
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"kind":"sgd"}"#);
        let text = serde_json::to_string(&OptimizerConfig::default()).unwrap();
        assert_eq!(serde_json::from_str::<OptimizerConfig>(&text).unwrap(), OptimizerConfig::default());
    }
}
