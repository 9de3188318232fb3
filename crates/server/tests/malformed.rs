//! Malformed and out-of-order input over raw sockets: each case gets the reply code and
//! scope RabbitMQ uses (checked against RabbitMQ 3.10 where it answers at all), and the
//! broker keeps serving other connections afterwards.

mod common;

use bytes::{BufMut, BytesMut};
use common::{Raw, start};
use lepus_protocol::constants::*;
use lepus_protocol::frame::write_method;
use lepus_protocol::method::*;
use lepus_protocol::{Method, ShortStr};

fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![frame_type];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(FRAME_END);
    f
}

fn method_frame(channel: u16, class_id: u16, method_id: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class_id.to_be_bytes().to_vec();
    p.extend_from_slice(&method_id.to_be_bytes());
    p.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &p)
}

fn encoded(channel: u16, m: impl Into<Method>) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_method(&mut out, channel, &m.into());
    out.to_vec()
}

/// A table nested `depth` levels deep: `{a: {a: {...}}}`.
fn nested_table(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut t = vec![1, b'a', b'F'];
        t.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        t.extend_from_slice(&inner);
        inner = t;
    }
    let mut out = (inner.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&inner);
    out
}

fn queue_declare_with_args(args_table: &[u8]) -> Vec<u8> {
    let mut a = vec![0, 0, 1, b'q', 0];
    a.extend_from_slice(args_table);
    method_frame(1, 50, 10, &a)
}

fn content_header(channel: u16, class_id: u16, body_size: u64) -> Vec<u8> {
    let mut p = BytesMut::new();
    p.put_u16(class_id);
    p.put_u16(0);
    p.put_u64(body_size);
    p.put_u16(0);
    frame(FRAME_HEADER, channel, &p)
}

struct Case {
    name: &'static str,
    /// Whether channel 1 is opened before `input` is sent.
    open_channel: bool,
    input: Vec<u8>,
    /// Expected `connection.close` reply code and (class, method) ids.
    code: u16,
    ids: (u16, u16),
}

fn cases() -> Vec<Case> {
    let case = |name, open_channel, input, code, ids| Case { name, open_channel, input, code, ids };
    vec![
        case(
            "oversized frame",
            true,
            {
                let mut f = vec![FRAME_METHOD, 0, 1];
                f.extend_from_slice(&10_000_000u32.to_be_bytes());
                f.extend_from_slice(&[0; 64]);
                f
            },
            FRAME_ERROR,
            (0, 0),
        ),
        case(
            "wrong end octet",
            true,
            {
                let mut f = encoded(1, ChannelFlow { active: true });
                *f.last_mut().unwrap() = 0;
                f
            },
            FRAME_ERROR,
            (0, 0),
        ),
        case("unknown frame type", true, frame(9, 1, &[]), FRAME_ERROR, (0, 0)),
        case("unknown method", true, method_frame(1, 60, 99, &[]), NOT_IMPLEMENTED, (60, 99)),
        case("unknown class", true, method_frame(1, 99, 10, &[]), NOT_IMPLEMENTED, (99, 10)),
        case("truncated arguments", true, method_frame(1, 50, 10, &[0, 0, 5, b'a', b'b']), FRAME_ERROR, (50, 10)),
        case("trailing bytes", true, method_frame(1, 20, 20, &[1, 0, 0]), FRAME_ERROR, (20, 20)),
        case("1,500-deep nested table", true, queue_declare_with_args(&nested_table(1500)), FRAME_ERROR, (50, 10)),
        case("unknown field type", true, queue_declare_with_args(&[0, 0, 0, 3, 1, b'a', b'Z']), FRAME_ERROR, (50, 10)),
        case("table length overruns frame", true, queue_declare_with_args(&[0, 0, 0xff, 0xff]), FRAME_ERROR, (50, 10)),
        case("method on unopened channel", false, encoded(5, QueueDeclare::default()), CHANNEL_ERROR, (50, 10)),
        case("content on unopened channel", false, frame(FRAME_BODY, 5, b"abc"), CHANNEL_ERROR, (0, 0)),
        case("second channel.open", true, encoded(1, ChannelOpen::default()), CHANNEL_ERROR, (20, 10)),
        case("channel above channel_max", false, encoded(3000, ChannelOpen::default()), NOT_ALLOWED, (20, 10)),
        case("heartbeat on a channel", true, frame(FRAME_HEARTBEAT, 1, &[]), UNEXPECTED_FRAME, (0, 0)),
        case("heartbeat with a payload", true, frame(FRAME_HEARTBEAT, 0, b"beat"), FRAME_ERROR, (0, 0)),
        case("content header on channel 0", false, content_header(0, 60, 0), UNEXPECTED_FRAME, (0, 0)),
        case("body without publish", true, frame(FRAME_BODY, 1, b"abc"), UNEXPECTED_FRAME, (0, 0)),
        case("header without publish", true, content_header(1, 60, 3), UNEXPECTED_FRAME, (0, 0)),
        case("connection method on a channel", true, encoded(1, ConnectionTune::default()), COMMAND_INVALID, (10, 30)),
        case("channel method on channel 0", false, encoded(0, ChannelOpen::default()), CHANNEL_ERROR, (20, 10)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_the_right_connection_error() {
    let broker = start().await;
    let mut failures = Vec::new();
    for case in cases() {
        let mut raw =
            if case.open_channel { Raw::open_with_channel(broker.addr).await } else { Raw::open(broker.addr).await };
        raw.send(&case.input).await;
        let close = raw.expect_connection_close().await;
        let got = (close.reply_code, (close.class_id, close.method_id));
        if got != (case.code, case.ids) {
            failures.push(format!(
                "{}: expected {} {:?}, got {:?} {}",
                case.name, case.code, case.ids, got, close.reply_text
            ));
        }
        let name = reply_code_name(case.code);
        if !close.reply_text.as_str().unwrap_or("").starts_with(name) {
            failures.push(format!("{}: reply text {:?} does not start with {name}", case.name, close.reply_text));
        }
        raw.expect_eof().await;
        // The broker still serves a fresh connection after every case.
        let mut other = Raw::open_with_channel(broker.addr).await;
        other.send_method(1, ChannelClose::default()).await;
        assert!(matches!(other.next_method().await, Some((1, Method::ChannelCloseOk(_)))), "{}", case.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protocol_header_gets_ours_back_and_a_close() {
    let broker = start().await;
    for header in [&b"HTTP/1.1"[..], b"AMQP\x00\x00\x08\x00", b"AMQP\x01\x01\x00\x0a", b"GET / HT"] {
        let mut raw = Raw::connect(broker.addr).await;
        raw.send(header).await;
        assert_eq!(raw.read_bytes(8).await, PROTOCOL_HEADER, "reply to {header:?}");
        assert!(raw.read_bytes(1).await.is_empty(), "socket closed after {header:?}");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_0_9_header_is_accepted_as_0_9_1() {
    let broker = start().await;
    let mut raw = Raw::connect(broker.addr).await;
    raw.send(b"AMQP\x01\x01\x00\x09").await;
    let Some((0, Method::ConnectionStart(start))) = raw.next_method().await else {
        panic!("expected connection.start")
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frames_wait_for_the_rest() {
    let broker = start().await;
    let mut raw = Raw::open(broker.addr).await;
    let open = encoded(1, ChannelOpen::default());
    // Byte by byte: the broker must assemble the frame, not misparse a prefix.
    for b in &open {
        raw.send(&[*b]).await;
    }
    assert!(matches!(raw.next_method().await, Some((1, Method::ChannelOpenOk(_)))));
    // A truncated frame followed by a disconnect ends the connection quietly.
    raw.send(&open[..5]).await;
    drop(raw);
    let mut other = Raw::open_with_channel(broker.addr).await;
    other
        .send_method(
            0,
            ConnectionClose { reply_code: 200, reply_text: ShortStr::from_static("bye"), ..Default::default() },
        )
        .await;
    assert!(matches!(other.next_method().await, Some((0, Method::ConnectionCloseOk(_)))));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_number_is_reusable_after_close_and_flow_is_acknowledged_or_refused() {
    let broker = start().await;
    let mut raw = Raw::open_with_channel(broker.addr).await;
    // Client closes channel 1; broker answers close-ok; the channel number is free again.
    raw.send_method(1, ChannelClose::default()).await;
    assert!(matches!(raw.next_method().await, Some((1, Method::ChannelCloseOk(_)))));
    raw.send_method(1, ChannelOpen::default()).await;
    assert!(matches!(raw.next_method().await, Some((1, Method::ChannelOpenOk(_)))));
    raw.send_method(1, ChannelFlow { active: true }).await;
    assert!(matches!(raw.next_method().await, Some((1, Method::ChannelFlowOk(ChannelFlowOk { active: true })))));
    // Stopping deliveries is refused with a connection error, as by RabbitMQ 3.x.
    raw.send_method(1, ChannelFlow { active: false }).await;
    let close = raw.expect_connection_close().await;
    assert_eq!((close.reply_code, close.class_id, close.method_id), (NOT_IMPLEMENTED, 20, 20));
    assert_eq!(close.reply_text.as_str(), Some("NOT_IMPLEMENTED - active=false"));
    broker.stop().await;
}
