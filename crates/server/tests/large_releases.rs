//! Large releases done a step at a time (RELIABILITY.md F3): closing a channel or a
//! connection holding thousands of consumers on one queue, and deleting a queue with
//! thousands of bindings. Asserted through a raw client (which sends thousands of no-wait
//! methods in one write, as no client library does) and lapin: what the client sees is in
//! order (close-ok after the release and before the answers to what followed it), the queue
//! is left consistent and deliverable, nothing is delivered to a released consumer after its
//! close-ok, and a deleted queue is unroutable and unlisted. Nothing measures time.

#[path = "common/clients.rs"]
mod clients;
mod common;

use bytes::BytesMut;
use clients::*;
use common::Raw;
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicRecoverOptions, QueueBindOptions};
use lepus_broker::exchange::Destination;
use lepus_broker::queue::RequeueHold;
use lepus_protocol::frame::write_method;
use lepus_protocol::method::*;
use lepus_protocol::{Method, ShortStr};

/// More consumers or bindings than several steps of a release take.
const MANY: usize = 3 * 2048 + 7;

fn short(text: &str) -> ShortStr {
    ShortStr::try_from(text).expect("short string")
}

/// `n` methods from `make`, on `channel`, as one write.
async fn send_many(raw: &mut Raw, channel: u16, n: usize, make: impl Fn(usize) -> Method) {
    let mut out = BytesMut::new();
    for i in 0..n {
        write_method(&mut out, channel, &make(i));
    }
    raw.send(&out).await;
}

/// `n` no-wait consumers (acknowledging) of `queue` on `channel`, then a qos round trip.
async fn consume_many(raw: &mut Raw, channel: u16, queue: &str, n: usize) {
    send_many(raw, channel, n, |i| {
        BasicConsume { queue: short(queue), consumer_tag: short(&format!("c{i}")), no_wait: true, ..Default::default() }
            .into()
    })
    .await;
    raw.send_method(channel, BasicQos::default()).await;
    loop {
        match raw.next_method().await {
            Some((ch, Method::BasicQosOk(_))) if ch == channel => return,
            Some((_, Method::ConnectionClose(c))) => panic!("connection closed: {c:?}"),
            Some(_) => {}
            None => panic!("connection ended"),
        }
    }
}

/// Channel 1's close, then (in the same write) the channel opened again and a qos round trip.
async fn close_and_reopen(raw: &mut Raw) {
    let mut out = BytesMut::new();
    write_method(&mut out, 1, &ChannelClose::default().into());
    write_method(&mut out, 1, &ChannelOpen::default().into());
    write_method(&mut out, 1, &BasicQos::default().into());
    raw.send(&out).await;
}

/// The first `n` messages of `queue` through a new no-ack lapin consumer: (body, redelivered).
async fn consume_flagged(ch: &lapin::Channel, queue: &str, n: usize) -> Vec<(String, bool)> {
    let mut consumer = lconsume(ch, queue, true).await;
    consumer.take(n).await.iter().map(|d| (String::from_utf8_lossy(&d.data).into_owned(), d.redelivered)).collect()
}

/// A broker with a queue that a raw connection consumes from [`MANY`] times on channel 1, and
/// a lapin connection with a confirm channel.
struct Consumed {
    broker: common::Broker,
    conn: lapin::Connection,
    ch: lapin::Channel,
    q: String,
    raw: Raw,
}

async fn consumed_many(prefix: &str) -> Consumed {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq(prefix);
    ldeclare(&ch, &q, Default::default(), Default::default()).await;
    let mut raw = Raw::open_with_channel(broker.addr).await;
    consume_many(&mut raw, 1, &q, MANY).await;
    Consumed { broker, conn, ch, q, raw }
}

fn consumer_count(broker: &common::Broker, queue: &str) -> u32 {
    let vhost = broker.service.vhost("/").expect("vhost");
    vhost.queue(&short(queue), 0).expect("queue").consumer_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_with_many_consumers_answers_in_order_and_leaves_the_queue_deliverable() {
    let Consumed { broker, conn, ch, q, mut raw } = consumed_many("many-consumers").await;
    assert_eq!(consumer_count(&broker, &q), MANY as u32);
    // Delivered (unacked) to the consumers about to go.
    for i in 0..10 {
        lpub(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    close_and_reopen(&mut raw).await;
    let mut after_close = Vec::new();
    let mut closed = false;
    loop {
        let (channel, method) = raw.next_method().await.expect("connection open");
        assert_eq!(channel, 1);
        match method {
            Method::ChannelCloseOk(_) => closed = true,
            Method::BasicDeliver(_) if !closed => {}
            Method::BasicQosOk(_) => {
                after_close.push("qos-ok");
                break;
            }
            other => after_close.push(other.name()),
        }
    }
    assert!(closed, "close-ok came");
    assert_eq!(after_close, ["channel.open-ok", "qos-ok"], "answered in order; nothing delivered after close-ok");
    assert_eq!(consumer_count(&broker, &q), 0, "every consumer is gone");
    // What the closed consumers held is back, first, and the queue serves a new consumer.
    for i in 10..20 {
        lpub(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let got = consume_flagged(&ch, &q, 20).await;
    let expected: Vec<(String, bool)> = (0..20).map(|i| (format!("m{i}"), i < 10)).collect();
    assert_eq!(got, expected, "every message once, in order, the requeued ones redelivered");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_with_many_consumers_cancels_them_all_before_close_ok() {
    let Consumed { broker, conn, ch, q, mut raw } = consumed_many("many-consumers-conn").await;
    raw.send_method(0, ConnectionClose::default()).await;
    loop {
        match raw.next_method().await {
            Some((0, Method::ConnectionCloseOk(_))) => break,
            Some(_) => {}
            None => panic!("connection ended without close-ok"),
        }
    }
    assert_eq!(consumer_count(&broker, &q), 0, "every consumer cancelled by close-ok");
    lpub(&ch, "", &q, b"after").await;
    let mut consumer = lconsume(&ch, &q, true).await;
    assert_eq!(consumer.next().await.data, b"after");
    lclose(&conn).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_with_many_bindings_is_unroutable_and_unlisted_at_delete_ok() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let (x, q, other) = (uniq("many-bindings-x"), uniq("many-bindings-q"), uniq("many-bindings-other"));
    let declare = lepus_broker::vhost::ExchangeDeclare { name: short(&x), kind: "direct".into(), ..Default::default() };
    broker.service.vhost("/").expect("vhost").declare_exchange(&declare).expect("exchange");
    ldeclare(&ch, &q, Default::default(), Default::default()).await;
    ldeclare(&ch, &other, Default::default(), Default::default()).await;
    let bind = QueueBindOptions::default();
    guard("bind", ch.queue_bind(other.as_str().into(), x.as_str().into(), "k0".into(), bind, Default::default()))
        .await
        .expect("bind");
    let mut raw = Raw::open_with_channel(broker.addr).await;
    send_many(&mut raw, 1, MANY, |i| {
        QueueBind {
            queue: short(&q),
            exchange: short(&x),
            routing_key: short(&format!("k{i}")),
            no_wait: true,
            ..Default::default()
        }
        .into()
    })
    .await;
    lpub(&ch, &x, "k1", b"before").await;
    // The delete, then a queue of the same name declared again in the same write.
    let mut out = BytesMut::new();
    write_method(&mut out, 1, &QueueDelete { queue: short(&q), ..Default::default() }.into());
    write_method(&mut out, 1, &QueueDeclare { queue: short(&q), ..Default::default() }.into());
    raw.send(&out).await;
    let Some((1, Method::QueueDeleteOk(ok))) = raw.next_method().await else { panic!("expected delete-ok") };
    assert_eq!(ok.message_count, 1);
    let Some((1, Method::QueueDeclareOk(ok))) = raw.next_method().await else { panic!("expected declare-ok") };
    assert_eq!((ok.message_count, ok.consumer_count), (0, 0));
    let vhost = broker.service.vhost("/").expect("vhost");
    let to_q = vhost
        .binding_views()
        .iter()
        .filter(|b| {
            !b.source.is_empty() && matches!(&b.destination, Destination::Queue(n) if n.as_bytes() == q.as_bytes())
        })
        .count();
    assert_eq!(to_q, 0, "the new queue has none of the old one's bindings");
    assert!(!vhost.unbinding_pending());
    // Unroutable for the new queue; the other queue's binding on a shared key still routes.
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    for key in ["k1", &format!("k{}", MANY - 1)] {
        let confirm = guard("publish", ch.basic_publish(x.as_str().into(), key.into(), mandatory, b"x", lprops()))
            .await
            .expect("publish");
        let confirm = guard("confirm", confirm).await.expect("confirm");
        assert!(confirm.take_message().is_some(), "{key}: returned, unroutable");
    }
    lpub(&ch, &x, "k0", b"to-other").await;
    assert_eq!(lcount(&ch, &other).await, (1, 0));
    assert_eq!(lcount(&ch, &q).await, (0, 0));
    lclose(&conn).await;
    broker.stop().await;
}

/// Binds `queue` to exchange `x` under [`MANY`] keys `k0`… (no-wait, one write).
async fn bind_many(raw: &mut Raw, queue: &str, x: &str) {
    send_many(raw, 1, MANY, |i| {
        let routing_key = short(&format!("k{i}"));
        QueueBind { queue: short(queue), exchange: short(x), routing_key, no_wait: true, ..Default::default() }.into()
    })
    .await;
}

/// Waits (yielding) until the vhost has no deleted queue's bindings left to remove.
async fn unbound(broker: &common::Broker) {
    let vhost = broker.service.vhost("/").expect("vhost");
    guard("unbinding", async {
        while vhost.unbinding_pending() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// An auto-delete queue whose last consumer is cancelled and an exclusive queue whose
/// connection closes, each with [`MANY`] bindings: unbound a step at a time by the broker's
/// timer (no client waits), another client's publishes routed and kept in order meanwhile, and
/// every binding gone at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_deleted_and_exclusive_queues_with_many_bindings_are_unbound_in_steps() {
    let broker = common::start().await;
    let vhost = broker.service.vhost("/").expect("vhost");
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let (x, qa, qe, other) = (uniq("steps-x"), uniq("steps-auto"), uniq("steps-excl"), uniq("steps-other"));
    let declare = lepus_broker::vhost::ExchangeDeclare { name: short(&x), kind: "direct".into(), ..Default::default() };
    vhost.declare_exchange(&declare).expect("exchange");
    ldeclare(&ch, &other, Default::default(), Default::default()).await;
    guard(
        "bind",
        ch.queue_bind(other.as_str().into(), x.as_str().into(), "k0".into(), Default::default(), Default::default()),
    )
    .await
    .expect("bind");
    let mut raw = Raw::open_with_channel(broker.addr).await;
    let mut out = BytesMut::new();
    write_method(
        &mut out,
        1,
        &QueueDeclare { queue: short(&qa), auto_delete: true, no_wait: true, ..Default::default() }.into(),
    );
    write_method(
        &mut out,
        1,
        &QueueDeclare { queue: short(&qe), exclusive: true, no_wait: true, ..Default::default() }.into(),
    );
    raw.send(&out).await;
    bind_many(&mut raw, &qa, &x).await;
    bind_many(&mut raw, &qe, &x).await;
    let consume = BasicConsume { queue: short(&qa), consumer_tag: short("c"), ..Default::default() };
    raw.send_method(1, consume).await;
    let Some((1, Method::BasicConsumeOk(_))) = raw.next_method().await else { panic!("expected consume-ok") };
    let steps_before = vhost.unbind_steps();
    let mut sent = Vec::new();
    for (i, body) in ["before", "a"].iter().enumerate() {
        lpub(&ch, &x, "k0", body.as_bytes()).await;
        sent.push(body.as_bytes().to_vec());
        if i == 0 {
            raw.send_method(1, BasicCancel { consumer_tag: short("c"), ..Default::default() }).await;
            // "before" went to the auto-delete queue's consumer too (key k0).
            loop {
                match raw.next_method().await {
                    Some((1, Method::BasicCancelOk(_))) => break,
                    Some((1, Method::BasicDeliver(_))) => {}
                    other => panic!("expected cancel-ok, got {other:?}"),
                }
            }
        }
    }
    raw.send_method(0, ConnectionClose::default()).await;
    let Some((0, Method::ConnectionCloseOk(_))) = raw.next_method().await else { panic!("expected close-ok") };
    drop(raw);
    for body in ["b", "c"] {
        lpub(&ch, &x, "k0", body.as_bytes()).await;
        sent.push(body.as_bytes().to_vec());
    }
    // The exclusive queue goes after close-ok, as the connection ends.
    guard("exclusive queue deleted", async {
        while vhost.queue(&short(&qe), 0).is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    unbound(&broker).await;
    let steps = vhost.unbind_steps() - steps_before;
    let least = (2 * MANY).div_ceil(lepus_broker::vhost::UNBIND_STEP_MAX) as u64;
    assert!(steps >= least, "{} bindings take at least {least} steps, took {steps}", 2 * MANY);
    let to = |q: &str| {
        vhost
            .binding_views()
            .iter()
            .filter(|b| matches!(&b.destination, Destination::Queue(n) if n.as_bytes() == q.as_bytes()))
            .count()
    };
    assert_eq!((to(&qa), to(&qe), to(&other)), (0, 0, 2), "only the other queue's bindings are left");
    assert_eq!(ldrain(&ch, &other).await, sent, "every message to the other queue, in order");
    lclose(&conn).await;
    broker.stop().await;
}

/// More unacknowledged deliveries than three pieces of a requeue.
const MANY_UNACKED: usize = 3 * 4096 + 5;

/// A channel closing with [`MANY_UNACKED`] unacknowledged deliveries requeues them in pieces
/// before its close-ok: every message comes back once, at its original position ahead of the
/// ones never delivered, marked redelivered; what the client sent after the close is answered
/// after close-ok, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_with_many_unacked_requeues_them_in_order_before_close_ok() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("many-unacked");
    ldeclare(&ch, &q, Default::default(), Default::default()).await;
    let total = MANY_UNACKED + 10;
    publish_numbered(&ch, &q, total).await;
    let mut raw = Raw::open_with_channel(broker.addr).await;
    let prefetch_count = u16::try_from(MANY_UNACKED).expect("fits");
    raw.send_method(1, BasicQos { prefetch_count, ..Default::default() }).await;
    raw.send_method(1, BasicConsume { queue: short(&q), consumer_tag: short("c"), ..Default::default() }).await;
    let mut delivered = 0;
    while delivered < MANY_UNACKED {
        match raw.next_method().await {
            Some((1, Method::BasicDeliver(_))) => delivered += 1,
            Some((1, Method::BasicQosOk(_) | Method::BasicConsumeOk(_))) => {}
            other => panic!("expected deliveries, got {other:?}"),
        }
    }
    close_and_reopen(&mut raw).await;
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let (channel, method) = raw.next_method().await.expect("connection open");
        assert_eq!(channel, 1);
        answers.push(method.name());
    }
    assert_eq!(answers, ["channel.close-ok", "channel.open-ok", "basic.qos-ok"], "in order, nothing delivered");
    assert_eq!(lcount(&ch, &q).await, (total as u32, 0), "every message back, none twice");
    let got = consume_flagged(&ch, &q, total).await;
    let expected: Vec<(String, bool)> = (0..total).map(|i| (format!("m{i}"), i < MANY_UNACKED)).collect();
    assert!(got == expected, "every message once, in order, the requeued ones redelivered");
    lclose(&conn).await;
    broker.stop().await;
}

/// `m0`..`m{n-1}` into `queue` through a confirm channel, all confirmed.
async fn publish_numbered(ch: &lapin::Channel, queue: &str, n: usize) {
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("m{i}");
        let publish = ch.basic_publish("".into(), queue.into(), Default::default(), body.as_bytes(), lprops());
        confirms.push(guard("publish", publish).await.expect("publish"));
    }
    for confirm in confirms {
        guard("confirm", confirm).await.expect("confirm");
    }
}

fn flagged(d: &lapin::message::Delivery) -> (String, bool) {
    (String::from_utf8_lossy(&d.data).into_owned(), d.redelivered)
}

/// `basic.recover` with [`MANY_UNACKED`] and more unacknowledged deliveries requeues them in
/// pieces (the queue held meanwhile): recover-ok, then every message once more to the same
/// consumer, in order, each redelivered once; nothing lost, nothing left over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovering_many_unacked_redelivers_each_once_in_order() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("many-recovered");
    ldeclare(&ch, &q, Default::default(), Default::default()).await;
    let total = MANY_UNACKED + 10;
    publish_numbered(&ch, &q, total).await;
    let consuming = lchan(&conn).await;
    let mut consumer = lconsume(&consuming, &q, false).await;
    let first: Vec<(String, bool)> = consumer.take(total).await.iter().map(flagged).collect();
    assert!(first.iter().enumerate().all(|(i, (b, r))| *b == format!("m{i}") && !r), "first deliveries in order");
    guard("basic.recover", consuming.basic_recover(BasicRecoverOptions { requeue: true })).await.expect("recover-ok");
    let again = consumer.take(total).await;
    let expected: Vec<(String, bool)> = (0..total).map(|i| (format!("m{i}"), true)).collect();
    let got: Vec<(String, bool)> = again.iter().map(flagged).collect();
    assert!(got == expected, "every message once more, in order, redelivered");
    let last = again.last().expect("deliveries").delivery_tag;
    guard("ack", consuming.basic_ack(last, BasicAckOptions { multiple: true })).await.expect("ack");
    assert_eq!(lcount(&ch, &q).await, (0, 1), "nothing left over, nothing delivered a third time");
    assert!(consumer.pending().is_empty(), "no third delivery");
    lclose(&conn).await;
    broker.stop().await;
}

/// A `basic.get` from another channel while the queue is held by a requeue in pieces waits
/// for it and takes the first requeued message, not one from behind the requeue. The hold is
/// taken through the broker service (so the get certainly arrives during it), and the test
/// waits for the queue to count the get as waiting: a condition, not a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_during_a_held_requeue_waits_and_takes_the_first_requeued_message() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("held-get");
    ldeclare(&ch, &q, Default::default(), Default::default()).await;
    publish_numbered(&ch, &q, 10).await;
    let taking = lchan(&conn).await;
    for i in 0..6 {
        let got = lget(&taking, &q, false).await.expect("a message");
        assert_eq!(got.delivery.data, format!("m{i}").into_bytes());
    }
    let queue = broker.service.vhost("/").expect("vhost").queue(&short(&q), 0).expect("queue");
    let hold = RequeueHold::new(queue.clone());
    // m0..m5 go back (one piece), the queue held by the test; m6 is ready at its head.
    guard("channel.close", taking.close(200, "bye".into())).await.expect("close");
    let getter = lchan(&conn).await;
    let name = q.clone();
    let get = tokio::spawn(async move { lget(&getter, &name, true).await });
    guard("the get waiting for the hold", async {
        while queue.held_gets() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(hold);
    let got = guard("basic.get-ok", get).await.expect("get task").expect("a message");
    assert_eq!(flagged(&got.delivery), ("m0".to_string(), true), "the first requeued message, not m6");
    let rest: Vec<String> =
        ldrain(&ch, &q).await.into_iter().map(|b| String::from_utf8_lossy(&b).into_owned()).collect();
    let expected: Vec<String> = (1..10).map(|i| format!("m{i}")).collect();
    assert_eq!(rest, expected, "the rest in order, nothing lost or duplicated");
    lclose(&conn).await;
    broker.stop().await;
}
