//! The variable store: TensorFlow's `tf.compat.v1.variable_scope` /
//! `get_variable` model. Variables have hierarchical names
//! (`conv1/weights`, `conv1/BatchNorm/moving_mean`), a trainable flag, and
//! are created once; reusing one must be asked for.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor, Var};
use ferroflow_rng::Rng;

use crate::error::{NnError, Result};
use crate::init::Init;

/// TF's name of the step counter.
pub const GLOBAL_STEP: &str = "global_step";

/// Whether a scope may return existing variables (TF's `reuse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// Create only; an existing name is an error (TF's `reuse=None`).
    #[default]
    No,
    /// Return existing only; a missing name is an error (`reuse=True`).
    Yes,
    /// Return if present, else create (`reuse=tf.AUTO_REUSE`).
    Auto,
}

/// One variable.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Full name, `/`-separated.
    pub name: String,
    /// Its value (a candle `Var`, so gradients reach it).
    pub var: Var,
    /// Whether optimizers update it.
    pub trainable: bool,
    /// Shared with the layer's [`Param`]: set while a trainable-by-creation
    /// variable is frozen ([`VarStore::set_trainable`]).
    frozen: Arc<AtomicBool>,
}

thread_local! {
    /// Set inside [`no_grad`] on this thread.
    static NO_GRAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with autograd off for the model's variables on this thread (PyTorch's
/// `torch.no_grad()`; TF's inference graphs): every [`Param`] and the batch norms' moving
/// statistics enter the forward pass detached, so no op records a backward node and each
/// activation is freed as soon as the next layer has read it. For evaluation and
/// prediction, whose forward passes are never differentiated.
///
/// ```
/// use ferroflow_nn::{Init, VarStore, no_grad};
/// let store = VarStore::new(candle_core::Device::Cpu, 0);
/// let w = store.root().get_param("w", &[2], Init::Ones).unwrap();
/// assert!(!no_grad(|| w.tensor().track_op()));
/// assert!(w.tensor().track_op());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_GRAD.set(self.0);
        }
    }
    let _restore = Restore(NO_GRAD.replace(true));
    f()
}

/// False inside [`no_grad`].
pub fn grad_enabled() -> bool {
    !NO_GRAD.get()
}

/// A trainable variable as a layer holds it. While the store freezes it
/// (TF-slim's `trainable_scopes`), [`tensor`](Param::tensor) gives the value
/// detached from autograd, so the backward pass computes no gradient for it,
/// and none at all below the lowest layer that still trains.
#[derive(Debug, Clone)]
pub struct Param {
    var: Var,
    frozen: Arc<AtomicBool>,
}

impl Param {
    /// The value for a forward pass: tracked by autograd unless frozen.
    ///
    /// ```
    /// use ferroflow_nn::{Init, VarStore};
    /// let store = VarStore::new(candle_core::Device::Cpu, 0);
    /// let w = store.root().get_param("w", &[2], Init::Ones).unwrap();
    /// assert!(w.tensor().track_op());
    /// store.set_trainable("w", false).unwrap();
    /// assert!(!w.tensor().track_op());
    /// ```
    pub fn tensor(&self) -> Tensor {
        if self.frozen.load(Ordering::Relaxed) || !grad_enabled() {
            self.var.as_detached_tensor()
        } else {
            self.var.as_tensor().clone()
        }
    }

    /// The variable itself.
    pub fn var(&self) -> &Var {
        &self.var
    }
}

#[derive(Debug)]
struct Inner {
    order: Vec<String>,
    vars: HashMap<String, Variable>,
    global_step: i64,
    rng: Rng,
}

/// All variables of a model (and later its optimizer's slots). Cloning
/// shares the store.
#[derive(Debug, Clone)]
pub struct VarStore {
    inner: Arc<Mutex<Inner>>,
    device: Device,
}

impl VarStore {
    /// An empty store whose initializers draw from `Rng::new(seed)`.
    pub fn new(device: Device, seed: u64) -> Self {
        let inner =
            Inner { order: Vec::new(), vars: HashMap::new(), global_step: 0, rng: Rng::derive(seed, &[0x7661_7273]) };
        VarStore { inner: Arc::new(Mutex::new(inner)), device }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The root scope (no prefix, no reuse).
    pub fn root(&self) -> Scope {
        Scope { store: self.clone(), prefix: String::new(), reuse: Reuse::No }
    }

    /// Trainable variables, in creation order (`tf.trainable_variables()`).
    pub fn trainable_variables(&self) -> Vec<Variable> {
        let inner = self.lock();
        inner.order.iter().map(|n| &inner.vars[n]).filter(|v| v.trainable).cloned().collect()
    }

    /// Every variable, in creation order (`tf.global_variables()`).
    pub fn global_variables(&self) -> Vec<Variable> {
        let inner = self.lock();
        inner.order.iter().map(|n| inner.vars[n].clone()).collect()
    }

    /// A variable by full name.
    pub fn get(&self, name: &str) -> Option<Variable> {
        self.lock().vars.get(name).cloned()
    }

    /// Replaces a variable's value (restore, fine-tune); the shape must match.
    pub fn assign(&self, name: &str, value: &Tensor) -> Result<()> {
        let var = self.get(name).ok_or_else(|| NnError::Variable {
            name: name.to_string(),
            reason: "does not exist in the model".to_string(),
        })?;
        if var.var.dims() != value.dims() {
            return Err(NnError::Variable {
                name: name.to_string(),
                reason: format!("shape mismatch: the model has {:?}, the value has {:?}", var.var.dims(), value.dims()),
            });
        }
        let value = value.to_dtype(var.var.dtype()).and_then(|v| v.to_device(&self.device));
        var.var.set(&value.map_err(NnError::candle(name))?).map_err(NnError::candle(name))
    }

    /// Marks a variable trainable or frozen (TF-slim's `trainable_scopes`
    /// freezes everything outside them); an unknown name is an error.
    pub fn set_trainable(&self, name: &str, trainable: bool) -> Result<()> {
        let mut inner = self.lock();
        let var = inner.vars.get_mut(name).ok_or_else(|| NnError::Variable {
            name: name.to_string(),
            reason: "does not exist in the model".to_string(),
        })?;
        var.trainable = trainable;
        var.frozen.store(!trainable, Ordering::Relaxed);
        Ok(())
    }

    /// The int64 `global_step`: training steps taken.
    pub fn global_step(&self) -> i64 {
        self.lock().global_step
    }

    /// Sets `global_step` (restore).
    pub fn set_global_step(&self, step: i64) {
        self.lock().global_step = step;
    }

    /// Adds one to `global_step` and returns the new value.
    pub fn increment_global_step(&self) -> i64 {
        let mut inner = self.lock();
        inner.global_step += 1;
        inner.global_step
    }

    /// The number of elements of the trainable variables.
    pub fn trainable_parameter_count(&self) -> usize {
        self.trainable_variables().iter().map(|v| v.var.elem_count()).sum()
    }

    /// The initializer stream's state (for checkpoints).
    pub fn rng_state(&self) -> [u64; 4] {
        self.lock().rng.state()
    }

    /// Restores the initializer stream's state.
    pub fn set_rng_state(&self, state: [u64; 4]) {
        self.lock().rng = Rng::from_state(state);
    }
}

/// A name prefix and reuse mode over a [`VarStore`] (TF's `variable_scope`).
#[derive(Debug, Clone)]
pub struct Scope {
    store: VarStore,
    prefix: String,
    reuse: Reuse,
}

impl Scope {
    /// A nested scope: `conv1` under `block1` is `block1/conv1`. Reuse is inherited.
    pub fn sub(&self, name: &str) -> Scope {
        Scope { store: self.store.clone(), prefix: self.full_name(name), reuse: self.reuse }
    }

    /// The same scope with another reuse mode.
    pub fn with_reuse(&self, reuse: Reuse) -> Scope {
        Scope { reuse, ..self.clone() }
    }

    /// The scope's prefix (`""` at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store.
    pub fn store(&self) -> &VarStore {
        &self.store
    }

    /// `prefix/name`.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}/{name}", self.prefix) }
    }

    /// TF's `get_variable`: creates `prefix/name` with `init`, or returns it
    /// when this scope reuses. Accidental reuse, a missing variable under
    /// reuse, and a shape mismatch are errors naming the variable.
    ///
    /// ```
    /// use ferroflow_nn::{Init, Reuse, VarStore};
    /// let store = VarStore::new(candle_core::Device::Cpu, 0);
    /// let conv1 = store.root().sub("conv1");
    /// let w = conv1.get_variable("weights", &[8, 3, 3, 3], Init::GlorotUniform, true).unwrap();
    /// assert!(conv1.get_variable("weights", &[8, 3, 3, 3], Init::GlorotUniform, true).is_err());
    /// let again = conv1.with_reuse(Reuse::Yes).get_variable("weights", &[8, 3, 3, 3], Init::Zeros, true).unwrap();
    /// let values = |v: &candle_core::Var| v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    /// assert_eq!(values(&again), values(&w)); // the same variable, not re-initialised
    /// assert_eq!(store.trainable_variables()[0].name, "conv1/weights");
    /// ```
    pub fn get_variable(&self, name: &str, shape: &[usize], init: Init, trainable: bool) -> Result<Var> {
        let full = self.full_name(name);
        let mut inner = self.store.lock();
        if let Some(existing) = inner.vars.get(&full) {
            if self.reuse == Reuse::No {
                return Err(NnError::Variable {
                    name: full,
                    reason: "already exists (accidental reuse?); create the scope with reuse to share it".into(),
                });
            }
            if existing.var.dims() != shape {
                return Err(NnError::Variable {
                    name: full,
                    reason: format!("shape mismatch: it exists as {:?}, asked for {:?}", existing.var.dims(), shape),
                });
            }
            return Ok(existing.var.clone());
        }
        if self.reuse == Reuse::Yes {
            return Err(NnError::Variable {
                name: full,
                reason: "does not exist, and the scope only reuses (create it first, or use Reuse::Auto)".into(),
            });
        }
        let tensor = init.tensor(shape, &mut inner.rng, &self.store.device)?;
        let var = Var::from_tensor(&tensor).map_err(NnError::candle(full.clone()))?;
        inner.order.push(full.clone());
        let frozen = Arc::new(AtomicBool::new(!trainable));
        inner.vars.insert(full.clone(), Variable { name: full, var: var.clone(), trainable, frozen });
        Ok(var)
    }

    /// [`get_variable`](Self::get_variable) of a trainable variable, as the
    /// [`Param`] a layer holds (its forward value detached while frozen).
    pub fn get_param(&self, name: &str, shape: &[usize], init: Init) -> Result<Param> {
        let var = self.get_variable(name, shape, init, true)?;
        let full = self.full_name(name);
        let frozen = self
            .store
            .lock()
            .vars
            .get(&full)
            .map(|v| v.frozen.clone())
            .ok_or_else(|| NnError::Variable { name: full, reason: "vanished from the store".into() })?;
        Ok(Param { var, frozen })
    }

    /// Creates a non-trainable float variable initialised from `value` (e.g.
    /// optimizer slots).
    pub fn get_variable_from(&self, name: &str, value: &Tensor, trainable: bool) -> Result<Var> {
        let var = self.get_variable(name, value.dims(), Init::Zeros, trainable)?;
        let value = value.to_dtype(DType::F32).map_err(NnError::candle(name))?;
        var.set(&value).map_err(NnError::candle(name))?;
        Ok(var)
    }
}
