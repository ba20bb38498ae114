//! ferroflow's training layer: losses, optimizers, learning-rate schedules,
//! the train/eval loop, metrics, checkpoints and summaries.
//!
//! Not built yet: this crate holds no code until the training milestone
//! (issue 6) lands. It exists so the workspace has its final shape.
