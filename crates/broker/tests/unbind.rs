//! Queues deleted with no client waiting (auto-delete when the last consumer goes, exclusive
//! clean-up when the owner's connection closes, `x-expires`) lose their bindings a step at a
//! time on the timer service, as `queue.delete` does (RELIABILITY.md F3). On a manual clock the
//! test fires the timers itself, one firing per step: between two steps another publisher's
//! messages are routed and kept, in order; the deleted queue is unroutable from the start, and
//! its bindings are all gone at the end.

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use lepus_broker::exchange::Destination;
use lepus_broker::queue::QueueRef;
use lepus_broker::vhost::{ExchangeDeclare, QueueDeclare, UNBIND_STEP_MAX};
use lepus_broker::{Message, MessageHeaders, Publish};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue};

use common::clocked::*;
use common::{acking_consumer, outlet};

/// More bindings than two steps remove: three steps.
const MANY: usize = 2 * UNBIND_STEP_MAX + 10;

/// Exchange `x` with [`MANY`] keys `k0`… to `q` (declared by the caller, on connection
/// `connection_id`) and key `k0` to queue `other`.
fn bind_many(t: &Setup, q: &str, connection_id: u64) -> QueueRef {
    let x = ExchangeDeclare { name: s("x"), kind: "direct".into(), ..Default::default() };
    t.vhost.declare_exchange(&x).expect("exchange");
    let other = t.declare("other", FieldTable::new());
    let none = FieldTable::new();
    t.vhost.bind(Destination::Queue(s("other")), &s("x"), &s("k0"), &none, 1).expect("bind");
    for i in 0..MANY {
        let key = s(&format!("k{i}"));
        t.vhost.bind(Destination::Queue(s(q)), &s("x"), &key, &none, connection_id).expect("bind");
    }
    other
}

/// Publishes `body` to exchange `x` with routing key `key`; whether a queue took it.
fn publish_x(t: &Setup, key: &str, body: &[u8]) -> bool {
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, body.len() as u64, &BasicProperties::default().to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("header");
    let message = Arc::new(Message::new(b"x", key.as_bytes(), &header, body));
    let mut publisher = t.broker.publisher(t.vhost.clone());
    publisher.publish(Publish { message, extra_keys: &[], headers: MessageHeaders::None }).expect("publish").routed
}

fn bindings_to(t: &Setup, q: &str) -> usize {
    let to_q = |d: &Destination| matches!(d, Destination::Queue(n) if n.as_bytes() == q.as_bytes());
    t.vhost.binding_views().iter().filter(|b| !b.source.is_empty() && to_q(&b.destination)).count()
}

/// After `q` left its vhost: fires the unbinding timer one step at a time, publishing to
/// `other` between steps, and checks the steps taken, the order kept and the bindings gone.
fn unbind_step_by_step(t: &Setup, q: &str, other: &QueueRef) {
    assert!(t.vhost.unbinding_pending(), "bindings left for the timer");
    assert_eq!(bindings_to(t, q), 0, "not listed while being removed");
    assert!(!publish_x(t, &format!("k{}", MANY - 1), b"lost"), "unroutable from the start");
    let steps_before = t.vhost.unbind_steps();
    let mut sent = Vec::new();
    let mut firings = 0;
    while t.vhost.unbinding_pending() {
        let body = format!("m{firings}").into_bytes();
        assert!(publish_x(t, "k0", &body), "another publisher is served between steps");
        sent.push(body);
        assert!(t.broker.timers().fire_due() > 0, "the unbinding timer is due");
        firings += 1;
    }
    assert_eq!(firings, MANY.div_ceil(UNBIND_STEP_MAX), "one step per firing");
    assert_eq!(t.vhost.unbind_steps() - steps_before, firings as u64);
    assert_eq!(drain(other), sent, "every message to the other queue, in order");
    assert_eq!(bindings_to(t, "other"), 1);
    assert!(!publish_x(t, "k1", b"lost"), "no binding left to route through");
    t.vhost.declare_queue(&QueueDeclare { name: s(q), ..Default::default() }, 1).expect("declare again");
    assert_eq!(bindings_to(t, q), 0, "a queue of the same name inherits nothing");
}

#[test]
fn an_auto_deleted_queue_is_unbound_a_step_at_a_time() {
    let t = setup();
    let d = QueueDeclare { name: s("q"), auto_delete: true, ..Default::default() };
    let (q, _, _) = t.vhost.declare_queue(&d, 1).expect("declare");
    let other = bind_many(&t, "q", 1);
    let consumer = acking_consumer(1, &outlet(), 0);
    let id = consumer.id;
    q.consume(consumer).expect("consume");
    assert!(q.cancel(id), "the last consumer left: auto-delete");
    t.vhost.remove_queue(&q);
    unbind_step_by_step(&t, "q", &other);
}

#[test]
fn an_exclusive_queue_of_a_closed_connection_is_unbound_a_step_at_a_time() {
    let t = setup();
    let d = QueueDeclare { name: s("q"), exclusive: true, ..Default::default() };
    t.vhost.declare_queue(&d, 7).expect("declare");
    let other = bind_many(&t, "q", 7);
    t.vhost.remove_exclusive_queues(7);
    unbind_step_by_step(&t, "q", &other);
}

#[test]
fn an_expired_queue_is_unbound_a_step_at_a_time() {
    let t = setup();
    t.declare("q", FieldTable::new().with("x-expires", FieldValue::I32(1000)));
    let other = bind_many(&t, "q", 1);
    t.clock.advance(1000);
    // The queue's timer: the queue leaves its vhost, and the unbinding timer is armed.
    assert!(t.broker.timers().fire_due() > 0);
    assert!(t.vhost.queue(&s("q"), 1).is_err(), "expired");
    unbind_step_by_step(&t, "q", &other);
}
