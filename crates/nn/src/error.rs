//! The errors of model building and running.

/// Errors of ops, layers, the variable store and model declarations. Each
/// names the layer, variable or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// An error from candle, with the op or layer it happened in.
    #[error("{context}: {cause}")]
    Candle {
        /// The op or layer.
        context: String,
        /// candle's error.
        cause: candle_core::Error,
    },
    /// An input or parameter of the wrong shape, or a configuration TF rejects.
    #[error("{context}: {reason}")]
    Shape {
        /// The op or layer.
        context: String,
        /// What is wrong, with the shapes involved.
        reason: String,
    },
    /// The variable store refused a get-or-create.
    #[error("variable {name}: {reason}")]
    Variable {
        /// The full variable name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An invalid model declaration (TOML layer list or zoo options).
    #[error("{context}: {reason}")]
    Config {
        /// The layer or key.
        context: String,
        /// What is wrong.
        reason: String,
    },
}

impl NnError {
    /// Wraps a candle error with where it happened.
    pub fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> NnError {
        let context = context.into();
        move |cause| NnError::Candle { context, cause }
    }

    /// A shape error.
    pub fn shape(context: impl Into<String>, reason: impl Into<String>) -> NnError {
        NnError::Shape { context: context.into(), reason: reason.into() }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, NnError>;
