//! A safetensors checkpoint restored: arbitrary bytes through
//! `Checkpoint::from_bytes` (the safetensors parse, the checksums, the
//! metadata), `restore_exact` into a small variable store, and a round trip
//! of whatever parsed.
//!
//! The body is `ferroflow_fuzzing::checkpoint_restore` (crates/fuzzing), which the test
//! suite also runs on this target's seeds and saved crashes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferroflow_fuzzing::checkpoint_restore(data));
