//! ferroflow's own CPU compute kernels, as candle custom ops with their own backward.
//!
//! - [`batch_norm`]: fused training-mode batch normalisation (forward, `x`/`gamma`/`beta`
//!   gradients), optionally with a ReLU after it, f32 on CPU;
//! - [`batch_norm_eval`](mod@batch_norm_eval): inference-mode batch normalisation (and an
//!   optional ReLU) in one pass, for inputs outside autograd, f32 on CPU;
//! - [`bias`]: per-channel NCHW bias addition with a plane-wise gradient;
//! - [`conv2d`](mod@conv2d): im2col + gemm conv2d (forward, input and filter gradients), f32 on CPU;
//! - `direct`: the same passes as direct AVX-512 convolutions, no im2col, where the CPU
//!   and the shape allow (the conv ops pick it per pass);
//! - `lane_sums`: batch norm's f64 reductions in a fixed order (AVX-512 kernel and reference);
//! - [`conv_bn`]: conv2d → training batch norm → optional ReLU as one op (one autograd
//!   node, statistics taken while each image's output is in cache), f32 on CPU;
//! - [`conv_bn_chain`]: several of those blocks in a row (each with an optional max-pool)
//!   as one op, so the activations between them never become autograd tensors;
//! - [`pool`]: max- and average-pooling (forward and input gradient), f32 on CPU;
//! - [`relu`](mod@relu): ReLU with TF's gradient, masked by the output, f32 on CPU;
//! - [`reference`](mod@reference): the slow, obvious loops the fast kernels are tested against;
//! - [`choice`]: fast kernels or the generic path (candle's tensor ops, what CUDA runs) for
//!   CPU tensors (`FERROFLOW_KERNELS=generic`, [`with_kernels`]).

pub mod batch_norm;
pub mod batch_norm_eval;
pub mod bias;
mod buffers;
pub mod choice;
pub mod conv2d;
pub mod conv_bn;
pub mod conv_bn_chain;
mod direct;
mod lane_sums;
mod lowering;
pub mod pool;
pub mod reference;
pub mod relu;
mod simd;
mod winograd;

pub use batch_norm::{
    batch_norm_relu_train, batch_norm_relu_train_backward, batch_norm_train, batch_norm_train_across,
    batch_norm_train_backward,
};
pub use bias::bias_add_nchw;
pub use choice::{KERNELS_ENV, Kernels, count_fast_run, fast_kernel_runs, fast_kernels_on, with_kernels};
pub use conv_bn::{conv2d_batch_norm_relu_max_pool_train, conv2d_batch_norm_train};
pub use conv_bn_chain::{ChainLink, conv2d_batch_norm_chain_train, conv2d_batch_norm_residual_train, supports_chain};
pub use conv2d::{
    Conv2dParams, conv2d, conv2d_backward_filter, conv2d_backward_input, direct_passes, supports, winograd_passes,
};
pub use pool::{Pool2dParams, avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward};
pub use relu::{add_relu, relu, relu_backward};

use candle_core::{CpuStorage, Layout, bail};

/// The f32 data of a contiguous CPU storage view, for the kernels' `cpu_fwd`;
/// `op` and `what` name the kernel and the operand in the error.
pub(crate) fn f32_contiguous<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else { bail!("ferroflow {op} kernel: {what} must be f32") };
    let Some((start, end)) = l.contiguous_offsets() else { bail!("ferroflow {op} kernel: {what} must be contiguous") };
    Ok(&data[start..end])
}
