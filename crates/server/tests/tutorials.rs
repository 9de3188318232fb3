//! RabbitMQ's six tutorials (https://www.rabbitmq.com/getstarted.html), each driven once with
//! lapin and once with amqprs against an in-process broker: hello world, work queues, publish/
//! subscribe, routing, topics and RPC (callback queue and direct reply-to).

#[path = "common/clients.rs"]
mod clients;
mod common;

use amqprs::channel::{
    BasicAckArguments, BasicGetArguments, BasicQosArguments, ExchangeDeclareArguments, QueueBindArguments,
    QueueDeclareArguments, QueueUnbindArguments,
};
use clients::*;
use lapin::options::{
    BasicAckOptions, BasicQosOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

async fn lbind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    guard(
        "queue.bind",
        ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default()),
    )
    .await
    .expect("queue.bind");
}

async fn lexchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    guard(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default()),
    )
    .await
    .expect("exchange.declare");
}

async fn lexchange_delete(ch: &Channel, name: &str) {
    guard("exchange.delete", ch.exchange_delete(name.into(), ExchangeDeleteOptions::default()))
        .await
        .expect("exchange.delete");
}

// ---------------------------------------------------------------------------------------------
// Tutorial 1: "Hello World!"
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_lapin() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let q = uniq("hello");
    let ok = ldeclare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(ok.name().as_str(), q);
    assert_eq!((ok.message_count(), ok.consumer_count()), (0, 0));

    // basic.get
    let props = BasicProperties::default().with_content_type("text/plain".into());
    lpub_props(&ch, "", &q, b"Hello World!", props).await;
    let got = lget(&ch, &q, true).await.expect("a message");
    assert_eq!(got.delivery.data, b"Hello World!");
    assert_eq!(got.delivery.exchange.as_str(), "");
    assert_eq!(got.delivery.routing_key.as_str(), q);
    assert!(!got.delivery.redelivered);
    assert_eq!(got.delivery.delivery_tag, 1);
    assert_eq!(got.message_count, 0);
    assert_eq!(got.delivery.properties.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
    assert_eq!(*got.delivery.properties.delivery_mode(), None);

    // basic.consume
    let mut consumer = lconsume(&ch, &q, true).await;
    assert!(consumer.tag.starts_with("amq.ctag-"), "{}", consumer.tag);
    for i in 0..3 {
        lpub(&ch, "", &q, format!("Hello {i}").as_bytes()).await;
    }
    let got = consumer.take(3).await;
    let bodies: Vec<_> = got.iter().map(|d| d.data.clone()).collect();
    assert_eq!(bodies, [b"Hello 0".to_vec(), b"Hello 1".to_vec(), b"Hello 2".to_vec()]);
    assert!(got.iter().all(|d| !d.redelivered && d.routing_key.as_str() == q && d.exchange.as_str() == ""));
    assert_eq!(got.iter().map(|d| d.delivery_tag).collect::<Vec<_>>(), [2, 3, 4]);
    let deleted = guard("queue.delete", ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete");
    assert_eq!(deleted, 0);
    consumer.cancelled().await;
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_amqprs() {
    let broker = common::start().await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let q = uniq("hello");
    let (name, messages, consumers) =
        ch.queue_declare(QueueDeclareArguments::new(&q)).await.expect("declare").expect("declare-ok");
    assert_eq!((name.as_str(), messages, consumers), (q.as_str(), 0, 0));

    let props = amqprs::BasicProperties::default().with_content_type("text/plain").finish();
    apub(&ch, "", &q, b"Hello World!", props).await;
    let (get_ok, props, body) =
        ch.basic_get(BasicGetArguments::new(&q).no_ack(true).finish()).await.expect("get").expect("a message");
    assert_eq!(body, b"Hello World!");
    assert_eq!(get_ok.delivery_tag(), 1);
    assert_eq!(get_ok.message_count(), 0);
    assert_eq!(get_ok.exchange(), "");
    assert_eq!(get_ok.routing_key(), &q);
    assert!(!get_ok.redelivered());
    assert_eq!(props.content_type().map(String::as_str), Some("text/plain"));

    let (tag, mut rx) = aconsume(&ch, &q, true).await;
    assert!(tag.starts_with("amq.ctag-"), "{tag}");
    apub(&ch, "", &q, b"consumed", amqprs::BasicProperties::default()).await;
    let (deliver, _props, body) = anext(&mut rx).await;
    assert_eq!(body, b"consumed");
    assert_eq!(deliver.consumer_tag(), &tag);
    assert_eq!(deliver.delivery_tag(), 2);
    assert!(!deliver.redelivered());
    ch.basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false)).await.expect("ack");
    let (_, messages, consumers) = ch
        .queue_declare(QueueDeclareArguments::new(&q).passive(true).finish())
        .await
        .expect("passive")
        .expect("declare-ok");
    assert_eq!((messages, consumers), (0, 1));
    conn.close().await.expect("close");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tutorial 2: Work queues
// ---------------------------------------------------------------------------------------------

struct LWorker {
    conn: lapin::Connection,
    ch: Channel,
    consumer: LConsumer,
}

async fn lworker(broker: &common::Broker, queue: &str) -> LWorker {
    let conn = lconn(broker).await;
    let ch = lchan(&conn).await;
    guard("basic.qos", ch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
    let consumer = lconsume(&ch, queue, false).await;
    LWorker { conn, ch, consumer }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_round_robin_prefetch_one_lapin() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("tasks");
    ldeclare(&ch, &q, QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await;
    let mut a = lworker(&broker, &q).await;
    let mut b = lworker(&broker, &q).await;
    assert_eq!(lcount(&ch, &q).await, (0, 2));

    let n = 8;
    for i in 0..n {
        let props = BasicProperties::default().with_delivery_mode(2);
        assert!(lpub_props(&ch, "", &q, format!("task-{i}").as_bytes(), props).await.is_ack());
    }
    // Prefetch 1: each worker holds exactly one task, the first registered consumer the first.
    let da = a.consumer.next().await;
    let db = b.consumer.next().await;
    assert_eq!(da.data, b"task-0");
    assert_eq!(db.data, b"task-1");
    assert_eq!(*da.properties.delivery_mode(), Some(2));
    assert_eq!(lcount(&ch, &q).await.0, n - 2);
    assert!(a.consumer.pending().is_empty() && b.consumer.pending().is_empty());

    // Workers finish alternately; each ack frees exactly that worker's slot.
    let (mut seen_a, mut seen_b) = (vec![da.data.clone()], vec![db.data.clone()]);
    let (mut pa, mut pb) = (Some(da), Some(db));
    while pa.is_some() || pb.is_some() {
        if let Some(d) = pa.take() {
            d.ack(BasicAckOptions::default()).await.expect("ack");
            if seen_a.len() + seen_b.len() < n as usize {
                let d = a.consumer.next().await;
                seen_a.push(d.data.clone());
                pa = Some(d);
            }
        }
        if let Some(d) = pb.take() {
            d.ack(BasicAckOptions::default()).await.expect("ack");
            if seen_a.len() + seen_b.len() < n as usize {
                let d = b.consumer.next().await;
                seen_b.push(d.data.clone());
                pb = Some(d);
            }
        }
    }
    let expect =
        |start: usize| (start..n as usize).step_by(2).map(|i| format!("task-{i}").into_bytes()).collect::<Vec<_>>();
    assert_eq!(seen_a, expect(0));
    assert_eq!(seen_b, expect(1));
    // A round trip on each worker channel makes sure the last acks are processed.
    guard("qos", a.ch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
    guard("qos", b.ch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
    assert_eq!(lcount(&ch, &q).await, (0, 2));
    guard("queue.delete", ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())).await.expect("delete");
    for c in [&a.conn, &b.conn, &conn] {
        c.close(200, "bye".into()).await.expect("close");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_unacked_task_redelivered_when_worker_dies_lapin() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let q = uniq("tasks");
    ldeclare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    let mut a = lworker(&broker, &q).await;
    lpub(&ch, "", &q, b"important task").await;
    let first = a.consumer.next().await;
    assert!(!first.redelivered);
    let mut b = lworker(&broker, &q).await;
    assert_eq!(lcount(&ch, &q).await, (0, 2));

    // A dies without acking: the task goes back to the queue and on to B, flagged redelivered.
    a.conn.close(200, "worker dies".into()).await.expect("close");
    let again = b.consumer.next().await;
    assert_eq!(again.data, b"important task");
    assert!(again.redelivered);
    again.ack(BasicAckOptions::default()).await.expect("ack");
    guard("qos", b.ch.basic_qos(1, BasicQosOptions::default())).await.expect("round trip");
    assert_eq!(lcount(&ch, &q).await, (0, 1));
    b.conn.close(200, "bye".into()).await.expect("close");
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queues_amqprs() {
    let broker = common::start().await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let q = uniq("tasks");
    ch.queue_declare(QueueDeclareArguments::durable_client_named(&q)).await.expect("declare");

    let mut workers = Vec::new();
    for _ in 0..2 {
        let wc = aconn(&broker).await;
        let wch = achan(&wc).await;
        wch.basic_qos(BasicQosArguments::new(0, 1, false)).await.expect("qos");
        let (_tag, rx) = aconsume(&wch, &q, true).await;
        workers.push((wc, wch, rx));
    }
    let persistent = amqprs::BasicProperties::default().with_persistence(true).finish();
    for i in 0..6 {
        apub(&ch, "", &q, format!("task-{i}").as_bytes(), persistent.clone()).await;
    }
    let mut seen: [Vec<Vec<u8>>; 2] = [vec![], vec![]];
    let mut pending: [Option<u64>; 2] = [None, None];
    for (w, (_, _, rx)) in workers.iter_mut().enumerate() {
        let (d, props, body) = anext(rx).await;
        assert_eq!(props.delivery_mode(), Some(2));
        seen[w].push(body);
        pending[w] = Some(d.delivery_tag());
    }
    assert_eq!(seen, [vec![b"task-0".to_vec()], vec![b"task-1".to_vec()]]);
    while pending.iter().any(Option::is_some) {
        for w in 0..2 {
            if let Some(tag) = pending[w].take() {
                workers[w].1.basic_ack(BasicAckArguments::new(tag, false)).await.expect("ack");
                if seen[0].len() + seen[1].len() < 6 {
                    let (d, _, body) = anext(&mut workers[w].2).await;
                    seen[w].push(body);
                    pending[w] = Some(d.delivery_tag());
                }
            }
        }
    }
    assert_eq!(seen[0], [b"task-0".to_vec(), b"task-2".to_vec(), b"task-4".to_vec()]);
    assert_eq!(seen[1], [b"task-1".to_vec(), b"task-3".to_vec(), b"task-5".to_vec()]);

    // Redelivery: each worker takes one task; worker 0 dies without acking, and its task goes
    // back to the queue and on to worker 1, flagged redelivered.
    for body in [b"unfinished-a", b"unfinished-b"] {
        apub(&ch, "", &q, body, amqprs::BasicProperties::default()).await;
    }
    let (w0, w1) = {
        let mut it = workers.into_iter();
        (it.next().expect("w0"), it.next().expect("w1"))
    };
    let (w0_conn, _w0_ch, mut w0_rx) = w0;
    let (w1_conn, w1_ch, mut w1_rx) = w1;
    let (d0, _, lost) = anext(&mut w0_rx).await;
    assert!(!d0.redelivered());
    let (d1, _, done) = anext(&mut w1_rx).await;
    assert!(!d1.redelivered());
    let mut both = [lost.clone(), done];
    both.sort();
    assert_eq!(both, [b"unfinished-a".to_vec(), b"unfinished-b".to_vec()]);
    w1_ch.basic_ack(BasicAckArguments::new(d1.delivery_tag(), false)).await.expect("ack");
    w0_conn.close().await.expect("worker 0 closes");
    let (d, _, body) = anext(&mut w1_rx).await;
    assert_eq!(body, lost);
    assert!(d.redelivered());
    w1_ch.basic_ack(BasicAckArguments::new(d.delivery_tag(), false)).await.expect("ack");
    w1_conn.close().await.expect("close");
    conn.close().await.expect("close");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tutorial 3: Publish/Subscribe
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_fanout_lapin() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let ex = uniq("logs");
    lexchange(&ch, &ex, ExchangeKind::Fanout).await;
    let mut queues = Vec::new();
    for i in 0..2 {
        let q = lexcl(&ch).await;
        assert!(q.starts_with("amq.gen-") && q.len() == "amq.gen-".len() + 22, "{q}");
        lbind(&ch, &q, &ex, &format!("ignored-{i}")).await;
        queues.push(q);
    }
    assert_ne!(queues[0], queues[1]);
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| format!("log line {i}").into_bytes()).collect();
    for (i, m) in msgs.iter().enumerate() {
        assert!(lpub(&ch, &ex, &format!("any.key.{i}"), m).await.is_ack());
    }
    for q in &queues {
        assert_eq!(lcount(&ch, q).await, (5, 0));
        assert_eq!(ldrain(&ch, q).await, msgs);
    }
    // Consumers on both queues each receive the next message.
    let mut consumers = Vec::new();
    for q in &queues {
        consumers.push(lconsume(&ch, q, true).await);
    }
    lpub(&ch, &ex, "k", b"to everyone").await;
    for c in &mut consumers {
        let d = c.next().await;
        assert_eq!(
            (d.data.as_slice(), d.routing_key.as_str(), d.exchange.as_str()),
            (&b"to everyone"[..], "k", ex.as_str())
        );
    }
    lexchange_delete(&ch, &ex).await;
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_fanout_amqprs() {
    let broker = common::start().await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let ex = uniq("logs");
    ch.exchange_declare(ExchangeDeclareArguments::new(&ex, "fanout")).await.expect("exchange.declare");
    let mut subs = Vec::new();
    for i in 0..2 {
        let q = aexcl(&ch).await;
        assert!(q.starts_with("amq.gen-"), "{q}");
        ch.queue_bind(QueueBindArguments::new(&q, &ex, &format!("k{i}"))).await.expect("bind");
        let (_tag, rx) = aconsume(&ch, &q, false).await;
        subs.push(rx);
    }
    for i in 0..3 {
        apub(&ch, &ex, "whatever", format!("log {i}").as_bytes(), amqprs::BasicProperties::default()).await;
    }
    for rx in &mut subs {
        for i in 0..3 {
            let (d, _, body) = anext(rx).await;
            assert_eq!(body, format!("log {i}").into_bytes());
            assert_eq!(d.exchange(), &ex);
            assert_eq!(d.routing_key(), "whatever");
        }
    }
    conn.close().await.expect("close");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tutorial 4: Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_direct_lapin() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let ex = uniq("direct_logs");
    lexchange(&ch, &ex, ExchangeKind::Direct).await;
    let q_err = lexcl(&ch).await;
    let q_all = lexcl(&ch).await;
    lbind(&ch, &q_err, &ex, "error").await;
    for sev in ["info", "warning", "error", "info"] {
        lbind(&ch, &q_all, &ex, sev).await; // the second "info" binding is idempotent
    }
    for sev in ["info", "warning", "error", "debug", "ERROR", "error.x", ""] {
        lpub(&ch, &ex, sev, format!("{sev}-msg").as_bytes()).await;
    }
    assert_eq!(ldrain(&ch, &q_err).await, [b"error-msg".to_vec()]);
    assert_eq!(ldrain(&ch, &q_all).await, [b"info-msg".to_vec(), b"warning-msg".to_vec(), b"error-msg".to_vec()]);

    guard(
        "queue.unbind",
        ch.queue_unbind(q_all.as_str().into(), ex.as_str().into(), "info".into(), FieldTable::default()),
    )
    .await
    .expect("unbind");
    lpub(&ch, &ex, "info", b"info-2").await;
    lpub(&ch, &ex, "warning", b"warning-2").await;
    assert_eq!(ldrain(&ch, &q_all).await, [b"warning-2".to_vec()]);
    assert!(ldrain(&ch, &q_err).await.is_empty());
    lexchange_delete(&ch, &ex).await;
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_direct_amqprs() {
    let broker = common::start().await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let ex = uniq("direct_logs");
    ch.exchange_declare(ExchangeDeclareArguments::new(&ex, "direct")).await.expect("exchange.declare");
    let q_err = aexcl(&ch).await;
    let q_all = aexcl(&ch).await;
    ch.queue_bind(QueueBindArguments::new(&q_err, &ex, "error")).await.expect("bind");
    for sev in ["info", "warning", "error"] {
        ch.queue_bind(QueueBindArguments::new(&q_all, &ex, sev)).await.expect("bind");
    }
    for sev in ["info", "warning", "error", "debug"] {
        apub(&ch, &ex, sev, format!("{sev}-msg").as_bytes(), amqprs::BasicProperties::default()).await;
    }
    assert_eq!(adrain(&ch, &q_err).await, [b"error-msg".to_vec()]);
    assert_eq!(adrain(&ch, &q_all).await, [b"info-msg".to_vec(), b"warning-msg".to_vec(), b"error-msg".to_vec()]);
    ch.queue_unbind(QueueUnbindArguments::new(&q_all, &ex, "info")).await.expect("unbind");
    apub(&ch, &ex, "info", b"info-2", amqprs::BasicProperties::default()).await;
    apub(&ch, &ex, "error", b"error-2", amqprs::BasicProperties::default()).await;
    assert_eq!(adrain(&ch, &q_all).await, [b"error-2".to_vec()]);
    assert_eq!(adrain(&ch, &q_err).await, [b"error-2".to_vec()]);
    conn.close().await.expect("close");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tutorial 5: Topics
// ---------------------------------------------------------------------------------------------

const TOPIC_BINDINGS: &[(&str, &[&str])] = &[
    ("Q1", &["*.orange.*"]),
    ("Q2", &["*.*.rabbit", "lazy.#"]),
    ("Q3", &["audit.#"]),
    ("Q4", &["#.kern.#.critical"]),
    ("Q5", &["#"]),
    ("Q6", &["*"]),
];

/// (routing key, queues that receive it); Q5 (`#`) receives everything.
const TOPIC_CASES: &[(&str, &[&str])] = &[
    ("quick.orange.rabbit", &["Q1", "Q2"]),
    ("lazy.orange.elephant", &["Q1", "Q2"]),
    ("quick.orange.fox", &["Q1"]),
    ("lazy.brown.fox", &["Q2"]),
    ("lazy.pink.rabbit", &["Q2"]), // matches both Q2 bindings, delivered once
    ("quick.brown.fox", &[]),
    ("orange", &["Q6"]),
    ("quick.orange.male.rabbit", &[]),
    ("lazy.orange.male.rabbit", &["Q2"]),
    ("lazy", &["Q2", "Q6"]), // '#' matches zero words
    ("lazy.", &["Q2"]),
    (".orange.", &["Q1"]), // empty words are words
    ("orange.rabbit", &[]),
    ("a.b.rabbit", &["Q2"]),
    ("a.b.c.rabbit", &[]),
    ("alazy.x", &[]),
    ("", &[]), // zero words: '#' matches, '*' does not
    ("audit.anything.at.all", &["Q3"]),
    ("audit", &["Q3", "Q6"]),
    ("x.audit.y", &[]),
    ("kern.critical", &["Q4"]),
    ("a.kern.b.critical", &["Q4"]),
    ("kern.critical.x", &[]),
];

fn topic_expected(label: &str) -> Vec<Vec<u8>> {
    TOPIC_CASES
        .iter()
        .filter(|(_, dest)| label == "Q5" || dest.contains(&label))
        .map(|(k, _)| format!("<{k}>").into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_lapin() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let ex = uniq("topic_logs");
    lexchange(&ch, &ex, ExchangeKind::Topic).await;
    let mut queues = Vec::new();
    for (label, keys) in TOPIC_BINDINGS {
        let q = lexcl(&ch).await;
        for key in *keys {
            lbind(&ch, &q, &ex, key).await;
        }
        queues.push((*label, q));
    }
    for (key, _) in TOPIC_CASES {
        lpub(&ch, &ex, key, format!("<{key}>").as_bytes()).await;
    }
    for (label, q) in &queues {
        assert_eq!(ldrain(&ch, q).await, topic_expected(label), "{label}");
    }
    lexchange_delete(&ch, &ex).await;
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_amqprs() {
    let broker = common::start().await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let ex = uniq("topic_logs");
    ch.exchange_declare(ExchangeDeclareArguments::new(&ex, "topic")).await.expect("exchange.declare");
    let mut queues = Vec::new();
    for (label, keys) in TOPIC_BINDINGS {
        let q = aexcl(&ch).await;
        for key in *keys {
            ch.queue_bind(QueueBindArguments::new(&q, &ex, key)).await.expect("bind");
        }
        queues.push((*label, q));
    }
    for (key, _) in TOPIC_CASES {
        apub(&ch, &ex, key, format!("<{key}>").as_bytes(), amqprs::BasicProperties::default()).await;
    }
    for (label, q) in &queues {
        assert_eq!(adrain(&ch, q).await, topic_expected(label), "{label}");
    }
    conn.close().await.expect("close");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tutorial 6: RPC
// ---------------------------------------------------------------------------------------------

/// An RPC server on its own connection: consumes `queue` with prefetch 1, answers fib(n) to
/// reply_to with the request's correlation_id, acks; reports each request's
/// (reply_to, correlation_id).
async fn lrpc_server(
    broker: &common::Broker,
    queue: &str,
) -> (lapin::Connection, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let conn = lconn(broker).await;
    let ch = lchan(&conn).await;
    ldeclare(&ch, queue, QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
    guard("qos", ch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
    let mut consumer = lconsume(&ch, queue, false).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let d = consumer.next().await;
            let reply_to = d.properties.reply_to().clone().expect("reply_to").as_str().to_owned();
            let corr = d.properties.correlation_id().clone().expect("correlation_id");
            let n: u64 = std::str::from_utf8(&d.data).expect("utf-8").parse().expect("a number");
            let props = BasicProperties::default().with_correlation_id(corr.clone());
            lpub_props(&ch, "", &reply_to, fib(n).to_string().as_bytes(), props).await;
            d.ack(BasicAckOptions::default()).await.expect("ack");
            if tx.send((reply_to, corr.as_str().to_owned())).is_err() {
                return;
            }
        }
    });
    (conn, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_with_callback_queue_lapin() {
    let broker = common::start().await;
    let rpc_queue = uniq("rpc_queue");
    let (server_conn, mut requests) = lrpc_server(&broker, &rpc_queue).await;

    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let callback = lexcl(&ch).await;
    assert!(callback.starts_with("amq.gen-"));
    let mut responses = lconsume(&ch, &callback, true).await;
    let mut expected = Vec::new();
    for n in [0u64, 1, 10, 30] {
        let corr = uniq("corr");
        let props = BasicProperties::default()
            .with_reply_to(callback.as_str().into())
            .with_correlation_id(corr.as_str().into());
        lpub_props(&ch, "", &rpc_queue, n.to_string().as_bytes(), props).await;
        expected.push((corr, fib(n).to_string().into_bytes()));
    }
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        let d = responses.next().await;
        let corr = d.properties.correlation_id().clone().expect("correlation_id").as_str().to_owned();
        got.push((corr, d.data));
    }
    assert_eq!(got, expected);
    for (corr, _) in &expected {
        let (reply_to, seen_corr) = guard("request", requests.recv()).await.expect("request");
        assert_eq!((&reply_to, &seen_corr), (&callback, corr));
    }
    server_conn.close(200, "bye".into()).await.expect("close");
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_with_direct_reply_to_lapin() {
    let broker = common::start().await;
    let rpc_queue = uniq("rpc_queue");
    let (server_conn, mut requests) = lrpc_server(&broker, &rpc_queue).await;

    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    // Consume the pseudo-queue in no-ack mode before publishing.
    let mut responses = lconsume(&ch, "amq.rabbitmq.reply-to", true).await;
    let mut reply_name = None;
    for (n, want) in [(20u64, "6765"), (7, "13")] {
        let corr = uniq("corr");
        let props = BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(corr.as_str().into());
        lpub_props(&ch, "", &rpc_queue, n.to_string().as_bytes(), props).await;
        let (reply_to, seen_corr) = guard("request", requests.recv()).await.expect("request");
        assert_eq!(seen_corr, corr);
        // The broker rewrites reply_to into a routable per-channel name, stable on the channel.
        assert!(reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > "amq.rabbitmq.reply-to.".len());
        assert_eq!(reply_name.get_or_insert_with(|| reply_to.clone()), &reply_to);
        let d = responses.next().await;
        assert_eq!(d.data, want.as_bytes());
        assert_eq!(d.properties.correlation_id().as_ref().map(|s| s.as_str()), Some(corr.as_str()));
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), reply_to);
    }
    server_conn.close(200, "bye".into()).await.expect("close");
    conn.close(200, "bye".into()).await.expect("close");
    broker.stop().await;
}

/// The amqprs RPC server: same protocol as `lrpc_server`.
async fn arpc_server(broker: &common::Broker, queue: &str) -> amqprs::connection::Connection {
    let conn = aconn(broker).await;
    let ch = achan(&conn).await;
    ch.queue_declare(QueueDeclareArguments::new(queue).exclusive(true).finish()).await.expect("declare");
    ch.basic_qos(BasicQosArguments::new(0, 1, false)).await.expect("qos");
    let (_tag, mut rx) = aconsume(&ch, queue, true).await;
    tokio::spawn(async move {
        while let Some(mut m) = rx.recv().await {
            let deliver = m.deliver.take().expect("deliver");
            let props = m.basic_properties.take().expect("props");
            let body = m.content.take().expect("body");
            let n: u64 = String::from_utf8(body).expect("utf-8").parse().expect("number");
            let reply_to = props.reply_to().expect("reply_to").clone();
            let corr = props.correlation_id().expect("correlation_id").clone();
            let out = amqprs::BasicProperties::default().with_correlation_id(&corr).finish();
            apub(&ch, "", &reply_to, fib(n).to_string().as_bytes(), out).await;
            if ch.basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false)).await.is_err() {
                return;
            }
        }
    });
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_with_callback_queue_amqprs() {
    let broker = common::start().await;
    let rpc_queue = uniq("rpc_queue");
    let server_conn = arpc_server(&broker, &rpc_queue).await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let callback = aexcl(&ch).await;
    let (_tag, mut rx) = aconsume(&ch, &callback, false).await;
    for n in [3u64, 25] {
        let corr = uniq("corr");
        let props = amqprs::BasicProperties::default().with_reply_to(&callback).with_correlation_id(&corr).finish();
        apub(&ch, "", &rpc_queue, n.to_string().as_bytes(), props).await;
        let (d, props, body) = anext(&mut rx).await;
        assert_eq!(body, fib(n).to_string().into_bytes());
        assert_eq!(props.correlation_id(), Some(&corr));
        assert_eq!(d.routing_key(), &callback);
    }
    server_conn.close().await.expect("close");
    conn.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_with_direct_reply_to_amqprs() {
    let broker = common::start().await;
    let rpc_queue = uniq("rpc_queue");
    let server_conn = arpc_server(&broker, &rpc_queue).await;
    let conn = aconn(&broker).await;
    let ch = achan(&conn).await;
    let (tag, mut rx) = aconsume(&ch, "amq.rabbitmq.reply-to", false).await;
    for n in [12u64, 40] {
        let corr = uniq("corr");
        let props = amqprs::BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to")
            .with_correlation_id(&corr)
            .finish();
        apub(&ch, "", &rpc_queue, n.to_string().as_bytes(), props).await;
        let (d, props, body) = anext(&mut rx).await;
        assert_eq!(body, fib(n).to_string().into_bytes());
        assert_eq!(props.correlation_id(), Some(&corr));
        assert_eq!(d.consumer_tag(), &tag);
        assert!(d.routing_key().starts_with("amq.rabbitmq.reply-to."), "{}", d.routing_key());
    }
    server_conn.close().await.expect("close");
    conn.close().await.expect("close");
    broker.stop().await;
}
