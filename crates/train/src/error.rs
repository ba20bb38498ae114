//! Errors of training: each names the setting, variable, step or file at fault.

use ferroflow_nn::NnError;

/// Errors of the training layer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A model, variable or op error.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// An invalid setting.
    #[error("{key}: {reason}")]
    Config {
        /// The setting (`optimizer.beta1`, `train.batch_size`, …).
        key: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error("step {step}: the loss is {loss}; training stopped (lower the learning rate, or check the data)")]
    NonFiniteLoss {
        /// The global step.
        step: i64,
        /// The loss value.
        loss: f32,
    },
    /// Between data-parallel ranks (a rank missing at a synchronisation, …).
    #[error(transparent)]
    Distributed(#[from] ferroflow_dist::DistError),
    /// The input pipeline failed.
    #[error(transparent)]
    Data(#[from] ferroflow_data::PipelineError),
    /// Writing summaries failed.
    #[error(transparent)]
    Summary(#[from] tfrecord::EventError),
    /// The device asked for cannot be had (no GPU of that number, no driver).
    #[error("device {name}: {reason}")]
    Device {
        /// As given (`cuda:1`).
        name: String,
        /// What is missing.
        reason: String,
    },
    /// A candle error outside any layer.
    #[error("{context}: {cause}")]
    Candle {
        /// Where.
        context: String,
        /// candle's error.
        cause: candle_core::Error,
    },
    /// A checkpoint cannot be read, restored or captured.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint file (or variable).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Writing a checkpoint failed (disk full, permissions); the previous
    /// checkpoint is still complete and listed.
    #[error("saving checkpoint {path} failed: {cause}; the previous checkpoint is intact and still listed")]
    Save {
        /// The file being written.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A train dir's latest checkpoint could not be loaded; an older listed
    /// one is intact.
    #[error("{error}; the newest intact checkpoint listed there is {intact}: pass --checkpoint {intact} to use it")]
    LatestDamaged {
        /// Why the latest could not be loaded.
        error: Box<TrainError>,
        /// The newest intact listed checkpoint.
        intact: String,
    },
    /// A file operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
}

impl TrainError {
    /// Wraps a candle error with where it happened.
    pub fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> TrainError {
        let context = context.into();
        move |cause| TrainError::Candle { context, cause }
    }

    /// A config error.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> TrainError {
        TrainError::Config { key: key.into(), reason: reason.into() }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
