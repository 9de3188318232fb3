//! Single active consumer and consumer timeout, end to end through lapin: the handover from
//! the active consumer to the next one when it is cancelled and when its connection closes
//! (its unacked messages first, at their original positions), the exclusive-consume refusal,
//! and the consumer timeout closing a channel with RabbitMQ's 406 text (broker-wide and per
//! queue) and requeueing what it held. Every wait is on an event (a delivery, a channel
//! close), bounded by the hang guard; nothing sleeps.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::*;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

fn sac_args() -> FieldTable {
    ltable(vec![("x-single-active-consumer", AMQPValue::Boolean(true))])
}

/// A channel with per-consumer prefetch `prefetch` (0: unlimited).
async fn qos_chan(conn: &Connection, prefetch: u16) -> Channel {
    let ch = lchan(conn).await;
    guard("basic.qos", ch.basic_qos(prefetch, BasicQosOptions::default())).await.expect("basic.qos");
    ch
}

fn bodies(deliveries: &[lapin::message::Delivery]) -> Vec<(String, bool)> {
    deliveries.iter().map(|d| (String::from_utf8_lossy(&d.data).into_owned(), d.redelivered)).collect()
}

fn expected(items: &[(&str, bool)]) -> Vec<(String, bool)> {
    items.iter().map(|(b, r)| (b.to_string(), *r)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_hands_over_on_cancel() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let q = uniq("sac-cancel");
    let pubch = lconfirm_chan(&conn).await;
    ldeclare(&pubch, &q, Default::default(), sac_args()).await;
    let (a_ch, b_ch) = (qos_chan(&conn, 0).await, qos_chan(&conn, 0).await);
    let mut a = lconsume(&a_ch, &q, false).await;
    let mut b = lconsume(&b_ch, &q, false).await;
    assert_eq!(lcount(&pubch, &q).await, (0, 2), "both consumers are registered");
    for i in 1..=4 {
        lpub(&pubch, "", &q, format!("m{i}").as_bytes()).await;
    }
    // Everything goes to the first consumer (so none of it to the second, which has credit).
    let got = a.take(4).await;
    assert_eq!(bodies(&got), expected(&[("m1", false), ("m2", false), ("m3", false), ("m4", false)]));
    got[0].ack(BasicAckOptions::default()).await.expect("ack");
    // The active consumer is cancelled holding m2..m4 unacked: they stay its channel's, and
    // the next consumer takes over for what is published from now on.
    guard("basic.cancel", a_ch.basic_cancel(a.tag.as_str().into(), BasicCancelOptions::default()))
        .await
        .expect("basic.cancel");
    lpub(&pubch, "", &q, b"m5").await;
    assert_eq!(bodies(&[b.next().await]), expected(&[("m5", false)]));
    // Its client gives m3 and m4 back: they go to the new active consumer, redelivered.
    let nack = BasicNackOptions { multiple: true, requeue: true };
    guard("basic.nack", a_ch.basic_nack(got[3].delivery_tag, nack)).await.expect("basic.nack");
    assert_eq!(bodies(&b.take(3).await), expected(&[("m2", true), ("m3", true), ("m4", true)]));
    assert!(a.pending().is_empty(), "nothing more for the cancelled consumer");
    assert_eq!(lcount(&pubch, &q).await, (0, 1));
    guard("delete", pubch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_hands_over_when_its_connection_closes() {
    let broker = common::start().await;
    let (conn_a, conn_b, conn_c, pubconn) =
        (lconn(&broker).await, lconn(&broker).await, lconn(&broker).await, lconn(&broker).await);
    let q = uniq("sac-close");
    let pubch = lconfirm_chan(&pubconn).await;
    ldeclare(&pubch, &q, Default::default(), sac_args()).await;
    // A is active with a prefetch of 2; B and C wait, in that order, with unlimited credit.
    let a_ch = qos_chan(&conn_a, 2).await;
    let mut a = lconsume(&a_ch, &q, false).await;
    let b_ch = qos_chan(&conn_b, 0).await;
    let mut b = lconsume(&b_ch, &q, false).await;
    let c_ch = qos_chan(&conn_c, 0).await;
    let mut c = lconsume(&c_ch, &q, false).await;
    for i in 1..=5 {
        lpub(&pubch, "", &q, format!("m{i}").as_bytes()).await;
    }
    assert_eq!(bodies(&a.take(2).await), expected(&[("m1", false), ("m2", false)]));
    // The active consumer at its prefetch holds the queue: nobody else gets m3..m5.
    assert_eq!(lcount(&pubch, &q).await, (3, 3));
    // A's connection closes with m1 and m2 unacked: they are requeued at their places and B,
    // registered next, takes over, in queue order.
    lclose(&conn_a).await;
    assert_eq!(
        bodies(&b.take(5).await),
        expected(&[("m1", true), ("m2", true), ("m3", false), ("m4", false), ("m5", false)])
    );
    assert_eq!(lcount(&pubch, &q).await, (0, 2));
    // B's connection goes too (holding five unacked): C takes over with all of them.
    lclose(&conn_b).await;
    let got = c.take(5).await;
    assert!(got.iter().all(|d| d.redelivered));
    assert_eq!(got.iter().map(|d| d.data.clone()).collect::<Vec<_>>(), [b"m1", b"m2", b"m3", b"m4", b"m5"]);
    guard("delete", pubch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn_c).await;
    lclose(&pubconn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_refuses_exclusive_consumers() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let q = uniq("sac-excl");
    let ch = lchan(&conn).await;
    ldeclare(&ch, &q, Default::default(), sac_args()).await;
    let op = ch.basic_consume(
        q.as_str().into(),
        "".into(),
        BasicConsumeOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    );
    let text = format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use");
    lexpect_channel_closed(&conn, &ch, op, 403, &text).await;
    // Redeclaring without the argument is refused (it is part of the equivalence check).
    let ch = lchan(&conn).await;
    let op = ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default());
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue '{q}' in vhost '/': received \
         none but current is the value 'true' of type 'bool'"
    );
    lexpect_channel_closed(&conn, &ch, op, 406, &text).await;
    let ch = lchan(&conn).await;
    guard("delete", ch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}

fn timeout_text(channel: u16, timeout_ms: u64) -> String {
    format!(
        "PRECONDITION_FAILED - delivery acknowledgement on channel {channel} timed out. Timeout value used: \
         {timeout_ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_timeout_closes_the_channel_and_requeues() {
    let broker = common::start_with(lepus_server::Config { consumer_timeout: 200, ..common::test_config() }).await;
    let conn = lconn(&broker).await;
    let q = uniq("timeout");
    let pubch = lconfirm_chan(&conn).await;
    ldeclare(&pubch, &q, Default::default(), FieldTable::default()).await;
    let ch = lchan(&conn).await;
    let mut consumer = lconsume(&ch, &q, false).await;
    lpub(&pubch, "", &q, b"slow").await;
    let d = consumer.next().await;
    assert!(!d.redelivered);
    // Never acked: the channel is closed once it has waited past the timeout.
    let err = consumer.channel_error().await;
    assert_eq!(amqp_err(&err), (406, timeout_text(ch.id(), 200)));
    assert!(!ch.status().connected(), "the channel is closed");
    assert!(conn.status().connected(), "the connection stays open");
    // The message is back in the queue, redelivered.
    let again = lget(&pubch, &q, true).await.expect("the message was requeued");
    assert_eq!((again.delivery.data.as_slice(), again.delivery.redelivered), (&b"slow"[..], true));
    guard("delete", pubch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_s_consumer_timeout_overrides_the_broker_s() {
    // The broker's timeout is 200 ms; queue `off` turns it off, queue `short` sets 100 ms.
    let broker = common::start_with(lepus_server::Config { consumer_timeout: 200, ..common::test_config() }).await;
    let conn = lconn(&broker).await;
    let (off, short) = (uniq("timeout-off"), uniq("timeout-100"));
    let pubch = lconfirm_chan(&conn).await;
    let args = |ms: i64| ltable(vec![("x-consumer-timeout", AMQPValue::LongLongInt(ms))]);
    ldeclare(&pubch, &off, Default::default(), args(0)).await;
    ldeclare(&pubch, &short, Default::default(), args(100)).await;
    // Both channels are on one connection, so its task looks at the channels whose timer
    // fired in deadline order: had `off`'s delivery (the older one) a timeout, its channel
    // would be closed before the other's.
    let off_ch = lchan(&conn).await;
    let mut off_consumer = lconsume(&off_ch, &off, false).await;
    lpub(&pubch, "", &off, b"kept").await;
    let kept = off_consumer.next().await;
    let short_ch = lchan(&conn).await;
    let mut short_consumer = lconsume(&short_ch, &short, false).await;
    lpub(&pubch, "", &short, b"dropped").await;
    short_consumer.next().await;
    let err = short_consumer.channel_error().await;
    assert_eq!(amqp_err(&err), (406, timeout_text(short_ch.id(), 100)));
    assert!(off_ch.status().connected(), "no timeout on a queue whose x-consumer-timeout is 0");
    // The delivery is still its channel's to ack (an unknown tag would close the channel).
    kept.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(lcount(&off_ch, &off).await, (0, 1));
    assert!(off_ch.status().connected());
    assert_eq!(lcount(&pubch, &short).await, (1, 0), "requeued");
    // An invalid value is refused like the other integer arguments.
    let ch = lchan(&conn).await;
    let op = ch.queue_declare(uniq("bad").as_str().into(), Default::default(), args(-1));
    let bad = "value_negative,-1";
    let err = guard("declare", op).await.expect_err("refused");
    let (code, text) = amqp_err(&err);
    assert!(code == 406 && text.contains("invalid arg 'x-consumer-timeout'") && text.contains(bad), "{text}");
    for q in [&off, &short] {
        guard("delete", pubch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    }
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_at_consumer_max_per_channel_gets_530_for_one_more_consumer() {
    let broker =
        common::start_with(lepus_server::Config { consumer_max_per_channel: 2, ..common::test_config() }).await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let q = lexcl(&ch).await;
    lconsume(&ch, &q, false).await;
    lconsume(&ch, &q, true).await;
    // Each channel counts its own.
    let other = lchan(&conn).await;
    lconsume(&other, &q, false).await;
    let refused = lconsume_with(&ch, &q, "", BasicConsumeOptions::default(), FieldTable::default()).await;
    let error = refused.err().expect("a third consumer on the channel");
    assert_eq!(amqp_err(&error), (530, "NOT_ALLOWED - reached maximum (2) of consumers per channel".into()));
    broker.stop().await;
}
