//! `bench_train`: training-step throughput on random data, the number users
//! size hardware with (`ferroflow bench train`) and the one `bench/train_step.py`
//! compares against TensorFlow and PyTorch.
//!
//! One step is exactly the training loop's step without the input pipeline:
//! forward in training mode (batch statistics, dropout, moving-statistics
//! updates), mean sparse softmax cross-entropy, backward, momentum SGD (TF1's
//! `MomentumOptimizer`, 0.9), `global_step += 1`. The data is a few random
//! batches made once up front and cycled, so the timed loop does nothing but
//! train and its memory stays flat. Everything random (weights, data, labels,
//! dropout masks) comes from `seed`, so two runs with the same config end with
//! bitwise-identical weights ([`BenchReport::weights_digest`]).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ferroflow_dist::{BUCKET_BYTES, Collective, Local};
use ferroflow_nn::{ModelSpec, VarStore, ops, zoo_model};
use ferroflow_rng::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optimizer::{Optimizer, OptimizerConfig, trainable_gradients};
use crate::replicas::{Replicas, moving_statistics};

fn default_model() -> String {
    "cifar_cnn".to_string()
}
fn default_classes() -> usize {
    10
}
fn default_batch_size() -> usize {
    64
}
fn default_steps() -> usize {
    60
}
fn default_warmup() -> usize {
    10
}
fn default_learning_rate() -> f64 {
    0.01
}
fn default_distinct_batches() -> usize {
    4
}
fn default_device() -> String {
    "cpu".to_string()
}

/// What [`bench_train`] measures. Every field has a default (the issue-5
/// benchmark: cifar_cnn, batch 64, 60 timed steps after 10 warm-up steps):
///
/// ```
/// use ferroflow_train::BenchConfig;
/// let c: BenchConfig = serde_json::from_str(r#"{"model": "lenet", "batch_size": 8}"#).unwrap();
/// assert_eq!((c.model.as_str(), c.batch_size, c.steps, c.warmup), ("lenet", 8, 60, 10));
/// assert!(serde_json::from_str::<BenchConfig>(r#"{"batch": 8}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchConfig {
    /// A zoo model or a `.toml` model declaration (default `cifar_cnn`, the
    /// model of DESIGN.md's training-step benchmark).
    #[serde(default = "default_model")]
    pub model: String,
    /// Overrides the model's input `[height, width, channels]` (default: the
    /// model's own, 32x32x3 for cifar_cnn).
    pub input: Option<[usize; 3]>,
    /// Classes of the final dense layer and of the random labels (default 10).
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Examples per step (default 64).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Timed steps (default 60: about 4 s for cifar_cnn on 2 cores, long
    /// enough that the median is stable).
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Untimed steps first (default 10): the allocator's pools, the page
    /// cache of fresh buffers and the CPU caches settle in the first few.
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// Seeds the weights, the random data and labels, and dropout (default 0).
    pub seed: u64,
    /// The constant learning rate (default 0.01: small enough that the loss
    /// stays finite on random labels for any zoo model).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// How many distinct random batches are made up front and cycled
    /// (default 4: making data is not part of a step, and a handful keeps the
    /// loss from collapsing onto one memorised batch).
    #[serde(default = "default_distinct_batches")]
    pub distinct_batches: usize,
    /// `cpu` or `cuda[:N]` (default `cpu`).
    #[serde(default = "default_device")]
    pub device: String,
    /// Train only the variables under these scopes, freezing the rest, as a
    /// fine-tuning run with `warm_start.trainable_scopes` does (default: all).
    #[serde(default)]
    pub trainable_scopes: Vec<String>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            model: default_model(),
            input: None,
            classes: default_classes(),
            batch_size: default_batch_size(),
            steps: default_steps(),
            warmup: default_warmup(),
            seed: 0,
            learning_rate: default_learning_rate(),
            distinct_batches: default_distinct_batches(),
            device: default_device(),
            trainable_scopes: Vec::new(),
        }
    }
}

impl BenchConfig {
    /// Checks the numbers, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = |key: &str, v: usize| {
            if v == 0 { Err(TrainError::config(key, "must be at least 1, got 0")) } else { Ok(()) }
        };
        at_least_one("batch_size", self.batch_size)?;
        at_least_one("steps", self.steps)?;
        at_least_one("distinct_batches", self.distinct_batches)?;
        if self.classes < 2 {
            return Err(TrainError::config("classes", format!("must be at least 2, got {}", self.classes)));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return Err(TrainError::config(
                "learning_rate",
                format!("must be finite and >= 0, got {}", self.learning_rate),
            ));
        }
        Ok(())
    }
}

/// One step of a [`bench_train`] run, as it finishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchStep {
    /// The global step after it (1-based, warm-up steps included).
    pub step: usize,
    /// Whether it was a warm-up (untimed) step.
    pub warmup: bool,
    /// Its loss.
    pub loss: f32,
    /// Its wall time in seconds.
    pub secs: f64,
}

/// The results of a [`bench_train`] run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The model's name.
    pub model: String,
    /// Its input `[height, width, channels]`.
    pub input: [usize; 3],
    /// Its trainable parameters.
    pub parameters: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup: usize,
    /// rayon's thread count where the run happened (ferroflow's kernels split across these),
    /// per rank.
    pub threads: usize,
    /// Data-parallel ranks (1: one process).
    pub ranks: usize,
    /// The device, described ([`crate::describe_device`]: `cpu`, or the GPU's number,
    /// name and memory).
    pub device: String,
    /// Wall time of the timed steps, in seconds.
    pub secs: f64,
    /// `batch_size * steps / secs`.
    pub images_per_sec: f64,
    /// Mean timed step, in milliseconds.
    pub step_ms_mean: f64,
    /// Median timed step, in milliseconds (robust to a step slowed by another process).
    pub step_ms_median: f64,
    /// Fastest timed step, in milliseconds.
    pub step_ms_min: f64,
    /// The loss of the last step.
    pub final_loss: f32,
    /// FNV-1a (64-bit) over every variable's name and float32 bits, in
    /// creation order (weights, batch-norm moving statistics, momentum
    /// slots): equal digests mean bitwise-identical training state.
    pub weights_digest: u64,
    /// The variables after the run (model and optimizer slots).
    #[serde(skip)]
    pub store: VarStore,
}

/// A zoo model or a TOML model file; the error names the model and the zoo.
fn resolve_model(name: &str, classes: usize) -> Result<ModelSpec> {
    if let Some(spec) = zoo_model(name, classes) {
        return Ok(spec);
    }
    let path = std::path::Path::new(name);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|cause| TrainError::Io { path: name.to_string(), cause })?;
        return Ok(ModelSpec::from_toml(&text)?);
    }
    let names: Vec<&str> = ferroflow_nn::ZOO.iter().map(|m| m.name).collect();
    Err(TrainError::config("model", format!("{name:?} is neither a zoo model ({}) nor a model file", names.join(", "))))
}

/// `distinct` random batches `(x, labels)`: `x` is `[batch, C, H, W]` (NCHW,
/// as the model takes it) of standard-normal float32 values (what a
/// mean/std-normalised image looks like to the first layer), `labels` is
/// `[batch]` u32 uniform in `[0, classes)`.
fn random_batches(cfg: &BenchConfig, [h, w, c]: [usize; 3], device: &Device) -> Result<Vec<(Tensor, Tensor)>> {
    // A stream of its own, so the data does not depend on how many draws
    // the initializers or dropout make.
    let mut rng = Rng::derive(cfg.seed, &[0x62_656e_6368]); // "bench"
    let per_image = c * h * w;
    (0..cfg.distinct_batches)
        .map(|_| {
            let x: Vec<f32> = (0..cfg.batch_size * per_image).map(|_| rng.normal_f32()).collect();
            let y: Vec<u32> = (0..cfg.batch_size).map(|_| rng.below(cfg.classes as u64) as u32).collect();
            let x =
                Tensor::from_vec(x, (cfg.batch_size, c, h, w), device).map_err(TrainError::candle("bench input"))?;
            let y = Tensor::from_vec(y, cfg.batch_size, device).map_err(TrainError::candle("bench labels"))?;
            Ok((x, y))
        })
        .collect()
}

/// FNV-1a over every variable's name and value bits, in creation order.
pub fn weights_digest(store: &VarStore) -> Result<u64> {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    };
    for v in store.global_variables() {
        feed(v.name.as_bytes());
        let values = v
            .var
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(TrainError::candle(format!("reading {}", v.name)))?;
        for x in values {
            feed(&x.to_bits().to_le_bytes());
        }
    }
    Ok(h)
}

/// Trains `cfg.model` on random data for `cfg.warmup + cfg.steps` steps and
/// times the last `cfg.steps`, calling `on_step` after each step.
///
/// # Errors
/// A bad setting ([`TrainError::Config`], naming it: an unknown model, a
/// zero batch, a model that is not a classifier), a model that cannot take
/// the input, or a non-finite loss.
pub fn bench_train(cfg: &BenchConfig, on_step: &mut dyn FnMut(&BenchStep)) -> Result<BenchReport> {
    bench_train_on(cfg, &mut Local, on_step)
}

/// [`bench_train`] as one of the data-parallel ranks of `collective`
/// (`mpirun -np N ferroflow bench train`): `cfg.batch_size` is the global
/// batch, each rank trains on its contiguous share of every random batch,
/// and each step ends with the trainer's exchange (the mean gradient in
/// 25 MiB buckets, then the moving statistics and the loss), so a step's
/// time is the data-parallel trainer's without the input pipeline. Every
/// rank starts from the same seed-made weights, so ranks that end with
/// equal digests trained in lockstep. The loss reported is the ranks' mean.
///
/// # Errors
/// As [`bench_train`]; also a global batch that the ranks cannot share
/// equally, and a failed collective.
pub fn bench_train_on(
    cfg: &BenchConfig,
    collective: &mut dyn Collective,
    on_step: &mut dyn FnMut(&BenchStep),
) -> Result<BenchReport> {
    cfg.validate()?;
    let (world, rank) = (collective.world_size(), collective.rank());
    if !cfg.batch_size.is_multiple_of(world) {
        return Err(TrainError::config(
            "batch_size",
            format!("{} is the global batch of {world} ranks: it must be a multiple of {world}", cfg.batch_size),
        ));
    }
    let device = crate::device(&cfg.device)?;
    let mut spec = resolve_model(&cfg.model, cfg.classes)?;
    if let Some(input) = cfg.input {
        spec.input = input;
    }
    let store = VarStore::new(device.clone(), cfg.seed);
    let model = spec.build(&store, cfg.seed)?;
    let out = model.output_shape();
    if out != [cfg.classes] {
        return Err(TrainError::config(
            "model",
            format!(
                "{:?} outputs {out:?}, not {} class logits; bench train needs a classifier (ending in a dense layer)",
                spec.name, cfg.classes
            ),
        ));
    }
    // The global batches, each rank keeping its share.
    let per_rank = cfg.batch_size / world;
    let batches = random_batches(cfg, spec.input, &device)?
        .into_iter()
        .map(|(x, y)| {
            let part = |t: Tensor| t.narrow(0, rank * per_rank, per_rank).and_then(|t| t.contiguous());
            Ok((
                part(x).map_err(TrainError::candle("bench input"))?,
                part(y).map_err(TrainError::candle("bench labels"))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    crate::checkpoint::apply_trainable_scopes(&store, &cfg.trainable_scopes)?;
    let (trainable, moving) = (store.trainable_variables(), moving_statistics(&store));
    let mut replicas = Replicas { collective, bucket_bytes: BUCKET_BYTES };
    let mut optimizer = Optimizer::new(&OptimizerConfig::Momentum { momentum: 0.9, use_nesterov: false }, &store)?;

    let total = cfg.warmup + cfg.steps;
    let mut timed_ms = Vec::with_capacity(cfg.steps);
    let mut final_loss = f32::NAN;
    let mut timed_start = Instant::now();
    for i in 0..total {
        if i == cfg.warmup {
            timed_start = Instant::now();
        }
        let start = Instant::now();
        let (x, y) = &batches[i % batches.len()];
        let logits = model.forward_t(x, true)?; // [N, classes]
        let loss = ops::sparse_softmax_cross_entropy(&logits, y)? // [N]
            .mean_all()
            .map_err(TrainError::candle("loss"))?; // []
        let mut grads = loss.backward().map_err(TrainError::candle("backward"))?;
        let mut loss_value = [loss.to_scalar::<f32>().map_err(TrainError::candle("loss"))?];
        replicas.mean_gradients(i as i64, &trainable, &mut grads, &moving, &mut loss_value)?;
        let pairs = trainable_gradients(&store, &grads);
        optimizer.apply(&pairs, cfg.learning_rate)?;
        let step = store.increment_global_step();
        let [loss_value] = loss_value;
        if !loss_value.is_finite() {
            return Err(TrainError::NonFiniteLoss { step, loss: loss_value });
        }
        // On a GPU the step is only done when the device says so.
        device.synchronize().map_err(TrainError::candle("synchronize"))?;
        let secs = start.elapsed().as_secs_f64();
        let warmup = i < cfg.warmup;
        if !warmup {
            timed_ms.push(secs * 1e3);
        }
        final_loss = loss_value;
        on_step(&BenchStep { step: i + 1, warmup, loss: loss_value, secs });
    }
    let secs = timed_start.elapsed().as_secs_f64();

    let mut sorted = timed_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    Ok(BenchReport {
        model: spec.name.clone(),
        input: spec.input,
        parameters: store.trainable_parameter_count(),
        batch_size: cfg.batch_size,
        steps: cfg.steps,
        warmup: cfg.warmup,
        threads: rayon::current_num_threads(),
        ranks: world,
        device: crate::describe_device(&device),
        secs,
        images_per_sec: (cfg.batch_size * cfg.steps) as f64 / secs.max(1e-9),
        step_ms_mean: timed_ms.iter().sum::<f64>() / n as f64,
        step_ms_median: median,
        step_ms_min: sorted[0],
        final_loss,
        weights_digest: weights_digest(&store)?,
        store,
    })
}
