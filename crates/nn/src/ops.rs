//! TensorFlow-exact operations as functions of candle tensors, each with
//! autograd through candle's graph.
//!
//! Activations are NCHW and conv kernels OIHW (candle's layouts); `conv2d_transpose`
//! kernels use candle's `[C_in, C_out, kh, kw]`. Every op documents its shapes and cites
//! the TensorFlow source it follows; configurations TF rejects are [`crate::NnError`]s
//! naming the op and the shapes.

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod dense;
pub mod loss;
pub mod padding;
pub mod pool;

pub use activation::{add_relu, leaky_relu, log_softmax, relu, relu6, sigmoid, softmax, tanh};
pub use batch_norm::{
    batch_norm_count, batch_norm_eval, batch_norm_eval_relu, batch_norm_relu_train, batch_norm_train,
    batch_norm_train_across, moving_average_update, unbiased_variance,
};
pub use conv::{
    ConvBnBlock, MaxPoolWindow, conv2d, conv2d_batch_norm_chain_train, conv2d_batch_norm_relu_max_pool_train,
    conv2d_batch_norm_residual_train, conv2d_batch_norm_train, conv2d_transpose,
};
pub use dense::{dense, flatten};
pub use loss::{mean_squared_error, smoothed_one_hot, softmax_cross_entropy, sparse_softmax_cross_entropy};
pub use padding::{Padding, Window, effective_kernel, output_size, same_padding, window, zero_pad};
pub use pool::{avg_pool2d, max_pool2d};
