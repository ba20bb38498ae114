//! TensorFlow's protocol buffers, written as prost messages by hand (field
//! numbers from the `.proto` files each module names), so building needs no
//! `protoc`. Unknown fields are skipped when parsing.

pub mod bundle;
pub mod event;
pub mod graph;
pub mod summary;
pub mod tensor;
