//! One checkpoint: every variable by its TF name in a safetensors file, with
//! ferroflow's training state in the safetensors metadata (string keys
//! `ferroflow.*`, JSON or TOML values) so Python's `safetensors` reads the
//! tensors and anyone can read the state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};
use ferroflow_data::{Cursor, Preprocess};
use ferroflow_nn::{GLOBAL_STEP, ModelSpec, Variable};
use safetensors::{Dtype, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::checkpoint::integrity::{self, CHECKSUMS_KEY, FORMAT_KEY, FORMAT_WITH_CHECKSUMS, Integrity, TensorEntry};
use crate::checkpoint::reader::{RawFile, read_safetensors};
use crate::error::{Result, TrainError};

/// The values of a stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// float32 (every ferroflow variable).
    F32(Vec<f32>),
    /// int64 (`global_step`).
    I64(Vec<i64>),
    /// float64 (read from other writers).
    F64(Vec<f64>),
    /// int32 (read from other writers).
    I32(Vec<i32>),
}

impl Values {
    /// The dtype's name as TF prints it.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Values::F32(_) => "float32",
            Values::I64(_) => "int64",
            Values::F64(_) => "float64",
            Values::I32(_) => "int32",
        }
    }

    /// Every value as f64 (for statistics).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Values::F64(v) => v.clone(),
            Values::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I32(v) => v.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        match self {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Values::F32(_) => Dtype::F32,
            Values::I64(_) => Dtype::I64,
            Values::F64(_) => Dtype::F64,
            Values::I32(_) => Dtype::I32,
        }
    }
}

/// One stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// Its shape (`[]` for scalars).
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Values,
}

/// Summary statistics of a tensor (`ferroflow inspect --var`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorStats {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// L2 norm.
    pub norm: f64,
    /// NaN or infinite values.
    pub non_finite: usize,
}

impl StoredTensor {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-element tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A candle tensor of it (float32 values only; others are converted).
    pub fn to_tensor(&self, device: &candle_core::Device) -> candle_core::Result<Tensor> {
        match &self.values {
            Values::F32(v) => Tensor::from_slice(v, self.shape.as_slice(), device),
            other => Tensor::from_vec(other.to_f64(), self.shape.as_slice(), device)?.to_dtype(DType::F32),
        }
    }

    /// min, max, mean, std, norm (f64 accumulation, finite values only).
    ///
    /// ```
    /// use ferroflow_train::checkpoint::{StoredTensor, Values};
    /// let t = StoredTensor { shape: vec![4], values: Values::F32(vec![1.0, -1.0, 3.0, -3.0]) };
    /// let s = t.stats();
    /// assert_eq!((s.min, s.max, s.mean, s.norm), (-3.0, 3.0, 0.0, 20f64.sqrt()));
    /// assert_eq!(s.std, 5f64.sqrt());
    /// ```
    pub fn stats(&self) -> TensorStats {
        let all = self.values.to_f64();
        let v: Vec<f64> = all.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        TensorStats {
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean,
            std: var.sqrt(),
            norm: v.iter().map(|x| x * x).sum::<f64>().sqrt(),
            non_finite: all.len() - v.len(),
        }
    }
}

/// The random streams a resume must continue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RngStates {
    /// The variable store's initializer stream.
    pub var_store: [u64; 4],
    /// Each dropout layer's mask stream, by layer name.
    pub dropout: BTreeMap<String, [u64; 4]>,
}

/// What the data looked like, so a resume on other data is caught.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// Training examples per epoch.
    pub train_count: usize,
    /// Class names, by label.
    pub classes: Vec<String>,
}

/// ferroflow's state in a checkpoint's metadata. Every field is optional
/// on read, so plain safetensors files can be inspected.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckpointMeta {
    /// The ferroflow version that wrote it (`ferroflow.version`).
    pub version: String,
    /// Training steps taken (`ferroflow.global_step`; also the `global_step` tensor).
    pub global_step: i64,
    /// The input pipeline's position (`ferroflow.cursor`).
    pub cursor: Option<Cursor>,
    /// Random streams (`ferroflow.rng`).
    pub rng: Option<RngStates>,
    /// The resolved config as TOML (`ferroflow.config`).
    pub config: Option<String>,
    /// Names of the variables that were trained (`ferroflow.trainable`).
    pub trainable: Vec<String>,
    /// Class names by label (`ferroflow.classes`).
    pub classes: Vec<String>,
    /// The model declaration, so eval and predict rebuild it (`ferroflow.model`).
    pub model: Option<ModelSpec>,
    /// The evaluation preprocessing (`ferroflow.preprocess`).
    pub preprocess: Option<Preprocess>,
    /// The training data (`ferroflow.data`).
    pub data: Option<DataFingerprint>,
    /// A regression model's target statistics (`ferroflow.targets`): its
    /// outputs are `(value - mean) / std`.
    pub targets: Option<crate::regression::TargetStats>,
    /// The validation monitor's state (`ferroflow.monitor`: early stopping, the best).
    pub monitor: Option<crate::monitor::MonitorState>,
    /// Unix time of writing (`ferroflow.created`).
    pub created: f64,
}

const PREFIX: &str = "ferroflow.";

impl CheckpointMeta {
    pub(crate) fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(format!("{PREFIX}{k}"), v);
        };
        put("version", self.version.clone());
        put("global_step", self.global_step.to_string());
        put("created", format!("{}", self.created));
        if let Some(c) = &self.cursor {
            put("cursor", json(c));
        }
        if let Some(r) = &self.rng {
            put("rng", json(r));
        }
        if let Some(c) = &self.config {
            put("config", c.clone());
        }
        put("trainable", json(&self.trainable));
        put("classes", json(&self.classes));
        if let Some(m) = &self.model {
            put("model", json(m));
        }
        if let Some(p) = &self.preprocess {
            put("preprocess", json(p));
        }
        if let Some(d) = &self.data {
            put("data", json(d));
        }
        if let Some(t) = &self.targets {
            put("targets", json(t));
        }
        if let Some(s) = &self.monitor {
            put("monitor", json(s));
        }
        m
    }

    pub(crate) fn from_map(m: &HashMap<String, String>, path: &str) -> Result<CheckpointMeta> {
        let get = |k: &str| m.get(&format!("{PREFIX}{k}"));
        fn parse<T: serde::de::DeserializeOwned>(path: &str, key: &str, v: Option<&String>) -> Result<Option<T>> {
            v.map(|text| {
                serde_json::from_str(text).map_err(|e| TrainError::Checkpoint {
                    path: path.to_string(),
                    reason: format!("metadata {PREFIX}{key}: {e}"),
                })
            })
            .transpose()
        }
        Ok(CheckpointMeta {
            version: get("version").cloned().unwrap_or_default(),
            global_step: parse(path, "global_step", get("global_step"))?.unwrap_or(0),
            cursor: parse(path, "cursor", get("cursor"))?,
            rng: parse(path, "rng", get("rng"))?,
            config: get("config").cloned(),
            trainable: parse(path, "trainable", get("trainable"))?.unwrap_or_default(),
            classes: parse(path, "classes", get("classes"))?.unwrap_or_default(),
            model: parse(path, "model", get("model"))?,
            preprocess: parse(path, "preprocess", get("preprocess"))?,
            data: parse(path, "data", get("data"))?,
            targets: parse(path, "targets", get("targets"))?,
            monitor: parse(path, "monitor", get("monitor"))?,
            created: parse(path, "created", get("created"))?.unwrap_or(0.0),
        })
    }

    /// Every metadata entry as written, without the empty ones of a
    /// checkpoint ferroflow did not write (for `inspect`).
    pub fn entries(&self) -> BTreeMap<String, String> {
        let empty = ["", "[]", "0"];
        self.to_map()
            .into_iter()
            .filter(|(k, v)| k == &format!("{PREFIX}global_step") || !empty.contains(&v.as_str()))
            .collect()
    }
}

/// JSON of a metadata value (these plain structs always serialise).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// A checkpoint in memory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// Tensors by TF variable name (sorted).
    pub tensors: BTreeMap<String, StoredTensor>,
    /// Training state.
    pub meta: CheckpointMeta,
    /// Metadata entries that are not ferroflow's (other writers).
    pub other_metadata: BTreeMap<String, String>,
    /// Whether the values were verified against stored checksums.
    pub integrity: Integrity,
}

impl Checkpoint {
    /// Captures `variables` and a `global_step` int64 scalar. A NaN or
    /// infinite value is an error naming the variable: no NaN checkpoint is
    /// ever written.
    pub fn capture(variables: &[Variable], meta: CheckpointMeta) -> Result<Checkpoint> {
        let mut tensors = BTreeMap::new();
        for v in variables {
            let values = v
                .var
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(TrainError::candle(format!("checkpoint {}", v.name)))?;
            if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                return Err(TrainError::Checkpoint {
                    path: v.name.clone(),
                    reason: format!(
                        "element {i} is {}; refusing to write a non-finite checkpoint at step {}",
                        values[i], meta.global_step
                    ),
                });
            }
            tensors.insert(v.name.clone(), StoredTensor { shape: v.var.dims().to_vec(), values: Values::F32(values) });
        }
        tensors.insert(
            GLOBAL_STEP.to_string(),
            StoredTensor { shape: vec![], values: Values::I64(vec![meta.global_step]) },
        );
        Ok(Checkpoint { tensors, meta, other_metadata: BTreeMap::new(), integrity: Integrity::Verified })
    }

    /// The safetensors bytes, with a CRC-32C of every tensor and of the
    /// header in the metadata (see `integrity`).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone(), t.values.dtype(), t.values.bytes()))
            .collect();
        let views = bytes
            .iter()
            .map(|(k, shape, dtype, data)| Ok((k.as_str(), TensorView::new(*dtype, shape.clone(), data)?)))
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| TrainError::Checkpoint { path: "(in memory)".into(), reason: e.to_string() })?;
        let mut metadata = self.meta.to_map();
        metadata.extend(self.other_metadata.clone());
        metadata.insert(FORMAT_KEY.to_string(), FORMAT_WITH_CHECKSUMS.to_string());
        let crcs: Vec<u32> = bytes.iter().map(|(_, _, _, data)| integrity::crc(data)).collect();
        let entries: Vec<(TensorEntry<'_>, u32)> = bytes
            .iter()
            .zip(crcs)
            .map(|((k, shape, dtype, _), crc)| (TensorEntry { name: k, dtype: format!("{dtype:?}"), shape }, crc))
            .collect();
        let checksums = integrity::compute(&entries, &metadata);
        metadata.insert(CHECKSUMS_KEY.to_string(), json(&checksums));
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| TrainError::Checkpoint { path: "(in memory)".into(), reason: e.to_string() })
    }

    /// Parses safetensors bytes and verifies their checksums; `path` names
    /// them in errors. A file without checksums (an older ferroflow's, or
    /// another tool's) loads with [`Integrity::NoChecksums`].
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Checkpoint> {
        Checkpoint::from_raw(read_safetensors(&mut &bytes[..], bytes.len() as u64, path)?, path)
    }

    /// Verifies a file as read and turns it into a checkpoint.
    fn from_raw(raw: RawFile, path: &str) -> Result<Checkpoint> {
        let RawFile { metadata: map, tensors: raw } = raw;
        let dtypes: Vec<String> = raw.iter().map(|t| format!("{:?}", t.dtype)).collect();
        let entries: Vec<(TensorEntry<'_>, u32)> = raw
            .iter()
            .zip(&dtypes)
            .map(|(t, dtype)| {
                (TensorEntry { name: &t.name, dtype: dtype.clone(), shape: &t.shape }, t.crc.unwrap_or(0))
            })
            .collect();
        let integrity = integrity::verify(&entries, &map, path)?;
        drop(entries);
        let mut tensors = BTreeMap::new();
        for t in raw {
            let values = t.values.map_err(|other| TrainError::Checkpoint {
                path: path.to_string(),
                reason: format!(
                    "tensor {:?} has dtype {other:?}; ferroflow reads float32, float64, int32 and int64",
                    t.name
                ),
            })?;
            tensors.insert(t.name, StoredTensor { shape: t.shape, values });
        }
        let meta = CheckpointMeta::from_map(&map, path)?;
        let other_metadata = map.into_iter().filter(|(k, _)| !k.starts_with(PREFIX)).collect();
        Ok(Checkpoint { tensors, meta, other_metadata, integrity })
    }

    /// Reads a checkpoint: a ferroflow (or any) safetensors file, or a
    /// TensorFlow checkpoint prefix / `.index` file (see `tf_bundle`). A
    /// safetensors file is checksummed while it is read (`reader.rs`).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        if let Some(prefix) = crate::checkpoint::tf_bundle::bundle_prefix(path) {
            return crate::checkpoint::tf_bundle::load_tensor_bundle(&prefix);
        }
        let name = path.display().to_string();
        let io = |cause| TrainError::Io { path: name.clone(), cause };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Checkpoint::from_raw(read_safetensors(&mut file, len, &name)?, &name)
    }

    /// The one-line notice for a checkpoint whose values could not be
    /// verified (no checksums), or `None`.
    pub fn integrity_notice(&self, path: &Path) -> Option<String> {
        (self.integrity == Integrity::NoChecksums).then(|| {
            format!(
                "note: {} has no checksums (written before ferroflow stored checksums, or by another tool), so its values \
                 are not verified",
                path.display()
            )
        })
    }

    /// The float values of `name`, if stored.
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use ferroflow_nn::{Init, VarStore};

    #[test]
    fn round_trips_values_and_state() {
        let store = VarStore::new(Device::Cpu, 3);
        store.root().sub("conv1").get_variable("weights", &[2, 3], Init::GlorotUniform, true).unwrap();
        store.root().get_variable("moving_mean", &[3], Init::Ones, false).unwrap();
        let meta = CheckpointMeta {
            version: "0.1.0".into(),
            global_step: 42,
            cursor: Some(Cursor { epoch: 2, offset: 96 }),
            rng: Some(RngStates { var_store: [1, 2, 3, u64::MAX], dropout: [("d".to_string(), [5; 4])].into() }),
            config: Some("[train]\nseed = 1\n".into()),
            trainable: vec!["conv1/weights".into()],
            classes: vec!["a".into(), "b".into()],
            model: ferroflow_nn::zoo_model("lenet", 2),
            preprocess: Some(Preprocess::default()),
            data: Some(DataFingerprint { train_count: 10, classes: vec!["a".into(), "b".into()] }),
            created: 1.5,
            targets: Some(crate::regression::TargetStats { mean: vec![1.5, -2.0], std: vec![0.25, 3.0] }),
            monitor: Some(crate::monitor::MonitorState {
                metric: "validation/loss".into(),
                mode: Some(crate::monitor::Mode::Min),
                best: Some(0.25),
                best_step: 30,
                wait: 2,
                stopped_at: None,
            }),
        };
        let ck = Checkpoint::capture(&store.global_variables(), meta).unwrap();
        let back = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), "x").unwrap();
        assert_eq!(back, ck);
        assert_eq!(back.get("global_step").unwrap().values, Values::I64(vec![42]));
        assert_eq!(back.get("conv1/weights").unwrap().shape, [2, 3]);
    }

    #[test]
    fn refuses_non_finite_values() {
        let store = VarStore::new(Device::Cpu, 3);
        store.root().get_variable("w", &[2], Init::Constant { value: f32::NAN }, true).unwrap();
        let e = Checkpoint::capture(&store.global_variables(), CheckpointMeta::default()).unwrap_err().to_string();
        assert!(e.contains("w") && e.contains("NaN"), "{e}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = Checkpoint::from_bytes(b"\x08\0\0\0\0\0\0\0{}", "f.safetensors").unwrap_err().to_string();
        assert!(e.starts_with("f.safetensors:"), "{e}");
        let e = Checkpoint::from_bytes(b"", "g").unwrap_err().to_string();
        assert!(e.contains("not a safetensors checkpoint"), "{e}");
    }
}
