//! Watching a validation metric: early stopping (Keras's `EarlyStopping`)
//! and the best checkpoint (`checkpoint.keep_best`). The state (best value,
//! validations without improvement, the step training stopped at) goes into
//! every checkpoint, so a resumed run stops where an uninterrupted one does.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::evaluate::EvalReport;

/// The metrics a monitor can watch: `validation/<name>`.
pub const METRICS: &[&str] = &["loss", "accuracy", "top5", "mse", "mae", "rmse", "r2"];

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
    /// `validation/loss` (default), `validation/accuracy`, `validation/top5`,
    /// `validation/mse`, `validation/mae`, `validation/rmse` or `validation/r2`.
    pub metric: String,
    /// `min` or `max`; default: by the metric (`max` for accuracy, top5 and r2).
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
        let mode = mode.unwrap_or(if ["accuracy", "top5", "r2"].contains(&name) { Mode::Max } else { Mode::Min });
        Ok(Monitor {
            metric: metric.to_string(),
            name: name.to_string(),
            mode,
            min_delta,
            patience,
            state: MonitorState::default(),
        })
    }

    /// Checks before training that the metric is one a model of this kind reports.
    pub fn check_task(&self, regression: bool) -> Result<()> {
        let classification_only = ["accuracy", "top5"].contains(&self.name.as_str());
        let regression_only = ["mse", "mae", "rmse", "r2"].contains(&self.name.as_str());
        if (regression && classification_only) || (!regression && regression_only) {
            let kind = if regression { "a regression model" } else { "a classifier" };
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
        let regression = report.regression.as_ref();
        let v = match (self.name.as_str(), regression) {
            ("loss", _) => Some(report.loss),
            ("accuracy", None) => Some(report.accuracy),
            ("top5", None) => Some(report.top5),
            ("mse", Some(r)) => Some(r.mse),
            ("mae", Some(r)) => Some(r.mae),
            ("rmse", Some(r)) => Some(r.rmse),
            ("r2", Some(r)) => Some(r.r2),
            _ => None,
        };
        v.ok_or_else(|| {
            let kind = if regression.is_some() { "a regression model" } else { "a classifier" };
            TrainError::config(
                "train.early_stopping.metric",
                format!("{} is not reported for {kind} (loss is always)", self.metric),
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
