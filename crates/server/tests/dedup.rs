//! Message deduplication through a real client (lapin), as the rabbitmq-message-deduplication
//! plugin behaves: a deduplication exchange acks a duplicate and routes it nowhere (a
//! `mandatory` one comes back with 312 NO_ROUTE), a deduplication queue nacks one, a bad
//! `x-cache-size` is refused with the plugin's text, a durable deduplication queue still
//! knows the keys of its messages after a restart, and so does a durable exchange's `disk`
//! cache (a `memory` one starts empty, as the plugin's). Cache expiry and eviction are tested on a
//! manual clock in `crates/broker/tests/dedup.rs`.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::path::PathBuf;

use clients::*;
use common::*;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use lepus_server::Config;

fn dedup_kind() -> ExchangeKind {
    ExchangeKind::Custom("x-message-deduplication".into())
}

fn keyed(key: &str) -> BasicProperties {
    BasicProperties::default().with_headers(ltable(vec![("x-deduplication-header", lstr(key))]))
}

fn dedup_queue_args() -> FieldTable {
    ltable(vec![("x-message-deduplication", AMQPValue::Boolean(true))])
}

async fn bind(ch: &Channel, queue: &str, exchange: &str) {
    let bound = ch.queue_bind(
        queue.into(),
        exchange.into(),
        "ignored".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    guard("queue.bind", bound).await.expect("queue.bind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deduplication_exchange_acks_a_duplicate_and_routes_it_nowhere() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let exchange = uniq("dedup");
    let args = ltable(vec![("x-cache-size", AMQPValue::LongInt(100))]);
    let options = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    guard("exchange.declare", ch.exchange_declare(exchange.as_str().into(), dedup_kind(), options, args))
        .await
        .expect("exchange.declare");
    let queue = lexcl(&ch).await;
    bind(&ch, &queue, &exchange).await;

    assert!(lpub_props(&ch, &exchange, "any", b"first", keyed("a")).await.is_ack());
    assert!(lpub_props(&ch, &exchange, "other", b"duplicate", keyed("a")).await.is_ack());
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    match lpub_opts(&ch, &exchange, "k", b"returned", keyed("a"), mandatory).await {
        Confirmation::Ack(Some(returned)) => {
            assert_eq!((returned.reply_code, returned.reply_text.as_str()), (312, "NO_ROUTE"));
            assert_eq!(returned.data, b"returned");
        }
        other => panic!("a mandatory duplicate is returned before its ack: {other:?}"),
    }
    assert!(lpub_props(&ch, &exchange, "k", b"second", keyed("b")).await.is_ack());
    assert_eq!(ldrain(&ch, &queue).await, vec![b"first".to_vec(), b"second".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deduplication_exchange_without_a_cache_size_is_refused() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let args = ltable(vec![("x-cache-size", AMQPValue::LongInt(0))]);
    let declare =
        ch.exchange_declare(uniq("dedup").as_str().into(), dedup_kind(), ExchangeDeclareOptions::default(), args);
    let text = "PRECONDITION_FAILED - Missing or invalid argument, 'x-cache-size' must be an integer greater than 0";
    lexpect_channel_closed(&conn, &ch, declare, 406, text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deduplication_queue_nacks_a_duplicate_until_the_first_is_acked() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let queue = uniq("dq");
    let options = QueueDeclareOptions { exclusive: true, ..Default::default() };
    ldeclare(&ch, &queue, options, dedup_queue_args()).await;
    assert!(lpub_props(&ch, "", &queue, b"first", keyed("a")).await.is_ack());
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    match lpub_opts(&ch, "", &queue, b"duplicate", keyed("a"), mandatory).await {
        Confirmation::Nack(None) => {}
        other => panic!("a duplicate is nacked (routed, so not returned): {other:?}"),
    }
    assert!(lpub(&ch, "", &queue, b"no header").await.is_ack());
    assert_eq!(ldrain(&ch, &queue).await, vec![b"first".to_vec(), b"no header".to_vec()]);
    assert!(lpub_props(&ch, "", &queue, b"again", keyed("a")).await.is_ack(), "acked: the key is free");
}

struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_deduplication_queue_keeps_its_keys_across_a_restart() {
    let dir = DataDir(std::env::temp_dir().join(uniq("lepus-dedup")));
    let config = || Config { data_dir: Some(dir.0.clone()), ..test_config() };
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let persistent = |key: &str| keyed(key).with_delivery_mode(2);
    {
        let broker = start_with(config()).await;
        let conn = lconn(&broker).await;
        let ch = lconfirm_chan(&conn).await;
        ldeclare(&ch, "dq", durable, dedup_queue_args()).await;
        assert!(lpub_props(&ch, "", "dq", b"kept", persistent("a")).await.is_ack());
        drop(conn);
        broker.stop().await;
    }
    let broker = start_with(config()).await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    assert!(lpub_props(&ch, "", "dq", b"duplicate", persistent("a")).await.is_nack(), "the key came back");
    assert!(lpub_props(&ch, "", "dq", b"new", persistent("b")).await.is_ack());
    assert_eq!(ldrain(&ch, "dq").await, vec![b"kept".to_vec(), b"new".to_vec()]);
    assert!(lpub_props(&ch, "", "dq", b"after", persistent("a")).await.is_ack());
    drop(conn);
    broker.stop().await;
}

async fn declare_dedup_exchange(ch: &Channel, name: &str, persistence: &str) {
    let args = ltable(vec![("x-cache-size", AMQPValue::LongInt(10)), ("x-cache-persistence", lstr(persistence))]);
    let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    guard("exchange.declare", ch.exchange_declare(name.into(), dedup_kind(), options, args))
        .await
        .expect("exchange.declare");
}

/// Publishes `body` keyed `key` to both exchanges ("disk", "memory"), each bound to its queue.
async fn publish_to_both(conn: &Connection, key: &str, body: &[u8]) {
    let ch = lconfirm_chan(conn).await;
    for exchange in ["disk", "memory"] {
        assert!(lpub_props(&ch, exchange, "", body, keyed(key).with_delivery_mode(2)).await.is_ack());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_exchange_s_disk_cache_survives_a_restart() {
    let dir = DataDir(std::env::temp_dir().join(uniq("lepus-dedup-x")));
    let config = || Config { data_dir: Some(dir.0.clone()), ..test_config() };
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    {
        let broker = start_with(config()).await;
        let conn = lconn(&broker).await;
        let ch = lchan(&conn).await;
        for name in ["disk", "memory"] {
            declare_dedup_exchange(&ch, name, name).await;
            ldeclare(&ch, &format!("{name}-q"), durable, FieldTable::default()).await;
            bind(&ch, &format!("{name}-q"), name).await;
        }
        publish_to_both(&conn, "a", b"before").await;
        drop(conn);
        broker.stop().await;
    }
    let broker = start_with(config()).await;
    let conn = lconn(&broker).await;
    publish_to_both(&conn, "a", b"after").await;
    let ch = lchan(&conn).await;
    assert_eq!(ldrain(&ch, "disk-q").await, vec![b"before".to_vec()], "the disk cache came back");
    assert_eq!(ldrain(&ch, "memory-q").await, vec![b"before".to_vec(), b"after".to_vec()]);
    drop(conn);
    broker.stop().await;
}
