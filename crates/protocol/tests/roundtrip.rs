//! Round trips through our own encoder and decoder: every method, exact bit packing, content
//! headers with all 14 properties, and field tables with every field type.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use lepus_protocol::constants::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use lepus_protocol::content::{
    FLAG_APP_ID, FLAG_CLUSTER_ID, FLAG_CONTENT_ENCODING, FLAG_CONTENT_TYPE, FLAG_CORRELATION_ID, FLAG_DELIVERY_MODE,
    FLAG_EXPIRATION, FLAG_HEADERS, FLAG_MESSAGE_ID, FLAG_PRIORITY, FLAG_REPLY_TO, FLAG_TIMESTAMP, FLAG_TYPE,
    FLAG_USER_ID, peek_body_size,
};
use lepus_protocol::frame::{write_body, write_content_header, write_heartbeat, write_method};
use lepus_protocol::method::*;
use lepus_protocol::{
    BasicProperties, ContentHeader, FieldTable, FieldValue, Frame, FrameType, LongStr, ShortStr, parse_frame,
};

const FRAME_MAX: u32 = 131_072;

fn ss(s: &str) -> ShortStr {
    ShortStr::try_from(s).expect("short string")
}

fn ls(s: &str) -> LongStr {
    LongStr::from(s)
}

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

/// A table holding one value of every field type, nested tables and arrays included.
fn every_type_table() -> FieldTable {
    let inner = FieldTable(vec![
        (ss("deep"), FieldValue::Table(FieldTable(vec![(ss("deeper"), FieldValue::I64(-42))]))),
        (ss("arr"), FieldValue::Array(vec![FieldValue::Void, FieldValue::Bool(false), FieldValue::U8(7)])),
    ]);
    FieldTable(vec![
        (ss("t"), FieldValue::Bool(true)),
        (ss("b"), FieldValue::I8(-128)),
        (ss("B"), FieldValue::U8(255)),
        (ss("s"), FieldValue::I16(-2)),
        (ss("u"), FieldValue::U16(65_535)),
        (ss("I"), FieldValue::I32(i32::MIN)),
        (ss("i"), FieldValue::U32(u32::MAX)),
        (ss("l"), FieldValue::I64(i64::MIN + 1)),
        (ss("f"), FieldValue::F32(-1.5)),
        (ss("d"), FieldValue::F64(std::f64::consts::PI)),
        (ss("D"), FieldValue::Decimal { scale: 3, value: 123_456 }),
        (ss("S"), FieldValue::LongStr(b(b"long \x00\xff string"))),
        (
            ss("A"),
            FieldValue::Array(vec![
                FieldValue::I32(1),
                FieldValue::LongStr(b(b"two")),
                FieldValue::Array(vec![FieldValue::Array(vec![])]),
                FieldValue::Table(inner.clone()),
            ]),
        ),
        (ss("T"), FieldValue::Timestamp(1_700_000_000)),
        (ss("F"), FieldValue::Table(inner)),
        (ss("F-empty"), FieldValue::Table(FieldTable::new())),
        (ss("V"), FieldValue::Void),
        (ss("x"), FieldValue::Bytes(b(&[0, 1, 2, 0xfe, 0xff]))),
        // Duplicate keys are kept, in order.
        (ss("t"), FieldValue::Bool(false)),
        (ss(""), FieldValue::U16(1)),
    ])
}

fn small_table() -> FieldTable {
    FieldTable::new().with("x-max-length", 10i64).with("x-queue-type", "quorum").with("x-single-active-consumer", true)
}

/// One instance of every method, with non-default values and varied bit patterns.
fn all_methods() -> Vec<Method> {
    vec![
        ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: every_type_table(),
            mechanisms: ls("PLAIN AMQPLAIN"),
            locales: ls("en_US"),
        }
        .into(),
        ConnectionStartOk {
            client_properties: small_table(),
            mechanism: ss("PLAIN"),
            response: LongStr(b(b"\0guest\0guest")),
            locale: ss("en_US"),
        }
        .into(),
        ConnectionSecure { challenge: ls("challenge") }.into(),
        ConnectionSecureOk { response: ls("response") }.into(),
        ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 }.into(),
        ConnectionTuneOk { channel_max: 1, frame_max: 4096, heartbeat: 0 }.into(),
        ConnectionOpen { virtual_host: ss("/"), capabilities: ss("caps"), insist: true }.into(),
        ConnectionOpenOk { known_hosts: ss("host:5672") }.into(),
        ConnectionClose { reply_code: 320, reply_text: ss("CONNECTION_FORCED - bye"), class_id: 10, method_id: 40 }
            .into(),
        ConnectionCloseOk {}.into(),
        ConnectionBlocked { reason: ss("low on memory") }.into(),
        ConnectionUnblocked {}.into(),
        ConnectionUpdateSecret { new_secret: ls("secret"), reason: ss("rotation") }.into(),
        ConnectionUpdateSecretOk {}.into(),
        ChannelOpen { out_of_band: ss("oob") }.into(),
        ChannelOpenOk { channel_id: ls("chan") }.into(),
        ChannelFlow { active: true }.into(),
        ChannelFlowOk { active: false }.into(),
        ChannelClose { reply_code: 404, reply_text: ss("NOT_FOUND - no queue 'q'"), class_id: 50, method_id: 10 }
            .into(),
        ChannelCloseOk {}.into(),
        ExchangeDeclare {
            ticket: 7,
            exchange: ss("ex"),
            kind: ss("topic"),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: true,
            no_wait: true,
            arguments: small_table(),
        }
        .into(),
        ExchangeDeclareOk {}.into(),
        ExchangeDelete { ticket: 1, exchange: ss("ex"), if_unused: true, no_wait: false }.into(),
        ExchangeDeleteOk {}.into(),
        ExchangeBind {
            ticket: 2,
            destination: ss("dst"),
            source: ss("src"),
            routing_key: ss("a.*.b"),
            no_wait: true,
            arguments: every_type_table(),
        }
        .into(),
        ExchangeBindOk {}.into(),
        ExchangeUnbind {
            ticket: 3,
            destination: ss("dst"),
            source: ss("src"),
            routing_key: ss("#"),
            no_wait: false,
            arguments: small_table(),
        }
        .into(),
        ExchangeUnbindOk {}.into(),
        QueueDeclare {
            ticket: 0,
            queue: ss("q1"),
            passive: true,
            durable: false,
            exclusive: true,
            auto_delete: false,
            no_wait: true,
            arguments: small_table(),
        }
        .into(),
        QueueDeclareOk { queue: ss("amq.gen-xyz"), message_count: 12, consumer_count: 3 }.into(),
        QueueBind {
            ticket: 0,
            queue: ss("q"),
            exchange: ss("amq.topic"),
            routing_key: ss("k"),
            no_wait: true,
            arguments: every_type_table(),
        }
        .into(),
        QueueBindOk {}.into(),
        QueuePurge { ticket: 9, queue: ss("q"), no_wait: true }.into(),
        QueuePurgeOk { message_count: u32::MAX }.into(),
        QueueDelete { ticket: 0, queue: ss("q"), if_unused: false, if_empty: true, no_wait: true }.into(),
        QueueDeleteOk { message_count: 5 }.into(),
        QueueUnbind { ticket: 4, queue: ss("q"), exchange: ss("ex"), routing_key: ss("rk"), arguments: small_table() }
            .into(),
        QueueUnbindOk {}.into(),
        BasicQos { prefetch_size: 0, prefetch_count: 250, global: true }.into(),
        BasicQosOk {}.into(),
        BasicConsume {
            ticket: 0,
            queue: ss("q"),
            consumer_tag: ss("ctag-1"),
            no_local: false,
            no_ack: true,
            exclusive: false,
            no_wait: true,
            arguments: small_table(),
        }
        .into(),
        BasicConsumeOk { consumer_tag: ss("ctag-1") }.into(),
        BasicCancel { consumer_tag: ss("ctag-1"), no_wait: true }.into(),
        BasicCancelOk { consumer_tag: ss("ctag-1") }.into(),
        BasicPublish {
            ticket: 0,
            exchange: ss("amq.direct"),
            routing_key: ss("rk"),
            mandatory: true,
            immediate: false,
        }
        .into(),
        BasicReturn { reply_code: 312, reply_text: ss("NO_ROUTE"), exchange: ss("ex"), routing_key: ss("rk") }.into(),
        BasicDeliver {
            consumer_tag: ss("ctag"),
            delivery_tag: u64::MAX - 1,
            redelivered: true,
            exchange: ss(""),
            routing_key: ss("q"),
        }
        .into(),
        BasicGet { ticket: 0, queue: ss("q"), no_ack: true }.into(),
        BasicGetOk {
            delivery_tag: 99,
            redelivered: false,
            exchange: ss("ex"),
            routing_key: ss("rk"),
            message_count: 7,
        }
        .into(),
        BasicGetEmpty { cluster_id: ss("") }.into(),
        BasicAck { delivery_tag: 1 << 40, multiple: true }.into(),
        BasicReject { delivery_tag: 3, requeue: true }.into(),
        BasicRecoverAsync { requeue: true }.into(),
        BasicRecover { requeue: false }.into(),
        BasicRecoverOk {}.into(),
        BasicNack { delivery_tag: 17, multiple: false, requeue: true }.into(),
        ConfirmSelect { no_wait: true }.into(),
        ConfirmSelectOk {}.into(),
        TxSelect {}.into(),
        TxSelectOk {}.into(),
        TxCommit {}.into(),
        TxCommitOk {}.into(),
        TxRollback {}.into(),
        TxRollbackOk {}.into(),
    ]
}

/// Exhaustive over the enum: adding a variant without a test instance fails to compile.
fn variant_name(m: &Method) -> &'static str {
    match m {
        Method::ConnectionStart(_) => "ConnectionStart",
        Method::ConnectionStartOk(_) => "ConnectionStartOk",
        Method::ConnectionSecure(_) => "ConnectionSecure",
        Method::ConnectionSecureOk(_) => "ConnectionSecureOk",
        Method::ConnectionTune(_) => "ConnectionTune",
        Method::ConnectionTuneOk(_) => "ConnectionTuneOk",
        Method::ConnectionOpen(_) => "ConnectionOpen",
        Method::ConnectionOpenOk(_) => "ConnectionOpenOk",
        Method::ConnectionClose(_) => "ConnectionClose",
        Method::ConnectionCloseOk(_) => "ConnectionCloseOk",
        Method::ConnectionBlocked(_) => "ConnectionBlocked",
        Method::ConnectionUnblocked(_) => "ConnectionUnblocked",
        Method::ConnectionUpdateSecret(_) => "ConnectionUpdateSecret",
        Method::ConnectionUpdateSecretOk(_) => "ConnectionUpdateSecretOk",
        Method::ChannelOpen(_) => "ChannelOpen",
        Method::ChannelOpenOk(_) => "ChannelOpenOk",
        Method::ChannelFlow(_) => "ChannelFlow",
        Method::ChannelFlowOk(_) => "ChannelFlowOk",
        Method::ChannelClose(_) => "ChannelClose",
        Method::ChannelCloseOk(_) => "ChannelCloseOk",
        Method::ExchangeDeclare(_) => "ExchangeDeclare",
        Method::ExchangeDeclareOk(_) => "ExchangeDeclareOk",
        Method::ExchangeDelete(_) => "ExchangeDelete",
        Method::ExchangeDeleteOk(_) => "ExchangeDeleteOk",
        Method::ExchangeBind(_) => "ExchangeBind",
        Method::ExchangeBindOk(_) => "ExchangeBindOk",
        Method::ExchangeUnbind(_) => "ExchangeUnbind",
        Method::ExchangeUnbindOk(_) => "ExchangeUnbindOk",
        Method::QueueDeclare(_) => "QueueDeclare",
        Method::QueueDeclareOk(_) => "QueueDeclareOk",
        Method::QueueBind(_) => "QueueBind",
        Method::QueueBindOk(_) => "QueueBindOk",
        Method::QueuePurge(_) => "QueuePurge",
        Method::QueuePurgeOk(_) => "QueuePurgeOk",
        Method::QueueDelete(_) => "QueueDelete",
        Method::QueueDeleteOk(_) => "QueueDeleteOk",
        Method::QueueUnbind(_) => "QueueUnbind",
        Method::QueueUnbindOk(_) => "QueueUnbindOk",
        Method::BasicQos(_) => "BasicQos",
        Method::BasicQosOk(_) => "BasicQosOk",
        Method::BasicConsume(_) => "BasicConsume",
        Method::BasicConsumeOk(_) => "BasicConsumeOk",
        Method::BasicCancel(_) => "BasicCancel",
        Method::BasicCancelOk(_) => "BasicCancelOk",
        Method::BasicPublish(_) => "BasicPublish",
        Method::BasicReturn(_) => "BasicReturn",
        Method::BasicDeliver(_) => "BasicDeliver",
        Method::BasicGet(_) => "BasicGet",
        Method::BasicGetOk(_) => "BasicGetOk",
        Method::BasicGetEmpty(_) => "BasicGetEmpty",
        Method::BasicAck(_) => "BasicAck",
        Method::BasicReject(_) => "BasicReject",
        Method::BasicRecoverAsync(_) => "BasicRecoverAsync",
        Method::BasicRecover(_) => "BasicRecover",
        Method::BasicRecoverOk(_) => "BasicRecoverOk",
        Method::BasicNack(_) => "BasicNack",
        Method::ConfirmSelect(_) => "ConfirmSelect",
        Method::ConfirmSelectOk(_) => "ConfirmSelectOk",
        Method::TxSelect(_) => "TxSelect",
        Method::TxSelectOk(_) => "TxSelectOk",
        Method::TxCommit(_) => "TxCommit",
        Method::TxCommitOk(_) => "TxCommitOk",
        Method::TxRollback(_) => "TxRollback",
        Method::TxRollbackOk(_) => "TxRollbackOk",
    }
}

const VARIANT_COUNT: usize = 64;

/// Encodes one method frame and parses it back, asserting the frame is whole and alone.
fn method_roundtrip(channel: u16, m: &Method) -> (Frame, Method) {
    let mut out = BytesMut::new();
    write_method(&mut out, channel, m);
    let encoded_len = out.len();
    let frame = parse_frame(&mut out, FRAME_MAX).expect("frame parses").expect("frame complete");
    assert!(out.is_empty(), "{}: parse_frame left {} bytes", m.name(), out.len());
    assert_eq!(frame.frame_type, FrameType::Method);
    assert_eq!(frame.channel, channel);
    assert_eq!(frame.payload.len() + 8, encoded_len);
    let decoded = Method::decode(frame.payload.clone()).unwrap_or_else(|e| panic!("{}: {e}", m.name()));
    (frame, decoded)
}

/// The method payload as encoded (class id, method id, arguments).
fn payload(m: &Method) -> Vec<u8> {
    let mut out = BytesMut::new();
    m.encode_payload(&mut out);
    out.to_vec()
}

#[test]
fn every_method_variant_round_trips() {
    let methods = all_methods();
    let names: BTreeSet<&str> = methods.iter().map(variant_name).collect();
    assert_eq!(names.len(), VARIANT_COUNT, "a variant is missing or listed twice");
    assert_eq!(methods.len(), VARIANT_COUNT);
    for (i, m) in methods.iter().enumerate() {
        let channel = (i as u16).wrapping_mul(997);
        let (frame, decoded) = method_roundtrip(channel, m);
        assert_eq!(&decoded, m, "{} did not round trip", m.name());
        assert_eq!(decoded.ids(), m.ids());
        let (class_id, method_id) = m.ids();
        assert_eq!(
            frame.payload[..4],
            [(class_id >> 8) as u8, class_id as u8, (method_id >> 8) as u8, method_id as u8]
        );
        assert_eq!(Method::name_of(class_id, method_id), Some(m.name()));
    }
}

#[test]
fn default_instances_round_trip_too() {
    // All-default fields (empty strings, zero numbers, all bits clear, empty tables).
    for m in all_methods() {
        let blank = match &m {
            Method::QueueDeclare(_) => QueueDeclare::default().into(),
            Method::BasicConsume(_) => BasicConsume::default().into(),
            Method::ExchangeDeclare(_) => ExchangeDeclare::default().into(),
            Method::ConnectionStart(_) => ConnectionStart::default().into(),
            Method::BasicDeliver(_) => BasicDeliver::default().into(),
            Method::BasicNack(_) => BasicNack::default().into(),
            other => other.clone(),
        };
        let (_, decoded) = method_roundtrip(0, &blank);
        assert_eq!(decoded, blank);
    }
}

#[test]
fn method_names_and_ids_match_the_spec() {
    let expected: &[(u16, u16, &str)] = &[
        (10, 10, "connection.start"),
        (10, 11, "connection.start-ok"),
        (10, 30, "connection.tune"),
        (10, 40, "connection.open"),
        (10, 50, "connection.close"),
        (10, 60, "connection.blocked"),
        (10, 70, "connection.update-secret"),
        (20, 10, "channel.open"),
        (20, 40, "channel.close"),
        (40, 10, "exchange.declare"),
        (40, 30, "exchange.bind"),
        (40, 40, "exchange.unbind"),
        (40, 51, "exchange.unbind-ok"),
        (50, 10, "queue.declare"),
        (50, 50, "queue.unbind"),
        (50, 51, "queue.unbind-ok"),
        (60, 40, "basic.publish"),
        (60, 60, "basic.deliver"),
        (60, 72, "basic.get-empty"),
        (60, 100, "basic.recover-async"),
        (60, 120, "basic.nack"),
        (85, 10, "confirm.select"),
        (90, 31, "tx.rollback-ok"),
    ];
    for &(class_id, method_id, name) in expected {
        assert_eq!(Method::name_of(class_id, method_id), Some(name));
    }
    assert_eq!(Method::name_of(30, 10), None, "access.request is not supported");
    assert_eq!(Method::name_of(40, 41), None);
    assert_eq!(QueueDeclare::ID, (50 << 16) | 10);
    let content: Vec<&str> = all_methods().iter().filter(|m| m.carries_content()).map(|m| m.name()).collect();
    assert_eq!(content, ["basic.publish", "basic.return", "basic.deliver", "basic.get-ok"]);
}

/// The octet holding `queue.declare`'s five bits: bit 0 = passive (the first bit field).
fn queue_declare_bits(passive: bool, durable: bool, exclusive: bool, auto_delete: bool, no_wait: bool) -> u8 {
    let m: Method = QueueDeclare {
        ticket: 0x0102,
        queue: ss("q"),
        passive,
        durable,
        exclusive,
        auto_delete,
        no_wait,
        arguments: FieldTable::new(),
    }
    .into();
    let p = payload(&m);
    // class(2) method(2) ticket(2) queue(1+1) bits(1) table(4)
    assert_eq!(p.len(), 13);
    assert_eq!(&p[..8], &[0, 50, 0, 10, 1, 2, 1, b'q']);
    assert_eq!(&p[9..], &[0, 0, 0, 0]);
    let (_, decoded) = method_roundtrip(1, &m);
    assert_eq!(decoded, m);
    p[8]
}

#[test]
fn queue_declare_bit_packing() {
    assert_eq!(queue_declare_bits(false, false, false, false, false), 0b00000);
    assert_eq!(queue_declare_bits(true, false, false, false, false), 0b00001);
    assert_eq!(queue_declare_bits(false, true, false, false, false), 0b00010);
    assert_eq!(queue_declare_bits(false, false, true, false, false), 0b00100);
    assert_eq!(queue_declare_bits(false, false, false, true, false), 0b01000);
    assert_eq!(queue_declare_bits(false, false, false, false, true), 0b10000);
    assert_eq!(queue_declare_bits(true, false, true, false, true), 0b10101);
    assert_eq!(queue_declare_bits(false, true, false, true, false), 0b01010);
    assert_eq!(queue_declare_bits(false, true, true, false, false), 0b00110);
    assert_eq!(queue_declare_bits(true, true, true, true, true), 0b11111);
    // Exhaustive: the octet is exactly the bits in declaration order.
    for n in 0u8..32 {
        let bit = |i: u8| n & (1 << i) != 0;
        assert_eq!(queue_declare_bits(bit(0), bit(1), bit(2), bit(3), bit(4)), n);
    }
}

#[test]
fn queue_declare_decodes_hand_made_bits() {
    // durable + auto_delete, with reserved high bits clear; arguments empty.
    let raw = [0u8, 50, 0, 10, 0, 0, 2, b'q', b'1', 0b01010, 0, 0, 0, 0];
    let m = Method::decode(Bytes::copy_from_slice(&raw)).expect("decodes");
    let Method::QueueDeclare(q) = m else { panic!("not queue.declare: {m:?}") };
    assert_eq!(q.queue, "q1");
    assert!(!q.passive && q.durable && !q.exclusive && q.auto_delete && !q.no_wait);
}

#[test]
fn other_bit_packings() {
    let cases: Vec<(Method, usize, u8)> = vec![
        // exchange.declare: passive, durable, auto_delete, internal, no_wait at offset 2+2+2+3+6.
        (
            ExchangeDeclare {
                exchange: ss("ex"),
                kind: ss("direct"),
                passive: true,
                durable: false,
                auto_delete: true,
                internal: false,
                no_wait: true,
                ..Default::default()
            }
            .into(),
            4 + 2 + 3 + 7,
            0b10101,
        ),
        (
            ExchangeDeclare {
                exchange: ss("ex"),
                kind: ss("direct"),
                durable: true,
                internal: true,
                ..Default::default()
            }
            .into(),
            4 + 2 + 3 + 7,
            0b01010,
        ),
        // basic.consume: no_local, no_ack, exclusive, no_wait.
        (
            BasicConsume { queue: ss("q"), consumer_tag: ss("c"), no_ack: true, no_wait: true, ..Default::default() }
                .into(),
            4 + 2 + 2 + 2,
            0b1010,
        ),
        (
            BasicConsume {
                queue: ss("q"),
                consumer_tag: ss("c"),
                no_local: true,
                exclusive: true,
                ..Default::default()
            }
            .into(),
            4 + 2 + 2 + 2,
            0b0101,
        ),
        // basic.nack: multiple, requeue after the u64 tag.
        (BasicNack { delivery_tag: 1, multiple: false, requeue: true }.into(), 4 + 8, 0b10),
        (BasicNack { delivery_tag: 1, multiple: true, requeue: false }.into(), 4 + 8, 0b01),
        // basic.publish: mandatory, immediate.
        (
            BasicPublish { exchange: ss("e"), routing_key: ss("r"), immediate: true, ..Default::default() }.into(),
            10,
            0b10,
        ),
        // queue.delete: if_unused, if_empty, no_wait.
        (QueueDelete { queue: ss("q"), if_empty: true, ..Default::default() }.into(), 4 + 2 + 2, 0b010),
        (QueueDelete { queue: ss("q"), if_unused: true, no_wait: true, ..Default::default() }.into(), 4 + 2 + 2, 0b101),
        // exchange.delete: if_unused, no_wait.
        (ExchangeDelete { exchange: ss("e"), no_wait: true, ..Default::default() }.into(), 4 + 2 + 2, 0b10),
        // basic.deliver: one bit between a u64 and a shortstr.
        (
            BasicDeliver { consumer_tag: ss("c"), delivery_tag: 2, redelivered: true, ..Default::default() }.into(),
            4 + 2 + 8,
            0b1,
        ),
        // connection.open: insist after two shortstrs.
        (ConnectionOpen { virtual_host: ss("/"), insist: true, ..Default::default() }.into(), 4 + 2 + 1, 0b1),
        // basic.qos: global after u32 + u16.
        (BasicQos { prefetch_size: 0, prefetch_count: 1, global: true }.into(), 4 + 4 + 2, 0b1),
    ];
    for (m, offset, octet) in cases {
        let p = payload(&m);
        assert_eq!(p[offset], octet, "{}: bit octet at {offset} in {p:?}", m.name());
        let (_, decoded) = method_roundtrip(3, &m);
        assert_eq!(decoded, m);
    }
}

#[test]
fn basic_deliver_exact_bytes() {
    let m: Method = BasicDeliver {
        consumer_tag: ss("ct"),
        delivery_tag: 0x0102_0304_0506_0708,
        redelivered: true,
        exchange: ss("e"),
        routing_key: ss("rk"),
    }
    .into();
    let mut out = BytesMut::new();
    write_method(&mut out, 5, &m);
    let expected: Vec<u8> = [
        &[FRAME_METHOD, 0, 5, 0, 0, 0, 21][..],
        &[0, 60, 0, 60, 2, b'c', b't', 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, b'e', 2, b'r', b'k'],
        &[FRAME_END],
    ]
    .concat();
    assert_eq!(out.to_vec(), expected);
}

#[test]
fn connection_tune_matches_rabbitmq_bytes() {
    // What RabbitMQ sends by default: channel_max 2047, frame_max 131072, heartbeat 60.
    let mut out = BytesMut::new();
    write_method(&mut out, 0, &ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 60 }.into());
    assert_eq!(out.to_vec(), [1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 30, 0x07, 0xff, 0, 2, 0, 0, 0, 60, 0xce]);
}

fn all_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(ss("application/json")),
        content_encoding: Some(ss("gzip")),
        headers: Some(every_type_table()),
        delivery_mode: Some(2),
        priority: Some(9),
        correlation_id: Some(ss("corr-1")),
        reply_to: Some(ss("amq.rabbitmq.reply-to")),
        expiration: Some(ss("60000")),
        message_id: Some(ss("msg-1")),
        timestamp: Some(1_700_000_123),
        kind: Some(ss("order.created")),
        user_id: Some(ss("guest")),
        app_id: Some(ss("lepus-tests")),
        cluster_id: Some(ss("cluster-a")),
    }
}

fn header_roundtrip(props: &BasicProperties, body_size: u64) -> ContentHeader {
    let raw = props.to_raw();
    let mut out = BytesMut::new();
    write_content_header(&mut out, 9, body_size, &raw);
    let frame = parse_frame(&mut out, FRAME_MAX).expect("parses").expect("complete");
    assert!(out.is_empty());
    assert_eq!(frame.frame_type, FrameType::Header);
    assert_eq!(frame.channel, 9);
    assert_eq!(peek_body_size(&frame.payload), Some(body_size));
    let header = ContentHeader::decode(frame.payload).expect("header decodes");
    assert_eq!(header.class_id, 60);
    assert_eq!(header.body_size, body_size);
    assert_eq!(header.raw_properties, raw, "raw properties must be kept verbatim");
    assert_eq!(&header.properties().expect("properties decode"), props);
    assert_eq!(BasicProperties::decode(raw).expect("decodes"), *props);
    header
}

#[test]
fn content_header_with_all_14_properties() {
    let props = all_properties();
    let raw = props.to_raw();
    assert_eq!(&raw[..2], &[0xff, 0xfc], "all 14 flags, reserved and continuation bits clear");
    let header = header_roundtrip(&props, 1 << 33);
    assert_eq!(header.delivery_mode, Some(2));
    assert!(header.is_persistent());
    assert_eq!(header.priority, Some(9));
    assert_eq!(header.expiration, Some(ss("60000")));
    assert_eq!(header.timestamp, Some(1_700_000_123));
}

#[test]
fn content_header_with_each_single_property() {
    let full = all_properties();
    let flags = [
        FLAG_CONTENT_TYPE,
        FLAG_CONTENT_ENCODING,
        FLAG_HEADERS,
        FLAG_DELIVERY_MODE,
        FLAG_PRIORITY,
        FLAG_CORRELATION_ID,
        FLAG_REPLY_TO,
        FLAG_EXPIRATION,
        FLAG_MESSAGE_ID,
        FLAG_TIMESTAMP,
        FLAG_TYPE,
        FLAG_USER_ID,
        FLAG_APP_ID,
        FLAG_CLUSTER_ID,
    ];
    for (i, flag) in flags.into_iter().enumerate() {
        assert_eq!(flag, 1 << (15 - i), "property {i} is bit {}", 15 - i);
        let mut p = BasicProperties::default();
        match i {
            0 => p.content_type = full.content_type.clone(),
            1 => p.content_encoding = full.content_encoding.clone(),
            2 => p.headers = full.headers.clone(),
            3 => p.delivery_mode = full.delivery_mode,
            4 => p.priority = full.priority,
            5 => p.correlation_id = full.correlation_id.clone(),
            6 => p.reply_to = full.reply_to.clone(),
            7 => p.expiration = full.expiration.clone(),
            8 => p.message_id = full.message_id.clone(),
            9 => p.timestamp = full.timestamp,
            10 => p.kind = full.kind.clone(),
            11 => p.user_id = full.user_id.clone(),
            12 => p.app_id = full.app_id.clone(),
            _ => p.cluster_id = full.cluster_id.clone(),
        }
        let raw = p.to_raw();
        assert_eq!(u16::from_be_bytes([raw[0], raw[1]]), flag);
        let header = header_roundtrip(&p, i as u64);
        assert_eq!(header.delivery_mode, p.delivery_mode);
        assert_eq!(header.priority, p.priority);
        assert_eq!(header.expiration, p.expiration);
        assert_eq!(header.timestamp, p.timestamp);
    }
}

#[test]
fn content_header_without_properties() {
    let p = BasicProperties::default();
    assert_eq!(p.to_raw().as_ref(), &[0, 0]);
    let header = header_roundtrip(&p, 0);
    assert_eq!(header.delivery_mode, None);
    assert!(!header.is_persistent());
    assert_eq!(header.priority, None);
    assert_eq!(header.expiration, None);
    assert_eq!(header.timestamp, None);
}

#[test]
fn content_header_exact_bytes() {
    let p = BasicProperties { content_type: Some(ss("t/p")), delivery_mode: Some(1), ..Default::default() };
    let mut out = BytesMut::new();
    write_content_header(&mut out, 1, 3, &p.to_raw());
    let expected: Vec<u8> = [
        &[FRAME_HEADER, 0, 1, 0, 0, 0, 19][..],
        &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
        &[0x90, 0x00, 3, b't', b'/', b'p', 1],
        &[FRAME_END],
    ]
    .concat();
    assert_eq!(out.to_vec(), expected);
}

/// Raw properties are re-emitted byte for byte, even in encodings our encoder would not
/// produce (here: a non-canonical headers table with duplicate keys).
#[test]
fn raw_properties_are_preserved_verbatim() {
    let mut raw = Vec::new();
    raw.extend_from_slice(&(FLAG_HEADERS | FLAG_PRIORITY).to_be_bytes());
    // headers: {k: b -1, k: V, x: V} (10 bytes), then priority 0.
    raw.extend_from_slice(&[0, 0, 0, 10, 1, b'k', b'b', 0xff, 1, b'k', b'V', 1, b'x', b'V']);
    raw.push(0);
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, 77, &raw);
    let header = ContentHeader::decode(payload.freeze()).expect("decodes");
    assert_eq!(header.raw_properties.as_ref(), &raw[..]);
    assert_eq!(header.priority, Some(0));
    let props = header.properties().expect("properties");
    let headers = props.headers.expect("headers");
    assert_eq!(headers.len(), 3);
    assert_eq!(headers.get("k"), Some(&FieldValue::I8(-1)));
    assert_eq!(headers.0[1], (ss("k"), FieldValue::Void));
    // Re-emission.
    let mut out = BytesMut::new();
    write_content_header(&mut out, 2, header.body_size, &header.raw_properties);
    let frame = parse_frame(&mut out, FRAME_MAX).unwrap().unwrap();
    assert_eq!(&frame.payload[12..], &raw[..]);
}

fn table_through_queue_declare(t: &FieldTable) -> FieldTable {
    let m: Method = QueueDeclare { queue: ss("q"), durable: true, arguments: t.clone(), ..Default::default() }.into();
    let (_, decoded) = method_roundtrip(1, &m);
    let Method::QueueDeclare(q) = decoded else { panic!("wrong method") };
    assert!(q.durable);
    q.arguments
}

#[test]
fn field_table_every_type_round_trips() {
    let t = every_type_table();
    let tags: BTreeSet<u8> = t.iter().map(|(_, v)| v.tag()).collect();
    assert_eq!(tags, b"tbBsuIilfdDSATFVx".iter().copied().collect::<BTreeSet<u8>>());
    assert_eq!(table_through_queue_declare(&t), t);
    let props = BasicProperties { headers: Some(t.clone()), ..Default::default() };
    assert_eq!(header_roundtrip(&props, 1).properties().unwrap().headers, Some(t));
}

#[test]
fn field_value_exact_encodings() {
    let cases: Vec<(FieldValue, Vec<u8>)> = vec![
        (FieldValue::Bool(true), vec![b't', 1]),
        (FieldValue::I8(-1), vec![b'b', 0xff]),
        (FieldValue::U8(200), vec![b'B', 200]),
        (FieldValue::I16(-2), vec![b's', 0xff, 0xfe]),
        (FieldValue::U16(0x1234), vec![b'u', 0x12, 0x34]),
        (FieldValue::I32(-3), vec![b'I', 0xff, 0xff, 0xff, 0xfd]),
        (FieldValue::U32(0x8000_0000), vec![b'i', 0x80, 0, 0, 0]),
        (FieldValue::I64(-4), vec![b'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc]),
        (FieldValue::F32(1.0), vec![b'f', 0x3f, 0x80, 0, 0]),
        (FieldValue::F64(1.0), vec![b'd', 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]),
        (FieldValue::Decimal { scale: 2, value: 5 }, vec![b'D', 2, 0, 0, 0, 5]),
        (FieldValue::LongStr(b(b"hi")), vec![b'S', 0, 0, 0, 2, b'h', b'i']),
        (FieldValue::Array(vec![FieldValue::Void]), vec![b'A', 0, 0, 0, 1, b'V']),
        (FieldValue::Timestamp(7), vec![b'T', 0, 0, 0, 0, 0, 0, 0, 7]),
        (FieldValue::Table(FieldTable::new().with("a", FieldValue::Void)), vec![b'F', 0, 0, 0, 3, 1, b'a', b'V']),
        (FieldValue::Void, vec![b'V']),
        (FieldValue::Bytes(b(&[9])), vec![b'x', 0, 0, 0, 1, 9]),
    ];
    for (value, encoding) in cases {
        let t = FieldTable(vec![(ss("k"), value.clone())]);
        let m: Method = ConnectionStartOk { client_properties: t.clone(), ..Default::default() }.into();
        let p = payload(&m);
        let table_len = 2 + encoding.len();
        let mut expected = vec![0, 10, 0, 11];
        expected.extend_from_slice(&(table_len as u32).to_be_bytes());
        expected.extend_from_slice(&[1, b'k']);
        expected.extend_from_slice(&encoding);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        assert_eq!(p, expected, "encoding of {value:?}");
        let (_, decoded) = method_roundtrip(0, &m);
        assert_eq!(decoded, m);
    }
}

#[test]
fn deeply_nested_tables_within_the_limit_round_trip() {
    // 32 levels of tables (the top-level one included) is the maximum accepted.
    let mut t = FieldTable::new().with("leaf", "x");
    for _ in 0..31 {
        t = FieldTable::new().with("n", t);
    }
    assert_eq!(table_through_queue_declare(&t), t);
    let props = BasicProperties { headers: Some(t.clone()), ..Default::default() };
    header_roundtrip(&props, 0);
    // Alternating arrays and tables.
    let mut v = FieldValue::Void;
    for i in 0..31 {
        v = if i % 2 == 0 {
            FieldValue::Array(vec![v, FieldValue::U8(i)])
        } else {
            FieldTable::new().with("t", v).into()
        };
    }
    let t = FieldTable(vec![(ss("mixed"), v)]);
    assert_eq!(table_through_queue_declare(&t), t);
}

#[test]
fn field_table_accessors() {
    let t = small_table().with("x-max-length", FieldValue::U16(20));
    assert_eq!(t.len(), 3);
    assert_eq!(t.get("x-max-length").and_then(FieldValue::as_i64), Some(20));
    assert_eq!(t.get("x-queue-type").and_then(FieldValue::as_str), Some("quorum"));
    assert_eq!(t.get("x-single-active-consumer").and_then(FieldValue::as_bool), Some(true));
    assert_eq!(FieldValue::Timestamp(u64::MAX).as_i64(), None);
    assert_eq!(FieldValue::U32(u32::MAX).as_i64(), Some(u32::MAX as i64));
    let mut t = t;
    assert_eq!(t.remove("x-queue-type"), Some(FieldValue::from("quorum")));
    assert_eq!(t.get("x-queue-type"), None);
}

#[test]
fn body_and_heartbeat_frames() {
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let mut out = BytesMut::new();
    write_body(&mut out, 4, &body, 4096);
    let mut got = Vec::new();
    let mut frames = 0;
    while let Some(frame) = parse_frame(&mut out, 4096).expect("body frame parses") {
        assert_eq!(frame.frame_type, FrameType::Body);
        assert_eq!(frame.channel, 4);
        assert!(frame.payload.len() + 8 <= 4096);
        got.extend_from_slice(&frame.payload);
        frames += 1;
    }
    assert_eq!(frames, 3); // 4088 + 4088 + 1824
    assert_eq!(got, body);
    assert!(out.is_empty());

    // An empty body writes no frame; a tiny frame_max still makes progress.
    let mut out = BytesMut::new();
    write_body(&mut out, 1, &[], 4096);
    assert!(out.is_empty());
    write_body(&mut out, 1, b"abc", 0);
    assert_eq!(out.len(), 3 * 9);
    assert_eq!(out[0], FRAME_BODY);

    let mut out = BytesMut::new();
    write_heartbeat(&mut out);
    assert_eq!(out.as_ref(), &[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    let frame = parse_frame(&mut out, 8).unwrap().unwrap();
    assert_eq!(frame, Frame { frame_type: FrameType::Heartbeat, channel: 0, payload: Bytes::new() });
}

#[test]
fn frames_parse_the_same_when_bytes_arrive_one_at_a_time() {
    let mut stream = BytesMut::new();
    for (i, m) in all_methods().iter().enumerate() {
        write_method(&mut stream, i as u16, m);
        if m.carries_content() {
            write_content_header(&mut stream, i as u16, 5000, &all_properties().to_raw());
            write_body(&mut stream, i as u16, &[7u8; 5000], 4096);
        }
    }
    write_heartbeat(&mut stream);
    let whole: Vec<Frame> = {
        let mut buf = stream.clone();
        let mut v = Vec::new();
        while let Some(f) = parse_frame(&mut buf, FRAME_MAX).unwrap() {
            v.push(f);
        }
        assert!(buf.is_empty());
        v
    };
    let mut trickled = Vec::new();
    let mut buf = BytesMut::new();
    for &byte in stream.iter() {
        buf.extend_from_slice(&[byte]);
        if let Some(f) = parse_frame(&mut buf, FRAME_MAX).unwrap() {
            trickled.push(f);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(whole, trickled);
    assert_eq!(whole.len(), VARIANT_COUNT + 4 * 3 + 1);
}

#[test]
fn short_strings() {
    assert!(ShortStr::try_from("x".repeat(255)).is_ok());
    assert_eq!(ShortStr::try_from("x".repeat(256)), Err(256));
    let t = ShortStr::truncating(&"é".repeat(200));
    assert_eq!(t.len(), 254, "truncated on a char boundary");
    assert!(t.as_str().is_some());
    let long = ss(&"k".repeat(255));
    let m: Method = BasicPublish { exchange: long.clone(), routing_key: long, ..Default::default() }.into();
    let (_, decoded) = method_roundtrip(1, &m);
    assert_eq!(decoded, m);
}

#[test]
fn encoder_and_decoder_primitives() {
    use lepus_protocol::{Decoder, Encoder};
    let mut out = BytesMut::new();
    let mut e = Encoder::new(&mut out);
    e.bit(true);
    e.bit(false);
    e.bit(true);
    e.u8(0xaa);
    for i in 0..10 {
        e.bit(i % 3 == 0);
    }
    e.short_str_bytes(&[b'z'; 300]);
    e.long_str(b"abc");
    e.bit(true);
    e.u64(u64::MAX);
    assert_eq!(out[0], 0b101);
    assert_eq!(out[1], 0xaa);
    // Bits 0, 3, 6 of the first octet, bit 1 (i = 9) of the second.
    assert_eq!(out[2], 0b0100_1001);
    assert_eq!(out[3], 0b10);
    assert_eq!(out[4], 255, "shortstr truncated to 255 bytes");
    assert_eq!(out.len(), 4 + 256 + 7 + 1 + 8);

    let mut d = Decoder::new(out.freeze(), "primitives");
    assert_eq!((d.bit(), d.bit(), d.bit()), (Ok(true), Ok(false), Ok(true)));
    assert_eq!(d.u8(), Ok(0xaa));
    for i in 0..10 {
        assert_eq!(d.bit(), Ok(i % 3 == 0), "bit {i}");
    }
    assert_eq!(d.short_str().map(|s| s.len()), Ok(255));
    assert_eq!(d.long_str().map(|s| s.0), Ok(Bytes::from_static(b"abc")));
    assert_eq!(d.bit(), Ok(true));
    assert_eq!(d.u64(), Ok(u64::MAX));
    assert_eq!(d.remaining(), 0);
    assert_eq!(d.finish(), Ok(()));
    assert_eq!(d.u8(), Err(lepus_protocol::ProtocolError::Truncated("primitives")));
    assert_eq!(d.bit(), Err(lepus_protocol::ProtocolError::Truncated("primitives")));
}
