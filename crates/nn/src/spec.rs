//! Models declared as data: a layer list, from a TOML file or from the zoo.
//!
//! ```toml
//! name = "my_cnn"
//! input = [28, 28, 1]          # height, width, channels
//!
//! [[layers]]
//! type = "conv2d"
//! filters = 32
//! kernel = 3                   # or [3, 3]
//! activation = "relu"
//! batch_norm = true            # or { momentum = 0.9, epsilon = 1e-5, semantics = "keras" }
//!
//! [[layers]]
//! type = "max_pool"
//! pool = 2
//!
//! [[layers]]
//! type = "flatten"
//!
//! [[layers]]
//! type = "dense"
//! units = 10
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::layer::{Activation, Layer};
use crate::layers::activation::ActivationLayer;
use crate::layers::batch_norm::{BatchNorm, BatchNormConfig};
use crate::layers::bottleneck::Bottleneck;
use crate::layers::bottleneck_v2::BottleneckV2;
use crate::layers::concat::Concat;
use crate::layers::conv2d::{Conv2d, Conv2dConfig};
use crate::layers::conv2d_transpose::{Conv2dTranspose, Conv2dTransposeConfig};
use crate::layers::dense::{Dense, DenseConfig};
use crate::layers::dropout::Dropout;
use crate::layers::flatten::Flatten;
use crate::layers::global_pool::GlobalAvgPool;
use crate::layers::inception_v1::InceptionV1Module;
use crate::layers::pad::Pad;
use crate::layers::pool::{Pool2d, PoolKind};
use crate::layers::residual::Residual;
use crate::model::Model;
use crate::ops::Padding;
use crate::var_store::VarStore;

/// A size given as one number (square) or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size2 {
    /// The same along both axes.
    Square(usize),
    /// `[height, width]`.
    Pair([usize; 2]),
}

impl Size2 {
    /// As `[height, width]`.
    pub fn pair(self) -> [usize; 2] {
        match self {
            Size2::Square(n) => [n, n],
            Size2::Pair(p) => p,
        }
    }
}

/// Batch norm after a conv: `true` (TF defaults) or its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchNormSpec {
    /// On with the defaults, or off.
    Flag(bool),
    /// On with these settings.
    Config(BatchNormConfig),
}

impl BatchNormSpec {
    /// The batch-norm settings, or `None` for no batch norm.
    pub fn config(self) -> Option<BatchNormConfig> {
        match self {
            BatchNormSpec::Flag(true) => Some(BatchNormConfig::default()),
            BatchNormSpec::Flag(false) => None,
            BatchNormSpec::Config(c) => Some(c),
        }
    }
}

fn one() -> Size2 {
    Size2::Square(1)
}
fn same() -> Padding {
    Padding::Same
}
fn valid() -> Padding {
    Padding::Valid
}
fn yes() -> bool {
    true
}
fn no_bn() -> BatchNormSpec {
    BatchNormSpec::Flag(false)
}

/// One layer of a declaration. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// [`Conv2d`]: `filters`, `kernel`, `stride` (1), `dilation` (1),
    /// `padding` ("SAME"), `use_bias` (true), `batch_norm` (false), `activation` ("linear").
    Conv2d {
        /// Scope name (default `convN`).
        name: Option<String>,
        /// Output channels.
        filters: usize,
        /// Kernel size.
        kernel: Size2,
        /// Stride.
        #[serde(default = "one")]
        stride: Size2,
        /// Dilation.
        #[serde(default = "one")]
        dilation: Size2,
        /// Padding.
        #[serde(default = "same")]
        padding: Padding,
        /// Bias (dropped with batch norm).
        #[serde(default = "yes")]
        use_bias: bool,
        /// Batch norm.
        #[serde(default = "no_bn")]
        batch_norm: BatchNormSpec,
        /// Activation.
        #[serde(default)]
        activation: Activation,
    },
    /// [`Conv2dTranspose`]: `filters`, `kernel`, `stride` (1), `padding` ("SAME"),
    /// `output_size` (TF's default), `use_bias` (true), `activation`.
    Conv2dTranspose {
        /// Scope name (default `deconvN`).
        name: Option<String>,
        /// Output channels.
        filters: usize,
        /// Kernel size.
        kernel: Size2,
        /// Stride.
        #[serde(default = "one")]
        stride: Size2,
        /// Padding.
        #[serde(default = "same")]
        padding: Padding,
        /// Output `[height, width]`.
        output_size: Option<[usize; 2]>,
        /// Bias.
        #[serde(default = "yes")]
        use_bias: bool,
        /// Activation.
        #[serde(default)]
        activation: Activation,
    },
    /// Max pooling: `pool`, `stride` (= pool), `padding` ("VALID", as `tf.layers`).
    MaxPool {
        /// Scope name (default `poolN`).
        name: Option<String>,
        /// Window.
        pool: Size2,
        /// Stride.
        stride: Option<Size2>,
        /// Padding.
        #[serde(default = "valid")]
        padding: Padding,
    },
    /// Average pooling, like `max_pool`.
    AvgPool {
        /// Scope name (default `poolN`).
        name: Option<String>,
        /// Window.
        pool: Size2,
        /// Stride.
        stride: Option<Size2>,
        /// Padding.
        #[serde(default = "valid")]
        padding: Padding,
    },
    /// A standalone batch norm.
    BatchNorm {
        /// Scope name (default `BatchNormN`).
        name: Option<String>,
        /// Settings.
        #[serde(flatten)]
        config: BatchNormConfig,
    },
    /// A standalone activation.
    Activation {
        /// Scope name.
        name: Option<String>,
        /// The function.
        function: Activation,
    },
    /// Dropout: `rate`.
    Dropout {
        /// Scope name (default `dropoutN`).
        name: Option<String>,
        /// Fraction dropped in training.
        rate: f32,
    },
    /// Flatten (TF's NHWC order).
    Flatten {
        /// Scope name (default `flatten`).
        name: Option<String>,
    },
    /// Dense: `units`, `use_bias` (true), `activation`.
    Dense {
        /// Scope name (default `fcN`).
        name: Option<String>,
        /// Output features.
        units: usize,
        /// Bias.
        #[serde(default = "yes")]
        use_bias: bool,
        /// Activation.
        #[serde(default)]
        activation: Activation,
    },
    /// A ResNet basic block: `filters`, `stride` (1).
    Residual {
        /// Scope name (default `blockN`).
        name: Option<String>,
        /// Output channels.
        filters: usize,
        /// Stride of the first conv.
        #[serde(default = "default_stride")]
        stride: usize,
    },
    /// TF-slim's ResNet bottleneck unit ([`Bottleneck`], or with `preactivation`
    /// v2's [`BottleneckV2`]): `depth`, `depth_bottleneck`, `stride` (1),
    /// `batch_norm` (default: momentum 0.99, epsilon 0.001; TF-slim's ResNets use
    /// 0.997 and 1e-5).
    Bottleneck {
        /// Scope name (default `unitN`); TF-slim's is `blockB/unit_U/bottleneck_v1`.
        name: Option<String>,
        /// Output channels.
        depth: usize,
        /// Channels of the 1x1 and 3x3 convs inside.
        depth_bottleneck: usize,
        /// Stride of the 3x3 conv (and of the shortcut).
        #[serde(default = "default_stride")]
        stride: usize,
        /// The batch norms' settings.
        #[serde(default)]
        batch_norm: BatchNormConfig,
        /// TF-slim's ResNet v2 unit ([`BottleneckV2`]: batch norm + ReLU first,
        /// `bottleneck_v2` scopes) instead of v1's. Default false.
        #[serde(default)]
        preactivation: bool,
    },
    /// TF-slim's Inception v1 module ([`InceptionV1Module`]): `filters` of its six
    /// convs, `batch_norm`, and `branch_2_3x3` (the name of branch 2's 3x3 conv,
    /// default `Conv2d_0b_3x3`).
    InceptionV1 {
        /// Scope name (default `mixedN`); TF-slim's are `Mixed_3b`, ….
        name: Option<String>,
        /// Branch 0's 1x1; branch 1's 1x1 and 3x3; branch 2's 1x1 and 3x3; branch 3's 1x1.
        filters: [usize; 6],
        /// The batch norms' settings.
        #[serde(default)]
        batch_norm: BatchNormConfig,
        /// Branch 2's 3x3 conv's scope.
        #[serde(default = "branch_2_3x3")]
        branch_2_3x3: String,
    },
    /// Global average pooling: each channel's mean over the whole map, `[C, 1, 1]`.
    GlobalAvgPool {
        /// Scope name (default `poolN`).
        name: Option<String>,
    },
    /// Zero padding of the spatial dimensions (`tf.pad`): `pad = [top, bottom, left, right]`.
    Pad {
        /// Scope name (default `padN`).
        name: Option<String>,
        /// Pixels of zeros `[top, bottom, left, right]`.
        pad: [usize; 4],
    },
    /// Branches over the same input, concatenated along the channels
    /// ([`Concat`]; TF-slim's Inception modules). Each branch is a list of
    /// layers (possibly another `concat`); a layer without a name is named
    /// `<concat name>/Branch_<b>/<stem><n>`.
    Concat {
        /// Scope name (default `concatN`); TF-slim's are `Mixed_5b`, ….
        name: Option<String>,
        /// The branches, each a chain of layers.
        branches: Vec<Vec<LayerSpec>>,
    },
}

fn default_stride() -> usize {
    1
}

fn branch_2_3x3() -> String {
    "Conv2d_0b_3x3".into()
}

const LAYER_TYPES: &str = "conv2d, conv2d_transpose, max_pool, avg_pool, batch_norm, activation, dropout, flatten, dense, residual, \
     bottleneck, inception_v1, global_avg_pool, pad, concat";

impl LayerSpec {
    /// A `conv2d` layer's settings (`None` for other layers): what the layer is
    /// built with, and what exporters read.
    pub fn conv2d_config(&self) -> Option<Conv2dConfig> {
        let LayerSpec::Conv2d { filters, kernel, stride, dilation, padding, use_bias, batch_norm, activation, .. } =
            self
        else {
            return None;
        };
        Some(Conv2dConfig {
            filters: *filters,
            kernel: kernel.pair(),
            stride: stride.pair(),
            dilation: dilation.pair(),
            padding: *padding,
            use_bias: *use_bias,
            batch_norm: batch_norm.config(),
            activation: *activation,
            ..Default::default()
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::Conv2dTranspose { .. } => "conv2d_transpose",
            LayerSpec::MaxPool { .. } => "max_pool",
            LayerSpec::AvgPool { .. } => "avg_pool",
            LayerSpec::BatchNorm { .. } => "batch_norm",
            LayerSpec::Activation { .. } => "activation",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten { .. } => "flatten",
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Residual { .. } => "residual",
            LayerSpec::Bottleneck { .. } => "bottleneck",
            LayerSpec::InceptionV1 { .. } => "inception_v1",
            LayerSpec::GlobalAvgPool { .. } => "global_avg_pool",
            LayerSpec::Pad { .. } => "pad",
            LayerSpec::Concat { .. } => "concat",
        }
    }

    fn explicit_name(&self) -> Option<&str> {
        match self {
            LayerSpec::Conv2d { name, .. }
            | LayerSpec::Conv2dTranspose { name, .. }
            | LayerSpec::MaxPool { name, .. }
            | LayerSpec::AvgPool { name, .. }
            | LayerSpec::BatchNorm { name, .. }
            | LayerSpec::Activation { name, .. }
            | LayerSpec::Dropout { name, .. }
            | LayerSpec::Flatten { name, .. }
            | LayerSpec::Dense { name, .. }
            | LayerSpec::Residual { name, .. }
            | LayerSpec::Bottleneck { name, .. }
            | LayerSpec::InceptionV1 { name, .. }
            | LayerSpec::GlobalAvgPool { name }
            | LayerSpec::Pad { name, .. }
            | LayerSpec::Concat { name, .. } => name.as_deref(),
        }
    }

    /// The default scope-name stem: `conv`, `deconv`, `pool`, `fc`, …
    fn stem(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv",
            LayerSpec::Conv2dTranspose { .. } => "deconv",
            LayerSpec::MaxPool { .. } | LayerSpec::AvgPool { .. } => "pool",
            LayerSpec::BatchNorm { .. } => "BatchNorm",
            LayerSpec::Activation { .. } => "activation",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten { .. } => "flatten",
            LayerSpec::Dense { .. } => "fc",
            LayerSpec::Residual { .. } => "block",
            LayerSpec::Bottleneck { .. } => "unit",
            LayerSpec::InceptionV1 { .. } => "mixed",
            LayerSpec::GlobalAvgPool { .. } => "pool",
            LayerSpec::Pad { .. } => "pad",
            LayerSpec::Concat { .. } => "concat",
        }
    }
}

/// A model declaration: a name, the input `[height, width, channels]`, and
/// the layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model's name.
    pub name: String,
    /// Input `[height, width, channels]` (TF's HWC order).
    pub input: [usize; 3],
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

/// The raw form, so each layer's errors can name it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelSpec {
    name: String,
    input: [usize; 3],
    layers: Vec<toml::Table>,
}

impl ModelSpec {
    /// Parses a TOML declaration; an error names the layer (index and type)
    /// and what is wrong.
    pub fn from_toml(text: &str) -> Result<ModelSpec> {
        let raw: RawModelSpec = toml::from_str(text)
            .map_err(|e| NnError::Config { context: "model".into(), reason: e.message().to_string() })?;
        let mut layers = Vec::new();
        for (i, table) in raw.layers.into_iter().enumerate() {
            let kind = table.get("type").and_then(|t| t.as_str()).map(str::to_string);
            let context = format!("model {:?}: layers[{i}] ({})", raw.name, kind.as_deref().unwrap_or("no type"));
            let Some(kind) = kind else {
                return Err(NnError::Config { context, reason: format!("missing `type` (one of: {LAYER_TYPES})") });
            };
            let layer = LayerSpec::deserialize(toml::Value::Table(table)).map_err(|e| {
                let msg = e.to_string();
                // Only the layer's own type: a nested value's bad variant (a padding, an
                // inner layer's type) keeps serde's message, which names it.
                let reason = if msg.contains(&format!("unknown variant `{kind}`")) {
                    format!("unknown layer type {kind:?} (expected one of: {LAYER_TYPES})")
                } else {
                    msg.trim().to_string()
                };
                NnError::Config { context: context.clone(), reason }
            })?;
            layers.push(layer);
        }
        Ok(ModelSpec { name: raw.name, input: raw.input, layers })
    }

    /// Creates the model's variables in `store` and its layers. Shapes are
    /// checked layer by layer; an impossible one is an error naming the layer.
    /// `seed` seeds dropout masks.
    pub fn build(&self, store: &VarStore, seed: u64) -> Result<Model> {
        let [h, w, c] = self.input;
        if h == 0 || w == 0 || c == 0 {
            return Err(NnError::Config {
                context: format!("model {:?}", self.name),
                reason: format!("input must be positive [height, width, channels], got {:?}", self.input),
            });
        }
        let scope = store.root();
        let mut shape = vec![c, h, w];
        let mut counters: HashMap<&'static str, usize> = HashMap::new();
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for (i, spec) in self.layers.iter().enumerate() {
            let n = counters.entry(spec.stem()).or_insert(0);
            *n += 1;
            let name = match spec.explicit_name() {
                Some(name) => name.to_string(),
                None if spec.stem() == "flatten" && *n == 1 => "flatten".to_string(),
                None => format!("{}{}", spec.stem(), n),
            };
            let context = format!("model {:?}: layers[{i}] ({} {name:?}, input {shape:?})", self.name, spec.kind());
            let layer = build_layer(spec, &scope, &name, &shape, seed).map_err(|e| match e {
                NnError::Shape { reason, .. } | NnError::Config { reason, .. } => NnError::Config { context, reason },
                other => other,
            })?;
            shape = layer.output_shape();
            layers.push(layer);
        }
        Ok(Model::new(self.name.clone(), [c, h, w], layers, store.clone()))
    }
}

fn build_layer(
    spec: &LayerSpec,
    scope: &crate::var_store::Scope,
    name: &str,
    shape: &[usize],
    seed: u64,
) -> Result<Box<dyn Layer>> {
    Ok(match spec {
        LayerSpec::Conv2d { .. } => {
            let config = spec.conv2d_config().unwrap_or_default();
            Box::new(Conv2d::new(scope, name, shape, config)?)
        }
        LayerSpec::Conv2dTranspose { filters, kernel, stride, padding, output_size, use_bias, activation, .. } => {
            let config = Conv2dTransposeConfig {
                filters: *filters,
                kernel: kernel.pair(),
                stride: stride.pair(),
                padding: *padding,
                output_size: *output_size,
                use_bias: *use_bias,
                activation: *activation,
            };
            Box::new(Conv2dTranspose::new(scope, name, shape, config)?)
        }
        LayerSpec::MaxPool { pool, stride, padding, .. } => Box::new(Pool2d::new(
            scope,
            name,
            shape,
            PoolKind::Max,
            pool.pair(),
            stride.unwrap_or(*pool).pair(),
            *padding,
        )?),
        LayerSpec::AvgPool { pool, stride, padding, .. } => Box::new(Pool2d::new(
            scope,
            name,
            shape,
            PoolKind::Avg,
            pool.pair(),
            stride.unwrap_or(*pool).pair(),
            *padding,
        )?),
        LayerSpec::BatchNorm { config, .. } => Box::new(BatchNorm::new(scope, name, shape, *config)?),
        LayerSpec::Activation { function, .. } => Box::new(ActivationLayer::new(scope, name, shape, *function)),
        LayerSpec::Dropout { rate, .. } => Box::new(Dropout::new(scope, name, shape, *rate, seed)?),
        LayerSpec::Flatten { .. } => Box::new(Flatten::new(scope, name, shape)),
        LayerSpec::Dense { units, use_bias, activation, .. } => Box::new(Dense::new(
            scope,
            name,
            shape,
            DenseConfig { units: *units, use_bias: *use_bias, activation: *activation, ..Default::default() },
        )?),
        LayerSpec::Residual { filters, stride, .. } => {
            Box::new(Residual::new(scope, name, shape, *filters, *stride, BatchNormConfig::default())?)
        }
        LayerSpec::Bottleneck { depth, depth_bottleneck, stride, batch_norm, preactivation: false, .. } => {
            Box::new(Bottleneck::new(scope, name, shape, *depth, *depth_bottleneck, *stride, *batch_norm)?)
        }
        LayerSpec::Bottleneck { depth, depth_bottleneck, stride, batch_norm, preactivation: true, .. } => {
            Box::new(BottleneckV2::new(scope, name, shape, *depth, *depth_bottleneck, *stride, *batch_norm)?)
        }
        LayerSpec::InceptionV1 { filters, batch_norm, branch_2_3x3, .. } => {
            Box::new(InceptionV1Module::new(scope, name, shape, *filters, *batch_norm, branch_2_3x3)?)
        }
        LayerSpec::GlobalAvgPool { .. } => Box::new(GlobalAvgPool::new(scope, name, shape)?),
        LayerSpec::Pad { pad, .. } => Box::new(Pad::new(scope, name, shape, *pad)?),
        LayerSpec::Concat { branches, .. } => {
            let mut built = Vec::with_capacity(branches.len());
            for (b, branch) in branches.iter().enumerate() {
                let mut branch_shape = shape.to_vec();
                let mut layers = Vec::with_capacity(branch.len());
                for (i, spec) in branch.iter().enumerate() {
                    let inner = match spec.explicit_name() {
                        Some(n) => n.to_string(),
                        None => format!("{name}/Branch_{b}/{}{}", spec.stem(), i + 1),
                    };
                    let layer = build_layer(spec, scope, &inner, &branch_shape, seed)?;
                    branch_shape = layer.output_shape();
                    layers.push(layer);
                }
                built.push(layers);
            }
            Box::new(Concat::new(&scope.full_name(name), shape, built)?)
        }
    })
}
