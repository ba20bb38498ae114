//! Watching a validation metric: early stopping (Keras's `EarlyStopping`)
//! and the best checkpoint (`checkpoint.keep_best`). The state (best value,
//! validations without improvement, the step training stopped at) goes into
//! every checkpoint, so a resumed run stops where an uninterrupted one does.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::evaluate::EvalReport;
use crate::objective::Objective;

/// The metrics a monitor can watch: `validation/<name>`.
pub const METRICS: &[&str] = &["loss", "accuracy", "top5", "mse", "mae", "rmse", "r2", "psnr"];

/// Whether lower or higher is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Lower is better (losses, errors).
    Min,
    /// Higher is better (accuracies, R²).
    Max,
}

/// `train.early_stopping`: stop when the metric has not improved by more
/// than `min_delta` for `patience` validations in a row (Keras's
/// `EarlyStopping(monitor, min_delta, patience, mode)`, counted in
/// validations, every `train.validate_every` steps, instead of epochs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    /// `validation/loss` (default); `validation/accuracy` or `top5` (classifiers);
    /// `validation/mse`, `mae`, `rmse`, `r2` (regression); `validation/mse`, `mae`,
    /// `psnr` (image-to-image, in pixel units).
    pub metric: String,
    /// `min` or `max`; default: by the metric (`max` for accuracy, top5, r2 and psnr).
    pub mode: Option<Mode>,
    /// Validations without improvement before stopping (default 5).
    pub patience: u64,
    /// The smallest change that counts as an improvement (default 0).
    pub min_delta: f64,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        EarlyStoppingConfig { metric: "validation/loss".into(), mode: None, patience: 5, min_delta: 0.0 }
    }
}

/// The monitor's state, checkpointed as `ferroflow.monitor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MonitorState {
    /// The metric watched (`validation/loss`, …); a resume watching another
    /// one starts over.
    #[serde(default)]
    pub metric: String,
    /// Its mode.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The best value so far.
    pub best: Option<f64>,
    /// The step of the best value.
    pub best_step: i64,
    /// Validations since the last improvement.
    pub wait: u64,
    /// The step early stopping ended training at, once it has.
    pub stopped_at: Option<i64>,
}

/// What one validation meant to the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The metric improved on the best (always true for the first validation).
    pub improved: bool,
    /// Early stopping says stop now.
    pub stop: bool,
}

/// Watches one metric of the validation reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitor {
    /// `validation/<name>`.
    pub metric: String,
    name: String,
    mode: Mode,
    min_delta: f64,
    /// `None`: no early stopping (only the best is tracked).
    patience: Option<u64>,
    /// The state.
    pub state: MonitorState,
}

impl Monitor {
    /// A monitor of `metric` (`validation/loss`, …), stopping after
    /// `patience` validations without improvement when `patience` is given.
    pub fn new(metric: &str, mode: Option<Mode>, min_delta: f64, patience: Option<u64>) -> Result<Monitor> {
        let name = metric.strip_prefix("validation/").filter(|n| METRICS.contains(n)).ok_or_else(|| {
            TrainError::config(
                "train.early_stopping.metric",
                format!(
                    "{metric:?}: expected one of {}",
                    METRICS.iter().map(|m| format!("validation/{m}")).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if !(min_delta >= 0.0 && min_delta.is_finite()) {
            return Err(TrainError::config("train.early_stopping.min_delta", format!("must be >= 0, got {min_delta}")));
        }
        let mode =
            mode.unwrap_or(if ["accuracy", "top5", "r2", "psnr"].contains(&name) { Mode::Max } else { Mode::Min });
        Ok(Monitor {
            metric: metric.to_string(),
            name: name.to_string(),
            mode,
            min_delta,
            patience,
            state: MonitorState { metric: metric.to_string(), mode: Some(mode), ..Default::default() },
        })
    }

    /// Continues from a checkpoint's state: adopted when it watched the same metric in
    /// the same mode (without early stopping now, a stop it recorded is lifted);
    /// otherwise the monitor starts over, and the returned note says so.
    pub fn restore(&mut self, state: &MonitorState) -> Option<String> {
        if state.metric != self.metric || state.mode != Some(self.mode) {
            return Some(format!(
                "the checkpoint's validation monitor watched {} ({:?}); watching {} ({:?}) from here on, from scratch",
                if state.metric.is_empty() { "another metric" } else { &state.metric },
                state.mode,
                self.metric,
                self.mode
            ));
        }
        self.state = state.clone();
        if self.patience.is_none() {
            self.state.stopped_at = None;
        }
        None
    }

    /// Checks before training that the metric is one a model of this kind reports.
    pub fn check_task(&self, objective: &Objective) -> Result<()> {
        let (kind, reported): (&str, &[&str]) = match objective {
            Objective::Classification { .. } => ("a classifier", &["loss", "accuracy", "top5"]),
            Objective::Regression { .. } => ("a regression model", &["loss", "mse", "mae", "rmse", "r2"]),
            Objective::Reconstruction { .. } => ("an image-to-image model", &["loss", "mse", "mae", "psnr"]),
        };
        if !reported.contains(&self.name.as_str()) {
            return Err(TrainError::config(
                "train.early_stopping.metric",
                format!("{} is not reported for {kind} (validation/loss always is)", self.metric),
            ));
        }
        Ok(())
    }

    /// The monitored value of `report`; an error when the report has no such
    /// metric (e.g. `validation/r2` of a classifier).
    pub fn value(&self, report: &EvalReport) -> Result<f64> {
        let (regression, images) = (report.regression.as_ref(), report.reconstruction.as_ref());
        let v = match (self.name.as_str(), regression, images) {
            ("loss", _, _) => Some(report.loss),
            ("accuracy", None, None) => Some(report.accuracy),
            ("top5", None, None) => Some(report.top5),
            ("mse", Some(r), _) => Some(r.mse),
            ("mae", Some(r), _) => Some(r.mae),
            ("rmse", Some(r), _) => Some(r.rmse),
            ("r2", Some(r), _) => Some(r.r2),
            ("mse", _, Some(r)) => Some(r.mse),
            ("mae", _, Some(r)) => Some(r.mae),
            ("psnr", _, Some(r)) => Some(r.psnr),
            _ => None,
        };
        v.ok_or_else(|| {
            TrainError::config(
                "train.early_stopping.metric",
                format!("{} is not in this validation report", self.metric),
            )
        })
    }

    /// Is `value` better than the best by more than `min_delta`? (Keras: `monitor_op(value
    /// - min_delta, best)` with the delta's sign flipped for `min`.)
    ///
    /// ```
    /// use ferroflow_train::monitor::{Mode, Monitor};
    /// let mut m = Monitor::new("validation/loss", None, 0.1, Some(2)).unwrap();
    /// m.state.best = Some(1.0);
    /// assert!(m.improves(0.85) && !m.improves(0.95));
    /// let mut m = Monitor::new("validation/accuracy", None, 0.0, None).unwrap();
    /// m.state.best = Some(0.5);
    /// assert!(m.improves(0.6) && !m.improves(0.5)); // max, by the metric
    /// ```
    pub fn improves(&self, value: f64) -> bool {
        // A NaN is never an improvement (Keras starts from ±inf and compares).
        if !value.is_finite() {
            return false;
        }
        match self.state.best {
            None => true,
            Some(best) => match self.mode {
                Mode::Min => value + self.min_delta < best,
                Mode::Max => value - self.min_delta > best,
            },
        }
    }

    /// Takes the validation at `step` into account.
    pub fn observe(&mut self, report: &EvalReport, step: i64) -> Result<Observation> {
        let value = self.value(report)?;
        let improved = self.improves(value);
        if improved {
            self.state.best = Some(value);
            self.state.best_step = step;
            self.state.wait = 0;
        } else {
            self.state.wait += 1;
        }
        let stop = self.patience.is_some_and(|p| !improved && self.state.wait >= p);
        if stop {
            self.state.stopped_at = Some(step);
        }
        Ok(Observation { improved, stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconstruction::PixelScale;
    use crate::regression::RegressionLoss;

    #[test]
    fn restores_only_the_same_metric_and_lifts_a_stop_without_early_stopping() {
        let mut es = Monitor::new("validation/loss", None, 0.0, Some(1)).unwrap();
        es.state.best = Some(0.5);
        es.state.stopped_at = Some(40);
        let saved = es.state.clone();
        // The same metric and mode: adopted, stop included.
        let mut again = Monitor::new("validation/loss", None, 0.0, Some(1)).unwrap();
        assert!(again.restore(&saved).is_none());
        assert_eq!(again.state.stopped_at, Some(40));
        // keep_best alone (no patience): the stop is lifted, the best kept.
        let mut best_only = Monitor::new("validation/loss", Some(Mode::Min), 0.0, None).unwrap();
        assert!(best_only.restore(&saved).is_none());
        assert_eq!((best_only.state.stopped_at, best_only.state.best), (None, Some(0.5)));
        // Another metric: from scratch, with a note.
        let mut acc = Monitor::new("validation/accuracy", None, 0.0, Some(1)).unwrap();
        let note = acc.restore(&saved).unwrap();
        assert!(note.contains("validation/loss") && note.contains("validation/accuracy"), "{note}");
        assert_eq!(acc.state.best, None);
        // NaN never improves.
        assert!(!acc.improves(f64::NAN));
    }

    #[test]
    fn metrics_are_checked_against_the_task() {
        let images = Objective::Reconstruction {
            loss: RegressionLoss::Mse,
            noise_stddev: 0.0,
            paired: false,
            scale: PixelScale { mean: [0.0; 3], k: [1.0; 3] },
            seed: 0,
        };
        let classes = Objective::Classification { classes: 3, label_smoothing: 0.0, labels_offset: 0 };
        let psnr = Monitor::new("validation/psnr", None, 0.0, Some(1)).unwrap();
        assert!(psnr.check_task(&images).is_ok() && psnr.check_task(&classes).is_err());
        let acc = Monitor::new("validation/accuracy", None, 0.0, Some(1)).unwrap();
        let e = acc.check_task(&images).unwrap_err().to_string();
        assert!(e.contains("not reported for an image-to-image model"), "{e}");
        assert_eq!(psnr.mode, Mode::Max);
    }
}
