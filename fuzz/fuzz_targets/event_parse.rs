//! TensorBoard events: arbitrary bytes through `Event`, an embedded `GraphDef`,
//! and the accessors of every summary value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tfrecord::proto::event::{Event, What};
use tfrecord::proto::graph::GraphDef;
use tfrecord::proto::summary::ValueKind;

fuzz_target!(|data: &[u8]| {
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
});
