//! What a run trains its model to output, and how a batch is scored:
//! class labels with the cross-entropy, float targets (standardised) with a
//! regression loss, or the input image itself (image-to-image) per pixel.

use candle_core::{Device, Tensor};
use ferroflow_data::Batch;
use ferroflow_nn::ops;

use crate::data_source::class_labels;
use crate::error::{Result, TrainError};
use crate::reconstruction::{PixelScale, add_noise};
use crate::regression::{RegressionLoss, TargetStats, regression_losses};
use crate::trainer::batch_input;

/// A run's task.
#[derive(Debug, Clone, PartialEq)]
pub enum Objective {
    /// Class labels; sparse softmax cross-entropy.
    Classification {
        /// The model's outputs (logits).
        classes: usize,
        /// Label smoothing in training (`train.label_smoothing`).
        label_smoothing: f64,
        /// The data's label `i` is output `i + labels_offset` (`model.labels_offset`).
        labels_offset: usize,
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
    /// The input image as the target; the model sees it with noise.
    Reconstruction {
        /// The per-pixel loss (`mse` or `mae`, in model units).
        loss: RegressionLoss,
        /// Input noise, 0–255 pixel units.
        noise_stddev: f64,
        /// The targets are the batch's paired images (else the input itself).
        paired: bool,
        /// Model values ↔ pixels.
        scale: PixelScale,
        /// Seeds the noise.
        seed: u64,
    },
}

impl Objective {
    /// The model's output width: classes, or targets.
    pub fn outputs(&self) -> usize {
        match self {
            Objective::Classification { classes, .. } => *classes,
            Objective::Regression { stats, .. } => stats.len(),
            Objective::Reconstruction { .. } => 0,
        }
    }

    /// The data's class labels as the model's output indices (shifted by
    /// `model.labels_offset`); other objectives' labels unchanged.
    pub fn model_labels(&self, labels: &[i64]) -> Vec<i64> {
        match self {
            Objective::Classification { labels_offset, .. } if *labels_offset > 0 => {
                labels.iter().map(|&l| l + *labels_offset as i64).collect()
            }
            _ => labels.to_vec(),
        }
    }

    /// True for image-to-image training.
    pub fn is_reconstruction(&self) -> bool {
        matches!(self, Objective::Reconstruction { .. })
    }

    /// The model's input for `batch`: its images, plus noise keyed by `key` for a
    /// denoiser.
    ///
    /// # Shapes
    /// `[N, C, H, W]`.
    pub fn inputs(&self, batch: &Batch, device: &Device, key: [u64; 2]) -> Result<Tensor> {
        let x = batch_input(batch, device)?;
        match self {
            Objective::Reconstruction { noise_stddev, scale, seed, .. } => {
                add_noise(&x, *noise_stddev, scale, *seed, key)
            }
            _ => Ok(x),
        }
    }

    /// True for regression.
    pub fn is_regression(&self) -> bool {
        matches!(self, Objective::Regression { .. })
    }

    /// The batch's labels `[N]` (u32), its standardised targets `[N, T]`, or its
    /// images `[N, C, H, W]` (image-to-image).
    pub fn targets(&self, batch: &Batch, device: &Device) -> Result<Tensor> {
        match self {
            Objective::Reconstruction { paired: true, .. } => {
                let [c, h, w] = batch.shape;
                if batch.targets.len() != batch.size * c * h * w {
                    return Err(TrainError::config(
                        "data",
                        format!(
                            "a batch of {} examples has {} target values, not [{c}, {h}, {w}] images",
                            batch.size,
                            batch.targets.len()
                        ),
                    ));
                }
                Tensor::from_slice(&batch.targets, (batch.size, c, h, w), device).map_err(TrainError::candle("targets"))
            }
            Objective::Reconstruction { .. } => batch_input(batch, device),
            Objective::Classification { classes, .. } => {
                let labels = class_labels(&self.model_labels(&batch.labels), *classes)?;
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
            Objective::Classification { classes, label_smoothing, .. } => Ok(if train && *label_smoothing > 0.0 {
                let smoothed = ops::smoothed_one_hot(targets, *classes, *label_smoothing)?;
                ops::softmax_cross_entropy(outputs, &smoothed)?
            } else {
                ops::sparse_softmax_cross_entropy(outputs, targets)?
            }),
            Objective::Regression { loss, huber_delta, .. } => regression_losses(outputs, targets, *loss, *huber_delta),
            Objective::Reconstruction { loss, .. } => {
                let flat = |t: &Tensor| t.flatten_from(1).map_err(TrainError::candle("reconstruction loss"));
                regression_losses(&flat(outputs)?, &flat(targets)?, *loss, 1.0)
            }
        }
    }
}
