//! ferroflow's training layer: optimizers with TF1's update rules and slot
//! names, learning-rate schedules as pure functions of `global_step`, the
//! train/validate loop, metrics, checkpoints (save, resume, warm start),
//! evaluation and prediction from a checkpoint, and TensorBoard summaries.

mod bench;
mod bench_allreduce;
pub mod checkpoint;
mod config;
mod data_source;
mod device;
mod error;
mod evaluate;
mod metrics;
pub mod monitor;
pub mod npy;
mod objective;
pub mod optimizer;
mod predict;
pub mod reconstruction;
pub mod regression;
mod replicas;
mod restored;
pub mod schedule;
mod summary;
mod trainer;

pub use bench::{BenchConfig, BenchReport, BenchStep, bench_train, bench_train_on, weights_digest};
pub use bench_allreduce::{AllReduceBenchConfig, AllReduceModel, AllReduceReport, bench_allreduce};
pub use config::{
    CheckpointConfig, CheckpointFormat, ClassWeights, DataConfig, Distributed, LoopConfig, Loss, ModelConfig,
    Normalize, OnCorrupt, OnSaveError, SummaryConfig, Targets, TrainConfig, WarmStartConfig,
};
pub use data_source::{DataSource, IN_MEMORY_LIMIT};
pub use device::{describe_device, device};
pub use error::{Result, TrainError};
pub use evaluate::{CheckpointEval, EvalOptions, EvalReport, evaluate, evaluate_checkpoint};
pub use metrics::Metrics;
pub use objective::Objective;
pub use predict::{PredictOptions, Prediction, collect_images, predict, read_npy_batch};
pub use restored::{BareCheckpoint, RestoredModel, default_preprocessing, read_labels};
pub use summary::Summaries;
pub use trainer::{Progress, TrainReport, model_spec, train, train_on};
