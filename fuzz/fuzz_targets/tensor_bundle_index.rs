//! A TensorFlow checkpoint's `.index` table: arbitrary bytes through
//! `TensorBundle::from_index`. It may only fail with an error (whose message
//! must format); an index that parses lists entries whose reads fail
//! cleanly (there are no data files).
//!
//! The body is `ferroflow_fuzzing::tensor_bundle_index` (crates/fuzzing), which the test
//! suite also runs on this target's seeds and saved crashes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferroflow_fuzzing::tensor_bundle_index(data));
