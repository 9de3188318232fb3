//! Codec micro-benchmarks: the hot inbound path (parse a publish + header + body from a read
//! buffer, frame by frame and as a borrowed view) and the hot outbound path (encode deliver + header + body). Run with
//! `cargo bench -p lepus-protocol`.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lepus_protocol::fast::write_deliver;
use lepus_protocol::frame::{write_body, write_content_header, write_method};
use lepus_protocol::method::BasicPublish;
use lepus_protocol::publish_view::parse_publish;
use lepus_protocol::{
    BasicProperties, ContentHeader, FieldTable, FieldValue, FrameType, Method, ShortStr, parse_frame,
};

fn publish_stream(n: usize, body: &[u8], headers: usize) -> Bytes {
    let mut out = BytesMut::new();
    let table = (headers > 0).then(|| {
        (0..headers).fold(FieldTable::new(), |mut t, i| {
            let key = ShortStr::try_from(format!("header-{i}").as_str()).unwrap_or_default();
            t.insert(key, FieldValue::from(format!("value of header {i}").as_str()));
            t
        })
    });
    let props = BasicProperties { delivery_mode: Some(1), headers: table, ..Default::default() }.to_raw();
    for _ in 0..n {
        let m = BasicPublish {
            exchange: ShortStr::from_static(""),
            routing_key: ShortStr::from_static("q"),
            ..Default::default()
        };
        write_method(&mut out, 1, &m.into());
        write_content_header(&mut out, 1, body.len() as u64, &props);
        write_body(&mut out, 1, body, 131_072);
    }
    out.freeze()
}

/// The general inbound path: every frame split off and decoded (with `properties`, the whole
/// property list too, as for a message with headers). Returns the body bytes seen.
fn frame_by_frame(stream: &[u8], properties: bool) -> usize {
    let mut buf = BytesMut::from(stream);
    let mut bodies = 0usize;
    while let Ok(Some(frame)) = parse_frame(&mut buf, 131_072) {
        match frame.frame_type {
            FrameType::Method => {
                let _ = std::hint::black_box(Method::decode(frame.payload));
            }
            FrameType::Header => {
                let header = ContentHeader::decode(frame.payload);
                if properties {
                    let _ = std::hint::black_box(header.map(|h| h.properties()));
                } else {
                    let _ = std::hint::black_box(header);
                }
            }
            _ => bodies += frame.payload.len(),
        }
    }
    bodies
}

/// The broker's hot path: borrowed publish views, one advance each. Returns the body bytes.
fn views(stream: &[u8]) -> usize {
    let (mut at, mut bodies) = (0, 0usize);
    while let Some(view) = parse_publish(&stream[at..], 131_072) {
        bodies += std::hint::black_box(view.body).len();
        at += view.len;
    }
    bodies
}

fn decode_publishes(c: &mut Criterion) {
    const N: usize = 1000;
    let stream = publish_stream(N, &[7u8; 16], 0);
    let with_headers = publish_stream(N, &[7u8; 16], 8);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("publish+header+body 16B", |b| b.iter(|| frame_by_frame(&stream, false)));
    // The broker's hot path for the same input: borrowed views, one buffer advance each.
    g.bench_function("publish view 16B", |b| b.iter(|| views(&stream)));
    // With a headers table of 8 entries (as frameworks send): the general path decodes the
    // whole property list (what `check_properties` does), the view walks the table in place.
    g.bench_function("publish+header+body 16B, 8 headers, properties decoded", |b| {
        b.iter(|| frame_by_frame(&with_headers, true))
    });
    g.bench_function("publish view 16B, 8 headers", |b| b.iter(|| views(&with_headers)));
    g.finish();
}

fn encode_deliveries(c: &mut Criterion) {
    const N: usize = 1000;
    let props = BasicProperties { delivery_mode: Some(1), ..Default::default() }.to_raw();
    let body = [7u8; 16];
    let mut out = BytesMut::with_capacity(N * 128);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("deliver+header+body 16B", |b| {
        b.iter(|| {
            out.clear();
            for tag in 0..N as u64 {
                write_deliver(&mut out, 1, b"amq.ctag-abcdefghijklmnopqrstuv", tag, false, b"", b"q");
                write_content_header(&mut out, 1, body.len() as u64, &props);
                write_body(&mut out, 1, &body, 131_072);
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, decode_publishes, encode_deliveries);
criterion_main!(benches);
