//! `ferroflow records` on the bundled TF-written files and on damaged ones.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value as Json;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

fn ferroflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow")).args(args).output().expect("run ferroflow")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn expected() -> Json {
    serde_json::from_str(&std::fs::read_to_string(testdata("tf-files/tfrecord/expected.json")).unwrap()).unwrap()
}

#[test]
fn json_lines_match_expected_for_slim_records_plain_and_gzip() {
    let want = expected();
    for name in ["slim_style.tfrecord", "slim_style.tfrecord.gz"] {
        let path = testdata(&format!("tf-files/tfrecord/{name}"));
        let out = ferroflow(&["records", path.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Json> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let slim = want["slim_style"].as_array().unwrap();
        assert_eq!(lines.len(), slim.len());
        let mut offset = 0u64;
        for (i, (line, w)) in lines.iter().zip(slim).enumerate() {
            assert_eq!(line["index"], i);
            assert_eq!(line["offset"], offset);
            let f = &line["features"];
            assert_eq!(f["image/class/label"], serde_json::json!({"kind": "int64", "values": [w["label"]]}));
            assert_eq!(f["image/height"]["values"][0], w["height"]);
            assert_eq!(f["image/width"]["values"][0], w["width"]);
            assert_eq!(f["image/format"]["values"][0]["utf8"], w["format"]);
            let enc = &f["image/encoded"]["values"][0];
            assert_eq!(f["image/encoded"]["kind"], "bytes");
            assert_eq!(enc["len"], w["encoded_len"]);
            assert_eq!(enc["sha256"], w["encoded_sha256"]);
            assert!(enc.get("utf8").is_none(), "binary JPEG bytes are not shown as text");
            // The next record starts after this one's header (12), data and CRC (4).
            if let Some(next) = lines.get(i + 1) {
                let next = next["offset"].as_u64().unwrap();
                assert!(next > offset + 16 + enc["len"].as_u64().unwrap(), "{name}: offsets {offset} -> {next}");
                offset = next;
            }
        }
    }
}

#[test]
fn json_lines_carry_every_mixed_value() {
    let want = expected();
    let path = testdata("tf-files/tfrecord/mixed_features.tfrecord");
    let out = ferroflow(&["records", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let lines: Vec<Json> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (line, w) in lines.iter().zip(want["mixed_features"].as_array().unwrap()) {
        let f = &line["features"];
        let floats: Vec<f32> =
            f["floats"]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let want_floats: Vec<f32> =
            w["floats"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(floats, want_floats);
        assert_eq!(f["ints"]["values"], w["ints"]);
        assert_eq!(f["text"]["values"][0]["utf8"], w["text"]);
        let bytes: Vec<usize> =
            f["bytes"]["values"].as_array().unwrap().iter().map(|v| v["len"].as_u64().unwrap() as usize).collect();
        let want_bytes: Vec<usize> =
            w["bytes_hex"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().len() / 2).collect();
        assert_eq!(bytes, want_bytes);
    }
}

#[test]
fn text_output_and_limit() {
    let path = testdata("tf-files/tfrecord/slim_style.tfrecord");
    let out = ferroflow(&["records", path.to_str().unwrap(), "--limit", "1"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("record 0 (byte offset 0): 5 feature(s)\n"), "{text}");
    assert!(text.contains("image/format       bytes[1]   \"jpeg\""), "{text}");
    assert!(text.contains("<44054 bytes sha256:a393fd467af309b1>"), "{text}");
    assert!(!text.contains("record 1"));
}

#[test]
fn count_verifies_and_counts() {
    let path = testdata("tf-files/tfrecord/raw_style.tfrecord");
    let out = ferroflow(&["records", path.to_str().unwrap(), "--count", "--json"]);
    assert!(out.status.success());
    let n = expected()["raw_style"].as_array().unwrap().len();
    let got: Json = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(got["records"], n);
}

#[test]
fn event_files_print_their_events() {
    let dir = testdata("tf-files/events/run");
    let file = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let out = ferroflow(&["records", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let events: Vec<Json> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["file_version"], "brain.Event:2");
    let loss: Vec<f64> = events
        .iter()
        .filter_map(|e| e["summary"].as_array())
        .flatten()
        .filter(|v| v["tag"] == "loss")
        .map(|v| v["value"].as_f64().unwrap())
        .collect();
    let want: Vec<f64> =
        serde_json::from_str::<Json>(&std::fs::read_to_string(testdata("tf-files/events/expected.json")).unwrap())
            .unwrap()["scalars"]["loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap() as f32 as f64)
            .collect();
    assert_eq!(loss, want);
    let text = events.iter().filter_map(|e| e["summary"].as_array()).flatten().find(|v| v["tag"] == "config").unwrap();
    assert_eq!(text["value"], "lr = 0.1");
}

#[test]
fn corrupt_file_exits_1_naming_the_offset() {
    let mut bytes = std::fs::read(testdata("tf-files/tfrecord/mixed_features.tfrecord")).unwrap();
    bytes[160] ^= 0x10; // inside record 1 (offset 140)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tfrecord");
    std::fs::write(&path, &bytes).unwrap();
    let out = ferroflow(&["records", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear message: {err}");
    assert!(err.contains("bad.tfrecord: record 1 at byte offset 140: corrupt data"), "{err}");
    // The good record before it was printed.
    assert_eq!(stdout(&out).lines().count(), 1);

    let out = ferroflow(&["records", path.to_str().unwrap(), "--json", "--skip-corrupt"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).lines().count(), 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 1 corrupt record"));
}

#[test]
fn truncated_file_is_reported() {
    let bytes = std::fs::read(testdata("tf-files/tfrecord/raw_style.tfrecord")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.tfrecord");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let out = ferroflow(&["records", path.to_str().unwrap(), "--count"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut.tfrecord: truncated: record"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_missing_files_exit_1() {
    assert_eq!(ferroflow(&["records"]).status.code(), Some(2));
    assert_eq!(ferroflow(&["records", "x", "--limit", "many"]).status.code(), Some(2));
    let out = ferroflow(&["records", "/no/such/file.tfrecord"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: /no/such/file.tfrecord: cannot open: No such file or directory (os error 2)"
    );
}

#[test]
fn an_event_file_with_a_bad_crc_is_one_error_naming_the_record() {
    let src = testdata("tf-files/events/run/events.out.tfevents.1795667623.vm.10976.0.v2");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.1.damaged");
    // The first record's length CRC, then a byte inside its data.
    for (at, what) in [(9usize, "corrupt length"), (16, "corrupt data")] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x04;
        std::fs::write(&path, &bad).unwrap();
        let out = ferroflow(&["records", path.to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(1), "byte {at}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one clear message: {err}");
        assert!(
            err.contains("events.out.tfevents.1.damaged: record 0 at byte offset 0") && err.contains(what),
            "{err}"
        );
    }
}
