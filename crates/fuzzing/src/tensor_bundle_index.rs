//! A TensorFlow checkpoint's `.index` table: arbitrary bytes through
//! `TensorBundle::from_index`. It may only fail with an error (whose message
//! must format); an index that parses lists entries whose reads fail
//! cleanly (there are no data files).

use std::path::Path;

use tfrecord::TensorBundle;

/// The body of the `tensor_bundle_index` target.
pub fn tensor_bundle_index(data: &[u8]) {
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
}
