//! Each layer of a [`ModelSpec`](ferroflow_nn::ModelSpec) as ONNX nodes, in
//! inference mode: batch norm with its moving statistics, dropout removed.
//!
//! Activations stay NCHW, conv kernels OIHW (ONNX's own layouts, so no kernel
//! is transposed); TF's SAME padding becomes explicit `pads` (TF puts the odd
//! pixel after: `kernel_shape_util.cc`), and TF's flatten order (NHWC) a
//! Transpose before the Flatten, so dense kernels keep TF's `[in, units]`.

use std::collections::HashMap;

use candle_core::DType;
use ferroflow_nn::layers::batch_norm::BatchNormConfig;
use ferroflow_nn::layers::conv2d::Conv2dConfig;
use ferroflow_nn::ops::{Padding, window};
use ferroflow_nn::{Activation, VarStore};

use crate::error::{OnnxError, Result};
use crate::graph::{Attr, OnnxGraph};

/// The state of one export: the graph and the variables already added as
/// initializers.
#[derive(Debug)]
pub(crate) struct Exporter<'a> {
    pub(crate) g: OnnxGraph,
    store: &'a VarStore,
    /// Variable name → its initializer's name.
    added: HashMap<String, String>,
}

impl<'a> Exporter<'a> {
    pub(crate) fn new(name: &str, store: &'a VarStore) -> Self {
        Exporter { g: OnnxGraph::new(name), store, added: HashMap::new() }
    }

    /// `variable` as an initializer named after it, checked against `shape`.
    fn var(&mut self, layer: &str, variable: &str, shape: &[usize]) -> Result<String> {
        let v = self
            .store
            .get(variable)
            .ok_or_else(|| OnnxError::MissingVariable { layer: layer.to_string(), variable: variable.to_string() })?;
        let t = v.var.as_tensor();
        if t.dims() != shape {
            return Err(OnnxError::VariableShape {
                layer: layer.to_string(),
                variable: variable.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        if let Some(name) = self.added.get(variable) {
            return Ok(name.clone());
        }
        let values = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| OnnxError::Tensor { variable: variable.to_string(), reason: e.to_string() })?;
        let name = self.g.initializer_f32(variable, shape, &values);
        self.added.insert(variable.to_string(), name.clone());
        Ok(name)
    }

    /// Does the model have `variable`?
    pub(crate) fn has(&self, variable: &str) -> bool {
        self.store.get(variable).is_some()
    }

    /// `activation` after `x` (nothing for linear).
    ///
    /// # Shapes
    /// Any shape → the same shape (softmax over the last axis, as ferroflow's).
    pub(crate) fn activation(&mut self, scope: &str, x: &str, activation: Activation) -> String {
        let name = |op: &str| format!("{scope}/{op}");
        match activation {
            Activation::Linear => x.to_string(),
            Activation::Relu => self.g.node("Relu", &name("Relu"), &[x], &[]),
            Activation::Relu6 => {
                // Clip takes its bounds as inputs since opset 11.
                let lo = self.g.initializer_f32(&name("Relu6/min"), &[], &[0.0]);
                let hi = self.g.initializer_f32(&name("Relu6/max"), &[], &[6.0]);
                self.g.node("Clip", &name("Relu6"), &[x, &lo, &hi], &[])
            }
            // ferroflow's (and tf.nn.leaky_relu's) alpha is 0.2.
            Activation::LeakyRelu => self.g.node("LeakyRelu", &name("LeakyRelu"), &[x], &[("alpha", Attr::Float(0.2))]),
            Activation::Sigmoid => self.g.node("Sigmoid", &name("Sigmoid"), &[x], &[]),
            Activation::Tanh => self.g.node("Tanh", &name("Tanh"), &[x], &[]),
            Activation::Softmax => self.g.node("Softmax", &name("Softmax"), &[x], &[("axis", Attr::Int(-1))]),
        }
    }

    /// Global average pooling (`[N, C, H, W]` → `[N, C, 1, 1]`).
    pub(crate) fn global_avg_pool(&mut self, scope: &str, x: &str) -> String {
        self.g.node("GlobalAveragePool", &format!("{scope}/Mean"), &[x], &[])
    }

    /// Batch norm over the channels of `x` with the moving statistics.
    ///
    /// # Shapes
    /// `[N, C, H, W]` or `[N, C]` → the same shape.
    pub(crate) fn batch_norm(
        &mut self,
        scope: &str,
        x: &str,
        channels: usize,
        config: BatchNormConfig,
    ) -> Result<String> {
        let mut inputs = vec![x.to_string()];
        for v in ["gamma", "beta", "moving_mean", "moving_variance"] {
            if v == "gamma" && !config.scale {
                // No learned scale (TF's scale=False): ONNX's BatchNormalization takes ones.
                inputs.push(self.g.initializer_f32(&format!("{scope}/ones"), &[channels], &vec![1.0; channels]));
                continue;
            }
            inputs.push(self.var(scope, &format!("{scope}/{v}"), &[channels])?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.g.node(
            "BatchNormalization",
            &format!("{scope}/FusedBatchNormV3"),
            &inputs,
            &[("epsilon", Attr::Float(config.epsilon as f32))],
        ))
    }

    /// A conv (+ bias | batch norm) (+ activation) on a `[C, H, W]` input;
    /// returns its output and output shape.
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, filters, H', W']` (TF's SAME/VALID size).
    pub(crate) fn conv(
        &mut self,
        scope: &str,
        x: &str,
        in_shape: &[usize],
        c: Conv2dConfig,
    ) -> Result<(String, Vec<usize>)> {
        let &[ch, h, w] = in_shape else {
            return Err(OnnxError::Unsupported { layer: scope.into(), reason: format!("conv input {in_shape:?}") });
        };
        let mut pads = [0i64; 4];
        let mut out = [0usize; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let win = window(size, c.kernel[axis], c.stride[axis], c.dilation[axis], c.padding)
                .map_err(|e| OnnxError::Unsupported { layer: scope.into(), reason: e.to_string() })?;
            pads[axis] = win.pad_before as i64;
            pads[axis + 2] = win.pad_after as i64;
            out[axis] = win.output;
        }
        let weights = self.var(scope, &format!("{scope}/weights"), &[c.filters, ch, c.kernel[0], c.kernel[1]])?;
        let mut inputs = vec![x.to_string(), weights];
        if c.use_bias && c.batch_norm.is_none() {
            inputs.push(self.var(scope, &format!("{scope}/biases"), &[c.filters])?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut y = self.g.node(
            "Conv",
            &format!("{scope}/Conv2D"),
            &inputs,
            &[
                ("kernel_shape", Attr::pair(c.kernel)),
                ("strides", Attr::pair(c.stride)),
                ("dilations", Attr::pair(c.dilation)),
                ("pads", Attr::Ints(pads.to_vec())),
            ],
        );
        if let Some(bn) = c.batch_norm {
            y = self.batch_norm(&format!("{scope}/BatchNorm"), &y, c.filters, bn)?;
        }
        Ok((self.activation(scope, &y, c.activation), vec![c.filters, out[0], out[1]]))
    }

    /// A transposed conv with TF's output size (`conv2d_transpose(output_shape=…)`).
    ///
    /// ferroflow's output pixel `o` is pixel `o + pad_before` of the unpadded
    /// transposed conv (length `(in - 1) * stride + k`), zero past its end: ONNX's
    /// `pads` crop the start and end, `output_padding` appends the zeros.
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, filters, out_h, out_w]`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_transpose(
        &mut self,
        scope: &str,
        x: &str,
        in_shape: &[usize],
        out_shape: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        use_bias: bool,
        activation: Activation,
    ) -> Result<String> {
        let (&[ch, h, w], &[filters, oh, ow]) = (in_shape, out_shape) else {
            return Err(OnnxError::Unsupported {
                layer: scope.into(),
                reason: format!("conv2d_transpose shapes {in_shape:?} -> {out_shape:?}"),
            });
        };
        let mut pads = [0i64; 4];
        let mut output_padding = [0i64; 2];
        for (axis, (input, out)) in [(h, oh), (w, ow)].into_iter().enumerate() {
            let win = window(out, kernel[axis], stride[axis], 1, padding)
                .map_err(|e| OnnxError::Unsupported { layer: scope.into(), reason: e.to_string() })?;
            let full = (input - 1) * stride[axis] + kernel[axis];
            if win.pad_before > full {
                return Err(OnnxError::Unsupported {
                    layer: scope.into(),
                    reason: format!("padding {} exceeds the transposed conv's length {full}", win.pad_before),
                });
            }
            pads[axis] = win.pad_before as i64;
            let left = full - win.pad_before;
            if left >= out {
                pads[axis + 2] = (left - out) as i64;
            } else {
                output_padding[axis] = (out - left) as i64;
            }
        }
        let weights = self.var(scope, &format!("{scope}/weights"), &[ch, filters, kernel[0], kernel[1]])?;
        let mut inputs = vec![x.to_string(), weights];
        if use_bias {
            inputs.push(self.var(scope, &format!("{scope}/biases"), &[filters])?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let y = self.g.node(
            "ConvTranspose",
            &format!("{scope}/conv2d_transpose"),
            &inputs,
            &[
                ("kernel_shape", Attr::pair(kernel)),
                ("strides", Attr::pair(stride)),
                ("pads", Attr::Ints(pads.to_vec())),
                ("output_padding", Attr::Ints(output_padding.to_vec())),
            ],
        );
        Ok(self.activation(scope, &y, activation))
    }

    /// Max or average pooling with TF's padding (SAME padding is ignored by the
    /// max and excluded from the average's count, ONNX's `count_include_pad = 0`).
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H', W']`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pool(
        &mut self,
        scope: &str,
        x: &str,
        in_shape: &[usize],
        max: bool,
        pool: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    ) -> Result<String> {
        let &[_, h, w] = in_shape else {
            return Err(OnnxError::Unsupported { layer: scope.into(), reason: format!("pool input {in_shape:?}") });
        };
        let mut pads = [0i64; 4];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let win = window(size, pool[axis], stride[axis], 1, padding)
                .map_err(|e| OnnxError::Unsupported { layer: scope.into(), reason: e.to_string() })?;
            pads[axis] = win.pad_before as i64;
            pads[axis + 2] = win.pad_after as i64;
        }
        let (op, tf) = if max { ("MaxPool", "MaxPool") } else { ("AveragePool", "AvgPool") };
        Ok(self.g.node(
            op,
            &format!("{scope}/{tf}"),
            &[x],
            &[("kernel_shape", Attr::pair(pool)), ("strides", Attr::pair(stride)), ("pads", Attr::Ints(pads.to_vec()))],
        ))
    }

    /// Zero padding of the spatial dimensions, `pad = [top, bottom, left, right]` (`tf.pad`).
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H + top + bottom, W + left + right]`.
    pub(crate) fn pad(&mut self, scope: &str, x: &str, pad: [usize; 4]) -> String {
        let [top, bottom, left, right] = pad.map(|p| p as i64);
        // ONNX's pads: the starts of every axis (N, C, H, W), then their ends.
        let pads: Vec<i64> = vec![0, 0, top, left, 0, 0, bottom, right];
        let pads = self.g.initializer_i64(&format!("{scope}/paddings"), &[8], &pads);
        self.g.node("Pad", &format!("{scope}/Pad"), &[x, &pads], &[])
    }

    /// TF's flatten: NCHW → NHWC, then `[N, H * W * C]`.
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, H * W * C]`; `[N, F]` unchanged.
    pub(crate) fn flatten(&mut self, scope: &str, x: &str, in_shape: &[usize]) -> String {
        if in_shape.len() <= 1 {
            return x.to_string();
        }
        let mut perm = vec![0i64];
        perm.extend((2..=in_shape.len() as i64).chain([1]));
        let t = self.g.node("Transpose", &format!("{scope}/transpose"), &[x], &[("perm", Attr::Ints(perm))]);
        self.g.node("Flatten", &format!("{scope}/Reshape"), &[&t], &[("axis", Attr::Int(1))])
    }

    /// `x @ weights + biases` (+ activation), TF's `[in, units]` kernel.
    ///
    /// # Shapes
    /// `[N, in]` → `[N, units]`.
    pub(crate) fn dense(
        &mut self,
        scope: &str,
        x: &str,
        fan_in: usize,
        units: usize,
        use_bias: bool,
        activation: Activation,
    ) -> Result<String> {
        let weights = self.var(scope, &format!("{scope}/weights"), &[fan_in, units])?;
        let y = if use_bias {
            let biases = self.var(scope, &format!("{scope}/biases"), &[units])?;
            self.g.node("Gemm", &format!("{scope}/MatMul"), &[x, &weights, &biases], &[])
        } else {
            self.g.node("MatMul", &format!("{scope}/MatMul"), &[x, &weights], &[])
        };
        Ok(self.activation(scope, &y, activation))
    }

    /// `a + b`, then ReLU (a residual block's end).
    ///
    /// # Shapes
    /// Two equal shapes → that shape.
    pub(crate) fn add_relu(&mut self, scope: &str, a: &str, b: &str) -> String {
        let sum = self.g.node("Add", &format!("{scope}/add"), &[a, b], &[]);
        self.g.node("Relu", &format!("{scope}/Relu"), &[&sum], &[])
    }
}
