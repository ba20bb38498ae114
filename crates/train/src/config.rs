//! The resolved configuration of `ferroflow train`: a TOML file plus
//! `--set key=value` overrides, checked before any work. Unknown keys are
//! rejected with a suggestion for a misspelling.

use std::path::PathBuf;

use ferroflow_data::{Augment, SlimPreprocessing};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optimizer::OptimizerConfig;
use crate::schedule::Schedule;

/// How input pixels are normalised (statistics from dataset.json, or
/// computed from an image folder's training split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Subtract the per-channel mean and divide by the std.
    #[default]
    MeanStd,
    /// Subtract the per-channel mean only.
    Mean,
    /// Scale 0–255 to 0–1.
    Unit,
    /// Raw 0–255 values.
    None,
    /// TF-slim's `vgg_preprocessing` arithmetic: subtract the ImageNet means
    /// R 123.68, G 116.78, B 103.94 (its `_R_MEAN`, `_G_MEAN`, `_B_MEAN`),
    /// as TF-slim's VGG and ResNet v1 checkpoints were trained.
    Vgg,
    /// TF-slim's `inception_preprocessing` arithmetic: scale 0–255 to
    /// [-1, 1] (`(x / 255 - 0.5) * 2`), as its Inception and ResNet v2
    /// checkpoints were trained.
    Inception,
}

/// `[data]`: where the examples come from and how they are fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A dataset directory from `ferroflow prepare`, or an image folder
    /// (class sub-folders, optionally under train/ and val/).
    pub path: Option<PathBuf>,
    /// An image folder's files: loaded into memory (`true`) or read and
    /// decoded per batch from disk (`false`, memory independent of the
    /// folder's size). Default: in memory when its files total at most
    /// 512 MiB ([`crate::IN_MEMORY_LIMIT`]), streamed above.
    pub in_memory: Option<bool>,
    /// Validation fraction for image folders without their own split.
    pub val_fraction: f64,
    /// Normalisation.
    pub normalize: Normalize,
    /// TF-slim's ImageNet preprocessing, `"vgg"` or `"inception"`
    /// (`vgg_preprocessing.py`, `inception_preprocessing.py`: resize, crop,
    /// training distortions and normalisation, as TF-slim's checkpoints were
    /// trained and evaluated), in place of `resize_method`, `augment`,
    /// `eval_central_fraction` and `normalize`, which keep their defaults (or
    /// `normalize` names the same family). Default `"none"`: ferroflow's own.
    pub preprocessing: SlimPreprocessing,
    /// Training augmentation.
    pub augment: Augment,
    /// Shuffle buffer (`tf.data.Dataset.shuffle(buffer_size)`).
    pub shuffle_buffer: usize,
    /// Decode threads; 0 = all cores.
    pub num_workers: usize,
    /// Batches prepared ahead.
    pub prefetch: usize,
    /// The fast JPEG path (`PipelineConfig::fast_jpeg`): DCT-scaled decoding
    /// when it still covers the input size, and resizing from the YCbCr
    /// planes; slightly different pixels from TF's decode.
    pub fast_jpeg: bool,
    /// `tf.image.resize` method.
    pub resize_method: String,
    /// Eval central crop fraction (TF-slim inception eval uses 0.875).
    pub eval_central_fraction: Option<f64>,
    /// Regression: standardise each target with the training split's mean and
    /// std (stored in the checkpoint, undone in predictions). Default true.
    pub normalize_targets: bool,
    /// What the model learns to output: the data's `labels` (classes or
    /// regression targets; default), the `input` image itself (image-to-image:
    /// an autoencoder, a denoiser with `noise_stddev`), or for a folder of
    /// `inputs/` + `targets/` the `paired` target image of each input.
    pub targets: Targets,
    /// With `targets = "input"`: Gaussian noise of this standard deviation, in
    /// 0–255 pixel units, added to what the model sees (training and
    /// validation), so it learns to denoise. Default 0.
    pub noise_stddev: f64,
}

/// `data.targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Targets {
    /// The labels or regression targets of the data.
    #[default]
    Labels,
    /// The (clean) input image: image-to-image training.
    Input,
    /// The same-named image under `targets/` of an `inputs/` + `targets/`
    /// folder (read per batch, preprocessed with the input's random draws).
    Paired,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            path: None,
            in_memory: None,
            val_fraction: 0.1,
            normalize: Normalize::MeanStd,
            preprocessing: SlimPreprocessing::None,
            augment: Augment::default(),
            shuffle_buffer: 10_000,
            num_workers: 0,
            prefetch: 2,
            fast_jpeg: false,
            resize_method: "bilinear".into(),
            eval_central_fraction: None,
            normalize_targets: true,
            targets: Targets::Labels,
            noise_stddev: 0.0,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A zoo model (`ferroflow models`) or a `.toml` declaration.
    pub name: String,
    /// Output classes; default: the dataset's.
    pub num_classes: Option<usize>,
    /// Input `[height, width, channels]` overriding the model's own (e.g.
    /// `cifar_cnn` on 28x28x1 digits); images are resized to it.
    pub input: Option<[usize; 3]>,
    /// Under several ranks, normalise each training batch with the batch
    /// statistics of the global batch (every rank's part together, summed
    /// across the ranks inside each batch norm's forward and backward pass)
    /// instead of each rank's own part. Default false: per-rank statistics,
    /// as TF's `MirroredStrategy`; the moving statistics are averaged over
    /// the ranks either way. True trades two small all-reduces per batch
    /// norm per pass for training that equals one process on the global
    /// batch; it runs on f32 CPU tensors. No effect with one rank.
    pub sync_batch_norm: bool,
    /// TF-slim's `labels_offset`: the model's first `labels_offset` outputs
    /// are classes the data does not have, so the data's label `i` is the
    /// model's output `i + labels_offset`. `1` for TF-slim's 1001-class
    /// ImageNet checkpoints, whose output 0 is the background class. The
    /// model then has the data's classes plus the offset (unless
    /// `num_classes` says more). Default 0.
    pub labels_offset: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { name: "lenet".into(), num_classes: None, input: None, sync_batch_norm: false, labels_offset: 0 }
    }
}

/// `[train]`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    /// Event files, config.toml and checkpoints go here.
    pub train_dir: PathBuf,
    /// Examples per step.
    pub batch_size: usize,
    /// Train this many steps (takes precedence over `epochs`).
    pub steps: Option<u64>,
    /// Train this many epochs of the training split (default 1 without `steps`).
    pub epochs: Option<u64>,
    /// Seed of initialisation, shuffling, augmentation and dropout.
    pub seed: u64,
    /// L2 weight decay: adds `weight_decay * sum(w^2) / 2` (`tf.nn.l2_loss`)
    /// over conv and dense weights (not biases or batch-norm parameters).
    pub weight_decay: f64,
    /// Label smoothing for the cross-entropy.
    pub label_smoothing: f64,
    /// The loss: `cross_entropy` (classification), `mse`, `mae` or `huber`
    /// (regression); default: by the data's task (cross-entropy or MSE).
    pub loss: Option<Loss>,
    /// Huber's δ, in standardised target units (default 1, Keras's).
    pub huber_delta: f64,
    /// Split each step's batch into this many micro-batches of `batch_size /
    /// accumulate_steps` examples and sum their gradients (gradient
    /// accumulation: the batch's memory is a micro-batch's). Batch norm sees
    /// micro-batch statistics. Default 1.
    pub accumulate_steps: usize,
    /// Per-class weights of the training loss (Keras's `class_weight`): a list,
    /// one per class, or `"balanced"` (`n / (classes * count)` from the training
    /// split). Validation losses are not weighted. Default: none.
    pub class_weights: Option<ClassWeights>,
    /// Stop when a validation metric stops improving (needs `validate_every`).
    pub early_stopping: Option<crate::monitor::EarlyStoppingConfig>,
    /// Clip gradients by their global norm (`tf.clip_by_global_norm`).
    pub clip_global_norm: Option<f64>,
    /// Keep an exponential moving average of the weights, used for validation.
    pub ema_decay: Option<f64>,
    /// Validate every N steps (0: only at the end).
    pub validate_every: u64,
    /// Print a progress line every N steps when not on a terminal.
    pub log_every: u64,
    /// `cpu`, or `cuda[:N]` in a build with the `cuda` feature.
    pub device: String,
    /// Data-parallel ranks: `auto` (default: join the ranks when a launcher
    /// such as `mpirun` or `srun` started several), `mpi` (require them),
    /// `off` (train alone even under a launcher). `batch_size` is the
    /// global batch: each of N ranks takes `batch_size / N` of every step.
    pub distributed: Distributed,
    /// Seconds a rank waits for the others at a step's synchronisation
    /// before ending the job with an error naming the missing ranks
    /// (default 300: more than a checkpoint save or a validation pass
    /// takes rank 0).
    pub collective_timeout_secs: f64,
}

/// `train.distributed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Distributed {
    /// Join MPI ranks when a launcher started several; alone otherwise.
    #[default]
    Auto,
    /// Join MPI ranks; an error without a launcher or without MPI in the build.
    Mpi,
    /// Train alone, even under a launcher.
    Off,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            train_dir: PathBuf::from("runs/train"),
            batch_size: 64,
            steps: None,
            epochs: None,
            seed: 0,
            weight_decay: 0.0,
            label_smoothing: 0.0,
            loss: None,
            huber_delta: 1.0,
            early_stopping: None,
            accumulate_steps: 1,
            class_weights: None,
            clip_global_norm: None,
            ema_decay: None,
            validate_every: 0,
            log_every: 50,
            device: "cpu".into(),
            distributed: Distributed::Auto,
            collective_timeout_secs: 300.0,
        }
    }
}

/// `train.class_weights`: one weight per class, or `"balanced"`.
///
/// ```
/// use ferroflow_train::ClassWeights;
/// let w: ClassWeights = serde_json::from_str("[1.0, 0.5]").unwrap();
/// assert_eq!(w, ClassWeights::List(vec![1.0, 0.5]));
/// assert_eq!(serde_json::from_str::<ClassWeights>("\"balanced\"").unwrap(), ClassWeights::Balanced);
/// let e = serde_json::from_str::<ClassWeights>("\"even\"").unwrap_err().to_string();
/// assert!(e.contains("expected \"balanced\" or a list of weights"), "{e}");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    /// One weight per class, by label.
    List(Vec<f64>),
    /// `n / (classes * count_c)` from the training split's counts.
    Balanced,
}

impl Serialize for ClassWeights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ClassWeights::List(w) => w.serialize(s),
            ClassWeights::Balanced => s.serialize_str("balanced"),
        }
    }
}

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ClassWeights;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"balanced\" or a list of weights, one per class")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<ClassWeights, E> {
                if v == "balanced" {
                    Ok(ClassWeights::Balanced)
                } else {
                    Err(E::custom(format!("expected \"balanced\" or a list of weights, one per class, got {v:?}")))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ClassWeights, A::Error> {
                let mut w = Vec::new();
                while let Some(v) = seq.next_element::<f64>()? {
                    w.push(v);
                }
                Ok(ClassWeights::List(w))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `train.loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Sparse softmax cross-entropy, for class labels.
    CrossEntropy,
    /// Mean squared error, for regression targets.
    Mse,
    /// Mean absolute error.
    Mae,
    /// Huber loss with `train.huber_delta`.
    Huber,
}

/// What training does when saving a checkpoint fails (disk full, permissions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnSaveError {
    /// Stop with the error (the previous checkpoint stays listed).
    #[default]
    Stop,
    /// Report it and keep training; the next save tries again.
    Continue,
}

/// What a resume does when the latest listed checkpoint is damaged (a
/// checksum mismatch, cut short) or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnCorrupt {
    /// Resume from the newest intact listed checkpoint, with a warning naming
    /// both; the damaged ones are unlisted and renamed `*.damaged`.
    #[default]
    Previous,
    /// Stop with the error.
    Error,
}

/// The file format training saves checkpoints in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointFormat {
    /// `model.ckpt-N.safetensors`: every tensor and ferroflow's state in one
    /// file, with a CRC-32C per tensor and of the header.
    #[default]
    Safetensors,
    /// TensorFlow's V2 bundle, `model.ckpt-N.index` + `.data-00000-of-00001`
    /// (TF's names and layouts: `tf.train.load_checkpoint` and TF1's `Saver`
    /// restore it), with ferroflow's state (data cursor, random streams,
    /// config, model) beside it in `model.ckpt-N.ferroflow.json`, so the run
    /// resumes exactly.
    Tf,
}

/// `[checkpoint]`: saving during training (TF's `Saver` / `CheckpointManager`).
/// A checkpoint is always saved at the end of training when `enabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save checkpoints at all (resuming from an existing one happens regardless).
    pub enabled: bool,
    /// Save every N steps (0: not by step count).
    pub every_steps: u64,
    /// Save every T seconds (0: not by time). Default 600, TF-slim's and
    /// Estimator's `save_checkpoints_secs`.
    pub every_secs: f64,
    /// Checkpoints kept (0: all). Default 5, as TF's `Saver`.
    pub max_to_keep: usize,
    /// Also keep one checkpoint per this many hours (TF's
    /// `keep_checkpoint_every_n_hours`); unset: none beyond `max_to_keep`.
    pub keep_checkpoint_every_n_hours: Option<f64>,
    /// Stop or continue when a save fails.
    pub on_error: OnSaveError,
    /// Fall back to the previous checkpoint, or stop, when the latest one is
    /// damaged or missing at a resume. Default `previous`.
    pub on_corrupt: OnCorrupt,
    /// `"safetensors"` (default) or `"tf"` (TensorFlow bundles); a train dir
    /// may hold both (a resume reads either).
    pub format: CheckpointFormat,
    /// Also keep the checkpoint of the best validation in `<train_dir>/best/`
    /// (its own `checkpoint` state file, apart from `max_to_keep`; `eval --best`
    /// and `predict --best` read it). "Best" is `train.early_stopping`'s metric
    /// and mode when set, else the lowest validation loss. Default false.
    pub keep_best: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            every_steps: 0,
            every_secs: 600.0,
            max_to_keep: 5,
            keep_checkpoint_every_n_hours: None,
            on_error: OnSaveError::Stop,
            on_corrupt: OnCorrupt::Previous,
            format: CheckpointFormat::Safetensors,
            keep_best: false,
        }
    }
}

/// `[warm_start]`: fine-tuning from another run's checkpoint (TF-slim's
/// `checkpoint_path`, `checkpoint_exclude_scopes`, `trainable_scopes`,
/// `ignore_missing_vars`). Ignored for restoring when the train dir already
/// holds a checkpoint: resume wins, as in TF-slim. Scopes are given as a
/// list or one comma-separated string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WarmStartConfig {
    /// A checkpoint file, prefix, or train dir (its latest checkpoint).
    pub checkpoint_path: Option<PathBuf>,
    /// Scopes not restored (e.g. `logits` when the classes change).
    #[serde(deserialize_with = "scope_list")]
    pub exclude_scopes: Vec<String>,
    /// Only variables in these scopes train; the rest are frozen (empty: all train).
    #[serde(deserialize_with = "scope_list")]
    pub trainable_scopes: Vec<String>,
    /// Keep the initial values of variables the checkpoint lacks instead of failing.
    pub ignore_missing_vars: bool,
}

/// A list of scopes, or one comma-separated string of them.
fn scope_list<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scopes {
        One(String),
        Many(Vec<String>),
    }
    let scopes = match Scopes::deserialize(d)? {
        Scopes::One(s) => s.split(',').map(str::to_string).collect(),
        Scopes::Many(v) => v,
    };
    Ok(scopes.into_iter().map(|s| s.trim().trim_end_matches('/').to_string()).filter(|s| !s.is_empty()).collect())
}

/// `[summary]`: TensorBoard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SummaryConfig {
    /// Scalars (loss, accuracy, learning_rate, images_per_sec) every N steps.
    pub scalars_every: u64,
    /// Histograms of every trainable variable and its gradient every N steps (0: never).
    pub histograms_every: u64,
    /// Input-image summaries every N steps (0: never).
    pub images_every: u64,
    /// Images per image summary.
    pub max_images: usize,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        SummaryConfig { scalars_every: 10, histograms_every: 100, images_every: 500, max_images: 4 }
    }
}

/// Everything `ferroflow train` needs. `config.toml` in the train dir is this, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `[data]`.
    pub data: DataConfig,
    /// `[model]`.
    pub model: ModelConfig,
    /// `[optimizer]` (without `kind`: momentum).
    pub optimizer: OptimizerConfig,
    /// `[schedule]` (without `kind`: constant).
    pub schedule: Schedule,
    /// `[train]`.
    pub train: LoopConfig,
    /// `[summary]`.
    pub summary: SummaryConfig,
    /// `[checkpoint]`.
    pub checkpoint: CheckpointConfig,
    /// `[warm_start]`.
    pub warm_start: WarmStartConfig,
}

impl TrainConfig {
    /// Parses `toml_text` (empty for defaults), applies `key=value`
    /// overrides (dotted keys, TOML values; bare words are strings), and
    /// validates.
    ///
    /// ```
    /// use ferroflow_train::TrainConfig;
    /// let c = TrainConfig::resolve("[train]\nbatch_size = 32\n", &["train.steps=100".into()]).unwrap();
    /// assert_eq!((c.train.batch_size, c.train.steps), (32, Some(100)));
    /// let e = TrainConfig::resolve("", &["train.bach_size=3".into()]).unwrap_err().to_string();
    /// assert!(e.contains("did you mean `batch_size`"), "{e}");
    /// ```
    pub fn resolve(toml_text: &str, overrides: &[String]) -> Result<TrainConfig> {
        let mut table: toml::Table =
            toml::from_str(toml_text).map_err(|e| TrainError::config("config", e.to_string()))?;
        for o in overrides {
            let (key, value) = o.split_once('=').ok_or_else(|| {
                TrainError::config("--set", format!("{o:?}: expected key=value, e.g. train.batch_size=32"))
            })?;
            set_dotted(&mut table, key.trim(), parse_value(value.trim()))?;
        }
        // A section given without `kind` keeps the default kind, so
        // `--learning-rate 0.1` alone means a constant rate.
        for (section, kind) in [("schedule", "constant"), ("optimizer", "momentum")] {
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                t.entry("kind").or_insert_with(|| toml::Value::String(kind.to_string()));
            }
        }
        // Each section is read on its own, so an error names its section.
        const SECTIONS: [&str; 8] =
            ["data", "model", "optimizer", "schedule", "train", "summary", "checkpoint", "warm_start"];
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                let msg =
                    format!("unknown field `{key}`, expected one of {}", SECTIONS.map(|s| format!("`{s}`")).join(", "));
                return Err(TrainError::config(key.clone(), with_suggestion(&msg)));
            }
        }
        fn section<T: serde::de::DeserializeOwned + Default>(table: &toml::Table, name: &str) -> Result<T> {
            match table.get(name) {
                None => Ok(T::default()),
                Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
                    TrainError::config(format!("[{name}]"), with_suggestion(e.message()))
                }),
            }
        }
        let config = TrainConfig {
            data: section(&table, "data")?,
            model: section(&table, "model")?,
            optimizer: section(&table, "optimizer")?,
            schedule: section(&table, "schedule")?,
            train: section(&table, "train")?,
            summary: section(&table, "summary")?,
            checkpoint: section(&table, "checkpoint")?,
            warm_start: section(&table, "warm_start")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value, naming the first bad key.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(TrainError::config("train.batch_size", "must be at least 1, got 0"));
        }
        if t.steps == Some(0) || t.epochs == Some(0) {
            return Err(TrainError::config("train.steps / train.epochs", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return Err(TrainError::config(
                "data.val_fraction",
                format!("must be in [0, 1), got {}", self.data.val_fraction),
            ));
        }
        if t.weight_decay < 0.0 || !t.weight_decay.is_finite() {
            return Err(TrainError::config("train.weight_decay", format!("must be >= 0, got {}", t.weight_decay)));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(TrainError::config(
                "train.label_smoothing",
                format!("must be in [0, 1), got {}", t.label_smoothing),
            ));
        }
        if !(t.collective_timeout_secs > 0.0 && t.collective_timeout_secs.is_finite()) {
            return Err(TrainError::config(
                "train.collective_timeout_secs",
                format!("must be a positive number of seconds, got {}", t.collective_timeout_secs),
            ));
        }
        if t.accumulate_steps == 0 || !t.batch_size.is_multiple_of(t.accumulate_steps) {
            return Err(TrainError::config(
                "train.accumulate_steps",
                format!(
                    "must be at least 1 and divide train.batch_size ({}), got {}",
                    t.batch_size, t.accumulate_steps
                ),
            ));
        }
        if let Some(ClassWeights::List(w)) = &t.class_weights
            && w.iter().any(|v| !(v.is_finite() && *v >= 0.0))
        {
            return Err(TrainError::config("train.class_weights", format!("must be finite and >= 0, got {w:?}")));
        }
        if let Some(es) = &t.early_stopping {
            crate::monitor::Monitor::new(&es.metric, es.mode, es.min_delta, Some(es.patience))?;
            if t.validate_every == 0 {
                return Err(TrainError::config(
                    "train.early_stopping",
                    "needs validations during training: set train.validate_every (steps between validations)",
                ));
            }
        }
        if self.checkpoint.keep_best && t.validate_every == 0 {
            return Err(TrainError::config(
                "checkpoint.keep_best",
                "needs validations during training: set train.validate_every (steps between validations)",
            ));
        }
        if !(self.data.noise_stddev >= 0.0 && self.data.noise_stddev.is_finite()) {
            return Err(TrainError::config(
                "data.noise_stddev",
                format!("must be >= 0, got {}", self.data.noise_stddev),
            ));
        }
        if self.data.noise_stddev > 0.0 && self.data.targets == Targets::Labels {
            return Err(TrainError::config(
                "data.noise_stddev",
                "applies to image-to-image training (data.targets = \"input\" or \"paired\")",
            ));
        }
        if !(t.huber_delta > 0.0 && t.huber_delta.is_finite()) {
            return Err(TrainError::config("train.huber_delta", format!("must be > 0, got {}", t.huber_delta)));
        }
        if let Some(c) = t.clip_global_norm
            && (c.is_nan() || c <= 0.0)
        {
            return Err(TrainError::config("train.clip_global_norm", format!("must be > 0, got {c}")));
        }
        if let Some(d) = t.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return Err(TrainError::config("train.ema_decay", format!("must be in [0, 1), got {d}")));
        }
        if self.data.prefetch == 0 {
            return Err(TrainError::config("data.prefetch", "must be at least 1"));
        }
        if self.model.num_classes == Some(0) {
            return Err(TrainError::config("model.num_classes", "must be at least 1"));
        }
        let c = &self.checkpoint;
        if !(c.every_secs >= 0.0 && c.every_secs.is_finite()) {
            return Err(TrainError::config("checkpoint.every_secs", format!("must be >= 0, got {}", c.every_secs)));
        }
        if let Some(h) = c.keep_checkpoint_every_n_hours
            && !(h >= 0.0 && h.is_finite())
        {
            return Err(TrainError::config(
                "checkpoint.keep_checkpoint_every_n_hours",
                format!("must be >= 0, got {h}"),
            ));
        }
        self.schedule.validate().map_err(|e| TrainError::config("schedule", e.to_string()))?;
        self.optimizer.validate().map_err(|e| TrainError::config("optimizer", e.to_string()))?;
        Ok(())
    }

    /// The resolved config as TOML (written to `<train_dir>/config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
    }
}

fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::config("--set", format!("{key:?} is not a dotted key like train.batch_size")));
    }
    let mut node = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = node.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| {
            TrainError::config("--set", format!("{key}: {} is a value, not a section", parts[..=i].join(".")))
        })?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Appends "did you mean `x`?" to serde's "unknown field `y`, expected one of …".
fn with_suggestion(msg: &str) -> String {
    let ticked = |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    if let Some(rest) = msg.strip_prefix("unknown field ").or_else(|| msg.strip_prefix("unknown variant ")) {
        let names = ticked(rest);
        if let Some((unknown, expected)) = names.split_first() {
            let best = expected.iter().min_by_key(|e| distance(unknown, e));
            if let Some(best) = best
                && distance(unknown, best) <= unknown.len().max(3) / 2
            {
                return format!("{msg}; did you mean `{best}`?");
            }
        }
    }
    msg.to_string()
}
