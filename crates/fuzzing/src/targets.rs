//! The list of fuzz targets, by the names `fuzz/Cargo.toml` gives their
//! binaries and `fuzz/seeds/` their seed folders.

/// A fuzz target: its name and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The binary's name in `fuzz/Cargo.toml` (and its seed folder's).
    pub name: &'static str,
    /// The body.
    pub run: fn(&[u8]),
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target { name: "record_reader", run: crate::record_reader },
    Target { name: "example_parse", run: crate::example_parse },
    Target { name: "event_parse", run: crate::event_parse },
    Target { name: "tensor_bundle_index", run: crate::tensor_bundle_index },
    Target { name: "checkpoint_restore", run: crate::checkpoint_restore },
    Target { name: "train_config", run: crate::train_config },
    Target { name: "image_decode", run: crate::image_decode },
];

/// The target called `name`.
///
/// ```
/// assert!(ferroflow_fuzzing::target("record_reader").is_some());
/// assert!(ferroflow_fuzzing::target("nope").is_none());
/// ```
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}
