//! TensorFlow's `Conv2D` and `conv2d_transpose` (`Conv2DBackpropInput`) on NCHW tensors.
//!
//! TF pads SAME asymmetrically (the odd pixel after; see [`super::padding`]), candle pads
//! symmetrically, so both ops pad or crop explicitly and call candle with padding 0.
//! candle takes one stride and one dilation for both spatial axes; unequal ones are
//! handled by striding at the gcd and subsampling (conv2d), by inserting zeros into the
//! input (conv2d_transpose) and by dilating the kernel explicitly. Every step is a candle
//! op, so gradients reach both the input and the kernel.

use candle_core::Tensor;

use super::padding::{Padding, Window, insert_zeros, pad_and_crop, pad_dim, strided, window};
use crate::{NnError, Result, kernels};

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn check_positive(op: &str, what: &str, v: [usize; 2]) -> Result<()> {
    if v[0] == 0 || v[1] == 0 {
        return Err(NnError::shape(op, format!("{what} {v:?} must be at least 1 in both dimensions")));
    }
    Ok(())
}

/// TF's `Conv2D` (`tf.nn.conv2d`) on NCHW input with an OIHW kernel.
///
/// Output size and SAME padding follow `tensorflow/core/framework/kernel_shape_util.cc`:
/// `SAME` gives `ceil(in / stride)` with `pad_before = total / 2` and the odd pixel after
/// (so an even kernel or a stride can pad asymmetrically); `VALID` gives
/// `(in - k_eff) / stride + 1`, `k_eff = (k - 1) * dilation + 1`. Any stride and dilation,
/// each per axis. Gradients flow to `x` and `w` (candle's conv backward, made exact by
/// cropping the input to the rows the windows read).
///
/// f32 tensors on the CPU take ferroflow's own kernel instead ([`crate::kernels::conv2d`](fn@crate::kernels::conv2d):
/// im2col + gemm with its own backward, same results within rounding); other devices and
/// dtypes take candle's conv.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`
/// - `w`: `[C_out, C_in, kh, kw]`
/// - result: `[N, C_out, H_out, W_out]`
///
/// # Errors
/// Wrong ranks, mismatched channels, a zero stride or dilation, or a VALID kernel larger
/// than the input (TF would return an empty tensor; ferroflow refuses it).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: [usize; 2], dilation: [usize; 2], padding: Padding) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let windows = conv2d_windows(OP, x, w, stride, dilation, padding)?;
    let y = if kernels::supports(x, w) {
        // ferroflow's CPU kernel (im2col + gemm, with its own backward) takes TF's padding as is.
        kernels::conv2d(x, w, kernel_params(windows, stride, dilation))
    } else {
        let (_, _, kh, kw) = w.dims4().map_err(NnError::candle(OP))?;
        let used = [windows[0].used_len(kh, stride[0], dilation[0]), windows[1].used_len(kw, stride[1], dilation[1])];
        conv2d_padded(x, w, windows, used, stride, dilation)
    }
    .map_err(NnError::candle(OP))?;
    check_output(OP, x, w, &y, windows)?;
    Ok(y)
}

/// [`conv2d`] → training-mode batch norm ([`super::batch_norm_train`]) → ReLU when `relu`:
/// one fused op for f32 CPU tensors ([`crate::kernels::conv2d_batch_norm_train`]: one
/// autograd node, same values within rounding), the ops one after the other otherwise.
///
/// Returns `(y, batch_mean, batch_variance_biased)`; the statistics (of the conv output)
/// feed [`super::moving_average_update`], as those of [`super::batch_norm_train`].
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`
/// - `w`: `[C_out, C_in, kh, kw]`
/// - `gamma`, `beta`: `[C_out]`
/// - results: `y` `[N, C_out, H_out, W_out]`; `batch_mean`, `batch_variance_biased`: `[C_out]`
///
/// # Errors
/// As [`conv2d`] and [`super::batch_norm_train`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_batch_norm_train(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    epsilon: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "conv2d_batch_norm_train";
    if !fusable(x, w, gamma, beta) {
        let z = conv2d(x, w, stride, dilation, padding)?;
        return if relu {
            super::batch_norm_relu_train(&z, gamma, beta, epsilon)
        } else {
            super::batch_norm_train(&z, gamma, beta, epsilon)
        };
    }
    let windows = conv2d_windows(OP, x, w, stride, dilation, padding)?;
    let params = kernel_params(windows, stride, dilation);
    let (y, mean, var) =
        kernels::conv2d_batch_norm_train(x, w, gamma, beta, params, epsilon, relu).map_err(NnError::candle(OP))?;
    check_output(OP, x, w, &y, windows)?;
    Ok((y, mean, var))
}

/// True when the fused CPU kernel takes these operands: f32 CPU tensors (the
/// kernel's own check) with `gamma` and `beta` one value per output channel.
fn fusable(x: &Tensor, w: &Tensor, gamma: &Tensor, beta: &Tensor) -> bool {
    kernels::conv_bn::supports(x, w, gamma, beta)
        && gamma.dims().len() == 1
        && w.dims().first() == Some(&gamma.dims()[0])
        && gamma.dims() == beta.dims()
}

/// A max-pool window as TF's `tf.nn.max_pool2d` takes it, for
/// [`conv2d_batch_norm_relu_max_pool_train`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPoolWindow {
    /// `[kh, kw]`.
    pub ksize: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
}

/// [`conv2d_batch_norm_train`] with the ReLU, then TF's max-pool ([`super::max_pool2d`]):
/// one fused op for f32 CPU tensors ([`crate::kernels::conv2d_batch_norm_relu_max_pool_train`]:
/// the full-size activation and its gradient never become tensors), the ops one after the
/// other otherwise.
///
/// Returns `(pooled, batch_mean, batch_variance_biased)`, the statistics those of the conv
/// output, as [`conv2d_batch_norm_train`]'s.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`
/// - `w`: `[C_out, C_in, kh, kw]`
/// - `gamma`, `beta`: `[C_out]`
/// - results: pooled `[N, C_out, P_h, P_w]` (TF's pool output size for the conv's
///   `[H_out, W_out]`); `batch_mean`, `batch_variance_biased`: `[C_out]`
///
/// # Errors
/// As [`conv2d`], [`super::batch_norm_train`] and [`super::max_pool2d`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_batch_norm_relu_max_pool_train(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    epsilon: f64,
    pool: MaxPoolWindow,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "conv2d_batch_norm_relu_max_pool_train";
    if !fusable(x, w, gamma, beta) {
        let (y, mean, var) = conv2d_batch_norm_train(x, w, gamma, beta, stride, dilation, padding, epsilon, true)?;
        return Ok((super::max_pool2d(&y, pool.ksize, pool.stride, pool.padding)?, mean, var));
    }
    let windows = conv2d_windows(OP, x, w, stride, dilation, padding)?;
    let conv_dims = [x.dims()[0], w.dims()[0], windows[0].output, windows[1].output];
    let pool_params = super::pool::max_pool_kernel_params(OP, &conv_dims, pool.ksize, pool.stride, pool.padding)?;
    let params = kernel_params(windows, stride, dilation);
    kernels::conv2d_batch_norm_relu_max_pool_train(x, w, gamma, beta, params, pool_params, epsilon)
        .map_err(NnError::candle(OP))
}

/// One conv → training batch norm (→ ReLU) (→ max-pool) block of
/// [`conv2d_batch_norm_chain_train`].
#[derive(Debug, Clone)]
pub struct ConvBnBlock {
    /// `[C_out, C_in, kh, kw]`.
    pub w: Tensor,
    /// `[C_out]`.
    pub gamma: Tensor,
    /// `[C_out]`.
    pub beta: Tensor,
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
    /// SAME or VALID (TF's).
    pub padding: Padding,
    /// Batch norm's epsilon.
    pub epsilon: f64,
    /// A ReLU after batch norm.
    pub relu: bool,
    /// A max-pool after the ReLU (only with `relu`).
    pub pool: Option<MaxPoolWindow>,
}

/// The blocks in order: [`conv2d_batch_norm_train`] (or, with a pool,
/// [`conv2d_batch_norm_relu_max_pool_train`]) one after the other, as one fused op for f32
/// CPU tensors ([`crate::kernels::conv2d_batch_norm_chain_train`]: the activations between
/// the blocks and their gradients never become autograd tensors; same values), the ops
/// one by one otherwise.
///
/// Returns the last block's output and each block's `(batch_mean,
/// batch_variance_biased)` of its conv output, for [`super::moving_average_update`].
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`
/// - block `k`: `w` `[C_k, C_(k-1), kh, kw]` (`C_(-1) = C_in`), `gamma`, `beta` `[C_k]`
/// - results: the last block's output `[N, C_last, H', W']`; statistics `[C_k]`
///
/// # Errors
/// As the single-block ops, naming the block; a max-pool after a block without ReLU.
pub fn conv2d_batch_norm_chain_train(x: &Tensor, blocks: &[ConvBnBlock]) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    chain_train("conv2d_batch_norm_chain_train", x, blocks, false)
}

/// A residual unit with an identity shortcut: `relu(chain(x) + x)`, `chain` being
/// [`conv2d_batch_norm_chain_train`] (the last block without ReLU or pool) and the sum
/// and ReLU [`super::add_relu`]'s. One fused op for f32 CPU tensors
/// ([`crate::kernels::conv2d_batch_norm_residual_train`]: the sum and ReLU happen in the
/// last block's normalising sweep; same values), the ops one by one otherwise.
///
/// Returns the unit's output and each block's `(batch_mean, batch_variance_biased)`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`; the blocks as [`conv2d_batch_norm_chain_train`], the last
///   one's output `[N, C, H, W]` again
/// - results: `[N, C, H, W]`; statistics `[C_k]`
///
/// # Errors
/// As [`conv2d_batch_norm_chain_train`]; also a last block with a ReLU or a pool, or an
/// output whose shape is not `x`'s.
pub fn conv2d_batch_norm_residual_train(x: &Tensor, blocks: &[ConvBnBlock]) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    chain_train("conv2d_batch_norm_residual_train", x, blocks, true)
}

fn chain_train(
    op_name: &'static str,
    x: &Tensor,
    blocks: &[ConvBnBlock],
    residual: bool,
) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    if residual && blocks.last().is_some_and(|b| b.relu || b.pool.is_some()) {
        return Err(NnError::shape(
            op_name,
            "the last block adds the shortcut before its ReLU, so it has neither ReLU nor pool",
        ));
    }
    if let Some(k) = blocks.iter().position(|b| b.pool.is_some() && !b.relu) {
        return Err(NnError::shape(op_name, format!("block {k}: a max-pool is fused only after a ReLU")));
    }
    // The kernel's geometry of every block, from the shapes the blocks produce.
    let mut links = Vec::with_capacity(blocks.len());
    let mut dims = x.dims().to_vec();
    for (k, b) in blocks.iter().enumerate() {
        let op = format!("{op_name} (block {k})");
        let windows = conv2d_windows_of(&op, &dims, b.w.dims(), b.stride, b.dilation, b.padding)?;
        let conv_dims = [dims[0], b.w.dims()[0], windows[0].output, windows[1].output];
        let pool = match b.pool {
            Some(p) => Some(super::pool::max_pool_kernel_params(&op, &conv_dims, p.ksize, p.stride, p.padding)?),
            None => None,
        };
        dims = match pool {
            Some(p) => match p.output_size([conv_dims[2], conv_dims[3]]) {
                Some([h, w]) => vec![conv_dims[0], conv_dims[1], h, w],
                None => return Err(NnError::shape(&op, "the max-pool has no output")),
            },
            None => conv_dims.to_vec(),
        };
        links.push(kernels::ChainLink {
            w: &b.w,
            gamma: &b.gamma,
            beta: &b.beta,
            params: kernel_params(windows, b.stride, b.dilation),
            epsilon: b.epsilon,
            relu: b.relu,
            pool,
        });
    }
    if residual && dims != x.dims() {
        return Err(NnError::shape(
            op_name,
            format!("the unit's output {dims:?} is not its input's shape {:?}", x.dims()),
        ));
    }
    if kernels::supports_chain(x, &links) {
        let (y, stats) = if residual {
            kernels::conv2d_batch_norm_residual_train(x, &links)
        } else {
            kernels::conv2d_batch_norm_chain_train(x, &links)
        }
        .map_err(NnError::candle(op_name))?;
        if y.dims() != dims {
            return Err(NnError::shape(
                op_name,
                format!("internal: got output {:?}, expected {dims:?} (x {:?})", y.dims(), x.dims()),
            ));
        }
        return Ok((y, stats));
    }
    let mut y = x.clone();
    let mut stats = Vec::with_capacity(blocks.len());
    for b in blocks {
        let (out, mean, var) = match b.pool {
            Some(pool) => conv2d_batch_norm_relu_max_pool_train(
                &y, &b.w, &b.gamma, &b.beta, b.stride, b.dilation, b.padding, b.epsilon, pool,
            )?,
            None => conv2d_batch_norm_train(
                &y, &b.w, &b.gamma, &b.beta, b.stride, b.dilation, b.padding, b.epsilon, b.relu,
            )?,
        };
        stats.push((mean, var));
        y = out;
    }
    if residual {
        y = super::add_relu(&y, x)?;
    }
    Ok((y, stats))
}

/// ferroflow's kernel geometry for TF's windows.
fn kernel_params(windows: [Window; 2], stride: [usize; 2], dilation: [usize; 2]) -> kernels::Conv2dParams {
    kernels::Conv2dParams {
        stride,
        dilation,
        pad_before: [windows[0].pad_before, windows[1].pad_before],
        pad_after: [windows[0].pad_after, windows[1].pad_after],
    }
}

/// Checks that `y` has the `[N, C_out, H_out, W_out]` the windows give.
fn check_output(op: &str, x: &Tensor, w: &Tensor, y: &Tensor, windows: [Window; 2]) -> Result<()> {
    let expect = [x.dims()[0], w.dims()[0], windows[0].output, windows[1].output];
    if y.dims() != expect {
        return Err(NnError::shape(
            op,
            format!(
                "internal: got output {:?}, expected {expect:?} (x {:?}, filter {:?})",
                y.dims(),
                x.dims(),
                w.dims()
            ),
        ));
    }
    Ok(())
}

/// Validates a TF conv2d's operands and geometry; returns its windows per spatial axis.
fn conv2d_windows(
    op: &str,
    x: &Tensor,
    w: &Tensor,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<[Window; 2]> {
    conv2d_windows_of(op, x.dims(), w.dims(), stride, dilation, padding)
}

/// [`conv2d_windows`] from the operands' dims.
fn conv2d_windows_of(
    op: &str,
    x_dims: &[usize],
    w_dims: &[usize],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<[Window; 2]> {
    let describe =
        || format!("x {x_dims:?}, filter {w_dims:?}, stride {stride:?}, dilation {dilation:?}, padding {padding}");
    let (&[_, c_in, h, wd], &[_, w_in, kh, kw]) = (x_dims, w_dims) else {
        return Err(NnError::shape(op, format!("expected NCHW x and OIHW filter (rank 4): {}", describe())));
    };
    if c_in != w_in {
        return Err(NnError::shape(
            op,
            format!(
                "input has {c_in} channels but the filter expects {w_in} (grouped convolution is not supported): {}",
                describe()
            ),
        ));
    }
    check_positive(op, "stride", stride)?;
    check_positive(op, "dilation", dilation)?;
    let win = |axis: usize, input: usize, k: usize| {
        window(input, k, stride[axis], dilation[axis], padding)
            .map_err(|e| NnError::shape(op, format!("{e}: {}", describe())))
    };
    Ok([win(0, h, kh)?, win(1, wd, kw)?])
}

/// The candle part of [`conv2d`]: pad/crop, then one candle conv at padding 0.
fn conv2d_padded(
    x: &Tensor,
    w: &Tensor,
    windows: [Window; 2],
    used: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> candle_core::Result<Tensor> {
    let xp = pad_and_crop(x, windows, used, 0.0)?;
    // candle has one dilation for both axes: dilate the kernel explicitly when they differ.
    let (w, dil) = if dilation[0] == dilation[1] {
        (w.clone(), dilation[0])
    } else {
        (insert_zeros(&insert_zeros(w, 2, dilation[0])?, 3, dilation[1])?, 1)
    };
    if stride[0] == stride[1] {
        return xp.conv2d(&w, 0, stride[0], dil, 1);
    }
    // candle has one stride: convolve at the gcd, then keep every (stride / gcd)-th row/column.
    // `xp` spans exactly `(out - 1) * stride + k_eff`, a multiple of the gcd plus `k_eff`,
    // so the gcd-strided conv is exact too (no output padding in its backward).
    let g = gcd(stride[0], stride[1]);
    let y = xp.conv2d(&w, 0, g, dil, 1)?;
    let y = strided(&y, 2, 0, stride[0] / g, windows[0].output)?;
    strided(&y, 3, 0, stride[1] / g, windows[1].output)
}

/// TF's `tf.nn.conv2d_transpose` (the `Conv2DBackpropInput` op) with an explicit output
/// size: the gradient of [`conv2d`] with respect to its input, for an input of size
/// `output_hw`.
///
/// TF accepts `output_hw` only when a forward conv2d of that size, with the same kernel,
/// stride and padding, gives the input's size (`ConvBackpropComputeDimensionsV2` in
/// `tensorflow/core/kernels/conv_grad_shape_utils.cc`); so does this function, and it names
/// the sizes otherwise. Several output sizes can be valid for one input (e.g. 7 and 8 for
/// input 4, stride 2, SAME). Computed as candle's full transposed conv (length
/// `(in - 1) * stride + k`) cropped by TF's `pad_before` and zero-extended at the end where
/// the forward conv's padded input reaches past its last window. Gradients flow to `x`
/// and `w`.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]` (the forward conv's output channels)
/// - `w`: `[C_in, C_out, kh, kw]` (candle's `conv_transpose2d` layout; TF's `[kh, kw, C_out, C_in]`
///   permuted by `(3, 2, 0, 1)`)
/// - result: `[N, C_out, output_hw[0], output_hw[1]]`
///
/// # Errors
/// Wrong ranks, mismatched channels, a zero stride, or an `output_hw` whose forward conv2d
/// does not give `[H, W]`.
pub fn conv2d_transpose(
    x: &Tensor,
    w: &Tensor,
    output_hw: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
) -> Result<Tensor> {
    const OP: &str = "conv2d_transpose";
    let describe = || {
        format!(
            "x {:?}, filter {:?}, output size {output_hw:?}, stride {stride:?}, padding {padding}",
            x.dims(),
            w.dims()
        )
    };
    let (&[n, c_in, h, wd], &[w_in, c_out, kh, kw]) = (x.dims(), w.dims()) else {
        return Err(NnError::shape(
            OP,
            format!("expected NCHW x and [C_in, C_out, kh, kw] filter (rank 4): {}", describe()),
        ));
    };
    if c_in != w_in {
        return Err(NnError::shape(
            OP,
            format!("input has {c_in} channels but the filter's first dimension is {w_in}: {}", describe()),
        ));
    }
    check_positive(OP, "stride", stride)?;
    let mut windows = [Window { output: 0, pad_before: 0, pad_after: 0 }; 2];
    for (axis, (&out, (&input, &k))) in output_hw.iter().zip([h, wd].iter().zip(&[kh, kw])).enumerate() {
        let name = ["height", "width"][axis];
        let win = window(out, k, stride[axis], 1, padding)
            .map_err(|e| NnError::shape(OP, format!("output {name} {out} is invalid ({e}): {}", describe())))?;
        if win.output != input {
            return Err(NnError::shape(
                OP,
                format!(
                    "output {name} {out} is inconsistent with input {name} {input}: a {padding} conv2d \
                     of size {out} with kernel {k} and stride {} gives {}, not {input}: {}",
                    stride[axis],
                    win.output,
                    describe()
                ),
            ));
        }
        windows[axis] = win;
    }
    let y = conv2d_transpose_full(x, w, stride)
        .and_then(|full| crop_to_output(&full, windows, output_hw))
        .map_err(NnError::candle(OP))?;
    let expect = [n, c_out, output_hw[0], output_hw[1]];
    if y.dims() != expect {
        return Err(NnError::shape(
            OP,
            format!("internal: got output {:?}, expected {expect:?}: {}", y.dims(), describe()),
        ));
    }
    Ok(y)
}

/// candle's unpadded transposed conv, `(in - 1) * stride + k` per axis, for any pair of strides.
fn conv2d_transpose_full(x: &Tensor, w: &Tensor, stride: [usize; 2]) -> candle_core::Result<Tensor> {
    if stride[0] == stride[1] {
        return x.conv_transpose2d(w, 0, 0, stride[0], 1);
    }
    // One stride in candle: insert (stride / gcd - 1) zeros between input pixels per axis,
    // then transpose-convolve at the gcd. `(in - 1) * (s / g) * g + k` is the same length.
    let g = gcd(stride[0], stride[1]);
    let xu = insert_zeros(&insert_zeros(x, 2, stride[0] / g)?, 3, stride[1] / g)?;
    xu.conv_transpose2d(w, 0, 0, g, 1)
}

/// Output pixel `o` of TF's transposed conv is pixel `o + pad_before` of the full one; pixels
/// past the full result (where the forward conv's padded input has unread rows) are zero.
fn crop_to_output(full: &Tensor, windows: [Window; 2], output_hw: [usize; 2]) -> candle_core::Result<Tensor> {
    let mut y = full.clone();
    for (axis, (win, &out)) in windows.iter().zip(&output_hw).enumerate() {
        let dim = axis + 2;
        let len = y.dim(dim)?;
        let start = win.pad_before.min(len);
        let keep = out.min(len - start);
        y = y.narrow(dim, start, keep)?;
        y = pad_dim(&y, dim, 0, out - keep, 0.0)?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// (x shape, w shape, stride, dilation)
    type ConvCase = ([usize; 4], [usize; 4], [usize; 2], [usize; 2]);
    /// (x shape, w shape, output size, stride, padding)
    type TransposeCase = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], Padding);

    struct Reference {
        y: Vec<f32>,
        dx: Vec<f32>,
        dw: Vec<f32>,
        out: [usize; 2],
    }

    /// A slow conv2d with explicit loops and its gradients for `sum(y * dy)`, with TF's
    /// padding rule written out independently.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        stride: [usize; 2],
        dil: [usize; 2],
        same: bool,
        dy: Option<&[f32]>,
    ) -> Reference {
        let [n, c, h, wd] = xs;
        let [o, _, kh, kw] = ws;
        let dims = |input: usize, k: usize, s: usize, d: usize| {
            let ke = (k - 1) * d + 1;
            if same {
                let out = input.div_ceil(s);
                let total = ((out - 1) * s + ke).saturating_sub(input);
                (out, total / 2)
            } else {
                ((input - ke) / s + 1, 0)
            }
        };
        let (oh, pt) = dims(h, kh, stride[0], dil[0]);
        let (ow, pl) = dims(wd, kw, stride[1], dil[1]);
        let mut y = vec![0f32; n * o * oh * ow];
        let mut dx = vec![0f32; x.len()];
        let mut dw = vec![0f32; w.len()];
        for b in 0..n {
            for oc in 0..o {
                for i in 0..oh {
                    for j in 0..ow {
                        let yi = ((b * o + oc) * oh + i) * ow + j;
                        let g = dy.map_or(0.0, |d| d[yi]);
                        let mut acc = 0f32;
                        for ic in 0..c {
                            for a in 0..kh {
                                for e in 0..kw {
                                    let r = (i * stride[0] + a * dil[0]) as isize - pt as isize;
                                    let q = (j * stride[1] + e * dil[1]) as isize - pl as isize;
                                    if r < 0 || q < 0 || r >= h as isize || q >= wd as isize {
                                        continue;
                                    }
                                    let xi = ((b * c + ic) * h + r as usize) * wd + q as usize;
                                    let wi = ((oc * c + ic) * kh + a) * kw + e;
                                    acc += x[xi] * w[wi];
                                    dx[xi] += g * w[wi];
                                    dw[wi] += g * x[xi];
                                }
                            }
                        }
                        y[yi] = acc;
                    }
                }
            }
        }
        Reference { y, dx, dw, out: [oh, ow] }
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
        }
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn conv2d_matches_loop_reference() {
        let dev = Device::Cpu;
        // (x shape, w shape, stride, dilation): even kernels with SAME stride 2 pad
        // asymmetrically (e.g. in 9, k 4, s 2: total 3 -> 1 before, 2 after).
        let cases: &[ConvCase] = &[
            ([1, 2, 9, 9], [3, 2, 4, 4], [2, 2], [1, 1]),
            ([2, 3, 8, 8], [2, 3, 2, 2], [2, 2], [1, 1]),
            ([1, 2, 8, 7], [2, 2, 2, 2], [1, 1], [1, 1]),
            ([1, 2, 9, 6], [2, 2, 3, 2], [2, 1], [1, 1]),
            ([1, 1, 10, 11], [2, 1, 3, 3], [1, 1], [2, 3]),
            ([1, 2, 12, 13], [2, 2, 4, 3], [3, 2], [1, 2]),
            ([1, 2, 4, 4], [2, 2, 5, 5], [2, 2], [1, 1]),
            // The shapes of the generator's "alt" variant.
            ([1, 3, 10, 13], [4, 3, 4, 3], [3, 2], [1, 1]),
            ([2, 2, 6, 9], [5, 2, 2, 4], [1, 3], [1, 1]),
            ([1, 3, 15, 15], [3, 3, 6, 6], [4, 4], [1, 1]),
            ([1, 2, 9, 11], [2, 2, 3, 3], [1, 1], [3, 2]),
            ([3, 2, 3, 3], [2, 2, 3, 3], [2, 2], [1, 1]),
            ([1, 5, 16, 16], [3, 5, 3, 3], [2, 2], [1, 1]),
        ];
        for (seed, &(xs, ws, stride, dil)) in cases.iter().enumerate() {
            for padding in [Padding::Same, Padding::Valid] {
                let xv = values(xs.iter().product(), seed as u64 * 3 + 1);
                let wv = values(ws.iter().product(), seed as u64 * 3 + 2);
                let x = Var::from_vec(xv.clone(), &xs, &dev).unwrap();
                let w = Var::from_vec(wv.clone(), &ws, &dev).unwrap();
                let y = match conv2d(&x, &w, stride, dil, padding) {
                    Ok(y) => y,
                    Err(e) => {
                        // Only VALID with a kernel larger than the input may fail.
                        assert_eq!(padding, Padding::Valid, "{e}");
                        continue;
                    }
                };
                let dyv = values(y.elem_count(), seed as u64 * 3 + 3);
                let r = reference(&xv, xs, &wv, ws, stride, dil, padding == Padding::Same, Some(&dyv));
                let what = format!("x {xs:?} w {ws:?} s {stride:?} d {dil:?} {padding}");
                assert_eq!(y.dims(), &[xs[0], ws[0], r.out[0], r.out[1]], "{what}");
                assert_close(&flat(&y), &r.y, 1e-5, &format!("{what} y"));
                let dy = Tensor::from_vec(dyv, y.dims(), &dev).unwrap();
                let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
                assert_close(&flat(grads.get(&x).unwrap()), &r.dx, 1e-5, &format!("{what} dx"));
                assert_close(&flat(grads.get(&w).unwrap()), &r.dw, 1e-5, &format!("{what} dw"));
            }
        }
    }

    #[test]
    fn conv2d_rejects_bad_configs() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((2, 2, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let e = conv2d(&x, &w, [1, 1], [1, 1], Padding::Same).unwrap_err().to_string();
        assert!(e.contains("conv2d") && e.contains("3 channels") && e.contains("[1, 3, 4, 4]"), "{e}");
        let w = Tensor::zeros((2, 3, 5, 5), candle_core::DType::F32, &dev).unwrap();
        let e = conv2d(&x, &w, [1, 1], [1, 1], Padding::Valid).unwrap_err().to_string();
        assert!(e.contains("conv2d") && e.contains("[2, 3, 5, 5]"), "{e}");
        assert!(conv2d(&x, &w, [0, 1], [1, 1], Padding::Same).is_err());
    }

    /// conv2d_transpose is the input-gradient of conv2d for the given output size.
    #[test]
    fn conv2d_transpose_is_the_conv2d_input_gradient() {
        let dev = Device::Cpu;
        // (x [N, C_in, H, W], w [C_in, C_out, kh, kw], output size, stride, padding)
        let cases: &[TransposeCase] = &[
            ([1, 3, 4, 4], [3, 2, 3, 3], [8, 8], [2, 2], Padding::Same),
            ([1, 3, 4, 4], [3, 2, 3, 3], [7, 7], [2, 2], Padding::Same),
            ([1, 3, 4, 4], [3, 2, 3, 3], [10, 10], [2, 2], Padding::Valid),
            ([1, 2, 4, 6], [2, 2, 3, 2], [12, 11], [3, 2], Padding::Same),
            ([1, 2, 3, 5], [2, 3, 5, 3], [8, 10], [3, 2], Padding::Same),
            ([2, 2, 2, 2], [2, 3, 5, 5], [8, 8], [3, 3], Padding::Valid),
            ([1, 2, 4, 4], [2, 2, 4, 4], [14, 16], [4, 4], Padding::Same),
            ([2, 3, 6, 6], [3, 1, 2, 2], [12, 13], [2, 2], Padding::Valid),
            ([1, 2, 5, 5], [2, 3, 4, 4], [10, 10], [2, 2], Padding::Same),
            ([1, 2, 3, 3], [2, 2, 3, 3], [5, 5], [1, 1], Padding::Valid),
        ];
        for (seed, &(xs, ws, out, stride, padding)) in cases.iter().enumerate() {
            let xv = values(xs.iter().product(), 100 + seed as u64);
            let wv = values(ws.iter().product(), 200 + seed as u64);
            let x = Tensor::from_vec(xv, &xs, &dev).unwrap();
            let w = Tensor::from_vec(wv, &ws, &dev).unwrap();
            let got = conv2d_transpose(&x, &w, out, stride, padding).unwrap();
            let z = Var::zeros((xs[0], ws[1], out[0], out[1]), candle_core::DType::F32, &dev).unwrap();
            let y = conv2d(&z, &w, stride, [1, 1], padding).unwrap();
            assert_eq!(y.dims(), x.dims());
            let grads = (&y * &x).unwrap().sum_all().unwrap().backward().unwrap();
            let want = grads.get(&z).unwrap();
            assert_close(&flat(&got), &flat(want), 1e-5, &format!("case {seed}"));
        }
    }

    #[test]
    fn conv2d_transpose_rejects_inconsistent_output_size() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 2, 3, 3), candle_core::DType::F32, &dev).unwrap();
        // SAME, stride 2: sizes 7 and 8 give 4; 10 gives 5.
        assert!(conv2d_transpose(&x, &w, [7, 8], [2, 2], Padding::Same).is_ok());
        let e = conv2d_transpose(&x, &w, [10, 8], [2, 2], Padding::Same).unwrap_err().to_string();
        assert!(
            e.contains("conv2d_transpose") && e.contains("output height 10") && e.contains("gives 5, not 4"),
            "{e}"
        );
        // VALID, stride 2, k 3: 9 and 10 give 4; 11 gives 5; 6 gives 2.
        assert!(conv2d_transpose(&x, &w, [9, 10], [2, 2], Padding::Valid).is_ok());
        let e = conv2d_transpose(&x, &w, [9, 6], [2, 2], Padding::Valid).unwrap_err().to_string();
        assert!(e.contains("output width 6") && e.contains("gives 2, not 4"), "{e}");
        // Output smaller than the kernel under VALID.
        let e = conv2d_transpose(&x, &w, [2, 9], [2, 2], Padding::Valid).unwrap_err().to_string();
        assert!(e.contains("output height 2 is invalid"), "{e}");
    }
}
