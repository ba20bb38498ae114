//! `tensorflow.Summary` and friends (`tensorflow/core/framework/summary.proto`).

use prost::{Enumeration, Message};

use super::tensor::TensorProto;

/// `tensorflow.HistogramProto`: bucket `i` counts values in
/// `(bucket_limit[i-1], bucket_limit[i]]`.
#[derive(Clone, PartialEq, Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Number of values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Sum of the values.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Sum of their squares.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edges of the buckets.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Counts.
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorflow.DataClass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum DataClass {
    /// `DATA_CLASS_UNKNOWN`.
    Unknown = 0,
    /// `DATA_CLASS_SCALAR`: a scalar tensor per step.
    Scalar = 1,
    /// `DATA_CLASS_TENSOR`: a tensor per step.
    Tensor = 2,
    /// `DATA_CLASS_BLOB_SEQUENCE`: a 1-D string tensor of blobs per step.
    BlobSequence = 3,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    /// The TensorBoard plugin that owns the data (`scalars`, `images`, …).
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// Plugin-specific serialised content.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    /// The owning plugin.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    /// Display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Longer description.
    #[prost(string, tag = "3")]
    pub summary_description: String,
    /// The data class.
    #[prost(enumeration = "DataClass", tag = "4")]
    pub data_class: i32,
}

impl SummaryMetadata {
    /// Metadata naming a plugin, with empty content.
    pub fn plugin(name: &str, data_class: DataClass) -> Self {
        SummaryMetadata {
            plugin_data: Some(PluginData { plugin_name: name.to_string(), content: Vec::new() }),
            data_class: data_class as i32,
            ..Default::default()
        }
    }
}

/// `tensorflow.Summary.Image`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryImage {
    /// Height in pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Width in pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// PNG or JPEG bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// The `oneof value` of `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    /// `simple_value = 2`: a TF1 scalar.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    /// `image = 4`: a TF1 image.
    #[prost(message, tag = "4")]
    Image(SummaryImage),
    /// `histo = 5`: a histogram.
    #[prost(message, tag = "5")]
    Histo(HistogramProto),
    /// `tensor = 8`: the TF2 form of every summary.
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    /// The tag TensorBoard groups by.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Deprecated node name.
    #[prost(string, tag = "7")]
    pub node_name: String,
    /// Plugin metadata (TensorBoard reads it from the first value of a tag).
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    /// The value.
    #[prost(oneof = "ValueKind", tags = "2, 4, 5, 8")]
    pub value: Option<ValueKind>,
}

impl Value {
    /// The owning plugin's name, if the metadata names one.
    pub fn plugin_name(&self) -> Option<&str> {
        self.metadata.as_ref()?.plugin_data.as_ref().map(|p| p.plugin_name.as_str())
    }

    /// The value as a scalar: a TF1 `simple_value` or a one-element numeric tensor.
    pub fn scalar(&self) -> Option<f64> {
        match &self.value {
            Some(ValueKind::SimpleValue(v)) => Some(f64::from(*v)),
            Some(ValueKind::Tensor(t)) => match t.to_f64_vec()?.as_slice() {
                [v] => Some(*v),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value as text: a scalar string tensor that is valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Some(ValueKind::Tensor(t)) if t.string_val.len() == 1 => std::str::from_utf8(&t.string_val[0]).ok(),
            _ => None,
        }
    }
}

/// `tensorflow.Summary`: the values logged at one step.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}
