//! A queue with a single active consumer (`x-single-active-consumer: true`), driven as the
//! AMQP front end drives it: only the active consumer is fed; when it is cancelled, what it
//! had been assigned but its connection had not taken comes back to its place and the next
//! consumer takes over in queue order; when its channel closes (gate paused, unacked requeued,
//! then cancelled, as `release_channel_resources` does) the next one gets the requeued
//! messages first, at their original positions.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{acking_consumer, message, outlet};
use lepus_broker::BrokerError;
use lepus_broker::outlet::{ConsumerId, Delivery, Outbound, OutletRef};
use lepus_broker::queue::{ConsumerSpec, Queue, QueueLimits};
use lepus_protocol::{FieldTable, FieldValue, ShortStr};

fn sac_queue() -> Arc<Queue> {
    let args = FieldTable::new().with("x-single-active-consumer", FieldValue::Bool(true));
    Arc::new(Queue::new(ShortStr::from_static("q"), "/".into(), false, None, false, args, QueueLimits::default()))
}

/// What the queue pushed onto `outlet` since the last call: (consumer, seq, redelivered).
fn taken(outlet: &OutletRef) -> Vec<(u64, u64, bool)> {
    let mut items = Vec::new();
    outlet.drain_into(&mut items);
    items
        .into_iter()
        .map(|item| match item {
            Outbound::Deliver(Delivery { consumer, seq, redelivered, .. }) => (consumer.0, seq, redelivered),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn deliveries(outlet: &OutletRef) -> Vec<Delivery> {
    let mut items = Vec::new();
    outlet.drain_into(&mut items);
    items
        .into_iter()
        .map(|item| match item {
            Outbound::Deliver(d) => d,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn attach(queue: &Arc<Queue>, spec: ConsumerSpec) {
    queue.consume(spec).expect("consumer attaches");
}

#[test]
fn only_the_active_consumer_is_fed_and_cancel_hands_over_in_queue_order() {
    let queue = sac_queue();
    let (a, b, c) = (outlet(), outlet(), outlet());
    attach(&queue, acking_consumer(1, &a, 3));
    attach(&queue, acking_consumer(2, &b, 0));
    attach(&queue, acking_consumer(3, &c, 0));
    assert_eq!(queue.active_consumer(), Some(ConsumerId(1)));
    for _ in 0..5 {
        queue.publish(message());
    }
    // The active consumer takes up to its prefetch; the others, with unlimited credit, wait.
    assert_eq!(taken(&a), [(1, 0, false), (1, 1, false), (1, 2, false)]);
    assert!(taken(&b).is_empty() && taken(&c).is_empty());
    assert_eq!(queue.message_count(), 2);

    // Cancelling a waiting consumer changes nothing.
    assert!(!queue.cancel(ConsumerId(3)));
    assert_eq!(queue.active_consumer(), Some(ConsumerId(1)));
    assert!(taken(&b).is_empty());

    // Consumer 1 received seqs 0 and 1 (its connection drained them); seq 2 is still in
    // its outlet when it is cancelled.
    queue.publish(message());
    let mut first = deliveries(&a);
    assert!(first.is_empty(), "at its prefetch");
    queue.ack(Some(ConsumerId(1)), std::iter::once(0));
    first = deliveries(&a);
    assert_eq!(first.iter().map(|d| d.seq).collect::<Vec<_>>(), [3]);
    // Put 3 back in the outlet, as if not yet taken by the connection.
    for d in first {
        a.push(Outbound::Deliver(d));
    }
    assert!(!queue.cancel(ConsumerId(1)));
    assert!(taken(&a).is_empty(), "nothing more for the cancelled consumer");
    assert_eq!(queue.active_consumer(), Some(ConsumerId(2)));
    // Seq 3 came back from the outlet, never having reached the client: not redelivered.
    assert_eq!(taken(&b), [(2, 3, false), (2, 4, false), (2, 5, false)]);
    assert_eq!(queue.message_count(), 0);
    // Consumer 1's unacked seqs 1 and 2 are requeued later (nacked by its client): they go to
    // the active consumer, redelivered.
    queue.requeue(vec![(1, message()), (2, message())], Some(ConsumerId(1)));
    assert_eq!(taken(&b), [(2, 1, true), (2, 2, true)]);
}

#[test]
fn a_closing_channel_hands_over_with_its_unacked_messages_first() {
    let queue = sac_queue();
    let (a, b) = (outlet(), outlet());
    let active = acking_consumer(1, &a, 2);
    let gate = active.gate.clone();
    attach(&queue, active);
    attach(&queue, acking_consumer(2, &b, 0));
    for _ in 0..5 {
        queue.publish(message());
    }
    let unacked = deliveries(&a);
    assert_eq!(unacked.iter().map(|d| d.seq).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(gate.unacked.load(Ordering::Acquire), 2);
    // The channel closes: nothing more goes to it, its unacked deliveries are requeued while
    // its consumer is still attached, then it is cancelled.
    gate.paused.store(true, Ordering::Release);
    gate.release(2);
    queue.requeue(unacked.into_iter().map(|d| (d.seq, d.message)).collect(), Some(ConsumerId(1)));
    assert!(taken(&a).is_empty() && taken(&b).is_empty(), "the active consumer is paused: nobody is fed");
    assert!(!queue.cancel(ConsumerId(1)));
    assert_eq!(queue.active_consumer(), Some(ConsumerId(2)));
    assert_eq!(taken(&b), [(2, 0, true), (2, 1, true), (2, 2, false), (2, 3, false), (2, 4, false)]);
    assert_eq!(gate.unacked.load(Ordering::Acquire), 0);
}

#[test]
fn exclusive_consumers_are_refused() {
    let queue = sac_queue();
    let o = outlet();
    let exclusive = ConsumerSpec { exclusive: true, ..acking_consumer(1, &o, 0) };
    assert_eq!(
        queue.consume(exclusive),
        Err(BrokerError::AccessRefused("queue 'q' in vhost '/' in exclusive use".into()))
    );
    attach(&queue, acking_consumer(2, &o, 0));
    assert_eq!(queue.active_consumer(), Some(ConsumerId(2)));
}

#[test]
fn a_plain_queue_takes_back_what_a_cancelled_consumer_had_not_received() {
    let queue = common::queue(false);
    let (a, b) = (outlet(), outlet());
    attach(&queue, acking_consumer(1, &a, 0));
    attach(&queue, acking_consumer(2, &b, 0));
    queue.publish(message());
    queue.publish(message());
    assert_eq!(queue.active_consumer(), None);
    assert_eq!(taken(&b), [(2, 1, false)]);
    // Seq 0 is still in consumer 1's outlet: cancelling it gives the message to consumer 2.
    assert!(!queue.cancel(ConsumerId(1)));
    assert!(taken(&a).is_empty());
    assert_eq!(taken(&b), [(2, 0, false)]);
}
