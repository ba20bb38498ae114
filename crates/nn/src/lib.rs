//! ferroflow's model layer: layers with TensorFlow's exact semantics on
//! candle tensors and autograd, the variable store, and the model zoo.
//!
//! Layout: NCHW activations and OIHW kernels (candle's); TensorFlow's
//! NHWC/HWIO appear only at the edges (golden tests, TF interop).

mod error;
mod init;
pub mod kernels;
mod layer;
pub mod layers;
mod model;
pub mod ops;
mod spec;
mod var_store;
mod zoo;

pub use error::{NnError, Result};
pub use init::{Init, fans};
pub use layer::{Activation, Layer};
pub use model::{LayerSummary, Model};
pub use spec::{BatchNormSpec, LayerSpec, ModelSpec, Size2};
pub use var_store::{GLOBAL_STEP, Param, Reuse, Scope, VarStore, Variable, grad_enabled, no_grad};
pub use zoo::{ZOO, ZooModel, zoo_model};
