//! A queue's message counters: what was enqueued, delivered, fetched and redelivered.

mod common;

use common::{message, queue};
use lepus_broker::outlet::{ConsumerId, Outbound};
use lepus_broker::stats::Stat;

#[test]
fn a_queue_counts_what_enters_and_leaves_it() {
    let q = queue(false);
    for _ in 0..4 {
        q.publish(message());
    }
    let (first, _) = q.get(None).message().expect("a message");
    q.requeue(vec![(first.seq, first.message)], None);
    let (again, _) = q.get(None).message().expect("the requeued message");
    assert!(again.redelivered);

    let outlet = common::outlet();
    let consumer = ConsumerId(1);
    q.consume(common::acking_consumer(1, &outlet, 2)).expect("consumer attaches");
    let mut delivered = Vec::new();
    outlet.drain_into(&mut delivered);
    let seqs: Vec<u64> = delivered
        .iter()
        .filter_map(|d| match d {
            Outbound::Deliver(d) => Some(d.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 2, "prefetch 2");
    q.ack(Some(consumer), seqs.into_iter());

    let s = q.stats();
    let counts = [Stat::Published, Stat::Get, Stat::Delivered, Stat::Redelivered];
    assert_eq!(counts.map(|c| s.get(c)), [4, 2, 3, 1], "the last message went out after the acks");
    assert_eq!(q.message_count(), 0);
}
