//! `tf.train.Example`: the protocol buffers of
//! `tensorflow/core/example/{example,feature}.proto`, with typed getters and a
//! builder.
//!
//! Features live in a `BTreeMap`, so an Example always serialises with its
//! keys sorted: equal Examples give identical bytes.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;

use crate::error::FeatureError;

/// `tensorflow.BytesList` (feature.proto).
#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    /// The values.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

/// `tensorflow.FloatList` (feature.proto; packed).
#[derive(Clone, PartialEq, Message)]
pub struct FloatList {
    /// The values.
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

/// `tensorflow.Int64List` (feature.proto; packed).
#[derive(Clone, PartialEq, Message)]
pub struct Int64List {
    /// The values.
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

/// The `oneof kind` of `tensorflow.Feature`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// `bytes_list = 1`.
    #[prost(message, tag = "1")]
    BytesList(BytesList),
    /// `float_list = 2`.
    #[prost(message, tag = "2")]
    FloatList(FloatList),
    /// `int64_list = 3`.
    #[prost(message, tag = "3")]
    Int64List(Int64List),
}

/// `tensorflow.Feature`: one list of values.
#[derive(Clone, PartialEq, Message)]
pub struct Feature {
    /// The list; `None` when unset (TensorFlow treats it as empty).
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    pub kind: Option<Kind>,
}

/// `tensorflow.Features`: a map from key to feature.
#[derive(Clone, PartialEq, Message)]
pub struct Features {
    /// The features, sorted by key.
    #[prost(btree_map = "string, message", tag = "1")]
    pub feature: BTreeMap<String, Feature>,
}

/// `tensorflow.Example`.
#[derive(Clone, PartialEq, Message)]
pub struct Example {
    /// The features (`None` and empty are the same to TensorFlow).
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

/// The kind of list a feature holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// `bytes_list`.
    Bytes,
    /// `float_list`.
    Float,
    /// `int64_list`.
    Int64,
    /// No list set.
    Unset,
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureKind::Bytes => "bytes",
            FeatureKind::Float => "float",
            FeatureKind::Int64 => "int64",
            FeatureKind::Unset => "unset",
        })
    }
}

impl Feature {
    /// A bytes list.
    pub fn from_bytes<I: IntoIterator<Item = B>, B: Into<Vec<u8>>>(values: I) -> Self {
        let value = values.into_iter().map(Into::into).collect();
        Feature { kind: Some(Kind::BytesList(BytesList { value })) }
    }

    /// A float list.
    pub fn from_floats(values: impl IntoIterator<Item = f32>) -> Self {
        Feature { kind: Some(Kind::FloatList(FloatList { value: values.into_iter().collect() })) }
    }

    /// An int64 list.
    pub fn from_int64s(values: impl IntoIterator<Item = i64>) -> Self {
        Feature { kind: Some(Kind::Int64List(Int64List { value: values.into_iter().collect() })) }
    }

    /// Which kind of list it holds.
    pub fn kind(&self) -> FeatureKind {
        match &self.kind {
            Some(Kind::BytesList(_)) => FeatureKind::Bytes,
            Some(Kind::FloatList(_)) => FeatureKind::Float,
            Some(Kind::Int64List(_)) => FeatureKind::Int64,
            None => FeatureKind::Unset,
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match &self.kind {
            Some(Kind::BytesList(l)) => l.value.len(),
            Some(Kind::FloatList(l)) => l.value.len(),
            Some(Kind::Int64List(l)) => l.value.len(),
            None => 0,
        }
    }

    /// True when the list is empty or unset.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const NO_BYTES: &[Vec<u8>] = &[];

impl Example {
    /// Starts building an Example.
    ///
    /// ```
    /// use tfrecord::Example;
    /// let ex = Example::builder()
    ///     .bytes("image/encoded", b"\x89PNG...".to_vec())
    ///     .int64("image/class/label", 3)
    ///     .floats("bbox", [0.1, 0.2])
    ///     .build();
    /// assert_eq!(ex.int64("image/class/label").unwrap(), 3);
    /// assert_eq!(ex.floats("bbox").unwrap(), &[0.1, 0.2]);
    /// assert!(ex.int64("image/encoded").is_err()); // a bytes feature
    /// let bytes = ex.to_bytes();
    /// assert_eq!(Example::from_bytes(&bytes).unwrap(), ex);
    /// ```
    pub fn builder() -> ExampleBuilder {
        ExampleBuilder::default()
    }

    /// Parses a serialised Example.
    pub fn from_bytes(bytes: &[u8]) -> Result<Example, prost::DecodeError> {
        Example::decode(bytes)
    }

    /// Serialises it, with keys sorted.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The features, sorted by key (empty when unset).
    pub fn features(&self) -> impl Iterator<Item = (&str, &Feature)> {
        self.features.iter().flat_map(|f| f.feature.iter()).map(|(k, v)| (k.as_str(), v))
    }

    /// Inserts or replaces a feature.
    pub fn insert(&mut self, key: impl Into<String>, feature: Feature) {
        self.features.get_or_insert_with(Features::default).feature.insert(key.into(), feature);
    }

    /// The feature under `key`.
    pub fn feature(&self, key: &str) -> Result<&Feature, FeatureError> {
        self.features.as_ref().and_then(|f| f.feature.get(key)).ok_or_else(|| FeatureError::Missing {
            key: key.to_string(),
            available: {
                let keys: Vec<&str> = self.features().map(|(k, _)| k).collect();
                if keys.is_empty() { "no features".to_string() } else { keys.join(", ") }
            },
        })
    }

    fn wrong_kind(key: &str, expected: FeatureKind, feature: &Feature) -> FeatureError {
        FeatureError::WrongKind { key: key.to_string(), expected, found: feature.kind() }
    }

    fn single<T: Copy>(key: &str, values: &[T]) -> Result<T, FeatureError> {
        match values {
            [v] => Ok(*v),
            _ => Err(FeatureError::NotSingle { key: key.to_string(), found: values.len() }),
        }
    }

    /// The bytes list under `key` (an unset feature is an empty list).
    pub fn bytes_list(&self, key: &str) -> Result<&[Vec<u8>], FeatureError> {
        let feature = self.feature(key)?;
        match &feature.kind {
            Some(Kind::BytesList(l)) => Ok(&l.value),
            None => Ok(NO_BYTES),
            Some(_) => Err(Self::wrong_kind(key, FeatureKind::Bytes, feature)),
        }
    }

    /// The single bytes value under `key`.
    pub fn bytes(&self, key: &str) -> Result<&[u8], FeatureError> {
        match self.bytes_list(key)? {
            [v] => Ok(v),
            values => Err(FeatureError::NotSingle { key: key.to_string(), found: values.len() }),
        }
    }

    /// The single bytes value under `key`, as UTF-8 text.
    pub fn str(&self, key: &str) -> Result<&str, FeatureError> {
        std::str::from_utf8(self.bytes(key)?).map_err(|_| FeatureError::NotUtf8 { key: key.to_string() })
    }

    /// The float list under `key`.
    pub fn floats(&self, key: &str) -> Result<&[f32], FeatureError> {
        let feature = self.feature(key)?;
        match &feature.kind {
            Some(Kind::FloatList(l)) => Ok(&l.value),
            None => Ok(&[]),
            Some(_) => Err(Self::wrong_kind(key, FeatureKind::Float, feature)),
        }
    }

    /// The single float under `key`.
    pub fn float(&self, key: &str) -> Result<f32, FeatureError> {
        Self::single(key, self.floats(key)?)
    }

    /// The int64 list under `key`.
    pub fn int64s(&self, key: &str) -> Result<&[i64], FeatureError> {
        let feature = self.feature(key)?;
        match &feature.kind {
            Some(Kind::Int64List(l)) => Ok(&l.value),
            None => Ok(&[]),
            Some(_) => Err(Self::wrong_kind(key, FeatureKind::Int64, feature)),
        }
    }

    /// The single int64 under `key`.
    pub fn int64(&self, key: &str) -> Result<i64, FeatureError> {
        Self::single(key, self.int64s(key)?)
    }
}

/// Builds an [`Example`] feature by feature; later values for a key replace
/// earlier ones.
#[derive(Debug, Default, Clone)]
pub struct ExampleBuilder {
    features: BTreeMap<String, Feature>,
}

impl ExampleBuilder {
    /// Adds a feature.
    pub fn feature(mut self, key: impl Into<String>, feature: Feature) -> Self {
        self.features.insert(key.into(), feature);
        self
    }

    /// Adds a single bytes value.
    pub fn bytes(self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.feature(key, Feature::from_bytes([value.into()]))
    }

    /// Adds a bytes list.
    pub fn bytes_list<I: IntoIterator<Item = B>, B: Into<Vec<u8>>>(self, key: impl Into<String>, values: I) -> Self {
        self.feature(key, Feature::from_bytes(values))
    }

    /// Adds a single float.
    pub fn float(self, key: impl Into<String>, value: f32) -> Self {
        self.feature(key, Feature::from_floats([value]))
    }

    /// Adds a float list.
    pub fn floats(self, key: impl Into<String>, values: impl IntoIterator<Item = f32>) -> Self {
        self.feature(key, Feature::from_floats(values))
    }

    /// Adds a single int64.
    pub fn int64(self, key: impl Into<String>, value: i64) -> Self {
        self.feature(key, Feature::from_int64s([value]))
    }

    /// Adds an int64 list.
    pub fn int64s(self, key: impl Into<String>, values: impl IntoIterator<Item = i64>) -> Self {
        self.feature(key, Feature::from_int64s(values))
    }

    /// Finishes the Example.
    pub fn build(self) -> Example {
        Example { features: Some(Features { feature: self.features }) }
    }
}
