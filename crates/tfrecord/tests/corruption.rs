//! Damaged files are detected: every single-byte change of a record file is
//! an error (never a panic, never a silently wrong value), truncation is
//! reported as such, and `skip_corrupt` skips and counts.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tfrecord::{Compression, FileRecordReader, ReaderOptions, RecordError, RecordReader, RecordWriter};

fn tf_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tf-files/tfrecord").join(name);
    std::fs::read(path).unwrap()
}

fn read_all(bytes: &[u8], skip: bool) -> Result<Vec<Vec<u8>>, RecordError> {
    RecordReader::new(bytes, "test.tfrecord", false, skip).map(|r| r.map(|r| r.data)).collect()
}

/// Record start offsets of a valid file.
fn record_offsets(bytes: &[u8]) -> Vec<u64> {
    RecordReader::new(bytes, "x", false, false).map(|r| r.unwrap().info.offset.bytes).collect()
}

#[test]
fn every_single_byte_flip_is_detected() {
    // TF-written, 754 bytes, 5 records.
    let original = tf_file("mixed_features.tfrecord");
    let offsets = record_offsets(&original);
    assert_eq!(offsets.len(), 5);
    for pos in 0..original.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = original.clone();
            damaged[pos] ^= flip;
            let err = read_all(&damaged, false).expect_err(&format!("flip {flip:#x} at byte {pos} went unnoticed"));
            // The error names the record that holds the byte.
            let record_start = *offsets.iter().rfind(|&&o| o <= pos as u64).unwrap();
            let msg = err.to_string();
            assert!(msg.contains(&format!("byte offset {record_start}")), "flip at {pos}: {msg}");
            assert!(msg.starts_with("test.tfrecord: "), "{msg}");
        }
    }
}

#[test]
fn skip_corrupt_keeps_the_good_records() {
    let original = tf_file("mixed_features.tfrecord");
    let good = read_all(&original, false).unwrap();
    let offsets = record_offsets(&original);
    // Damage record 2's data, then record 3's length header.
    let mut damaged = original.clone();
    damaged[offsets[2] as usize + 20] ^= 0x55;
    damaged[offsets[3] as usize + 2] ^= 0x55;
    let mut reader = RecordReader::new(&damaged[..], "x", false, true);
    let got: Vec<Vec<u8>> = reader.by_ref().map(|r| r.unwrap().data).collect();
    // Record 3's header is unusable, so the scan resynchronises on record 4.
    assert_eq!(got, vec![good[0].clone(), good[1].clone(), good[4].clone()]);
    assert_eq!(reader.skipped().corrupt, 2);
    assert_eq!(reader.skipped().truncated_at, None);
}

#[test]
fn truncation_is_reported_at_every_length() {
    let original = tf_file("mixed_features.tfrecord");
    let offsets = record_offsets(&original);
    for len in 0..original.len() {
        let cut = &original[..len];
        match read_all(cut, false) {
            Ok(records) => {
                // Only a cut exactly between records is clean.
                assert!(len == 0 || offsets.contains(&(len as u64)), "cut at {len} not reported");
                assert_eq!(records.len(), offsets.iter().filter(|&&o| o < len as u64).count());
            }
            Err(RecordError::Truncated { offset, got, needed, .. }) => {
                assert!(offsets.contains(&offset.bytes));
                assert!(got < needed);
            }
            Err(other) => panic!("cut at {len}: expected a truncation error, got {other}"),
        }
        // With skipping, the complete records come back and the tail is noted.
        let ends: Vec<u64> = offsets[1..].iter().copied().chain([original.len() as u64]).collect();
        let mut reader = RecordReader::new(cut, "x", false, true);
        let n = reader.by_ref().filter(|r| r.is_ok()).count();
        assert_eq!(n, ends.iter().filter(|&&e| e <= len as u64).count(), "cut at {len}");
        let at_boundary = len == 0 || offsets.contains(&(len as u64));
        assert_eq!(reader.skipped().truncated_at.is_some(), !at_boundary, "cut at {len}");
    }
}

#[test]
fn truncated_message_names_the_file_and_offset() {
    let original = tf_file("mixed_features.tfrecord");
    let err = read_all(&original[..original.len() - 3], false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("truncated"), "{msg}");
    assert!(msg.contains("data CRC"), "{msg}");
}

fn gzip_of_mixed() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.tfrecord.gz");
    let mut w = RecordWriter::create(&path, Compression::Gzip).unwrap();
    for r in read_all(&tf_file("mixed_features.tfrecord"), false).unwrap() {
        w.write(&r).unwrap();
    }
    w.close().unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn gzip_damage_is_an_error_or_harmless() {
    let original = gzip_of_mixed();
    let good = read_all(&tf_file("mixed_features.tfrecord"), false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.tfrecord.gz");
    for pos in 0..original.len() {
        let mut damaged = original.clone();
        damaged[pos] ^= 0x5a;
        std::fs::write(&path, &damaged).unwrap();
        let options = ReaderOptions { compression: Some(Compression::Gzip), skip_corrupt: false };
        let result: Result<Vec<Vec<u8>>, RecordError> =
            FileRecordReader::open(&path, options).unwrap().map(|r| r.map(|r| r.data)).collect();
        // Flips in the gzip header's mtime/OS fields change nothing; every
        // other flip must be an error, never different data.
        if let Ok(records) = result {
            assert_eq!(records, good, "flip at {pos} produced different records");
        }
    }
}

#[test]
fn gzip_truncation_is_an_error() {
    let original = gzip_of_mixed();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tfrecord.gz");
    for len in [11, original.len() / 2, original.len() - 5] {
        std::fs::write(&path, &original[..len]).unwrap();
        let result: Result<Vec<_>, _> = FileRecordReader::open(&path, ReaderOptions::default()).unwrap().collect();
        let err = result.expect_err(&format!("gzip cut at {len} unnoticed"));
        assert!(err.to_string().contains("t.tfrecord.gz"), "{err}");
    }
}

#[test]
fn huge_declared_length_does_not_allocate_it() {
    // A valid header claiming 2^60 bytes, followed by 10 bytes.
    let length = (1u64 << 60).to_le_bytes();
    let mut bytes = length.to_vec();
    bytes.extend_from_slice(&tfrecord::masked_crc32c(&length).to_le_bytes());
    bytes.extend_from_slice(&[0u8; 10]);
    match read_all(&bytes, false) {
        Err(RecordError::Truncated { part: "data", got: 10, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_a_tfrecord_file() {
    let err = read_all(b"this is plain text, definitely not a TFRecord", false).unwrap_err();
    assert!(err.to_string().contains("corrupt length header"), "{err}");
    assert!(err.to_string().contains("byte offset 0"), "{err}");
}

#[test]
fn a_short_file_claiming_a_huge_record_allocates_little() {
    // Found by fuzzing (crates/tfrecord/README.md): 12 bytes claiming 2^40.
    let length = (1u64 << 40).to_le_bytes();
    let mut bytes = length.to_vec();
    bytes.extend_from_slice(&tfrecord::masked_crc32c(&length).to_le_bytes());
    let mut reader = RecordReader::new(&bytes[..], "x", false, false);
    let mut buf = Vec::new();
    assert!(matches!(reader.read_next(&mut buf), Err(RecordError::Truncated { got: 0, .. })));
    assert!(buf.capacity() <= 64 << 10, "allocated {} bytes", buf.capacity());
}
