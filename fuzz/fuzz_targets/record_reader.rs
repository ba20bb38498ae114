//! TFRecord framing: arbitrary bytes through `RecordReader`, strict and
//! lenient, and every record that parses as an Example through a round trip.
//!
//! The body is `ferroflow_fuzzing::record_reader` (crates/fuzzing), which the test
//! suite also runs on this target's seeds and saved crashes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferroflow_fuzzing::record_reader(data));
