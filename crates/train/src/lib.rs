//! ferroflow's training layer: optimizers with TF1's update rules and slot
//! names, learning-rate schedules as pure functions of `global_step`, the
//! train/validate loop, metrics, and TensorBoard summaries.

mod config;
mod data_source;
mod error;
mod metrics;
pub mod optimizer;
pub mod schedule;
mod summary;
mod trainer;

pub use config::{DataConfig, LoopConfig, ModelConfig, Normalize, SummaryConfig, TrainConfig};
pub use data_source::DataSource;
pub use error::{Result, TrainError};
pub use metrics::Metrics;
pub use summary::Summaries;
pub use trainer::{EvalReport, Progress, TrainReport, device, model_spec, train};
