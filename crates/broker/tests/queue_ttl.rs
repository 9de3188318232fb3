//! Message TTL, queue expiry, length limits and dead-lettering, on a broker with a manual
//! clock: time moves only when a test says so, and timers fire when the test fires them.

mod common;

use std::sync::Arc;

use bytes::BytesMut;

use lepus_broker::exchange::Destination;
use lepus_broker::outlet::Outbound;
use lepus_broker::queue::Enqueued;
use lepus_broker::vhost::{ExchangeDeclare, QueueDeclare};
use lepus_broker::{Message, MessageHeaders, Publish};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue, ShortStr};

use common::clocked::*;
use common::{acking_consumer, outlet};

#[test]
fn queue_ttl_expires_messages_when_due_and_dead_letters_them() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("work", dlx_args().with("x-message-ttl", FieldValue::I32(1000)));
    for body in [b"a", b"b", b"c"] {
        t.publish("work", BasicProperties::default(), body);
        t.advance(100);
    }
    t.advance(699);
    assert_eq!(q.message_count(), 3, "nothing is due before its deadline");
    t.advance(1);
    assert_eq!((q.message_count(), dead.message_count()), (2, 1), "the first is due at 1000 ms");
    t.advance(200);
    assert_eq!((q.message_count(), dead.message_count()), (0, 3));
    let (entry, _) = dead.get(None).message().expect("dead letter");
    assert_eq!(entry.message.body(), b"a");
    assert_eq!(entry.message.exchange(), b"dlx");
    assert_eq!(entry.message.routing_key(), b"work");
    let d = death(&entry.message, 0);
    assert_eq!((text(d.get("reason")), text(d.get("queue"))), ("expired", "work"));
    assert_eq!(d.get("count"), Some(&FieldValue::I64(1)));
    assert_eq!(d.get("time"), Some(&FieldValue::Timestamp(1_001)));
    assert_eq!(text(headers(&entry.message).get("x-first-death-reason")), "expired");
}

#[test]
fn a_short_per_message_ttl_expires_from_the_middle_of_the_queue() {
    let t = setup();
    let q = t.declare("q", FieldTable::new());
    t.publish("q", expiring("5000"), b"long");
    t.publish("q", expiring("100"), b"short");
    t.publish("q", BasicProperties::default(), b"none");
    t.advance(100);
    assert_eq!(q.message_count(), 2, "the short one left although the head lives on");
    assert_eq!(drain(&q), vec![b"long".to_vec(), b"none".to_vec()]);
}

#[test]
fn the_lower_of_queue_and_message_ttl_applies_and_expiration_is_dropped() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("q", dlx_args().with("x-message-ttl", FieldValue::I32(50)));
    t.publish("q", expiring("5000"), b"queue-ttl");
    t.publish("q", expiring("10"), b"own-ttl");
    t.advance(10);
    assert_eq!(q.message_count(), 1);
    t.advance(40);
    assert_eq!(q.message_count(), 0);
    let (entry, _) = dead.get(None).message().expect("dead letter");
    assert_eq!(entry.message.body(), b"own-ttl");
    assert_eq!(entry.message.properties().unwrap().expiration, None);
    assert_eq!(text(death(&entry.message, 0).get("original-expiration")), "10");
}

#[test]
fn ttl_zero_reaches_only_a_consumer_that_can_take_it_now() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("q", dlx_args().with("x-message-ttl", FieldValue::I32(0)));
    t.publish("q", BasicProperties::default(), b"nobody");
    assert_eq!((q.message_count(), dead.message_count()), (0, 1));
    let out = outlet();
    q.consume(acking_consumer(7, &out, 1)).unwrap();
    t.publish("q", BasicProperties::default(), b"taken");
    t.publish("q", BasicProperties::default(), b"no credit");
    let mut items = Vec::new();
    out.drain_into(&mut items);
    assert_eq!(items.len(), 1);
    assert!(matches!(&items[0], Outbound::Deliver(d) if d.message.body() == b"taken"));
    assert_eq!((q.message_count(), dead.message_count()), (0, 2));
}

#[test]
fn a_requeued_message_keeps_its_deadline() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("q", dlx_args().with("x-message-ttl", FieldValue::I32(100)));
    let out = outlet();
    q.consume(acking_consumer(1, &out, 10)).unwrap();
    t.publish("q", BasicProperties::default(), b"m");
    let mut items = Vec::new();
    out.drain_into(&mut items);
    let Some(Outbound::Deliver(d)) = items.pop() else { panic!("no delivery") };
    q.cancel(d.consumer);
    t.advance(150);
    q.requeue(vec![(d.seq, d.message.clone())], None);
    assert_eq!((q.message_count(), dead.message_count()), (0, 1), "requeued past its deadline: expired");
}

#[test]
fn rejected_messages_are_dead_lettered_with_the_routing_key_override() {
    let t = setup();
    let x = ExchangeDeclare { name: s("retry"), kind: "direct".into(), ..Default::default() };
    t.vhost.declare_exchange(&x).unwrap();
    let retry = t.declare("retry-q", FieldTable::new());
    t.vhost.bind(Destination::Queue(s("retry-q")), &s("retry"), &s("later"), &FieldTable::new(), 1).unwrap();
    let args = FieldTable::new().with("x-dead-letter-exchange", "retry").with("x-dead-letter-routing-key", "later");
    let q = t.declare("q", args);
    t.publish("q", BasicProperties::default(), b"job");
    let (entry, _) = q.get(None).message().unwrap();
    q.discard(None, &[(entry.seq, entry.message.clone())]);
    let (dead, _) = retry.get(None).message().expect("dead-lettered");
    assert_eq!(dead.message.routing_key(), b"later");
    let d = death(&dead.message, 0);
    assert_eq!(text(d.get("reason")), "rejected");
    assert_eq!(d.get("routing-keys"), Some(&FieldValue::Array(vec![FieldValue::LongStr("q".into())])));
}

#[test]
fn drop_head_counts_body_bytes_and_dead_letters_the_oldest() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("q", dlx_args().with("x-max-length-bytes", FieldValue::I32(10)));
    for body in [b"aaaaa", b"bbbbb", b"ccccc"] {
        let outcome = t.publish("q", BasicProperties::default(), body);
        assert!(outcome.routed && !outcome.rejected);
    }
    assert_eq!(drain(&q), vec![b"bbbbb".to_vec(), b"ccccc".to_vec()]);
    let (entry, _) = dead.get(None).message().unwrap();
    assert_eq!(text(death(&entry.message, 0).get("reason")), "maxlen");
}

#[test]
fn max_length_zero_accepts_and_keeps_nothing() {
    let t = setup();
    let q = t.declare("q", FieldTable::new().with("x-max-length", FieldValue::I32(0)));
    let outcome = t.publish("q", BasicProperties::default(), b"x");
    assert!(outcome.routed && !outcome.rejected);
    assert_eq!(q.message_count(), 0);
}

#[test]
fn reject_publish_dlx_refuses_and_dead_letters() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let args = dlx_args().with("x-max-length", FieldValue::I32(1)).with("x-overflow", "reject-publish-dlx");
    let q = t.declare("q", args);
    assert!(!t.publish("q", BasicProperties::default(), b"1").rejected);
    assert!(t.publish("q", BasicProperties::default(), b"2").rejected);
    assert_eq!((q.message_count(), dead.message_count()), (1, 1));
    let plain = t.declare(
        "plain",
        FieldTable::new().with("x-max-length", FieldValue::I32(1)).with("x-overflow", "reject-publish"),
    );
    t.publish("plain", BasicProperties::default(), b"1");
    assert!(t.publish("plain", BasicProperties::default(), b"2").rejected);
    assert_eq!(plain.message_count(), 1);
}

#[test]
fn an_expiry_cycle_without_a_rejection_drops_the_message() {
    let t = setup();
    let to = |q: &str| {
        FieldTable::new()
            .with("x-message-ttl", FieldValue::I32(10))
            .with("x-dead-letter-exchange", "")
            .with("x-dead-letter-routing-key", FieldValue::LongStr(bytes::Bytes::copy_from_slice(q.as_bytes())))
    };
    let a = t.declare("a", to("b"));
    let b = t.declare("b", to("a"));
    t.publish("a", BasicProperties::default(), b"m");
    t.advance(10);
    assert_eq!((a.message_count(), b.message_count()), (0, 1));
    t.advance(10);
    assert_eq!((a.message_count(), b.message_count()), (0, 0), "back into a would be a cycle");
}

#[test]
fn an_unused_queue_expires_and_use_postpones_it() {
    let t = setup();
    let q = t.declare("q", FieldTable::new().with("x-expires", FieldValue::I32(1000)));
    t.advance(500);
    assert!(q.get(None).message().is_none(), "empty, but a use");
    t.advance(999);
    assert!(t.vhost.queue(&s("q"), 1).is_ok());
    t.advance(1);
    assert!(t.vhost.queue(&s("q"), 1).is_err(), "deleted 1000 ms after its last use");
    assert!(q.is_deleted());
}

#[test]
fn a_queue_with_consumers_does_not_expire() {
    let t = setup();
    let q = t.declare("q", FieldTable::new().with("x-expires", FieldValue::I32(100)));
    let out = outlet();
    q.consume(acking_consumer(1, &out, 1)).unwrap();
    t.advance(1000);
    assert!(!q.is_deleted());
    q.cancel(lepus_broker::ConsumerId(1));
    t.advance(99);
    assert!(!q.is_deleted(), "the period starts when the last consumer leaves");
    t.advance(1);
    assert!(q.is_deleted());
    assert!(matches!(q.publish(msg("q", BasicProperties::default(), b"x")), Enqueued::Gone));
}

fn prio(p: u8) -> BasicProperties {
    BasicProperties { priority: Some(p), ..Default::default() }
}

#[test]
fn a_priority_queue_serves_the_highest_first_fifo_within_a_level() {
    let t = setup();
    let q = t.declare("q", FieldTable::new().with("x-max-priority", FieldValue::I32(5)));
    let sent: [(&[u8], Option<u8>); 9] = [
        (b"a-none", None),
        (b"b3", Some(3)),
        (b"c9", Some(9)),
        (b"d5", Some(5)),
        (b"e3", Some(3)),
        (b"f0", Some(0)),
        (b"g1", Some(1)),
        (b"h255", Some(255)),
        (b"i6", Some(6)),
    ];
    for (body, p) in sent {
        let props = BasicProperties { priority: p, ..Default::default() };
        t.publish("q", props, body);
    }
    let order: Vec<Vec<u8>> = drain(&q);
    let expected: Vec<&[u8]> = vec![b"c9", b"d5", b"h255", b"i6", b"b3", b"e3", b"g1", b"a-none", b"f0"];
    assert_eq!(order, expected.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
}

#[test]
fn a_priority_queue_drops_its_highest_head_at_its_length_limit() {
    let t = setup();
    let args = FieldTable::new().with("x-max-priority", FieldValue::I32(5)).with("x-max-length", FieldValue::I32(2));
    let q = t.declare("q", args);
    t.publish("q", prio(0), b"lo");
    t.publish("q", prio(5), b"hi");
    t.publish("q", prio(2), b"mid");
    assert_eq!(drain(&q), vec![b"mid".to_vec(), b"lo".to_vec()]);
}

#[test]
fn ttl_applies_on_every_priority_level() {
    let t = setup();
    let q = t.declare("q", FieldTable::new().with("x-max-priority", FieldValue::I32(3)));
    t.publish("q", BasicProperties { priority: Some(3), ..expiring("10") }, b"hi");
    t.publish("q", BasicProperties { priority: Some(1), ..expiring("20") }, b"lo");
    t.publish("q", prio(2), b"stays");
    t.advance(10);
    assert_eq!(q.message_count(), 2);
    t.advance(10);
    assert_eq!(drain(&q), vec![b"stays".to_vec()]);
}

#[test]
fn a_delivery_taken_back_from_a_cancelled_consumer_expires_on_time() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("q", dlx_args().with("x-message-ttl", FieldValue::I32(100)));
    let out = outlet();
    q.consume(acking_consumer(1, &out, 10)).unwrap();
    t.publish("q", BasicProperties::default(), b"m");
    // Still in the consumer's outlet (not written) when its deadline passes and when it goes.
    t.advance(150);
    q.cancel(lepus_broker::ConsumerId(1));
    assert_eq!((q.message_count(), dead.message_count()), (0, 1));
}

#[test]
fn a_queue_name_that_is_not_utf8_still_stops_a_dead_letter_cycle() {
    let t = setup();
    let x = ExchangeDeclare { name: s("loop"), kind: "fanout".into(), ..Default::default() };
    t.vhost.declare_exchange(&x).unwrap();
    let name = ShortStr::from_bytes(bytes::Bytes::from_static(b"t\xff")).unwrap();
    let args = FieldTable::new().with("x-message-ttl", FieldValue::I32(0)).with("x-dead-letter-exchange", "loop");
    let d = QueueDeclare { name: name.clone(), arguments: args, ..Default::default() };
    let q = t.vhost.declare_queue(&d, 1).unwrap().0;
    t.vhost.bind(Destination::Queue(name.clone()), &s("loop"), &s(""), &FieldTable::new(), 1).unwrap();
    let message = Arc::new(Message::new(b"", name.as_bytes(), &header(&BasicProperties::default(), 1), b"m"));
    let mut publisher = t.broker.publisher(t.vhost.clone());
    publisher.publish(Publish { message, extra_keys: &[], headers: MessageHeaders::None }).unwrap();
    assert_eq!(q.message_count(), 0, "expired, dead-lettered once into itself, then dropped as a cycle");
}

#[test]
fn an_internal_exchange_can_be_a_dead_letter_exchange() {
    let t = setup();
    let x = ExchangeDeclare { name: s("hidden"), kind: "fanout".into(), internal: true, ..Default::default() };
    t.vhost.declare_exchange(&x).unwrap();
    let dead = t.declare("dead", FieldTable::new());
    t.vhost.bind(Destination::Queue(s("dead")), &s("hidden"), &s(""), &FieldTable::new(), 1).unwrap();
    let q = t.declare("q", FieldTable::new().with("x-dead-letter-exchange", "hidden"));
    t.publish("q", BasicProperties::default(), b"m");
    let (entry, _) = q.get(None).message().unwrap();
    q.discard(None, &[(entry.seq, entry.message.clone())]);
    assert_eq!(dead.message_count(), 1);
}

#[test]
fn a_mass_expiry_runs_in_batches_to_the_end() {
    let t = setup();
    let q = t.declare("q", FieldTable::new().with("x-message-ttl", FieldValue::I32(10)));
    for _ in 0..10_000 {
        t.publish("q", BasicProperties::default(), b"m");
    }
    t.clock.advance(10);
    assert!(t.broker.timers().fire_due() > 0);
    assert!(q.message_count() > 0, "one pass takes a batch, not all");
    while t.broker.timers().fire_due() > 0 {}
    assert_eq!(q.message_count(), 0);
}

fn header(props: &BasicProperties, body_size: u64) -> ContentHeader {
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, body_size, &props.to_raw());
    ContentHeader::decode(payload.freeze()).expect("header")
}

#[test]
fn a_quorum_queue_counts_returns_and_dead_letters_past_its_delivery_limit() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let args = dlx_args().with("x-queue-type", "quorum").with("x-delivery-limit", FieldValue::I32(1));
    let d = QueueDeclare { name: s("qq"), durable: true, arguments: args, ..Default::default() };
    let q = t.vhost.declare_queue(&d, 1).unwrap().0;
    t.publish("qq", BasicProperties::default(), b"m");
    let (first, _) = q.get(None).message().unwrap();
    assert_eq!(headers(&first.message).get("x-delivery-count"), Some(&FieldValue::I64(0)), "as RabbitMQ 3.10");
    q.requeue(vec![(first.seq, first.message.clone())], None);
    let (second, _) = q.get(None).message().unwrap();
    assert_eq!(headers(&second.message).get("x-delivery-count"), Some(&FieldValue::I64(1)));
    q.requeue(vec![(second.seq, second.message.clone())], None);
    assert_eq!((q.message_count(), dead.message_count()), (0, 1), "returned twice with a limit of 1");
    let (entry, _) = dead.get(None).message().unwrap();
    assert_eq!(text(death(&entry.message, 0).get("reason")), "delivery_limit");
}

#[test]
fn a_classic_queue_ignores_a_delivery_limit_as_rabbitmq() {
    let t = setup();
    let q = t.declare("q", FieldTable::new().with("x-delivery-limit", FieldValue::I32(0)));
    t.publish("q", BasicProperties::default(), b"m");
    let (entry, _) = q.get(None).message().unwrap();
    q.requeue(vec![(entry.seq, entry.message.clone())], None);
    let (again, _) = q.get(None).message().unwrap();
    assert!(headers(&again.message).get("x-delivery-count").is_none());
}

#[test]
fn a_dead_letter_held_by_a_delayed_exchange_named_like_its_queue_is_no_cycle() {
    let t = setup();
    let args = FieldTable::new().with("x-delayed-type", "direct");
    let x =
        ExchangeDeclare { name: s("jobs"), kind: "x-delayed-message".into(), arguments: args, ..Default::default() };
    t.vhost.declare_exchange(&x).unwrap();
    let q = t.declare("jobs", dlx_args_to("jobs").with("x-message-ttl", FieldValue::I32(10)));
    t.vhost.bind(Destination::Queue(s("jobs")), &s("jobs"), &s("jobs"), &FieldTable::new(), 1).unwrap();
    let delay = FieldTable::new().with("x-delay", FieldValue::I32(100));
    t.publish("jobs", BasicProperties { headers: Some(delay), ..Default::default() }, b"retry me");
    t.advance(10);
    assert_eq!((q.message_count(), t.vhost.messages_delayed(b"jobs")), (0, Some(1)), "held by the exchange");
    t.advance(100);
    assert_eq!(q.message_count(), 1, "released back after its delay");
}

fn dlx_args_to(exchange: &'static str) -> FieldTable {
    FieldTable::new().with("x-dead-letter-exchange", exchange)
}
