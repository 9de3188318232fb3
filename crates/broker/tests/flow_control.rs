//! Publisher flow control at the queue: a queue with consumers is congested above the high
//! watermark, stays so (hysteresis) until it is back under the low one, and then wakes the
//! publishing connections that waited for it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{CountWake, message, queue};
use lepus_broker::outlet::{ConsumerId, Outbound, Outlet};
use lepus_broker::queue::{Enqueued, FLOW_HIGH_MESSAGES, FLOW_LOW_MESSAGES};

#[test]
fn congestion_pauses_publishers_until_the_low_watermark() {
    let queue = queue(false);
    let m = message();
    // Without consumers a queue is never congested (nothing would drain it).
    for _ in 0..FLOW_HIGH_MESSAGES + 10 {
        assert_eq!(queue.publish(m.clone()), Enqueued::Yes);
    }
    assert_eq!(queue.purge() as usize, FLOW_HIGH_MESSAGES + 10);

    // A consumer that takes one message and never acks.
    let consumer_outlet = common::outlet();
    let consumer = ConsumerId(1);
    queue.consume(common::acking_consumer(1, &consumer_outlet, 1)).expect("consumer attaches");
    let mut outcomes = Vec::new();
    for _ in 0..FLOW_HIGH_MESSAGES + 2 {
        outcomes.push(queue.publish(m.clone()));
    }
    // One message went to the consumer; the queue is congested once ready > high watermark.
    assert_eq!(outcomes.iter().filter(|o| **o == Enqueued::Congested).count(), 1);
    assert_eq!(outcomes.last(), Some(&Enqueued::Congested));

    let wakes = Arc::new(AtomicUsize::new(0));
    let publisher = Arc::new(Outlet::new(Box::new(CountWake(wakes.clone()))));
    assert!(queue.wait_for_relief(&publisher), "congested: the publisher must wait");
    assert!(!queue.is_relieved());
    // Draining to just above the low watermark is not enough (hysteresis).
    while queue.message_count() as usize > FLOW_LOW_MESSAGES + 1 {
        queue.get(None).message();
    }
    assert!(!queue.is_relieved());
    assert_eq!(wakes.load(Ordering::SeqCst), 0);
    // Settling the consumer's delivery assigns one more: ready drops to the low watermark,
    // and the waiting publisher is woken.
    let mut delivered = Vec::new();
    consumer_outlet.drain_into(&mut delivered);
    let Some(Outbound::Deliver(d)) = delivered.first() else { panic!("one delivery: {delivered:?}") };
    queue.ack(Some(consumer), std::iter::once(d.seq));
    assert!(queue.is_relieved());
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert!(!queue.wait_for_relief(&publisher), "relieved: nothing to wait for");
}
