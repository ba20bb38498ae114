//! Regression: float targets (`ferroflow prepare --labels-csv`), their
//! normalisation, the losses and the metrics.
//!
//! Targets are standardised with the training split's per-target mean and
//! standard deviation (`data.normalize_targets`, on by default), so every
//! target weighs the same in the loss whatever its unit; the statistics go
//! into the checkpoint (`ferroflow.targets`) and predictions are mapped
//! back (`value = output * std + mean`). Metrics are always in the targets'
//! own units.

use std::path::PathBuf;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use tfrecord::{Example, FileRecordReader, ReaderOptions};

use crate::error::{Result, TrainError};

/// A regression loss, averaged over the targets of an example (as Keras's
/// losses average over the last axis) and then over the batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegressionLoss {
    /// `(y - ŷ)²` (`tf.keras.losses.MeanSquaredError`).
    #[default]
    Mse,
    /// `|y - ŷ|` (`tf.keras.losses.MeanAbsoluteError`).
    Mae,
    /// `0.5 e²` for `|e| <= δ`, else `δ (|e| - 0.5 δ)` (`tf.keras.losses.Huber`).
    Huber,
}

/// Per-target mean and standard deviation of the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    /// Per-target mean.
    pub mean: Vec<f32>,
    /// Per-target standard deviation (at least 1e-6, so constant targets divide safely).
    pub std: Vec<f32>,
}

impl TargetStats {
    /// No normalisation for `n` targets (mean 0, std 1).
    pub fn identity(n: usize) -> Self {
        TargetStats { mean: vec![0.0; n], std: vec![1.0; n] }
    }

    /// The statistics of `rows` (each `n` targets), in f64.
    ///
    /// ```
    /// use ferroflow_train::regression::TargetStats;
    /// let s = TargetStats::of(&[1.0, 10.0, 3.0, 10.0], 2);
    /// assert_eq!(s.mean, [2.0, 10.0]);
    /// assert_eq!(s.std, [1.0, 1e-6]); // population std; a constant target gets 1e-6
    /// ```
    pub fn of(rows: &[f32], n: usize) -> Self {
        let count = (rows.len() / n.max(1)).max(1) as f64;
        let mut sum = vec![0f64; n];
        let mut sq = vec![0f64; n];
        for row in rows.chunks_exact(n.max(1)) {
            for (i, &v) in row.iter().enumerate() {
                sum[i] += f64::from(v);
                sq[i] += f64::from(v) * f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sq.iter().zip(&mean).map(|(q, m)| ((q / count - m * m).max(0.0).sqrt() as f32).max(1e-6)).collect();
        TargetStats { mean: mean.iter().map(|&m| m as f32).collect(), std }
    }

    /// The number of targets.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// True for zero targets.
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// `(y - mean) / std`, per target, in place.
    pub fn normalize(&self, rows: &mut [f32]) {
        let n = self.len().max(1);
        for row in rows.chunks_exact_mut(n) {
            for (i, v) in row.iter_mut().enumerate() {
                *v = (*v - self.mean[i]) / self.std[i];
            }
        }
    }

    /// `y * std + mean`, per target, in place (the inverse of [`normalize`](Self::normalize)).
    pub fn denormalize(&self, rows: &mut [f32]) {
        let n = self.len().max(1);
        for row in rows.chunks_exact_mut(n) {
            for (i, v) in row.iter_mut().enumerate() {
                *v = *v * self.std[i] + self.mean[i];
            }
        }
    }
}

/// The training split's target statistics, read from its TFRecords (only the
/// `image/target` or `target` feature is used; nothing is decoded).
pub fn target_stats(files: &[PathBuf], n: usize) -> Result<TargetStats> {
    let mut rows = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let reader = FileRecordReader::open(file, ReaderOptions::default())
            .map_err(|e| TrainError::config("data.path", e.to_string()))?;
        for (i, record) in reader.enumerate() {
            let record = record.map_err(|e| TrainError::config("data.path", e.to_string()))?;
            let example = Example::from_bytes(&record.data)
                .map_err(|e| TrainError::config("data.path", format!("{name}: record {i}: {e}")))?;
            let values = ["image/target", "target"]
                .iter()
                .find_map(|k| example.floats(k).ok().filter(|v| !v.is_empty()))
                .ok_or_else(|| {
                    TrainError::config("data.path", format!("{name}: record {i} has no image/target or target floats"))
                })?;
            if values.len() != n {
                return Err(TrainError::config(
                    "data.path",
                    format!("{name}: record {i} has {} targets, dataset.json says {n}", values.len()),
                ));
            }
            rows.extend_from_slice(values);
        }
    }
    Ok(TargetStats::of(&rows, n))
}

/// Per-example regression losses.
///
/// # Shapes
/// `pred`, `target`: `[N, T]` → `[N]` (the mean over the `T` targets).
pub fn regression_losses(pred: &Tensor, target: &Tensor, loss: RegressionLoss, delta: f64) -> Result<Tensor> {
    let run = || -> candle_core::Result<Tensor> {
        let e = (pred - target)?; // [N, T]
        // |e| as e·sign(e) with the sign a constant: its gradient is sign(e), 0 at e = 0, as
        // TF's Abs gradient (candle's abs has 1 there).
        let abs = (&e * e.sign()?.detach())?;
        let per = match loss {
            RegressionLoss::Mse => e.sqr()?,
            RegressionLoss::Mae => abs,
            RegressionLoss::Huber => {
                // Keras's Huber: where(|e| <= δ, 0.5 e², δ |e| - 0.5 δ²).
                let quadratic = (e.sqr()? * 0.5)?;
                let linear = ((&abs * delta)? - 0.5 * delta * delta)?;
                abs.le(delta)?.where_cond(&quadratic, &linear)?
            }
        };
        per.mean(1) // [N]
    };
    run().map_err(TrainError::candle("regression loss"))
}

/// One target's metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetMetrics {
    /// The target's name.
    pub name: String,
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Coefficient of determination, `1 - SS_res / SS_tot` over the split
    /// (`tf.keras.metrics.R2Score`); 0 when the targets do not vary.
    pub r2: f64,
}

/// Regression metrics of an evaluation, per target and averaged over targets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionReport {
    /// Per target, in the targets' units.
    pub targets: Vec<TargetMetrics>,
    /// The mean over targets of each metric.
    pub mse: f64,
    /// Mean MAE.
    pub mae: f64,
    /// Mean RMSE.
    pub rmse: f64,
    /// Mean R².
    pub r2: f64,
}

/// Accumulates predictions and targets (in the targets' units) over batches.
#[derive(Debug, Clone)]
pub struct RegressionMetrics {
    n: usize,
    count: usize,
    sq: Vec<f64>,
    abs: Vec<f64>,
    sum_y: Vec<f64>,
    sum_y2: Vec<f64>,
}

impl RegressionMetrics {
    /// For `n` targets.
    pub fn new(n: usize) -> Self {
        RegressionMetrics {
            n,
            count: 0,
            sq: vec![0.0; n],
            abs: vec![0.0; n],
            sum_y: vec![0.0; n],
            sum_y2: vec![0.0; n],
        }
    }

    /// Adds a batch: `pred` and `target` are `[N, n]` row-major.
    pub fn add(&mut self, pred: &[f32], target: &[f32]) {
        for (p, y) in pred.chunks_exact(self.n).zip(target.chunks_exact(self.n)) {
            for i in 0..self.n {
                let (p, y) = (f64::from(p[i]), f64::from(y[i]));
                self.sq[i] += (p - y) * (p - y);
                self.abs[i] += (p - y).abs();
                self.sum_y[i] += y;
                self.sum_y2[i] += y * y;
            }
            self.count += 1;
        }
    }

    /// Examples added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The report, naming target `i` `names[i]` (or `target_i`).
    ///
    /// ```
    /// use ferroflow_train::regression::RegressionMetrics;
    /// let mut m = RegressionMetrics::new(1);
    /// m.add(&[1.0, 2.0, 4.0], &[1.0, 3.0, 5.0]);
    /// let r = m.report(&[]);
    /// assert!((r.mse - 2.0 / 3.0).abs() < 1e-12 && (r.mae - 2.0 / 3.0).abs() < 1e-12);
    /// // SS_tot = (1-3)² + 0 + (5-3)² = 8, SS_res = 2: R² = 0.75.
    /// assert!((r.r2 - 0.75).abs() < 1e-12);
    /// assert_eq!(r.targets[0].name, "target_0");
    /// ```
    pub fn report(&self, names: &[String]) -> RegressionReport {
        let c = self.count.max(1) as f64;
        let targets: Vec<TargetMetrics> = (0..self.n)
            .map(|i| {
                let mse = self.sq[i] / c;
                let ss_tot = self.sum_y2[i] - self.sum_y[i] * self.sum_y[i] / c;
                // A constant target's SS_tot is rounding noise: R² 0 rather than ±1e12.
                let r2 = if ss_tot > 1e-12 * self.sum_y2[i].max(f64::MIN_POSITIVE) {
                    1.0 - self.sq[i] / ss_tot
                } else {
                    0.0
                };
                TargetMetrics {
                    name: names.get(i).cloned().unwrap_or_else(|| format!("target_{i}")),
                    mse,
                    mae: self.abs[i] / c,
                    rmse: mse.sqrt(),
                    r2,
                }
            })
            .collect();
        let mean = |f: fn(&TargetMetrics) -> f64| targets.iter().map(f).sum::<f64>() / targets.len().max(1) as f64;
        RegressionReport {
            mse: mean(|t| t.mse),
            mae: mean(|t| t.mae),
            rmse: mean(|t| t.rmse),
            r2: mean(|t| t.r2),
            targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn losses_match_keras_definitions() {
        let d = Device::Cpu;
        let pred = Tensor::new(&[[0.0f32, 2.0], [1.0, -3.0]], &d).unwrap();
        let target = Tensor::new(&[[0.5f32, 0.0], [1.0, 0.0]], &d).unwrap();
        let v = |l, delta| regression_losses(&pred, &target, l, delta).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(RegressionLoss::Mse, 1.0), [(0.25 + 4.0) / 2.0, 9.0 / 2.0]);
        assert_eq!(v(RegressionLoss::Mae, 1.0), [(0.5 + 2.0) / 2.0, 3.0 / 2.0]);
        // Huber δ = 1: 0.5·0.25 and 1·(2 - 0.5); 0 and 1·(3 - 0.5).
        assert_eq!(v(RegressionLoss::Huber, 1.0), [(0.125 + 1.5) / 2.0, 2.5 / 2.0]);
        // The gradient flows (autograd through abs and clamp).
        let p = candle_core::Var::from_tensor(&pred).unwrap();
        let l = regression_losses(p.as_tensor(), &target, RegressionLoss::Huber, 1.0).unwrap().sum_all().unwrap();
        let g = l.backward().unwrap().get(p.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        // dL/dp = e (|e| <= δ) or δ·sign(e), over T = 2; 0 at e = 0, as TF.
        assert_eq!(g, [[-0.25, 0.5], [0.0, -0.5]]);
        let l = regression_losses(p.as_tensor(), &target, RegressionLoss::Mae, 1.0).unwrap().sum_all().unwrap();
        let g = l.backward().unwrap().get(p.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(g, [[-0.5, 0.5], [0.0, -0.5]]);
    }

    #[test]
    fn normalisation_round_trips() {
        let s = TargetStats { mean: vec![2.0, -1.0], std: vec![4.0, 0.5] };
        let mut rows = vec![6.0, -1.5, 2.0, 0.0];
        s.normalize(&mut rows);
        assert_eq!(rows, [1.0, -1.0, 0.0, 2.0]);
        s.denormalize(&mut rows);
        assert_eq!(rows, [6.0, -1.5, 2.0, 0.0]);
    }
}
