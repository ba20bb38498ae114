//! Image decoding: arbitrary bytes through the header reader and both
//! decoders (pixels and JPEG planes), grey, RGB and as stored, at full size
//! and DCT-downscaled. Each may only fail with an error; what decodes has
//! the size and channels its header and the options say.
//!
//! The body is `ferroflow_fuzzing::image_decode` (crates/fuzzing), which the test
//! suite also runs on this target's seeds and saved crashes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferroflow_fuzzing::image_decode(data));
