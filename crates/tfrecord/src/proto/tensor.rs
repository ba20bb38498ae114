//! `tensorflow.TensorProto`, `TensorShapeProto` and `DataType`
//! (`tensorflow/core/framework/{tensor,tensor_shape,types}.proto`), as far as
//! summaries and graphs need them; other fields are skipped when parsing.

use prost::{Enumeration, Message};

/// `tensorflow.DataType` (types.proto), the common members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum DataType {
    /// `DT_INVALID`.
    DtInvalid = 0,
    /// `DT_FLOAT`.
    DtFloat = 1,
    /// `DT_DOUBLE`.
    DtDouble = 2,
    /// `DT_INT32`.
    DtInt32 = 3,
    /// `DT_UINT8`.
    DtUint8 = 4,
    /// `DT_INT16`.
    DtInt16 = 5,
    /// `DT_INT8`.
    DtInt8 = 6,
    /// `DT_STRING`.
    DtString = 7,
    /// `DT_COMPLEX64`.
    DtComplex64 = 8,
    /// `DT_INT64`.
    DtInt64 = 9,
    /// `DT_BOOL`.
    DtBool = 10,
    /// `DT_BFLOAT16`.
    DtBfloat16 = 14,
    /// `DT_HALF`.
    DtHalf = 19,
    /// `DT_RESOURCE`.
    DtResource = 20,
    /// `DT_VARIANT`.
    DtVariant = 21,
    /// `DT_UINT32`.
    DtUint32 = 22,
    /// `DT_UINT64`.
    DtUint64 = 23,
}

/// One dimension of a [`TensorShapeProto`].
#[derive(Clone, PartialEq, Message)]
pub struct Dim {
    /// Size (-1 for unknown).
    #[prost(int64, tag = "1")]
    pub size: i64,
    /// Optional name.
    #[prost(string, tag = "2")]
    pub name: String,
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// Dimensions, outermost first; none for a scalar.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
    /// True when even the rank is unknown.
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

impl TensorShapeProto {
    /// A known shape.
    pub fn from_dims(dims: &[i64]) -> Self {
        TensorShapeProto {
            dim: dims.iter().map(|&size| Dim { size, name: String::new() }).collect(),
            unknown_rank: false,
        }
    }

    /// The sizes, outermost first.
    pub fn dims(&self) -> Vec<i64> {
        self.dim.iter().map(|d| d.size).collect()
    }
}

/// `tensorflow.TensorProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Element type.
    #[prost(enumeration = "DataType", tag = "1")]
    pub dtype: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Version (0).
    #[prost(int32, tag = "3")]
    pub version_number: i32,
    /// Packed little-endian contents, when not given as typed values.
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    /// `DT_FLOAT` values.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// `DT_DOUBLE` values.
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    /// `DT_INT32`, `DT_INT16`, `DT_INT8`, `DT_UINT8` values.
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
    /// `DT_STRING` values.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
    /// `DT_INT64` values.
    #[prost(int64, repeated, tag = "10")]
    pub int64_val: Vec<i64>,
    /// `DT_BOOL` values.
    #[prost(bool, repeated, tag = "11")]
    pub bool_val: Vec<bool>,
    /// `DT_HALF` and `DT_BFLOAT16` values, as raw bits.
    #[prost(int32, repeated, tag = "13")]
    pub half_val: Vec<i32>,
}

impl TensorProto {
    /// A float32 scalar, as `tf.summary.scalar` writes it.
    pub fn scalar_f32(value: f32) -> Self {
        TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto::default()),
            float_val: vec![value],
            ..Default::default()
        }
    }

    /// A string tensor of the given shape.
    pub fn strings(dims: &[i64], values: Vec<Vec<u8>>) -> Self {
        TensorProto {
            dtype: DataType::DtString as i32,
            tensor_shape: Some(TensorShapeProto::from_dims(dims)),
            string_val: values,
            ..Default::default()
        }
    }

    /// The number of elements its shape says it has; `None` for an unknown
    /// (negative) dimension or a product that overflows.
    pub fn num_elements(&self) -> Option<i64> {
        let Some(shape) = &self.tensor_shape else { return Some(1) };
        shape.dim.iter().try_fold(1i64, |n, d| if d.size < 0 { None } else { n.checked_mul(d.size) })
    }

    /// Its values as f64, for the numeric dtypes (from the typed field or from
    /// `tensor_content`); `None` for other dtypes or a malformed tensor.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        fn le<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Option<Vec<T>> {
            if !bytes.len().is_multiple_of(N) {
                return None;
            }
            Some(bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N"))).collect())
        }
        let content = &self.tensor_content;
        let from_content = !content.is_empty();
        match DataType::try_from(self.dtype).ok()? {
            DataType::DtFloat if from_content => le(content, |b| f64::from(f32::from_le_bytes(b))),
            DataType::DtFloat => Some(self.float_val.iter().map(|&v| f64::from(v)).collect()),
            DataType::DtDouble if from_content => le(content, f64::from_le_bytes),
            DataType::DtDouble => Some(self.double_val.clone()),
            DataType::DtInt32 if from_content => le(content, |b| f64::from(i32::from_le_bytes(b))),
            DataType::DtInt32 | DataType::DtInt16 | DataType::DtInt8 | DataType::DtUint8 if !from_content => {
                Some(self.int_val.iter().map(|&v| f64::from(v)).collect())
            }
            DataType::DtInt64 if from_content => le(content, |b| i64::from_le_bytes(b) as f64),
            DataType::DtInt64 => Some(self.int64_val.iter().map(|&v| v as f64).collect()),
            _ => None,
        }
    }
}
