//! A requeue in pieces (a channel closing with many unacknowledged messages, RELIABILITY.md
//! F3): while a [`RequeueHold`] is held the queue delivers nothing, so a consumer never gets a
//! later message before an earlier one still to come back; dropped, the queue delivers again,
//! the requeued messages first, at their original positions, redelivered. A `basic.get` waits
//! for the hold to end (woken then), so it too sees the requeue as one step.

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{CountWake, acking_consumer, outlet, queue};
use lepus_broker::outlet::{ConsumerId, Delivery, Outbound, Outlet, OutletRef};
use lepus_broker::queue::{Got, Queue, RequeueHold};
use lepus_broker::{Message, MessageRef};
use lepus_protocol::{BasicProperties, ContentHeader};

fn numbered(i: usize) -> MessageRef {
    let body = format!("m{i}");
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, body.len() as u64, &BasicProperties::default().to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("header");
    Arc::new(Message::new(b"", b"q", &header, body))
}

fn deliveries(outlet: &OutletRef) -> Vec<Delivery> {
    let mut items = Vec::new();
    outlet.drain_into(&mut items);
    items
        .into_iter()
        .filter_map(|o| match o {
            Outbound::Deliver(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn bodies(ds: &[Delivery]) -> Vec<(String, bool)> {
    ds.iter().map(|d| (String::from_utf8_lossy(d.message.body()).into_owned(), d.redelivered)).collect()
}

/// A queue of m0..m9 whose consumer 1 (prefetch 6) holds m0..m5 unacked: the queue and
/// those deliveries.
fn six_of_ten_unacked() -> (Arc<Queue>, Vec<Delivery>) {
    let q: Arc<Queue> = queue(false);
    let first = outlet();
    q.consume(acking_consumer(1, &first, 6)).expect("consume");
    for i in 0..10 {
        q.publish(numbered(i));
    }
    let held = deliveries(&first);
    (q, held)
}

#[test]
fn a_held_queue_delivers_nothing_until_the_whole_requeue_is_back() {
    let (q, held) = six_of_ten_unacked();
    assert_eq!(held.len(), 6, "m0..m5 unacked by the first consumer; m6..m9 ready");
    // Its channel closes: the queue is held, a second consumer attaches, the requeue comes
    // back in two pieces.
    let hold = RequeueHold::new(q.clone());
    let second = outlet();
    q.consume(acking_consumer(2, &second, 0)).expect("consume");
    assert!(deliveries(&second).is_empty(), "nothing delivered while held, not even m6..m9");
    let (a, b) = held.split_at(3);
    for piece in [a, b] {
        q.requeue(piece.iter().map(|d| (d.seq, d.message.clone())).collect(), Some(ConsumerId(1)));
        assert!(deliveries(&second).is_empty(), "nothing delivered between pieces");
        q.publish(numbered(100));
    }
    // The closing channel's consumer goes (in the broker its gate is paused already).
    q.cancel(ConsumerId(1));
    drop(hold);
    let got = bodies(&deliveries(&second));
    let mut expected: Vec<(String, bool)> = (0..10).map(|i| (format!("m{i}"), i < 6)).collect();
    expected.extend([("m100".to_string(), false), ("m100".to_string(), false)]);
    assert_eq!(got, expected, "requeued first, at their positions, redelivered; then the rest in order");
}

#[test]
fn a_hold_on_a_deleted_queue_is_dropped_quietly() {
    let q: Arc<Queue> = queue(false);
    let hold = RequeueHold::new(q.clone());
    q.publish(numbered(0));
    assert_eq!(q.delete(), 1);
    drop(hold);
    assert_eq!(q.message_count(), 0);
}

fn body_of(got: Got) -> (String, bool) {
    match got {
        Got::Message(entry, _) => (String::from_utf8_lossy(entry.message.body()).into_owned(), entry.redelivered),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn a_get_waits_for_the_hold_and_then_takes_the_first_requeued_message() {
    let (q, held) = six_of_ten_unacked();
    let hold = RequeueHold::new(q.clone());
    q.cancel(ConsumerId(1));
    // Another channel's get, while m6..m9 are ready and m0..m5 still to come back: it waits,
    // and is woken once, when the hold ends.
    let wakes = Arc::new(AtomicUsize::new(0));
    let getter: OutletRef = Arc::new(Outlet::new(Box::new(CountWake(wakes.clone()))));
    assert!(matches!(q.get(Some(&getter)), Got::Held), "not m6, from behind the requeue");
    assert!(matches!(q.get(Some(&getter)), Got::Held), "asked again: still held, registered once");
    assert_eq!(q.held_gets(), 1);
    let (a, b) = held.split_at(3);
    q.requeue(b.iter().map(|d| (d.seq, d.message.clone())).collect(), Some(ConsumerId(1)));
    assert!(matches!(q.get(Some(&getter)), Got::Held), "between pieces: still held");
    q.requeue(a.iter().map(|d| (d.seq, d.message.clone())).collect(), Some(ConsumerId(1)));
    assert_eq!(wakes.load(Ordering::SeqCst), 0, "not woken before the hold ends");
    drop(hold);
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "woken when the hold ends");
    assert_eq!(q.held_gets(), 0);
    assert_eq!(body_of(q.get(Some(&getter))), ("m0".to_string(), true), "the first requeued message");
    let rest: Vec<(String, bool)> = std::iter::from_fn(|| q.get(None).message())
        .map(|(e, _)| (String::from_utf8_lossy(e.message.body()).into_owned(), e.redelivered))
        .collect();
    let expected: Vec<(String, bool)> = (1..10).map(|i| (format!("m{i}"), i < 6)).collect();
    assert_eq!(rest, expected, "nothing lost or duplicated, in order");
}

#[test]
fn a_get_waiting_on_a_deleted_queue_is_woken_and_finds_it_empty() {
    let q: Arc<Queue> = queue(false);
    let _hold = RequeueHold::new(q.clone());
    q.publish(numbered(0));
    let wakes = Arc::new(AtomicUsize::new(0));
    let getter: OutletRef = Arc::new(Outlet::new(Box::new(CountWake(wakes.clone()))));
    assert!(matches!(q.get(Some(&getter)), Got::Held));
    q.delete();
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "woken by the deletion");
    assert!(matches!(q.get(Some(&getter)), Got::Empty), "a deleted queue is not held");
}
