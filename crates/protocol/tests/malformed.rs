//! Hostile input: every malformation yields the right `Err`, never a panic, and arbitrary or
//! mutated bytes never panic any decoder.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use lepus_protocol::constants::{FRAME_END, FRAME_MIN_SIZE, TABLE_DEPTH_MAX, TABLE_VALUES_MAX};
use lepus_protocol::content::{FLAG_HEADERS, peek_body_size};
use lepus_protocol::frame::{write_body, write_content_header, write_heartbeat, write_method};
use lepus_protocol::method::*;
use lepus_protocol::table::walk_table;
use lepus_protocol::{
    BasicProperties, ContentHeader, FieldTable, FieldValue, FrameType, LongStr, Method, ProtocolError, ShortStr,
    parse_frame,
};
use proptest::prelude::*;

use common::decode_all;

const FRAME_MAX: u32 = 131_072;

/// A raw frame around `payload`.
fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(frame_type);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(payload);
    out.put_u8(FRAME_END);
    out
}

/// A field table (length prefix included) of `levels` tables nested inside each other, the
/// outermost one counted.
fn nested_tables(levels: usize) -> Vec<u8> {
    let mut t = vec![0, 0, 0, 0];
    for _ in 1..levels {
        let mut outer = Vec::with_capacity(t.len() + 7);
        outer.extend_from_slice(&((t.len() + 3) as u32).to_be_bytes());
        outer.extend_from_slice(&[1, b'a', b'F']);
        outer.extend_from_slice(&t);
        t = outer;
    }
    t
}

/// Like [`nested_tables`], but every nested level is an array holding the next one.
fn nested_arrays(levels: usize) -> Vec<u8> {
    let mut inner = vec![0, 0, 0, 0]; // the innermost, empty array
    for _ in 2..levels {
        let mut outer = Vec::with_capacity(inner.len() + 5);
        outer.extend_from_slice(&((inner.len() + 1) as u32).to_be_bytes());
        outer.push(b'A');
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    let mut t = Vec::new();
    t.extend_from_slice(&((inner.len() + 3) as u32).to_be_bytes());
    t.extend_from_slice(&[1, b'a', b'A']);
    t.extend_from_slice(&inner);
    t
}

/// A queue.declare payload with `table` (raw bytes, length included) as its arguments.
fn queue_declare_with(table: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0b10];
    p.extend_from_slice(table);
    p
}

/// A content header payload with only the headers property, `table` raw.
fn header_with_headers(table: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 42];
    p.extend_from_slice(&FLAG_HEADERS.to_be_bytes());
    p.extend_from_slice(table);
    p
}

fn decode_method(payload: &[u8]) -> Result<Method, ProtocolError> {
    Method::decode(Bytes::copy_from_slice(payload))
}

fn decode_header(payload: &[u8]) -> Result<ContentHeader, ProtocolError> {
    ContentHeader::decode(Bytes::copy_from_slice(payload))
}

fn decode_props(payload: &[u8]) -> Result<BasicProperties, ProtocolError> {
    BasicProperties::decode(Bytes::copy_from_slice(payload))
}

/// Runs `table` through all four table decoders: method arguments (building),
/// content header (validating only), basic properties (building) and the borrowed walk of the
/// publish view (validating only).
fn table_results(table: &[u8]) -> [Result<(), ProtocolError>; 4] {
    let header = header_with_headers(table);
    [
        decode_method(&queue_declare_with(table)).map(|_| ()),
        decode_header(&header).map(|_| ()),
        decode_props(&header[12..]).map(|_| ()),
        // The view hands the walk the table alone: what its length prefix covers.
        walk_table(&table[..table_len(table).min(table.len())], |_| {}),
    ]
}

/// Bytes a raw table takes by its length prefix (prefix included).
fn table_len(table: &[u8]) -> usize {
    table.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 4)
}

fn assert_all_tables(table: &[u8], expected: Result<(), ProtocolError>) {
    for (i, got) in table_results(table).into_iter().enumerate() {
        let got = got.map_err(|e| match e {
            // The three decoders name the structure differently in Truncated.
            ProtocolError::Truncated(_) => ProtocolError::Truncated("?"),
            other => other,
        });
        assert_eq!(got, expected, "decoder {i} (method, header, properties, walk)");
    }
}

#[test]
fn frame_too_large_is_detected_from_the_header_alone() {
    // Only the 7 header bytes have arrived; the announced frame is far over frame_max.
    let mut buf = BytesMut::from(&[1u8, 0, 1, 0x00, 0x10, 0x00, 0x00][..]);
    assert_eq!(
        parse_frame(&mut buf, FRAME_MIN_SIZE),
        Err(ProtocolError::FrameTooLarge { size: 0x0010_0000 + 8, frame_max: FRAME_MIN_SIZE })
    );
    assert!(buf.capacity() < 4096, "no memory reserved for a rejected frame");
    assert_eq!(buf.len(), 7);

    // The largest announceable size does not overflow.
    let mut buf = BytesMut::from(&[3u8, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        parse_frame(&mut buf, u32::MAX),
        Err(ProtocolError::FrameTooLarge { size: 0xffff_ffff + 8, frame_max: u32::MAX })
    );
}

#[test]
fn frame_max_boundary_counts_header_and_end_octet() {
    let payload = vec![0u8; 100];
    let mut buf = frame(3, 1, &payload);
    assert_eq!(parse_frame(&mut buf.clone(), 108).unwrap().unwrap().payload.len(), 100);
    assert_eq!(parse_frame(&mut buf, 107), Err(ProtocolError::FrameTooLarge { size: 108, frame_max: 107 }));
}

#[test]
fn tiny_frame_max_rejects_everything_without_panicking() {
    for frame_max in 0..8u32 {
        let mut buf = BytesMut::new();
        write_heartbeat(&mut buf);
        assert_eq!(parse_frame(&mut buf, frame_max), Err(ProtocolError::FrameTooLarge { size: 8, frame_max }));
    }
    let mut buf = BytesMut::new();
    write_heartbeat(&mut buf);
    assert_eq!(parse_frame(&mut buf, 8).unwrap().unwrap().frame_type, FrameType::Heartbeat);
}

#[test]
fn incomplete_frames_wait_for_more_bytes() {
    let full = frame(1, 7, &[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(parse_frame(&mut buf, FRAME_MAX), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
        if cut >= 7 {
            assert!(buf.capacity() >= full.len(), "room reserved for the rest of the frame");
        }
    }
    // Fewer than 7 bytes: not even the type is judged yet.
    let mut buf = BytesMut::from(&[0x41u8, 0x4d, 0x51][..]);
    assert_eq!(parse_frame(&mut buf, FRAME_MAX), Ok(None));
}

#[test]
fn bad_end_octet() {
    let mut buf = frame(1, 1, &[0, 90, 0, 10]);
    let last = buf.len() - 1;
    buf[last] = 0xcd;
    assert_eq!(parse_frame(&mut buf, FRAME_MAX), Err(ProtocolError::BadFrameEnd(0xcd)));
    let mut buf = frame(8, 0, &[]);
    buf[7] = 0;
    assert_eq!(parse_frame(&mut buf, FRAME_MAX), Err(ProtocolError::BadFrameEnd(0)));
}

#[test]
fn unknown_frame_type() {
    for t in [0u8, 4, 5, 6, 7, 9, b'A', 0xce, 0xff] {
        let mut buf = frame(t, 0, &[]);
        assert_eq!(parse_frame(&mut buf, FRAME_MAX), Err(ProtocolError::UnknownFrameType(t)));
    }
    // A protocol header in the middle of a stream is an unknown frame type too.
    let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09\x01"[..]);
    assert_eq!(parse_frame(&mut buf, FRAME_MAX), Err(ProtocolError::UnknownFrameType(b'A')));
}

#[test]
fn truncated_method_arguments() {
    let m: Method =
        QueueDeclare { queue: ShortStr::try_from("q").unwrap(), durable: true, ..Default::default() }.into();
    let mut full = BytesMut::new();
    m.encode_payload(&mut full);
    for cut in 4..full.len() {
        assert_eq!(decode_method(&full[..cut]), Err(ProtocolError::Truncated("queue.declare")), "cut at {cut}");
    }
    for cut in 0..4 {
        assert_eq!(decode_method(&full[..cut]), Err(ProtocolError::Truncated("method frame")));
    }
    // Truncated inside a trailing bit octet and inside a u64.
    assert_eq!(decode_method(&[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1]), Err(ProtocolError::Truncated("basic.ack")));
    assert_eq!(decode_method(&[0, 60, 0, 80, 0, 0, 0]), Err(ProtocolError::Truncated("basic.ack")));
    // A shortstr whose length runs past the end.
    assert_eq!(decode_method(&[0, 60, 0, 31, 5, b'a', b'b']), Err(ProtocolError::Truncated("basic.cancel-ok")));
}

#[test]
fn trailing_bytes() {
    assert_eq!(
        decode_method(&[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 1, 1, 9, 9, 9]),
        Err(ProtocolError::TrailingBytes("basic.ack", 3))
    );
    assert_eq!(decode_method(&[0, 90, 0, 10, 0]), Err(ProtocolError::TrailingBytes("tx.select", 1)));
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
    assert!(decode_header(&header).is_ok());
    header.extend_from_slice(&[1, 2]);
    assert_eq!(decode_header(&header), Err(ProtocolError::TrailingBytes("content header", 2)));
    assert_eq!(decode_props(&header[12..]), Err(ProtocolError::TrailingBytes("content header properties", 2)));
}

#[test]
fn unknown_class_or_method() {
    for (class_id, method_id) in [(30u16, 10u16), (60, 61), (10, 12), (0, 0), (85, 12), (90, 40), (0xffff, 0xffff)] {
        let mut p = Vec::new();
        p.extend_from_slice(&class_id.to_be_bytes());
        p.extend_from_slice(&method_id.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        assert_eq!(decode_method(&p), Err(ProtocolError::UnknownMethod { class_id, method_id }));
    }
}

#[test]
fn table_nested_1500_deep_in_queue_declare_arguments() {
    let table = nested_tables(1500);
    let payload = queue_declare_with(&table);
    assert!(payload.len() < 11_000);
    let mut buf = frame(1, 1, &payload);
    let f = parse_frame(&mut buf, FRAME_MAX).unwrap().unwrap();
    assert_eq!(Method::decode(f.payload), Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX)));
}

#[test]
fn table_nested_1500_deep_in_headers_property() {
    let header = header_with_headers(&nested_tables(1500));
    let mut buf = frame(2, 1, &header);
    let f = parse_frame(&mut buf, FRAME_MAX).unwrap().unwrap();
    assert_eq!(ContentHeader::decode(f.payload.clone()), Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX)));
    assert_eq!(decode_props(&f.payload[12..]), Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX)));
    // The same through arrays.
    assert_all_tables(&nested_arrays(1500), Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX)));
}

#[test]
fn table_depth_limit_is_exact() {
    assert_all_tables(&nested_tables(TABLE_DEPTH_MAX), Ok(()));
    assert_all_tables(&nested_tables(TABLE_DEPTH_MAX + 1), Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX)));
    assert_all_tables(&nested_arrays(TABLE_DEPTH_MAX), Ok(()));
    assert_all_tables(&nested_arrays(TABLE_DEPTH_MAX + 1), Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX)));
    // Depth is depth, not count: many siblings at depth 2 are fine.
    let mut t = FieldTable::new();
    for i in 0..100 {
        t.insert(ShortStr::try_from(format!("k{i}")).unwrap(), FieldValue::Table(FieldTable::new()));
    }
    let m: Method = QueueDeclare { arguments: t.clone(), ..Default::default() }.into();
    let mut p = BytesMut::new();
    m.encode_payload(&mut p);
    assert_eq!(Method::decode(p.freeze()), Ok(m));
}

#[test]
fn nested_table_overrunning_its_parent() {
    // Outer table of 10 bytes holds key "a" -> F with a length of 100; the payload has plenty
    // of bytes after the outer table, so only the parent's bound can catch it.
    let mut table = vec![0, 0, 0, 10, 1, b'a', b'F', 0, 0, 0, 100, 0, 0, 0];
    table.extend_from_slice(&[0; 200]);
    let results = table_results(&table);
    for r in results {
        assert_eq!(r, Err(ProtocolError::TableOverrun));
    }
    // A long string overrunning its table.
    let mut table = vec![0, 0, 0, 8, 1, b's', b'S', 0, 0, 0, 50, b'x'];
    table.extend_from_slice(&[b'x'; 100]);
    assert_all_tables(&table, Err(ProtocolError::TableOverrun));
    // A key overrunning its table.
    let mut table = vec![0, 0, 0, 3, 40, b'k', b'k'];
    table.extend_from_slice(&[b'k'; 100]);
    assert_all_tables(&table, Err(ProtocolError::TableOverrun));
    // A scalar cut by its table's end.
    let mut table = vec![0, 0, 0, 5, 1, b'n', b'i', 0, 0];
    table.extend_from_slice(&[0; 10]);
    assert_all_tables(&table, Err(ProtocolError::TableOverrun));
    // A nested table's length prefix cut by its parent's end: truncated, as the decoders say.
    let mut table = vec![0, 0, 0, 5, 1, b'k', b'F', 0, 0];
    table.extend_from_slice(&[0; 10]);
    assert_all_tables(&table, Err(ProtocolError::Truncated("?")));
    // An array element overrunning its array.
    let table = vec![0, 0, 0, 10, 1, b'a', b'A', 0, 0, 0, 3, b'I', 0, 0, 0, 0];
    assert_all_tables(&table, Err(ProtocolError::TableOverrun));
    // A nested table's end within its parent, but the parent's next entry is cut short.
    let table = vec![0, 0, 0, 9, 1, b'a', b'F', 0, 0, 0, 0, 1, b'b'];
    assert_all_tables(&table, Err(ProtocolError::TableOverrun));
}

#[test]
fn top_level_table_longer_than_the_payload_is_truncated() {
    assert_all_tables(&[0, 0, 0, 20, 1, b'a', b'V'], Err(ProtocolError::Truncated("?")));
    assert_all_tables(&[0xff, 0xff, 0xff, 0xff], Err(ProtocolError::Truncated("?")));
    assert_all_tables(&[0, 0], Err(ProtocolError::Truncated("?")));
}

#[test]
fn unknown_field_type_tag() {
    // 'U' (the spec's signed short) and 'L' (the spec's unsigned long long) are accepted by
    // amq-protocol but not by RabbitMQ's errata nor by us; 's' and 'l' are their RabbitMQ forms.
    for tag in [b'Z', b'U', b'L', b'c', 0, 0xff] {
        let table = [0, 0, 0, 3, 1, b'k', tag];
        assert_all_tables(&table, Err(ProtocolError::UnknownFieldType(tag)));
    }
    // Inside an array, two levels down.
    let table = [0, 0, 0, 15, 1, b'a', b'F', 0, 0, 0, 8, 1, b'b', b'A', 0, 0, 0, 1, b'?'];
    assert_all_tables(&table, Err(ProtocolError::UnknownFieldType(b'?')));
}

#[test]
fn too_many_values() {
    // 65,536 void values with empty keys fit; one more does not.
    let table = |n: usize| {
        let mut t = Vec::with_capacity(4 + 2 * n);
        t.extend_from_slice(&((2 * n) as u32).to_be_bytes());
        for _ in 0..n {
            t.extend_from_slice(&[0, b'V']);
        }
        t
    };
    assert_all_tables(&table(TABLE_VALUES_MAX), Ok(()));
    assert_all_tables(&table(TABLE_VALUES_MAX + 1), Err(ProtocolError::TableTooManyValues(TABLE_VALUES_MAX)));
    // Values are counted across nesting levels.
    let mut nested = table(TABLE_VALUES_MAX - 1);
    let inner_len = nested.len();
    let mut t = Vec::new();
    t.extend_from_slice(&((inner_len + 3) as u32).to_be_bytes());
    t.extend_from_slice(&[1, b'n', b'F']);
    t.append(&mut nested);
    assert_all_tables(&t, Ok(()));
    let mut t2 = t.clone();
    let len = u32::from_be_bytes([t2[0], t2[1], t2[2], t2[3]]) + 2;
    t2[..4].copy_from_slice(&len.to_be_bytes());
    t2.extend_from_slice(&[0, b'V']);
    assert_all_tables(&t2, Err(ProtocolError::TableTooManyValues(TABLE_VALUES_MAX)));
}

#[test]
fn property_flags_with_reserved_or_continuation_bits() {
    for flags in [0x0001u16, 0x0002, 0x0003, 0x8001, 0xffff] {
        let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[0; 64]);
        assert_eq!(decode_header(&p), Err(ProtocolError::BadPropertyFlags(flags)));
        assert_eq!(decode_props(&p[12..]), Err(ProtocolError::BadPropertyFlags(flags)));
    }
}

#[test]
fn content_header_class_and_truncation() {
    let mut p = vec![0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(decode_header(&p), Err(ProtocolError::UnknownContentClass(50)));
    p[1] = 60;
    for cut in 0..14 {
        assert_eq!(decode_header(&p[..cut]), Err(ProtocolError::Truncated("content header")), "cut at {cut}");
    }
    assert!(decode_header(&p).is_ok());
    assert_eq!(decode_props(&[]), Err(ProtocolError::Truncated("content header properties")));
    assert_eq!(decode_props(&[0x80, 0]), Err(ProtocolError::Truncated("content header properties")));
    // Timestamp flag with only 7 bytes.
    assert_eq!(
        decode_header(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 1, 2, 3, 4, 5, 6, 7]).unwrap_err(),
        ProtocolError::Truncated("content header")
    );
    assert_eq!(peek_body_size(&p[..11]), None);
    assert_eq!(peek_body_size(&[]), None);
    assert_eq!(peek_body_size(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
}

#[test]
fn long_string_length_of_u32_max() {
    // connection.secure with a 4 GiB challenge announced in a 12-byte payload.
    let p = [0, 10, 0, 20, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c', b'd'];
    assert_eq!(decode_method(&p), Err(ProtocolError::Truncated("connection.secure")));
    // In connection.start's mechanisms, after an empty table.
    let p = [0, 10, 0, 10, 0, 9, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0];
    assert_eq!(decode_method(&p), Err(ProtocolError::Truncated("connection.start")));
    // As a table value ('S' and 'x').
    for tag in [b'S', b'x'] {
        let table = [0, 0, 0, 9, 1, b'k', tag, 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert_all_tables(&table, Err(ProtocolError::TableOverrun));
    }
    // As a nested table's or array's length.
    for tag in [b'F', b'A'] {
        let table = [0, 0, 0, 9, 1, b'k', tag, 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert_all_tables(&table, Err(ProtocolError::TableOverrun));
    }
}

#[test]
fn decode_loop_reports_errors_in_a_stream() {
    let mut stream = BytesMut::new();
    write_method(&mut stream, 1, &BasicPublish::default().into());
    write_content_header(&mut stream, 1, 3, &BasicProperties::default().to_raw());
    write_body(&mut stream, 1, b"abc", 4096);
    let good = stream.len();
    stream.extend_from_slice(&frame(1, 1, &queue_declare_with(&nested_tables(1500))));
    stream.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0xce]);
    let o = decode_all(&stream, FRAME_MAX);
    assert_eq!((o.methods, o.headers, o.bodies), (2, 1, 1));
    assert_eq!(o.error, Some(ProtocolError::UnknownFrameType(9)));
    assert_eq!(o.leftover, 8);
    let o = decode_all(&stream[..good + 3], FRAME_MAX);
    assert_eq!((o.frames, o.error, o.leftover), (3, None, 3));
}

/// Valid frames for the mutation proptest to start from.
fn valid_stream(pick: &[u8]) -> Vec<u8> {
    let ss = |s: &str| ShortStr::try_from(s).unwrap();
    let table = FieldTable::new()
        .with("x-match", "all")
        .with("n", FieldValue::I32(-5))
        .with("nested", FieldTable::new().with("arr", FieldValue::Array(vec![FieldValue::F64(1.5), FieldValue::Void])))
        .with("d", FieldValue::Decimal { scale: 1, value: 2 });
    let props = BasicProperties {
        content_type: Some(ss("text/plain")),
        headers: Some(table.clone()),
        delivery_mode: Some(2),
        priority: Some(1),
        expiration: Some(ss("1000")),
        timestamp: Some(5),
        app_id: Some(ss("app")),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    for &p in pick {
        match p % 8 {
            0 => {
                write_method(
                    &mut out,
                    1,
                    &BasicPublish { exchange: ss("ex"), routing_key: ss("rk"), mandatory: true, ..Default::default() }
                        .into(),
                );
                write_content_header(&mut out, 1, 10, &props.to_raw());
                write_body(&mut out, 1, b"0123456789", 4096);
            }
            1 => write_method(
                &mut out,
                2,
                &QueueDeclare { queue: ss("q"), durable: true, arguments: table.clone(), ..Default::default() }.into(),
            ),
            2 => write_method(
                &mut out,
                0,
                &ConnectionStartOk {
                    client_properties: table.clone(),
                    mechanism: ss("PLAIN"),
                    response: LongStr::from("\0u\0p"),
                    locale: ss("en_US"),
                }
                .into(),
            ),
            3 => write_method(&mut out, 3, &BasicNack { delivery_tag: 77, multiple: true, requeue: false }.into()),
            4 => write_method(
                &mut out,
                4,
                &BasicConsume {
                    queue: ss("q"),
                    consumer_tag: ss("c"),
                    no_ack: true,
                    arguments: table.clone(),
                    ..Default::default()
                }
                .into(),
            ),
            5 => write_heartbeat(&mut out),
            6 => write_method(&mut out, 0, &ConnectionTune { channel_max: 10, frame_max: 4096, heartbeat: 5 }.into()),
            _ => write_method(
                &mut out,
                5,
                &ExchangeDeclare {
                    exchange: ss("e"),
                    kind: ss("headers"),
                    durable: true,
                    arguments: table.clone(),
                    ..Default::default()
                }
                .into(),
            ),
        }
    }
    out.to_vec()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), prop::sample::select(vec![0u8, 1, 2, 3, 8, 0x7f, 0x80, 0xce, 0xff, b'F', b'A', b'S', b'V']))
            .prop_map(|(i, x)| Mutation::Set(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1..16usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    if data.is_empty() {
        return;
    }
    let at = |i: usize| i % data.len();
    match m {
        Mutation::Flip(i, x) => {
            let i = at(*i);
            data[i] ^= x;
        }
        Mutation::Set(i, x) => {
            let i = at(*i);
            data[i] = *x;
        }
        Mutation::Truncate(n) => {
            let n = at(*n);
            data.truncate(n);
        }
        Mutation::Insert(i, v) => {
            let i = at(*i);
            data.splice(i..i, v.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let i = at(*i);
            let end = (i + n).min(data.len());
            data.drain(i..end);
        }
    }
}

/// Every (class, method) id pair the codec knows.
static METHOD_IDS: std::sync::LazyLock<Vec<(u16, u16)>> = std::sync::LazyLock::new(|| {
    (0..=0xffffu32)
        .filter_map(|id| {
            let (c, m) = ((id >> 8) as u16, (id & 0xff) as u16);
            Method::name_of(c, m).map(|_| (c, m))
        })
        .collect()
});

/// Bytes that steer decoders into their interesting branches: type tags, small lengths, 0xff.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"tbBsuIilfdDSATFVx".to_vec()),
        3 => 0..8u8,
        1 => Just(0xffu8),
        1 => Just(0xceu8),
        2 => any::<u8>(),
    ]
}

/// One frame with a plausible header around garbage: (bytes, whether the framing is valid).
fn garbage_frame() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        prop_oneof![4 => prop::sample::select(vec![1u8, 2, 3, 8]), 1 => any::<u8>()],
        any::<u16>(),
        0..3u8,
        prop::collection::vec(interesting_byte(), 0..300),
        prop_oneof![8 => Just(true), 1 => Just(false)],
        prop_oneof![8 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(frame_type, channel, prefix, body, size_ok, end_ok)| {
            let mut payload = Vec::new();
            match (frame_type, prefix) {
                (1, 0) => {
                    let (c, m) = METHOD_IDS[body.len() % METHOD_IDS.len()];
                    payload.extend_from_slice(&c.to_be_bytes());
                    payload.extend_from_slice(&m.to_be_bytes());
                }
                (2, 0) => payload.extend_from_slice(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
                _ => {}
            }
            payload.extend_from_slice(&body);
            let mut out = frame(frame_type, channel, &payload).to_vec();
            if !size_ok {
                out[6] = out[6].wrapping_add(1);
            }
            if !end_ok {
                *out.last_mut().expect("end octet") = 0;
            }
            let valid = size_ok && end_ok && matches!(frame_type, 1 | 2 | 3 | 8);
            (out, valid)
        })
}

fn frame_max() -> impl Strategy<Value = u32> {
    prop_oneof![0..16u32, 16..512u32, Just(4096u32), Just(131_072u32), Just(u32::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024), frame_max in frame_max()) {
        let o = decode_all(&data, frame_max);
        prop_assert!(o.leftover <= data.len());
        let bytes = Bytes::from(data);
        let _ = Method::decode(bytes.clone());
        let _ = ContentHeader::decode(bytes.clone());
        let _ = BasicProperties::decode(bytes.clone());
        let _ = peek_body_size(&bytes);
    }

    /// The borrowed walk accepts exactly the tables the decoders accept, and reports the
    /// decoded table's top-level keys in order.
    #[test]
    fn table_walk_agrees_with_decoding(
        entries in prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 3, 4, 5, 8, 0xff, b'F', b'A', b'S', b'V', b't', b'x', b'l', b'D', b'C', b'c']), 0..200),
        declared in prop::option::of(0u32..220),
    ) {
        let mut table = declared.unwrap_or(entries.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&entries);
        let mut keys = Vec::new();
        let walked = walk_table(&table, |k| keys.push(k.to_vec()));
        let decoded = decode_props(&header_with_headers(&table)[12..]);
        let decoded_ok = decoded.as_ref().is_ok_and(|p| p.headers.is_some());
        if declared.is_none_or(|d| d as usize == entries.len()) {
            prop_assert_eq!(walked.is_ok(), decoded_ok, "walk {:?} decode {:?}", walked, decoded.map(|_| ()));
            // The same error, too (the two name the structure differently in Truncated).
            let kind = |e: ProtocolError| match e {
                ProtocolError::Truncated(_) => ProtocolError::Truncated("?"),
                other => other,
            };
            if let (Err(w), Err(d)) = (&walked, &decoded) {
                prop_assert_eq!(kind(w.clone()), kind(d.clone()));
            }
        } else {
            prop_assert!(walked.is_err());
        }
        if let (Ok(()), Ok(props)) = (walked, decoded) {
            let headers = props.headers.unwrap_or_default();
            let expected: Vec<Vec<u8>> = headers.iter().map(|(k, _)| k.as_bytes().to_vec()).collect();
            prop_assert_eq!(keys, expected);
        }
    }

    /// Streams of frames with mostly valid framing around garbage payloads.
    #[test]
    fn framed_garbage_never_panics(frames in prop::collection::vec(garbage_frame(), 1..8)) {
        let valid = frames.iter().all(|(_, v)| *v);
        let data: Vec<u8> = frames.iter().flat_map(|(f, _)| f.iter().copied()).collect();
        let o = decode_all(&data, FRAME_MAX);
        if valid {
            prop_assert_eq!(o.error, None);
            prop_assert_eq!(o.frames, frames.len());
            prop_assert_eq!(o.leftover, 0);
        }
    }

    /// Arbitrary arguments behind every known method id, so argument decoding gets exercised.
    #[test]
    fn arbitrary_method_arguments_never_panic(
        which in 0usize..64,
        args in prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 3, 4, 0xff, b'F', b'A', b'S', b'V', b't', b'x', b'a']), 0..256),
    ) {
        prop_assert_eq!(METHOD_IDS.len(), 64);
        let (c, m) = METHOD_IDS[which];
        let mut p = Vec::new();
        p.extend_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&m.to_be_bytes());
        p.extend_from_slice(&args);
        let data = frame(1, 1, &p);
        let o = decode_all(&data, FRAME_MAX);
        prop_assert_eq!(o.frames, 1);
        let mut h = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        h.extend_from_slice(&args);
        let o = decode_all(&frame(2, 1, &h), FRAME_MAX);
        prop_assert_eq!(o.frames, 1);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        pick in prop::collection::vec(any::<u8>(), 1..6),
        mutations in prop::collection::vec(mutation(), 1..5),
        frame_max in prop_oneof![Just(4096u32), Just(131_072u32), 0..64u32],
    ) {
        let mut data = valid_stream(&pick);
        let clean = decode_all(&data, 131_072);
        prop_assert_eq!(clean.error, None);
        prop_assert_eq!(clean.leftover, 0);
        for m in &mutations {
            apply(&mut data, m);
        }
        let o = decode_all(&data, frame_max);
        prop_assert!(o.leftover <= data.len());
    }
}
