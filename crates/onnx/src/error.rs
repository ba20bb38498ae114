//! What can go wrong exporting a model to ONNX.

/// An export error; each names the layer or variable and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The model has no variable the layer needs.
    #[error("layer {layer}: the model has no variable {variable}")]
    MissingVariable {
        /// The layer's scope.
        layer: String,
        /// The variable's TF name.
        variable: String,
    },
    /// A variable's shape is not what its layer needs.
    #[error("variable {variable} is {found:?}, but layer {layer} needs {expected:?}")]
    VariableShape {
        /// The layer's scope.
        layer: String,
        /// The variable's TF name.
        variable: String,
        /// The shape the layer needs.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// The declaration and the built model disagree (different layer counts).
    #[error("model {model:?}: {reason}")]
    Model {
        /// The model's name.
        model: String,
        /// What disagrees.
        reason: String,
    },
    /// A layer whose inference semantics ONNX cannot express as exported.
    #[error("layer {layer}: {reason}")]
    Unsupported {
        /// The layer's scope.
        layer: String,
        /// Why.
        reason: String,
    },
    /// Reading a variable's values failed.
    #[error("variable {variable}: {reason}")]
    Tensor {
        /// The variable's TF name.
        variable: String,
        /// candle's message.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
