//! Message TTL, length limits and dead-lettering through a real client (lapin): each test waits
//! on the event it checks (a dead letter arriving, a confirm, a channel closing), never on a
//! fixed sleep. The timing rules themselves are tested on a manual clock in
//! `crates/broker/tests/queue_ttl.rs`.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::*;
use lapin::options::{
    BasicNackOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};

/// A fanout dead-letter exchange and a queue bound to it; returns their names.
async fn dead_letter_queue(ch: &Channel) -> (String, String) {
    let (dlx, dead) = (uniq("dlx"), uniq("dead"));
    guard(
        "exchange.declare",
        ch.exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.declare");
    ldeclare(ch, &dead, QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
    guard(
        "queue.bind",
        ch.queue_bind(
            dead.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.bind");
    (dlx, dead)
}

/// A broker, a connection and channel to it, and a dead-letter exchange with its queue.
async fn with_dead_letter_queue() -> (common::Broker, lapin::Connection, Channel, String, String) {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let (dlx, dead) = dead_letter_queue(&ch).await;
    (broker, conn, ch, dlx, dead)
}

fn excl() -> QueueDeclareOptions {
    QueueDeclareOptions { exclusive: true, ..Default::default() }
}

/// The `x-death` entries of a delivery's headers.
fn deaths(props: &BasicProperties) -> Vec<FieldTable> {
    let headers = props.headers().clone().expect("headers");
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("no x-death: {other:?}"),
    }
}

fn field<'a>(t: &'a FieldTable, key: &str) -> &'a AMQPValue {
    t.inner().get(key).unwrap_or_else(|| panic!("no {key} in {t:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dead_lettered_with_x_death() {
    let (_broker, _conn, ch, dlx, dead) = with_dead_letter_queue().await;
    let mut dead_letters = lconsume(&ch, &dead, true).await;
    let work = uniq("work");
    let args = ltable(vec![("x-dead-letter-exchange", lstr(&dlx)), ("x-message-ttl", AMQPValue::LongInt(20))]);
    ldeclare(&ch, &work, excl(), args).await;
    let props = BasicProperties::default().with_expiration(ShortString::from("10"));
    lpub_props(&ch, "", &work, b"short", props).await;
    lpub(&ch, "", &work, b"queue-ttl").await;
    let got = dead_letters.take(2).await;
    assert_eq!(got[0].data, b"short");
    assert_eq!(got[1].data, b"queue-ttl");
    assert_eq!(got[0].exchange.as_str(), dlx);
    assert_eq!(got[0].routing_key.as_str(), work);
    assert_eq!(got[0].properties.expiration(), &None, "expiration is removed");
    let d = &deaths(&got[0].properties)[0];
    assert_eq!(field(d, "reason"), &lstr("expired"));
    assert_eq!(field(d, "queue"), &lstr(&work));
    assert_eq!(field(d, "exchange"), &lstr(""));
    assert_eq!(field(d, "count"), &AMQPValue::LongLongInt(1));
    assert_eq!(field(d, "original-expiration"), &lstr("10"));
    assert!(matches!(field(d, "time"), AMQPValue::Timestamp(_)));
    let headers = got[1].properties.headers().clone().unwrap();
    assert_eq!(headers.inner().get("x-first-death-reason"), Some(&lstr("expired")));
    assert_eq!(headers.inner().get("x-first-death-queue"), Some(&lstr(&work)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_are_dead_lettered() {
    let (_broker, _conn, ch, dlx, dead) = with_dead_letter_queue().await;
    let work = uniq("work");
    ldeclare(&ch, &work, excl(), ltable(vec![("x-dead-letter-exchange", lstr(&dlx))])).await;
    lpub(&ch, "", &work, b"job").await;
    let mut consumer = lconsume(&ch, &work, false).await;
    let d = consumer.next().await;
    guard("basic.nack", d.acker.nack(BasicNackOptions { requeue: false, ..Default::default() })).await.expect("nack");
    let mut dead_letters = lconsume(&ch, &dead, true).await;
    let got = dead_letters.next().await;
    assert_eq!(got.data, b"job");
    let d = &deaths(&got.properties)[0];
    assert_eq!(field(d, "reason"), &lstr("rejected"));
    assert_eq!(field(d, "routing-keys"), &AMQPValue::FieldArray(vec![lstr(&work)].into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_bytes_drops_the_oldest_and_confirms_every_publish() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("bytes");
    ldeclare(&ch, &q, excl(), ltable(vec![("x-max-length-bytes", AMQPValue::LongInt(10))])).await;
    for body in [b"aaaaa", b"bbbbb", b"ccccc"] {
        assert!(matches!(lpub(&ch, "", &q, body).await, Confirmation::Ack(_)));
    }
    assert_eq!(ldrain(&ch, &q).await, vec![b"bbbbb".to_vec(), b"ccccc".to_vec()]);
    let zero = uniq("zero");
    ldeclare(&ch, &zero, excl(), ltable(vec![("x-max-length", AMQPValue::LongInt(0))])).await;
    assert!(matches!(lpub(&ch, "", &zero, b"x").await, Confirmation::Ack(_)));
    assert_eq!(lcount(&ch, &zero).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_the_overflowing_message() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("full");
    let args = ltable(vec![("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", lstr("reject-publish"))]);
    ldeclare(&ch, &q, excl(), args).await;
    assert!(matches!(lpub(&ch, "", &q, b"1").await, Confirmation::Ack(_)));
    assert!(matches!(lpub(&ch, "", &q, b"2").await, Confirmation::Nack(_)));
    assert_eq!(ldrain(&ch, &q).await, vec![b"1".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_expiration_closes_the_channel_with_406() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    for (value, text) in [
        ("abc", "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"),
        ("-1", "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"),
        ("12x", "PRECONDITION_FAILED - invalid expiration '12x': {leftover_string,\"x\"}"),
    ] {
        let ch = lconfirm_chan(&conn).await;
        let props = BasicProperties::default().with_expiration(ShortString::from(value));
        let publish = async {
            ch.basic_publish("".into(), "anywhere".into(), BasicPublishOptions::default(), b"m", props).await?.await
        };
        lexpect_channel_closed(&conn, &ch, publish, 406, text).await;
    }
}

/// Sets a policy on vhost `/` through the broker's command path (as the management API will).
fn set_policy(broker: &common::Broker, name: &str, pattern: &str, definition: serde_json::Value) {
    use lepus_broker::command::{Command, Issuer};
    use lepus_broker::policy::{ApplyTo, PolicyKind, PolicySpec};
    let spec = PolicySpec {
        kind: PolicyKind::Policy,
        name: name.into(),
        pattern: pattern.into(),
        apply_to: ApplyTo::Queues,
        priority: 0,
        definition,
    };
    let vhost = broker.service.vhost("/").expect("vhost /");
    vhost.execute(Issuer::node(), Command::SetPolicy(spec)).expect("set policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_policy_set_on_a_live_queue_dead_letters_what_is_published_after_it() {
    let (broker, _conn, ch, dlx, dead) = with_dead_letter_queue().await;
    let mut dead_letters = lconsume(&ch, &dead, true).await;
    let work = uniq("work");
    ldeclare(&ch, &work, excl(), FieldTable::default()).await;
    lpub(&ch, "", &work, b"before").await;
    // The connection handles a channel's methods in order: once a passive declare answers,
    // "before" is in the queue, ahead of the policy set straight through the broker.
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = guard("passive declare", ch.queue_declare(work.as_str().into(), passive, FieldTable::default()))
        .await
        .expect("queue exists");
    assert_eq!(q.message_count(), 1);
    set_policy(
        &broker,
        "ttl",
        &format!("^{work}$"),
        serde_json::json!({"message-ttl": 20, "dead-letter-exchange": dlx}),
    );
    lpub(&ch, "", &work, b"after").await;
    let got = dead_letters.next().await;
    assert_eq!(got.data, b"after");
    let d = &deaths(&got.properties)[0];
    assert_eq!(field(d, "reason"), &lstr("expired"));
    assert_eq!(field(d, "queue"), &lstr(&work));
    assert_eq!(ldrain(&ch, &work).await, vec![b"before".to_vec()], "what was in the queue keeps no deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_max_length_policy_dead_letters_the_oldest_at_once() {
    let (broker, _conn, ch, dlx, dead) = with_dead_letter_queue().await;
    let work = uniq("work");
    ldeclare(&ch, &work, excl(), ltable(vec![("x-max-length", AMQPValue::LongInt(10))])).await;
    for body in [b"m0", b"m1", b"m2", b"m3", b"m4"] {
        lpub(&ch, "", &work, body).await;
    }
    set_policy(&broker, "cap", &format!("^{work}$"), serde_json::json!({"max-length": 2, "dead-letter-exchange": dlx}));
    let mut dead_letters = lconsume(&ch, &dead, true).await;
    let got = dead_letters.take(3).await;
    assert_eq!(
        got.iter().map(|d| d.data.clone()).collect::<Vec<_>>(),
        vec![b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]
    );
    assert_eq!(field(&deaths(&got[0].properties)[0], "reason"), &lstr("maxlen"));
    assert_eq!(ldrain(&ch, &work).await, vec![b"m3".to_vec(), b"m4".to_vec()]);
}
