//! The route cache and the vhost's route memo never change where a message goes: under random
//! declarations, bindings, unbindings and deletions (queues and exchanges, exchange-to-exchange
//! bindings, an alternate exchange, a headers exchange), routing through one long-lived cache,
//! or through a new cache that the memo fills, gives the same queues as routing without them.

use bytes::{Bytes, BytesMut};
use lepus_broker::exchange::Destination;
use lepus_broker::vhost::{ExchangeDeclare, QueueDeclare};
use lepus_broker::{BrokerError, MessageHeaders, RouteCache, VHost};
use lepus_protocol::Encoder;
use lepus_protocol::table::encode_table;
use lepus_protocol::{FieldTable, FieldValue, ShortStr};
use proptest::prelude::*;

const QUEUES: [&str; 4] = ["q0", "q1", "q2", "q3"];
/// Exchanges a test may route through: the default one, predeclared ones and two of its own
/// ("ae" is the alternate exchange of "x").
const EXCHANGES: [&str; 6] = ["", "amq.direct", "amq.topic", "amq.headers", "x", "ae"];
const KEYS: [&str; 4] = ["a", "a.b", "q1", "q2"];
const BINDING_KEYS: [&str; 5] = ["a", "a.b", "#", "*.b", "q1"];

#[derive(Debug, Clone)]
enum Op {
    DeclareQueue(usize),
    DeleteQueue(usize),
    DeclareX,
    DeleteX,
    Bind { queue: usize, exchange: usize, key: usize },
    Unbind { queue: usize, exchange: usize, key: usize },
    BindExchange { source: usize, key: usize },
    Route { exchange: usize, key: usize, header: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..QUEUES.len()).prop_map(Op::DeclareQueue),
        1 => (0..QUEUES.len()).prop_map(Op::DeleteQueue),
        1 => Just(Op::DeclareX),
        1 => Just(Op::DeleteX),
        1 => (0..QUEUES.len(), 1..EXCHANGES.len(), 0..BINDING_KEYS.len())
            .prop_map(|(queue, exchange, key)| Op::Bind { queue, exchange, key }),
        1 => (0..QUEUES.len(), 1..EXCHANGES.len(), 0..BINDING_KEYS.len())
            .prop_map(|(queue, exchange, key)| Op::Unbind { queue, exchange, key }),
        1 => (1..EXCHANGES.len() - 2, 0..BINDING_KEYS.len()).prop_map(|(source, key)| Op::BindExchange { source, key }),
        4 => (0..EXCHANGES.len(), 0..KEYS.len(), any::<bool>())
            .prop_map(|(exchange, key, header)| Op::Route { exchange, key, header }),
    ]
}

fn s(text: &str) -> ShortStr {
    ShortStr::try_from(text).expect("short string")
}

fn headers_binding_args() -> FieldTable {
    let mut args = FieldTable::new();
    args.insert(s("x-match"), FieldValue::LongStr(Bytes::from_static(b"any")));
    args.insert(s("h"), FieldValue::LongStr(Bytes::from_static(b"1")));
    args
}

fn binding_args(exchange: &str) -> FieldTable {
    if exchange == "amq.headers" { headers_binding_args() } else { FieldTable::new() }
}

fn declare_x(vhost: &VHost) {
    for (name, kind, arguments) in [
        ("ae", "fanout", FieldTable::new()),
        ("x", "direct", {
            let mut a = FieldTable::new();
            a.insert(s("alternate-exchange"), FieldValue::LongStr(Bytes::from_static(b"ae")));
            a
        }),
    ] {
        let d = ExchangeDeclare { name: s(name), kind: kind.into(), arguments, ..Default::default() };
        vhost.declare_exchange(&d).expect("declare exchange");
    }
}

fn names(queues: &[lepus_broker::QueueRef]) -> Vec<String> {
    let mut names: Vec<String> = queues.iter().map(|q| q.name.to_string()).collect();
    names.sort();
    names
}

fn run(ops: &[Op]) {
    let vhost = VHost::new("/");
    let mut cache = RouteCache::new();
    let mut raw_cache = RouteCache::new();
    let mut uncached = Vec::new();
    for op in ops {
        match op {
            Op::DeclareQueue(i) => {
                let d = QueueDeclare { name: s(QUEUES[*i]), ..Default::default() };
                vhost.declare_queue(&d, 1).expect("declare queue");
            }
            Op::DeleteQueue(i) => {
                let _ = vhost.delete_queue(&s(QUEUES[*i]), false, false, 1);
            }
            Op::DeclareX => declare_x(&vhost),
            Op::DeleteX => {
                let _ = vhost.delete_exchange(&s("x"), false);
                let _ = vhost.delete_exchange(&s("ae"), false);
            }
            Op::Bind { queue, exchange, key } => {
                let x = EXCHANGES[*exchange];
                let dest = Destination::Queue(s(QUEUES[*queue]));
                let _ = vhost.bind(dest, &s(x), &s(BINDING_KEYS[*key]), &binding_args(x), 1);
            }
            Op::Unbind { queue, exchange, key } => {
                let x = EXCHANGES[*exchange];
                let dest = Destination::Queue(s(QUEUES[*queue]));
                let _ = vhost.unbind(dest, &s(x), &s(BINDING_KEYS[*key]), &binding_args(x), 1);
            }
            Op::BindExchange { source, key } => {
                // Into "x" (and so, when nothing matches there, on to its alternate exchange).
                let dest = Destination::Exchange(s("x"));
                let x = EXCHANGES[*source];
                let _ = vhost.bind(dest, &s(x), &s(BINDING_KEYS[*key]), &binding_args(x), 1);
            }
            Op::Route { exchange, key, header } => {
                let headers = header.then(|| {
                    let mut h = FieldTable::new();
                    h.insert(s("h"), FieldValue::LongStr(Bytes::from_static(b"1")));
                    h
                });
                let (x, k) = (EXCHANGES[*exchange].as_bytes(), KEYS[*key].as_bytes());
                uncached.clear();
                let expected = vhost.route(x, &[k], headers.as_ref(), &mut uncached).map(|()| names(&uncached));
                let got = vhost.route_cached(x, k, headers.as_ref(), &mut cache).map(names);
                // The borrowed publish path hands over the table still encoded.
                let raw = headers.as_ref().map(|h| {
                    let mut b = BytesMut::new();
                    encode_table(h, &mut Encoder::new(&mut b));
                    b
                });
                let raw_headers = raw.as_deref().map_or(MessageHeaders::None, MessageHeaders::Raw);
                let got_raw = vhost.route_cached(x, k, raw_headers, &mut raw_cache).map(names);
                // A connection that never routed this: the vhost's shared memo answers.
                let got_memo = vhost.route_cached(x, k, headers.as_ref(), &mut RouteCache::new()).map(names);
                match (&expected, got, got_raw, got_memo) {
                    (Ok(expected), Ok(got), Ok(got_raw), Ok(got_memo)) => {
                        assert_eq!(&got, expected, "{op:?}");
                        assert_eq!(&got_raw, expected, "{op:?} with raw headers");
                        assert_eq!(&got_memo, expected, "{op:?} through the memo");
                    }
                    (Err(e), Err(g), Err(r), Err(m)) => {
                        assert_eq!(g.to_string(), e.to_string());
                        assert_eq!(r.to_string(), e.to_string());
                        assert_eq!(m.to_string(), e.to_string());
                    }
                    (e, g, r, m) => panic!("{op:?}: uncached {e:?}, cached {g:?}, raw {r:?}, memo {m:?}"),
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    #[test]
    fn cached_routes_match_uncached_routes(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

/// The plainest case, spelled out: a cached route sees a binding made after it was cached.
#[test]
fn a_new_binding_invalidates_the_cached_route() {
    let vhost = VHost::new("/");
    for q in ["q0", "q1"] {
        vhost.declare_queue(&QueueDeclare { name: s(q), ..Default::default() }, 1).expect("declare");
    }
    let mut cache = RouteCache::new();
    let bind = |q: &str| vhost.bind(Destination::Queue(s(q)), &s("amq.direct"), &s("k"), &FieldTable::new(), 1);
    bind("q0").expect("bind");
    assert_eq!(names(vhost.route_cached(b"amq.direct", b"k", None, &mut cache).expect("route")), ["q0"]);
    assert_eq!(names(vhost.route_cached(b"amq.direct", b"k", None, &mut cache).expect("route")), ["q0"]);
    bind("q1").expect("bind");
    assert_eq!(names(vhost.route_cached(b"amq.direct", b"k", None, &mut cache).expect("route")), ["q0", "q1"]);
    vhost.delete_queue(&s("q0"), false, false, 1).expect("delete");
    assert_eq!(names(vhost.route_cached(b"amq.direct", b"k", None, &mut cache).expect("route")), ["q1"]);
    assert_eq!(
        names(vhost.route_cached(b"amq.direct", b"other", None, &mut cache).expect("route")),
        Vec::<String>::new()
    );
}

/// A headers exchange routes by the message's headers, so its routes are never reused.
#[test]
fn routes_through_a_headers_exchange_are_not_cached() {
    let vhost = VHost::new("/");
    vhost.declare_queue(&QueueDeclare { name: s("q0"), ..Default::default() }, 1).expect("declare");
    let dest = Destination::Queue(s("q0"));
    vhost.bind(dest, &s("amq.headers"), &s(""), &headers_binding_args(), 1).expect("bind");
    let mut matching = FieldTable::new();
    matching.insert(s("h"), FieldValue::LongStr(Bytes::from_static(b"1")));
    let mut cache = RouteCache::new();
    let route = |headers: Option<&FieldTable>, cache: &mut RouteCache| {
        names(vhost.route_cached(b"amq.headers", b"", headers, cache).expect("route"))
    };
    assert_eq!(route(Some(&matching), &mut cache), ["q0"]);
    assert_eq!(route(None, &mut cache), Vec::<String>::new());
    assert_eq!(route(Some(&matching), &mut cache), ["q0"]);
}

fn reply_code(e: &BrokerError) -> &'static str {
    match e {
        BrokerError::AccessRefused(_) => "403",
        BrokerError::NotFound { .. } => "404",
        BrokerError::ResourceLocked(_) => "405",
        BrokerError::PreconditionFailed(_) => "406",
        _ => "another code",
    }
}

/// Declarations, bindings and unbindings that change nothing (passive, repeating what exists,
/// unbinding what is not bound) and refused ones keep the topology version, so they do not
/// invalidate every connection's route cache; real changes get a new version.
#[test]
fn only_real_changes_invalidate_the_caches() {
    let vhost = VHost::new("/");
    let queue = QueueDeclare { name: s("q0"), ..Default::default() };
    let exchange = ExchangeDeclare { name: s("x"), kind: "direct".into(), ..Default::default() };
    let changed = |f: &dyn Fn()| {
        let before = vhost.topology_version();
        f();
        vhost.topology_version() != before
    };
    assert!(changed(&|| drop(vhost.declare_queue(&queue, 1).expect("declare"))));
    assert!(changed(&|| vhost.declare_exchange(&exchange).expect("declare")));
    assert!(!changed(&|| drop(vhost.declare_queue(&queue, 1).expect("redeclare"))));
    assert!(!changed(&|| drop(
        vhost.declare_queue(&QueueDeclare { passive: true, ..queue.clone() }, 1).expect("passive")
    )));
    assert!(!changed(&|| vhost.declare_exchange(&exchange).expect("redeclare")));
    assert!(!changed(&|| vhost
        .declare_exchange(&ExchangeDeclare { passive: true, ..exchange.clone() })
        .expect("passive")));
    assert!(!changed(&|| {
        vhost.declare_queue(&QueueDeclare { durable: true, ..queue.clone() }, 1).expect_err("inequivalent");
    }));
    assert!(!changed(&|| {
        vhost
            .declare_queue(&QueueDeclare { name: s("missing"), passive: true, ..Default::default() }, 1)
            .expect_err("404");
    }));
    let dest = || Destination::Queue(s("q0"));
    let none = FieldTable::new();
    assert!(changed(&|| vhost.bind(dest(), &s("x"), &s("k"), &none, 1).expect("bind")));
    assert!(!changed(&|| vhost.bind(dest(), &s("x"), &s("k"), &none, 1).expect("bind what is bound")));
    assert!(!changed(&|| vhost.unbind(dest(), &s("x"), &s("other"), &none, 1).expect("unbind what is not bound")));
    assert!(!changed(&|| vhost.unbind(dest(), &s("missing"), &s("k"), &none, 1).expect("unbind from nothing")));
    let owned = QueueDeclare { name: s("owned"), exclusive: true, ..Default::default() };
    assert!(changed(&|| drop(vhost.declare_queue(&owned, 2).expect("declare"))));
    let mut bad_x_match = FieldTable::new();
    bad_x_match.insert(s("x-match"), FieldValue::LongStr(Bytes::from_static(b"some")));
    let refused: [(&str, Destination, &str, &FieldTable); 6] = [
        ("404", Destination::Queue(s("missing")), "x", &none),
        ("404", dest(), "missing", &none),
        ("403", dest(), "", &none),
        ("403", Destination::Exchange(s("")), "x", &none),
        ("405", Destination::Queue(s("owned")), "x", &none),
        ("406", dest(), "amq.headers", &bad_x_match),
    ];
    for (code, to, from, args) in &refused {
        let bind = || vhost.bind(to.clone(), &s(from), &s("k"), args, 1);
        assert!(!changed(&|| assert_eq!(reply_code(&bind().expect_err(code)), *code)), "bind refused with {code}");
    }
    for (code, to, from, args) in &refused[2..5] {
        let unbind = || vhost.unbind(to.clone(), &s(from), &s("k"), args, 1);
        assert!(!changed(&|| assert_eq!(reply_code(&unbind().expect_err(code)), *code)), "unbind refused with {code}");
    }
    assert!(changed(&|| vhost.unbind(dest(), &s("x"), &s("k"), &none, 1).expect("unbind")));
    assert!(changed(&|| vhost.delete_exchange(&s("x"), false).expect("delete")));
    assert!(!changed(&|| vhost.delete_exchange(&s("x"), false).expect("delete what is gone")));
    assert!(changed(&|| assert_eq!(vhost.delete_queue(&s("q0"), false, false, 1).expect("delete"), 0)));
}
