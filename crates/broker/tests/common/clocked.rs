//! A broker on a manual clock, for the tests of time-based queue features: time moves only
//! when a test says so, and timers fire when the test fires them.

use std::sync::Arc;

use bytes::BytesMut;
use lepus_broker::exchange::Destination;
use lepus_broker::queue::QueueRef;
use lepus_broker::users::Users;
use lepus_broker::vhost::{ExchangeDeclare, QueueDeclare};
use lepus_broker::{Broker, BrokerParts, ManualClock, Message, MessageHeaders, MessageRef, Publish, VHost, Wake};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue, ShortStr};

pub struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

pub struct Setup {
    pub broker: Broker,
    pub clock: Arc<ManualClock>,
    pub vhost: Arc<VHost>,
}

pub fn setup() -> Setup {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let broker = Broker::new(BrokerParts {
        vhosts: vec![VHost::new("/")],
        users: Users::new(Vec::new()),
        access_control: Default::default(),
        clock: clock.clone(),
        persistence: None,
        timer_wake: Box::new(NoWake),
    });
    let vhost = broker.vhost("/").expect("default vhost");
    Setup { broker, clock, vhost }
}

pub fn s(text: &str) -> ShortStr {
    ShortStr::try_from(text).expect("short")
}

impl Setup {
    pub fn declare(&self, name: &str, args: FieldTable) -> QueueRef {
        let d = QueueDeclare { name: s(name), arguments: args, ..Default::default() };
        self.vhost.declare_queue(&d, 1).expect("declare").0
    }

    /// A fanout exchange `dlx` and a queue `dead` bound to it.
    pub fn dead_letter_queue(&self) -> QueueRef {
        let x = ExchangeDeclare { name: s("dlx"), kind: "fanout".into(), ..Default::default() };
        self.vhost.declare_exchange(&x).expect("exchange");
        let dead = self.declare("dead", FieldTable::new());
        self.vhost.bind(Destination::Queue(s("dead")), &s("dlx"), &s(""), &FieldTable::new(), 1).expect("bind");
        dead
    }

    pub fn publish(&self, queue: &str, props: BasicProperties, body: &[u8]) -> lepus_broker::Outcome {
        let mut publisher = self.broker.publisher(self.vhost.clone());
        let message = msg(queue, props, body);
        publisher.publish(Publish { message, extra_keys: &[], headers: MessageHeaders::None }).expect("publish")
    }

    /// Moves the clock on and fires what is due.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
        while self.broker.timers().fire_due() > 0 {}
    }
}

pub fn msg(routing_key: &str, props: BasicProperties, body: &[u8]) -> MessageRef {
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, body.len() as u64, &props.to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("header");
    Arc::new(Message::new(b"", routing_key.as_bytes(), &header, body))
}

pub fn expiring(ms: &str) -> BasicProperties {
    BasicProperties { expiration: Some(s(ms)), ..Default::default() }
}

pub fn dlx_args() -> FieldTable {
    FieldTable::new().with("x-dead-letter-exchange", "dlx")
}

/// Bodies of every message `basic.get` returns, in order.
pub fn drain(q: &QueueRef) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((entry, _)) = q.get(None).message() {
        out.push(entry.message.body().to_vec());
        q.ack(None, std::iter::once(entry.seq));
    }
    out
}

pub fn headers(m: &Message) -> FieldTable {
    m.properties().expect("properties").headers.unwrap_or_default()
}

pub fn death(m: &Message, i: usize) -> FieldTable {
    match headers(m).get("x-death") {
        Some(FieldValue::Array(d)) => d[i].as_table().expect("table").clone(),
        other => panic!("no x-death: {other:?}"),
    }
}

pub fn text(v: Option<&FieldValue>) -> &str {
    v.and_then(FieldValue::as_str).unwrap_or("<none>")
}
