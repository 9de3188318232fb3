//! The AMQP model through real clients (lapin, and amqprs where its raw callbacks show more):
//! error codes and texts (RabbitMQ 3.x's, as in tests/conformance/python), queue and exchange
//! lifecycles, routing features, confirms, acknowledgements, QoS, transactions, consumer
//! priorities, message fidelity and queue arguments.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::*;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRecoverOptions, BasicRejectOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};

const RESOURCE_LOCKED_TAIL: &str = "It could be originally declared on another connection or the exclusive property \
                                    value does not match that of the original declaration.";

fn excl() -> QueueDeclareOptions {
    QueueDeclareOptions { exclusive: true, ..Default::default() }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

async fn declare_ex(ch: &Channel, name: &str, kind: ExchangeKind, args: FieldTable) {
    guard("exchange.declare", ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), args))
        .await
        .expect("exchange.declare");
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    guard("queue.bind", ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), args))
        .await
        .expect("queue.bind");
}

/// A synchronous round trip on `ch`: everything sent on it before has been processed.
async fn sync(ch: &Channel) {
    guard("round trip", ch.basic_qos(0, BasicQosOptions { global: true })).await.expect("round trip");
}

async fn fresh(conn: &Connection) -> Channel {
    lchan(conn).await
}

// ---------------------------------------------------------------------------------------------
// Errors: which of channel/connection closes, with which code and text
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_404_closes_channel_only() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let q = uniq("missing");
    let ex = uniq("missing");
    let no_queue = format!("NOT_FOUND - no queue '{q}' in vhost '/'");
    let no_exchange = format!("NOT_FOUND - no exchange '{ex}' in vhost '/'");

    let ch = fresh(&conn).await;
    lexpect_channel_closed(
        &conn,
        &ch,
        ch.queue_declare(q.as_str().into(), passive(), FieldTable::default()),
        404,
        &no_queue,
    )
    .await;
    let ch = fresh(&conn).await;
    let op = ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    );
    lexpect_channel_closed(&conn, &ch, op, 404, &no_exchange).await;
    let ch = fresh(&conn).await;
    let op = ch.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default());
    lexpect_channel_closed(&conn, &ch, op, 404, &no_queue).await;
    let ch = fresh(&conn).await;
    lexpect_channel_closed(&conn, &ch, ch.basic_get(q.as_str().into(), Default::default()), 404, &no_queue).await;
    let ch = fresh(&conn).await;
    let op =
        ch.queue_bind(q.as_str().into(), "amq.direct".into(), "k".into(), Default::default(), FieldTable::default());
    lexpect_channel_closed(&conn, &ch, op, 404, &no_queue).await;
    let ch = fresh(&conn).await;
    let own = lexcl(&ch).await;
    let op =
        ch.queue_bind(own.as_str().into(), ex.as_str().into(), "k".into(), Default::default(), FieldTable::default());
    lexpect_channel_closed(&conn, &ch, op, 404, &no_exchange).await;
    // Publishing to a missing exchange: the error arrives asynchronously.
    let ch = fresh(&conn).await;
    let op = ch.basic_publish(ex.as_str().into(), "k".into(), BasicPublishOptions::default(), b"lost", lprops());
    lexpect_async_close(&conn, &ch, op, 404, &no_exchange).await;
    // ... also in confirm mode.
    let ch = lconfirm_chan(&conn).await;
    let op = ch.basic_publish(ex.as_str().into(), "k".into(), BasicPublishOptions::default(), b"lost", lprops());
    lexpect_async_close(&conn, &ch, op, 404, &no_exchange).await;

    // amqprs sees the same channel.close.
    let aconn = aconn(&broker).await;
    let ach = achan(&aconn).await;
    let mut events = aevents(&ach).await;
    let args = amqprs::channel::QueueDeclareArguments::new(&q).passive(true).finish();
    assert!(ach.queue_declare(args).await.is_err());
    assert_eq!(next_event(&mut events).await, ChanEvent::Close(404, no_queue.clone()));
    assert!(aconn.is_open());
    let again = achan(&aconn).await;
    again.close().await.expect("connection still usable");
    aconn.close().await.expect("close");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_mismatch_406() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let q = uniq("durable");
    let ch = fresh(&conn).await;
    ldeclare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    // Identical redeclaration is fine.
    ldeclare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    let op = ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    );
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
    );
    lexpect_channel_closed(&conn, &ch, op, 406, &text).await;

    let ch = fresh(&conn).await;
    let args = ltable(vec![("x-max-length", AMQPValue::LongInt(5))]);
    let op = ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args);
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received the value '5' of \
         type 'signedint' but current is none"
    );
    lexpect_channel_closed(&conn, &ch, op, 406, &text).await;

    let ch = fresh(&conn).await;
    let op = ch.exchange_declare("amq.direct".into(), ExchangeKind::Fanout, Default::default(), FieldTable::default());
    let text = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': received 'fanout' \
                but current is 'direct'";
    lexpect_channel_closed(&conn, &ch, op, 406, text).await;
    let ch = fresh(&conn).await;
    guard("delete", ch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_of_another_connection_405() {
    let broker = common::start().await;
    let owner = lconn(&broker).await;
    let och = fresh(&owner).await;
    let q = uniq("locked");
    ldeclare(&och, &q, excl(), FieldTable::default()).await;
    let text = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. {RESOURCE_LOCKED_TAIL}"
    );
    let other = lconn(&broker).await;
    let qs = || -> lapin::types::ShortString { q.as_str().into() };
    for op in ["declare", "declare-exclusive", "passive", "consume", "get", "purge", "delete", "bind"] {
        let ch = fresh(&other).await;
        let ft = FieldTable::default;
        match op {
            "declare" => {
                lexpect_channel_closed(&other, &ch, ch.queue_declare(qs(), Default::default(), ft()), 405, &text).await
            }
            "declare-exclusive" => {
                lexpect_channel_closed(&other, &ch, ch.queue_declare(qs(), excl(), ft()), 405, &text).await
            }
            "passive" => lexpect_channel_closed(&other, &ch, ch.queue_declare(qs(), passive(), ft()), 405, &text).await,
            "consume" => {
                let fut = ch.basic_consume(qs(), "".into(), Default::default(), ft());
                lexpect_channel_closed(&other, &ch, fut, 405, &text).await
            }
            "get" => lexpect_channel_closed(&other, &ch, ch.basic_get(qs(), Default::default()), 405, &text).await,
            "purge" => lexpect_channel_closed(&other, &ch, ch.queue_purge(qs(), Default::default()), 405, &text).await,
            "delete" => {
                lexpect_channel_closed(&other, &ch, ch.queue_delete(qs(), Default::default()), 405, &text).await
            }
            _ => {
                let fut = ch.queue_bind(qs(), "amq.direct".into(), "k".into(), Default::default(), ft());
                lexpect_channel_closed(&other, &ch, fut, 405, &text).await
            }
        }
    }
    // The owner is unaffected.
    assert_eq!(lcount(&och, &q).await, (0, 0));
    lclose(&other).await;
    lclose(&owner).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_amq_prefix_403() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = fresh(&conn).await;
    let op = ch.exchange_declare("amq.foo".into(), ExchangeKind::Direct, Default::default(), FieldTable::default());
    lexpect_channel_closed(
        &conn,
        &ch,
        op,
        403,
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'",
    )
    .await;
    let ch = fresh(&conn).await;
    let op = ch.queue_declare("amq.gen-foo".into(), Default::default(), FieldTable::default());
    lexpect_channel_closed(
        &conn,
        &ch,
        op,
        403,
        "ACCESS_REFUSED - queue name 'amq.gen-foo' contains reserved prefix 'amq.*'",
    )
    .await;
    let ch = fresh(&conn).await;
    let op = ch.exchange_delete("amq.direct".into(), Default::default());
    let text = "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed";
    lexpect_channel_closed(&conn, &ch, op, 403, text).await;
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Queue lifecycles
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_deleted_when_its_connection_closes() {
    let broker = common::start().await;
    let a = lconn(&broker).await;
    let q = uniq("excl");
    let ach = fresh(&a).await;
    ldeclare(&ach, &q, excl(), FieldTable::default()).await;
    guard("connection.close", a.close(200, "bye".into())).await.expect("owner closes");
    let b = lconn(&broker).await;
    let ch = fresh(&b).await;
    let op = ch.queue_declare(q.as_str().into(), passive(), FieldTable::default());
    lexpect_channel_closed(&b, &ch, op, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'")).await;
    // The name is free again, for anybody.
    ldeclare(&fresh(&b).await, &q, excl(), FieldTable::default()).await;
    lclose(&b).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_deleted_when_last_consumer_cancels() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = fresh(&conn).await;
    let q = uniq("autodel");
    ldeclare(&ch, &q, QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default()).await;
    let c1 = lconsume(&ch, &q, false).await;
    let c2 = lconsume(&ch, &q, false).await;
    assert_eq!(lcount(&ch, &q).await, (0, 2));
    guard("cancel", ch.basic_cancel(c1.tag.as_str().into(), BasicCancelOptions::default())).await.expect("cancel");
    assert_eq!(lcount(&ch, &q).await, (0, 1), "still one consumer: the queue stays");
    guard("cancel", ch.basic_cancel(c2.tag.as_str().into(), BasicCancelOptions::default())).await.expect("cancel");
    let other = lconn(&broker).await;
    let och = fresh(&other).await;
    let op = och.queue_declare(q.as_str().into(), passive(), FieldTable::default());
    lexpect_channel_closed(&other, &och, op, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'")).await;
    lclose(&other).await;
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_delete_report_counts() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    for _ in 0..7 {
        lpub(&ch, "", &q, b"x").await;
    }
    let unacked = lget(&ch, &q, false).await.expect("a message");
    // Unacked messages are not purged.
    assert_eq!(
        guard("purge", ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())).await.expect("purge"),
        6
    );
    assert_eq!(
        guard("purge", ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())).await.expect("purge"),
        0
    );
    unacked.delivery.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
    let back = lget(&ch, &q, true).await.expect("requeued message");
    assert!(back.delivery.redelivered);
    assert_eq!(back.message_count, 0);

    let named = uniq("del");
    ldeclare(&ch, &named, QueueDeclareOptions::default(), FieldTable::default()).await;
    for _ in 0..3 {
        lpub(&ch, "", &named, b"x").await;
    }
    let del = || ch.queue_delete(named.as_str().into(), QueueDeleteOptions::default());
    assert_eq!(guard("delete", del()).await.expect("delete"), 3);
    // Deleting a queue that does not exist is not an error.
    assert_eq!(guard("delete", del()).await.expect("delete"), 0);
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_and_if_empty() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("cond");
    ldeclare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    lpub(&ch, "", &q, b"x").await;
    let op = ch.queue_delete(q.as_str().into(), QueueDeleteOptions { if_empty: true, ..Default::default() });
    lexpect_channel_closed(&conn, &ch, op, 406, &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"))
        .await;

    let ch = fresh(&conn).await;
    let mut consumer = lconsume(&ch, &q, false).await;
    assert_eq!(consumer.next().await.data, b"x");
    let other = lconn(&broker).await;
    let och = fresh(&other).await;
    let op = och.queue_delete(q.as_str().into(), QueueDeleteOptions { if_unused: true, ..Default::default() });
    lexpect_channel_closed(&other, &och, op, 406, &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"))
        .await;
    // Without the condition it goes; the count is of ready messages (the one delivered is not).
    let och = fresh(&other).await;
    assert_eq!(guard("delete", och.queue_delete(q.as_str().into(), Default::default())).await.expect("delete"), 0);
    consumer.cancelled().await;
    let unused = uniq("unused");
    ldeclare(&och, &unused, QueueDeclareOptions::default(), FieldTable::default()).await;
    let opts = QueueDeleteOptions { if_unused: true, if_empty: true, ..Default::default() };
    assert_eq!(guard("delete", och.queue_delete(unused.as_str().into(), opts)).await.expect("delete"), 0);

    // Exchanges: if-unused refuses a bound exchange (source of a binding).
    let ex = uniq("ifunused");
    declare_ex(&och, &ex, ExchangeKind::Direct, FieldTable::default()).await;
    let bound = lexcl(&och).await;
    bind(&och, &bound, &ex, "k", FieldTable::default()).await;
    let op = och.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() });
    lexpect_channel_closed(
        &other,
        &och,
        op,
        406,
        &format!("PRECONDITION_FAILED - exchange '{ex}' in vhost '/' in use"),
    )
    .await;
    let och = fresh(&other).await;
    let lone = uniq("lone");
    declare_ex(&och, &lone, ExchangeKind::Direct, FieldTable::default()).await;
    let opts = ExchangeDeleteOptions { if_unused: true, ..Default::default() };
    guard("exchange.delete", och.exchange_delete(lone.as_str().into(), opts)).await.expect("unused: deleted");
    // Deleting a missing exchange is not an error.
    guard("exchange.delete", och.exchange_delete(lone.as_str().into(), Default::default())).await.expect("idempotent");
    guard("exchange.delete", och.exchange_delete(ex.as_str().into(), Default::default())).await.expect("delete");
    lclose(&other).await;
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Routing: e2e bindings, alternate exchange, headers exchange
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let (src, dst) = (uniq("src"), uniq("dst"));
    declare_ex(&ch, &src, ExchangeKind::Topic, FieldTable::default()).await;
    declare_ex(&ch, &dst, ExchangeKind::Direct, FieldTable::default()).await;
    let q = lexcl(&ch).await;
    bind(&ch, &q, &dst, "a.b", FieldTable::default()).await;
    let e2e = || {
        ch.exchange_bind(
            dst.as_str().into(),
            src.as_str().into(),
            "a.*".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
    };
    guard("exchange.bind", e2e()).await.expect("exchange.bind");
    lpub(&ch, &src, "a.b", b"via src").await; // src matches a.*, dst matches a.b
    lpub(&ch, &src, "a.c", b"dst drops").await;
    lpub(&ch, &src, "b.b", b"src drops").await;
    lpub(&ch, &dst, "a.b", b"direct to dst").await;
    assert_eq!(ldrain(&ch, &q).await, [b"via src".to_vec(), b"direct to dst".to_vec()]);
    let unbind = ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "a.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    );
    guard("exchange.unbind", unbind).await.expect("exchange.unbind");
    lpub(&ch, &src, "a.b", b"after unbind").await;
    assert!(ldrain(&ch, &q).await.is_empty());

    // Two paths to the same queue: delivered once.
    let (s2, mid) = (uniq("src2"), uniq("mid"));
    declare_ex(&ch, &s2, ExchangeKind::Fanout, FieldTable::default()).await;
    declare_ex(&ch, &mid, ExchangeKind::Fanout, FieldTable::default()).await;
    let fan = ch.exchange_bind(
        mid.as_str().into(),
        s2.as_str().into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    );
    guard("exchange.bind", fan).await.expect("exchange.bind");
    bind(&ch, &q, &mid, "", FieldTable::default()).await;
    bind(&ch, &q, &s2, "", FieldTable::default()).await;
    lpub(&ch, &s2, "", b"once").await;
    assert_eq!(ldrain(&ch, &q).await, [b"once".to_vec()]);
    for ex in [&src, &dst, &s2, &mid] {
        guard("exchange.delete", ch.exchange_delete(ex.as_str().into(), Default::default())).await.expect("delete");
    }
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_catches_unroutable() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let (main, ae) = (uniq("main"), uniq("ae"));
    declare_ex(&ch, &ae, ExchangeKind::Fanout, FieldTable::default()).await;
    declare_ex(&ch, &main, ExchangeKind::Direct, ltable(vec![("alternate-exchange", lstr(&ae))])).await;
    let q_main = lexcl(&ch).await;
    let q_ae = lexcl(&ch).await;
    bind(&ch, &q_main, &main, "known", FieldTable::default()).await;
    bind(&ch, &q_ae, &ae, "", FieldTable::default()).await;
    lpub(&ch, &main, "known", b"routed").await;
    lpub(&ch, &main, "unknown", b"caught").await;
    // Caught by the AE means routed: a mandatory publish is not returned.
    let c = lpub_opts(
        &ch,
        &main,
        "unknown2",
        b"caught mandatory",
        lprops(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
    )
    .await;
    assert_eq!(c, Confirmation::Ack(None));
    assert_eq!(ldrain(&ch, &q_main).await, [b"routed".to_vec()]);
    assert_eq!(ldrain(&ch, &q_ae).await, [b"caught".to_vec(), b"caught mandatory".to_vec()]);
    lpub(&ch, &main, "unknown3", b"with key").await;
    let got = lget(&ch, &q_ae, true).await.expect("caught");
    assert_eq!((got.delivery.exchange.as_str(), got.delivery.routing_key.as_str()), (main.as_str(), "unknown3"));
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_x_match_all_and_any() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let ex = uniq("headers");
    declare_ex(&ch, &ex, ExchangeKind::Headers, FieldTable::default()).await;
    let q_all = lexcl(&ch).await;
    let q_any = lexcl(&ch).await;
    let q_exists = lexcl(&ch).await;
    bind(
        &ch,
        &q_all,
        &ex,
        "",
        ltable(vec![("x-match", lstr("all")), ("format", lstr("pdf")), ("type", lstr("report"))]),
    )
    .await;
    bind(&ch, &q_any, &ex, "", ltable(vec![("x-match", lstr("any")), ("format", lstr("pdf")), ("type", lstr("log"))]))
        .await;
    // No x-match means all; values must match in type as well as value.
    bind(&ch, &q_exists, &ex, "", ltable(vec![("size", AMQPValue::LongInt(10))])).await;
    let cases: Vec<(&str, Option<FieldTable>, &[&str])> = vec![
        ("both", Some(ltable(vec![("format", lstr("pdf")), ("type", lstr("report"))])), &["all", "any"]),
        (
            "extra",
            Some(ltable(vec![("format", lstr("pdf")), ("type", lstr("report")), ("x", AMQPValue::LongInt(1))])),
            &["all", "any"],
        ),
        ("pdf-only", Some(ltable(vec![("format", lstr("pdf"))])), &["any"]),
        ("log", Some(ltable(vec![("type", lstr("log"))])), &["any"]),
        ("wrong", Some(ltable(vec![("format", lstr("zip")), ("type", lstr("mail"))])), &[]),
        ("none", None, &[]),
        ("empty", Some(FieldTable::default()), &[]),
        ("size-int", Some(ltable(vec![("size", AMQPValue::LongInt(10))])), &["exists"]),
        ("size-other", Some(ltable(vec![("size", AMQPValue::LongInt(11))])), &[]),
        ("size-str", Some(ltable(vec![("size", lstr("10"))])), &[]),
    ];
    for (name, headers, _) in &cases {
        let props = match headers {
            Some(h) => lprops().with_headers(h.clone()),
            None => lprops(),
        };
        lpub_props(&ch, &ex, "ignored", name.as_bytes(), props).await;
    }
    for (label, q) in [("all", &q_all), ("any", &q_any), ("exists", &q_exists)] {
        let want: Vec<Vec<u8>> =
            cases.iter().filter(|(_, _, d)| d.contains(&label)).map(|(n, _, _)| n.as_bytes().to_vec()).collect();
        assert_eq!(ldrain(&ch, q).await, want, "{label}");
    }
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Publisher confirms and basic.return
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_before_its_confirm_ack() {
    let broker = common::start().await;
    // lapin attaches a basic.return to the confirmation only if it arrived before the ack.
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let key = uniq("nobody");
    let props = lprops().with_message_id("m-1".into());
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    let c = lpub_opts(&ch, "amq.direct", &key, b"lost", props, mandatory).await;
    let Confirmation::Ack(Some(ret)) = c else { panic!("expected ack with the returned message, got {c:?}") };
    assert_eq!((ret.reply_code, ret.reply_text.as_str()), (312, "NO_ROUTE"));
    assert_eq!((ret.delivery.exchange.as_str(), ret.delivery.routing_key.as_str()), ("amq.direct", key.as_str()));
    assert_eq!(ret.delivery.data, b"lost");
    assert_eq!(ret.delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
    // Non-mandatory unroutable: acked and dropped, nothing returned.
    assert_eq!(lpub(&ch, "amq.direct", &key, b"dropped").await, Confirmation::Ack(None));
    let q = lexcl(&ch).await;
    assert_eq!(lpub_opts(&ch, "", &q, b"ok", lprops(), mandatory).await, Confirmation::Ack(None));
    assert_eq!(ldrain(&ch, &q).await, [b"ok".to_vec()]);
    lclose(&conn).await;

    // amqprs shows the raw order of events: return, then ack.
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let mut events = aevents(&ch).await;
    ch.confirm_select(amqprs::channel::ConfirmSelectArguments::default()).await.expect("confirm.select");
    let args = amqprs::channel::BasicPublishArguments::new("amq.topic", &key).mandatory(true).finish();
    ch.basic_publish(amqprs::BasicProperties::default(), b"bounce".to_vec(), args).await.expect("publish");
    let ret = next_event(&mut events).await;
    let want = ChanEvent::Return {
        code: 312,
        text: "NO_ROUTE".into(),
        exchange: "amq.topic".into(),
        routing_key: key.clone(),
        body: b"bounce".to_vec(),
    };
    assert_eq!(ret, want);
    assert_eq!(next_event(&mut events).await, ChanEvent::Ack(1, false));
    conn.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_ack_every_publish_with_tags_from_one() {
    let broker = common::start().await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let mut events = aevents(&ch).await;
    ch.confirm_select(amqprs::channel::ConfirmSelectArguments::default()).await.expect("confirm.select");
    let q = aexcl(&ch).await;
    let n = 2000u64;
    for i in 0..n {
        apub(&ch, "", &q, format!("m{i}").as_bytes(), amqprs::BasicProperties::default()).await;
    }
    // Acks (single or multiple=true) must cover 1..=n exactly once, in increasing order.
    let mut confirmed = 0u64;
    let mut multiples = 0;
    while confirmed < n {
        match next_event(&mut events).await {
            ChanEvent::Ack(tag, multiple) => {
                assert!(tag > confirmed && tag <= n, "ack {tag} after {confirmed}");
                if multiple {
                    multiples += 1;
                } else {
                    assert_eq!(tag, confirmed + 1, "a single ack must confirm exactly the next tag");
                }
                confirmed = tag;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(events.try_recv().is_err(), "nothing beyond the last tag");
    let _ = multiples; // multiple=true acks are allowed but not required
    let (_, messages, _) = ch
        .queue_declare(amqprs::channel::QueueDeclareArguments::new(&q).passive(true).finish())
        .await
        .expect("passive")
        .expect("declare-ok");
    assert_eq!(messages, n as u32);
    conn.close().await.expect("close");

    // lapin tracks the same confirms through its own bookkeeping.
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    let mut pending = Vec::new();
    for i in 0..500 {
        let body = format!("m{i}");
        pending.push(
            guard(
                "publish",
                ch.basic_publish("".into(), q.as_str().into(), Default::default(), body.as_bytes(), lprops()),
            )
            .await
            .expect("publish"),
        );
    }
    for p in pending {
        assert_eq!(guard("confirm", p).await.expect("confirm"), Confirmation::Ack(None));
    }
    assert!(guard("wait_for_confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
    assert_eq!(lcount(&ch, &q).await.0, 500);
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Acknowledgements
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_restores_original_order_and_sets_redelivered() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    for how in ["nack", "reject", "nack-multiple", "reverse-order"] {
        let ch = lconfirm_chan(&conn).await;
        let q = lexcl(&ch).await;
        for i in 0..4 {
            lpub(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let mut got = Vec::new();
        for i in 0..3 {
            let m = lget(&ch, &q, false).await.expect("message");
            assert_eq!(m.delivery.data, format!("m{i}").into_bytes());
            assert!(!m.delivery.redelivered);
            got.push(m);
        }
        assert_eq!(got.iter().map(|m| m.delivery.delivery_tag).collect::<Vec<_>>(), [1, 2, 3]);
        let requeue = BasicNackOptions { multiple: false, requeue: true };
        match how {
            "nack" => {
                for m in &got {
                    m.delivery.nack(requeue).await.expect("nack");
                }
            }
            "reject" => {
                for m in &got {
                    m.delivery.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
                }
            }
            "nack-multiple" => {
                let opts = BasicNackOptions { multiple: true, requeue: true };
                guard("nack", ch.basic_nack(3, opts)).await.expect("nack multiple");
            }
            _ => {
                for m in got.iter().rev() {
                    m.delivery.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
                }
            }
        }
        let mut after = Vec::new();
        while let Some(m) = lget(&ch, &q, false).await {
            after.push((String::from_utf8(m.delivery.data.clone()).expect("utf-8"), m.delivery.redelivered));
            m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        let want = [("m0", true), ("m1", true), ("m2", true), ("m3", false)].map(|(b, r)| (b.to_owned(), r));
        assert_eq!(after, want, "{how}");
    }
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_false_discards() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    for how in ["nack", "reject"] {
        let ch = lconfirm_chan(&conn).await;
        let q = lexcl(&ch).await;
        lpub(&ch, "", &q, b"doomed").await;
        lpub(&ch, "", &q, b"survivor").await;
        let m = lget(&ch, &q, false).await.expect("message");
        assert_eq!(m.delivery.data, b"doomed");
        if how == "nack" {
            m.delivery.nack(BasicNackOptions { multiple: false, requeue: false }).await.expect("nack");
        } else {
            m.delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
        }
        assert_eq!(lcount(&ch, &q).await.0, 1, "{how}");
        let m = lget(&ch, &q, true).await.expect("survivor");
        assert_eq!(m.delivery.data, b"survivor");
        assert!(!m.delivery.redelivered);
        assert!(lget(&ch, &q, true).await.is_none());
    }
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_message_count_and_get_empty() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    assert!(lget(&ch, &q, false).await.is_none());
    assert!(lget(&ch, &q, true).await.is_none());
    for i in 0..3 {
        lpub(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    let mut counts = Vec::new();
    for _ in 0..3 {
        let m = lget(&ch, &q, true).await.expect("message");
        counts.push((m.delivery.delivery_tag, m.message_count));
    }
    // message_count is the number left after this one.
    assert_eq!(counts, [(1, 2), (2, 1), (3, 0)]);
    assert!(lget(&ch, &q, true).await.is_none());

    // amqprs decodes get-empty too.
    let aconn = aconn(&broker).await;
    let ach = achan(&aconn).await;
    let aq = aexcl(&ach).await;
    let get = || amqprs::channel::BasicGetArguments::new(&aq);
    assert!(ach.basic_get(get()).await.expect("get").is_none());
    apub(&ach, "", &aq, b"one", amqprs::BasicProperties::default()).await;
    apub(&ach, "", &aq, b"two", amqprs::BasicProperties::default()).await;
    let (ok, _, body) = ach.basic_get(get()).await.expect("get").expect("message");
    assert_eq!((ok.delivery_tag(), ok.message_count(), body.as_slice()), (1, 1, &b"one"[..]));
    aconn.close().await.expect("close");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_recover_requeue_redelivers_unacked() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    let mut consumer = lconsume(&ch, &q, false).await;
    for i in 0..3 {
        lpub(&ch, "", &q, format!("r{i}").as_bytes()).await;
    }
    let first = consumer.take(3).await;
    assert!(first.iter().all(|d| !d.redelivered));
    first[0].ack(BasicAckOptions::default()).await.expect("ack");
    guard("recover", ch.basic_recover(BasicRecoverOptions { requeue: true })).await.expect("recover");
    let again = consumer.take(2).await;
    let mut bodies: Vec<_> = again.iter().map(|d| d.data.clone()).collect();
    bodies.sort();
    assert_eq!(bodies, [b"r1".to_vec(), b"r2".to_vec()]);
    assert!(again.iter().all(|d| d.redelivered));
    // Redeliveries get fresh delivery tags.
    assert_eq!(again.iter().map(|d| d.delivery_tag).collect::<Vec<_>>(), [4, 5]);
    for d in &again {
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(lcount(&ch, &q).await, (0, 1));
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_delivery_tag_closes_channel_406() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = fresh(&conn).await;
    let op = ch.basic_ack(42, BasicAckOptions::default());
    lexpect_async_close(&conn, &ch, op, 406, "PRECONDITION_FAILED - unknown delivery tag 42").await;

    // A double ack is an unknown tag the second time.
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    lpub(&ch, "", &q, b"x").await;
    let m = lget(&ch, &q, false).await.expect("message");
    let tag = m.delivery.delivery_tag;
    let op = async {
        ch.basic_ack(tag, BasicAckOptions::default()).await?;
        ch.basic_ack(tag, BasicAckOptions::default()).await
    };
    lexpect_async_close(&conn, &ch, op, 406, "PRECONDITION_FAILED - unknown delivery tag 1").await;
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// QoS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_per_consumer_prefetch() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let qa = lexcl(&ch).await;
    let qb = lexcl(&ch).await;
    for q in [&qa, &qb] {
        for i in 0..5 {
            lpub(&ch, "", q, format!("{i}").as_bytes()).await;
        }
    }
    guard("qos", ch.basic_qos(2, BasicQosOptions { global: false })).await.expect("qos");
    let mut ca = lconsume(&ch, &qa, false).await;
    let mut cb = lconsume(&ch, &qb, false).await;
    let da = ca.take(2).await;
    cb.take(2).await;
    // Each queue handed out exactly 2 (unacked) and holds the rest back.
    assert_eq!(lcount(&ch, &qa).await.0, 3);
    assert_eq!(lcount(&ch, &qb).await.0, 3);
    assert!(ca.pending().is_empty() && cb.pending().is_empty());
    // Acking one frees one slot for that consumer only.
    da[0].ack(BasicAckOptions::default()).await.expect("ack");
    let next = ca.next().await;
    assert_eq!(next.data, b"2");
    assert_eq!(lcount(&ch, &qa).await.0, 2);
    assert_eq!(lcount(&ch, &qb).await.0, 3);
    assert!(ca.pending().is_empty() && cb.pending().is_empty());
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_global_prefetch_shared_by_the_channel() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let qa = lexcl(&ch).await;
    let qb = lexcl(&ch).await;
    guard("qos", ch.basic_qos(3, BasicQosOptions { global: true })).await.expect("qos");
    let mut ca = lconsume(&ch, &qa, false).await;
    let mut cb = lconsume(&ch, &qb, false).await;
    let pubch = lconfirm_chan(&conn).await;
    for q in [&qa, &qb] {
        for i in 0..5 {
            lpub(&pubch, "", q, format!("{i}").as_bytes()).await;
        }
    }
    // Exactly 3 unacked deliveries across both consumers.
    let left = |ch: Channel, qa: String, qb: String| async move { lcount(&ch, &qa).await.0 + lcount(&ch, &qb).await.0 };
    let mut got = ca.pending();
    got.extend(cb.pending());
    while got.len() < 3 {
        // Both queues may still be pushing their share: wait for whichever arrives.
        tokio::select! {
            d = ca.next() => got.push(d),
            d = cb.next() => got.push(d),
        }
    }
    assert_eq!(got.len(), 3);
    assert_eq!(left(pubch.clone(), qa.clone(), qb.clone()).await, 7);
    assert!(ca.pending().is_empty() && cb.pending().is_empty());
    let last = got.iter().map(|d| d.delivery_tag).max().expect("tags");
    guard("ack", ch.basic_ack(last, BasicAckOptions { multiple: true })).await.expect("ack multiple");
    let mut more = Vec::new();
    while more.len() < 3 {
        tokio::select! {
            d = ca.next() => more.push(d),
            d = cb.next() => more.push(d),
        }
    }
    assert_eq!(left(pubch.clone(), qa.clone(), qb.clone()).await, 4);
    assert!(ca.pending().is_empty() && cb.pending().is_empty());
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_consumer_ignores_prefetch() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    for i in 0..10 {
        lpub(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    guard("qos", ch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
    let mut c = lconsume(&ch, &q, true).await;
    let got: Vec<_> = c.take(10).await.into_iter().map(|d| d.data).collect();
    assert_eq!(got, (0..10).map(|i| format!("{i}").into_bytes()).collect::<Vec<_>>());
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let observer_conn = lconn(&broker).await;
    let observer = fresh(&observer_conn).await;
    let q = uniq("tx");
    ldeclare(&observer, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    let tx = fresh(&conn).await;
    guard("tx.select", tx.tx_select()).await.expect("tx.select");
    lpub(&tx, "", &q, b"t1").await;
    lpub(&tx, "", &q, b"t2").await;
    sync(&tx).await;
    assert!(lget(&observer, &q, true).await.is_none(), "uncommitted publishes are invisible");
    guard("tx.commit", tx.tx_commit()).await.expect("commit");
    assert_eq!(lcount(&observer, &q).await.0, 2);
    lpub(&tx, "", &q, b"gone").await;
    guard("tx.rollback", tx.tx_rollback()).await.expect("rollback");
    guard("tx.commit", tx.tx_commit()).await.expect("empty commit");
    assert_eq!(ldrain(&observer, &q).await, [b"t1".to_vec(), b"t2".to_vec()]);

    // A rolled-back ack leaves the message unacked: it comes back when the channel closes.
    lpub(&tx, "", &q, b"t3").await;
    guard("tx.commit", tx.tx_commit()).await.expect("commit");
    let m = lget(&tx, &q, false).await.expect("t3");
    m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    guard("tx.rollback", tx.tx_rollback()).await.expect("rollback");
    guard("channel.close", tx.close(200, "bye".into())).await.expect("close");
    let mut c = lconsume(&observer, &q, true).await;
    let d = c.next().await;
    assert_eq!(d.data, b"t3");
    assert!(d.redelivered);
    guard("cancel", observer.basic_cancel(c.tag.as_str().into(), Default::default())).await.expect("cancel");

    // A committed ack sticks.
    let tx2 = fresh(&conn).await;
    guard("tx.select", tx2.tx_select()).await.expect("tx.select");
    lpub(&tx2, "", &q, b"t4").await;
    guard("tx.commit", tx2.tx_commit()).await.expect("commit");
    let m = lget(&tx2, &q, false).await.expect("t4");
    m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    guard("tx.commit", tx2.tx_commit()).await.expect("commit");
    guard("connection.close", conn.close(200, "bye".into())).await.expect("close");
    assert!(lget(&observer, &q, true).await.is_none());

    // Commit/rollback on a non-transactional channel.
    for op in ["commit", "rollback"] {
        let ch = fresh(&observer_conn).await;
        let text = "PRECONDITION_FAILED - channel is not transactional";
        if op == "commit" {
            lexpect_channel_closed(&observer_conn, &ch, ch.tx_commit(), 406, text).await;
        } else {
            lexpect_channel_closed(&observer_conn, &ch, ch.tx_rollback(), 406, text).await;
        }
    }
    let ch = fresh(&observer_conn).await;
    guard("delete", ch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&observer_conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_priority_wins_while_it_has_credit() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let q = uniq("prio");
    let pubch = lconfirm_chan(&conn).await;
    ldeclare(&pubch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    // Low priority (default 0) registered first, with plenty of credit.
    let low_ch = fresh(&conn).await;
    guard("qos", low_ch.basic_qos(10, Default::default())).await.expect("qos");
    let mut low = lconsume(&low_ch, &q, false).await;
    let high_ch = fresh(&conn).await;
    guard("qos", high_ch.basic_qos(2, Default::default())).await.expect("qos");
    let args = ltable(vec![("x-priority", AMQPValue::LongInt(10))]);
    let mut high = lconsume_with(&high_ch, &q, "", BasicConsumeOptions::default(), args).await.expect("consume");
    for i in 0..5 {
        lpub(&pubch, "", &q, format!("m{i}").as_bytes()).await;
    }
    // High gets the first two (its credit), low the rest.
    let h: Vec<_> = high.take(2).await;
    assert_eq!(h.iter().map(|d| d.data.clone()).collect::<Vec<_>>(), [b"m0".to_vec(), b"m1".to_vec()]);
    let l: Vec<_> = low.take(3).await.into_iter().map(|d| d.data).collect();
    assert_eq!(l, [b"m2".to_vec(), b"m3".to_vec(), b"m4".to_vec()]);
    // Once high has credit again, it gets the next message even though low has credit too.
    h[0].ack(BasicAckOptions::default()).await.expect("ack");
    sync(&high_ch).await;
    lpub(&pubch, "", &q, b"m5").await;
    assert_eq!(high.next().await.data, b"m5");
    assert_eq!(lcount(&pubch, &q).await, (0, 2));
    assert!(low.pending().is_empty());
    guard("delete", pubch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cancels_consumers_when_their_queue_is_deleted() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = fresh(&conn).await;
    let q = uniq("cancelme");
    ldeclare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    let mut consumer = lconsume(&ch, &q, false).await;

    let aconn = aconn(&broker).await;
    let ach = achan(&aconn).await;
    let mut events = aevents(&ach).await;
    let (atag, _rx) = aconsume(&ach, &q, true).await;

    let other = lconn(&broker).await;
    let och = fresh(&other).await;
    assert_eq!(guard("delete", och.queue_delete(q.as_str().into(), Default::default())).await.expect("delete"), 0);
    consumer.cancelled().await;
    assert!(ch.status().connected(), "the channel stays open");
    assert_eq!(next_event(&mut events).await, ChanEvent::Cancel(atag));
    assert!(ach.is_open());
    // The channel is still usable.
    lexcl(&ch).await;
    aexcl(&ach).await;
    aconn.close().await.expect("close");
    lclose(&other).await;
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Messages: properties and sizes
// ---------------------------------------------------------------------------------------------

fn all_header_types() -> FieldTable {
    let nested = ltable(vec![
        (
            "a",
            AMQPValue::FieldTable(ltable(vec![(
                "b",
                AMQPValue::FieldArray(FieldArray::from(vec![
                    AMQPValue::LongInt(1),
                    lstr("two"),
                    AMQPValue::FieldTable(ltable(vec![("c", AMQPValue::Void)])),
                ])),
            )])),
        ),
        ("empty", AMQPValue::FieldTable(FieldTable::default())),
    ]);
    ltable(vec![
        ("str", lstr("value")),
        ("unicode", lstr("h\u{e9}llo \u{2603}")),
        ("bool", AMQPValue::Boolean(true)),
        ("false", AMQPValue::Boolean(false)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60000)),
        ("i32", AMQPValue::LongInt(-70000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(1 << 40)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        ("decimal", AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 314 })),
        ("time", AMQPValue::Timestamp(1_577_934_245)),
        ("void", AMQPValue::Void),
        ("bytes", AMQPValue::ByteArray(vec![0u8, 1, 255].into())),
        ("nested", AMQPValue::FieldTable(nested)),
        (
            "array",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongInt(1),
                lstr("x"),
                AMQPValue::FieldArray(FieldArray::from(vec![])),
                AMQPValue::FieldTable(ltable(vec![("k", lstr("v"))])),
            ])),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_fourteen_properties_delivered_byte_for_byte() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    let props = BasicProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_content_encoding("gzip".into())
        .with_headers(all_header_types())
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr-123".into())
        .with_reply_to("reply.queue".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("my.type".into())
        .with_user_id("guest".into())
        .with_app_id("conformance".into())
        .with_cluster_id("cluster-7".into());
    lpub_props(&ch, "", &q, b"props", props.clone()).await;
    let got = lget(&ch, &q, true).await.expect("message");
    assert_eq!(got.delivery.data, b"props");
    assert_eq!(got.delivery.properties, props);
    // Through a consumer, and with no properties at all.
    let mut c = lconsume(&ch, &q, true).await;
    lpub_props(&ch, "", &q, b"again", props.clone()).await;
    assert_eq!(c.next().await.properties, props);
    lpub(&ch, "", &q, b"bare").await;
    let bare = c.next().await;
    assert_eq!(bare.data, b"bare");
    assert_eq!(bare.properties, BasicProperties::default());
    lclose(&conn).await;

    // amqprs sees the same values.
    let aconn = aconn(&broker).await;
    let ach = achan(&aconn).await;
    let aq = aexcl(&ach).await;
    let aprops = amqprs::BasicProperties::default()
        .with_content_type("text/plain")
        .with_content_encoding("utf-8")
        .with_delivery_mode(1)
        .with_priority(9)
        .with_correlation_id("c")
        .with_reply_to("r")
        .with_expiration("1000")
        .with_message_id("m")
        .with_timestamp(42)
        .with_message_type("t")
        .with_user_id("guest")
        .with_app_id("a")
        .with_cluster_id("cl")
        .finish();
    apub(&ach, "", &aq, b"x", aprops.clone()).await;
    let (_, got, _) = ach.basic_get(amqprs::channel::BasicGetArguments::new(&aq)).await.expect("get").expect("message");
    assert_eq!(format!("{got:?}"), format!("{aprops:?}"));
    aconn.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_every_size_cross_frames_intact() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let frame_max = conn.configuration().frame_max() as usize;
    let ch = lconfirm_chan(&conn).await;
    let q = lexcl(&ch).await;
    let mut c = lconsume(&ch, &q, true).await;
    let getq = lexcl(&ch).await;
    // Around the size from which bodies are written by reference (8 KiB), and frame_max.
    for size in [
        0,
        1,
        8191,
        8192,
        8193,
        frame_max - 9,
        frame_max - 8,
        frame_max - 7,
        frame_max,
        3 * frame_max + 1,
        1024 * 1024,
        1024 * 1024 + 3,
    ] {
        let body: Vec<u8> = (0..size).map(|i| ((i * 7 + 3) % 256) as u8).collect();
        lpub(&ch, "", &q, &body).await;
        let d = c.next().await;
        assert!(d.data == body, "consumed body of {size} B differs (got {} B)", d.data.len());
        lpub(&ch, "", &getq, &body).await;
        let g = lget(&ch, &getq, true).await.expect("message");
        assert!(g.delivery.data == body, "got body of {size} B differs (got {} B)", g.delivery.data.len());
    }
    // Large and small bodies interleaved, published without waiting: one drain writes them
    // in a single batch (large ones by reference, small ones copied), which must keep order.
    let sizes: Vec<usize> = (0..60).map(|i| if i % 3 == 0 { 20_000 + i } else { i }).collect();
    let plain = guard("channel", conn.create_channel()).await.expect("channel");
    for (i, size) in sizes.iter().enumerate() {
        let body: Vec<u8> = (0..*size).map(|j| ((i + j) % 256) as u8).collect();
        let publish = plain.basic_publish("".into(), q.as_str().into(), Default::default(), &body, Default::default());
        guard("basic.publish", publish).await.expect("basic.publish");
    }
    for (i, size) in sizes.iter().enumerate() {
        let d = c.next().await;
        let body: Vec<u8> = (0..*size).map(|j| ((i + j) % 256) as u8).collect();
        assert!(d.data == body, "message {i} of {size} B differs (got {} B)", d.data.len());
    }
    lclose(&conn).await;

    let aconn = aconn(&broker).await;
    let ach = achan(&aconn).await;
    let aq = aexcl(&ach).await;
    let (_tag, mut rx) = aconsume(&ach, &aq, false).await;
    for size in [0usize, 131_064, 1024 * 1024 + 3] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        apub(&ach, "", &aq, &body, amqprs::BasicProperties::default()).await;
        let (_, _, got) = anext(&mut rx).await;
        assert!(got == body, "amqprs body of {size} B differs (got {} B)", got.len());
    }
    aconn.close().await.expect("close");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Queue arguments
// ---------------------------------------------------------------------------------------------

fn quorum() -> FieldTable {
    ltable(vec![("x-queue-type", lstr("quorum"))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_declaration_rules() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    for (property, opts) in [
        ("non-durable", QueueDeclareOptions::default()),
        ("exclusive-owner", QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() }),
        ("auto-delete", QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() }),
    ] {
        let q = uniq("qq");
        let ch = fresh(&conn).await;
        let text = format!("PRECONDITION_FAILED - invalid property '{property}' for queue '{q}' in vhost '/'");
        lexpect_channel_closed(&conn, &ch, ch.queue_declare(q.as_str().into(), opts, quorum()), 406, &text).await;
    }
    // Durable is fine; redeclaring as classic (or without the type) is inequivalent.
    let q = uniq("qq");
    let ch = lconfirm_chan(&conn).await;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ldeclare(&ch, &q, durable, quorum()).await;
    ldeclare(&ch, &q, durable, quorum()).await;
    lpub(&ch, "", &q, b"replicated").await;
    assert_eq!(ldrain(&ch, &q).await, [b"replicated".to_vec()]);
    let op = ch.queue_declare(q.as_str().into(), durable, FieldTable::default());
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' in vhost '/': received none but current \
         is the value 'quorum' of type 'longstr'"
    );
    lexpect_channel_closed(&conn, &ch, op, 406, &text).await;
    let ch = fresh(&conn).await;
    guard("delete", ch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_queues_are_refused() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = fresh(&conn).await;
    let q = uniq("stream");
    let args = ltable(vec![("x-queue-type", lstr("stream"))]);
    let op = ch.queue_declare(q.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args);
    // Lepus divergence by design: RabbitMQ 3.9+ creates a stream queue here.
    let text = format!(
        "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q}' in vhost '/': stream queues are not \
         supported by Lepus yet"
    );
    lexpect_channel_closed(&conn, &ch, op, 406, &text).await;
    let ch = fresh(&conn).await;
    let op = ch.queue_declare(q.as_str().into(), passive(), FieldTable::default());
    lexpect_channel_closed(&conn, &ch, op, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'")).await;
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_or_negative_x_max_length_406() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    for (value, reason) in
        [(lstr("10"), "{unacceptable_type,longstr}"), (AMQPValue::LongInt(-1), "{value_negative,-1}")]
    {
        let ch = fresh(&conn).await;
        let q = uniq("maxlen");
        let op = ch.queue_declare(q.as_str().into(), Default::default(), ltable(vec![("x-max-length", value)]));
        let text = format!("PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '{q}' in vhost '/': {reason}");
        lexpect_channel_closed(&conn, &ch, op, 406, &text).await;
    }
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_max_length_drop_head_keeps_the_newest() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("drophead");
    let args = ltable(vec![("x-max-length", AMQPValue::LongInt(3))]);
    ldeclare(&ch, &q, excl(), args).await;
    for i in 0..5 {
        assert_eq!(lpub(&ch, "", &q, format!("m{i}").as_bytes()).await, Confirmation::Ack(None));
    }
    assert_eq!(lcount(&ch, &q).await.0, 3);
    assert_eq!(ldrain(&ch, &q).await, [b"m2".to_vec(), b"m3".to_vec(), b"m4".to_vec()]);
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_max_length_reject_publish_nacks_confirms() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("rejectpub");
    let args = ltable(vec![("x-max-length", AMQPValue::LongInt(2)), ("x-overflow", lstr("reject-publish"))]);
    ldeclare(&ch, &q, excl(), args).await;
    let mut results = Vec::new();
    for i in 0..4 {
        results.push(lpub(&ch, "", &q, format!("m{i}").as_bytes()).await.is_ack());
    }
    assert_eq!(results, [true, true, false, false]);
    assert_eq!(ldrain(&ch, &q).await, [b"m0".to_vec(), b"m1".to_vec()]);
    // Room again: accepted.
    assert!(lpub(&ch, "", &q, b"m4").await.is_ack());
    assert_eq!(ldrain(&ch, &q).await, [b"m4".to_vec()]);
    lclose(&conn).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The broker service: connection registry and message counters
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_connections_and_counts_their_messages() {
    use lepus_broker::stats::Stat;
    let broker = common::start().await;
    let registry = broker.service.connections();
    assert!(registry.is_empty());
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let _second = lchan(&conn).await;
    let q = lexcl(&ch).await;
    for body in [&b"a"[..], b"b", b"c"] {
        lpub(&ch, "", &q, body).await;
    }
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    lpub_opts(&ch, "", "no-such-queue", b"lost", lprops(), mandatory).await;
    let got = lget(&ch, &q, false).await.expect("a message");
    got.ack(BasicAckOptions::default()).await.expect("ack");
    assert!(lget(&ch, &q, true).await.is_some());
    let mut consumer = lconsume(&ch, &q, false).await;
    let delivery = consumer.next().await;
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    assert!(lget(&ch, &q, true).await.is_none());
    sync(&ch).await;

    let open = registry.list();
    assert_eq!(open.len(), 1);
    let info = &open[0];
    assert_eq!((info.user.as_str(), info.vhost.as_str(), info.protocol), ("guest", "/", "AMQP 0-9-1"));
    assert_eq!(info.peer.ip(), broker.addr.ip());
    assert_eq!(info.channels.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert!(info.client_properties.get("product").is_some(), "lapin names itself");
    let s = info.stats.snapshot();
    let counts = [Stat::Published, Stat::Routed, Stat::Unroutable, Stat::Returned, Stat::Confirmed];
    assert_eq!(counts.map(|c| s.get(c)), [4, 3, 1, 1, 4]);
    let counts = [Stat::Get, Stat::GetEmpty, Stat::Delivered, Stat::Redelivered, Stat::Acked];
    assert_eq!(counts.map(|c| s.get(c)), [2, 1, 1, 0, 2]);

    conn.close(200, "bye".into()).await.expect("close");
    // The broker deregisters the connection once its task ends, after close-ok.
    guard("deregistration", async {
        while !registry.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(registry.totals().get(Stat::Published), 4, "a closed connection's counts stay in the totals");
    assert_eq!(registry.churn(), (1, 1));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_direct_reply_to_checks_it_exists() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    // The pseudo-queue always exists, with its one consumer, whatever the flags.
    for options in [passive(), QueueDeclareOptions::default()] {
        let q = ldeclare(&ch, "amq.rabbitmq.reply-to", options, FieldTable::default()).await;
        assert_eq!((q.name().as_str(), q.message_count(), q.consumer_count()), ("amq.rabbitmq.reply-to", 0, 1));
    }
    // A channel's address exists while it consumes from the pseudo-queue.
    let client = lchan(&conn).await;
    lconsume(&client, "amq.rabbitmq.reply-to", true).await;
    let requests = lexcl(&ch).await;
    let props = lprops().with_reply_to("amq.rabbitmq.reply-to".into());
    lpub_props(&client, "", &requests, b"request", props).await;
    let request = lget(&ch, &requests, true).await.expect("the request");
    let address = request.properties.reply_to().clone().expect("a reply-to address").to_string();
    assert!(address.starts_with("amq.rabbitmq.reply-to."), "{address}");
    let q = ldeclare(&ch, &address, passive(), FieldTable::default()).await;
    assert_eq!((q.message_count(), q.consumer_count()), (0, 1));
    let unknown = "amq.rabbitmq.reply-to.nobody";
    let op = ch.queue_declare(unknown.into(), passive(), FieldTable::default());
    lexpect_channel_closed(&conn, &ch, op, 404, &format!("NOT_FOUND - no queue '{unknown}' in vhost '/'")).await;
    broker.stop().await;
}
