//! The layers, one per file.

pub mod activation;
pub mod batch_norm;
pub mod bottleneck;
pub mod bottleneck_v2;
pub mod concat;
pub mod conv2d;
pub mod conv2d_transpose;
pub mod dense;
pub mod dropout;
pub mod flatten;
pub mod global_pool;
pub mod inception_v1;
pub mod pad;
pub mod pool;
pub mod residual;
