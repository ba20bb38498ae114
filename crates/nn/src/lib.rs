//! ferroflow's model layer: layers with TensorFlow's semantics on candle,
//! the variable store, the fast CPU kernels and the model zoo.
//!
//! Not built yet: this crate holds no code until the model milestone (issue 4)
//! lands. It exists so the workspace has its final shape.
