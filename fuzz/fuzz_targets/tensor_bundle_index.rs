//! A TensorFlow checkpoint's `.index` table: arbitrary bytes through
//! `TensorBundle::from_index`. It may only fail with an error (whose message
//! must format); an index that parses lists entries whose reads fail
//! cleanly (there are no data files).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tfrecord::TensorBundle;

fuzz_target!(|data: &[u8]| {
    match TensorBundle::from_index(Path::new("/nonexistent/fuzz"), data) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(bundle) => {
            for (name, entry) in bundle.entries() {
                let _ = entry.dtype_name();
                assert!(bundle.read(name).is_err(), "read {name} without a data file");
            }
        }
    }
});
