//! Policies and operator policies applied live, on a broker with a manual clock: TTLs, length
//! limits, dead-lettering, expiry and alternate exchanges set, changed and cleared while
//! queues hold messages, resolved against queue arguments as RabbitMQ 3.10.8 does.

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use lepus_broker::command::{Command, Issuer};
use lepus_broker::exchange::Destination;
use lepus_broker::policy::{ApplyTo, PolicyKind, PolicySpec};
use lepus_broker::queue::Enqueued;
use lepus_broker::vhost::ExchangeDeclare;
use lepus_broker::{BrokerError, Message, MessageHeaders, Publish};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue};
use serde_json::{Value, json};

use common::clocked::*;

fn spec(kind: PolicyKind, name: &str, pattern: &str, priority: i64, definition: Value) -> PolicySpec {
    PolicySpec { kind, name: name.into(), pattern: pattern.into(), apply_to: ApplyTo::All, priority, definition }
}

impl Setup {
    fn set(&self, name: &str, pattern: &str, priority: i64, definition: Value) {
        let command = Command::SetPolicy(spec(PolicyKind::Policy, name, pattern, priority, definition));
        self.vhost.execute(Issuer::node(), command).expect("set policy");
    }

    fn set_operator(&self, name: &str, pattern: &str, definition: Value) {
        let command = Command::SetPolicy(spec(PolicyKind::Operator, name, pattern, 0, definition));
        self.vhost.execute(Issuer::node(), command).expect("set operator policy");
    }

    fn clear(&self, kind: PolicyKind, name: &str) {
        self.vhost.execute(Issuer::node(), Command::ClearPolicy { kind, name: name.into() }).expect("clear policy");
    }

    fn publish_n(&self, queue: &str, n: usize) {
        for i in 0..n {
            self.publish(queue, BasicProperties::default(), format!("m{i}").as_bytes());
        }
    }

    /// Publishes to `exchange` with `routing_key`; whether any queue took it.
    fn publish_to(&self, exchange: &str, routing_key: &str) -> bool {
        let mut payload = BytesMut::new();
        ContentHeader::encode_payload(&mut payload, 1, &BasicProperties::default().to_raw());
        let header = ContentHeader::decode(payload.freeze()).expect("header");
        let message = Arc::new(Message::new(exchange.as_bytes(), routing_key.as_bytes(), &header, b"x"));
        let mut publisher = self.broker.publisher(self.vhost.clone());
        let publish = Publish { message, extra_keys: &[], headers: MessageHeaders::None };
        publisher.publish(publish).expect("publish").routed
    }
}

fn bodies(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|b| b.as_bytes().to_vec()).collect()
}

#[test]
fn a_ttl_set_by_policy_expires_messages_published_after_it_and_dead_letters_them() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("work", FieldTable::new());
    t.publish("work", BasicProperties::default(), b"old");
    t.set("ttl", "^work$", 0, json!({"message-ttl": 1000, "dead-letter-exchange": "dlx"}));
    t.publish("work", BasicProperties::default(), b"new");
    t.advance(999);
    assert_eq!(q.message_count(), 2);
    t.advance(1);
    // As RabbitMQ, a message already in the queue keeps no deadline; Lepus removes the new one
    // at once although it is behind a head that never expires.
    assert_eq!((q.message_count(), dead.message_count()), (1, 1));
    let (entry, _) = dead.get(None).message().expect("dead letter");
    assert_eq!(entry.message.body(), b"new");
    let d = death(&entry.message, 0);
    assert_eq!((text(d.get("reason")), text(d.get("queue")), text(d.get("exchange"))), ("expired", "work", ""));
    assert_eq!(d.get("count"), Some(&FieldValue::I64(1)));
    assert_eq!(d.get("routing-keys"), Some(&FieldValue::Array(vec![FieldValue::from("work")])));
    assert_eq!(text(headers(&entry.message).get("x-first-death-queue")), "work");
    assert_eq!(drain(&q), bodies(&["old"]));
}

#[test]
fn a_message_keeps_the_deadline_it_was_enqueued_with_when_the_ttl_changes() {
    let t = setup();
    let q = t.declare("work", FieldTable::new().with("x-message-ttl", FieldValue::I32(5000)));
    t.publish("work", BasicProperties::default(), b"long");
    t.set("ttl", "^work$", 0, json!({"message-ttl": 100}));
    t.publish("work", BasicProperties::default(), b"short");
    t.advance(100);
    assert_eq!(q.message_count(), 1, "the later, shorter deadline came first");
    t.clear(PolicyKind::Policy, "ttl");
    t.publish("work", BasicProperties::default(), b"back");
    t.advance(4900);
    assert_eq!(drain(&q), bodies(&["back"]), "the argument's TTL applies again");
}

#[test]
fn a_lower_max_length_by_policy_drops_the_excess_from_the_head_as_maxlen() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("work", FieldTable::new());
    t.publish_n("work", 5);
    t.set("short", "^work$", 0, json!({"max-length": 2, "dead-letter-exchange": "dlx"}));
    assert_eq!(dead.message_count(), 3);
    let (entry, _) = dead.get(None).message().expect("dead letter");
    assert_eq!(entry.message.body(), b"m0");
    assert_eq!(text(death(&entry.message, 0).get("reason")), "maxlen");
    assert_eq!(drain(&q), bodies(&["m3", "m4"]));
}

#[test]
fn clearing_a_policy_restores_the_arguments_behaviour() {
    let t = setup();
    let q = t.declare("work", FieldTable::new().with("x-max-length", FieldValue::I32(4)));
    t.set("short", "^work", 0, json!({"max-length": 2}));
    t.publish_n("work", 5);
    assert_eq!(q.message_count(), 2, "the lower of argument and policy");
    t.clear(PolicyKind::Policy, "short");
    assert!(q.policy().is_empty());
    t.publish_n("work", 5);
    assert_eq!(q.message_count(), 4, "the argument alone");
    t.set("long", "^work", 0, json!({"max-length": 10}));
    t.publish_n("work", 5);
    assert_eq!(q.message_count(), 4, "a higher policy limit does not lift the argument's");
}

#[test]
fn the_operator_policy_lowers_limits_and_the_lowest_applies() {
    let t = setup();
    let plain = t.declare("o.plain", FieldTable::new());
    let low_arg = t.declare("o.arg", FieldTable::new().with("x-max-length", FieldValue::I32(2)));
    t.set("user", "^o\\.", 0, json!({"max-length": 5, "message-ttl": 100000, "dead-letter-exchange": "dlx"}));
    t.set_operator("cap", "^o\\.", json!({"max-length": 3, "expires": 600000, "message-ttl": 200000}));
    t.publish_n("o.plain", 6);
    t.publish_n("o.arg", 6);
    assert_eq!((plain.message_count(), low_arg.message_count()), (3, 2));
    let applied = plain.policy();
    assert_eq!((applied.policy_name(), applied.operator_policy_name()), (Some("user"), Some("cap")));
    // RabbitMQ 3.10.8's `effective_policy_definition` for this pair.
    let expected = json!({"dead-letter-exchange": "dlx", "expires": 600000, "max-length": 3, "message-ttl": 100000});
    assert_eq!(Value::Object(applied.effective_definition()), expected);
    let limits = plain.limits();
    assert_eq!((limits.expires_ms, limits.message_ttl_ms), (Some(600000), Some(100000)));
    t.clear(PolicyKind::Policy, "user");
    assert_eq!(plain.limits().message_ttl_ms, Some(200000), "the operator policy alone");
}

#[test]
fn of_matching_policies_the_highest_priority_applies_alone() {
    let t = setup();
    let q = t.declare("jobs", FieldTable::new());
    t.set("wide", "^j", 1, json!({"max-length": 1, "overflow": "reject-publish"}));
    t.set("narrow", "^jobs$", 5, json!({"max-length": 3}));
    assert_eq!(q.policy().policy_name(), Some("narrow"));
    t.publish_n("jobs", 4);
    assert_eq!(drain(&q), bodies(&["m1", "m2", "m3"]), "only the winner's keys apply: drop-head, 3");
    t.set("wide", "^j", 9, json!({"max-length": 1, "overflow": "reject-publish"}));
    assert_eq!(q.policy().policy_name(), Some("wide"), "a priority change moves the queue at once");
    t.publish("jobs", BasicProperties::default(), b"a");
    let refused = t.publish("jobs", BasicProperties::default(), b"b");
    assert!(refused.rejected, "reject-publish from the policy");
}

#[test]
fn a_policy_applies_to_a_queue_declared_after_it_and_the_arguments_dlx_wins() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let other = t.declare("other-dead", FieldTable::new());
    let x = ExchangeDeclare { name: s("dlx2"), kind: "fanout".into(), ..Default::default() };
    t.vhost.declare_exchange(&x).expect("exchange");
    t.vhost.bind(Destination::Queue(s("other-dead")), &s("dlx2"), &s(""), &FieldTable::new(), 1).expect("bind");
    t.set("dl", "^d\\.", 0, json!({"dead-letter-exchange": "dlx2", "dead-letter-routing-key": "rk"}));
    let by_policy = t.declare("d.policy", FieldTable::new());
    let by_arg = t.declare("d.arg", dlx_args());
    for name in ["d.policy", "d.arg"] {
        t.publish(name, BasicProperties::default(), b"x");
    }
    for q in [&by_policy, &by_arg] {
        let (entry, _) = q.get(None).message().expect("message");
        q.discard(None, &[(entry.seq, entry.message)]);
    }
    assert_eq!((other.message_count(), dead.message_count()), (1, 1));
    let (entry, _) = dead.get(None).message().expect("dead letter");
    assert_eq!(entry.message.routing_key(), b"rk", "the policy's routing key joins the argument's exchange");
    assert_eq!(text(death(&entry.message, 0).get("reason")), "rejected");
}

#[test]
fn a_policy_reject_publish_dlx_dead_letters_the_refused_message() {
    let t = setup();
    let dead = t.dead_letter_queue();
    let q = t.declare("full", FieldTable::new());
    t.set(
        "full",
        "^full$",
        0,
        json!({"max-length": 1, "overflow": "reject-publish-dlx", "dead-letter-exchange": "dlx"}),
    );
    t.publish_n("full", 2);
    assert_eq!((q.message_count(), dead.message_count()), (1, 1));
    assert_eq!(q.publish(common::message()), Enqueued::Rejected);
}

#[test]
fn an_expiry_set_by_policy_counts_from_then_and_clearing_it_keeps_the_queue() {
    let t = setup();
    t.declare("idle", FieldTable::new());
    t.advance(10_000);
    t.set("exp", "^idle$", 0, json!({"expires": 500}));
    t.advance(499);
    assert!(t.vhost.queue(&s("idle"), 1).is_ok(), "the period counts from the policy");
    t.advance(1);
    assert!(t.vhost.queue(&s("idle"), 1).is_err(), "deleted once unused for the period");
    t.declare("kept", FieldTable::new());
    t.set("exp2", "^kept$", 0, json!({"expires": 500}));
    t.clear(PolicyKind::Policy, "exp2");
    t.advance(1000);
    assert!(t.vhost.queue(&s("kept"), 1).is_ok());
}

#[test]
fn an_alternate_exchange_by_policy_takes_unroutable_messages_unless_the_argument_names_one() {
    let t = setup();
    for name in ["ae", "ae-arg"] {
        let x = ExchangeDeclare { name: s(name), kind: "fanout".into(), ..Default::default() };
        t.vhost.declare_exchange(&x).expect("exchange");
        t.declare(&format!("{name}-q"), FieldTable::new());
        t.vhost
            .bind(Destination::Queue(s(&format!("{name}-q"))), &s(name), &s(""), &FieldTable::new(), 1)
            .expect("bind");
    }
    let plain = ExchangeDeclare { name: s("in"), kind: "direct".into(), ..Default::default() };
    t.vhost.declare_exchange(&plain).expect("exchange");
    let with_arg = ExchangeDeclare {
        name: s("in-arg"),
        kind: "direct".into(),
        arguments: FieldTable::new().with("alternate-exchange", "ae-arg"),
        ..Default::default()
    };
    t.vhost.declare_exchange(&with_arg).expect("exchange");
    assert!(!t.publish_to("in", "nowhere"));
    let mut ae = spec(PolicyKind::Policy, "ae", "^in", 0, json!({"alternate-exchange": "ae"}));
    ae.apply_to = ApplyTo::Exchanges;
    t.vhost.execute(Issuer::node(), Command::SetPolicy(ae)).expect("set");
    assert!(t.publish_to("in", "nowhere"), "routed through the policy's alternate exchange");
    assert!(t.publish_to("in-arg", "nowhere"));
    let count = |q: &str| t.vhost.queue(&s(q), 1).expect("queue").message_count();
    assert_eq!((count("ae-q"), count("ae-arg-q")), (1, 1), "the argument wins");
    assert_eq!(t.vhost.exchange_policy(b"in").and_then(|a| a.policy_name().map(str::to_owned)), Some("ae".into()));
    t.clear(PolicyKind::Policy, "ae");
    assert!(!t.publish_to("in", "nowhere"));
}

#[test]
fn bad_policies_are_refused_and_change_nothing() {
    let t = setup();
    let refused = |definition: Value| {
        t.vhost.execute(Issuer::node(), Command::SetPolicy(spec(PolicyKind::Policy, "p", "^q", 0, definition)))
    };
    let err = refused(json!({"max-priority": 5})).expect_err("refused");
    let text = "Validation failed\n\n[{<<\"max-priority\">>,5}] are not recognised policy settings\n";
    assert_eq!(err, BrokerError::PreconditionFailed(text.into()));
    assert!(refused(json!({"message-ttl": "1"})).is_err());
    assert!(t.vhost.policies(PolicyKind::Policy).is_empty());
    let absent =
        t.vhost.execute(Issuer::node(), Command::ClearPolicy { kind: PolicyKind::Operator, name: "nope".into() });
    assert!(matches!(absent, Err(BrokerError::NotFound { .. })));
}

#[test]
fn a_consumer_timeout_action_comes_from_the_argument_else_the_policy() {
    use lepus_broker::args::ConsumerTimeoutAction;
    let t = setup();
    let plain = t.declare("ct.plain", FieldTable::new());
    let by_arg = t.declare("ct.arg", FieldTable::new().with("x-consumer-timeout-action", "cancel-and-requeue"));
    assert_eq!(plain.consumer_timeout_action(), ConsumerTimeoutAction::CloseChannel, "RabbitMQ's by default");
    t.set("ct", "^ct\\.", 0, json!({"consumer-timeout-action": "cancel-and-dead-letter", "consumer-timeout": 5}));
    assert_eq!(plain.consumer_timeout_action(), ConsumerTimeoutAction::CancelAndDeadLetter);
    assert_eq!(plain.consumer_timeout_ms(), Some(5));
    assert_eq!(by_arg.consumer_timeout_action(), ConsumerTimeoutAction::CancelAndRequeue, "the argument wins");
    t.clear(PolicyKind::Policy, "ct");
    assert_eq!(plain.consumer_timeout_action(), ConsumerTimeoutAction::CloseChannel);
    let bad = Command::SetPolicy(spec(PolicyKind::Policy, "bad", ".*", 0, json!({"consumer-timeout-action": "x"})));
    let err = t.vhost.execute(Issuer::node(), bad).expect_err("refused");
    assert!(format!("{err:?}").contains("is not a valid consumer timeout action"), "{err:?}");
}
