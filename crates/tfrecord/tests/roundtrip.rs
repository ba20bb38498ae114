//! Random Examples round-trip through the writer and reader, plain and
//! compressed; serialisation is deterministic.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tfrecord::{Compression, Example, Feature, FileRecordReader, ReaderOptions, RecordWriter};

fn feature() -> impl Strategy<Value = Feature> {
    prop_oneof![
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4).prop_map(Feature::from_bytes),
        // NaN != NaN would break equality; finite and infinite floats are fine.
        prop::collection::vec(prop::num::f32::NORMAL | prop::num::f32::INFINITE | prop::num::f32::ZERO, 0..8)
            .prop_map(Feature::from_floats),
        prop::collection::vec(any::<i64>(), 0..8).prop_map(Feature::from_int64s),
    ]
}

fn example() -> impl Strategy<Value = Example> {
    prop::collection::btree_map("[a-z/_]{1,12}", feature(), 0..6).prop_map(|features| {
        let mut ex = Example::default();
        for (k, f) in features {
            ex.insert(k, f);
        }
        ex
    })
}

fn round_trip(examples: &[Example], compression: Compression) -> Vec<Example> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.tfrecord");
    let mut w = RecordWriter::create(&path, compression).unwrap();
    for ex in examples {
        w.write(&ex.to_bytes()).unwrap();
    }
    let stats = w.close().unwrap();
    assert_eq!(stats.records, examples.len() as u64);
    // Detection must find the compression on its own.
    FileRecordReader::open(&path, ReaderOptions::default())
        .unwrap()
        .map(|r| Example::from_bytes(&r.unwrap().data).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plain(examples in prop::collection::vec(example(), 0..12)) {
        prop_assert_eq!(round_trip(&examples, Compression::None), examples);
    }

    #[test]
    fn gzip(examples in prop::collection::vec(example(), 0..12)) {
        prop_assert_eq!(round_trip(&examples, Compression::Gzip), examples);
    }

    #[test]
    fn zlib(examples in prop::collection::vec(example(), 1..12)) {
        prop_assert_eq!(round_trip(&examples, Compression::Zlib), examples);
    }

    #[test]
    fn equal_examples_serialise_identically(entries in prop::collection::vec(("[a-z]{1,6}", feature()), 0..8)) {
        // Insert the same features in two different orders.
        let mut forward = Example::default();
        let mut backward = Example::default();
        let mut dedup = std::collections::BTreeMap::new();
        for (k, f) in entries {
            dedup.insert(k, f);
        }
        for (k, f) in &dedup {
            forward.insert(k.clone(), f.clone());
        }
        for (k, f) in dedup.iter().rev() {
            backward.insert(k.clone(), f.clone());
        }
        prop_assert_eq!(forward.to_bytes(), backward.to_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Example::from_bytes(&bytes);
        let reader = tfrecord::RecordReader::new(&bytes[..], "<fuzz>", false, true);
        for record in reader {
            let _ = record;
        }
    }
}

#[test]
fn large_record_round_trips() {
    // Bigger than the reader's 1 MiB buffer.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let ex = Example::builder().bytes("blob", data.clone()).build();
    let back = round_trip(std::slice::from_ref(&ex), Compression::None);
    assert_eq!(back[0].bytes("blob").unwrap(), data.as_slice());
}
