//! ferroflow's model layer: layers with TensorFlow's exact semantics on
//! candle tensors and autograd, the variable store, and the model zoo.
//!
//! Layout: NCHW activations and OIHW kernels (candle's); TensorFlow's
//! NHWC/HWIO appear only at the edges (golden tests, TF interop).

mod error;
pub mod ops;

pub use error::{NnError, Result};
