//! Files written by TensorFlow 2.21 itself (testdata/tf-files, from
//! shared/tf-files) are read and match their expected.json exactly.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tfrecord::proto::event::What;
use tfrecord::proto::graph::GraphDef;
use tfrecord::proto::summary::ValueKind;
use tfrecord::{Compression, EventReader, Example, FileRecordReader, ReaderOptions};

fn tf_files() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tf-files")
}

fn expected(rel: &str) -> Json {
    let text = std::fs::read_to_string(tf_files().join(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_examples(name: &str, compression: Option<Compression>) -> Vec<Example> {
    let options = ReaderOptions { compression, skip_corrupt: false };
    FileRecordReader::open(tf_files().join("tfrecord").join(name), options)
        .unwrap()
        .map(|r| Example::from_bytes(&r.unwrap().data).unwrap())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn check_slim(examples: &[Example]) {
    let want = &expected("tfrecord/expected.json")["slim_style"];
    let want = want.as_array().unwrap();
    assert_eq!(examples.len(), want.len());
    assert_eq!(examples.len(), 12);
    for (ex, w) in examples.iter().zip(want) {
        assert_eq!(ex.int64("image/class/label").unwrap(), w["label"].as_i64().unwrap());
        assert_eq!(ex.int64("image/height").unwrap(), w["height"].as_i64().unwrap());
        assert_eq!(ex.int64("image/width").unwrap(), w["width"].as_i64().unwrap());
        assert_eq!(ex.str("image/format").unwrap(), w["format"].as_str().unwrap());
        let encoded = ex.bytes("image/encoded").unwrap();
        assert_eq!(encoded.len() as u64, w["encoded_len"].as_u64().unwrap());
        assert_eq!(sha256_hex(encoded), w["encoded_sha256"].as_str().unwrap());
    }
}

#[test]
fn slim_style_plain() {
    check_slim(&read_examples("slim_style.tfrecord", None));
    check_slim(&read_examples("slim_style.tfrecord", Some(Compression::None)));
}

#[test]
fn slim_style_gzip_detected_and_explicit() {
    check_slim(&read_examples("slim_style.tfrecord.gz", None));
    check_slim(&read_examples("slim_style.tfrecord.gz", Some(Compression::Gzip)));
}

#[test]
fn raw_style() {
    let examples = read_examples("raw_style.tfrecord", None);
    let want = expected("tfrecord/expected.json")["raw_style"].as_array().unwrap().clone();
    assert_eq!(examples.len(), want.len());
    assert!(!examples.is_empty());
    for (ex, w) in examples.iter().zip(&want) {
        assert_eq!(ex.int64("label").unwrap(), w["label"].as_i64().unwrap());
        let raw = ex.bytes("img_raw").unwrap();
        let shape: usize = w["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product();
        assert_eq!(raw.len(), shape);
        assert_eq!(sha256_hex(raw), w["img_raw_sha256"].as_str().unwrap());
    }
}

#[test]
fn mixed_features_every_value() {
    let examples = read_examples("mixed_features.tfrecord", None);
    let want = expected("tfrecord/expected.json")["mixed_features"].as_array().unwrap().clone();
    assert_eq!(examples.len(), 5);
    for (ex, w) in examples.iter().zip(&want) {
        let floats: Vec<f32> = w["floats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(ex.floats("floats").unwrap(), floats.as_slice());
        let ints: Vec<i64> = w["ints"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(ex.int64s("ints").unwrap(), ints.as_slice());
        let bytes: Vec<String> = ex.bytes_list("bytes").unwrap().iter().map(|b| hex(b)).collect();
        let want_bytes: Vec<&str> = w["bytes_hex"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(bytes, want_bytes);
        assert_eq!(ex.str("text").unwrap(), w["text"].as_str().unwrap());
        let target: Vec<f32> =
            w["regression/target"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(ex.floats("regression/target").unwrap(), target.as_slice());
        // Wrong kinds are typed errors, not panics or zeros.
        assert!(ex.floats("ints").is_err());
        assert!(ex.int64("missing").is_err());
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn reserialising_tf_records_sorts_keys_and_loses_nothing() {
    // Python's protobuf writes map entries in its own order; ours are sorted.
    // Re-encoding must keep every byte of content (same length, same message)
    // with the keys in order.
    let path = tf_files().join("tfrecord/mixed_features.tfrecord");
    for record in FileRecordReader::open(path, ReaderOptions::default()).unwrap() {
        let record = record.unwrap();
        let ex = Example::from_bytes(&record.data).unwrap();
        let bytes = ex.to_bytes();
        assert_eq!(bytes.len(), record.data.len(), "record {}", record.info.index);
        assert_eq!(Example::from_bytes(&bytes).unwrap(), ex);
        let keys: Vec<&str> = ex.features().map(|(k, _)| k).collect();
        assert_eq!(keys, ["bytes", "floats", "ints", "regression/target", "text"]);
    }
}

#[test]
fn tf_event_file_tags_and_values() {
    let want = expected("events/expected.json");
    let dir = tf_files().join("events/run");
    let path = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    assert!(tfrecord::is_event_file_name(&path));
    let events: Vec<_> = EventReader::open(&path).unwrap().map(|e| e.unwrap().1).collect();
    assert!(matches!(&events[0].what, Some(What::FileVersion(v)) if v == "brain.Event:2"));

    let mut scalars: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
    let (mut histogram, mut image, mut text, mut graph) = (false, false, false, false);
    for event in &events {
        let Some(What::Summary(summary)) = &event.what else { continue };
        for v in &summary.value {
            match v.plugin_name() {
                Some("scalars") => scalars.entry(v.tag.clone()).or_default().push((event.step, v.scalar().unwrap())),
                Some("histograms") => {
                    // TF2 writes [k, 3] (left, right, count) buckets.
                    let Some(ValueKind::Tensor(t)) = &v.value else { panic!("histogram is a tensor") };
                    let h = &want["histograms"][v.tag.as_str()];
                    assert_eq!(event.step, h["step"].as_i64().unwrap());
                    let values = t.to_f64_vec().unwrap();
                    let n: f64 = values.chunks(3).map(|c| c[2]).sum();
                    assert_eq!(n, h["n"].as_f64().unwrap());
                    assert_eq!(values[0], h["min"].as_f64().unwrap());
                    assert_eq!(values[values.len() - 2], h["max"].as_f64().unwrap());
                    histogram = true;
                }
                Some("images") => {
                    let Some(ValueKind::Tensor(t)) = &v.value else { panic!("images are a tensor") };
                    let im = &want["images"][v.tag.as_str()];
                    assert_eq!(event.step, im["step"].as_i64().unwrap());
                    assert_eq!(t.string_val[0], im["width"].to_string().into_bytes());
                    assert_eq!(t.string_val[1], im["height"].to_string().into_bytes());
                    assert_eq!(t.string_val.len() - 2, im["count"].as_u64().unwrap() as usize);
                    for png in &t.string_val[2..] {
                        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
                    }
                    image = true;
                }
                Some("text") => {
                    assert_eq!(v.text().unwrap(), want["text"][v.tag.as_str()].as_str().unwrap());
                    text = true;
                }
                Some("graph_run_metadata_graph") => graph = true,
                other => panic!("unexpected plugin {other:?} for tag {}", v.tag),
            }
        }
        if let Some(What::GraphDef(bytes)) = &event.what {
            let _: GraphDef = prost::Message::decode(bytes.as_slice()).unwrap();
            graph = true;
        }
    }
    assert!(histogram && image && text && graph, "{histogram} {image} {text} {graph}");
    for (tag, series) in want["scalars"].as_object().unwrap() {
        let got = &scalars[tag];
        let series = series.as_array().unwrap();
        assert_eq!(got.len(), series.len());
        for ((step, value), w) in got.iter().zip(series) {
            assert_eq!(*step, w[0].as_i64().unwrap());
            // Written as float32.
            assert_eq!(*value, f64::from(w[1].as_f64().unwrap() as f32));
        }
    }
}
