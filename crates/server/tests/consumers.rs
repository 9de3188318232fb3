//! Single active consumer and consumer timeout, end to end through lapin: the handover from
//! the active consumer to the next one when it is cancelled and when its connection closes
//! (its unacked messages first, at their original positions), the exclusive-consume refusal,
//! and the consumer timeout closing a channel with RabbitMQ's 406 text (broker-wide and per
//! queue) and requeueing what it held; the consumer timeout actions that cancel only the
//! consumer (`x-consumer-timeout-action`), on a manual broker clock. Every wait is on an event (a delivery, a channel
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

/// A broker on a manual clock, for the consumer timeout actions.
async fn clocked() -> (common::Broker, std::sync::Arc<lepus_broker::clock::ManualClock>) {
    let clock = std::sync::Arc::new(lepus_broker::clock::ManualClock::new(1_700_000_000_000));
    (common::start_with_clock(common::test_config(), clock.clone()).await, clock)
}

fn timeout_action_args(action: &str) -> Vec<(&'static str, AMQPValue)> {
    vec![("x-consumer-timeout", AMQPValue::LongLongInt(1_000)), ("x-consumer-timeout-action", lstr(action))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_requeue_cancels_only_the_consumer_and_its_successor_takes_over() {
    let (broker, clock) = clocked().await;
    let conn = lconn(&broker).await;
    let (q, other) = (uniq("timeout-requeue"), uniq("timeout-other"));
    let pubch = lconfirm_chan(&conn).await;
    let mut args = timeout_action_args("cancel-and-requeue");
    args.push(("x-single-active-consumer", AMQPValue::Boolean(true)));
    ldeclare(&pubch, &q, Default::default(), ltable(args)).await;
    ldeclare(&pubch, &other, Default::default(), FieldTable::default()).await;
    // A (active) and a consumer of another queue share a channel; B waits on its own.
    let ch = qos_chan(&conn, 0).await;
    let mut a = lconsume(&ch, &q, false).await;
    let b_ch = qos_chan(&conn, 0).await;
    let mut b = lconsume(&b_ch, &q, false).await;
    for i in 1..=2 {
        lpub(&pubch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let got = a.take(2).await;
    let mut bystander = lconsume(&ch, &other, false).await;
    clock.advance(1_001);
    // A is cancelled by the server (basic.cancel: lapin announces consumer_cancel_notify),
    // its deliveries go back at their places and B, next, takes over with them.
    a.cancelled().await;
    assert_eq!(bodies(&b.take(2).await), expected(&[("m1", true), ("m2", true)]));
    // The channel stays open: A's late settles are ignored, its other consumer goes on.
    got[0].ack(BasicAckOptions::default()).await.expect("late ack");
    let nack = BasicNackOptions { multiple: true, requeue: true };
    guard("late nack", ch.basic_nack(got[1].delivery_tag, nack)).await.expect("late nack");
    lpub(&pubch, "", &other, b"still here").await;
    let d = bystander.next().await;
    d.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(lcount(&ch, &other).await, (0, 1));
    assert_eq!(lcount(&ch, &q).await, (0, 1), "B holds both; A is gone");
    assert!(ch.status().connected() && b_ch.status().connected());
    // An unknown tag still closes the channel.
    let op = ch.basic_ack(99, BasicAckOptions::default());
    lexpect_async_close(&conn, &ch, op, 406, "PRECONDITION_FAILED - unknown delivery tag 99").await;
    for name in [&q, &other] {
        guard("delete", pubch.queue_delete(name.as_str().into(), Default::default())).await.expect("delete");
    }
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_dead_letter_dead_letters_the_consumer_s_deliveries_as_rejected() {
    let (broker, clock) = clocked().await;
    let conn = lconn(&broker).await;
    let (q, dlq) = (uniq("timeout-dl"), uniq("timeout-dlq"));
    let pubch = lconfirm_chan(&conn).await;
    ldeclare(&pubch, &dlq, Default::default(), FieldTable::default()).await;
    let mut args = timeout_action_args("cancel-and-dead-letter");
    args.push(("x-dead-letter-exchange", lstr("")));
    args.push(("x-dead-letter-routing-key", lstr(&dlq)));
    ldeclare(&pubch, &q, Default::default(), ltable(args)).await;
    let ch = lchan(&conn).await;
    let mut consumer = lconsume(&ch, &q, false).await;
    lpub(&pubch, "", &q, b"late").await;
    consumer.next().await;
    clock.advance(1_001);
    consumer.cancelled().await;
    let dead = lget(&pubch, &dlq, true).await.expect("dead-lettered");
    assert_eq!(dead.delivery.data, b"late");
    let headers = dead.delivery.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else { panic!("no x-death") };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else { panic!("no x-death entry") };
    assert_eq!(death.inner().get("reason"), Some(&lstr("rejected")));
    assert_eq!(lcount(&ch, &q).await, (0, 0));
    guard("delete", pubch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    guard("delete", pubch.queue_delete(dlq.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_timeout_action_is_validated_and_compared_on_redeclaration() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let q = uniq("timeout-action");
    let ch = lchan(&conn).await;
    let op = ch.queue_declare(q.as_str().into(), Default::default(), ltable(timeout_action_args("explode")));
    let text = format!(
        "PRECONDITION_FAILED - invalid arg 'x-consumer-timeout-action' for queue '{q}' in vhost '/': \
         {{unknown_consumer_timeout_action,<<\"explode\">>}}"
    );
    lexpect_channel_closed(&conn, &ch, op, 406, &text).await;
    let ch = lchan(&conn).await;
    ldeclare(&ch, &q, Default::default(), ltable(timeout_action_args("cancel-and-requeue"))).await;
    let op = ch.queue_declare(q.as_str().into(), Default::default(), ltable(timeout_action_args("close-channel")));
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-consumer-timeout-action' for queue '{q}' in vhost '/': \
         received 'close-channel' but current is 'cancel-and-requeue'"
    );
    lexpect_channel_closed(&conn, &ch, op, 406, &text).await;
    let ch = lchan(&conn).await;
    guard("delete", ch.queue_delete(q.as_str().into(), Default::default())).await.expect("delete");
    lclose(&conn).await;
    broker.stop().await;
}
