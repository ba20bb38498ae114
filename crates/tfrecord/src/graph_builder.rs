//! Builds a `GraphDef` whose node names carry name scopes, so TensorBoard's
//! graph view groups `conv1/Conv2D`, `conv1/BatchNorm/…` under `conv1`.

use std::collections::HashSet;

use crate::proto::graph::{AttrValue, GraphDef, NodeDef, VersionDef};

/// The GraphDef producer version written (TF 2.x graphs carry a producer of
/// this order; TensorBoard only displays it).
const PRODUCER: i32 = 1994;

/// Builds a graph node by node under nested name scopes.
///
/// ```
/// use tfrecord::GraphBuilder;
/// let mut g = GraphBuilder::new();
/// let x = g.node("Placeholder", "input", &[]);
/// let y = g.scope("conv1", |g| {
///     let w = g.node("VariableV2", "weights", &[]);
///     g.node("Conv2D", "Conv2D", &[&x, &w])
/// });
/// assert_eq!(y, "conv1/Conv2D");
/// assert_eq!(g.node("Relu", "Relu", &[&y]), "Relu");
/// assert_eq!(g.node("Relu", "Relu", &[&y]), "Relu_1"); // unique, as TF
/// assert_eq!(g.build().node.len(), 5);
/// ```
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeDef>,
    scopes: Vec<String>,
    names: HashSet<String>,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `name` pushed onto the scope stack.
    pub fn scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.scopes.push(name.to_string());
        let result = f(self);
        self.scopes.pop();
        result
    }

    /// Adds a node and returns its full, unique name.
    pub fn node(&mut self, op: &str, name: &str, inputs: &[&str]) -> String {
        self.node_with_attrs(op, name, inputs, Vec::new())
    }

    /// Adds a node with attributes and returns its full, unique name.
    pub fn node_with_attrs(&mut self, op: &str, name: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> String {
        let mut base = self.scopes.join("/");
        if !base.is_empty() {
            base.push('/');
        }
        base.push_str(name);
        let mut full = base.clone();
        let mut n = 0;
        while self.names.contains(&full) {
            n += 1;
            full = format!("{base}_{n}");
        }
        self.names.insert(full.clone());
        self.nodes.push(NodeDef {
            name: full.clone(),
            op: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            device: String::new(),
            attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
        full
    }

    /// The finished graph.
    pub fn build(self) -> GraphDef {
        GraphDef {
            node: self.nodes,
            version: 0,
            versions: Some(VersionDef { producer: PRODUCER, min_consumer: 0, bad_consumers: Vec::new() }),
        }
    }
}
