//! TFRecord framing: arbitrary bytes through `RecordReader`, strict and
//! lenient, and every record that parses as an Example through a round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tfrecord::{Example, Record, RecordReader};

fuzz_target!(|data: &[u8]| {
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
});

fn assert_round_trip(example: &Example) {
    let bytes = example.to_bytes();
    let again = Example::from_bytes(&bytes).expect("a re-encoded Example parses");
    // A NaN float makes `==` false even for identical values; the bytes keep
    // every float's bit pattern, so compare those then.
    assert!(again == *example || again.to_bytes() == bytes, "round trip changed the Example");
}
