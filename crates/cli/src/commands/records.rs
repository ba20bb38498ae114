//! `ferroflow records FILE`: print the tf.train.Examples of a TFRecord file,
//! or the events of a TensorBoard event file.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};
use tfrecord::proto::event::{Event, What};
use tfrecord::proto::graph::GraphDef;
use tfrecord::proto::summary::ValueKind;
use tfrecord::{Compression, EventReader, Example, Feature, FileRecordReader, Kind, ReaderOptions, RecordInfo};

/// Values shown per feature in the text output (`--json` prints all).
const SHOWN_VALUES: usize = 8;
/// Bytes values of at most this many bytes are shown as text when UTF-8.
const MAX_TEXT: usize = 200;

/// Compression of the input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Detect from the first bytes.
    Auto,
    /// Plain TFRecord framing.
    None,
    /// GZIP (TFRecordOptions compression_type="GZIP").
    Gzip,
    /// ZLIB (TFRecordOptions compression_type="ZLIB").
    Zlib,
}

/// Arguments of `ferroflow records`.
#[derive(Debug, Args)]
pub struct RecordsArgs {
    /// A .tfrecord file (plain, GZIP or ZLIB) or a TensorBoard events.out.tfevents.* file.
    pub file: PathBuf,
    /// Print at most this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// One JSON object per line: {"index", "offset", "features": {NAME: {"kind", "values"}}}.
    #[arg(long)]
    pub json: bool,
    /// Only count the records (every CRC is still verified) and print `records: N` and `bytes: B`.
    #[arg(long, conflicts_with = "limit")]
    pub count: bool,
    /// Skip corrupt records (counted on stderr) instead of stopping at the first.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// The file's compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Auto)]
    pub compression: CompressionArg,
}

/// Runs the command.
pub fn run(args: &RecordsArgs) -> Result<()> {
    let stdout = io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    if !args.count && tfrecord::is_event_file_name(&args.file) {
        print_events(args, &mut out)?;
    } else {
        print_examples(args, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

fn print_examples(args: &RecordsArgs, out: &mut impl Write) -> Result<()> {
    let compression = match args.compression {
        CompressionArg::Auto => None,
        CompressionArg::None => Some(Compression::None),
        CompressionArg::Gzip => Some(Compression::Gzip),
        CompressionArg::Zlib => Some(Compression::Zlib),
    };
    let options = ReaderOptions { compression, skip_corrupt: args.skip_corrupt };
    let mut reader = FileRecordReader::open(&args.file, options)?;
    let mut buf = Vec::new();
    let mut printed = 0u64;
    if args.count {
        let mut bytes = 0u64;
        while reader.read_next(&mut buf)?.is_some() {
            printed += 1;
            bytes += buf.len() as u64;
        }
        if args.json {
            writeln!(out, "{}", json!({"records": printed, "bytes": bytes}))?;
        } else {
            writeln!(out, "records: {printed}\nbytes: {bytes}")?;
        }
    }
    while !args.count && args.limit.is_none_or(|limit| printed < limit) {
        let Some(info) = reader.read_next(&mut buf)? else { break };
        let example = Example::from_bytes(&buf).with_context(|| {
            format!("{}: record {} at {} is not a tf.train.Example", args.file.display(), info.index, info.offset)
        })?;
        if args.json {
            writeln!(out, "{}", example_json(&info, &example))?;
        } else {
            write_example_text(out, &info, &example)?;
        }
        printed += 1;
    }
    let skipped = reader.skipped();
    if skipped.corrupt > 0 {
        out.flush()?;
        eprintln!("warning: {}: skipped {} corrupt record(s)", args.file.display(), skipped.corrupt);
        if let Some(at) = skipped.truncated_at {
            eprintln!("warning: {}: the file is truncated inside the record at byte offset {at}", args.file.display());
        }
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn short_text(bytes: &[u8]) -> Option<&str> {
    if bytes.len() <= MAX_TEXT { std::str::from_utf8(bytes).ok() } else { None }
}

fn bytes_json(bytes: &[u8]) -> Json {
    let mut m = Map::new();
    m.insert("len".into(), json!(bytes.len()));
    m.insert("sha256".into(), json!(sha256_hex(bytes)));
    if let Some(text) = short_text(bytes) {
        m.insert("utf8".into(), json!(text));
    }
    Json::Object(m)
}

fn feature_json(feature: &Feature) -> Json {
    let (kind, values) = match &feature.kind {
        Some(Kind::BytesList(l)) => ("bytes", l.value.iter().map(|b| bytes_json(b)).collect()),
        Some(Kind::FloatList(l)) => ("float", l.value.iter().map(|v| json!(v)).collect()),
        Some(Kind::Int64List(l)) => ("int64", l.value.iter().map(|v| json!(v)).collect()),
        None => ("unset", Vec::new()),
    };
    json!({"kind": kind, "values": values})
}

fn example_json(info: &RecordInfo, example: &Example) -> Json {
    let features: Map<String, Json> = example.features().map(|(k, f)| (k.to_string(), feature_json(f))).collect();
    json!({"index": info.index, "offset": info.offset.bytes, "features": features})
}

fn bytes_text(bytes: &[u8]) -> String {
    match short_text(bytes) {
        Some(text) => format!("{text:?}"),
        None => format!("<{} bytes sha256:{}>", bytes.len(), &sha256_hex(bytes)[..16]),
    }
}

fn list_text<T>(values: &[T], show: impl Fn(&T) -> String) -> String {
    let mut parts: Vec<String> = values.iter().take(SHOWN_VALUES).map(show).collect();
    if values.len() > SHOWN_VALUES {
        parts.push(format!("… ({} more)", values.len() - SHOWN_VALUES));
    }
    parts.join(", ")
}

fn write_example_text(out: &mut impl Write, info: &RecordInfo, example: &Example) -> Result<()> {
    let count = example.features().count();
    writeln!(out, "record {} ({}): {count} feature(s)", info.index, info.offset)?;
    let width = example.features().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, feature) in example.features() {
        let values = match &feature.kind {
            Some(Kind::BytesList(l)) => list_text(&l.value, |b| bytes_text(b)),
            Some(Kind::FloatList(l)) => list_text(&l.value, |v| v.to_string()),
            Some(Kind::Int64List(l)) => list_text(&l.value, |v| v.to_string()),
            None => String::new(),
        };
        let kind = format!("{}[{}]", feature.kind(), feature.len());
        writeln!(out, "  {key:<width$}  {kind:<10} {values}")?;
    }
    Ok(())
}

fn print_events(args: &RecordsArgs, out: &mut impl Write) -> Result<()> {
    let reader = EventReader::open(&args.file)?;
    for item in reader.take(args.limit.map_or(usize::MAX, |l| l as usize)) {
        let (info, event) = item?;
        if args.json {
            writeln!(out, "{}", event_json(&info, &event))?;
        } else {
            writeln!(out, "{}", event_text(&info, &event))?;
        }
    }
    Ok(())
}

/// A one-line description of a summary value: its kind and its value.
fn summary_value_parts(v: &tfrecord::proto::summary::Value) -> (&'static str, Json) {
    let plugin = v.plugin_name().unwrap_or("");
    match &v.value {
        Some(ValueKind::SimpleValue(x)) => ("scalar", json!(x)),
        Some(ValueKind::Histo(h)) => {
            ("histogram", json!({"num": h.num, "min": h.min, "max": h.max, "sum": h.sum, "buckets": h.bucket.len()}))
        }
        Some(ValueKind::Image(i)) => ("image", json!({"height": i.height, "width": i.width, "count": 1})),
        Some(ValueKind::Tensor(t)) => match plugin {
            "scalars" => ("scalar", json!(v.scalar())),
            "text" => ("text", json!(v.text())),
            "images" if t.string_val.len() >= 2 => {
                let dim = |i: usize| String::from_utf8_lossy(&t.string_val[i]).parse::<i64>().ok();
                ("image", json!({"width": dim(0), "height": dim(1), "count": t.string_val.len() - 2}))
            }
            _ => {
                let shape = t.tensor_shape.as_ref().map(|s| s.dims()).unwrap_or_default();
                ("tensor", json!({"dtype": t.dtype, "shape": shape}))
            }
        },
        None => ("empty", Json::Null),
    }
}

fn event_json(info: &RecordInfo, event: &Event) -> Json {
    let mut m = Map::new();
    m.insert("index".into(), json!(info.index));
    m.insert("offset".into(), json!(info.offset.bytes));
    m.insert("wall_time".into(), json!(event.wall_time));
    m.insert("step".into(), json!(event.step));
    match &event.what {
        Some(What::FileVersion(v)) => {
            m.insert("file_version".into(), json!(v));
        }
        Some(What::Summary(s)) => {
            let values: Vec<Json> = s
                .value
                .iter()
                .map(|v| {
                    let (kind, value) = summary_value_parts(v);
                    json!({"tag": v.tag, "plugin": v.plugin_name(), "kind": kind, "value": value})
                })
                .collect();
            m.insert("summary".into(), json!(values));
        }
        Some(What::GraphDef(bytes)) => {
            let nodes = prost::Message::decode(bytes.as_slice()).map(|g: GraphDef| g.node.len()).ok();
            m.insert("graph".into(), json!({"bytes": bytes.len(), "nodes": nodes}));
        }
        Some(What::SessionLog(s)) => {
            m.insert("session_log".into(), json!({"status": s.status, "msg": s.msg}));
        }
        Some(What::TaggedRunMetadata(r)) => {
            m.insert("run_metadata".into(), json!({"tag": r.tag, "bytes": r.run_metadata.len()}));
        }
        Some(What::MetaGraphDef(bytes)) => {
            m.insert("meta_graph".into(), json!({"bytes": bytes.len()}));
        }
        Some(What::LogMessage(l)) => {
            m.insert("log_message".into(), json!({"level": l.level, "message": l.message}));
        }
        None => {}
    }
    Json::Object(m)
}

fn event_text(info: &RecordInfo, event: &Event) -> String {
    let head = format!("event {} ({}) step {} wall_time {:.3}:", info.index, info.offset, event.step, event.wall_time);
    let body = match &event.what {
        Some(What::FileVersion(v)) => format!("file_version {v}"),
        Some(What::Summary(s)) => s
            .value
            .iter()
            .map(|v| {
                let (kind, value) = summary_value_parts(v);
                format!("{kind} {:?} = {value}", v.tag)
            })
            .collect::<Vec<_>>()
            .join("; "),
        Some(What::GraphDef(bytes)) => match prost::Message::decode(bytes.as_slice()) {
            Ok(GraphDef { node, .. }) => format!("graph with {} node(s)", node.len()),
            Err(e) => format!("graph ({} bytes, not parseable: {e})", bytes.len()),
        },
        Some(What::SessionLog(s)) => format!("session_log status {} {}", s.status, s.msg),
        Some(What::TaggedRunMetadata(r)) => format!("run_metadata {:?} ({} bytes)", r.tag, r.run_metadata.len()),
        Some(What::MetaGraphDef(bytes)) => format!("meta_graph ({} bytes)", bytes.len()),
        Some(What::LogMessage(l)) => format!("log_message {}", l.message),
        None => "empty".to_string(),
    };
    format!("{head} {body}")
}
