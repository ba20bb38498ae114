//! TensorBoard events: arbitrary bytes through `Event`, an embedded
//! `GraphDef`, and the accessors of every summary value.

use prost::Message;
use tfrecord::proto::event::{Event, What};
use tfrecord::proto::graph::GraphDef;
use tfrecord::proto::summary::ValueKind;

/// The body of the `event_parse` target.
pub fn event_parse(data: &[u8]) {
    let Ok(event) = Event::decode(data) else { return };
    match &event.what {
        Some(What::GraphDef(bytes)) => {
            let _ = GraphDef::decode(bytes.as_slice());
        }
        Some(What::Summary(summary)) => {
            for value in &summary.value {
                let _ = (value.scalar(), value.text(), value.plugin_name());
                if let Some(ValueKind::Tensor(tensor)) = &value.value {
                    let _ = tensor.to_f64_vec();
                }
            }
        }
        _ => {}
    }
}
