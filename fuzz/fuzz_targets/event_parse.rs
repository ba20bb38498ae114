//! TensorBoard events: arbitrary bytes through `Event`, an embedded
//! `GraphDef`, and the accessors of every summary value.
//!
//! The body is `ferroflow_fuzzing::event_parse` (crates/fuzzing), which the test
//! suite also runs on this target's seeds and saved crashes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferroflow_fuzzing::event_parse(data));
