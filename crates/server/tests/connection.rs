//! The connection lifecycle over raw sockets: tune negotiation rules, heartbeats sent and
//! missed, authentication failures, handshake timeout, vhost checks and graceful shutdown.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::{amqp_err, guard, lconn};
use common::{Raw, start, start_with, test_config};
use lepus_protocol::constants::*;
use lepus_protocol::method::*;
use lepus_protocol::{FieldTable, FrameType, LongStr, Method, ShortStr};
use lepus_server::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_start_advertises_rabbitmq_capabilities() {
    let broker = start().await;
    let mut raw = Raw::connect(broker.addr).await;
    raw.send(&PROTOCOL_HEADER).await;
    let Some((0, Method::ConnectionStart(start))) = raw.next_method().await else { panic!("expected start") };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(start.mechanisms.as_str(), Some("PLAIN AMQPLAIN"));
    assert_eq!(start.locales.as_str(), Some("en_US"));
    let caps = start.server_properties.get("capabilities").and_then(|v| v.as_table()).expect("capabilities table");
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
        "connection.blocked",
    ] {
        assert_eq!(caps.get(cap).and_then(|v| v.as_bool()), Some(true), "capability {cap}");
    }
    assert_eq!(start.server_properties.get("product").and_then(|v| v.as_str()), Some("Lepus"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_outside_the_offered_limits_is_refused_with_530() {
    let broker = start().await;
    // (channel_max, frame_max): above the server's, below the minimum, zero ("unlimited").
    for (channel_max, frame_max) in [(2047, 131_073), (2047, 4095), (2047, 0), (2048, 131_072), (0, 131_072)] {
        let mut raw = Raw::start_and_tune(broker.addr, channel_max, frame_max, 0).await;
        let close = raw.expect_connection_close().await;
        assert_eq!(close.reply_code, NOT_ALLOWED, "channel_max {channel_max} frame_max {frame_max}");
        assert_eq!((close.class_id, close.method_id), (10, 31));
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_negotiated_limits_apply() {
    let broker = start().await;
    let mut raw = Raw::start_and_tune(broker.addr, 10, 4096, 0).await;
    raw.send_method(0, ConnectionOpen { virtual_host: ShortStr::from_static("/"), ..Default::default() }).await;
    assert!(matches!(raw.next_method().await, Some((0, Method::ConnectionOpenOk(_)))));
    // channel 10 is allowed, 11 is above the negotiated channel_max.
    raw.send_method(10, ChannelOpen::default()).await;
    assert!(matches!(raw.next_method().await, Some((10, Method::ChannelOpenOk(_)))));
    raw.send_method(11, ChannelOpen::default()).await;
    assert_eq!(raw.expect_connection_close().await.reply_code, NOT_ALLOWED);
    // A frame above the negotiated frame_max (4096 + RabbitMQ's 8-byte allowance).
    let mut raw = Raw::start_and_tune(broker.addr, 10, 4096, 0).await;
    raw.send_method(0, ConnectionOpen { virtual_host: ShortStr::from_static("/"), ..Default::default() }).await;
    assert!(matches!(raw.next_method().await, Some((0, Method::ConnectionOpenOk(_)))));
    let mut big = vec![FRAME_BODY, 0, 1];
    big.extend_from_slice(&4200u32.to_be_bytes());
    big.extend_from_slice(&[0; 4200]);
    big.push(FRAME_END);
    raw.send(&big).await;
    assert_eq!(raw.expect_connection_close().await.reply_code, FRAME_ERROR);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sends_heartbeats_when_idle() {
    let broker = start_with(Config { heartbeat_s: 1, ..test_config() }).await;
    let mut raw = Raw::start_and_tune(broker.addr, 2047, 131_072, 1).await;
    raw.send_method(0, ConnectionOpen { virtual_host: ShortStr::from_static("/"), ..Default::default() }).await;
    assert!(matches!(raw.next_method().await, Some((0, Method::ConnectionOpenOk(_)))));
    // Keep our side alive and wait for the broker's heartbeat frame.
    let frame = raw.next_frame().await.expect("a frame");
    assert_eq!((frame.frame_type, frame.channel), (FrameType::Heartbeat, 0));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_missed_heartbeats() {
    let broker = start_with(Config { heartbeat_s: 1, ..test_config() }).await;
    let mut raw = Raw::start_and_tune(broker.addr, 2047, 131_072, 1).await;
    raw.send_method(0, ConnectionOpen { virtual_host: ShortStr::from_static("/"), ..Default::default() }).await;
    assert!(matches!(raw.next_method().await, Some((0, Method::ConnectionOpenOk(_)))));
    // We never send a heartbeat: the broker closes the socket (heartbeats it sent are skipped).
    raw.expect_eof().await;
    broker.stop().await;
}

async fn start_ok(raw: &mut Raw, mechanism: &'static str, response: &str, announce_close: bool) {
    raw.send(&PROTOCOL_HEADER).await;
    let Some((0, Method::ConnectionStart(_))) = raw.next_method().await else { panic!("expected start") };
    let caps = FieldTable::new().with("authentication_failure_close", announce_close);
    raw.send_method(
        0,
        ConnectionStartOk {
            client_properties: FieldTable::new().with("capabilities", caps),
            mechanism: ShortStr::from_static(mechanism),
            response: LongStr::from(response),
            locale: ShortStr::from_static("en_US"),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_403_when_client_announces_authentication_failure_close() {
    let broker = start().await;
    let mut raw = Raw::connect(broker.addr).await;
    start_ok(&mut raw, "PLAIN", "\0guest\0wrong", true).await;
    let close = raw.expect_connection_close().await;
    assert_eq!(close.reply_code, ACCESS_REFUSED);
    assert!(close.reply_text.as_str().unwrap().contains("PLAIN"), "{:?}", close.reply_text);
    // Without the capability the socket is just closed, as RabbitMQ does.
    let mut raw = Raw::connect(broker.addr).await;
    start_ok(&mut raw, "PLAIN", "\0nobody\0x", false).await;
    raw.expect_eof().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mechanism_is_command_invalid() {
    let broker = start().await;
    let mut raw = Raw::connect(broker.addr).await;
    start_ok(&mut raw, "EXTERNAL", "", true).await;
    assert_eq!(raw.expect_connection_close().await.reply_code, COMMAND_INVALID);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_not_allowed() {
    let broker = start().await;
    let mut raw = Raw::start_and_tune(broker.addr, 2047, 131_072, 0).await;
    raw.send_method(0, ConnectionOpen { virtual_host: ShortStr::from_static("nope"), ..Default::default() }).await;
    let close = raw.expect_connection_close().await;
    assert_eq!(close.reply_code, NOT_ALLOWED);
    assert_eq!(close.reply_text.as_str(), Some("NOT_ALLOWED - vhost nope not found"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_must_finish_in_time() {
    let broker = start_with(Config { handshake_timeout_ms: 300, ..test_config() }).await;
    let mut raw = Raw::connect(broker.addr).await;
    raw.send(&PROTOCOL_HEADER).await;
    // connection.start arrives, then silence from us: the broker gives up and closes.
    raw.expect_eof().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_with_320() {
    let broker = start().await;
    let mut a = Raw::open_with_channel(broker.addr).await;
    let mut b = Raw::open(broker.addr).await;
    broker.shutdown();
    for raw in [&mut a, &mut b] {
        let close = raw.expect_connection_close().await;
        assert_eq!(close.reply_code, CONNECTION_FORCED);
        raw.expect_eof().await;
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_can_close_one_connection_with_320() {
    let broker = start().await;
    let mut a = Raw::open_with_channel(broker.addr).await;
    let mut b = Raw::open(broker.addr).await;
    let registry = broker.service.connections();
    let ids: Vec<u64> = registry.list().iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(registry.close(ids[0], "Closed via management plugin"));
    let close = a.expect_connection_close().await;
    assert_eq!(close.reply_code, CONNECTION_FORCED);
    assert_eq!(close.reply_text.as_str(), Some("CONNECTION_FORCED - Closed via management plugin"));
    a.expect_eof().await;
    // The other connection is untouched.
    b.send_method(
        0,
        ConnectionClose { reply_code: 200, reply_text: ShortStr::from_static("bye"), class_id: 0, method_id: 0 },
    )
    .await;
    assert!(matches!(b.next_method().await, Some((0, Method::ConnectionCloseOk(_)))));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_secret_is_acknowledged() {
    let broker = start().await;
    let mut raw = Raw::open(broker.addr).await;
    raw.send_method(0, ConnectionUpdateSecret { new_secret: LongStr::from("x"), reason: ShortStr::from_static("r") })
        .await;
    assert!(matches!(raw.next_method().await, Some((0, Method::ConnectionUpdateSecretOk(_)))));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_handshake_in_one_write() {
    // Some clients send start-ok, tune-ok and open without waiting: all in one segment here.
    use bytes::BytesMut;
    use lepus_protocol::frame::write_method;
    let broker = start().await;
    let mut raw = Raw::connect(broker.addr).await;
    let mut out = BytesMut::from(&PROTOCOL_HEADER[..]);
    let start_ok = ConnectionStartOk {
        mechanism: ShortStr::from_static("PLAIN"),
        response: LongStr::from("\0guest\0guest"),
        ..Default::default()
    };
    write_method(&mut out, 0, &start_ok.into());
    write_method(&mut out, 0, &ConnectionTuneOk { channel_max: 100, frame_max: 65536, heartbeat: 0 }.into());
    write_method(
        &mut out,
        0,
        &ConnectionOpen { virtual_host: ShortStr::from_static("/"), ..Default::default() }.into(),
    );
    write_method(&mut out, 1, &ChannelOpen::default().into());
    raw.send(&out).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (ch, m) = raw.next_method().await.expect("reply");
        seen.push((ch, m.name()));
    }
    assert_eq!(
        seen,
        [(0, "connection.start"), (0, "connection.tune"), (0, "connection.open-ok"), (1, "channel.open-ok")]
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_max_refuses_connection_open_with_530_and_counts_only_open_connections() {
    let config = lepus_server::Config { connection_max: 2, handshake_max: 1, ..common::test_config() };
    let broker = common::start_with(config).await;
    // The handshake pool holds one socket, but open connections leave it: both get in.
    let first = lconn(&broker).await;
    let second = lconn(&broker).await;
    let refused = guard("connect", lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default()))
        .await
        .expect_err("over connection_max");
    assert_eq!(
        amqp_err(&refused),
        (530, "NOT_ALLOWED - connection refused: node connection limit (2) is reached".to_owned())
    );
    assert!(first.status().connected() && second.status().connected(), "the open ones are untouched");
    assert_eq!(broker.service.connections().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_past_its_failed_logins_is_refused_even_with_the_right_password() {
    let config = Config { login_failures_per_minute: 2, login_failure_delay_ms: 0, ..test_config() };
    let broker = start_with(config).await;
    let wrong = broker.url().replace("guest:guest", "guest:wrong");
    for _ in 0..2 {
        guard("connect", lapin::Connection::connect(&wrong, lapin::ConnectionProperties::default()))
            .await
            .expect_err("wrong password");
    }
    guard("connect", lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default()))
        .await
        .expect_err("refused unchecked for the rest of the minute");
    assert_eq!(broker.service.connections().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_share_of_the_handshake_pool_is_closed_at_once_while_others_get_in() {
    let config = Config { handshake_max_per_source: 2, protocol_header_timeout_ms: 600_000, ..test_config() };
    let broker = start_with(config).await;
    // Two silent sockets from 127.0.0.1 hold its share (accepted in order, before the third).
    let _silent = [Raw::connect(broker.addr).await, Raw::connect(broker.addr).await];
    let mut third = Raw::connect(broker.addr).await;
    third.expect_eof().await;
    // Another source address (all of 127/8 is loopback) still has its share.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 2], 0).into()).expect("bind 127.0.0.2");
    let mut other = Raw::over(guard("connect", socket.connect(broker.addr)).await.expect("connect"));
    other.send(&PROTOCOL_HEADER).await;
    let Some((0, Method::ConnectionStart(_))) = other.next_method().await else { panic!("expected start") };
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_without_a_protocol_header_is_closed_at_the_header_timeout() {
    let config = Config { protocol_header_timeout_ms: 500, handshake_timeout_ms: 600_000, ..test_config() };
    let broker = start_with(config).await;
    let mut silent = Raw::connect(broker.addr).await;
    let mut speaking = Raw::connect(broker.addr).await;
    start_ok(&mut speaking, "PLAIN", "\0guest\0guest", true).await;
    silent.expect_eof().await;
    // The one that sent its header has the handshake's time: it is still served.
    let Some((0, Method::ConnectionTune(_))) = speaking.next_method().await else { panic!("expected tune") };
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_rate_limit_are_accepted_as_the_broker_clock_moves() {
    let clock = std::sync::Arc::new(lepus_broker::ManualClock::new(1_000_000));
    let config = Config { connection_rate_max: 2, ..test_config() };
    let broker = common::start_with_clock(config, clock.clone()).await;
    let mut served = Vec::new();
    for _ in 0..2 {
        let mut raw = Raw::connect(broker.addr).await;
        raw.send(&PROTOCOL_HEADER).await;
        let Some((0, Method::ConnectionStart(_))) = raw.next_method().await else { panic!("expected start") };
        served.push(raw);
    }
    // The burst is spent: the third waits in the listen backlog until a token is due, half a
    // second later on the broker's clock.
    let mut third = Raw::connect(broker.addr).await;
    third.send(&PROTOCOL_HEADER).await;
    clock.advance(500);
    let Some((0, Method::ConnectionStart(_))) = third.next_method().await else { panic!("expected start") };
    drop((served, third));
    broker.stop().await;
}
