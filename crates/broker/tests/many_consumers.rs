//! A queue with 100,000 consumers (reliability issue F3: closing their channel cancels them
//! one by one, under the queue lock). Attaching and cancelling every one of them must stay
//! correct at that size: round-robin keeps its place while consumers before it, at it and
//! after it go, a cancelled consumer gets nothing, and the last cancel auto-deletes the queue.
//! (Speed is measured, not asserted: `cargo test --release --test many_consumers`.)

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use common::{CountWake, message, queue};
use lepus_broker::outlet::{ConsumerId, Outbound, Outlet, OutletRef};
use lepus_broker::queue::{ChannelGate, ConsumerSpec, Queue};

const CONSUMERS: u64 = 100_000;

fn spec(id: u64, outlet: &OutletRef, gate: &Arc<ChannelGate>) -> ConsumerSpec {
    ConsumerSpec {
        id: ConsumerId(id),
        outlet: outlet.clone(),
        ack_required: false,
        prefetch: 0,
        gate: gate.clone(),
        priority: 0,
        exclusive: false,
    }
}

/// Publishes one message and returns the consumer it went to.
fn deliver_one(queue: &Arc<Queue>, outlet: &OutletRef) -> ConsumerId {
    queue.publish(message());
    let mut items = Vec::new();
    outlet.drain_into(&mut items);
    match items.as_slice() {
        [Outbound::Deliver(d)] => {
            queue.ack(Some(d.consumer), std::iter::once(d.seq));
            d.consumer
        }
        other => panic!("expected one delivery, got {other:?}"),
    }
}

#[test]
fn a_hundred_thousand_consumers_attach_and_cancel_one_by_one() {
    let queue = queue(true);
    let outlet: OutletRef = Arc::new(Outlet::new(Box::new(CountWake(Arc::new(AtomicUsize::new(0))))));
    let gate = Arc::new(ChannelGate::default());
    for id in 0..CONSUMERS {
        queue.consume(spec(id, &outlet, &gate)).expect("consumer attaches");
    }
    assert_eq!(queue.consumer_count() as u64, CONSUMERS);
    for id in 0..3 {
        assert_eq!(deliver_one(&queue, &outlet), ConsumerId(id), "round-robin in attach order");
    }
    // Consumers before the round-robin position, then the one at it: the next is the one after.
    for id in 0..4 {
        assert!(!queue.cancel(ConsumerId(id)));
    }
    assert!(!queue.cancel(ConsumerId(0)), "cancelling twice changes nothing");
    assert_eq!(deliver_one(&queue, &outlet), ConsumerId(4));
    // From the far end back: the position stays on consumer 5 throughout.
    for id in (6..CONSUMERS).rev() {
        assert!(!queue.cancel(ConsumerId(id)));
        if id % 10_000 == 0 {
            assert_eq!(queue.consumer_count() as u64, id - 4);
        }
    }
    assert_eq!(queue.consumer_count(), 2);
    assert_eq!(deliver_one(&queue, &outlet), ConsumerId(5));
    assert_eq!(deliver_one(&queue, &outlet), ConsumerId(4), "wraps around to the first left");
    assert_eq!(deliver_one(&queue, &outlet), ConsumerId(5));
    assert!(!queue.cancel(ConsumerId(5)));
    assert_eq!(deliver_one(&queue, &outlet), ConsumerId(4));
    assert!(queue.cancel(ConsumerId(4)), "the last cancel auto-deletes the queue");
    assert_eq!(queue.consumer_count(), 0);
}
