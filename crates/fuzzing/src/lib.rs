//! The bodies of ferroflow's fuzz targets. Each takes arbitrary bytes and
//! panics only on a real bug (a parser that panics, a round trip that
//! changes a value); errors are the expected outcome for most inputs.
//!
//! `fuzz/fuzz_targets/*.rs` wrap them for libFuzzer (`scripts/fuzz.sh`), and
//! `tests/replay.rs` runs every seed and every saved crash under
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` through them in
//! the ordinary test suite, so a crash found once stays fixed.

mod checkpoint_restore;
mod event_parse;
mod example_parse;
mod image_decode;
mod record_reader;
mod targets;
mod tensor_bundle_index;
mod train_config;

pub use checkpoint_restore::checkpoint_restore;
pub use event_parse::event_parse;
pub use example_parse::example_parse;
pub use image_decode::image_decode;
pub use record_reader::record_reader;
pub use targets::{TARGETS, Target, target};
pub use tensor_bundle_index::tensor_bundle_index;
pub use train_config::train_config;
