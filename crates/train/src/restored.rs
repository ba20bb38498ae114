//! A model rebuilt from a checkpoint for evaluation and prediction: its
//! declaration, class names and eval preprocessing come from the
//! checkpoint's metadata, so only the checkpoint is needed.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ferroflow_data::Preprocess;
use ferroflow_nn::{GLOBAL_STEP, Model, ModelSpec, VarStore};

use crate::checkpoint::{Checkpoint, latest_intact, resolve_checkpoint};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::objective::Objective;
use crate::optimizer::ExponentialMovingAverage;
use crate::regression::RegressionLoss;

/// A trained model ready for eval-mode forwards.
#[derive(Debug)]
pub struct RestoredModel {
    /// The model, with the checkpoint's (moving-average, when present) weights.
    pub model: Model,
    /// Its declaration (from the checkpoint's `ferroflow.model`).
    pub spec: ModelSpec,
    /// Its variables.
    pub store: VarStore,
    /// The run's resolved config.
    pub config: TrainConfig,
    /// Class names by label (for a regression model: the targets' names).
    pub classes: Vec<String>,
    /// What the model outputs: classes, or standardised regression targets.
    pub objective: Objective,
    /// The eval preprocessing the run validated with.
    pub preprocess: Preprocess,
    /// The checkpoint's global step.
    pub step: i64,
    /// The checkpoint file.
    pub path: PathBuf,
    /// Whether the weights are the exponential moving averages.
    pub ema: bool,
    /// A notice when the checkpoint's values could not be verified (it has no checksums).
    pub integrity_notice: Option<String>,
}

impl RestoredModel {
    /// Loads `path` (a checkpoint file, prefix, or train dir meaning its
    /// latest checkpoint). Moving averages replace the weights they shadow
    /// when the checkpoint has them (TF-slim's eval with
    /// `moving_average_decay`).
    ///
    /// A damaged or missing latest checkpoint of a train dir is an error
    /// (evaluating another step than asked would mislead), which names the
    /// newest intact listed one when there is one.
    pub fn load(path: &Path, device: &Device) -> Result<RestoredModel> {
        let given = path;
        let loaded = resolve_checkpoint(given).and_then(|path| Checkpoint::load(&path).map(|ck| (path, ck)));
        let (path, ck) = match loaded {
            Ok(ok) => ok,
            Err(error) if given.is_dir() => {
                return Err(match latest_intact(given) {
                    Ok(Some(intact)) if !intact.damaged.is_empty() => {
                        TrainError::LatestDamaged { error: Box::new(error), intact: intact.path.display().to_string() }
                    }
                    _ => error,
                });
            }
            Err(error) => return Err(error),
        };
        let name = path.display().to_string();
        let integrity_notice = ck.integrity_notice(&path);
        let not_ours = |what: &str| TrainError::Checkpoint {
            path: name.clone(),
            reason: format!(
                "has no {what} metadata, so it is not a checkpoint of `ferroflow train` (`ferroflow inspect` lists \
                 any safetensors file)"
            ),
        };
        let config_text = ck.meta.config.as_deref().ok_or_else(|| not_ours("ferroflow.config"))?;
        let config = TrainConfig::resolve(config_text, &[])
            .map_err(|e| TrainError::Checkpoint { path: name.clone(), reason: format!("its config: {e}") })?;
        let spec = ck.meta.model.clone().ok_or_else(|| not_ours("ferroflow.model"))?;
        let preprocess = ck.meta.preprocess.clone().ok_or_else(|| not_ours("ferroflow.preprocess"))?;
        let store = VarStore::new(device.clone(), config.train.seed);
        let model = spec.build(&store, config.train.seed)?;
        let mut ema = false;
        let mut missing = Vec::new();
        for v in store.global_variables() {
            let average = ck.get(&ExponentialMovingAverage::average_name(&v.name));
            let stored = average.or_else(|| ck.get(&v.name));
            let Some(t) = stored else {
                missing.push(v.name.clone());
                continue;
            };
            ema |= average.is_some();
            if t.shape != v.var.dims() {
                return Err(TrainError::Checkpoint {
                    path: name,
                    reason: format!(
                        "variable {} is {:?} in the checkpoint but {:?} in its model",
                        v.name,
                        t.shape,
                        v.var.dims()
                    ),
                });
            }
            let value = t.to_tensor(device).map_err(TrainError::candle(format!("{name}: {}", v.name)))?;
            store.assign(&v.name, &value)?;
        }
        if !missing.is_empty() {
            return Err(TrainError::Checkpoint {
                path: name,
                reason: format!("lacks variable(s) of its own model: {}", missing.join(", ")),
            });
        }
        let step = match ck.get(GLOBAL_STEP).map(|t| t.values.to_f64()) {
            Some(v) if v.len() == 1 => v[0] as i64,
            _ => ck.meta.global_step,
        };
        store.set_global_step(step);
        let outputs = model.output_shape().iter().product::<usize>();
        let (classes, objective) = match &ck.meta.targets {
            _ if config.data.targets != crate::config::Targets::Labels => (
                ck.meta.classes.clone(),
                Objective::Reconstruction {
                    loss: match config.train.loss {
                        Some(crate::config::Loss::Mae) => RegressionLoss::Mae,
                        _ => RegressionLoss::Mse,
                    },
                    noise_stddev: config.data.noise_stddev,
                    paired: config.data.targets == crate::config::Targets::Paired,
                    scale: crate::reconstruction::PixelScale::of(&preprocess),
                    seed: config.train.seed,
                },
            ),
            Some(stats) => {
                let names: Vec<String> = (0..stats.len()).map(|i| format!("target_{i}")).collect();
                let loss = match config.train.loss {
                    Some(crate::config::Loss::Mae) => RegressionLoss::Mae,
                    Some(crate::config::Loss::Huber) => RegressionLoss::Huber,
                    _ => RegressionLoss::Mse,
                };
                let objective = Objective::Regression {
                    stats: stats.clone(),
                    loss,
                    huber_delta: config.train.huber_delta,
                    names: names.clone(),
                };
                (names, objective)
            }
            None => {
                let classes: Vec<String> = if ck.meta.classes.is_empty() {
                    (0..outputs).map(|i| i.to_string()).collect()
                } else {
                    ck.meta.classes.clone()
                };
                (classes, Objective::Classification { classes: outputs, label_smoothing: 0.0 })
            }
        };
        Ok(RestoredModel {
            model,
            spec,
            store,
            config,
            classes,
            objective,
            preprocess,
            step,
            path,
            ema,
            integrity_notice,
        })
    }
}
