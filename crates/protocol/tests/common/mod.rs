//! The decode loop shared by the fuzz target (`fuzz/fuzz_targets/frames.rs` includes this file
//! with `#[path]`), the corpus regression test and the proptests in `malformed.rs`.
//!
//! It splits `data` into frames with `parse_frame` the way a connection would, decodes every
//! payload as a method, a content header and a property list (whatever its frame type, for
//! coverage), and checks invariants that must hold for any input: frames respect `frame_max`,
//! whatever decodes re-encodes to bytes that decode to the same thing, and the full and the
//! allocation-free content header decoders agree. A panic here is a bug.

// Each test crate and the fuzz target use a different part of this module.
#![allow(dead_code)]

use bytes::BytesMut;
use lepus_protocol::content::peek_body_size;
use lepus_protocol::frame::write_method;
use lepus_protocol::{BasicProperties, ContentHeader, FrameType, Method, ProtocolError, parse_frame};

/// The `frame_max` the fuzz target uses first: small, so oversized frames are reached often,
/// yet big enough for a 1,500-deep table frame (about 10.5 KB).
pub const FUZZ_FRAME_MAX: u32 = 16 * 1024;

/// One fuzz iteration: the fuzz target's whole body, and what the corpus test replays.
pub fn fuzz_one(data: &[u8]) -> [Outcome; 2] {
    [
        decode_all(data, FUZZ_FRAME_MAX),
        // The same bytes against the smallest frame_max a peer may negotiate.
        decode_all(data, lepus_protocol::constants::FRAME_MIN_SIZE),
    ]
}

/// What the loop saw, for tests that want more than "did not panic".
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub frames: usize,
    pub methods: usize,
    pub headers: usize,
    pub bodies: usize,
    pub heartbeats: usize,
    /// The error that ended the stream, if any (a connection would close on it).
    pub error: Option<ProtocolError>,
    /// Bytes left over: the start of an incomplete frame.
    pub leftover: usize,
    /// Decode errors of frames that parsed, each decoded per its frame type (a method frame
    /// as a method, a header frame as a content header).
    pub decode_errors: Vec<ProtocolError>,
}

/// Runs `data` through the frame parser and every payload decoder; see the module docs.
pub fn decode_all(data: &[u8], frame_max: u32) -> Outcome {
    let mut buf = BytesMut::from(data);
    let mut outcome = Outcome::default();
    loop {
        check_publish_view(&buf, frame_max);
        let before = buf.len();
        let frame = match parse_frame(&mut buf, frame_max) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) must not consume input");
                outcome.leftover = buf.len();
                return outcome;
            }
            Err(e) => {
                // Every codec error is a connection-level (hard) error.
                assert!(e.reply_code() >= 500, "{e}: {}", e.reply_code());
                outcome.error = Some(e);
                outcome.leftover = buf.len();
                return outcome;
            }
        };
        outcome.frames += 1;
        assert_eq!(before - buf.len(), frame.payload.len() + 8, "frame consumed wrong length");
        assert!(frame.payload.len() as u64 + 8 <= frame_max as u64, "frame over frame_max");
        let payload = frame.payload;

        let method = Method::decode(payload.clone());
        if let Ok(m) = &method {
            check_method(frame.channel, m);
        }
        let header = ContentHeader::decode(payload.clone());
        if let Ok(h) = &header {
            assert_eq!(peek_body_size(&payload), Some(h.body_size));
            assert_eq!(h.raw_properties, payload.slice(12..));
            // Whatever the allocation-free validator accepts, the full decoder accepts.
            let props = h.properties().expect("ContentHeader accepted properties BasicProperties rejects");
            assert_eq!(props.delivery_mode, h.delivery_mode);
            assert_eq!(props.priority, h.priority);
            assert_eq!(props.expiration, h.expiration);
            assert_eq!(props.timestamp, h.timestamp);
        }
        let props = BasicProperties::decode(payload.clone());
        if let Ok(p) = &props {
            check_properties(p);
        }
        if payload.len() >= 12 && payload[..2] == [0, 60] {
            // The allocation-free validator and the full decoder accept exactly the same
            // property lists.
            let full = BasicProperties::decode(payload.slice(12..));
            assert_eq!(full.is_ok(), header.is_ok(), "decoders disagree: {full:?} vs {header:?}");
        }
        let error = match frame.frame_type {
            FrameType::Method => {
                outcome.methods += 1;
                method.err()
            }
            FrameType::Header => {
                outcome.headers += 1;
                header.err()
            }
            FrameType::Body => {
                outcome.bodies += 1;
                None
            }
            FrameType::Heartbeat => {
                outcome.heartbeats += 1;
                None
            }
        };
        if let Some(e) = error {
            outcome.decode_errors.push(e);
        }
    }
}

/// Where the borrowed publish view accepts the head of the stream, the frame-by-frame decoders
/// accept the same frames and read the same fields, and a headers table it hands on raw decodes
/// to the message's headers (it must never accept what the general path would refuse).
fn check_publish_view(buf: &[u8], frame_max: u32) {
    use lepus_protocol::publish_view::parse_publish;
    let Some(view) = parse_publish(buf, frame_max) else { return };
    assert!(view.len <= buf.len());
    let mut frames = BytesMut::from(&buf[..view.len]);
    let mut next = || parse_frame(&mut frames, frame_max).expect("view's frames parse").expect("complete");
    let method = next();
    let Ok(Method::BasicPublish(m)) = Method::decode(method.payload) else { panic!("view accepted a non-publish") };
    assert!(!m.immediate);
    assert_eq!(
        (m.exchange.as_bytes(), m.routing_key.as_bytes(), m.mandatory),
        (view.exchange, view.routing_key, view.mandatory)
    );
    let header = ContentHeader::decode(next().payload).expect("view accepted a header the decoder refuses");
    assert_eq!(&header.raw_properties[..], view.raw_properties);
    assert_eq!(header.body_size, view.body.len() as u64);
    let props = header.properties().expect("properties decode");
    assert!(props.user_id.is_none() && props.reply_to.is_none());
    let routing_headers = props.headers.as_ref().is_some_and(|h| h.get("CC").is_some() || h.get("BCC").is_some());
    assert!(!routing_headers, "view accepted CC/BCC");
    let raw_headers = view.headers.map(|t| {
        let mut d = lepus_protocol::Decoder::new(bytes::Bytes::copy_from_slice(t), "headers");
        lepus_protocol::table::decode_table(&mut d).expect("view's headers decode")
    });
    // Compared encoded: a NaN float in the table is never equal to itself.
    let encoded = |t: Option<&lepus_protocol::FieldTable>| {
        t.map(|t| {
            let mut out = BytesMut::new();
            lepus_protocol::table::encode_table(t, &mut lepus_protocol::Encoder::new(&mut out));
            out
        })
    };
    assert_eq!(encoded(raw_headers.as_ref()), encoded(props.headers.as_ref()));
    if header.body_size > 0 {
        assert_eq!(&next().payload[..], view.body);
    }
    assert!(frames.is_empty(), "view took more than its frames");
}

/// A decoded method re-encodes to bytes that decode to an identical encoding (compared as
/// bytes, so NaN floats in tables and non-canonical booleans don't matter).
fn check_method(channel: u16, m: &Method) {
    let mut first = BytesMut::new();
    write_method(&mut first, channel, m);
    let frame = parse_frame(&mut first, u32::MAX).expect("re-encoded frame parses").expect("complete");
    let again = Method::decode(frame.payload.clone()).expect("re-encoded method decodes");
    assert_eq!(again.ids(), m.ids());
    let mut second = BytesMut::new();
    again.encode_payload(&mut second);
    assert_eq!(frame.payload.as_ref(), second.as_ref(), "method encoding is not stable");
}

fn check_properties(p: &BasicProperties) {
    let raw = p.to_raw();
    let again = BasicProperties::decode(raw.clone()).expect("re-encoded properties decode");
    assert_eq!(again.to_raw(), raw, "property encoding is not stable");
}
