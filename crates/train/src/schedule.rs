//! Learning-rate schedules: TF1's `tf.compat.v1.train.*_decay` functions as
//! pure functions of `global_step`.
//!
//! TF computes every schedule in float32 (the dtype of the initial learning
//! rate): the step, `decay_steps` and every parameter are cast to float32 and
//! each operation rounds to float32. [`Schedule::learning_rate`] does the same
//! operations in the same order, so its value is TF's float32 value (returned
//! widened to `f64`). A negative `global_step` is treated as 0 (TF requires
//! it to be non-negative).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

fn default_end_learning_rate() -> f64 {
    0.0001
}
fn default_power() -> f64 {
    1.0
}

/// A learning-rate schedule; `kind` selects the variant, the other keys are
/// the `tf.compat.v1.train` function's arguments (defaults are TF's):
///
/// ```
/// use ferroflow_train::schedule::Schedule;
/// let s: Schedule = serde_json::from_str(
///     r#"{"kind": "exponential_decay", "learning_rate": 0.1, "decay_steps": 100, "decay_rate": 0.5, "staircase": true}"#,
/// ).unwrap();
/// assert_eq!(s.learning_rate(199), f64::from(0.05f32));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// A fixed learning rate.
    Constant {
        /// The learning rate.
        learning_rate: f64,
    },
    /// `tf.compat.v1.train.exponential_decay`:
    /// `learning_rate * decay_rate ^ (step / decay_steps)`, the exponent
    /// floored when `staircase`.
    ExponentialDecay {
        /// The initial learning rate.
        learning_rate: f64,
        /// Steps per decay period (> 0).
        decay_steps: i64,
        /// The factor per period (> 0).
        decay_rate: f64,
        /// Decay at whole periods only (default false).
        #[serde(default)]
        staircase: bool,
    },
    /// `tf.compat.v1.train.piecewise_constant`: `values[0]` while
    /// `step <= boundaries[0]`, `values[i]` while
    /// `boundaries[i-1] < step <= boundaries[i]`, `values[n]` after the last.
    PiecewiseConstant {
        /// Strictly increasing steps.
        boundaries: Vec<i64>,
        /// One more value than boundaries.
        values: Vec<f64>,
    },
    /// `tf.compat.v1.train.polynomial_decay`:
    /// `(learning_rate - end_learning_rate) * (1 - step / decay_steps) ^ power + end_learning_rate`,
    /// with `step = min(step, decay_steps)`; with `cycle`, `decay_steps` is
    /// instead multiplied by `ceil(step / decay_steps)` (1 at step 0), so the
    /// decay restarts every `decay_steps`.
    PolynomialDecay {
        /// The initial learning rate.
        learning_rate: f64,
        /// Steps to decay over (> 0).
        decay_steps: i64,
        /// The final learning rate (default 0.0001).
        #[serde(default = "default_end_learning_rate")]
        end_learning_rate: f64,
        /// The polynomial's power (> 0, default 1: linear).
        #[serde(default = "default_power")]
        power: f64,
        /// Restart after `decay_steps` (default false).
        #[serde(default)]
        cycle: bool,
    },
    /// `tf.compat.v1.train.cosine_decay`, with an optional linear warmup:
    ///
    /// - `step < warmup_steps`: `learning_rate * step / warmup_steps` (from 0
    ///   at step 0 up to `learning_rate`);
    /// - after: TF's cosine decay of `s = step - warmup_steps` over the
    ///   remaining `D = decay_steps - warmup_steps` steps:
    ///   `learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * min(s, D) / D)) + alpha)`,
    ///   which reaches `learning_rate * alpha` at step `decay_steps` and stays there.
    ///
    /// `decay_steps` counts the warmup; with `warmup_steps = 0` (the default)
    /// this is exactly TF's `cosine_decay`.
    CosineDecay {
        /// The peak (initial, without warmup) learning rate.
        learning_rate: f64,
        /// Steps from 0 to the end of the decay, warmup included (> warmup_steps).
        decay_steps: i64,
        /// The final learning rate as a fraction of `learning_rate`, in [0, 1] (default 0).
        #[serde(default)]
        alpha: f64,
        /// Linear warmup steps (>= 0, default 0).
        #[serde(default)]
        warmup_steps: i64,
    },
    /// `tf.compat.v1.train.natural_exp_decay`:
    /// `learning_rate * exp(-decay_rate * step / decay_steps)`, the quotient
    /// floored when `staircase` (TF computes it as exponential decay with
    /// rate `exp(-decay_rate)`).
    NaturalExpDecay {
        /// The initial learning rate.
        learning_rate: f64,
        /// Steps per decay period (> 0).
        decay_steps: i64,
        /// The decay rate (>= 0).
        decay_rate: f64,
        /// Decay at whole periods only (default false).
        #[serde(default)]
        staircase: bool,
    },
    /// `tf.compat.v1.train.inverse_time_decay`:
    /// `learning_rate / (1 + decay_rate * step / decay_steps)`, the quotient
    /// floored when `staircase`.
    InverseTimeDecay {
        /// The initial learning rate.
        learning_rate: f64,
        /// Steps per decay period (> 0).
        decay_steps: i64,
        /// The decay rate (>= 0).
        decay_rate: f64,
        /// Decay at whole periods only (default false).
        #[serde(default)]
        staircase: bool,
    },
}

impl Default for Schedule {
    /// A constant 0.01.
    fn default() -> Self {
        Schedule::Constant { learning_rate: 0.01 }
    }
}

/// TF-slim's `decay_steps` from `num_epochs_per_decay`:
/// `int(num_examples * num_epochs_per_decay / batch_size)` (truncated toward
/// zero, computed in double precision as Python does). A zero `batch_size`
/// gives 0, which [`Schedule::validate`] then rejects.
///
/// ```
/// // ImageNet, batch 32, decay every 2 epochs.
/// assert_eq!(ferroflow_train::schedule::decay_steps_from_epochs(1_281_167, 32, 2.0), 80_072);
/// ```
pub fn decay_steps_from_epochs(num_examples: u64, batch_size: u64, num_epochs_per_decay: f64) -> i64 {
    if batch_size == 0 {
        return 0;
    }
    (num_examples as f64 * num_epochs_per_decay / batch_size as f64) as i64
}

fn check(key: &str, value: f64, ok: bool, what: &str) -> Result<()> {
    if ok && value.is_finite() { Ok(()) } else { Err(TrainError::config(key, format!("must be {what}, got {value}"))) }
}

fn learning_rate_ok(v: f64) -> Result<()> {
    check("learning_rate", v, v >= 0.0, "finite and >= 0")
}

fn decay_steps_ok(v: i64) -> Result<()> {
    if v > 0 { Ok(()) } else { Err(TrainError::config("decay_steps", format!("must be > 0, got {v}"))) }
}

/// TF's exponential decay in float32: `lr * rate ^ p`, `p = step / decay_steps` (floored when staircase).
fn exponential(lr: f32, step: f32, decay_steps: f32, rate: f32, staircase: bool) -> f32 {
    let p = step / decay_steps;
    let p = if staircase { p.floor() } else { p };
    lr * rate.powf(p)
}

/// TF's cosine decay in float32, `step` already clamped to `[0, decay_steps]`.
fn cosine(lr: f32, step: f32, decay_steps: f32, alpha: f64) -> f32 {
    let fraction = step / decay_steps;
    let cosine_decayed = 0.5f32 * (1.0f32 + (std::f32::consts::PI * fraction).cos());
    // TF: `(1 - alpha) * cosine_decayed + alpha` with alpha a Python float.
    let decayed = ((1.0 - alpha) as f32) * cosine_decayed + alpha as f32;
    lr * decayed
}

impl Schedule {
    /// The learning rate at `global_step` (TF's float32 value).
    pub fn learning_rate(&self, global_step: i64) -> f64 {
        let step_i = global_step.max(0);
        let step = step_i as f32;
        let value: f32 = match self {
            Schedule::Constant { learning_rate } => *learning_rate as f32,
            Schedule::ExponentialDecay { learning_rate, decay_steps, decay_rate, staircase } => {
                exponential(*learning_rate as f32, step, *decay_steps as f32, *decay_rate as f32, *staircase)
            }
            Schedule::NaturalExpDecay { learning_rate, decay_steps, decay_rate, staircase } => {
                // TF: natural_exp_rate = exp(-decay_rate), in float32.
                let rate = (-(*decay_rate as f32)).exp();
                exponential(*learning_rate as f32, step, *decay_steps as f32, rate, *staircase)
            }
            Schedule::InverseTimeDecay { learning_rate, decay_steps, decay_rate, staircase } => {
                let p = step / *decay_steps as f32;
                let p = if *staircase { p.floor() } else { p };
                *learning_rate as f32 / (1.0f32 + *decay_rate as f32 * p)
            }
            Schedule::PiecewiseConstant { boundaries, values } => {
                // The first interval whose upper boundary is >= step (int64 comparisons).
                let i = boundaries.iter().position(|&b| step_i <= b).unwrap_or(boundaries.len());
                values.get(i).or(values.last()).copied().unwrap_or(0.0) as f32
            }
            Schedule::PolynomialDecay { learning_rate, decay_steps, end_learning_rate, power, cycle } => {
                let (lr, end) = (*learning_rate as f32, *end_learning_rate as f32);
                let mut steps = *decay_steps as f32;
                let mut s = step;
                if *cycle {
                    let multiplier = if s == 0.0 { 1.0f32 } else { (s / steps).ceil() };
                    steps *= multiplier;
                } else {
                    s = s.min(steps);
                }
                let p = s / steps;
                (lr - end) * (1.0f32 - p).powf(*power as f32) + end
            }
            Schedule::CosineDecay { learning_rate, decay_steps, alpha, warmup_steps } => {
                let lr = *learning_rate as f32;
                let warmup = (*warmup_steps).max(0);
                if step_i < warmup {
                    lr * (step / warmup as f32)
                } else {
                    let steps = (*decay_steps - warmup) as f32;
                    cosine(lr, ((step_i - warmup) as f32).min(steps), steps, *alpha)
                }
            }
        };
        f64::from(value)
    }

    /// The starting learning rate (at step 0; the peak for a warmup).
    pub fn initial_learning_rate(&self) -> f64 {
        match self {
            Schedule::CosineDecay { learning_rate, .. } => f64::from(*learning_rate as f32),
            other => other.learning_rate(0),
        }
    }

    /// Checks every parameter, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        match self {
            Schedule::Constant { learning_rate } => learning_rate_ok(*learning_rate),
            Schedule::ExponentialDecay { learning_rate, decay_steps, decay_rate, .. } => {
                learning_rate_ok(*learning_rate)?;
                decay_steps_ok(*decay_steps)?;
                check("decay_rate", *decay_rate, *decay_rate > 0.0, "finite and > 0")
            }
            Schedule::NaturalExpDecay { learning_rate, decay_steps, decay_rate, .. }
            | Schedule::InverseTimeDecay { learning_rate, decay_steps, decay_rate, .. } => {
                learning_rate_ok(*learning_rate)?;
                decay_steps_ok(*decay_steps)?;
                check("decay_rate", *decay_rate, *decay_rate >= 0.0, "finite and >= 0")
            }
            Schedule::PiecewiseConstant { boundaries, values } => {
                if values.len() != boundaries.len() + 1 {
                    return Err(TrainError::config(
                        "values",
                        format!(
                            "must have one more entry than boundaries: {} values for {} boundaries",
                            values.len(),
                            boundaries.len()
                        ),
                    ));
                }
                if let Some(w) = boundaries.windows(2).find(|w| w[0] >= w[1]) {
                    return Err(TrainError::config(
                        "boundaries",
                        format!("must be strictly increasing, got {} then {}", w[0], w[1]),
                    ));
                }
                for (i, &v) in values.iter().enumerate() {
                    check(&format!("values[{i}]"), v, v >= 0.0, "finite and >= 0")?;
                }
                Ok(())
            }
            Schedule::PolynomialDecay { learning_rate, decay_steps, end_learning_rate, power, .. } => {
                learning_rate_ok(*learning_rate)?;
                decay_steps_ok(*decay_steps)?;
                check("end_learning_rate", *end_learning_rate, *end_learning_rate >= 0.0, "finite and >= 0")?;
                check("power", *power, *power > 0.0, "finite and > 0")
            }
            Schedule::CosineDecay { learning_rate, decay_steps, alpha, warmup_steps } => {
                learning_rate_ok(*learning_rate)?;
                decay_steps_ok(*decay_steps)?;
                check("alpha", *alpha, (0.0..=1.0).contains(alpha), "in [0, 1]")?;
                if *warmup_steps < 0 || *warmup_steps >= *decay_steps {
                    return Err(TrainError::config(
                        "warmup_steps",
                        format!("must be >= 0 and below decay_steps ({decay_steps}), got {warmup_steps}"),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f32) -> f64 {
        f64::from(x)
    }

    #[test]
    fn staircase_boundaries() {
        let s = Schedule::ExponentialDecay { learning_rate: 0.1, decay_steps: 100, decay_rate: 0.5, staircase: true };
        assert_eq!(s.learning_rate(0), f(0.1));
        assert_eq!(s.learning_rate(99), f(0.1));
        assert_eq!(s.learning_rate(100), f(0.05));
        assert_eq!(s.learning_rate(199), f(0.05));
        assert_eq!(s.learning_rate(200), f(0.025));
        let smooth =
            Schedule::ExponentialDecay { learning_rate: 0.1, decay_steps: 100, decay_rate: 0.5, staircase: false };
        assert!(smooth.learning_rate(50) < f(0.1) && smooth.learning_rate(50) > f(0.05));
        assert!((smooth.learning_rate(100) - 0.05).abs() < 1e-8);
        let inv = Schedule::InverseTimeDecay { learning_rate: 1.0, decay_steps: 10, decay_rate: 1.0, staircase: true };
        assert_eq!((inv.learning_rate(9), inv.learning_rate(10), inv.learning_rate(25)), (1.0, 0.5, f(1.0 / 3.0)));
        let nat = Schedule::NaturalExpDecay { learning_rate: 1.0, decay_steps: 10, decay_rate: 1.0, staircase: true };
        assert_eq!(nat.learning_rate(9), 1.0);
        assert!((nat.learning_rate(10) - (-1f64).exp()).abs() < 1e-7);
        assert_eq!(s.learning_rate(-5), s.learning_rate(0));
    }

    #[test]
    fn piecewise_boundaries_belong_to_the_interval_below() {
        let s = Schedule::PiecewiseConstant { boundaries: vec![10, 20], values: vec![1.0, 0.5, 0.25] };
        let got: Vec<f64> = [0, 10, 11, 20, 21, 1000].iter().map(|&t| s.learning_rate(t)).collect();
        assert_eq!(got, [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]);
        assert!(s.validate().is_ok());
        let bad = Schedule::PiecewiseConstant { boundaries: vec![10, 10], values: vec![1.0, 0.5, 0.25] };
        assert!(bad.validate().unwrap_err().to_string().starts_with("boundaries:"));
        let bad = Schedule::PiecewiseConstant { boundaries: vec![10], values: vec![1.0] };
        assert!(bad.validate().unwrap_err().to_string().starts_with("values:"));
    }

    #[test]
    fn polynomial_cycle_past_decay_steps() {
        let s = Schedule::PolynomialDecay {
            learning_rate: 1.0,
            decay_steps: 100,
            end_learning_rate: 0.0,
            power: 1.0,
            cycle: false,
        };
        assert_eq!((s.learning_rate(0), s.learning_rate(50), s.learning_rate(100)), (1.0, 0.5, 0.0));
        assert_eq!(s.learning_rate(250), 0.0, "without cycle it stays at the end");
        let c = Schedule::PolynomialDecay {
            learning_rate: 1.0,
            decay_steps: 100,
            end_learning_rate: 0.0,
            power: 1.0,
            cycle: true,
        };
        assert_eq!(c.learning_rate(0), 1.0); // multiplier 1 at step 0
        assert_eq!(c.learning_rate(100), 0.0); // ceil(100 / 100) = 1: the end of the first cycle
        assert_eq!(c.learning_rate(101), f(1.0 - 101.0 / 200.0)); // decay_steps doubles
        assert_eq!(c.learning_rate(250), f(1.0 - 250.0 / 300.0));
    }

    #[test]
    fn cosine_with_warmup() {
        let plain = Schedule::CosineDecay { learning_rate: 1.0, decay_steps: 100, alpha: 0.1, warmup_steps: 0 };
        assert_eq!(plain.learning_rate(0), 1.0);
        assert!((plain.learning_rate(50) - 0.55).abs() < 1e-6);
        assert!((plain.learning_rate(100) - 0.1).abs() < 1e-7);
        assert_eq!(plain.learning_rate(100), plain.learning_rate(1000));
        let warm = Schedule::CosineDecay { learning_rate: 1.0, decay_steps: 110, alpha: 0.1, warmup_steps: 10 };
        assert_eq!(warm.learning_rate(0), 0.0);
        assert_eq!(warm.learning_rate(5), 0.5);
        assert_eq!(warm.learning_rate(10), 1.0);
        for t in [10, 37, 60, 110, 500] {
            assert_eq!(warm.learning_rate(t), plain.learning_rate(t - 10), "step {t}");
        }
        assert_eq!(warm.initial_learning_rate(), 1.0);
        let bad = Schedule::CosineDecay { learning_rate: 1.0, decay_steps: 10, alpha: 0.0, warmup_steps: 10 };
        assert!(bad.validate().unwrap_err().to_string().starts_with("warmup_steps:"));
    }

    #[test]
    fn validation_names_the_field() {
        let err = |s: Schedule| s.validate().unwrap_err().to_string();
        assert!(err(Schedule::Constant { learning_rate: -1.0 }).starts_with("learning_rate:"));
        assert!(
            err(Schedule::ExponentialDecay { learning_rate: 0.1, decay_steps: 0, decay_rate: 0.9, staircase: false })
                .starts_with("decay_steps:")
        );
        assert!(
            err(Schedule::ExponentialDecay {
                learning_rate: 0.1,
                decay_steps: 10,
                decay_rate: f64::NAN,
                staircase: false
            })
            .starts_with("decay_rate:")
        );
        assert!(
            err(Schedule::PolynomialDecay {
                learning_rate: 0.1,
                decay_steps: 10,
                end_learning_rate: 0.0,
                power: 0.0,
                cycle: false
            })
            .starts_with("power:")
        );
        assert!(
            err(Schedule::CosineDecay { learning_rate: 0.1, decay_steps: 10, alpha: 2.0, warmup_steps: 0 })
                .starts_with("alpha:")
        );
        assert!(Schedule::default().validate().is_ok());
    }

    #[test]
    fn epochs_to_decay_steps() {
        assert_eq!(decay_steps_from_epochs(50_000, 128, 2.5), 976); // int(976.5625)
        assert_eq!(decay_steps_from_epochs(10, 0, 1.0), 0);
    }

    #[test]
    fn serde_defaults_and_strictness() {
        let s: Schedule =
            serde_json::from_str(r#"{"kind": "polynomial_decay", "learning_rate": 0.1, "decay_steps": 10}"#).unwrap();
        assert_eq!(
            s,
            Schedule::PolynomialDecay {
                learning_rate: 0.1,
                decay_steps: 10,
                end_learning_rate: 0.0001,
                power: 1.0,
                cycle: false
            }
        );
        let s: Schedule =
            serde_json::from_str(r#"{"kind": "cosine_decay", "learning_rate": 0.1, "decay_steps": 10}"#).unwrap();
        assert_eq!(s, Schedule::CosineDecay { learning_rate: 0.1, decay_steps: 10, alpha: 0.0, warmup_steps: 0 });
        assert!(serde_json::from_str::<Schedule>(r#"{"kind": "constant", "learning_rate": 0.1, "lr": 1}"#).is_err());
        assert!(serde_json::from_str::<Schedule>(r#"{"kind": "step_decay", "learning_rate": 0.1}"#).is_err());
    }
}
