//! The training config: arbitrary text through `TrainConfig::resolve` as a
//! TOML file and, line by line, as `--set key=value` overrides; a config that
//! resolves writes TOML that resolves to the same config.
//!
//! The body is `ferroflow_fuzzing::train_config` (crates/fuzzing), which the test
//! suite also runs on this target's seeds and saved crashes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferroflow_fuzzing::train_config(data));
