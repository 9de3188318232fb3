//! Helpers over the real client crates (lapin and amqprs) for the tutorial and model tests.
//! Every wait is bounded by `HANG_GUARD` (a hang guard, never a synchronisation device).
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use lapin::message::{BasicGetMessage, Delivery, DeliveryResult};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use tokio::sync::mpsc;

use crate::common::{Broker, HANG_GUARD};

/// A name no other test uses.
pub fn uniq(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    format!("rs.{prefix}.{}.{nanos:x}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Awaits `f`, panicking (naming `what`) if it hangs.
pub async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, f).await {
        Ok(v) => v,
        Err(_) => panic!("hang guard hit while waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// lapin
// ---------------------------------------------------------------------------------------------

pub async fn lconn(broker: &Broker) -> Connection {
    guard("lapin connect", Connection::connect(&broker.url(), ConnectionProperties::default()))
        .await
        .expect("lapin connects")
}

/// The next `connection.blocked` (its reason) or `connection.unblocked` (`None`) among a
/// connection's events.
pub async fn next_blocking(events: &mut (impl futures_lite::Stream<Item = lapin::Event> + Unpin)) -> Option<String> {
    use futures_lite::StreamExt;
    loop {
        match guard("connection.blocked or unblocked", events.next()).await.expect("events go on") {
            lapin::Event::ConnectionBlocked(reason) => return Some(reason),
            lapin::Event::ConnectionUnblocked => return None,
            _ => continue,
        }
    }
}

pub async fn lchan(conn: &Connection) -> Channel {
    guard("channel.open", conn.create_channel()).await.expect("channel opens")
}

/// A channel in confirm mode.
pub async fn lconfirm_chan(conn: &Connection) -> Channel {
    let ch = lchan(conn).await;
    guard("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
    ch
}

pub async fn ldeclare(ch: &Channel, name: &str, options: QueueDeclareOptions, args: FieldTable) -> lapin::Queue {
    guard("queue.declare", ch.queue_declare(name.into(), options, args)).await.expect("queue.declare")
}

/// A server-named exclusive queue.
pub async fn lexcl(ch: &Channel) -> String {
    let q =
        ldeclare(ch, "", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
    q.name().as_str().to_owned()
}

/// Publishes and awaits the confirmation (`NotRequested` outside confirm mode).
pub async fn lpub_props(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) -> Confirmation {
    lpub_opts(ch, exchange, key, body, props, BasicPublishOptions::default()).await
}

pub async fn lpub_opts(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
    options: BasicPublishOptions,
) -> Confirmation {
    let confirm = guard("basic.publish", ch.basic_publish(exchange.into(), key.into(), options, body, props))
        .await
        .expect("basic.publish");
    guard("publisher confirm", confirm).await.expect("confirmation")
}

pub async fn lpub(ch: &Channel, exchange: &str, key: &str, body: &[u8]) -> Confirmation {
    lpub_props(ch, exchange, key, body, BasicProperties::default()).await
}

pub async fn lget(ch: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    guard("basic.get", ch.basic_get(queue.into(), BasicGetOptions { no_ack })).await.expect("basic.get")
}

/// Every body ready in `queue` (basic.get with auto-ack until get-empty).
pub async fn ldrain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = lget(ch, queue, true).await {
        out.push(m.delivery.data);
    }
    out
}

/// Message count of `queue` via a passive declare on the given channel.
pub async fn lcount(ch: &Channel, queue: &str) -> (u32, u32) {
    let q =
        ldeclare(ch, queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await;
    (q.message_count(), q.consumer_count())
}

/// A lapin consumer whose deliveries arrive, in order, on a tokio channel.
pub struct LConsumer {
    pub tag: String,
    rx: mpsc::UnboundedReceiver<DeliveryResult>,
}

pub async fn lconsume_with(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
    args: FieldTable,
) -> lapin::Result<LConsumer> {
    let consumer = guard("basic.consume", ch.basic_consume(queue.into(), tag.into(), options, args)).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    // The closure runs synchronously for each delivery, in order; the future it returns is empty.
    consumer.set_delegate(move |d: DeliveryResult| {
        let _ = tx.send(d);
        async {}
    });
    Ok(LConsumer { tag: consumer.tag().as_str().to_owned(), rx })
}

pub async fn lconsume(ch: &Channel, queue: &str, no_ack: bool) -> LConsumer {
    lconsume_with(ch, queue, "", BasicConsumeOptions { no_ack, ..Default::default() }, FieldTable::default())
        .await
        .expect("basic.consume")
}

impl LConsumer {
    pub async fn next(&mut self) -> Delivery {
        match guard("a delivery", self.rx.recv()).await {
            Some(Ok(Some(d))) => d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    pub async fn take(&mut self, n: usize) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    /// Waits until the consumer is cancelled (by the server or by us).
    pub async fn cancelled(&mut self) {
        match guard("consumer cancellation", self.rx.recv()).await {
            Some(Ok(None)) | None => {}
            Some(Ok(Some(d))) => panic!("unexpected delivery {d:?}"),
            Some(Err(e)) => panic!("consumer error {e:?}"),
        }
    }

    /// Deliveries already received, without waiting.
    pub fn pending(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            match r {
                Ok(Some(d)) => out.push(d),
                other => panic!("unexpected consumer event {other:?}"),
            }
        }
        out
    }
}

/// The (reply code, reply text) of a broker-sent AMQP error.
pub fn amqp_err(e: &lapin::Error) -> (u16, String) {
    match e.kind() {
        ErrorKind::ProtocolError(err) => (err.get_id(), err.get_message().as_str().to_owned()),
        other => panic!("expected an AMQP error from the broker, got {other:?}"),
    }
}

/// `op` must make the broker close the CHANNEL (not the connection) with `code` and `text`;
/// the connection stays usable.
pub async fn lexpect_channel_closed<T: std::fmt::Debug>(
    conn: &Connection,
    ch: &Channel,
    op: impl Future<Output = lapin::Result<T>>,
    code: u16,
    text: &str,
) {
    let err = guard("channel error", op).await.expect_err("the broker refuses");
    assert!(err.is_amqp_soft_error(), "expected a channel-level error: {err:?}");
    assert_eq!(amqp_err(&err), (code, text.to_owned()));
    assert!(!ch.status().connected(), "channel should be closed");
    assert!(conn.status().connected(), "connection should stay open");
    let probe = lchan(conn).await;
    guard("channel.close", probe.close(200, "bye".into())).await.expect("connection still usable");
}

pub fn lprops() -> BasicProperties {
    BasicProperties::default()
}

pub fn ltable(pairs: Vec<(&str, lapin::types::AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(k.into(), v);
    }
    t
}

pub fn lstr(s: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(s.into())
}

// ---------------------------------------------------------------------------------------------
// amqprs
// ---------------------------------------------------------------------------------------------

pub use amqprs::callbacks::ChannelCallback;
use amqprs::channel::Channel as AChannel;
use amqprs::connection::{Connection as AConnection, OpenConnectionArguments};

pub async fn aconn(broker: &Broker) -> AConnection {
    let args = OpenConnectionArguments::new(&broker.addr.ip().to_string(), broker.addr.port(), "guest", "guest");
    guard("amqprs connect", AConnection::open(&args)).await.expect("amqprs connects")
}

pub async fn achan(conn: &AConnection) -> AChannel {
    guard("amqprs channel.open", conn.open_channel(None)).await.expect("amqprs channel opens")
}

/// Channel-level events the broker sends asynchronously, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum ChanEvent {
    Close(u16, String),
    Cancel(String),
    Ack(u64, bool),
    Nack(u64, bool),
    Return { code: u16, text: String, exchange: String, routing_key: String, body: Vec<u8> },
}

/// Registers a callback forwarding every channel event; returns the receiving end.
pub async fn aevents(ch: &AChannel) -> mpsc::UnboundedReceiver<ChanEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    guard("register_callback", ch.register_callback(EventForwarder(tx))).await.expect("callback registers");
    rx
}

pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<ChanEvent>) -> ChanEvent {
    guard("a channel event", rx.recv()).await.expect("event stream open")
}

pub struct EventForwarder(pub mpsc::UnboundedSender<ChanEvent>);

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl ChannelCallback for EventForwarder {
    fn close<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b AChannel,
        close: amqprs::CloseChannel,
    ) -> BoxFut<'c, Result<(), amqprs::error::Error>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(ChanEvent::Close(close.reply_code(), close.reply_text().clone()));
        Box::pin(async { Ok(()) })
    }

    fn cancel<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b AChannel,
        cancel: amqprs::Cancel,
    ) -> BoxFut<'c, Result<(), amqprs::error::Error>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(ChanEvent::Cancel(cancel.consumer_tag().clone()));
        Box::pin(async { Ok(()) })
    }

    fn flow<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b AChannel,
        _active: bool,
    ) -> BoxFut<'c, Result<bool, amqprs::error::Error>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async { Ok(true) })
    }

    fn publish_ack<'a, 'b, 'c>(&'a mut self, _channel: &'b AChannel, ack: amqprs::Ack) -> BoxFut<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(ChanEvent::Ack(ack.delivery_tag(), ack.mutiple()));
        Box::pin(async {})
    }

    fn publish_nack<'a, 'b, 'c>(&'a mut self, _channel: &'b AChannel, nack: amqprs::Nack) -> BoxFut<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(ChanEvent::Nack(nack.delivery_tag(), nack.multiple()));
        Box::pin(async {})
    }

    fn publish_return<'a, 'b, 'c>(
        &'a mut self,
        _channel: &'b AChannel,
        ret: amqprs::Return,
        _basic_properties: amqprs::BasicProperties,
        content: Vec<u8>,
    ) -> BoxFut<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let _ = self.0.send(ChanEvent::Return {
            code: ret.reply_code(),
            text: ret.reply_text().clone(),
            exchange: ret.exchange().clone(),
            routing_key: ret.routing_key().clone(),
            body: content,
        });
        Box::pin(async {})
    }
}

/// One amqprs delivery: (deliver, properties, body).
pub type ADelivery = (amqprs::Deliver, amqprs::BasicProperties, Vec<u8>);

pub async fn anext(rx: &mut mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>) -> ADelivery {
    let mut m = guard("an amqprs delivery", rx.recv()).await.expect("consumer open");
    (
        m.deliver.take().expect("deliver"),
        m.basic_properties.take().expect("properties"),
        m.content.take().expect("body"),
    )
}

pub async fn aconsume(
    ch: &AChannel,
    queue: &str,
    manual_ack: bool,
) -> (String, mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>) {
    let args = amqprs::channel::BasicConsumeArguments::new(queue, "").manual_ack(manual_ack).finish();
    guard("amqprs basic.consume", ch.basic_consume_rx(args)).await.expect("basic.consume")
}

/// A server-named exclusive queue (amqprs).
pub async fn aexcl(ch: &AChannel) -> String {
    let args = amqprs::channel::QueueDeclareArguments::exclusive_server_named();
    guard("amqprs queue.declare", ch.queue_declare(args)).await.expect("queue.declare").expect("declare-ok").0
}

pub async fn apub(ch: &AChannel, exchange: &str, key: &str, body: &[u8], props: amqprs::BasicProperties) {
    let args = amqprs::channel::BasicPublishArguments::new(exchange, key);
    guard("amqprs basic.publish", ch.basic_publish(props, body.to_vec(), args)).await.expect("basic.publish");
}

/// Every body ready in `queue` (amqprs basic.get with auto-ack until get-empty).
pub async fn adrain(ch: &AChannel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let args = amqprs::channel::BasicGetArguments::new(queue).no_ack(true).finish();
        match guard("amqprs basic.get", ch.basic_get(args)).await.expect("basic.get") {
            Some((_, _, body)) => out.push(body),
            None => return out,
        }
    }
}

/// Closes a lapin connection at the end of a test. A channel dropped just before may still be
/// closing: lapin then refuses connection.close, or fails the connection itself and drops the
/// socket without ever resolving the close (a race inside lapin 4: "invalid channel state:
/// Closing"); either way the connection is over, and the broker sees the socket close.
pub async fn lclose(conn: &Connection) {
    use futures_lite::StreamExt;
    let mut events = conn.events_listener();
    if conn.status().errored() {
        return;
    }
    let failed = async move {
        while let Some(event) = events.next().await {
            if matches!(event, lapin::Event::Error(_)) {
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        closed = guard("connection.close", conn.close(200, "bye".into())) => match closed {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::InvalidChannelState(..)) => {}
            Err(e) => panic!("connection.close: {e:?}"),
        },
        () = failed => {}
    }
}

impl LConsumer {
    /// Waits for the error lapin hands every consumer of a channel the broker closed.
    pub async fn channel_error(&mut self) -> lapin::Error {
        loop {
            match guard("channel error", self.rx.recv()).await {
                Some(Err(e)) => return e,
                Some(Ok(Some(_))) => continue,
                other => panic!("expected a channel error, got {other:?}"),
            }
        }
    }
}

/// For errors the broker reports asynchronously (after publish or ack, which have no reply):
/// `op` must make the broker close the channel with `code` and `text`. A consumer on a
/// throwaway queue of that channel observes the close; the connection stays usable.
pub async fn lexpect_async_close<T>(
    conn: &Connection,
    ch: &Channel,
    op: impl Future<Output = lapin::Result<T>>,
    code: u16,
    text: &str,
) {
    let q = lexcl(ch).await;
    let mut watcher = lconsume(ch, &q, true).await;
    // The operation itself may succeed (nothing to wait for) or see the channel closing.
    let _ = guard("operation", op).await;
    let err = watcher.channel_error().await;
    assert_eq!(amqp_err(&err), (code, text.to_owned()));
    assert!(!ch.status().connected(), "channel should be closed");
    assert!(conn.status().connected(), "connection should stay open");
    let probe = lchan(conn).await;
    guard("channel.close", probe.close(200, "bye".into())).await.expect("connection still usable");
}
