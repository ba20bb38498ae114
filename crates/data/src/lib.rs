//! ferroflow's data layer: dataset discovery, survey, prepare, decoding,
//! TF-exact image ops, augmentation and the input pipeline.
//!
//! Not built yet: this crate holds no code until the data milestone (issue 3)
//! lands. It exists so the workspace has its final shape.
