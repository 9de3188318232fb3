//! Broker micro-benchmarks: topic routing with 100,000 bindings, a vhost's uncached routing
//! through each exchange type, and a queue's publish → assign → settle cycle with one consumer.
//! Run with `cargo bench -p lepus-broker`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lepus_broker::exchange::Destination;
use lepus_broker::outlet::{ConsumerId, Outbound, Outlet, Wake};
use lepus_broker::queue::{ChannelGate, ConsumerSpec, Queue, QueueLimits};
use lepus_broker::topic::TopicMatcher;
use lepus_broker::vhost::QueueDeclare;
use lepus_broker::{Message, MessageRef, VHost};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue, ShortStr};

fn topic_routing(c: &mut Criterion) {
    let mut matcher = TopicMatcher::new();
    for n in 0..100_000u32 {
        let pattern = match n % 4 {
            0 => format!("a{}.*.c{}", n % 100, n / 100 % 1000),
            1 => format!("a{}.b{}.#", n % 100, n / 100 % 1000),
            2 => format!("*.b{}.c{}", n % 1000, n / 1000),
            _ => format!("#.c{}", n % 10_000),
        };
        matcher.bind(pattern.as_bytes(), n);
    }
    let keys: Vec<String> = (0..1000).map(|i| format!("a{}.b{}.c{}", i % 100, i * 7 % 1000, i * 13 % 1000)).collect();
    let mut out = Vec::new();
    let mut g = c.benchmark_group("topic");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("route, 100k bindings", |b| {
        b.iter(|| {
            let mut hits = 0;
            for k in &keys {
                out.clear();
                matcher.route(k.as_bytes(), &mut out);
                hits += out.len();
            }
            hits
        })
    });
    g.finish();
}

fn short(text: &str) -> ShortStr {
    ShortStr::try_from(text).expect("short string")
}

/// A vhost with 100 queues bound to each predeclared exchange type: amq.direct by key `k{i}`,
/// amq.fanout (4 queues), amq.topic by `*.b{i}` and `a{i}.#`, amq.headers by `h = i`.
fn bound_vhost() -> VHost {
    let vhost = VHost::new("/");
    let bind = |q: &ShortStr, x: &str, key: &str, args: &FieldTable| {
        vhost.bind(Destination::Queue(q.clone()), &short(x), &short(key), args, 1).expect("bind");
    };
    for i in 0..100 {
        let q = short(&format!("q{i}"));
        vhost.declare_queue(&QueueDeclare { name: q.clone(), ..Default::default() }, 1).expect("declare");
        let none = FieldTable::new();
        bind(&q, "amq.direct", &format!("k{i}"), &none);
        if i < 4 {
            bind(&q, "amq.fanout", "", &none);
        }
        bind(&q, "amq.topic", &format!("*.b{i}"), &none);
        bind(&q, "amq.topic", &format!("a{}.#", i % 10), &none);
        let mut args = FieldTable::new();
        args.insert(short("h"), FieldValue::I32(i));
        bind(&q, "amq.headers", "", &args);
    }
    vhost
}

/// Routing without the route cache or memo (`VHost::route`: the topology read lock, the
/// exchange's index, the queue lookups), 100 different keys per iteration.
fn vhost_routing(c: &mut Criterion) {
    let vhost = bound_vhost();
    let direct: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let topic: Vec<String> = (0..100).map(|i| format!("a{}.b{}", i % 10, i * 7 % 100)).collect();
    let mut headers = FieldTable::new();
    headers.insert(short("h"), FieldValue::I32(42));
    let mut out = Vec::new();
    let mut g = c.benchmark_group("vhost route");
    g.throughput(Throughput::Elements(100));
    let cases = [
        ("direct", &b"amq.direct"[..], &direct[..], None),
        ("fanout", b"amq.fanout", &direct, None),
        ("topic", b"amq.topic", &topic, None),
        ("headers", b"amq.headers", &direct, Some(&headers)),
    ];
    for (name, exchange, keys, headers) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut hits = 0;
                for k in keys {
                    out.clear();
                    vhost.route(exchange, &[k.as_bytes()], headers, &mut out).expect("route");
                    hits += out.len();
                }
                hits
            })
        });
    }
    g.finish();
}

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

fn message() -> MessageRef {
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, 16, &BasicProperties::default().to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("valid header");
    Arc::new(Message::new(b"", b"q", &header, Bytes::from_static(&[7u8; 16])))
}

fn queue_cycle(c: &mut Criterion) {
    const N: usize = 1000;
    let queue = Arc::new(Queue::new(
        ShortStr::from_static("q"),
        "/".into(),
        false,
        None,
        false,
        FieldTable::new(),
        QueueLimits::default(),
    ));
    let outlet = Arc::new(Outlet::new(Box::new(NoWake)));
    let consumer = ConsumerId(1);
    let spec = ConsumerSpec {
        id: consumer,
        outlet: outlet.clone(),
        ack_required: true,
        prefetch: 0,
        gate: Arc::new(ChannelGate::default()),
        priority: 0,
        exclusive: false,
    };
    queue.consume(spec).expect("consumer attaches");
    let msg = message();
    let mut drained = Vec::with_capacity(N);
    let mut seqs: Vec<u64> = Vec::with_capacity(N);
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("publish+assign+drain+settle", |b| {
        b.iter(|| {
            for _ in 0..N {
                queue.publish(msg.clone());
            }
            outlet.drain_into(&mut drained);
            seqs.clear();
            seqs.extend(drained.drain(..).filter_map(|d| match d {
                Outbound::Deliver(d) => Some(d.seq),
                _ => None,
            }));
            queue.ack(Some(consumer), seqs.iter().copied());
            seqs.len()
        })
    });
    g.finish();
}

criterion_group!(benches, topic_routing, vhost_routing, queue_cycle);
criterion_main!(benches);
