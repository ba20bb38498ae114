//! `tensorflow.GraphDef`, `NodeDef` and `AttrValue`
//! (`tensorflow/core/framework/{graph,node_def,attr_value,versions}.proto`),
//! enough for TensorBoard's graph view; function libraries are skipped.

use std::collections::BTreeMap;

use prost::Message;

use super::tensor::{TensorProto, TensorShapeProto};

/// `tensorflow.AttrValue.ListValue`.
#[derive(Clone, PartialEq, Message)]
pub struct ListValue {
    /// Strings.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub s: Vec<Vec<u8>>,
    /// Integers.
    #[prost(int64, repeated, tag = "3")]
    pub i: Vec<i64>,
    /// Floats.
    #[prost(float, repeated, tag = "4")]
    pub f: Vec<f32>,
    /// Booleans.
    #[prost(bool, repeated, tag = "5")]
    pub b: Vec<bool>,
    /// Data types.
    #[prost(enumeration = "super::tensor::DataType", repeated, tag = "6")]
    pub r#type: Vec<i32>,
    /// Shapes.
    #[prost(message, repeated, tag = "7")]
    pub shape: Vec<TensorShapeProto>,
}

/// The `oneof value` of `tensorflow.AttrValue`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AttrKind {
    /// `list = 1`.
    #[prost(message, tag = "1")]
    List(ListValue),
    /// `s = 2`.
    #[prost(bytes, tag = "2")]
    S(Vec<u8>),
    /// `i = 3`.
    #[prost(int64, tag = "3")]
    I(i64),
    /// `f = 4`.
    #[prost(float, tag = "4")]
    F(f32),
    /// `b = 5`.
    #[prost(bool, tag = "5")]
    B(bool),
    /// `type = 6`.
    #[prost(enumeration = "super::tensor::DataType", tag = "6")]
    Type(i32),
    /// `shape = 7`.
    #[prost(message, tag = "7")]
    Shape(TensorShapeProto),
    /// `tensor = 8`.
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.AttrValue`.
#[derive(Clone, PartialEq, Message)]
pub struct AttrValue {
    /// The value.
    #[prost(oneof = "AttrKind", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<AttrKind>,
}

impl AttrValue {
    /// A string attribute.
    pub fn string(s: impl Into<Vec<u8>>) -> Self {
        AttrValue { value: Some(AttrKind::S(s.into())) }
    }

    /// An integer attribute.
    pub fn int(i: i64) -> Self {
        AttrValue { value: Some(AttrKind::I(i)) }
    }

    /// An integer-list attribute (strides, ksize…).
    pub fn ints(values: &[i64]) -> Self {
        AttrValue { value: Some(AttrKind::List(ListValue { i: values.to_vec(), ..Default::default() })) }
    }

    /// A float attribute.
    pub fn float(f: f32) -> Self {
        AttrValue { value: Some(AttrKind::F(f)) }
    }

    /// A boolean attribute.
    pub fn bool(b: bool) -> Self {
        AttrValue { value: Some(AttrKind::B(b)) }
    }

    /// A dtype attribute.
    pub fn dtype(t: super::tensor::DataType) -> Self {
        AttrValue { value: Some(AttrKind::Type(t as i32)) }
    }

    /// A shape attribute.
    pub fn shape(dims: &[i64]) -> Self {
        AttrValue { value: Some(AttrKind::Shape(TensorShapeProto::from_dims(dims))) }
    }
}

/// `tensorflow.NodeDef`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeDef {
    /// Fully scoped name (`conv1/BatchNorm/FusedBatchNorm`); TensorBoard groups
    /// nodes by the `/`-separated prefixes.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Op type (`Conv2D`).
    #[prost(string, tag = "2")]
    pub op: String,
    /// Input node names (`^name` for control inputs, `name:1` for outputs > 0).
    #[prost(string, repeated, tag = "3")]
    pub input: Vec<String>,
    /// Device (`/device:CPU:0`), may be empty.
    #[prost(string, tag = "4")]
    pub device: String,
    /// Attributes.
    #[prost(btree_map = "string, message", tag = "5")]
    pub attr: BTreeMap<String, AttrValue>,
}

/// `tensorflow.VersionDef`.
#[derive(Clone, PartialEq, Message)]
pub struct VersionDef {
    /// The producer's GraphDef version.
    #[prost(int32, tag = "1")]
    pub producer: i32,
    /// The oldest consumer version that can read it.
    #[prost(int32, tag = "2")]
    pub min_consumer: i32,
    /// Consumer versions that must not read it.
    #[prost(int32, repeated, tag = "3")]
    pub bad_consumers: Vec<i32>,
}

/// `tensorflow.GraphDef`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphDef {
    /// The nodes.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeDef>,
    /// Deprecated single version.
    #[prost(int32, tag = "3")]
    pub version: i32,
    /// Versions.
    #[prost(message, optional, tag = "4")]
    pub versions: Option<VersionDef>,
}
