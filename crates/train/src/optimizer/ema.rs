//! `tf.train.ExponentialMovingAverage` of model variables, with the shadows
//! swapped in for evaluation.

use candle_core::{Tensor, Var};
use ferroflow_nn::{VarStore, Variable};

use crate::error::{Result, TrainError};

/// TF's name suffix of a shadow variable: `conv1/weights/ExponentialMovingAverage`.
pub const EMA_SLOT: &str = "ExponentialMovingAverage";

/// `tf.train.ExponentialMovingAverage(decay)` over a set of variables. Each
/// variable `v` gets a non-trainable shadow `v/ExponentialMovingAverage` in
/// the store, starting at `v`'s value; [`apply`](Self::apply) moves every
/// shadow toward its variable:
///
/// `shadow -= (shadow - v) * (1 - d)`, with `d = min(decay, (1 + n) / (10 + n))`
/// when `num_updates` `n` is given (TF-slim passes `global_step`), else
/// `d = decay` — in float32, as TF computes it.
///
/// For evaluation, [`swap_in`](Self::swap_in) puts the averages into the
/// variables and returns their own values, which [`swap_out`](Self::swap_out)
/// puts back.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use ferroflow_nn::{Init, VarStore};
/// use ferroflow_train::optimizer::ExponentialMovingAverage;
///
/// let store = VarStore::new(Device::Cpu, 0);
/// let w = store.root().get_variable("w", &[1], Init::Zeros, true).unwrap();
/// let mut ema = ExponentialMovingAverage::new(&store, 0.5).unwrap();
/// w.set(&Tensor::new(&[4f32], &Device::Cpu).unwrap()).unwrap();
/// ema.apply(None).unwrap();
/// assert_eq!(store.get("w/ExponentialMovingAverage").unwrap().var.to_vec1::<f32>().unwrap(), [2.0]);
/// let trained = ema.swap_in().unwrap();
/// assert_eq!(w.to_vec1::<f32>().unwrap(), [2.0]); // evaluate with the average
/// ema.swap_out(trained).unwrap();
/// assert_eq!(w.to_vec1::<f32>().unwrap(), [4.0]);
/// ```
#[derive(Debug)]
pub struct ExponentialMovingAverage {
    decay: f64,
    /// Each variable with its shadow.
    pairs: Vec<(Variable, Var)>,
}

/// The variables' own values while the averages are swapped in (from
/// [`ExponentialMovingAverage::swap_in`]); give it back to
/// [`swap_out`](ExponentialMovingAverage::swap_out).
#[derive(Debug)]
#[must_use = "the trained values are lost unless they are swapped back out"]
pub struct SwappedWeights {
    saved: Vec<Tensor>,
}

impl ExponentialMovingAverage {
    /// Averages of every trainable variable of `store` (TF's default `var_list`).
    pub fn new(store: &VarStore, decay: f64) -> Result<Self> {
        Self::for_variables(store, decay, &store.trainable_variables())
    }

    /// Averages of `variables` (e.g. TF-slim's model variables, which include
    /// batch norm's moving statistics). `decay` must be in [0, 1].
    pub fn for_variables(store: &VarStore, decay: f64, variables: &[Variable]) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(TrainError::config("decay", format!("must be in [0, 1], got {decay}")));
        }
        let root = store.root();
        let pairs = variables
            .iter()
            .map(|v| Ok((v.clone(), root.get_variable_from(&Self::average_name(&v.name), v.var.as_tensor(), false)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ExponentialMovingAverage { decay, pairs })
    }

    /// TF's `average_name(var)`: `var/ExponentialMovingAverage`.
    pub fn average_name(var: &str) -> String {
        format!("{var}/{EMA_SLOT}")
    }

    /// TF's `average(var)`: the shadow of the variable named `var`.
    pub fn average(&self, var: &str) -> Option<Var> {
        self.pairs.iter().find(|(v, _)| v.name == var).map(|(_, s)| s.clone())
    }

    /// The configured decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// The decay an [`apply`](Self::apply) with `num_updates` uses, in float32:
    /// `min(decay, (1 + n) / (10 + n))`, or `decay` without `n`.
    pub fn effective_decay(&self, num_updates: Option<i64>) -> f32 {
        let decay = self.decay as f32;
        match num_updates {
            Some(n) => {
                let n = n as f32;
                decay.min((1.0f32 + n) / (10.0f32 + n))
            }
            None => decay,
        }
    }

    /// TF's `apply()`: moves every shadow toward its variable; returns the
    /// decay used. A negative `num_updates` is an error. Do not apply while
    /// the averages are swapped in (the shadows would average themselves).
    pub fn apply(&mut self, num_updates: Option<i64>) -> Result<f64> {
        if let Some(n) = num_updates
            && n < 0
        {
            return Err(TrainError::config("num_updates", format!("must be >= 0, got {n}")));
        }
        let decay = self.effective_decay(num_updates);
        let one_minus = 1.0f32 - decay;
        for (v, shadow) in &self.pairs {
            let step = || -> candle_core::Result<()> {
                let s = shadow.as_tensor().detach();
                let delta = (&s - v.var.as_tensor().detach())?.affine(f64::from(one_minus), 0.0)?;
                shadow.set(&(&s - delta)?)
            };
            step().map_err(TrainError::candle(Self::average_name(&v.name)))?;
        }
        Ok(f64::from(decay))
    }

    /// TF-slim's use, `ExponentialMovingAverage(decay, global_step)`:
    /// [`apply`](Self::apply) with `num_updates = global_step`, so early
    /// averages warm up with `min(decay, (1 + step) / (10 + step))`.
    pub fn update(&mut self, global_step: i64) -> Result<f64> {
        self.apply(Some(global_step))
    }

    /// Puts each shadow's value into its variable and returns the variables'
    /// own values (for evaluation with the averaged weights); hand them to
    /// [`swap_out`](Self::swap_out) afterwards.
    pub fn swap_in(&self) -> Result<SwappedWeights> {
        let mut saved = Vec::with_capacity(self.pairs.len());
        for (v, _) in &self.pairs {
            saved.push(v.var.as_tensor().copy().map_err(TrainError::candle(&v.name))?);
        }
        for (v, shadow) in &self.pairs {
            v.var.set(shadow.as_tensor()).map_err(TrainError::candle(&v.name))?;
        }
        Ok(SwappedWeights { saved })
    }

    /// Puts the variables' own values back after [`swap_in`](Self::swap_in).
    pub fn swap_out(&self, weights: SwappedWeights) -> Result<()> {
        if weights.saved.len() != self.pairs.len() {
            return Err(TrainError::config(
                "ema",
                format!("swap_out got {} values for {} variables", weights.saved.len(), self.pairs.len()),
            ));
        }
        for ((v, _), value) in self.pairs.iter().zip(&weights.saved) {
            v.var.set(value).map_err(TrainError::candle(&v.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use ferroflow_nn::Init;

    use super::*;

    fn set(v: &Var, x: &[f32]) {
        v.set(&Tensor::new(x, &Device::Cpu).unwrap()).unwrap();
    }

    #[test]
    fn shadows_follow_tf_with_num_updates() {
        let store = VarStore::new(Device::Cpu, 0);
        let w = store.root().sub("conv1").get_variable("weights", &[2], Init::Ones, true).unwrap();
        store.root().get_variable("moving", &[1], Init::Ones, false).unwrap();
        let mut ema = ExponentialMovingAverage::new(&store, 0.999).unwrap();
        assert!(store.get("moving/ExponentialMovingAverage").is_none(), "only trainable variables by default");
        let shadow = store.get("conv1/weights/ExponentialMovingAverage").unwrap();
        assert!(!shadow.trainable);
        assert_eq!(shadow.var.to_vec1::<f32>().unwrap(), [1.0, 1.0]);
        set(&w, &[11.0, 1.0]);
        // num_updates 0: decay min(0.999, 1/10) = 0.1, so the shadow moves 90% of the way.
        let d = ema.apply(Some(0)).unwrap();
        assert_eq!(d, f64::from(0.1f32));
        let s = shadow.var.to_vec1::<f32>().unwrap();
        assert!((s[0] - 10.0).abs() < 1e-5 && s[1] == 1.0, "{s:?}");
        assert_eq!(ema.effective_decay(Some(1_000_000)), 0.999f32);
        assert_eq!(ema.effective_decay(None), 0.999f32);
        assert!(ema.apply(Some(-1)).is_err());
    }

    #[test]
    fn swap_in_and_out() {
        let store = VarStore::new(Device::Cpu, 0);
        let w = store.root().get_variable("w", &[2], Init::Zeros, true).unwrap();
        let mut ema = ExponentialMovingAverage::new(&store, 0.75).unwrap();
        set(&w, &[4.0, -8.0]);
        ema.apply(None).unwrap();
        let avg = ema.average("w").unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(avg, [1.0, -2.0]);
        let trained = ema.swap_in().unwrap();
        assert_eq!(w.to_vec1::<f32>().unwrap(), [1.0, -2.0]);
        ema.swap_out(trained).unwrap();
        assert_eq!(w.to_vec1::<f32>().unwrap(), [4.0, -8.0]);
        assert_eq!(ema.average("w").unwrap().to_vec1::<f32>().unwrap(), [1.0, -2.0], "the shadow is untouched");
        assert!(ema.swap_out(SwappedWeights { saved: vec![] }).is_err());
        assert_eq!(ema.update(0).unwrap(), f64::from(0.1f32)); // TF-slim: num_updates = global_step
        assert!(ExponentialMovingAverage::new(&store, 1.5).is_err());
        assert!(
            ExponentialMovingAverage::new(&store, 0.9).unwrap_err().to_string().contains("w/ExponentialMovingAverage")
        );
    }
}
