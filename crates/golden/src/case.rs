//! One golden case file: its `op`, its `params` and its tensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// A case file's tensors and metadata.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file the case was read from.
    pub path: PathBuf,
    /// The metadata's `op`: which harness checks the case, and how.
    pub op: String,
    /// The metadata's `params`, parsed as JSON (an empty object when absent).
    pub params: Value,
    /// The case's tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
}

/// One tensor of a case: its shape and its values.
#[derive(Debug, Clone)]
pub struct TensorData {
    /// The shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Values,
}

/// A tensor's values in the dtypes the harnesses read.
#[derive(Debug, Clone)]
pub enum Values {
    /// `float32`.
    F32(Vec<f32>),
    /// `int64`.
    I64(Vec<i64>),
    /// `uint8`.
    U8(Vec<u8>),
    /// Any other dtype, by its safetensors name; the harnesses reject it.
    Other(String),
}

impl TensorData {
    /// The dtype's name as error messages show it (`float32`, `int64`, `uint8`, …).
    pub fn dtype(&self) -> &str {
        match &self.values {
            Values::F32(_) => "float32",
            Values::I64(_) => "int64",
            Values::U8(_) => "uint8",
            Values::Other(name) => name,
        }
    }
}

impl Case {
    /// Reads a case file: a safetensors file whose metadata holds `op`, `tf_version` and,
    /// optionally, `params` (JSON).
    pub fn load(path: &Path) -> Result<Case, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        let op = meta.get("op").ok_or("metadata has no `op`")?.clone();
        let params = match meta.get("params") {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("metadata `params` is not JSON: {e}"))?,
            None => Value::Object(Default::default()),
        };
        if !meta.contains_key("tf_version") {
            return Err("metadata has no `tf_version`".into());
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let values = match view.dtype() {
                Dtype::F32 => {
                    Values::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                }
                Dtype::I64 => Values::I64(
                    raw.chunks_exact(8)
                        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                        .collect(),
                ),
                Dtype::U8 => Values::U8(raw.to_vec()),
                other => Values::Other(format!("{other:?}")),
            };
            tensors.insert(name, TensorData { shape: view.shape().to_vec(), values });
        }
        Ok(Case { path: path.to_path_buf(), op, params, tensors })
    }

    /// The tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorData, String> {
        self.tensors.get(name).ok_or_else(|| format!("case has no tensor `{name}`"))
    }

    /// A float32 tensor's shape and values.
    pub fn f32(&self, name: &str) -> Result<(&[usize], &[f32]), String> {
        let t = self.tensor(name)?;
        match &t.values {
            Values::F32(v) => Ok((&t.shape, v)),
            _ => Err(format!("tensor `{name}` is {}, expected float32", t.dtype())),
        }
    }

    /// An int64 tensor's shape and values.
    pub fn i64(&self, name: &str) -> Result<(&[usize], &[i64]), String> {
        let t = self.tensor(name)?;
        match &t.values {
            Values::I64(v) => Ok((&t.shape, v)),
            _ => Err(format!("tensor `{name}` is {}, expected int64", t.dtype())),
        }
    }

    /// A uint8 tensor's shape and values.
    pub fn u8(&self, name: &str) -> Result<(&[usize], &[u8]), String> {
        let t = self.tensor(name)?;
        match &t.values {
            Values::U8(v) => Ok((&t.shape, v)),
            _ => Err(format!("tensor `{name}` is {}, expected uint8", t.dtype())),
        }
    }

    /// Fails on tensors the op's check would not look at, so nothing a case holds is
    /// silently left unchecked.
    pub fn only_tensors(&self, known: &[&str]) -> Result<(), String> {
        let unknown: Vec<&str> = self.tensors.keys().map(String::as_str).filter(|k| !known.contains(k)).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("tensor(s) {unknown:?} that the harness does not check (expected only {known:?})"))
        }
    }

    /// The string parameter `key`.
    pub fn str_param(&self, key: &str) -> Result<&str, String> {
        self.params.get(key).and_then(Value::as_str).ok_or_else(|| format!("params has no string `{key}`"))
    }

    /// The numeric parameter `key`.
    pub fn f64_param(&self, key: &str) -> Result<f64, String> {
        self.params.get(key).and_then(Value::as_f64).ok_or_else(|| format!("params has no number `{key}`"))
    }

    /// The boolean parameter `key`, `default` when absent.
    pub fn bool_param(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.params.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| format!("params `{key}` is not a boolean")),
        }
    }

    /// The parameter `key` as a list of sizes (entries that are not non-negative integers
    /// are left out), `None` when it is not a list.
    pub fn sizes_param(&self, key: &str) -> Option<Vec<usize>> {
        self.params
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_u64().map(|n| n as usize)).collect())
    }
}
