//! Evaluation: a model in eval mode over a whole split — loss, top-1 and
//! top-5 accuracy, per-class accuracy and the confusion matrix (or, for
//! regression, MSE, MAE, RMSE and R² per target) — during training and for
//! `ferroflow eval` on a checkpoint.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ferroflow_data::{Cursor, Mode, Pipeline, PipelineConfig, Preprocess, Source, Task};
use ferroflow_nn::{Model, no_grad};
use serde::Serialize;
use tfrecord::EventWriter;

use crate::data_source::DataSource;
use crate::error::{Result, TrainError};
use crate::metrics::Metrics;
use crate::objective::Objective;
use crate::reconstruction::{ReconstructionMetrics, ReconstructionReport};
use crate::regression::{RegressionMetrics, RegressionReport};
use crate::restored::RestoredModel;

/// Results of an evaluation pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Examples evaluated.
    pub count: usize,
    /// Mean loss: cross-entropy, or the regression loss on standardised targets.
    pub loss: f64,
    /// Top-1 accuracy (0 for regression).
    pub accuracy: f64,
    /// Top-5 accuracy (0 for regression).
    pub top5: f64,
    /// `confusion[label][prediction]` (empty for regression).
    pub confusion: Vec<Vec<usize>>,
    /// Regression metrics, in the targets' units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<RegressionReport>,
    /// Image-to-image metrics, in pixel units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconstruction: Option<ReconstructionReport>,
    /// Image-to-image: the first batch's input, target and output, for TensorBoard.
    #[serde(skip)]
    pub samples: Option<ImageSamples>,
}

/// Images of one batch, model values, `[N, C, H, W]` row-major each.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSamples {
    /// What the model saw (noisy, for a denoiser).
    pub input: Vec<f32>,
    /// The target.
    pub target: Vec<f32>,
    /// The model's output.
    pub output: Vec<f32>,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
}

impl EvalReport {
    /// Each class's accuracy (recall): `None` for a class with no examples.
    ///
    /// ```
    /// let r = ferroflow_train::EvalReport {
    ///     count: 4, loss: 0.0, accuracy: 0.75, top5: 1.0,
    ///     confusion: vec![vec![2, 0, 0], vec![1, 1, 0], vec![0, 0, 0]], regression: None,
    ///     reconstruction: None, samples: None,
    /// };
    /// assert_eq!(r.per_class_accuracy(), [Some(1.0), Some(0.5), None]);
    /// ```
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let n: usize = row.iter().sum();
                (n > 0).then(|| row[i] as f64 / n as f64)
            })
            .collect()
    }

    /// Writes the report as TensorBoard scalars at `step`: `loss`, `accuracy` and
    /// `top5`, or for regression `loss`, `mse`, `mae`, `rmse`, `r2` (means over the
    /// targets) and, with several targets, `r2/<target>` and `rmse/<target>`.
    pub fn write_scalars(&self, w: &mut EventWriter, step: i64) -> Result<()> {
        w.add_scalar("loss", self.loss as f32, step)?;
        if let Some(r) = &self.reconstruction {
            for (name, v) in [
                ("mse", r.mse),
                ("mae", r.mae),
                ("psnr", r.psnr),
                ("input_mse", r.input_mse),
                ("input_psnr", r.input_psnr),
            ] {
                w.add_scalar(name, v as f32, step)?;
            }
            return Ok(());
        }
        match &self.regression {
            None => {
                w.add_scalar("accuracy", self.accuracy as f32, step)?;
                w.add_scalar("top5", self.top5 as f32, step)?;
            }
            Some(r) => {
                for (name, v) in [("mse", r.mse), ("mae", r.mae), ("rmse", r.rmse), ("r2", r.r2)] {
                    w.add_scalar(name, v as f32, step)?;
                }
                if r.targets.len() > 1 {
                    for t in &r.targets {
                        w.add_scalar(&format!("r2/{}", t.name), t.r2 as f32, step)?;
                        w.add_scalar(&format!("rmse/{}", t.name), t.rmse as f32, step)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs `model` in eval mode over every example of `source` once,
/// reporting `(examples done, examples in total)` after each batch.
pub fn evaluate(
    model: &Model,
    source: &Source,
    preprocess: &Preprocess,
    config: PipelineConfig,
    objective: &Objective,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    evaluate_with(model, source, preprocess, config, objective, device, progress, &mut |_| Ok(()))
}

/// [`evaluate`], with `finish` given the metrics before the report is made
/// of them (data-parallel validation sums the ranks' metrics there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_with(
    model: &Model,
    source: &Source,
    preprocess: &Preprocess,
    mut config: PipelineConfig,
    objective: &Objective,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
    finish: &mut dyn FnMut(&mut Metrics) -> Result<()>,
) -> Result<EvalReport> {
    config.epochs = Some(1);
    // Every example counts once: no partial batch is dropped.
    config.drop_remainder = false;
    let mut pipeline = Pipeline::new(source.clone(), Mode::Eval, config, preprocess.clone(), Cursor::default())?;
    let total = pipeline.examples_per_epoch();
    let classes = match objective {
        Objective::Classification { classes, .. } => *classes,
        _ => 0,
    };
    let mut metrics = Metrics::new(classes);
    let mut regression = match objective {
        Objective::Regression { stats, .. } => Some(RegressionMetrics::new(stats.len())),
        _ => None,
    };
    let mut reconstruction = objective.is_reconstruction().then(ReconstructionMetrics::default);
    let mut samples = None;
    let mut index = 0u64;
    while let Some(batch) = pipeline.next() {
        let batch = batch?;
        // Validation noise is keyed by the batch's place, the same at every validation.
        let x = objective.inputs(&batch, device, [2, index])?;
        index += 1;
        let y = objective.targets(&batch, device)?;
        let outputs = no_grad(|| model.forward_t(&x, false))?; // [N, outputs] or [N, C, H, W]
        let losses = objective.losses(&outputs, &y, false)?; // [N]
        let out_v = outputs.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(TrainError::candle("eval"))?;
        let losses_v = losses.to_vec1::<f32>().map_err(TrainError::candle("eval"))?;
        let count_loss = |metrics: &mut Metrics| {
            metrics.loss_sum += losses_v.iter().map(|&l| f64::from(l)).sum::<f64>();
            metrics.count += batch.size;
        };
        match objective {
            Objective::Regression { stats, .. } => {
                // Metrics in the targets' own units.
                let mut predicted = out_v;
                stats.denormalize(&mut predicted);
                if let Some(r) = regression.as_mut() {
                    r.add(&predicted, &batch.targets);
                }
                count_loss(&mut metrics);
            }
            Objective::Reconstruction { scale, .. } => {
                let flat = |t: &candle_core::Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
                let (x_v, y_v) = (flat(&x), flat(&y));
                let (x_v, y_v) = (x_v.map_err(TrainError::candle("eval"))?, y_v.map_err(TrainError::candle("eval"))?);
                let [c, h, w] = batch.shape;
                if let Some(r) = reconstruction.as_mut() {
                    r.add(&out_v, &x_v, &y_v, c, h * w, scale);
                }
                if samples.is_none() {
                    samples =
                        Some(ImageSamples { input: x_v, target: y_v, output: out_v, shape: [batch.size, c, h, w] });
                }
                count_loss(&mut metrics);
            }
            Objective::Classification { .. } => metrics.add(&out_v, &objective.model_labels(&batch.labels), &losses_v),
        }
        pipeline.recycle(batch);
        progress(metrics.count, total);
    }
    finish(&mut metrics)?;
    let names = match objective {
        Objective::Regression { names, .. } => names.as_slice(),
        _ => &[],
    };
    let classification = classes > 0;
    Ok(EvalReport {
        count: metrics.count,
        loss: metrics.loss(),
        accuracy: if classification { metrics.accuracy() } else { 0.0 },
        top5: if classification { metrics.top5() } else { 0.0 },
        regression: regression.map(|r| r.report(names)),
        reconstruction: reconstruction.map(|r| r.report()),
        samples,
        confusion: metrics.confusion,
    })
}

/// What `ferroflow eval` evaluates.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// A checkpoint file, prefix or train dir (its latest checkpoint).
    pub checkpoint: PathBuf,
    /// The data; default: the run's own `data.path`.
    pub data: Option<PathBuf>,
    /// `validation` or `train`.
    pub split: String,
    /// Examples per batch; default: the run's batch size.
    pub batch_size: Option<usize>,
    /// Write the results as TensorBoard scalars to `<train_dir>/eval/`.
    pub write_summaries: bool,
    /// `cpu` or `cuda[:N]` ([`crate::device`]); a checkpoint restores on either,
    /// whichever device wrote it.
    pub device: String,
    /// A checkpoint without ferroflow's metadata (e.g. TF-slim's): the zoo
    /// model it holds, its preprocessing and labels offset
    /// ([`RestoredModel::load_bare`]).
    pub bare: Option<crate::restored::BareCheckpoint>,
}

/// Results of `ferroflow eval`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointEval {
    /// The checkpoint's global step.
    pub step: i64,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Whether moving-average weights were evaluated.
    pub ema: bool,
    /// A classifier's output names (the rows and columns of the confusion
    /// matrix): its class names, after `model.labels_offset` leading outputs
    /// such as TF-slim's `background`; a regression model's targets.
    pub classes: Vec<String>,
    /// The split evaluated.
    pub split: String,
    /// The metrics.
    pub report: EvalReport,
    /// A notice when the checkpoint's values could not be verified (no checksums).
    #[serde(skip)]
    pub integrity_notice: Option<String>,
}

/// Restores a checkpoint (its moving-average weights when it has them) and
/// evaluates it on a split, with the run's own eval preprocessing;
/// `progress` gets `(examples done, total)` after each batch.
pub fn evaluate_checkpoint(options: &EvalOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<CheckpointEval> {
    let device = crate::device(&options.device)?;
    let restored = match &options.bare {
        Some(bare) => RestoredModel::load_bare(&options.checkpoint, bare, &device)?,
        None => RestoredModel::load(&options.checkpoint, &device)?,
    };
    let config = &restored.config;
    let data_path = options.data.clone().or_else(|| config.data.path.clone()).ok_or_else(|| {
        TrainError::config("--data", "the checkpoint records no data path; give the dataset with --data DIR")
    })?;
    let paired = config.data.targets == crate::config::Targets::Paired;
    let data =
        DataSource::open(&data_path, config.data.val_fraction, config.train.seed, config.data.in_memory, paired)?;
    let regression = restored.objective.is_regression();
    if regression && (data.task != Task::Regression || data.target_size != restored.objective.outputs()) {
        return Err(TrainError::config(
            "--data",
            format!(
                "{} has {}, but the checkpoint's model predicts {} regression target(s)",
                data_path.display(),
                if data.task == Task::Regression {
                    format!("{} regression target(s) per example", data.target_size)
                } else {
                    format!("class labels ({})", data.classes.join(", "))
                },
                restored.objective.outputs()
            ),
        ));
    }
    let classifier = !regression && !restored.objective.is_reconstruction();
    if classifier && restored.bare && data.classes.len() > restored.classes.len() {
        return Err(TrainError::config(
            "--data",
            format!(
                "{} has {} classes, but the model has {} outputs{}",
                data_path.display(),
                data.classes.len(),
                restored.output_names.len(),
                if restored.labels_offset > 0 {
                    format!(" of which the first {} are not classes (--labels-offset)", restored.labels_offset)
                } else {
                    String::new()
                }
            ),
        ));
    }
    if classifier && !restored.bare && data.classes != restored.classes {
        return Err(TrainError::config(
            "--data",
            format!(
                "{} has classes [{}], but the checkpoint's model was trained on [{}]",
                data_path.display(),
                data.classes.join(", "),
                restored.classes.join(", ")
            ),
        ));
    }
    let source = match options.split.as_str() {
        "validation" => data.validation.clone().ok_or_else(|| {
            TrainError::config("--split", format!("{} has no validation examples", data_path.display()))
        })?,
        "train" => data.train.clone(),
        other => return Err(TrainError::config("--split", format!("{other:?}: expected validation or train"))),
    };
    let mut pipeline = PipelineConfig {
        // With gradient accumulation the run's batches were micro-batches: evaluate at that size.
        batch_size: options.batch_size.unwrap_or(config.train.batch_size / config.train.accumulate_steps.max(1)),
        num_workers: config.data.num_workers,
        prefetch: config.data.prefetch,
        fast_jpeg: config.data.fast_jpeg,
        ..Default::default()
    };
    pipeline.shuffle_buffer = 0;
    let report =
        evaluate(&restored.model, &source, &restored.preprocess, pipeline, &restored.objective, &device, progress)?;
    if options.write_summaries
        && let Some(train_dir) = restored.path.parent()
    {
        write_eval_summaries(train_dir, &options.split, restored.step, &report)?;
    }
    Ok(CheckpointEval {
        step: restored.step,
        checkpoint: restored.path.clone(),
        ema: restored.ema,
        classes: if restored.output_names.is_empty() {
            restored.classes.clone()
        } else {
            restored.output_names.clone()
        },
        split: options.split.clone(),
        report,
        integrity_notice: restored.integrity_notice.clone(),
    })
}

/// `<train_dir>/eval/` (or `eval_train/` for the train split): loss,
/// accuracy and top-5 at the checkpoint's step, like TF-slim's eval_image_classifier.
fn write_eval_summaries(train_dir: &Path, split: &str, step: i64, report: &EvalReport) -> Result<()> {
    let dir = if split == "validation" { train_dir.join("eval") } else { train_dir.join(format!("eval_{split}")) };
    let mut w = EventWriter::new(dir)?;
    report.write_scalars(&mut w, step)?;
    w.flush()?;
    Ok(())
}
