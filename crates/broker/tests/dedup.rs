//! Message deduplication (the rabbitmq-message-deduplication plugin's exchange type and queue
//! argument) on a broker with a manual clock: cache entries expire at their TTL, a full cache
//! evicts its oldest entry, and a queue's key is free again once its message leaves.

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use lepus_broker::exchange::Destination;
use lepus_broker::queue::QueueRef;
use lepus_broker::vhost::ExchangeDeclare;
use lepus_broker::{BrokerError, Message, MessageHeaders, Outcome, Publish};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue};

use common::clocked::*;

fn dedup_args(size: i32) -> FieldTable {
    FieldTable::new().with("x-cache-size", FieldValue::I32(size))
}

fn key(value: &str) -> FieldTable {
    FieldTable::new().with("x-deduplication-header", value)
}

impl Setup {
    fn exchange(&self, name: &str, kind: &str, arguments: FieldTable) -> Result<(), BrokerError> {
        let d = ExchangeDeclare { name: s(name), kind: kind.into(), arguments, ..Default::default() };
        self.vhost.declare_exchange(&d)
    }

    fn bind(&self, queue: &str, exchange: &str, routing_key: &str) {
        let args = FieldTable::new();
        self.vhost.bind(Destination::Queue(s(queue)), &s(exchange), &s(routing_key), &args, 1).expect("bind");
    }

    /// Publishes `body` with `headers` to `exchange` (the default exchange: `""`).
    fn send(&self, exchange: &str, routing_key: &str, headers: FieldTable, body: &str) -> Outcome {
        let props = BasicProperties { headers: Some(headers.clone()), ..Default::default() };
        let mut payload = BytesMut::new();
        ContentHeader::encode_payload(&mut payload, body.len() as u64, &props.to_raw());
        let header = ContentHeader::decode(payload.freeze()).expect("header");
        let message = Arc::new(Message::new(exchange.as_bytes(), routing_key.as_bytes(), &header, body));
        let mut publisher = self.broker.publisher(self.vhost.clone());
        let p = Publish { message, extra_keys: &[], headers: MessageHeaders::Decoded(&headers) };
        publisher.publish(p).expect("publish")
    }

    /// A deduplication exchange `dx` with `arguments`, and a queue `q` bound to it.
    fn dedup_exchange(&self, arguments: FieldTable) -> QueueRef {
        self.exchange("dx", "x-message-deduplication", arguments).expect("declare");
        let q = self.declare("q", FieldTable::new());
        self.bind("q", "dx", "any");
        q
    }
}

fn bodies(q: &QueueRef) -> Vec<String> {
    drain(q).into_iter().map(|b| String::from_utf8_lossy(&b).into_owned()).collect()
}

#[test]
fn a_deduplication_exchange_routes_as_a_fanout_and_drops_what_it_has_seen() {
    let t = setup();
    let q = t.dedup_exchange(dedup_args(10));
    let other = t.declare("other", FieldTable::new());
    t.bind("other", "dx", "");
    assert!(t.send("dx", "whatever", key("a"), "a1").routed, "every binding, whatever the key");
    let dup = t.send("dx", "whatever", key("a"), "a2");
    assert!(!dup.routed && dup.is_unroutable(), "a duplicate is unroutable: acked, returned if mandatory");
    assert!(t.send("dx", "k", key("b"), "b").routed);
    assert!(t.send("dx", "k", FieldTable::new(), "no header").routed);
    assert!(t.send("dx", "k", FieldTable::new(), "no header again").routed, "no header: never a duplicate");
    assert_eq!(bodies(&q), ["a1", "b", "no header", "no header again"]);
    assert_eq!(bodies(&other).len(), 4);
}

#[test]
fn cache_entries_expire_at_the_exchange_s_ttl_or_the_message_s() {
    let t = setup();
    let q = t.dedup_exchange(dedup_args(10).with("x-cache-ttl", FieldValue::I32(1000)));
    assert!(t.send("dx", "", key("a"), "a1").routed);
    t.advance(999);
    assert!(!t.send("dx", "", key("a"), "a2").routed, "cached for 1000 ms");
    t.advance(1);
    assert!(t.send("dx", "", key("a"), "a3").routed, "expired at its TTL");
    let short = key("b").with("x-cache-ttl", FieldValue::I32(10));
    assert!(t.send("dx", "", short, "b1").routed);
    t.advance(9);
    assert!(!t.send("dx", "", key("b"), "b2").routed);
    t.advance(1);
    assert!(t.send("dx", "", key("b"), "b3").routed, "the message's x-cache-ttl wins");
    assert_eq!(bodies(&q), ["a1", "a3", "b1", "b3"]);
}

#[test]
fn a_full_cache_forgets_its_oldest_entry() {
    let t = setup();
    let q = t.dedup_exchange(dedup_args(2));
    for k in ["a", "b", "c"] {
        assert!(t.send("dx", "", key(k), k).routed);
    }
    assert!(!t.send("dx", "", key("c"), "c again").routed);
    assert!(!t.send("dx", "", key("b"), "b again").routed);
    assert!(t.send("dx", "", key("a"), "a again").routed, "evicted by c");
    assert_eq!(bodies(&q), ["a", "b", "c", "a again"]);
}

#[test]
fn a_duplicate_goes_to_the_alternate_exchange() {
    let t = setup();
    t.exchange("ae", "fanout", FieldTable::new()).expect("ae");
    let alternate = t.declare("alt", FieldTable::new());
    t.bind("alt", "ae", "");
    let q = t.dedup_exchange(dedup_args(5).with("alternate-exchange", "ae"));
    t.send("dx", "", key("a"), "first");
    assert!(t.send("dx", "", key("a"), "duplicate").routed, "routed to the alternate exchange's queue");
    assert_eq!((bodies(&q), bodies(&alternate)), (vec!["first".to_string()], vec!["duplicate".to_string()]));
}

#[test]
fn declarations_are_checked_as_the_plugin_checks_them() {
    let t = setup();
    let refused = t.exchange("dx", "x-message-deduplication", FieldTable::new());
    let text = "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0";
    assert_eq!(refused, Err(BrokerError::PreconditionFailed(text.into())));
    let refused = t.exchange("dx", "x-message-deduplication", dedup_args(1).with("x-cache-ttl", FieldValue::I32(-1)));
    let text = "Invalid argument, 'x-cache-ttl' must be an integer greater than 0";
    assert_eq!(refused, Err(BrokerError::PreconditionFailed(text.into())));
    assert!(!t.vhost.exchange_exists(b"dx"));
    t.exchange("dx", "x-message-deduplication", dedup_args(1)).expect("declared");
    assert_eq!(t.vhost.exchange_type(b"dx"), Some("x-message-deduplication"));
}

#[test]
fn a_deduplication_queue_refuses_a_key_it_holds_until_that_message_is_acked() {
    let t = setup();
    let dedup = FieldTable::new().with("x-message-deduplication", FieldValue::Bool(true));
    let q = t.declare("q", dedup);
    assert!(t.send("", "q", key("a"), "a1").routed);
    let dup = t.send("", "q", key("a"), "a2");
    assert!(dup.rejected && !dup.is_unroutable(), "refused: nacked, not returned");
    assert!(t.send("", "q", FieldTable::new(), "plain").routed);
    let (entry, _) = q.get(None).message().expect("a1");
    assert!(!t.send("", "q", key("a"), "a3").routed, "still held while unacknowledged");
    q.requeue(vec![(entry.seq, entry.message)], None);
    assert!(!t.send("", "q", key("a"), "a4").routed, "requeued: still in the queue");
    let (entry, _) = q.get(None).message().expect("a1 again");
    q.ack(None, std::iter::once(entry.seq));
    assert_eq!(q.dedup_keys(), 0);
    assert!(t.send("", "q", key("a"), "a5").routed, "acked: the key is free");
    assert_eq!(bodies(&q), ["plain", "a5"]);
}

#[test]
fn a_queue_key_is_freed_when_its_message_expires_is_dropped_or_purged() {
    let t = setup();
    let dedup = || FieldTable::new().with("x-message-deduplication", FieldValue::Bool(true));
    let q =
        t.declare("q", dedup().with("x-message-ttl", FieldValue::I32(100)).with("x-max-length", FieldValue::I32(1)));
    t.send("", "q", key("a"), "a");
    t.advance(100);
    assert_eq!(q.message_count(), 0);
    assert!(t.send("", "q", key("a"), "a after expiry").routed, "expired: free");
    assert!(t.send("", "q", key("b"), "b").routed, "drops a (drop-head)");
    assert!(t.send("", "q", key("a"), "a after drop").routed, "dropped: free");
    q.purge();
    assert!(t.send("", "q", key("a"), "a after purge").routed, "purged: free");
    assert_eq!(bodies(&q), ["a after purge"]);
}

#[test]
fn a_duplicate_is_dead_lettered_with_reason_maxlen() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let args = dlx_args().with("x-message-deduplication", FieldValue::Bool(true));
    let q = t.declare("q", args);
    t.send("", "q", key("a"), "first");
    assert!(t.send("", "q", key("a"), "second").rejected);
    let (entry, _) = dead.get(None).message().expect("dead-lettered");
    assert_eq!(entry.message.body(), b"second");
    assert_eq!(text(death(&entry.message, 0).get("reason")), "maxlen");
    assert_eq!(bodies(&q), ["first"]);
}
