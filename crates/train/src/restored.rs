//! A model rebuilt from a checkpoint for evaluation and prediction: its
//! declaration, class names and eval preprocessing come from the
//! checkpoint's metadata, so only the checkpoint is needed.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ferroflow_data::{Preprocess, SlimPreprocessing};
use ferroflow_nn::{GLOBAL_STEP, Model, ModelSpec, VarStore, zoo_model};

use crate::checkpoint::{Checkpoint, latest_intact, load_tensor_bundle, resolve_checkpoint, warm_start};
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
    /// A classifier's name for each of its outputs: `model.labels_offset`
    /// leading outputs the data has no label for (`background` when there is
    /// one, as in TF-slim's 1001-class checkpoints), then the classes, then
    /// any further outputs by index.
    pub output_names: Vec<String>,
    /// `model.labels_offset`: label `i` is output `i + labels_offset`.
    pub labels_offset: usize,
    /// True for a checkpoint without ferroflow's metadata ([`RestoredModel::load_bare`]):
    /// its class names are not known to match a dataset's.
    pub bare: bool,
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
                let labels_offset = config.model.labels_offset;
                (classes, Objective::Classification { classes: outputs, label_smoothing: 0.0, labels_offset })
            }
        };
        let labels_offset = config.model.labels_offset;
        let output_names = output_names(&objective, &classes, labels_offset);
        Ok(RestoredModel {
            model,
            spec,
            store,
            config,
            classes,
            output_names,
            labels_offset,
            bare: false,
            objective,
            preprocess,
            step,
            path,
            ema,
            integrity_notice,
        })
    }

    /// Loads a checkpoint that has no ferroflow metadata, such as one of
    /// TF-slim's published ImageNet checkpoints (a TF bundle prefix like
    /// `resnet_v1_50.ckpt`) or a plain safetensors file, into the zoo model
    /// `bare.model`. The number of classes is read from the checkpoint's
    /// logits variable; every variable of the model must be in it (extra ones,
    /// such as optimizer slots or TF-slim's `AuxLogits`, are ignored).
    pub fn load_bare(path: &Path, bare: &BareCheckpoint, device: &Device) -> Result<RestoredModel> {
        let name = path.display().to_string();
        let unknown = || {
            TrainError::config(
                "--model",
                format!("{:?} is not a zoo model (`ferroflow models` lists them)", bare.model),
            )
        };
        let ck = if path.extension().is_some_and(|e| e == "safetensors") {
            Checkpoint::load(path)?
        } else {
            load_tensor_bundle(path)?
        };
        let integrity_notice = ck.integrity_notice(path);
        let classes = checkpoint_classes(&ck, &bare.model, &name)?;
        let spec = zoo_model(&bare.model, classes).ok_or_else(unknown)?;
        let preprocessing = bare.preprocessing.unwrap_or_else(|| default_preprocessing(&bare.model));
        let mut config = TrainConfig::default();
        config.model.name = bare.model.clone();
        config.model.num_classes = Some(classes);
        config.model.labels_offset = bare.labels_offset;
        config.data.preprocessing = preprocessing;
        config.data.path = None;
        let store = VarStore::new(device.clone(), config.train.seed);
        let model = spec.build(&store, config.train.seed)?;
        let variables = store.global_variables();
        warm_start(&store, &variables, &ck, &name, &[], false)?;
        let step = match ck.get(GLOBAL_STEP).map(|t| t.values.to_f64()) {
            Some(v) if v.len() == 1 => v[0] as i64,
            _ => 0,
        };
        store.set_global_step(step);
        let [h, w, c] = spec.input;
        let preprocess = Preprocess { image_size: [h, w], channels: c, slim: preprocessing, ..Default::default() };
        preprocess.validate().map_err(|e| TrainError::config("--preprocessing", e.to_string()))?;
        let outputs = model.output_shape().iter().product::<usize>();
        if bare.labels_offset >= outputs {
            return Err(TrainError::config(
                "--labels-offset",
                format!("{} leaves no class of the model's {outputs} outputs", bare.labels_offset),
            ));
        }
        let objective =
            Objective::Classification { classes: outputs, label_smoothing: 0.0, labels_offset: bare.labels_offset };
        let output_names = match &bare.labels {
            Some(names) => {
                let mut names = names.clone();
                names.extend((names.len()..outputs).map(|i| i.to_string()));
                names.truncate(outputs);
                names
            }
            None => output_names(&objective, &[], bare.labels_offset),
        };
        let classes = output_names[bare.labels_offset..].to_vec();
        Ok(RestoredModel {
            model,
            spec,
            store,
            config,
            classes,
            output_names,
            labels_offset: bare.labels_offset,
            bare: true,
            objective,
            preprocess,
            step,
            path: path.to_path_buf(),
            ema: false,
            integrity_notice,
        })
    }
}

/// How to read a checkpoint without ferroflow's metadata ([`RestoredModel::load_bare`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BareCheckpoint {
    /// The zoo model whose variables the checkpoint holds (e.g. `resnet_v1_50`).
    pub model: String,
    /// Its eval preprocessing; default: TF-slim's for the model's family
    /// (`vgg` for VGG, ResNet v1 and AlexNet; `inception` for Inception and
    /// ResNet v2), none for ferroflow's own models.
    pub preprocessing: Option<SlimPreprocessing>,
    /// Label `i` is output `i + labels_offset` (1 for TF-slim's 1001-class checkpoints).
    pub labels_offset: usize,
    /// Names of the model's outputs, in output order (see [`read_labels`]).
    pub labels: Option<Vec<String>>,
}

/// The preprocessing TF-slim's checkpoints of `model` were trained with
/// (`preprocessing_factory.py`'s table).
pub fn default_preprocessing(model: &str) -> SlimPreprocessing {
    if model.starts_with("vgg_") || model.starts_with("resnet_v1_") || model.starts_with("alexnet") {
        SlimPreprocessing::Vgg
    } else if model.starts_with("inception_") || model.starts_with("resnet_v2_") {
        SlimPreprocessing::Inception
    } else {
        SlimPreprocessing::None
    }
}

/// Reads a labels file: one name per line in output order, or TF-slim's
/// `labels.txt` lines `INDEX:NAME` (indices may skip; the gaps are named by
/// their index). Blank lines are ignored.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|cause| TrainError::Io { path: path.display().to_string(), cause })?;
    let mut names: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let indexed = line.split_once(':').and_then(|(i, name)| Some((i.trim().parse::<usize>().ok()?, name.trim())));
        match indexed {
            Some((i, name)) => {
                if i < names.len() {
                    return Err(TrainError::config(
                        "--labels",
                        format!("{} line {}: index {i} comes after index {}", path.display(), n + 1, names.len() - 1),
                    ));
                }
                names.extend((names.len()..i).map(|k| k.to_string()));
                names.push(name.to_string());
            }
            None => names.push(line.to_string()),
        }
    }
    Ok(names)
}

/// The number of classes of `model` that `ck` holds: the zoo model is built
/// with 2 classes, and the one variable whose shape differs from the
/// checkpoint's only where the model has 2 gives it.
fn checkpoint_classes(ck: &Checkpoint, model: &str, name: &str) -> Result<usize> {
    let spec = zoo_model(model, 2).ok_or_else(|| {
        TrainError::config("--model", format!("{model:?} is not a zoo model (`ferroflow models` lists them)"))
    })?;
    let probe = VarStore::new(Device::Cpu, 0);
    spec.build(&probe, 0)?;
    let mut found = None;
    for v in probe.global_variables() {
        let (Some(t), dims) = (ck.get(&v.name), v.var.dims()) else { continue };
        if t.shape.len() != dims.len() || t.shape == dims {
            continue;
        }
        let differing: Vec<usize> = (0..dims.len()).filter(|&i| t.shape[i] != dims[i]).collect();
        if let [i] = differing[..]
            && dims[i] == 2
        {
            found = Some(t.shape[i]);
            break;
        }
    }
    found.ok_or_else(|| TrainError::Checkpoint {
        path: name.to_string(),
        reason: format!(
            "holds no logits variable of {model} (one whose shape differs from the model's only in the number of \
             classes): is it a checkpoint of {model}? (`ferroflow inspect` lists its variables)"
        ),
    })
}

/// Names for a classifier's outputs (empty for other objectives).
fn output_names(objective: &Objective, classes: &[String], offset: usize) -> Vec<String> {
    let Objective::Classification { classes: outputs, .. } = objective else { return Vec::new() };
    (0..*outputs)
        .map(|i| match i.checked_sub(offset) {
            None if offset == 1 => "background".to_string(),
            None => format!("(output {i})"),
            Some(label) => classes.get(label).cloned().unwrap_or_else(|| label.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_files_are_plain_lines_or_tf_slims_index_colon_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.txt");
        std::fs::write(&path, "0:background\n1:tench, Tinca tinca\n\n3:goldfish\n").unwrap();
        assert_eq!(read_labels(&path).unwrap(), ["background", "tench, Tinca tinca", "2", "goldfish"]);
        std::fs::write(&path, "cat\ndog\n").unwrap();
        assert_eq!(read_labels(&path).unwrap(), ["cat", "dog"]);
        std::fs::write(&path, "0:a\n2:b\n1:c\n").unwrap();
        let e = read_labels(&path).unwrap_err().to_string();
        assert!(e.contains("labels.txt line 3: index 1 comes after index 2"), "{e}");
        let e = read_labels(&dir.path().join("missing.txt")).unwrap_err().to_string();
        assert!(e.contains("missing.txt"), "{e}");
    }

    #[test]
    fn output_names_put_the_background_before_the_classes() {
        let objective = Objective::Classification { classes: 5, label_smoothing: 0.0, labels_offset: 1 };
        let classes = ["cat".to_string(), "dog".to_string()];
        assert_eq!(output_names(&objective, &classes, 1), ["background", "cat", "dog", "2", "3"]);
        assert_eq!(output_names(&objective, &classes, 2)[..3], ["(output 0)", "(output 1)", "cat"]);
    }
}
