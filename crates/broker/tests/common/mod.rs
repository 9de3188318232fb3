//! What the queue tests share: a wake-up that counts, a small message, a plain queue.
#![allow(dead_code)]

pub mod clocked;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use lepus_broker::outlet::{ConsumerId, Outlet, OutletRef, Wake};
use lepus_broker::queue::{ChannelGate, ConsumerSpec, Queue, QueueLimits};
use lepus_broker::{Message, MessageRef};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, ShortStr};

/// Counts the times its connection is woken.
pub struct CountWake(pub Arc<AtomicUsize>);

impl Wake for CountWake {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A transient one-byte message.
pub fn message() -> MessageRef {
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, 1, &BasicProperties::default().to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("valid header");
    Arc::new(Message::new(b"", b"q", &header, b"x"))
}

/// A non-durable queue `q` in vhost `/`, without limits.
pub fn queue(auto_delete: bool) -> Arc<Queue> {
    Arc::new(Queue::new(
        ShortStr::from_static("q"),
        "/".into(),
        false,
        None,
        auto_delete,
        FieldTable::new(),
        QueueLimits::default(),
    ))
}

/// An outlet whose wake-ups are not counted.
pub fn outlet() -> OutletRef {
    Arc::new(Outlet::new(Box::new(CountWake(Arc::new(AtomicUsize::new(0))))))
}

/// A consumer that acknowledges, with per-consumer `prefetch`, on a channel of its own.
pub fn acking_consumer(id: u64, outlet: &OutletRef, prefetch: u32) -> ConsumerSpec {
    ConsumerSpec {
        id: ConsumerId(id),
        outlet: outlet.clone(),
        ack_required: true,
        prefetch,
        gate: Arc::new(ChannelGate::default()),
        priority: 0,
        exclusive: false,
    }
}
