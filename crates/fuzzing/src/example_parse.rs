//! `tf.train.Example`: arbitrary bytes through `Example::from_bytes`, every
//! getter on every key, and a round trip.

use tfrecord::{Example, FeatureKind};

/// The body of the `example_parse` target.
pub fn example_parse(data: &[u8]) {
    let Ok(example) = Example::from_bytes(data) else { return };
    for (key, feature) in example.features() {
        let lists = [
            example.bytes_list(key).map(<[_]>::len),
            example.floats(key).map(<[_]>::len),
            example.int64s(key).map(<[_]>::len),
        ];
        // An unset feature is an empty list of every kind; a set one is a list
        // of exactly one kind, as long as the feature says.
        let ok: Vec<usize> = lists.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        match feature.kind() {
            FeatureKind::Unset => assert_eq!(ok, [0, 0, 0]),
            _ => assert_eq!(ok, [feature.len()]),
        }
        // The single-value getters and every error message must not panic.
        let _ = example.bytes(key).map_err(|e| e.to_string());
        let _ = example.str(key).map_err(|e| e.to_string());
        let _ = example.float(key).map_err(|e| e.to_string());
        let _ = example.int64(key).map_err(|e| e.to_string());
        for list in lists {
            let _ = list.map_err(|e| e.to_string());
        }
    }
    assert_round_trip(&example);
}

/// Re-encodes `example` and checks that it parses back the same.
pub(crate) fn assert_round_trip(example: &Example) {
    let bytes = example.to_bytes();
    let again = Example::from_bytes(&bytes).expect("a re-encoded Example parses");
    // A NaN float makes `==` false even for identical values; the bytes keep
    // every float's bit pattern, so compare those then.
    assert!(again == *example || again.to_bytes() == bytes, "round trip changed the Example");
}
