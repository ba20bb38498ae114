//! A small builder over ONNX's protobuf types: nodes with typed attributes,
//! f32 initializers and the graph's inputs and outputs.

use candle_onnx::onnx::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (`"batch"`), any value at run time.
    Named(&'static str),
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOAT`.
    Float(f32),
}

impl Attr {
    /// `[h, w]` sizes as `INTS`.
    pub fn pair(v: [usize; 2]) -> Attr {
        Attr::Ints(v.iter().map(|&x| x as i64).collect())
    }

    fn proto(&self, name: &str) -> AttributeProto {
        let mut a = AttributeProto { name: name.to_string(), ..Default::default() };
        match self {
            Attr::Int(i) => {
                a.r#type = AttributeType::Int as i32;
                a.i = *i;
            }
            Attr::Ints(v) => {
                a.r#type = AttributeType::Ints as i32;
                a.ints = v.clone();
            }
            Attr::Float(f) => {
                a.r#type = AttributeType::Float as i32;
                a.f = *f;
            }
        }
        a
    }
}

/// A graph under construction. Node and value names are the node's scope
/// (`conv1/Conv`), made unique with a suffix when a scope repeats.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    graph: GraphProto,
    used: std::collections::HashSet<String>,
}

impl OnnxGraph {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        OnnxGraph { graph: GraphProto { name: name.to_string(), ..Default::default() }, ..Default::default() }
    }

    fn unique(&mut self, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut i = 1;
        while !self.used.insert(candidate.clone()) {
            candidate = format!("{name}_{i}");
            i += 1;
        }
        candidate
    }

    /// Adds the node `op_type` named `name` reading `inputs`; returns the name
    /// of its (single) output.
    pub fn node(&mut self, op_type: &str, name: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let name = self.unique(name);
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.clone()],
            name: name.clone(),
            op_type: op_type.to_string(),
            attribute: attrs.iter().map(|(n, a)| a.proto(n)).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds an f32 initializer (a constant input) called `name`.
    ///
    /// # Shapes
    /// `values.len()` = the product of `dims`.
    pub fn initializer_f32(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(values.len(), dims.iter().product::<usize>());
        let name = self.unique(name);
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            name: name.clone(),
            // ONNX's raw_data is little-endian whatever the host (onnx.proto3, `raw_data`).
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds an int64 initializer (e.g. a `Pad`'s `pads` input); returns its name.
    ///
    /// # Shapes
    /// `values.len()` = the product of `dims`.
    pub fn initializer_i64(&mut self, name: &str, dims: &[usize], values: &[i64]) -> String {
        debug_assert_eq!(values.len(), dims.iter().product::<usize>());
        let name = self.unique(name);
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Int64 as i32,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Declares a float graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) {
        self.used.insert(name.to_string());
        self.graph.input.push(value_info(name, dims));
    }

    /// Declares a float graph output: `value` (a node output) under the name
    /// `name` (through an Identity when they differ).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        if value != name {
            // Output names are not scopes (`logits`, not `fc3/Gemm`), so they are free.
            self.used.insert(name.to_string());
            self.graph.node.push(NodeProto {
                input: vec![value.to_string()],
                output: vec![name.to_string()],
                name: name.to_string(),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        self.graph.output.push(value_info(name, dims));
    }

    /// The finished graph.
    pub fn finish(self) -> GraphProto {
        self.graph
    }
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
