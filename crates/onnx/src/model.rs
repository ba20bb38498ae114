//! A whole model as an ONNX `ModelProto`: the layers of its declaration
//! over the values in its variable store, one NCHW input with a dynamic
//! batch dimension, and the outputs `logits` + `probabilities` (classifiers)
//! or `output` (image-to-image models).

use candle_onnx::onnx::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use ferroflow_nn::layers::batch_norm::BatchNormConfig;
use ferroflow_nn::layers::bottleneck::conv2d_same_3x3;
use ferroflow_nn::layers::conv2d::Conv2dConfig;
use ferroflow_nn::ops::Padding;
use ferroflow_nn::{Layer, LayerSpec, Model, ModelSpec};
use prost::Message;

use crate::error::{OnnxError, Result};
use crate::graph::{Attr, Dim};
use crate::layers::Exporter;

/// The ONNX opset the graph is written for. 17 has every op used here in its
/// current form (Clip with input bounds since 11, Softmax over one axis since
/// 13, BatchNormalization's inference form since 15) and ONNX Runtime has run
/// it since 1.12 (2022).
pub const OPSET: i64 = 17;

/// The IR version that goes with [`OPSET`] (onnx's `VERSION_TABLE`: opset 17 is IR 8).
pub const IR_VERSION: i64 = 8;

/// The graph input's name: preprocessed images, NCHW float32.
pub const INPUT: &str = "input";

/// What goes into the model's `metadata_props` besides the graph, and its
/// descriptive fields. Every field is optional text.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// `producer_version` (ferroflow's version).
    pub producer_version: String,
    /// `metadata_props` entries, in order (e.g. the preprocessing, class names).
    pub metadata: Vec<(String, String)>,
    /// `doc_string`.
    pub doc: String,
    /// A regression model's target statistics `(mean, std)`: its outputs are then
    /// `standardized` (the model's own) and `values = standardized * std + mean`, in
    /// the targets' units, instead of `logits` and `probabilities`.
    pub target_stats: Option<(Vec<f32>, Vec<f32>)>,
}

/// Exports `model` (built from `spec`, with the values to export in its
/// store, e.g. restored from a checkpoint with its moving averages) in
/// inference mode.
///
/// # Shapes
/// The graph: `input` `[batch, C, H, W]` (the model's input, NCHW) →
/// `logits` and `probabilities` `[batch, classes]` for a model with a flat
/// output (`standardized` and `values` `[batch, targets]` with
/// [`ExportOptions::target_stats`]), else `output` `[batch, C', H', W']`.
pub fn export_model(spec: &ModelSpec, model: &Model, options: &ExportOptions) -> Result<ModelProto> {
    let layers = model.layers();
    if layers.len() != spec.layers.len() {
        return Err(OnnxError::Model {
            model: spec.name.clone(),
            reason: format!("the declaration has {} layers, the built model {}", spec.layers.len(), layers.len()),
        });
    }
    let mut ex = Exporter::new(&spec.name, model.store());
    let [c, h, w] = model.input_shape();
    let batch = Dim::Named("batch");
    ex.g.input(INPUT, &[batch.clone(), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)]);
    let mut x = INPUT.to_string();
    let mut shape = vec![c, h, w];
    for (layer_spec, layer) in spec.layers.iter().zip(layers) {
        let scope = layer.name().to_string();
        x = export_layer(&mut ex, layer_spec, layer.as_ref(), &scope, &x, &shape, &layer.output_shape())?;
        shape = layer.output_shape();
    }
    let dims: Vec<Dim> = std::iter::once(batch.clone()).chain(shape.iter().map(|&d| Dim::Fixed(d))).collect();
    if let (1, Some((mean, std))) = (shape.len(), &options.target_stats) {
        if mean.len() != shape[0] || std.len() != shape[0] {
            return Err(OnnxError::Model {
                model: spec.name.clone(),
                reason: format!("outputs {shape:?}, but the target statistics have {} values", mean.len()),
            });
        }
        ex.g.output(&x, "standardized", &dims);
        let s = ex.g.initializer_f32("targets/std", &[shape[0]], std);
        let m = ex.g.initializer_f32("targets/mean", &[shape[0]], mean);
        let scaled = ex.g.node("Mul", "values/mul", &[&x, &s], &[]);
        let values = ex.g.node("Add", "values/add", &[&scaled, &m], &[]);
        ex.g.output(&values, "values", &dims);
    } else if shape.len() == 1 {
        ex.g.output(&x, "logits", &dims);
        let probs = ex.g.node("Softmax", "probabilities/Softmax", &[&x], &[("axis", Attr::Int(-1))]);
        ex.g.output(&probs, "probabilities", &dims);
    } else {
        ex.g.output(&x, "output", &dims);
    }
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "ferroflow".into(),
        producer_version: options.producer_version.clone(),
        doc_string: options.doc.clone(),
        graph: Some(ex.g.finish()),
        metadata_props: options
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() })
            .collect(),
        ..Default::default()
    })
}

/// The serialized model (protobuf bytes, as `onnx.load` reads them).
pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

fn export_layer(
    ex: &mut Exporter<'_>,
    spec: &LayerSpec,
    layer: &dyn Layer,
    scope: &str,
    x: &str,
    in_shape: &[usize],
    out_shape: &[usize],
) -> Result<String> {
    let y = match spec {
        LayerSpec::Conv2d { .. } => ex.conv(scope, x, in_shape, spec.conv2d_config().unwrap_or_default())?.0,
        LayerSpec::Conv2dTranspose { kernel, stride, padding, use_bias, activation, .. } => ex.conv_transpose(
            scope,
            x,
            in_shape,
            out_shape,
            kernel.pair(),
            stride.pair(),
            *padding,
            *use_bias,
            *activation,
        )?,
        LayerSpec::MaxPool { pool, stride, padding, .. } | LayerSpec::AvgPool { pool, stride, padding, .. } => {
            let max = matches!(spec, LayerSpec::MaxPool { .. });
            ex.pool(scope, x, in_shape, max, pool.pair(), stride.unwrap_or(*pool).pair(), *padding)?
        }
        LayerSpec::BatchNorm { config, .. } => ex.batch_norm(scope, x, in_shape[0], *config)?,
        LayerSpec::Activation { function, .. } => ex.activation(scope, x, *function),
        // Inference: dropout is the identity (TF's `training=False`).
        LayerSpec::Dropout { .. } => x.to_string(),
        LayerSpec::Flatten { .. } => ex.flatten(scope, x, in_shape),
        LayerSpec::Dense { units, use_bias, activation, .. } => {
            let &[fan_in] = in_shape else {
                return Err(OnnxError::Unsupported {
                    layer: scope.into(),
                    reason: format!("dense input {in_shape:?}"),
                });
            };
            ex.dense(scope, x, fan_in, *units, *use_bias, *activation)?
        }
        LayerSpec::Residual { filters, stride, .. } => {
            // As ferroflow_nn's Residual: conv1 (ReLU), conv2, a projection when it has one.
            let bn = Some(BatchNormConfig::default());
            let conv = |filters, kernel, stride, activation| Conv2dConfig {
                filters,
                kernel: [kernel, kernel],
                stride: [stride, stride],
                use_bias: false,
                batch_norm: bn,
                activation,
                ..Default::default()
            };
            let relu = ferroflow_nn::Activation::Relu;
            let linear = ferroflow_nn::Activation::Linear;
            let (a, a_shape) = ex.conv(&format!("{scope}/conv1"), x, in_shape, conv(*filters, 3, *stride, relu))?;
            let (b, _) = ex.conv(&format!("{scope}/conv2"), &a, &a_shape, conv(*filters, 3, 1, linear))?;
            let shortcut = format!("{scope}/shortcut");
            let s = if ex.has(&format!("{shortcut}/weights")) {
                ex.conv(&shortcut, x, in_shape, conv(*filters, 1, *stride, linear))?.0
            } else {
                x.to_string()
            };
            ex.add_relu(scope, &b, &s)
        }
        LayerSpec::GlobalAvgPool { .. } => ex.global_avg_pool(scope, x),
        LayerSpec::Pad { pad, .. } => ex.pad(scope, x, *pad),
        LayerSpec::Concat { branches, .. } => {
            let built = layer.branches().filter(|b| b.len() == branches.len()).ok_or_else(|| OnnxError::Model {
                model: scope.into(),
                reason: "the built layer does not have the declaration's branches".into(),
            })?;
            let mut outputs = Vec::with_capacity(branches.len());
            for (specs, layers) in branches.iter().zip(built) {
                let (mut y, mut shape) = (x.to_string(), in_shape.to_vec());
                for (s, l) in specs.iter().zip(layers) {
                    y = export_layer(ex, s, l.as_ref(), l.name(), &y, &shape, &l.output_shape())?;
                    shape = l.output_shape();
                }
                outputs.push(y);
            }
            let inputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
            ex.g.node("Concat", &format!("{scope}/concat"), &inputs, &[("axis", Attr::Int(1))])
        }
        LayerSpec::Bottleneck { depth, depth_bottleneck, stride, batch_norm, preactivation: false, .. } => {
            // As ferroflow_nn's Bottleneck: 1x1 → 3x3 (TF-slim's conv2d_same: explicit padding
            // and VALID when strided) → 1x1, plus a projection or a subsampling shortcut.
            let conv = |filters, kernel, stride, padding, activation| Conv2dConfig {
                filters,
                kernel: [kernel, kernel],
                stride: [stride, stride],
                padding,
                use_bias: false,
                batch_norm: Some(*batch_norm),
                activation,
                ..Default::default()
            };
            let (relu, linear) = (ferroflow_nn::Activation::Relu, ferroflow_nn::Activation::Linear);
            let s = *stride;
            let shortcut = format!("{scope}/shortcut");
            let short = if ex.has(&format!("{shortcut}/weights")) {
                ex.conv(&shortcut, x, in_shape, conv(*depth, 1, s, Padding::Same, linear))?.0
            } else if s > 1 {
                ex.pool(&shortcut, x, in_shape, true, [1, 1], [s, s], Padding::Same)?
            } else {
                x.to_string()
            };
            let (a, a_shape) =
                ex.conv(&format!("{scope}/conv1"), x, in_shape, conv(*depth_bottleneck, 1, 1, Padding::Same, relu))?;
            let (pad, mid, padding) = conv2d_same_3x3(&a_shape, s);
            let a = match pad {
                Some(p) => ex.pad(&format!("{scope}/conv2_pad"), &a, p),
                None => a,
            };
            let (b, b_shape) =
                ex.conv(&format!("{scope}/conv2"), &a, &mid, conv(*depth_bottleneck, 3, s, padding, relu))?;
            let (c, _) = ex.conv(&format!("{scope}/conv3"), &b, &b_shape, conv(*depth, 1, 1, Padding::Same, linear))?;
            ex.add_relu(scope, &c, &short)
        }
        LayerSpec::InceptionV1 { filters, batch_norm, branch_2_3x3, .. } => {
            // As ferroflow_nn's InceptionV1Module: four branches, concatenated.
            let conv = |filters, kernel| Conv2dConfig {
                filters,
                kernel: [kernel, kernel],
                padding: Padding::Same,
                use_bias: false,
                batch_norm: Some(*batch_norm),
                activation: ferroflow_nn::Activation::Relu,
                ..Default::default()
            };
            let b = |branch: usize, leaf: &str| format!("{scope}/Branch_{branch}/{leaf}");
            let y0 = ex.conv(&b(0, "Conv2d_0a_1x1"), x, in_shape, conv(filters[0], 1))?.0;
            let (t, t_shape) = ex.conv(&b(1, "Conv2d_0a_1x1"), x, in_shape, conv(filters[1], 1))?;
            let y1 = ex.conv(&b(1, "Conv2d_0b_3x3"), &t, &t_shape, conv(filters[2], 3))?.0;
            let (t, t_shape) = ex.conv(&b(2, "Conv2d_0a_1x1"), x, in_shape, conv(filters[3], 1))?;
            let y2 = ex.conv(&b(2, branch_2_3x3), &t, &t_shape, conv(filters[4], 3))?.0;
            let pooled = ex.pool(&b(3, "MaxPool_0a_3x3"), x, in_shape, true, [3, 3], [1, 1], Padding::Same)?;
            let y3 = ex.conv(&b(3, "Conv2d_0b_1x1"), &pooled, in_shape, conv(filters[5], 1))?.0;
            ex.g.node("Concat", &format!("{scope}/concat"), &[&y0, &y1, &y2, &y3], &[("axis", Attr::Int(1))])
        }
        LayerSpec::Bottleneck { preactivation: true, .. } => {
            return Err(OnnxError::Unsupported {
                layer: scope.into(),
                reason: "TF-slim's ResNet v2 units are not in the ONNX exporter yet (export a TF checkpoint with \
                         --format tf-checkpoint instead)"
                    .into(),
            });
        }
    };
    Ok(y)
}
