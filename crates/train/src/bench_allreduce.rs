//! `bench_allreduce`: what data-parallel training pays between the ranks
//! per step (`ferroflow bench allreduce` under `mpirun`), so users can size
//! a cluster.
//!
//! One timed step is exactly the trainer's exchange after its backward
//! pass, [`Replicas::mean_gradients`]: the step's synchronisation, the mean
//! gradient all-reduced in 25 MiB buckets (copied out of and back into
//! candle tensors, as in training), then one small all-reduce of the moving
//! statistics, the loss and the accuracy. The gradients are made up (rank
//! `r` sends `r + 1` everywhere) and the mean that comes back is checked,
//! so a broken transport fails the benchmark instead of timing it.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use ferroflow_dist::{BUCKET_BYTES, Collective, buckets};
use ferroflow_nn::{Init, VarStore};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::replicas::{Replicas, moving_statistics};

/// What one [`bench_allreduce`] run exchanges: a model's variables, or a
/// made-up model of `parameters` trainable values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum AllReduceModel {
    /// A model (zoo name or `.toml` declaration) with `classes` outputs.
    Model {
        /// The model.
        name: String,
        /// Outputs of its last layer.
        classes: usize,
    },
    /// `parameters` trainable values in `variables` equal variables (a model
    /// not in the zoo, e.g. ResNet-50's 25.6 M in 161 variables).
    Synthetic {
        /// Trainable values in all.
        parameters: usize,
        /// How many variables they are split into.
        variables: usize,
    },
}

/// How long to measure. Defaults: 20 timed steps after 3 warm-up steps,
/// 25 MiB buckets (the trainer's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllReduceBenchConfig {
    /// Steps to time.
    pub steps: usize,
    /// Steps run before timing starts.
    pub warmup: usize,
    /// Bytes per all-reduce call.
    pub bucket_bytes: usize,
}

impl Default for AllReduceBenchConfig {
    fn default() -> Self {
        AllReduceBenchConfig { steps: 20, warmup: 3, bucket_bytes: BUCKET_BYTES }
    }
}

/// The exchange's cost for one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllReduceReport {
    /// The model's name (`synthetic` for made-up ones).
    pub model: String,
    /// Trainable values: the gradient's length.
    pub parameters: usize,
    /// Moving-statistics values (the small second all-reduce).
    pub moving: usize,
    /// Gradient all-reduce calls per step.
    pub buckets: usize,
    /// Ranks.
    pub ranks: usize,
    /// Median seconds per step's exchange.
    pub median_secs: f64,
    /// Fastest step's exchange, seconds.
    pub min_secs: f64,
}

impl AllReduceReport {
    /// Gradient bytes each rank contributes per step.
    pub fn gradient_bytes(&self) -> usize {
        self.parameters * 4
    }

    /// Gradient bytes per second of the median step ("algorithm bandwidth").
    pub fn algorithm_bandwidth(&self) -> f64 {
        self.gradient_bytes() as f64 / self.median_secs.max(1e-12)
    }

    /// The algorithm bandwidth times `2 (n - 1) / n`, the share of the data
    /// each rank's link carries in a ring all-reduce: comparable with the
    /// link's own speed whatever the number of ranks (NCCL's tests call it
    /// "bus bandwidth").
    ///
    /// ```
    /// use ferroflow_train::AllReduceReport;
    /// let r = AllReduceReport {
    ///     model: "m".into(), parameters: 250_000, moving: 0, buckets: 1, ranks: 4,
    ///     median_secs: 0.001, min_secs: 0.001,
    /// };
    /// assert_eq!(r.algorithm_bandwidth(), 1e9);
    /// assert_eq!(r.bus_bandwidth(), 1.5e9);
    /// ```
    pub fn bus_bandwidth(&self) -> f64 {
        let n = self.ranks as f64;
        self.algorithm_bandwidth() * 2.0 * (n - 1.0) / n
    }
}

/// Times the trainer's per-step exchange of `model`'s gradients and moving
/// statistics over `collective`'s ranks (every rank calls this with the
/// same arguments). With one rank there is nothing to exchange and the
/// times are the bookkeeping's alone.
///
/// # Errors
/// An unknown model or zero steps ([`TrainError::Config`]), a collective
/// that failed or timed out, or an all-reduce that returned the wrong mean.
pub fn bench_allreduce(
    model: &AllReduceModel,
    cfg: &AllReduceBenchConfig,
    collective: &mut dyn Collective,
) -> Result<AllReduceReport> {
    if cfg.steps == 0 {
        return Err(TrainError::config("steps", "must be at least 1"));
    }
    let store = VarStore::new(Device::Cpu, 0);
    let name = match model {
        AllReduceModel::Model { name, classes } => {
            crate::model_spec(name, *classes)?.build(&store, 0)?;
            name.clone()
        }
        AllReduceModel::Synthetic { parameters, variables } => {
            synthetic(&store, *parameters, *variables)?;
            "synthetic".to_string()
        }
    };
    let trainable = store.trainable_variables();
    let moving = moving_statistics(&store);
    let world = collective.world_size();
    // Rank r's gradient is r + 1 everywhere: the sum is world (world + 1) / 2 (exact in
    // f32), and the trainer's mean multiplies it by 1 / world, rounded as it rounds it.
    let mine = (collective.rank() + 1) as f32;
    let want = (world * (world + 1) / 2) as f32 * (1.0 / world as f32);
    let mut replicas = Replicas { collective, bucket_bytes: cfg.bucket_bytes };
    let mut times = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.warmup + cfg.steps {
        let mut grads = GradStore::default();
        for v in &trainable {
            let g = Tensor::full(mine, v.var.shape(), &Device::Cpu).map_err(TrainError::candle("gradient"))?;
            grads.insert(v.var.as_tensor(), g);
        }
        let mut scalars = [mine, mine];
        let start = Instant::now();
        replicas.mean_gradients(step as i64, &trainable, &mut grads, &moving, &mut scalars)?;
        let secs = start.elapsed().as_secs_f64();
        if step >= cfg.warmup {
            times.push(secs);
        }
        check_mean(&trainable, &grads, want)?;
    }
    times.sort_by(f64::total_cmp);
    let sizes: Vec<usize> = trainable.iter().map(|v| v.var.elem_count()).collect();
    Ok(AllReduceReport {
        model: name,
        parameters: sizes.iter().sum(),
        moving: moving.iter().map(|v| v.var.elem_count()).sum(),
        buckets: buckets(&sizes, cfg.bucket_bytes).len(),
        ranks: world,
        median_secs: median(&times),
        min_secs: times[0],
    })
}

/// `parameters` trainable values as `variables` variables of (nearly) equal length.
fn synthetic(store: &VarStore, parameters: usize, variables: usize) -> Result<()> {
    if parameters == 0 || variables == 0 || variables > parameters {
        return Err(TrainError::config(
            "parameters",
            format!("{parameters} parameters in {variables} variables: need 1 <= variables <= parameters"),
        ));
    }
    let scope = store.root().sub("synthetic");
    for i in 0..variables {
        let n = parameters / variables + usize::from(i < parameters % variables);
        scope.get_variable(&format!("v{i}"), &[n], Init::Zeros, true)?;
    }
    Ok(())
}

/// Every gradient must have come back as the ranks' mean.
fn check_mean(trainable: &[ferroflow_nn::Variable], grads: &GradStore, want: f32) -> Result<()> {
    for v in trainable {
        let got = grads
            .get(v.var.as_tensor())
            .map(|g| g.flatten_all().and_then(|g| g.to_dtype(DType::F32)).and_then(|g| g.to_vec1::<f32>()))
            .transpose()
            .map_err(TrainError::candle("all-reduce check"))?;
        if let Some(bad) = got.as_deref().and_then(|g| g.iter().find(|&&x| x != want)) {
            return Err(TrainError::config(
                "all-reduce",
                format!("{}: the mean gradient came back as {bad}, expected {want}", v.name),
            ));
        }
    }
    Ok(())
}

/// The median of sorted, non-empty `v`.
fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ferroflow_dist::Local;

    use super::*;

    #[test]
    fn one_process_measures_lenet_and_a_synthetic_model() {
        let cfg = AllReduceBenchConfig { steps: 2, warmup: 1, ..Default::default() };
        let cnn = AllReduceModel::Model { name: "cifar_cnn".into(), classes: 10 };
        let r = bench_allreduce(&cnn, &cfg, &mut Local).unwrap();
        let store = VarStore::new(Device::Cpu, 0);
        ferroflow_nn::zoo_model("cifar_cnn", 10).unwrap().build(&store, 0).unwrap();
        assert_eq!((r.model.as_str(), r.ranks, r.buckets), ("cifar_cnn", 1, 1));
        assert_eq!(r.parameters, store.trainable_parameter_count());
        // Its batch norms' moving means and variances go in the second, small all-reduce.
        assert!(r.moving > 0 && r.moving < r.parameters / 10, "{r:?}");
        // 30 M values in 7 variables: 120 MB of f32 in 25 MiB buckets, a variable per bucket.
        let big = AllReduceModel::Synthetic { parameters: 30_000_000, variables: 7 };
        let r = bench_allreduce(&big, &cfg, &mut Local).unwrap();
        assert_eq!((r.parameters, r.buckets, r.gradient_bytes()), (30_000_000, 7, 120_000_000));
        let bad = AllReduceModel::Synthetic { parameters: 3, variables: 4 };
        let err = bench_allreduce(&bad, &cfg, &mut Local).unwrap_err().to_string();
        assert!(err.contains("3 parameters in 4 variables"), "{err}");
    }
}
