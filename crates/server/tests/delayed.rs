//! The delayed message exchange through a real client (lapin): a delayed message and an
//! undelayed one both arrive (waited for as events, never a fixed sleep), and a declaration
//! without `x-delayed-type` is refused with the plugin's text. The timing itself is tested on a
//! manual clock in `crates/broker/tests/delayed.rs`.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::*;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

fn delayed_kind() -> ExchangeKind {
    ExchangeKind::Custom("x-delayed-message".into())
}

fn with_delay(ms: i32) -> BasicProperties {
    BasicProperties::default().with_headers(ltable(vec![("x-delay", AMQPValue::LongInt(ms))]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_and_undelayed_messages_both_arrive() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let exchange = uniq("later");
    let args = ltable(vec![("x-delayed-type", lstr("direct"))]);
    let options = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    guard("exchange.declare", ch.exchange_declare(exchange.as_str().into(), delayed_kind(), options, args))
        .await
        .expect("exchange.declare");
    let queue = uniq("q");
    ldeclare(&ch, &queue, QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
    guard(
        "queue.bind",
        ch.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.bind");
    let mut consumer = lconsume(&ch, &queue, true).await;

    lpub_props(&ch, &exchange, "k", b"delayed", with_delay(50)).await;
    lpub_props(&ch, &exchange, "k", b"at once", with_delay(0)).await;

    let mut got: Vec<(Vec<u8>, Option<AMQPValue>)> = consumer
        .take(2)
        .await
        .into_iter()
        .map(|d| {
            let delay = d.properties.headers().as_ref().and_then(|h| h.inner().get("x-delay").cloned());
            (d.data, delay)
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (b"at once".to_vec(), Some(AMQPValue::LongInt(0))),
            // Released with its delay negated, as by RabbitMQ's plugin.
            (b"delayed".to_vec(), Some(AMQPValue::LongInt(-50))),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_exchange_without_x_delayed_type_is_refused() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let declare = ch.exchange_declare(
        uniq("later").as_str().into(),
        delayed_kind(),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    );
    let text = "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type";
    lexpect_channel_closed(&conn, &ch, declare, 406, text).await;
}
