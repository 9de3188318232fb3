//! The delayed message exchange (`x-delayed-message`), on a broker with a manual clock: held
//! messages are routed when their delay has passed, in deadline order, through the exchange's
//! inner type and the bindings current then.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use lepus_broker::exchange::Destination;
use lepus_broker::persist::Persistence;
use lepus_broker::queue::QueueRef;
use lepus_broker::users::Users;
use lepus_broker::vhost::{ExchangeDeclare, QueueDeclare};
use lepus_broker::{
    Broker, BrokerError, BrokerParts, ManualClock, Message, MessageHeaders, Outcome, Publish, VHost, Wake,
};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue, ShortStr};
use lepus_store::crash::CrashBackend;
use lepus_store::meta::MetaStore;
use lepus_store::store::{Store, StoreOptions};

struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

struct Setup {
    broker: Broker,
    clock: Arc<ManualClock>,
    vhost: Arc<VHost>,
}

fn setup() -> Setup {
    setup_with(VHost::new("/"), None, Arc::new(ManualClock::new(1_000_000)))
}

fn setup_with(vhost: VHost, persistence: Option<Arc<Persistence>>, clock: Arc<ManualClock>) -> Setup {
    let broker = Broker::new(BrokerParts {
        vhosts: vec![vhost],
        users: Users::new(Vec::new()),
        access_control: Default::default(),
        clock: clock.clone(),
        persistence,
        timer_wake: Box::new(NoWake),
    });
    let vhost = broker.vhost("/").expect("default vhost");
    Setup { broker, clock, vhost }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("lepus-broker-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// A broker over the crash backend's store and the metadata at `meta_path`, restored from them.
fn open(backend: &CrashBackend, meta_path: &Path, clock: Arc<ManualClock>) -> (Store, Setup) {
    let store = Store::new(Arc::new(backend.clone()), Path::new("/data"), StoreOptions::default());
    let meta = MetaStore::open(meta_path).expect("meta");
    let snapshot = meta.load().expect("load");
    let persistence = Arc::new(Persistence::open(store.clone(), meta).expect("persistence"));
    let (vhost, _report) = VHost::restore("/", persistence.clone(), &snapshot, true).expect("restore");
    (store, setup_with(vhost, Some(persistence), clock))
}

fn s(text: &str) -> ShortStr {
    ShortStr::try_from(text).expect("short")
}

fn delayed_args(inner: &str) -> FieldTable {
    FieldTable::new().with("x-delayed-type", inner)
}

fn delay(value: FieldValue) -> FieldTable {
    FieldTable::new().with("x-delay", value)
}

fn ms(n: i32) -> FieldTable {
    delay(FieldValue::I32(n))
}

impl Setup {
    fn declare_exchange(&self, name: &str, kind: &str, arguments: FieldTable) -> Result<(), BrokerError> {
        let d = ExchangeDeclare { name: s(name), kind: kind.into(), arguments, ..Default::default() };
        self.vhost.declare_exchange(&d)
    }

    /// A delayed exchange routing as `inner`.
    fn delayed(&self, name: &str, inner: &str) {
        self.declare_exchange(name, "x-delayed-message", delayed_args(inner)).expect("declare");
    }

    fn queue(&self, name: &str) -> QueueRef {
        let d = QueueDeclare { name: s(name), ..Default::default() };
        self.vhost.declare_queue(&d, 1).expect("declare").0
    }

    fn bind_args(&self, queue: &str, exchange: &str, key: &str, args: &FieldTable) {
        self.vhost.bind(Destination::Queue(s(queue)), &s(exchange), &s(key), args, 1).expect("bind");
    }

    fn bind(&self, queue: &str, exchange: &str, key: &str) {
        self.bind_args(queue, exchange, key, &FieldTable::new());
    }

    fn publish(&self, exchange: &str, key: &str, headers: FieldTable, body: &str) -> Outcome {
        self.publish_mode(exchange, key, headers, body, 1)
    }

    fn publish_mode(&self, exchange: &str, key: &str, headers: FieldTable, body: &str, mode: u8) -> Outcome {
        let mut publisher = self.broker.publisher(self.vhost.clone());
        let props = BasicProperties { headers: Some(headers.clone()), delivery_mode: Some(mode), ..Default::default() };
        let message = msg(exchange, key, props, body.as_bytes());
        let p = Publish { message, extra_keys: &[], headers: MessageHeaders::Decoded(&headers) };
        publisher.publish(p).expect("publish")
    }

    fn pending(&self, exchange: &str) -> u32 {
        self.vhost.messages_delayed(exchange.as_bytes()).expect("a delayed exchange")
    }

    /// Moves the clock on and fires what is due.
    fn advance(&self, ms: u64) {
        self.clock.advance(ms);
        while self.broker.timers().fire_due() > 0 {}
    }
}

fn msg(exchange: &str, routing_key: &str, props: BasicProperties, body: &[u8]) -> Arc<Message> {
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, body.len() as u64, &props.to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("header");
    Arc::new(Message::new(exchange.as_bytes(), routing_key.as_bytes(), &header, body))
}

/// Bodies of every message `basic.get` returns, in order.
fn drain(q: &QueueRef) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((entry, _)) = q.get(None).message() {
        out.push(String::from_utf8_lossy(entry.message.body()).into_owned());
        q.ack(None, std::iter::once(entry.seq));
    }
    out
}

fn precondition(text: &str) -> Result<(), BrokerError> {
    Err(BrokerError::PreconditionFailed(text.into()))
}

#[test]
fn delayed_messages_are_routed_when_due_in_deadline_order() {
    let t = setup();
    t.delayed("later", "direct");
    let q = t.queue("q");
    t.bind("q", "later", "k");
    for (delay, body) in [(300, "c"), (100, "a"), (200, "b"), (100, "a2")] {
        let outcome = t.publish("later", "k", ms(delay), body);
        assert!(!outcome.routed, "held, not routed yet");
        assert!(outcome.is_unroutable(), "a mandatory delayed message is returned, as by the plugin");
    }
    assert_eq!((q.message_count(), t.pending("later")), (0, 4));
    t.advance(99);
    assert_eq!((q.message_count(), t.pending("later")), (0, 4), "nothing before its delay");
    t.advance(1);
    assert_eq!(drain(&q), ["a", "a2"], "equal deadlines in publish order");
    t.advance(99);
    assert!(drain(&q).is_empty());
    t.advance(1);
    assert_eq!(drain(&q), ["b"]);
    t.advance(100);
    assert_eq!(drain(&q), ["c"]);
    assert_eq!(t.pending("later"), 0);
}

#[test]
fn a_released_message_keeps_its_exchange_and_key_and_carries_the_negated_delay() {
    let t = setup();
    t.delayed("later", "direct");
    let q = t.queue("q");
    t.bind("q", "later", "k");
    t.publish("later", "k", ms(250).with("other", "kept"), "m");
    t.advance(250);
    let (entry, _) = q.get(None).message().expect("released");
    assert_eq!((entry.message.exchange(), entry.message.routing_key()), (&b"later"[..], &b"k"[..]));
    let headers = entry.message.properties().expect("properties").headers.expect("headers");
    assert_eq!(headers.get("x-delay"), Some(&FieldValue::I32(-250)));
    assert_eq!(headers.get("other").and_then(FieldValue::as_str), Some("kept"));
}

#[test]
fn no_positive_x_delay_routes_at_once() {
    let t = setup();
    t.delayed("later", "direct");
    let q = t.queue("q");
    t.bind("q", "later", "k");
    let at_once = [
        ("absent", FieldTable::new()),
        ("zero", ms(0)),
        ("negative", ms(-5)),
        ("not a number", delay(FieldValue::LongStr(Bytes::from_static(b"soon")))),
        ("a boolean", delay(FieldValue::Bool(true))),
        ("beyond 2^32-1 ms", delay(FieldValue::I64(1 << 32))),
    ];
    for (body, headers) in at_once {
        let outcome = t.publish("later", "k", headers, body);
        assert!(outcome.routed, "{body}");
    }
    assert_eq!(t.pending("later"), 0);
    assert_eq!(drain(&q), ["absent", "zero", "negative", "not a number", "a boolean", "beyond 2^32-1 ms"]);
    // A string of digits and a float count, as in the plugin.
    t.publish("later", "k", delay(FieldValue::LongStr(Bytes::from_static(b"40"))), "string");
    t.publish("later", "k", delay(FieldValue::F64(60.9)), "float");
    assert_eq!(t.pending("later"), 2);
    t.advance(40);
    assert_eq!(drain(&q), ["string"]);
    t.advance(20);
    assert_eq!(drain(&q), ["float"]);
}

#[test]
fn each_inner_type_routes_as_itself_after_the_delay() {
    let t = setup();
    let (a, b) = (t.queue("a"), t.queue("b"));

    t.delayed("d-topic", "topic");
    t.bind("a", "d-topic", "orders.*");
    t.bind("b", "d-topic", "invoices.#");
    t.publish("d-topic", "orders.new", ms(10), "topic");

    t.delayed("d-fanout", "fanout");
    t.bind("a", "d-fanout", "ignored");
    t.bind("b", "d-fanout", "");
    t.publish("d-fanout", "any", ms(20), "fanout");

    t.delayed("d-headers", "headers");
    let match_all = FieldTable::new().with("x-match", "all").with("kind", "report");
    t.bind_args("b", "d-headers", "", &match_all);
    t.publish("d-headers", "", ms(30).with("kind", "report"), "headers match");
    t.publish("d-headers", "", ms(30).with("kind", "other"), "headers miss");

    t.delayed("d-direct", "direct");
    t.bind("a", "d-direct", "k");
    t.publish("d-direct", "not-k", ms(40), "direct miss");
    t.publish("d-direct", "k", ms(40), "direct");

    assert_eq!((a.message_count(), b.message_count()), (0, 0));
    t.advance(10);
    assert_eq!((drain(&a), drain(&b)), (vec!["topic".to_string()], vec![]));
    t.advance(10);
    assert_eq!((drain(&a), drain(&b)), (vec!["fanout".to_string()], vec!["fanout".to_string()]));
    t.advance(10);
    assert_eq!((drain(&a), drain(&b)), (vec![], vec!["headers match".to_string()]));
    t.advance(10);
    assert_eq!((drain(&a), drain(&b)), (vec!["direct".to_string()], vec![]));
}

#[test]
fn the_bindings_at_release_time_are_used() {
    let t = setup();
    t.delayed("later", "direct");
    let (old, new) = (t.queue("old"), t.queue("new"));
    t.bind("old", "later", "k");
    t.publish("later", "k", ms(100), "m");
    t.vhost.unbind(Destination::Queue(s("old")), &s("later"), &s("k"), &FieldTable::new(), 1).expect("unbind");
    t.bind("new", "later", "k");
    t.advance(100);
    assert_eq!((drain(&old), drain(&new)), (vec![], vec!["m".to_string()]));
}

#[test]
fn deleting_the_exchange_drops_its_pending_messages() {
    let t = setup();
    t.delayed("later", "fanout");
    let q = t.queue("q");
    t.bind("q", "later", "");
    t.publish("later", "", ms(100), "dropped");
    assert_eq!(t.pending("later"), 1);
    t.vhost.delete_exchange(&s("later"), false).expect("delete");
    // The same name declared again, bound again: the old exchange's message is gone.
    t.delayed("later", "fanout");
    t.bind("q", "later", "");
    assert_eq!(t.pending("later"), 0);
    t.advance(1_000);
    assert!(drain(&q).is_empty());
}

#[test]
fn an_exchange_bound_to_a_delayed_exchange_has_its_messages_held_there() {
    let t = setup();
    t.declare_exchange("front", "fanout", FieldTable::new()).expect("declare");
    t.delayed("later", "direct");
    t.vhost.bind(Destination::Exchange(s("later")), &s("front"), &s(""), &FieldTable::new(), 1).expect("bind");
    let q = t.queue("q");
    t.bind("q", "later", "k");
    t.publish("front", "k", ms(50), "m");
    assert_eq!(t.pending("later"), 1);
    t.advance(50);
    assert_eq!(drain(&q), ["m"]);
}

#[test]
fn a_delayed_message_goes_to_the_alternate_exchange_at_once_as_in_the_plugin() {
    let t = setup();
    t.declare_exchange("ae", "fanout", FieldTable::new()).expect("declare");
    let alt = t.queue("alt");
    t.bind("alt", "ae", "");
    let args = delayed_args("direct").with("alternate-exchange", "ae");
    t.declare_exchange("later", "x-delayed-message", args).expect("declare");
    let q = t.queue("q");
    t.bind("q", "later", "k");
    let outcome = t.publish("later", "k", ms(50), "m");
    assert!(outcome.routed, "the alternate exchange routed it");
    assert_eq!((drain(&alt), t.pending("later")), (vec!["m".to_string()], 1));
    t.advance(50);
    assert_eq!((drain(&q), drain(&alt)), (vec!["m".to_string()], vec![]));
}

#[test]
fn declaration_is_checked_as_the_plugin_checks_it() {
    let t = setup();
    let declare = |args: FieldTable| t.declare_exchange("d", "x-delayed-message", args);
    let must_exist = "Invalid argument, 'x-delayed-type' must be an existing exchange type";
    assert_eq!(declare(FieldTable::new()), precondition(must_exist));
    assert_eq!(declare(FieldTable::new().with("x-delayed-type", FieldValue::I32(1))), precondition(must_exist));
    assert_eq!(
        declare(delayed_args("x-delayed-message")),
        precondition("Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'")
    );
    assert_eq!(
        declare(delayed_args("x-nonsense")),
        Err(BrokerError::CommandInvalid("unknown exchange type 'x-nonsense'".into()))
    );
    assert!(!t.vhost.exchange_exists(b"d"));

    declare(delayed_args("topic")).expect("declare");
    assert_eq!(t.vhost.exchange_type(b"d"), Some("x-delayed-message"));
    declare(delayed_args("topic")).expect("an equivalent redeclaration");
    // RabbitMQ compares only `alternate-exchange` among an exchange's arguments (the plugin
    // delegates to the inner type, which does that): another `x-delayed-type` is not refused.
    declare(delayed_args("fanout")).expect("redeclared with other arguments");
    assert_eq!(
        t.declare_exchange("d", "topic", delayed_args("topic")),
        precondition(
            "inequivalent arg 'type' for exchange 'd' in vhost '/': received 'topic' but current is 'x-delayed-message'"
        )
    );
    // Bindings are checked as the inner type checks them.
    t.queue("q");
    let bad = FieldTable::new().with("x-match", "sometimes");
    assert!(t.vhost.bind(Destination::Queue(s("q")), &s("d"), &s(""), &bad, 1).is_ok(), "a topic ignores arguments");
    t.declare_exchange("h", "x-delayed-message", delayed_args("headers")).expect("declare");
    assert!(matches!(
        t.vhost.bind(Destination::Queue(s("q")), &s("h"), &s(""), &bad, 1),
        Err(BrokerError::PreconditionFailed(_))
    ));
}

#[test]
fn many_pending_messages_are_released_in_deadline_order() {
    let t = setup();
    t.delayed("later", "direct");
    let q = t.queue("q");
    t.bind("q", "later", "k");
    const N: i32 = 20_000;
    // Deadlines in a scrambled order: i * 7919 mod N is a permutation of 0..N.
    for i in 0..N {
        let d = (i64::from(i) * 7919 % i64::from(N)) as i32 + 1;
        t.publish("later", "k", ms(d), &d.to_string());
    }
    assert_eq!(t.pending("later"), N as u32);
    t.advance(N as u64);
    let got: Vec<i32> = drain(&q).iter().map(|b| b.parse().expect("number")).collect();
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
}

/// A durable delayed exchange keeps its persistent delayed messages in its hidden queue's log:
/// after a power cut they are back, held until their deadline (counted from their publish);
/// transient ones are not; deleting the exchange deletes them for good.
#[test]
fn a_durable_delayed_exchange_keeps_persistent_messages_across_a_power_cut() {
    let tmp = temp_dir("delayed");
    let meta = tmp.0.join("meta.redb");
    let backend = CrashBackend::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (store, t) = open(&backend, &meta, clock.clone());
    let d = ExchangeDeclare {
        name: s("later"),
        kind: "x-delayed-message".into(),
        durable: true,
        arguments: delayed_args("direct"),
        ..Default::default()
    };
    t.vhost.declare_exchange(&d).expect("declare");
    let q = QueueDeclare { name: s("q"), durable: true, ..Default::default() };
    t.vhost.declare_queue(&q, 1).expect("declare");
    t.bind("q", "later", "k");
    let outcome = t.publish_mode("later", "k", ms(200), "persistent", 2);
    assert!(outcome.durable.is_pending(), "its confirm waits for the log");
    t.publish_mode("later", "k", ms(100), "transient", 1);
    t.advance(50);
    store.commit();
    drop((t, store));

    // Each power cut leaves a new backend: the next run writes to it.
    let backend = backend.crash(7);
    let (store, t) = open(&backend, &meta, clock.clone());
    assert_eq!(t.vhost.exchange_type(b"later"), Some("x-delayed-message"));
    assert_eq!(t.pending("later"), 1, "the persistent one is back");
    let q = t.vhost.queue(&s("q"), 1).expect("queue restored");
    t.advance(149);
    assert_eq!(q.message_count(), 0, "still held: 200 ms from its publish");
    t.advance(1);
    assert_eq!(drain(&q), ["persistent"]);
    store.commit();
    drop((t, store));

    // Released: its stored copy in the hidden queue is gone.
    let backend = backend.crash(9);
    let (store, t) = open(&backend, &meta, clock.clone());
    assert_eq!(t.pending("later"), 0);
    t.publish_mode("later", "k", ms(100), "dropped with the exchange", 2);
    t.vhost.delete_exchange(&s("later"), false).expect("delete");
    store.commit();
    drop((t, store));

    let (_store, t) = open(&backend.crash(8), &meta, clock);
    assert!(!t.vhost.exchange_exists(b"later"));
    t.delayed("later", "direct");
    t.bind("q", "later", "k");
    assert_eq!(t.pending("later"), 0);
    t.advance(1_000);
    let q = t.vhost.queue(&s("q"), 1).expect("queue restored");
    assert!(drain(&q).is_empty(), "neither the released message nor the dropped one comes back");
}
