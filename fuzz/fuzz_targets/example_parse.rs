//! `tf.train.Example`: arbitrary bytes through `Example::from_bytes`, every
//! getter on every key, and a round trip.
//!
//! The body is `ferroflow_fuzzing::example_parse` (crates/fuzzing), which the test
//! suite also runs on this target's seeds and saved crashes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferroflow_fuzzing::example_parse(data));
