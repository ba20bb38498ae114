//! ONNX export of ferroflow models: each layer of a model's declaration as
//! ONNX nodes in inference mode (batch norm with the moving statistics,
//! dropout removed), TF's SAME padding as explicit pads, TF's variable
//! names on the initializers, opset [`OPSET`], a dynamic batch dimension.
//!
//! The input is NCHW float32 `[batch, C, H, W]`, already preprocessed (the
//! caller records how in the model's `metadata_props`); the outputs are
//! `logits` and `probabilities` (softmax) for classifiers, `output` for
//! image-to-image models.

mod error;
mod graph;
mod layers;
mod model;

pub use candle_onnx::onnx;
pub use error::{OnnxError, Result};
pub use graph::{Attr, Dim, OnnxGraph};
pub use model::{ExportOptions, INPUT, IR_VERSION, OPSET, export_model, to_bytes};
