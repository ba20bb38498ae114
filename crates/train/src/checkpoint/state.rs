//! The `checkpoint` state file in TensorFlow's text format
//! (`tensorflow/python/training/checkpoint_state.proto`, written by
//! `checkpoint_management.update_checkpoint_state`), so
//! `tf.train.get_checkpoint_state(train_dir)` reads what ferroflow writes.
//!
//! ```text
//! model_checkpoint_path: "model.ckpt-300"
//! all_model_checkpoint_paths: "model.ckpt-200"
//! all_model_checkpoint_paths: "model.ckpt-300"
//! all_model_checkpoint_timestamps: 1764143029.5
//! all_model_checkpoint_timestamps: 1764143031.25
//! last_preserved_timestamp: 1764143000
//! ```
//!
//! Paths are prefixes relative to the directory holding the state file,
//! as TF writes them; the file of prefix `p` is `p.safetensors`.

use std::fmt::Write as _;

/// The state file's name, as TF's `Saver` and `CheckpointManager` write it.
pub const STATE_FILE: &str = "checkpoint";

/// TF's `CheckpointState` message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckpointState {
    /// The latest checkpoint's prefix.
    pub model_checkpoint_path: String,
    /// Every kept checkpoint's prefix, oldest first (the latest is last).
    pub all_model_checkpoint_paths: Vec<String>,
    /// Unix times at which each of them was written.
    pub all_model_checkpoint_timestamps: Vec<f64>,
    /// The time of the last checkpoint kept by `keep_checkpoint_every_n_hours`.
    pub last_preserved_timestamp: f64,
}

impl CheckpointState {
    /// The text format, as Python's `text_format.MessageToString` writes it.
    ///
    /// ```
    /// use ferroflow_train::checkpoint::CheckpointState;
    /// let s = CheckpointState {
    ///     model_checkpoint_path: "model.ckpt-20".into(),
    ///     all_model_checkpoint_paths: vec!["model.ckpt-10".into(), "model.ckpt-20".into()],
    ///     all_model_checkpoint_timestamps: vec![1.5, 2.5],
    ///     last_preserved_timestamp: 1.0,
    /// };
    /// let text = s.to_text();
    /// assert!(text.starts_with("model_checkpoint_path: \"model.ckpt-20\"\n"));
    /// assert_eq!(CheckpointState::parse(&text).unwrap(), s);
    /// ```
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "model_checkpoint_path: \"{}\"", escape(&self.model_checkpoint_path));
        for p in &self.all_model_checkpoint_paths {
            let _ = writeln!(out, "all_model_checkpoint_paths: \"{}\"", escape(p));
        }
        for t in &self.all_model_checkpoint_timestamps {
            let _ = writeln!(out, "all_model_checkpoint_timestamps: {}", float(*t));
        }
        let _ = writeln!(out, "last_preserved_timestamp: {}", float(self.last_preserved_timestamp));
        out
    }

    /// Parses the text format (what TF or ferroflow wrote). Unknown fields,
    /// bad quoting or numbers are errors naming the line.
    pub fn parse(text: &str) -> Result<CheckpointState, String> {
        let mut state = CheckpointState::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |reason: String| format!("line {}: {reason}", i + 1);
            let (key, value) =
                line.split_once(':').ok_or_else(|| at(format!("expected `field: value`, got {line:?}")))?;
            let value = value.trim();
            match key.trim() {
                "model_checkpoint_path" => state.model_checkpoint_path = unquote(value).map_err(at)?,
                "all_model_checkpoint_paths" => state.all_model_checkpoint_paths.push(unquote(value).map_err(at)?),
                "all_model_checkpoint_timestamps" => {
                    state.all_model_checkpoint_timestamps.push(number(value).map_err(at)?);
                }
                "last_preserved_timestamp" => state.last_preserved_timestamp = number(value).map_err(at)?,
                other => return Err(at(format!("unknown field {other:?} (not a CheckpointState)"))),
            }
        }
        if state.model_checkpoint_path.is_empty() {
            return Err("no model_checkpoint_path".to_string());
        }
        Ok(state)
    }
}

/// A double as text format prints it: integral values without a fraction.
fn float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

fn number(text: &str) -> Result<f64, String> {
    text.parse::<f64>().map_err(|_| format!("expected a number, got {text:?}"))
}

/// C-style escaping of protobuf text format (`text_encoding.CEscape`):
/// quotes, backslashes and control bytes escaped; UTF-8 bytes as octal.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out
}

/// The inverse of [`escape`] for a `"…"` or `'…'` literal.
fn unquote(text: &str) -> Result<String, String> {
    let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'');
    let inner = match quote {
        Some(q) if text.len() >= 2 && text.ends_with(q) => &text[1..text.len() - 1],
        _ => return Err(format!("expected a quoted string, got {text:?}")),
    };
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1).ok_or_else(|| format!("dangling backslash in {text:?}"))?;
        i += 2;
        match next {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'"' | b'\'' | b'\\' | b'?' => out.push(next),
            b'0'..=b'7' => {
                let mut v = u32::from(next - b'0');
                let mut digits = 1;
                while digits < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                    v = v * 8 + u32::from(bytes[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push(u8::try_from(v).map_err(|_| format!("octal escape out of range in {text:?}"))?);
            }
            b'x' => {
                let start = i;
                while i < bytes.len() && i < start + 2 && bytes[i].is_ascii_hexdigit() {
                    i += 1;
                }
                let hex = std::str::from_utf8(&bytes[start..i]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x escape in {text:?}"))?);
            }
            other => return Err(format!("unknown escape \\{} in {text:?}", other as char)),
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        for p in ["model.ckpt-1", "dir with \"quotes\"/m\\x", "ünïcode/ckpt-3", "tab\there"] {
            assert_eq!(unquote(&format!("\"{}\"", escape(p))).unwrap(), p);
        }
        assert_eq!(escape("ü"), "\\303\\274");
    }

    #[test]
    fn parses_text_format_variants() {
        // Text-format variants TF's parser accepts: single quotes, exponents.
        let text = "model_checkpoint_path: \"ckpt-3\"\nall_model_checkpoint_paths: \"ckpt-2\"\n\
                    all_model_checkpoint_paths: 'ckpt-3'\nall_model_checkpoint_timestamps: 1.7641e+09\n\
                    all_model_checkpoint_timestamps: 1764100001.5\nlast_preserved_timestamp: 1764099990.25\n";
        let s = CheckpointState::parse(text).unwrap();
        assert_eq!(s.all_model_checkpoint_paths, ["ckpt-2", "ckpt-3"]);
        assert_eq!(s.all_model_checkpoint_timestamps, [1.7641e9, 1764100001.5]);
        assert_eq!(s.last_preserved_timestamp, 1764099990.25);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = CheckpointState::parse("model_checkpoint_path: \"a\"\nbogus: 1\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("bogus"), "{e}");
        let e = CheckpointState::parse("model_checkpoint_path: a\n").unwrap_err();
        assert!(e.contains("quoted"), "{e}");
        assert!(CheckpointState::parse("").unwrap_err().contains("no model_checkpoint_path"));
    }
}
