//! Prometheus metrics over HTTP (hyper) after real AMQP traffic (lapin): the values served
//! on `/metrics`, `/metrics/per-object` and `/metrics/detailed`, and every series RabbitMQ's
//! Grafana dashboard "RabbitMQ-Overview" queries.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::net::SocketAddr;

use clients::{guard, lchan, lconn, uniq};
use common::{start_with_metrics, test_config};
use futures_lite::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;

/// The series the dashboard queries, one a line (`#` comments).
const DASHBOARD_SERIES: &str = include_str!("data/rabbitmq-overview-dashboard-series.txt");

/// GETs `path`; the status, content type and body.
async fn scrape(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().expect("uri");
    let resp = guard(path, client.get(uri)).await.expect("http");
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map_or("", |v| v.to_str().expect("ascii")).to_owned();
    let body = guard("body", resp.into_body().collect()).await.expect("body").to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

/// The value of the sample named exactly `series` (name and labels as served).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `path` until `series` has `value` (the broker counts as it processes what the
/// client sent); then returns that scrape.
async fn scrape_until(addr: SocketAddr, path: &str, series: &str, value: f64) -> String {
    guard(series, async {
        loop {
            let (_, _, text) = scrape(addr, path).await;
            if sample(&text, series) == Some(value) {
                return text;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

fn assert_samples(text: &str, expected: &[(&str, f64)]) {
    for (series, value) in expected {
        assert_eq!(sample(text, series), Some(*value), "{series} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_amqp_traffic_shows_it() {
    let b = start_with_metrics(test_config()).await;
    let metrics = b.prometheus.expect("metrics address");
    let conn = lconn(&b).await;
    let ch = lchan(&conn).await;
    let q = uniq("q");
    guard("confirm", ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
    guard("declare", ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    for _ in 0..4 {
        let confirm = guard(
            "publish",
            ch.basic_publish("".into(), q.as_str().into(), BasicPublishOptions::default(), b"four", Default::default()),
        )
        .await
        .expect("publish");
        guard("confirm", confirm).await.expect("confirmed");
    }
    let got = guard("get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })).await.expect("get");
    assert!(got.is_some());
    guard("qos", ch.basic_qos(1, Default::default())).await.expect("qos");
    let mut consumer = guard(
        "consume",
        ch.basic_consume(q.as_str().into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await
    .expect("consume");
    let delivery = guard("deliver", consumer.next()).await.expect("a delivery").expect("delivered");

    let text = scrape_until(metrics, "/metrics", "rabbitmq_queue_messages_unacked", 1.0).await;
    assert_samples(
        &text,
        &[
            ("rabbitmq_queue_messages_ready", 2.0),
            ("rabbitmq_queue_messages", 3.0),
            ("rabbitmq_queues", 1.0),
            ("rabbitmq_connections", 1.0),
            ("rabbitmq_channels", 1.0),
            ("rabbitmq_consumers", 1.0),
            ("rabbitmq_connections_opened_total", 1.0),
            ("rabbitmq_channels_opened_total", 1.0),
            ("rabbitmq_queues_declared_total", 1.0),
            ("rabbitmq_queues_created_total", 1.0),
            ("rabbitmq_global_messages_received_total{protocol=\"amqp091\"}", 4.0),
            ("rabbitmq_global_messages_received_confirm_total{protocol=\"amqp091\"}", 4.0),
            ("rabbitmq_global_messages_routed_total{protocol=\"amqp091\"}", 4.0),
            ("rabbitmq_global_messages_confirmed_total{protocol=\"amqp091\"}", 4.0),
            ("rabbitmq_global_publishers{protocol=\"amqp091\"}", 1.0),
            ("rabbitmq_global_consumers{protocol=\"amqp091\"}", 1.0),
            ("rabbitmq_channel_messages_unacked", 1.0),
            ("rabbitmq_channel_messages_unconfirmed", 0.0),
            ("rabbitmq_consumer_prefetch", 1.0),
            ("rabbitmq_channel_prefetch", 0.0),
        ],
    );
    // RabbitMQ's Prometheus library writes integer bounds and an integer sum, labels first.
    let histogram: Vec<&str> = text.lines().filter(|l| l.contains("rabbitmq_message_size_bytes")).collect();
    assert_eq!(
        histogram,
        [
            "# HELP rabbitmq_message_size_bytes Size of messages received from publishers",
            "# TYPE rabbitmq_message_size_bytes histogram",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"100\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"1000\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"10000\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"100000\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"1000000\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"10000000\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"50000000\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"100000000\"} 4",
            "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"+Inf\"} 4",
            "rabbitmq_message_size_bytes_count{protocol=\"amqp091\"} 4",
            "rabbitmq_message_size_bytes_sum{protocol=\"amqp091\"} 16",
        ]
    );
    assert!(text.ends_with("# EOF\n"), "the histogram goes before the end marker");
    let classic = "{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}";
    let by_type = |name: &str| format!("rabbitmq_global_messages_{name}_total{classic}");
    assert_eq!(sample(&text, &by_type("delivered_get_auto_ack")), Some(1.0));
    assert_eq!(sample(&text, &by_type("delivered_consume_manual_ack")), Some(1.0));
    assert_eq!(sample(&text, &by_type("delivered_consume_auto_ack")), Some(0.0));
    assert_eq!(sample(&text, &by_type("delivered")), Some(2.0));

    let labels = format!("{{vhost=\"/\",queue=\"{q}\"}}");
    let (status, content_type, per_object) = scrape(metrics, "/metrics/per-object").await;
    assert_eq!((status, content_type.starts_with("application/openmetrics-text")), (200, true));
    assert_eq!(sample(&per_object, &format!("rabbitmq_queue_messages_ready{labels}")), Some(2.0), "{per_object}");
    assert_eq!(sample(&per_object, &format!("rabbitmq_queue_consumers{labels}")), Some(1.0));
    let detailed = scrape(metrics, "/metrics/detailed?family=queue_coarse_metrics&vhost=%2F").await.2;
    assert_eq!(sample(&detailed, &format!("rabbitmq_detailed_queue_messages_unacked{labels}")), Some(1.0));
    assert_eq!(sample(&detailed, &format!("rabbitmq_detailed_queue_consumers{labels}")), None, "not asked for");
    let elsewhere = scrape(metrics, "/metrics/detailed?family=queue_coarse_metrics&vhost=other").await.2;
    assert_eq!(sample(&elsewhere, &format!("rabbitmq_detailed_queue_messages{labels}")), None);

    guard("ack", delivery.ack(BasicAckOptions::default())).await.expect("ack");
    let acked = format!("rabbitmq_global_messages_acknowledged_total{classic}");
    scrape_until(metrics, "/metrics", &acked, 1.0).await;
    guard("delete", ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())).await.expect("delete");
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    let text = scrape_until(metrics, "/metrics", "rabbitmq_connections_closed_total", 1.0).await;
    assert_samples(
        &text,
        &[
            ("rabbitmq_connections", 0.0),
            ("rabbitmq_channels", 0.0),
            ("rabbitmq_channels_closed_total", 1.0),
            ("rabbitmq_queues", 0.0),
            ("rabbitmq_queues_deleted_total", 1.0),
            ("rabbitmq_global_messages_received_total{protocol=\"amqp091\"}", 4.0),
        ],
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_from_a_quorum_queue_count_under_its_queue_type() {
    let b = start_with_metrics(test_config()).await;
    let metrics = b.prometheus.expect("metrics address");
    let conn = lconn(&b).await;
    let ch = lchan(&conn).await;
    let (quorum, classic) = (uniq("quorum"), uniq("classic"));
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    guard("declare", ch.queue_declare(quorum.as_str().into(), durable, args)).await.expect("declare quorum");
    guard("declare", ch.queue_declare(classic.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare classic");
    for q in [&quorum, &quorum, &quorum, &classic] {
        let publish =
            ch.basic_publish("".into(), q.as_str().into(), BasicPublishOptions::default(), b"m", Default::default());
        guard("publish", publish).await.expect("publish");
    }
    for q in [&quorum, &quorum, &classic] {
        let got = guard("get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })).await.expect("get");
        guard("ack", got.expect("a message").delivery.ack(BasicAckOptions::default())).await.expect("ack");
    }
    let got = guard("get", ch.basic_get(quorum.as_str().into(), BasicGetOptions { no_ack: true })).await.expect("get");
    assert!(got.is_some());
    let empty = guard("get", ch.basic_get(quorum.as_str().into(), BasicGetOptions::default())).await.expect("get");
    assert!(empty.is_none());

    let series = |name: &str, queue_type: &str| {
        format!("rabbitmq_global_messages_{name}_total{{protocol=\"amqp091\",queue_type=\"{queue_type}\"}}")
    };
    let text = scrape_until(metrics, "/metrics", &series("get_empty", "rabbit_quorum_queue"), 1.0).await;
    let expected = [
        ("delivered", [1.0, 3.0, 0.0]),
        ("delivered_get_manual_ack", [1.0, 2.0, 0.0]),
        ("delivered_get_auto_ack", [0.0, 1.0, 0.0]),
        ("acknowledged", [1.0, 2.0, 0.0]),
        ("get_empty", [0.0, 1.0, 0.0]),
    ];
    for (name, values) in expected {
        for (queue_type, value) in
            ["rabbit_classic_queue", "rabbit_quorum_queue", "rabbit_stream_queue"].iter().zip(values)
        {
            assert_eq!(sample(&text, &series(name, queue_type)), Some(value), "{name} {queue_type} in\n{text}");
        }
    }
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    let closed = scrape_until(metrics, "/metrics", "rabbitmq_connections_closed_total", 1.0).await;
    assert_eq!(
        sample(&closed, &series("delivered", "rabbit_quorum_queue")),
        Some(3.0),
        "kept once the connection is gone"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_overview_dashboard_queries_is_served() {
    let b = start_with_metrics(test_config()).await;
    let (status, _, text) = scrape(b.prometheus.expect("metrics address"), "/metrics").await;
    assert_eq!(status, 200);
    let served: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let wanted: Vec<&str> = DASHBOARD_SERIES.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(wanted.len() > 40, "the list is read");
    let missing: Vec<&&str> = wanted.iter().filter(|s| !served.contains(**s)).collect();
    assert!(missing.is_empty(), "not served: {missing:?}");
    let identity = text.lines().find(|l| l.starts_with("rabbitmq_identity_info{")).expect("identity");
    for label in
        ["rabbitmq_node=", "rabbitmq_cluster=", "rabbitmq_cluster_permanent_id=", "rabbitmq_endpoint=\"metrics\""]
    {
        assert!(identity.contains(label), "{label} in {identity}");
    }
    b.stop().await;
}
