//! TFRecord framing: arbitrary bytes through `RecordReader`, strict and
//! lenient, and every record that parses as an Example through a round trip.

use tfrecord::{Example, Record, RecordReader};

use crate::example_parse::assert_round_trip;

/// The body of the `record_reader` target.
pub fn record_reader(data: &[u8]) {
    let strict: Vec<Record> = RecordReader::new(data, "fuzz", false, false).map_while(Result::ok).collect();
    let mut lenient = Vec::new();
    for record in RecordReader::new(data, "fuzz", false, true) {
        // Skipping mode reports corruption through `skipped()`; reading from
        // memory cannot fail, so it must never yield an error.
        lenient.push(record.expect("skip_corrupt reader yielded an error"));
    }
    // Both modes agree up to the first corrupt record.
    assert!(lenient.starts_with(&strict), "strict records are not a prefix of the lenient ones");
    for record in &lenient {
        if let Ok(example) = Example::from_bytes(&record.data) {
            assert_round_trip(&example);
        }
    }
}
