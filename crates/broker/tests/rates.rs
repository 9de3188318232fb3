//! Message rates on a broker with a manual clock: the sampler's timer fires every 5 s of the
//! broker's clock, and a rate is the change between the last two samples per second.

use std::sync::Arc;

use bytes::BytesMut;
use lepus_broker::rates::SAMPLE_INTERVAL_MS;
use lepus_broker::stats::Stat;
use lepus_broker::users::Users;
use lepus_broker::vhost::QueueDeclare;
use lepus_broker::{Broker, BrokerParts, ManualClock, Message, MessageHeaders, Publish, Wake};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, ShortStr};

struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

fn broker(clock: Arc<ManualClock>) -> Arc<Broker> {
    Arc::new(Broker::new(BrokerParts {
        vhosts: vec![lepus_broker::VHost::new("/")],
        users: Users::new(Vec::new()),
        access_control: Default::default(),
        clock,
        persistence: None,
        timer_wake: Box::new(NoWake),
    }))
}

fn publish(broker: &Broker, queue: &str, n: usize) {
    let mut publisher = broker.publisher(broker.vhost("/").expect("vhost"));
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, 1, &BasicProperties::default().to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("header");
    let headers = FieldTable::new();
    for _ in 0..n {
        let message = Arc::new(Message::new(b"", queue.as_bytes(), &header, b"x"));
        let p = Publish { message, extra_keys: &[], headers: MessageHeaders::Decoded(&headers) };
        assert!(publisher.publish(p).expect("publish").routed);
    }
}

#[test]
fn a_queue_s_publish_rate_is_sampled_every_five_seconds_of_the_broker_clock() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let broker = broker(clock.clone());
    let d = QueueDeclare { name: ShortStr::from_static("q"), ..Default::default() };
    let (queue, _, _) = broker.vhost("/").expect("vhost").declare_queue(&d, 1).expect("declare");
    broker.start_rate_sampling();
    publish(&broker, "q", 10);
    assert_eq!(queue.rates().get(Stat::Published), 0.0, "one sample: no rate yet");

    clock.advance(SAMPLE_INTERVAL_MS - 1);
    assert_eq!(broker.timers().fire_due(), 0, "not yet due");
    clock.advance(1);
    assert_eq!(broker.timers().fire_due(), 1);
    assert_eq!(queue.rates().get(Stat::Published), 2.0, "10 messages in 5 s");

    publish(&broker, "q", 50);
    assert!(queue.get(None).message().is_some());
    clock.advance(SAMPLE_INTERVAL_MS);
    assert_eq!(broker.timers().fire_due(), 1, "the sampler re-armed its timer");
    assert_eq!(queue.rates().get(Stat::Published), 10.0);
    assert_eq!(queue.rates().get(Stat::Get), 0.2);

    clock.advance(SAMPLE_INTERVAL_MS);
    broker.timers().fire_due();
    assert_eq!(queue.rates().get(Stat::Published), 0.0, "nothing published in the last 5 s");
}

#[test]
fn the_broker_s_rates_come_from_the_connection_registry_s_totals() {
    let clock = Arc::new(ManualClock::new(0));
    let broker = broker(clock.clone());
    broker.start_rate_sampling();
    let connections = broker.connections();
    let info = lepus_broker::connections::ConnectionInfo {
        id: connections.next_id(),
        peer: "127.0.0.1:5000".parse().expect("address"),
        protocol: "AMQP 0-9-1",
        user: "guest".into(),
        vhost: "/".into(),
        client_properties: FieldTable::new(),
        connected_at_ms: 0,
        channels: Default::default(),
        channel_list: Default::default(),
        stats: Default::default(),
        quorum_stats: Default::default(),
        sizes: Default::default(),
        io: Default::default(),
        closer: lepus_broker::connections::Closer::new(Box::new(NoWake)),
        alarm_blocked: Default::default(),
        negotiated: Default::default(),
    };
    let c = connections.register(info);
    c.stats.add(Stat::Acked, 25);
    clock.advance(SAMPLE_INTERVAL_MS);
    broker.timers().fire_due();
    assert_eq!(broker.rates().get(Stat::Acked), 5.0);
    connections.deregister(c.id);
    clock.advance(SAMPLE_INTERVAL_MS);
    broker.timers().fire_due();
    assert_eq!(broker.rates().get(Stat::Acked), 0.0, "a closed connection's counts stay in the totals");
}
