//! TensorFlow's `SAME`/`VALID` padding: output sizes and (asymmetric) pads.
//!
//! Semantics: `tensorflow/core/framework/kernel_shape_util.cc`
//! (`GetWindowedOutputSizeVerbose`): with `k_eff = (k - 1) * dilation + 1`,
//! - `VALID`: `out = (in - k_eff + stride) / stride`, no padding;
//! - `SAME`: `out = ceil(in / stride)`, `total = max((out - 1) * stride + k_eff - in, 0)`,
//!   `pad_before = total / 2`, `pad_after = total - pad_before` (the extra pixel of an odd
//!   total goes after, unlike the symmetric padding of candle/PyTorch).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::{NnError, Result};

/// TensorFlow's padding modes (`"SAME"` / `"VALID"` when serialised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Padding {
    /// Output size `ceil(in / stride)`, zero (or, for max-pooling, never-winning) padding
    /// split as TF does: the odd pixel goes after.
    Same,
    /// No padding: only windows that fit inside the input.
    Valid,
}

impl Padding {
    /// TF's spelling, `"SAME"` or `"VALID"`.
    pub fn as_tf_str(self) -> &'static str {
        match self {
            Padding::Same => "SAME",
            Padding::Valid => "VALID",
        }
    }
}

impl std::fmt::Display for Padding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_tf_str())
    }
}

impl std::str::FromStr for Padding {
    type Err = NnError;

    /// Parses `SAME`/`VALID` (any case).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SAME" => Ok(Padding::Same),
            "VALID" => Ok(Padding::Valid),
            _ => Err(NnError::shape("padding", format!("unknown padding `{s}` (expected SAME or VALID)"))),
        }
    }
}

/// The geometry of one spatial dimension of a windowed op (conv or pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Output size.
    pub output: usize,
    /// Padding before the input (top or left).
    pub pad_before: usize,
    /// Padding after the input (bottom or right).
    pub pad_after: usize,
}

impl Window {
    /// The length of the padded input that the windows actually read:
    /// `(output - 1) * stride + k_eff`. It never exceeds `in + pad_before + pad_after`
    /// and may be shorter (trailing rows no window reaches, e.g. VALID with a stride).
    pub fn used_len(&self, kernel: usize, stride: usize, dilation: usize) -> usize {
        (self.output - 1) * stride + effective_kernel(kernel, dilation)
    }
}

/// The dilated kernel extent `(k - 1) * dilation + 1`.
pub fn effective_kernel(kernel: usize, dilation: usize) -> usize {
    (kernel.max(1) - 1) * dilation + 1
}

/// TF's SAME padding `(pad_before, pad_after)` for one dimension
/// (`kernel_shape_util.cc`): `total = max((ceil(in/stride) - 1) * stride + k_eff - in, 0)`,
/// `pad_before = total / 2`, `pad_after = total - pad_before`. `stride` must be at least 1.
pub fn same_padding(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let stride = stride.max(1);
    let output = input.div_ceil(stride);
    let needed = (output.max(1) - 1) * stride + effective_kernel(kernel, dilation);
    let total = needed.saturating_sub(input);
    (total / 2, total - total / 2)
}

/// The output size TF computes for one dimension (see the module docs), or an error
/// naming the sizes when TF rejects the configuration (zero stride, dilation or kernel)
/// or the output would be empty (VALID with a kernel larger than the input; TF returns
/// an empty tensor there, ferroflow refuses it).
pub fn output_size(input: usize, kernel: usize, stride: usize, dilation: usize, padding: Padding) -> Result<usize> {
    Ok(window(input, kernel, stride, dilation, padding)?.output)
}

/// Output size and padding of one spatial dimension, as TF computes them
/// (`GetWindowedOutputSizeVerbose` in `tensorflow/core/framework/kernel_shape_util.cc`).
///
/// Errors: a zero stride, dilation or kernel size, an empty input, or an empty output
/// (VALID with `in < k_eff`).
pub fn window(input: usize, kernel: usize, stride: usize, dilation: usize, padding: Padding) -> Result<Window> {
    if stride == 0 || dilation == 0 || kernel == 0 {
        return Err(NnError::shape(
            "padding",
            format!("stride ({stride}), dilation ({dilation}) and kernel size ({kernel}) must be at least 1"),
        ));
    }
    if input == 0 {
        return Err(NnError::shape("padding", "the input has an empty spatial dimension"));
    }
    let k_eff = effective_kernel(kernel, dilation);
    match padding {
        Padding::Valid => {
            if input < k_eff {
                return Err(NnError::shape(
                    "padding",
                    format!(
                        "VALID padding with input size {input} smaller than the (dilated) kernel size {k_eff} \
                         (kernel {kernel}, dilation {dilation}) gives an empty output"
                    ),
                ));
            }
            Ok(Window { output: (input - k_eff) / stride + 1, pad_before: 0, pad_after: 0 })
        }
        Padding::Same => {
            let (pad_before, pad_after) = same_padding(input, kernel, stride, dilation);
            Ok(Window { output: input.div_ceil(stride), pad_before, pad_after })
        }
    }
}

/// TF's `tf.pad` with zeros on the spatial dimensions of an NCHW tensor (TF-slim's
/// `conv2d_same` pads this way before a strided VALID conv; Keras' `ZeroPadding2D`):
/// `pads = [top, bottom, left, right]`. The padding gets no gradient.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - result: `[N, C, H + top + bottom, W + left + right]`
pub fn zero_pad(x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(NnError::shape("zero_pad", format!("x must be [N, C, H, W], got {:?}", x.dims())));
    }
    let [top, bottom, left, right] = pads;
    pad_dim(x, 2, top, bottom, 0.0).and_then(|y| pad_dim(&y, 3, left, right, 0.0)).map_err(NnError::candle("zero_pad"))
}

/// Pads spatial dimension `dim` of `x` with `before`/`after` copies of `value`, keeping
/// autograd (the gradient of the padded region is dropped, as TF's).
pub(crate) fn pad_dim(x: &Tensor, dim: usize, before: usize, after: usize, value: f64) -> candle_core::Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return x.pad_with_zeros(dim, before, after);
    }
    let block = |n: usize| -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(value as f32, dims.as_slice(), x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// Pads (with `value`) and crops the spatial dims 2 and 3 of an NCHW tensor to exactly
/// the region the windows read: `[pad_before, pad_before + used_len)` in padded
/// coordinates. Cropping the never-read tail keeps candle's conv backward exact
/// (its input gradient is a transposed conv with an output padding it derives from the
/// height only).
pub(crate) fn pad_and_crop(
    x: &Tensor,
    windows: [Window; 2],
    used: [usize; 2],
    value: f64,
) -> candle_core::Result<Tensor> {
    let mut x = x.clone();
    for (axis, (w, used)) in windows.iter().zip(used).enumerate() {
        let dim = axis + 2;
        // Rows beyond `used` in padded coordinates are never read: pad less (or crop).
        let after = used.saturating_sub(w.pad_before + x.dim(dim)?);
        x = pad_dim(&x, dim, w.pad_before, after.min(w.pad_after), value)?;
        if x.dim(dim)? > used {
            x = x.narrow(dim, 0, used)?;
        }
    }
    Ok(x)
}

/// Inserts `factor - 1` zeros between consecutive elements of dimension `dim`
/// (length `l` becomes `(l - 1) * factor + 1`), keeping autograd. Used for dilating
/// kernels and for the zero-insertion form of a strided transposed convolution.
pub(crate) fn insert_zeros(x: &Tensor, dim: usize, factor: usize) -> candle_core::Result<Tensor> {
    if factor <= 1 {
        return Ok(x.clone());
    }
    let len = x.dim(dim)?;
    let mut merged = x.dims().to_vec();
    merged[dim] = len * factor;
    x.unsqueeze(dim + 1)?.pad_with_zeros(dim + 1, 0, factor - 1)?.reshape(merged)?.narrow(
        dim,
        0,
        (len - 1) * factor + 1,
    )
}

/// Keeps every `step`-th element of dimension `dim`, starting at `start`, `count` of them
/// (a strided slice, with autograd).
pub(crate) fn strided(x: &Tensor, dim: usize, start: usize, step: usize, count: usize) -> candle_core::Result<Tensor> {
    if step == 1 {
        return x.narrow(dim, start, count);
    }
    let ids: Vec<u32> = (0..count).map(|i| (start + i * step) as u32).collect();
    let ids = Tensor::from_vec(ids, count, x.device())?;
    // candle's index_select reads contiguous sources only.
    x.contiguous()?.index_select(&ids, dim)
}

/// A small host-built f32 tensor moved to `like`'s device and dtype.
pub(crate) fn host_tensor(data: Vec<f32>, shape: &[usize], like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape, like.device())?.to_dtype(like.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tf() {
        // in 8, k 3, s 2: out 4, total (3*2+3-8)=1 -> (0, 1): the odd pixel goes after.
        assert_eq!(window(8, 3, 2, 1, Padding::Same).unwrap(), Window { output: 4, pad_before: 0, pad_after: 1 });
        // in 7, k 3, s 2: out 4, total 2 -> (1, 1).
        assert_eq!(window(7, 3, 2, 1, Padding::Same).unwrap(), Window { output: 4, pad_before: 1, pad_after: 1 });
        // even kernel, stride 1: in 8, k 2 -> total 1 -> (0, 1).
        assert_eq!(same_padding(8, 2, 1, 1), (0, 1));
        // in 4, k 5, s 2: out 2, total 3 -> (1, 2).
        assert_eq!(same_padding(4, 5, 2, 1), (1, 2));
        // dilation: in 10, k 3, d 2 -> k_eff 5, total 4 -> (2, 2).
        assert_eq!(same_padding(10, 3, 1, 2), (2, 2));
        // padding never negative: 1x1 kernel stride 2.
        assert_eq!(same_padding(8, 1, 2, 1), (0, 0));
    }

    #[test]
    fn valid_sizes_and_errors() {
        assert_eq!(output_size(7, 3, 2, 1, Padding::Valid).unwrap(), 3);
        assert_eq!(output_size(8, 3, 2, 1, Padding::Valid).unwrap(), 3);
        assert_eq!(output_size(10, 3, 1, 2, Padding::Valid).unwrap(), 6);
        let e = output_size(4, 5, 2, 1, Padding::Valid).unwrap_err().to_string();
        assert!(e.contains("input size 4") && e.contains("kernel size 5"), "{e}");
        assert!(output_size(4, 3, 0, 1, Padding::Same).is_err());
    }

    #[test]
    fn padding_serde_and_parse() {
        assert_eq!(serde_json::to_string(&Padding::Same).unwrap(), "\"SAME\"");
        assert_eq!(serde_json::from_str::<Padding>("\"VALID\"").unwrap(), Padding::Valid);
        assert_eq!("same".parse::<Padding>().unwrap(), Padding::Same);
        assert!("full".parse::<Padding>().is_err());
    }
}
