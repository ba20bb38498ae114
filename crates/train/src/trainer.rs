//! The train/validate loop: one step is forward in training mode, loss
//! (+ weight decay), backward, clip, apply, `global_step += 1`; validation
//! runs in eval mode over the whole validation split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use ferroflow_data::{Cursor, Mode, Pipeline, PipelineConfig, Preprocess, Shard, SlimPreprocessing, Source, Task};
use ferroflow_dist::{BUCKET_BYTES, Collective, Local};
use ferroflow_nn::{Model, ModelSpec, VarStore, zoo_model};
use serde::Serialize;

use crate::checkpoint::{
    self, Checkpoint, CheckpointManager, CheckpointMeta, DataFingerprint, RngStates, apply_trainable_scopes,
    restore_exact, warm_start,
};
use crate::config::{ClassWeights, Loss, Normalize, OnCorrupt, OnSaveError, Targets, TrainConfig};
use crate::data_source::DataSource;
use crate::error::{Result, TrainError};
use crate::evaluate::{EvalReport, evaluate_with};
use crate::metrics::Metrics;
use crate::monitor::{Mode as MonitorMode, Monitor, MonitorState};
use crate::objective::Objective;
use crate::optimizer::{ExponentialMovingAverage, Optimizer, clip_by_global_norm, trainable_gradients};
use crate::reconstruction::PixelScale;
use crate::regression::{RegressionLoss, TargetStats, target_stats};
use crate::replicas::{Replicas, StartState, moving_statistics};
use crate::summary::Summaries;

/// What the loop reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Training started: the total number of steps.
    Start {
        /// Total steps.
        total_steps: u64,
        /// What is being trained on what.
        description: String,
    },
    /// A step finished.
    Step {
        /// The global step after it.
        step: i64,
        /// Its loss.
        loss: f32,
        /// Training throughput since the start.
        images_per_sec: f64,
    },
    /// A validation pass finished.
    Validation {
        /// The global step.
        step: i64,
        /// Its results.
        report: Box<EvalReport>,
    },
    /// A checkpoint was saved.
    Saved {
        /// The global step.
        step: i64,
        /// The file.
        path: PathBuf,
    },
    /// Something the user should know: a resume, a warm start, a failed
    /// save that training continues past.
    Note(String),
}

/// Results of a training run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// Steps taken.
    pub steps: i64,
    /// Loss of the last step.
    pub final_loss: f32,
    /// The last validation, if there was a validation split.
    pub validation: Option<EvalReport>,
    /// Training images per second (whole run).
    pub images_per_sec: f64,
    /// Class names.
    pub classes: Vec<String>,
    /// Where the event files, config.toml and checkpoints went.
    pub train_dir: PathBuf,
    /// The last checkpoint saved, if any.
    pub checkpoint: Option<PathBuf>,
    /// The checkpoint this run resumed from, if any.
    pub resumed_from: Option<PathBuf>,
    /// The step early stopping ended training at (this run or the one resumed).
    pub stopped_early_at: Option<i64>,
    /// The monitored metric's best value and its step (with early stopping or `keep_best`).
    pub best: Option<(String, f64, i64)>,
    /// The best checkpoint (`checkpoint.keep_best`).
    pub best_checkpoint: Option<PathBuf>,
    /// Training examples left out because they could not be read or decoded.
    pub skipped: u64,
    /// With several ranks: the digest of this rank's variables at the end
    /// ([`crate::weights_digest`]), checked equal to rank 0's.
    pub weights_digest: Option<u64>,
}

/// Resolves the model declaration: a zoo name or a TOML file.
pub fn model_spec(name: &str, classes: usize) -> Result<ModelSpec> {
    if let Some(spec) = zoo_model(name, classes) {
        return Ok(spec);
    }
    let path = std::path::Path::new(name);
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|cause| TrainError::Io { path: name.to_string(), cause })?;
        return Ok(ModelSpec::from_toml(&text)?);
    }
    let names: Vec<&str> = ferroflow_nn::ZOO.iter().map(|m| m.name).collect();
    Err(TrainError::config(
        "model.name",
        format!("{name:?} is neither a zoo model ({}) nor a model file", names.join(", ")),
    ))
}

struct Run {
    config: TrainConfig,
    data: DataSource,
    spec: ModelSpec,
    model: Model,
    store: VarStore,
    preprocess: Preprocess,
    device: Device,
    objective: Objective,
    /// This rank's part of every batch, with several ranks.
    shard: Option<Shard>,
}

impl Run {
    fn pipeline_config(&self, epochs: Option<u64>) -> PipelineConfig {
        PipelineConfig { shard: self.shard, ..pipeline_config(&self.config, epochs) }
    }

    /// The batch's input `[N, C, H, W]` (noise keyed by `key` for a denoiser) and
    /// targets (labels `[N]`, targets `[N, T]` or images `[N, C, H, W]`).
    fn tensors(&self, batch: &ferroflow_data::Batch, key: [u64; 2]) -> Result<(Tensor, Tensor)> {
        Ok((self.objective.inputs(batch, &self.device, key)?, self.objective.targets(batch, &self.device)?))
    }

    /// Validation: with several ranks, each evaluates its part of every
    /// batch and the classification metrics are summed over the ranks;
    /// regression and image-to-image metrics are not sums, so there every
    /// rank evaluates the whole split.
    fn evaluate(&self, source: &Source, step: i64, replicas: &mut Replicas<'_>) -> Result<EvalReport> {
        let mut config = self.pipeline_config(Some(1));
        let classification = matches!(self.objective, Objective::Classification { .. });
        if !classification {
            config.shard = None;
        }
        let mut finish = |m: &mut Metrics| if classification { replicas.sum_metrics(step, m) } else { Ok(()) };
        evaluate_with(
            &self.model,
            source,
            &self.preprocess,
            config,
            &self.objective,
            &self.device,
            &mut |_, _| {},
            &mut finish,
        )
    }

    fn fingerprint(&self) -> DataFingerprint {
        DataFingerprint { train_count: self.data.train_count, classes: self.data.classes.clone() }
    }

    /// Everything a resume needs, at `step` with the stream at `cursor`.
    fn capture(
        &self,
        step: i64,
        cursor: Cursor,
        config_toml: &str,
        monitor: Option<&MonitorState>,
    ) -> Result<Checkpoint> {
        let meta = CheckpointMeta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            global_step: step,
            cursor: Some(cursor),
            rng: Some(RngStates {
                var_store: self.store.rng_state(),
                dropout: self.model.rng_states().into_iter().collect(),
            }),
            config: Some(config_toml.to_string()),
            trainable: self.store.trainable_variables().into_iter().map(|v| v.name).collect(),
            classes: self.data.classes.clone(),
            model: Some(self.spec.clone()),
            preprocess: Some(self.preprocess.clone()),
            data: Some(self.fingerprint()),
            created: checkpoint::now(),
            targets: match &self.objective {
                Objective::Regression { stats, .. } => Some(stats.clone()),
                _ => None,
            },
            monitor: monitor.cloned(),
        };
        Checkpoint::capture(&self.store.global_variables(), meta)
    }

    /// Restores a resume's state from `ck`, read from `path`; returns the data cursor.
    fn resume(&self, path: &Path, ck: &Checkpoint) -> Result<Cursor> {
        let name = path.display().to_string();
        if ck.other_metadata.contains_key(checkpoint::TF_FORMAT_KEY) && ck.meta.cursor.is_none() {
            return Err(TrainError::Checkpoint {
                path: name.clone(),
                reason: format!(
                    "is a TensorFlow bundle without ferroflow's side file {} (the data cursor and random streams), \
                     so the run cannot resume exactly; put the side file back, or start a new --train-dir with \
                     --checkpoint-path {name} to fine-tune from it",
                    checkpoint::sidecar_path(path).display()
                ),
            });
        }
        if let Some(data) = &ck.meta.data
            && *data != self.fingerprint()
        {
            return Err(TrainError::Checkpoint {
                path: name,
                reason: format!(
                    "cannot resume: the checkpoint was trained on {} examples of classes [{}], but the data now \
                     has {} examples of classes [{}]; train into a new --train-dir (or fine-tune with \
                     --checkpoint-path)",
                    data.train_count,
                    data.classes.join(", "),
                    self.data.train_count,
                    self.data.classes.join(", ")
                ),
            });
        }
        restore_exact(&self.store, ck, &name)?;
        if let Some(rng) = &ck.meta.rng {
            self.store.set_rng_state(rng.var_store);
            for (stream, state) in &rng.dropout {
                self.model.set_rng_state(stream, *state)?;
            }
        }
        Ok(ck.meta.cursor.unwrap_or_default())
    }
}

/// The checkpoint a run in `train_dir` resumes from, loaded and verified:
/// the latest listed one, or with `on_corrupt = previous` the newest intact
/// one (the damaged ones set aside, with a warning naming them).
fn resume_source(
    train_dir: &Path,
    on_corrupt: OnCorrupt,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Option<(PathBuf, Checkpoint)>> {
    if on_corrupt == OnCorrupt::Error {
        return checkpoint::latest_checkpoint(train_dir)?
            .map(|path| Checkpoint::load(&path).map(|ck| (path, ck)))
            .transpose();
    }
    let Some(intact) = checkpoint::latest_intact(train_dir)? else { return Ok(None) };
    if !intact.damaged.is_empty() {
        let moved = checkpoint::set_aside(train_dir, &intact.damaged, &intact.path)?;
        let reasons: Vec<String> = intact.damaged.iter().map(|d| d.error.to_string()).collect();
        progress(&Progress::Note(format!(
            "warning: the latest checkpoint {} is damaged or missing ({}); resuming from the newest intact one, {} \
             (checkpoint.on_corrupt = previous){}",
            intact.damaged[0].path.display(),
            reasons.join("; "),
            intact.path.display(),
            if moved.is_empty() {
                String::new()
            } else {
                format!(
                    "; unlisted and kept as {}",
                    moved.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                )
            }
        )));
    }
    Ok(Some((intact.path, intact.checkpoint)))
}

/// The input pipeline settings of a run.
fn pipeline_config(config: &TrainConfig, epochs: Option<u64>) -> PipelineConfig {
    let d = &config.data;
    PipelineConfig {
        // With gradient accumulation the pipeline yields micro-batches (validation too).
        batch_size: config.train.batch_size / config.train.accumulate_steps.max(1),
        shuffle_buffer: d.shuffle_buffer,
        num_workers: d.num_workers,
        prefetch: d.prefetch,
        epochs,
        seed: config.train.seed,
        fast_jpeg: d.fast_jpeg,
        ..Default::default()
    }
}

/// A batch's images as model input `[N, C, H, W]`.
pub(crate) fn batch_input(batch: &ferroflow_data::Batch, device: &Device) -> Result<Tensor> {
    let [c, h, w] = batch.shape;
    Tensor::from_slice(&batch.images, (batch.size, c, h, w), device).map_err(TrainError::candle("input batch"))
}

/// The run's task from its data and `train.loss`: class labels with the
/// cross-entropy, or regression targets (standardised with the training
/// split's statistics unless `data.normalize_targets = false`).
fn objective_for(config: &TrainConfig, data: &DataSource) -> Result<Objective> {
    let t = &config.train;
    if config.data.targets != Targets::Labels {
        let loss = match t.loss {
            None | Some(Loss::Mse) => RegressionLoss::Mse,
            Some(Loss::Mae) => RegressionLoss::Mae,
            Some(other) => {
                return Err(TrainError::config(
                    "train.loss",
                    format!("{other:?} does not apply to image-to-image training; use mse or mae"),
                ));
            }
        };
        return Ok(Objective::Reconstruction {
            loss,
            noise_stddev: config.data.noise_stddev,
            paired: config.data.targets == Targets::Paired,
            // Set from the run's preprocessing once the model's input size is known.
            scale: PixelScale { mean: [0.0; 3], k: [1.0; 3] },
            seed: t.seed,
        });
    }
    match data.task {
        Task::Classification => {
            if let Some(loss) = t.loss.filter(|l| *l != Loss::CrossEntropy) {
                return Err(TrainError::config(
                    "train.loss",
                    format!("{loss:?} is a regression loss, but the data has class labels; use cross_entropy"),
                ));
            }
            let offset = config.model.labels_offset;
            let needed = data.classes.len() + offset;
            let classes = config.model.num_classes.unwrap_or(needed);
            if classes < needed {
                return Err(TrainError::config(
                    "model.num_classes",
                    format!(
                        "{classes} outputs cannot hold the data's {} classes{}",
                        data.classes.len(),
                        if offset > 0 { format!(" after model.labels_offset = {offset}") } else { String::new() }
                    ),
                ));
            }
            Ok(Objective::Classification { classes, label_smoothing: t.label_smoothing, labels_offset: offset })
        }
        Task::ImageToImage => {
            Err(TrainError::config("data.targets", "the data holds target images: set data.targets = \"paired\""))
        }
        Task::Regression => {
            let loss = match t.loss {
                None | Some(Loss::Mse) => RegressionLoss::Mse,
                Some(Loss::Mae) => RegressionLoss::Mae,
                Some(Loss::Huber) => RegressionLoss::Huber,
                Some(Loss::CrossEntropy) => {
                    return Err(TrainError::config(
                        "train.loss",
                        "cross_entropy needs class labels, but the data has regression targets; use mse, mae or huber",
                    ));
                }
            };
            let n = data.target_size;
            if let Some(k) = config.model.num_classes.filter(|&k| k != n) {
                return Err(TrainError::config(
                    "model.num_classes",
                    format!("{k}, but the data has {n} regression target(s) per example (leave it unset)"),
                ));
            }
            if t.label_smoothing > 0.0 {
                return Err(TrainError::config("train.label_smoothing", "applies to class labels, not regression"));
            }
            let stats = match (&data.train, config.data.normalize_targets) {
                (Source::Records { files }, true) => target_stats(files, n)?,
                _ => TargetStats::identity(n),
            };
            let names = (0..n).map(|i| format!("target_{i}")).collect();
            Ok(Objective::Regression { stats, loss, huber_delta: t.huber_delta, names })
        }
    }
}

/// The preprocessing of a run: the model's input size, the config's
/// resize/augmentation, and normalisation from the data's statistics.
fn preprocess_for(config: &TrainConfig, input: [usize; 3], mean: [f64; 3], std: [f64; 3]) -> Result<Preprocess> {
    let [h, w, c] = input;
    let base = Preprocess {
        image_size: [h, w],
        channels: c,
        resize_method: config.data.resize_method.clone(),
        train: config.data.augment.clone(),
        eval_central_fraction: config.data.eval_central_fraction,
        ..Default::default()
    };
    let slim = config.data.preprocessing;
    if slim != SlimPreprocessing::None {
        let same_family = matches!(
            (slim, config.data.normalize),
            (_, Normalize::MeanStd)
                | (SlimPreprocessing::Vgg, Normalize::Vgg)
                | (SlimPreprocessing::Inception, Normalize::Inception)
        );
        if !same_family {
            return Err(TrainError::config(
                "data.normalize",
                format!(
                    "{:?} conflicts with data.preprocessing = \"{}\", which normalises as TF-slim does; leave \
                     data.normalize unset",
                    config.data.normalize,
                    slim.name()
                ),
            ));
        }
        let preprocess = Preprocess { slim, ..base };
        preprocess.validate().map_err(|e| TrainError::config("data.preprocessing", e.to_string()))?;
        return Ok(preprocess);
    }
    let (mean, std) = (mean.map(|v| v as f32), std.map(|v| (v as f32).max(1e-3)));
    let (mean, std, scale) = match config.data.normalize {
        Normalize::MeanStd => (Some(mean), Some(std), 1.0),
        Normalize::Mean => (Some(mean), None, 1.0),
        Normalize::Unit => (None, None, 1.0 / 255.0),
        Normalize::None => (None, None, 1.0),
        // tf_slim vgg_preprocessing.py: _R_MEAN, _G_MEAN, _B_MEAN.
        Normalize::Vgg => (Some(ferroflow_data::VGG_MEANS), None, 1.0),
        // inception_preprocessing.py: (x / 255 - 0.5) * 2 = (x - 127.5) / 127.5.
        Normalize::Inception => (Some([127.5; 3]), Some([127.5; 3]), 1.0),
    };
    let preprocess = Preprocess { mean, std, scale, ..base };
    preprocess.validate().map_err(|e| TrainError::config("data", e.to_string()))?;
    Ok(preprocess)
}

/// Trains as `config` says, reporting through `progress`. When the train
/// dir holds a checkpoint, training resumes from it exactly (weights,
/// moving statistics, optimizer slots, step, data position, random
/// streams); otherwise `[warm_start]` may initialise from another run.
pub fn train(config: &TrainConfig, progress: &mut dyn FnMut(&Progress)) -> Result<TrainReport> {
    train_on(config, &mut Local, progress)
}

/// [`train`] as one of the data-parallel ranks of `collective`: rank 0's
/// start is everyone's, each rank takes its part of every batch
/// (`train.batch_size` is the global batch), gradients and moving
/// statistics are averaged over the ranks every step, and only rank 0
/// writes checkpoints, summaries and `config.toml`.
pub fn train_on(
    config: &TrainConfig,
    collective: &mut dyn Collective,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport> {
    config.validate()?;
    let world = collective.world_size();
    let t = &config.train;
    if world > 1 && !t.batch_size.is_multiple_of(world * t.accumulate_steps.max(1)) {
        return Err(TrainError::config(
            "train.batch_size",
            format!(
                "{} is the global batch of {world} ranks{}: it must be a multiple of {}",
                t.batch_size,
                if t.accumulate_steps > 1 {
                    format!(" of {} micro-batches", t.accumulate_steps)
                } else {
                    String::new()
                },
                world * t.accumulate_steps.max(1)
            ),
        ));
    }
    let device = crate::device(&config.train.device)?;
    let path =
        config.data.path.clone().ok_or_else(|| TrainError::config("data.path", "no data given (use --data DIR)"))?;
    let paired = config.data.targets == Targets::Paired;
    let data = DataSource::open(&path, config.data.val_fraction, config.train.seed, config.data.in_memory, paired)?;
    let mut objective = objective_for(config, &data)?;
    let outputs = objective.outputs();
    let mut spec = model_spec(&config.model.name, outputs.max(1))?;
    if let Some(input) = config.model.input {
        spec.input = input;
    }
    let store = VarStore::new(device.clone(), config.train.seed);
    let mut model = spec.build(&store, config.train.seed)?;
    crate::replicas::check_same_config(collective, &config.to_toml())?;
    if config.model.sync_batch_norm && world > 1 {
        model.synchronise_batch_norm(&collective.replica_sum()?);
    }
    let out = model.output_shape();
    let [h, w, c] = spec.input;
    if objective.is_reconstruction() && out != [c, h, w] {
        return Err(TrainError::config(
            "model.name",
            format!(
                "model {:?} outputs {out:?}; image-to-image training needs its input's shape [{c}, {h}, {w}] (e.g. \
                 encoder_decoder)",
                spec.name
            ),
        ));
    }
    if !objective.is_reconstruction() && out != [outputs] {
        let what = if objective.is_regression() {
            format!("{outputs} regression target(s) per example (a regressor ends in a dense layer of that width)")
        } else {
            format!("{outputs} classes (a classifier ends in a dense layer)")
        };
        return Err(TrainError::config(
            "model.name",
            format!("model {:?} outputs {out:?}, but the data has {what}", spec.name),
        ));
    }
    let preprocess = preprocess_for(config, spec.input, data.mean, data.std)?;
    if let Objective::Reconstruction { scale, .. } = &mut objective {
        *scale = PixelScale::of(&preprocess);
    }
    let shard = (world > 1).then(|| Shard { index: collective.rank(), count: world });
    let run = Run { config: config.clone(), data, spec, model, store, preprocess, device, objective, shard };
    let mut replicas = Replicas { collective, bucket_bytes: BUCKET_BYTES };
    run_loop(&run, &mut replicas, progress)
}

fn run_loop(run: &Run, replicas: &mut Replicas<'_>, progress: &mut dyn FnMut(&Progress)) -> Result<TrainReport> {
    let cfg = &run.config;
    let batch_size = cfg.train.batch_size as u64;
    let steps_per_epoch = (run.data.train_count as u64 / batch_size).max(1);
    let total_steps = cfg.train.steps.unwrap_or_else(|| cfg.train.epochs.unwrap_or(1) * steps_per_epoch);
    let train_dir = cfg.train.train_dir.clone();
    // Only rank 0 touches the train dir; the others take its start.
    let leader = replicas.leader();
    if leader {
        std::fs::create_dir_all(&train_dir)
            .map_err(|cause| TrainError::Io { path: train_dir.display().to_string(), cause })?;
    }

    let mut removed = if leader { checkpoint::remove_stale_temps(&train_dir) } else { Vec::new() };
    if leader {
        removed.extend(checkpoint::remove_unlisted_newer(&train_dir)?);
    }
    if !removed.is_empty() {
        progress(&Progress::Note(format!(
            "removed {} leftover file(s) of a save that was interrupted (nothing listed them): {}",
            removed.len(),
            removed.join(", ")
        )));
    }
    // Resume wins over warm start (TF-slim's train_image_classifier).
    let resume_from = if leader { resume_source(&train_dir, cfg.checkpoint.on_corrupt, progress)? } else { None };
    if let Some((path, ck)) = &resume_from
        && let Some(notice) = ck.integrity_notice(path)
    {
        progress(&Progress::Note(notice));
    }
    if leader
        && resume_from.is_none()
        && let Some(source) = &cfg.warm_start.checkpoint_path
    {
        let path = checkpoint::resolve_checkpoint(source)?;
        let ck = Checkpoint::load(&path)?;
        if let Some(notice) = ck.integrity_notice(&path) {
            progress(&Progress::Note(notice));
        }
        let ws = &cfg.warm_start;
        let report = warm_start(
            &run.store,
            &run.store.global_variables(),
            &ck,
            &path.display().to_string(),
            &ws.exclude_scopes,
            ws.ignore_missing_vars,
        )?;
        progress(&Progress::Note(format!(
            "warm start from {}: restored {} variable(s), excluded {}{}",
            path.display(),
            report.restored.len(),
            report.excluded.len(),
            if report.missing.is_empty() {
                String::new()
            } else {
                format!(", kept the initial values of {} missing: {}", report.missing.len(), report.missing.join(", "))
            }
        )));
    }
    let frozen = apply_trainable_scopes(&run.store, &cfg.warm_start.trainable_scopes)?;
    if !frozen.is_empty() {
        progress(&Progress::Note(format!(
            "trainable scopes {}: {} variable(s) frozen",
            cfg.warm_start.trainable_scopes.join(", "),
            frozen.len()
        )));
    }
    let mut optimizer = Optimizer::new(&cfg.optimizer, &run.store)?;
    let mut ema = cfg.train.ema_decay.map(|d| ExponentialMovingAverage::new(&run.store, d)).transpose()?;
    let mut cursor = Cursor::default();
    // The validation monitor (early stopping, the best checkpoint), continued from the checkpoint.
    let mut monitor = monitor_for(cfg)?;
    if let Some(m) = &monitor {
        m.check_task(&run.objective)?;
        if run.data.validation.is_none() {
            return Err(TrainError::config(
                if cfg.train.early_stopping.is_some() { "train.early_stopping" } else { "checkpoint.keep_best" },
                "needs a validation split, and the data has none (data.val_fraction, or a dataset with validation records)",
            ));
        }
    }
    if let (Some(m), Some((_, ck))) = (monitor.as_mut(), &resume_from)
        && let Some(state) = &ck.meta.monitor
        && let Some(note) = m.restore(state)
    {
        progress(&Progress::Note(note));
    }
    // The checkpoint's values are in the store now; only its path is kept.
    let resume_from = resume_from.map(|(path, ck)| run.resume(&path, &ck).map(|c| (path, c))).transpose()?;
    if let Some((_, resumed_cursor)) = &resume_from {
        cursor = *resumed_cursor;
    }
    let mut resumed = resume_from.is_some();
    if replicas.world() > 1 {
        // Rank 0's variables (fresh, warm-started or resumed) and position are everyone's.
        let mut start = StartState {
            resumed,
            global_step: run.store.global_step(),
            cursor,
            monitor: monitor.as_ref().map(|m| m.state.clone()),
            dropout: run.model.rng_states().into_iter().collect(),
        };
        replicas.broadcast_start(&run.store, &mut start)?;
        cursor = start.cursor;
        resumed = start.resumed;
        if let (Some(m), Some(state)) = (monitor.as_mut(), &start.monitor) {
            m.state = state.clone();
        }
        for (stream, state) in &start.dropout {
            run.model.set_rng_state(stream, *state)?;
        }
        progress(&Progress::Note(format!(
            "rank {} of {} ({}): global batch {}, {} per rank, batch norm statistics {}",
            replicas.rank(),
            replicas.world(),
            replicas.collective.describe(),
            cfg.train.batch_size,
            cfg.train.batch_size / replicas.world(),
            if cfg.model.sync_batch_norm { "of the global batch (model.sync_batch_norm)" } else { "per rank" }
        )));
    }
    if let Some((path, _)) = &resume_from {
        progress(&Progress::Note(format!(
            "resuming from {} at step {} (epoch {}, example {})",
            path.display(),
            run.store.global_step(),
            cursor.epoch,
            cursor.offset
        )));
    }

    let config_toml = cfg.to_toml();
    // One writer: rank 0's event files, config and checkpoints are the run's.
    let mut summaries = if leader {
        std::fs::write(train_dir.join("config.toml"), &config_toml)
            .map_err(|cause| TrainError::Io { path: train_dir.join("config.toml").display().to_string(), cause })?;
        let mut summaries = Summaries::new(&train_dir)?;
        summaries.session_start(run.store.global_step())?;
        summaries.start(&run.model.graph_def(), &config_toml, run.store.global_step())?;
        Some(summaries)
    } else {
        None
    };
    let ck_cfg = &cfg.checkpoint;
    let manager = if ck_cfg.enabled && leader {
        Some(
            CheckpointManager::open(&train_dir, ck_cfg.max_to_keep, ck_cfg.keep_checkpoint_every_n_hours)?
                .with_format(ck_cfg.format),
        )
    } else {
        None
    };
    let mut saver =
        Saver { manager, on_error: ck_cfg.on_error, last_saved: None, last_save_time: Instant::now(), announce: true };
    // The best checkpoint, in its own directory with its own state file (TF's `BestExporter` layout).
    let best_dir = train_dir.join("best");
    if leader && ck_cfg.keep_best && best_dir.is_dir() {
        // As for the run's own checkpoints: leftovers of a best save cut short.
        checkpoint::remove_stale_temps(&best_dir);
        checkpoint::remove_unlisted_newer(&best_dir)?;
    }
    let mut best_saver = Saver {
        manager: if ck_cfg.enabled && ck_cfg.keep_best && leader {
            Some(CheckpointManager::open(&best_dir, 1, None)?.with_format(ck_cfg.format))
        } else {
            None
        },
        on_error: ck_cfg.on_error,
        last_saved: None,
        last_save_time: Instant::now(),
        announce: false,
    };
    if let Some(stopped) = monitor.as_ref().and_then(|m| m.state.stopped_at) {
        progress(&Progress::Note(format!(
            "this run stopped early at step {stopped} (train.early_stopping); nothing to train (turn early stopping \
             off, or start a new --train-dir, to train further)"
        )));
    }

    let trainable = run.store.trainable_variables();
    let accumulate = cfg.train.accumulate_steps.max(1);
    let class_weights = class_weights(cfg, &run.data, &run.objective)?;
    if let Some(w) = &class_weights {
        let shown: Vec<String> = run.data.classes.iter().zip(w).map(|(c, w)| format!("{c} {w:.3}")).collect();
        progress(&Progress::Note(format!("class weights: {}", shown.join(", "))));
    }
    let decayed: Vec<_> = trainable.iter().filter(|v| v.name.ends_with("/weights")).cloned().collect();
    let moving = if replicas.world() > 1 { moving_statistics(&run.store) } else { Vec::new() };

    progress(&Progress::Start {
        total_steps,
        description: match &run.objective {
            Objective::Classification { classes, .. } => {
                format!("{} on {}, {classes} classes", run.model.name(), run.data.description)
            }
            Objective::Regression { stats, loss, .. } => format!(
                "{} on {}, {} regression target(s), {loss:?} loss",
                run.model.name(),
                run.data.description,
                stats.len()
            ),
            Objective::Reconstruction { loss, noise_stddev, .. } => format!(
                "{} on {}, image-to-image (the input as target, input noise stddev {noise_stddev}), {loss:?} loss",
                run.model.name(),
                run.data.description
            ),
        },
    });
    let mut pipeline =
        Pipeline::new(run.data.train.clone(), Mode::Train, run.pipeline_config(None), run.preprocess.clone(), cursor)?;
    let start = Instant::now();
    let mut images = 0u64;
    let mut final_loss = f32::NAN;
    let mut validation = None;
    let (mut window_loss, mut window_correct, mut window_n) = (0.0f64, 0usize, 0usize);
    while (run.store.global_step() as u64) < total_steps
        && monitor.as_ref().is_none_or(|m| m.state.stopped_at.is_none())
    {
        let step = run.store.global_step();
        // One step: `accumulate` micro-batches, their gradients summed (each loss divided
        // by `accumulate`, so the sum is the gradient of the whole batch's mean loss).
        let mut grad_store: Option<GradStore> = None;
        let mut loss_value = 0f32;
        let step_window = (window_correct, window_n);
        let mut first_batch = None;
        for micro in 0..accumulate {
            let Some(batch) = pipeline.next() else { break };
            let batch = batch?;
            let (x, y) = run.tensors(&batch, [1, step as u64 * accumulate as u64 + micro as u64])?;
            let logits = run.model.forward_t(&x, true)?; // [n, outputs]
            let losses = run.objective.losses(&logits, &y, true)?; // [n]
            let losses = match &class_weights {
                // Keras's class_weight: each example's loss times its class's weight, then the mean.
                Some(w) => {
                    let per: Vec<f32> =
                        batch.labels.iter().map(|&l| w.get(l as usize).copied().unwrap_or(1.0)).collect();
                    let per =
                        Tensor::from_vec(per, batch.size, &run.device).map_err(TrainError::candle("class weights"))?;
                    (losses * per).map_err(TrainError::candle("class weights"))?
                }
                None => losses,
            };
            let mut loss = losses.mean_all().map_err(TrainError::candle("loss"))?;
            if cfg.train.weight_decay > 0.0 {
                for v in &decayed {
                    let l2 =
                        v.var.sqr().and_then(|t| t.sum_all()).and_then(|t| t.affine(cfg.train.weight_decay / 2.0, 0.0));
                    loss = (loss + l2.map_err(TrainError::candle("weight decay"))?)
                        .map_err(TrainError::candle("weight decay"))?;
                }
            }
            if accumulate > 1 {
                loss = loss.affine(1.0 / accumulate as f64, 0.0).map_err(TrainError::candle("loss"))?;
            }
            let micro_loss = loss.to_scalar::<f32>().map_err(TrainError::candle("loss"))?;
            // With several ranks, after the all-reduce: every rank stops together.
            if !micro_loss.is_finite() && replicas.world() == 1 {
                return Err(TrainError::NonFiniteLoss { step, loss: micro_loss * accumulate as f32 });
            }
            loss_value += micro_loss;
            let grads = loss.backward().map_err(TrainError::candle("backward"))?;
            grad_store = Some(match grad_store.take() {
                None => grads,
                Some(mut sum) => {
                    for v in &trainable {
                        if let Some(g) = grads.get(&v.var) {
                            let total = match sum.get(&v.var) {
                                Some(s) => (s + g).map_err(TrainError::candle("gradient accumulation"))?,
                                None => g.clone(),
                            };
                            sum.insert(&v.var, total);
                        }
                    }
                    sum
                }
            });
            // Every rank's part: the whole step's examples.
            images += (batch.size * replicas.world()) as u64;
            cursor = batch.cursor;
            // Training metrics over the last summary window.
            if let Objective::Classification { classes, .. } = run.objective {
                let logits_v =
                    logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(TrainError::candle("logits"))?;
                let mut m = Metrics::new(classes);
                m.add(&logits_v, &run.objective.model_labels(&batch.labels), &[]);
                window_correct += m.correct;
                window_n += m.count;
            }
            if micro == 0 {
                first_batch = Some(batch);
            } else {
                pipeline.recycle(batch);
            }
        }
        for file in pipeline.take_skipped_files() {
            progress(&Progress::Note(format!("warning: skipped {file}; training goes on without it")));
        }
        // The data ran out (only with `epochs`, mid-accumulation): that partial step is not taken.
        let (Some(mut grad_store), Some(batch)) = (grad_store, first_batch) else { break };
        if replicas.world() > 1 {
            // The mean over the ranks of the gradients, moving statistics, loss and window accuracy.
            let (correct, n) = (window_correct - step_window.0, window_n - step_window.1);
            let mut scalars = [loss_value, correct as f32, n as f32];
            replicas.mean_gradients(step, &trainable, &mut grad_store, &moving, &mut scalars)?;
            let world = replicas.world() as f32;
            loss_value = scalars[0];
            window_correct = step_window.0 + (scalars[1] * world).round() as usize;
            window_n = step_window.1 + (scalars[2] * world).round() as usize;
            if !loss_value.is_finite() {
                return Err(TrainError::NonFiniteLoss { step, loss: loss_value });
            }
        }
        // Variables without a gradient are left alone, as TF's apply_gradients does.
        let mut pairs = trainable_gradients(&run.store, &grad_store);
        let mut global_norm = None;
        if let Some(clip) = cfg.train.clip_global_norm {
            let grads: Vec<Tensor> = pairs.iter().map(|(_, g)| g.clone()).collect();
            let (clipped, norm) = clip_by_global_norm(&grads, clip)?;
            for (pair, g) in pairs.iter_mut().zip(clipped) {
                pair.1 = g;
            }
            global_norm = Some(norm);
        }
        let lr = cfg.schedule.learning_rate(step);
        optimizer.apply(&pairs, lr)?;
        let step = run.store.increment_global_step();
        if let Some(ema) = ema.as_mut() {
            ema.update(step)?;
        }
        final_loss = loss_value;
        let rate = images as f64 / start.elapsed().as_secs_f64().max(1e-9);
        window_loss += f64::from(loss_value);
        let s = &cfg.summary;
        if s.scalars_every > 0 && (step as u64).is_multiple_of(s.scalars_every) {
            if let Some(summaries) = summaries.as_mut() {
                write_train_scalars(
                    summaries,
                    &run.objective,
                    window_loss,
                    window_correct,
                    window_n,
                    lr,
                    rate,
                    global_norm,
                    s.scalars_every,
                    step,
                )?;
            }
            (window_loss, window_correct, window_n) = (0.0, 0, 0);
        }
        let summaries_at = |every: u64| every > 0 && ((step as u64).is_multiple_of(every) || step == 1);
        if let Some(summaries) = summaries.as_mut() {
            if summaries_at(s.histograms_every) {
                summaries.histograms(&trainable, &grad_store, step)?;
            }
            if summaries_at(s.images_every) {
                let mean = run.preprocess.mean.unwrap_or([0.0; 3]);
                let std = run.preprocess.std.unwrap_or([1.0; 3]);
                summaries.images(&batch, mean, std, run.preprocess.scale, s.max_images, step)?;
            }
        }
        pipeline.recycle(batch);
        progress(&Progress::Step { step, loss: loss_value, images_per_sec: rate });

        let last = step as u64 >= total_steps;
        let due = cfg.train.validate_every > 0 && (step as u64).is_multiple_of(cfg.train.validate_every);
        if let (true, Some(source)) = (last || due, &run.data.validation) {
            let report = with_ema(ema.as_ref(), || run.evaluate(source, step, replicas))?;
            if let Some(summaries) = summaries.as_mut() {
                report.write_scalars(&mut summaries.validation, step)?;
                if let (Some(samples), Objective::Reconstruction { scale, .. }) = (&report.samples, &run.objective) {
                    summaries.reconstructions(samples, scale, cfg.summary.max_images, step)?;
                }
                summaries.validation.flush()?;
            }
            progress(&Progress::Validation { step, report: Box::new(report.clone()) });
            if let Some(m) = monitor.as_mut() {
                let seen = m.observe(&report, step)?;
                if seen.improved
                    && let Some(path) = best_saver.save(run, step, cursor, &config_toml, Some(&m.state), progress)?
                {
                    progress(&Progress::Note(format!(
                        "step {step}: best {} so far, {:.6}; saved {}",
                        m.metric,
                        m.state.best.unwrap_or(f64::NAN),
                        path.display()
                    )));
                }
                if seen.stop {
                    progress(&Progress::Note(format!(
                        "early stopping at step {step}: {} has not improved for {} validation(s) (best {:.6} at step {})",
                        m.metric,
                        m.state.wait,
                        m.state.best.unwrap_or(f64::NAN),
                        m.state.best_step
                    )));
                }
            }
            validation = Some(report);
        }
        let stopping = monitor.as_ref().is_some_and(|m| m.state.stopped_at.is_some());
        let by_steps = ck_cfg.every_steps > 0 && (step as u64).is_multiple_of(ck_cfg.every_steps);
        let by_time = ck_cfg.every_secs > 0.0 && saver.last_save_time.elapsed().as_secs_f64() >= ck_cfg.every_secs;
        if last || by_steps || by_time || stopping {
            if let Some(summaries) = summaries.as_mut() {
                summaries.flush()?;
            }
            saver.save(run, step, cursor, &config_toml, monitor.as_ref().map(|m| &m.state), progress)?;
        }
    }
    if let Some(summaries) = summaries.as_mut() {
        summaries.flush()?;
    }
    let steps = run.store.global_step();
    let weights_digest = if replicas.world() > 1 {
        let digest = crate::bench::weights_digest(&run.store)?;
        let mut leader_digest = digest.to_le_bytes().to_vec();
        replicas.collective.sync("the final weights check")?;
        replicas.collective.broadcast_bytes(&mut leader_digest, 0)?;
        if leader_digest != digest.to_le_bytes() {
            progress(&Progress::Note(format!(
                "warning: rank {}'s variables differ from rank 0's at the end (digest {digest:016x}); the ranks \
                 diverged (a bug: please report it)",
                replicas.rank()
            )));
        }
        Some(digest)
    } else {
        None
    };
    if validation.is_none()
        && let Some(source) = &run.data.validation
        && resumed
    {
        // Resumed a finished run: report its validation without training.
        validation = Some(with_ema(ema.as_ref(), || run.evaluate(source, steps, replicas))?);
    }
    Ok(TrainReport {
        steps,
        final_loss,
        validation,
        images_per_sec: images as f64 / start.elapsed().as_secs_f64().max(1e-9),
        classes: run.data.classes.clone(),
        train_dir,
        checkpoint: saver.last_saved,
        resumed_from: resume_from.map(|(path, _)| path),
        stopped_early_at: monitor.as_ref().and_then(|m| m.state.stopped_at),
        best: monitor.as_ref().and_then(|m| m.state.best.map(|b| (m.metric.clone(), b, m.state.best_step))),
        best_checkpoint: if ck_cfg.keep_best { checkpoint::latest_checkpoint(&best_dir).ok().flatten() } else { None },
        skipped: pipeline.skipped(),
        weights_digest,
    })
}

/// The training scalars of a summary window (`loss`, `accuracy`,
/// `learning_rate`, `images_per_sec`, `global_norm`) at `step`.
#[allow(clippy::too_many_arguments)]
fn write_train_scalars(
    summaries: &mut Summaries,
    objective: &Objective,
    window_loss: f64,
    window_correct: usize,
    window_n: usize,
    lr: f64,
    rate: f64,
    global_norm: Option<f64>,
    every: u64,
    step: i64,
) -> Result<()> {
    let steps_in_window = every.min(step as u64).max(1) as f64;
    summaries.train.add_scalar("loss", (window_loss / steps_in_window) as f32, step)?;
    if matches!(objective, Objective::Classification { .. }) {
        summaries.train.add_scalar("accuracy", (window_correct as f64 / window_n.max(1) as f64) as f32, step)?;
    }
    summaries.train.add_scalar("learning_rate", lr as f32, step)?;
    summaries.train.add_scalar("images_per_sec", rate as f32, step)?;
    if let Some(n) = global_norm {
        summaries.train.add_scalar("global_norm", n as f32, step)?;
    }
    Ok(())
}

/// Saves checkpoints of a run through its manager (none when disabled).
struct Saver {
    manager: Option<CheckpointManager>,
    on_error: OnSaveError,
    last_saved: Option<PathBuf>,
    last_save_time: Instant,
    /// Report each save as [`Progress::Saved`] (the run's checkpoints; not the best's).
    announce: bool,
}

impl Saver {
    /// Saves step `step`; returns the checkpoint's path, or `None` when saving is off or
    /// failed with `checkpoint.on_error = continue`.
    fn save(
        &mut self,
        run: &Run,
        step: i64,
        cursor: Cursor,
        config_toml: &str,
        monitor: Option<&MonitorState>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Option<PathBuf>> {
        let Some(manager) = self.manager.as_mut() else { return Ok(None) };
        let result = run.capture(step, cursor, config_toml, monitor).and_then(|ck| manager.save(&ck, step));
        self.last_save_time = Instant::now();
        match result {
            Ok(path) => {
                if self.announce {
                    progress(&Progress::Saved { step, path: path.clone() });
                }
                self.last_saved = Some(path.clone());
                Ok(Some(path))
            }
            Err(e) if self.on_error == OnSaveError::Continue => {
                progress(&Progress::Note(format!("warning: {e}; training continues (checkpoint.on_error = continue)")));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The per-class loss weights of `train.class_weights`: the given list, or for
/// `"balanced"` `n / (classes * count_c)` from the training split's counts
/// (scikit-learn's `compute_class_weight("balanced")`, what Keras users pass
/// as `class_weight`); `None` when unset.
fn class_weights(config: &TrainConfig, data: &DataSource, objective: &Objective) -> Result<Option<Vec<f32>>> {
    let Some(spec) = &config.train.class_weights else { return Ok(None) };
    let Objective::Classification { classes, .. } = objective else {
        return Err(TrainError::config("train.class_weights", "applies to class labels only"));
    };
    let weights = match spec {
        ClassWeights::List(w) => {
            if w.len() != *classes {
                return Err(TrainError::config(
                    "train.class_weights",
                    format!("{} weights for {classes} classes", w.len()),
                ));
            }
            w.iter().map(|&v| v as f32).collect()
        }
        ClassWeights::Balanced => {
            let total: usize = data.class_counts.iter().sum();
            if data.class_counts.len() != *classes || data.class_counts.contains(&0) {
                return Err(TrainError::config(
                    "train.class_weights",
                    format!("\"balanced\" needs every class in the training split, got counts {:?}", data.class_counts),
                ));
            }
            data.class_counts.iter().map(|&c| (total as f64 / (*classes as f64 * c as f64)) as f32).collect()
        }
    };
    Ok(Some(weights))
}

/// The run's validation monitor: early stopping's metric, or for `keep_best` alone the
/// validation loss; `None` when neither is set.
fn monitor_for(config: &TrainConfig) -> Result<Option<Monitor>> {
    match (&config.train.early_stopping, config.checkpoint.keep_best) {
        (Some(es), _) => Monitor::new(&es.metric, es.mode, es.min_delta, Some(es.patience)).map(Some),
        (None, true) => Monitor::new("validation/loss", Some(MonitorMode::Min), 0.0, None).map(Some),
        (None, false) => Ok(None),
    }
}

/// Evaluates with the moving-average weights swapped in, when there are any.
fn with_ema<T>(ema: Option<&ExponentialMovingAverage>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match ema {
        None => f(),
        Some(ema) => {
            let saved = ema.swap_in()?;
            let result = f();
            ema.swap_out(saved)?;
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_slim_normalisations_are_its_preprocessing_arithmetic() {
        let mut config = TrainConfig::default();
        let data = ([100.0; 3], [50.0; 3]);
        config.data.normalize = Normalize::Vgg;
        let p = preprocess_for(&config, [224, 224, 3], data.0, data.1).unwrap();
        assert_eq!((p.mean, p.std, p.scale), (Some([123.68, 116.78, 103.94]), None, 1.0));
        config.data.normalize = Normalize::Inception;
        let p = preprocess_for(&config, [299, 299, 3], data.0, data.1).unwrap();
        let [m, s] = [p.mean.unwrap()[0], p.std.unwrap()[0]];
        // 0 → -1, 255 → 1, as (x / 255 - 0.5) * 2.
        assert_eq!(((0.0 - m) / s, (255.0 - m) / s), (-1.0, 1.0));
    }

    #[test]
    fn tf_slim_preprocessing_takes_over_and_refuses_conflicting_settings() {
        let mut config = TrainConfig::default();
        let data = ([100.0; 3], [50.0; 3]);
        config.data.preprocessing = SlimPreprocessing::Vgg;
        let p = preprocess_for(&config, [224, 224, 3], data.0, data.1).unwrap();
        assert_eq!((p.slim, p.mean, p.std), (SlimPreprocessing::Vgg, None, None));
        config.data.normalize = Normalize::Vgg;
        assert!(preprocess_for(&config, [224, 224, 3], data.0, data.1).is_ok());
        config.data.normalize = Normalize::Inception;
        let err = preprocess_for(&config, [224, 224, 3], data.0, data.1).unwrap_err().to_string();
        assert!(err.contains("data.normalize") && err.contains("vgg"), "{err}");
        config.data.normalize = Normalize::MeanStd;
        config.data.augment.flip_left_right = true;
        let err = preprocess_for(&config, [224, 224, 3], data.0, data.1).unwrap_err().to_string();
        assert!(err.contains("data.preprocessing") && err.contains("augment"), "{err}");
        config.data.augment.flip_left_right = false;
        let err = preprocess_for(&config, [299, 299, 3], data.0, data.1).unwrap_err().to_string();
        assert!(err.contains("at most 256"), "{err}");
    }
}
