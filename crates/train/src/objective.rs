//! What a run trains its model to output, and how a batch is scored:
//! class labels with the cross-entropy, or float targets (standardised)
//! with a regression loss.

use candle_core::{Device, Tensor};
use ferroflow_data::Batch;
use ferroflow_nn::ops;

use crate::data_source::class_labels;
use crate::error::{Result, TrainError};
use crate::regression::{RegressionLoss, TargetStats, regression_losses};

/// A run's task.
#[derive(Debug, Clone, PartialEq)]
pub enum Objective {
    /// Class labels; sparse softmax cross-entropy.
    Classification {
        /// The model's outputs (logits).
        classes: usize,
        /// Label smoothing in training (`train.label_smoothing`).
        label_smoothing: f64,
    },
    /// Float targets, standardised with `stats`.
    Regression {
        /// The training split's statistics (identity without `data.normalize_targets`).
        stats: TargetStats,
        /// The loss.
        loss: RegressionLoss,
        /// Huber's δ (in standardised units).
        huber_delta: f64,
        /// The targets' names, for reports.
        names: Vec<String>,
    },
}

impl Objective {
    /// The model's output width: classes, or targets.
    pub fn outputs(&self) -> usize {
        match self {
            Objective::Classification { classes, .. } => *classes,
            Objective::Regression { stats, .. } => stats.len(),
        }
    }

    /// True for regression.
    pub fn is_regression(&self) -> bool {
        matches!(self, Objective::Regression { .. })
    }

    /// The batch's labels `[N]` (u32), or its standardised targets `[N, T]`.
    pub fn targets(&self, batch: &Batch, device: &Device) -> Result<Tensor> {
        match self {
            Objective::Classification { classes, .. } => {
                let labels = class_labels(&batch.labels, *classes)?;
                Tensor::from_vec(labels, batch.size, device).map_err(TrainError::candle("labels"))
            }
            Objective::Regression { stats, .. } => {
                let n = stats.len();
                if batch.targets.len() != batch.size * n {
                    return Err(TrainError::config(
                        "data",
                        format!(
                            "a batch of {} examples has {} target values; the model predicts {n} per example",
                            batch.size,
                            batch.targets.len()
                        ),
                    ));
                }
                let mut t = batch.targets.clone();
                stats.normalize(&mut t);
                Tensor::from_vec(t, (batch.size, n), device).map_err(TrainError::candle("targets"))
            }
        }
    }

    /// Per-example losses of the model's outputs against [`targets`](Self::targets); label
    /// smoothing only in training, as TF-slim applies it to the training loss.
    ///
    /// # Shapes
    /// `outputs`: `[N, outputs]`; `targets`: `[N]` or `[N, T]` → `[N]`.
    pub fn losses(&self, outputs: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Objective::Classification { classes, label_smoothing } => Ok(if train && *label_smoothing > 0.0 {
                let smoothed = ops::smoothed_one_hot(targets, *classes, *label_smoothing)?;
                ops::softmax_cross_entropy(outputs, &smoothed)?
            } else {
                ops::sparse_softmax_cross_entropy(outputs, targets)?
            }),
            Objective::Regression { loss, huber_delta, .. } => regression_losses(outputs, targets, *loss, *huber_delta),
        }
    }
}
