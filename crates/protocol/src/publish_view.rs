//! A borrowed view of one complete, ordinary `basic.publish` at the head of a read buffer:
//! the method frame, its content header and its single body frame, all present.
//!
//! Publishing is the hottest input path. Splitting each of the three frames off the buffer and
//! decoding owned strings costs a reference-count update per frame and per string (about a
//! sixth of the broker's CPU in an S1 profile); this view costs none: it borrows, and the
//! caller advances the buffer past [`PublishView::len`] once the message is handled.
//!
//! It recognises only the common shape and says `None` to everything else (`user_id` or
//! `reply_to` properties and `CC`/`BCC` headers, which the broker must act on; `immediate`; a
//! body in several frames; anything incomplete or malformed). `None` consumes nothing, and the
//! general frame-by-frame path then handles those frames, with its error reporting. A
//! `headers` table is walked, not built: checked exactly as the general path checks it, and
//! handed on as raw bytes for a headers exchange to decode if one is on the route.

use crate::constants::{CLASS_BASIC, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEADER_SIZE, FRAME_METHOD};
use crate::content::{
    FLAG_APP_ID, FLAG_CLUSTER_ID, FLAG_CONTENT_ENCODING, FLAG_CONTENT_TYPE, FLAG_CORRELATION_ID, FLAG_DELIVERY_MODE,
    FLAG_EXPIRATION, FLAG_HEADERS, FLAG_MESSAGE_ID, FLAG_PRIORITY, FLAG_REPLY_TO, FLAG_TIMESTAMP, FLAG_TYPE,
    FLAG_USER_ID,
};

use crate::table::walk_table;

const METHOD_BASIC_PUBLISH: u16 = 40;

/// Property flags the view does not take: the broker acts on those properties (the user id
/// check, direct reply-to), and bits 0–1 are invalid.
const FLAGS_NOT_TAKEN: u16 = FLAG_USER_ID | FLAG_REPLY_TO | 0b11;

/// Header keys that add routing keys (RabbitMQ's sender-selected distribution); `BCC` is
/// also removed before delivery. A message carrying either takes the general path.
pub const ROUTING_HEADERS: [&str; 2] = ["CC", "BCC"];

fn is_routing_header(key: &[u8]) -> bool {
    ROUTING_HEADERS.iter().any(|h| h.as_bytes() == key)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishView<'a> {
    pub channel: u16,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    pub mandatory: bool,
    /// Property flags and list, as received.
    pub raw_properties: &'a [u8],
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub expiration: Option<&'a [u8]>,
    pub timestamp: Option<u64>,
    /// The `headers` table, length prefix included, well-formed and without `CC` or `BCC`.
    pub headers: Option<&'a [u8]>,
    pub body: &'a [u8],
    /// Bytes the frames take at the head of the buffer.
    pub len: usize,
}

/// One frame at `buf[at..]`: (type, channel, payload, bytes taken), if complete, within
/// `frame_max` (whole frame) and properly ended.
fn frame(buf: &[u8], at: usize, frame_max: u32) -> Option<(u8, u16, &[u8], usize)> {
    let head = buf.get(at..at + FRAME_HEADER_SIZE)?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
    // In u64: a size near u32::MAX must not wrap on a 32-bit target.
    let total = FRAME_HEADER_SIZE as u64 + size as u64 + 1;
    if total > frame_max as u64 {
        return None;
    }
    let total = total as usize;
    let whole = buf.get(at..at + total)?;
    if whole[total - 1] != FRAME_END {
        return None;
    }
    Some((head[0], u16::from_be_bytes([head[1], head[2]]), &whole[FRAME_HEADER_SIZE..total - 1], total))
}

/// Reads fields front to back; every read is bounds-checked.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn short_str(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()? as usize;
        self.take(len)
    }

    fn done(&self) -> bool {
        self.pos == self.data.len()
    }
}

/// The complete ordinary publish at the head of `buf`, if there is one (see the module doc).
/// `frame_max` bounds each whole frame, as [`crate::parse_frame`]'s limit does.
pub fn parse_publish(buf: &[u8], frame_max: u32) -> Option<PublishView<'_>> {
    let (kind, channel, method, method_len) = frame(buf, 0, frame_max)?;
    if kind != FRAME_METHOD || channel == 0 {
        return None;
    }
    let mut m = Cursor { data: method, pos: 0 };
    if m.u16()? != CLASS_BASIC || m.u16()? != METHOD_BASIC_PUBLISH {
        return None;
    }
    let _ticket = m.u16()?;
    let exchange = m.short_str()?;
    let routing_key = m.short_str()?;
    let bits = m.u8()?;
    if !m.done() || bits & 0b10 != 0 {
        return None;
    }

    let (kind, header_channel, header, header_len) = frame(buf, method_len, frame_max)?;
    if kind != FRAME_HEADER || header_channel != channel {
        return None;
    }
    let mut h = Cursor { data: header, pos: 0 };
    if h.u16()? != CLASS_BASIC {
        return None;
    }
    let _weight = h.u16()?;
    let body_size = h.u64()?;
    let props_start = h.pos;
    let flags = h.u16()?;
    if flags & FLAGS_NOT_TAKEN != 0 {
        return None;
    }
    let mut view = PublishView {
        channel,
        exchange,
        routing_key,
        mandatory: bits & 1 == 1,
        raw_properties: &header[props_start..],
        delivery_mode: None,
        priority: None,
        expiration: None,
        timestamp: None,
        headers: None,
        body: &[],
        len: method_len + header_len,
    };
    for flag in [
        FLAG_CONTENT_TYPE,
        FLAG_CONTENT_ENCODING,
        FLAG_HEADERS,
        FLAG_DELIVERY_MODE,
        FLAG_PRIORITY,
        FLAG_CORRELATION_ID,
        FLAG_EXPIRATION,
        FLAG_MESSAGE_ID,
        FLAG_TIMESTAMP,
        FLAG_TYPE,
        FLAG_APP_ID,
        FLAG_CLUSTER_ID,
    ] {
        if flags & flag == 0 {
            continue;
        }
        match flag {
            FLAG_DELIVERY_MODE => view.delivery_mode = Some(h.u8()?),
            FLAG_PRIORITY => view.priority = Some(h.u8()?),
            FLAG_EXPIRATION => view.expiration = Some(h.short_str()?),
            FLAG_TIMESTAMP => view.timestamp = Some(h.u64()?),
            FLAG_HEADERS => {
                let start = h.pos;
                let len = h.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
                h.take(len)?;
                let table = &header[start..h.pos];
                let mut routing = false;
                walk_table(table, |key| routing |= is_routing_header(key)).ok()?;
                if routing {
                    return None;
                }
                view.headers = Some(table);
            }
            _ => {
                h.short_str()?;
            }
        }
    }
    if !h.done() {
        return None;
    }

    if body_size > 0 {
        let (kind, body_channel, body, body_len) = frame(buf, view.len, frame_max)?;
        if kind != FRAME_BODY || body_channel != channel || body.len() as u64 != body_size {
            return None;
        }
        view.body = body;
        view.len += body_len;
    }
    Some(view)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::FieldValue;
    use crate::content::{BasicProperties, ContentHeader};
    use crate::frame::{Frame, parse_frame, write_body, write_content_header, write_method};
    use crate::method::{BasicPublish, Method};
    use crate::table::FieldTable;
    use crate::types::ShortStr;

    fn publish(out: &mut BytesMut, channel: u16, props: &BasicProperties, body: &[u8], immediate: bool) {
        let method = BasicPublish {
            ticket: 0,
            exchange: ShortStr::try_from("amq.direct").expect("short"),
            routing_key: ShortStr::try_from("a.key").expect("short"),
            mandatory: true,
            immediate,
        };
        write_method(out, channel, &Method::BasicPublish(method));
        write_content_header(out, channel, body.len() as u64, &props.to_raw());
        write_body(out, channel, body, 4096);
    }

    /// `basic.publish` to the default exchange with an empty key and no flags.
    fn default_publish() -> Method {
        Method::BasicPublish(BasicPublish {
            ticket: 0,
            exchange: ShortStr::default(),
            routing_key: ShortStr::default(),
            mandatory: false,
            immediate: false,
        })
    }

    /// The view agrees with the general decoders on every field it reports.
    #[test]
    fn agrees_with_the_general_path() {
        let props = BasicProperties {
            content_type: Some(ShortStr::try_from("text/plain").expect("short")),
            delivery_mode: Some(2),
            priority: Some(3),
            expiration: Some(ShortStr::try_from("60000").expect("short")),
            timestamp: Some(1_700_000_000),
            app_id: Some(ShortStr::try_from("app").expect("short")),
            headers: Some(FieldTable::new().with("id", "42").with("retries", FieldValue::I32(3))),
            ..BasicProperties::default()
        };
        for body in [&b""[..], b"x", &[7u8; 4000]] {
            let mut buf = BytesMut::new();
            publish(&mut buf, 5, &props, body, false);
            buf.extend_from_slice(b"next");
            let view = parse_publish(&buf, 4096).expect("an ordinary publish");
            assert_eq!(view.len, buf.len() - 4);

            let mut general = buf.clone();
            let Some(Frame { payload, .. }) = parse_frame(&mut general, 4096).expect("frame") else { panic!() };
            let Method::BasicPublish(m) = Method::decode(payload).expect("method") else { panic!() };
            let Some(Frame { payload, .. }) = parse_frame(&mut general, 4096).expect("frame") else { panic!() };
            let header = ContentHeader::decode(payload).expect("header");
            assert_eq!(
                (view.exchange, view.routing_key, view.mandatory),
                (m.exchange.as_bytes(), m.routing_key.as_bytes(), m.mandatory)
            );
            assert_eq!(view.raw_properties, &header.raw_properties[..]);
            assert_eq!(
                (view.delivery_mode, view.priority, view.timestamp),
                (header.delivery_mode, header.priority, header.timestamp)
            );
            assert_eq!(view.expiration, header.expiration.as_ref().map(|e| e.as_bytes()));
            let table = view.headers.expect("headers");
            let mut d = crate::codec::Decoder::new(bytes::Bytes::copy_from_slice(table), "headers");
            assert_eq!(Some(crate::table::decode_table(&mut d).expect("decodes")), props.headers);
            assert_eq!(view.body, body);
        }
    }

    #[test]
    fn declines_what_the_broker_must_look_at_or_reject() {
        let plain = BasicProperties::default();
        let with = |f: fn(&mut BasicProperties)| {
            let mut p = BasicProperties::default();
            f(&mut p);
            p
        };
        let cases: Vec<(&str, BytesMut)> = vec![
            ("CC header", {
                let mut b = BytesMut::new();
                let cc = |p: &mut BasicProperties| {
                    p.headers = Some(FieldTable::new().with("x", 1i64).with("CC", FieldValue::Array(vec!["k".into()])))
                };
                publish(&mut b, 1, &with(cc), b"x", false);
                b
            }),
            ("BCC header", {
                let mut b = BytesMut::new();
                publish(&mut b, 1, &with(|p| p.headers = Some(FieldTable::new().with("BCC", "k"))), b"x", false);
                b
            }),
            ("malformed headers", {
                let mut b = BytesMut::new();
                let mut raw = BytesMut::new();
                raw.extend_from_slice(&FLAG_HEADERS.to_be_bytes());
                raw.extend_from_slice(&[0, 0, 0, 3, 1, b'k', b'?']); // unknown field type '?'
                write_method(&mut b, 1, &default_publish());
                write_content_header(&mut b, 1, 1, &raw);
                write_body(&mut b, 1, b"x", 4096);
                b
            }),
            ("user_id", {
                let mut b = BytesMut::new();
                publish(&mut b, 1, &with(|p| p.user_id = Some(ShortStr::try_from("u").expect("short"))), b"x", false);
                b
            }),
            ("reply_to", {
                let mut b = BytesMut::new();
                publish(&mut b, 1, &with(|p| p.reply_to = Some(ShortStr::try_from("r").expect("short"))), b"x", false);
                b
            }),
            ("immediate", {
                let mut b = BytesMut::new();
                publish(&mut b, 1, &plain, b"x", true);
                b
            }),
            ("body in two frames", {
                let mut b = BytesMut::new();
                publish(&mut b, 1, &plain, &[1u8; 5000], false);
                b
            }),
            ("frame too large for frame_max", {
                let mut b = BytesMut::new();
                write_method(&mut b, 1, &default_publish());
                write_content_header(&mut b, 1, 5000, &plain.to_raw());
                write_body(&mut b, 1, &[1u8; 5000], 8192);
                b
            }),
        ];
        for (what, buf) in cases {
            assert_eq!(parse_publish(&buf, 4096), None, "{what}");
        }

        let mut good = BytesMut::new();
        publish(&mut good, 1, &plain, b"body", false);
        assert!(parse_publish(&good, 4096).is_some());
        // Incomplete at every length, and damaged at every byte: never a wrong view.
        for cut in 0..good.len() {
            assert_eq!(parse_publish(&good[..cut], 4096), None, "cut at {cut}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x80;
            if let Some(view) = parse_publish(&bad, 4096) {
                // Only bytes inside strings, flags-free values or the body may change and
                // still parse; the framing must still be the original one.
                assert_eq!(view.len, good.len(), "flip at {i}");
            }
        }
        // Header on another channel.
        let mut split = BytesMut::new();
        write_method(&mut split, 1, &default_publish());
        write_content_header(&mut split, 2, 1, &plain.to_raw());
        write_body(&mut split, 2, b"x", 4096);
        assert_eq!(parse_publish(&split, 4096), None);
    }
}

/// Random publishes, some damaged: whenever the view accepts bytes, the general decoders accept
/// the same bytes and report the same fields (from a review of the fast path).
#[cfg(test)]
mod agreement_fuzz {
    use bytes::BytesMut;

    use super::*;
    use crate::FieldValue;
    use crate::content::{BasicProperties, ContentHeader};
    use crate::frame::{FrameType, parse_frame, write_body, write_content_header, write_method};
    use crate::method::{BasicPublish, Method};
    use crate::table::FieldTable;
    use crate::types::ShortStr;

    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn an_accepted_view_agrees_with_the_general_decoders() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        for case in 0..50_000u32 {
            let r = next(&mut seed);
            let s = |bit: u64| (r >> bit & 1 == 1).then(|| ShortStr::try_from("ab").expect("short"));
            let props = BasicProperties {
                content_type: s(0),
                content_encoding: s(1),
                delivery_mode: (r >> 2 & 1 == 1).then_some(2),
                priority: (r >> 3 & 1 == 1).then_some(5),
                correlation_id: s(4),
                expiration: s(5),
                message_id: s(6),
                timestamp: (r >> 7 & 1 == 1).then_some(77),
                kind: s(8),
                app_id: s(9),
                cluster_id: s(10),
                headers: match r >> 30 & 7 {
                    0..=2 => None,
                    3 => Some(FieldTable::new()),
                    4 => Some(FieldTable::new().with("task", "t").with("n", FieldValue::I32(1))),
                    5 => Some(FieldTable::new().with("CC", FieldValue::Array(vec!["k2".into()]))),
                    6 => Some(FieldTable::new().with("nested", FieldTable::new().with("BCC", "not top-level"))),
                    _ => Some(FieldTable::new().with("a", "b").with("BCC", FieldValue::Array(Vec::new()))),
                },
                ..Default::default()
            };
            let body = vec![9u8; (r >> 11) as usize % 20];
            let mut buf = BytesMut::new();
            let method = BasicPublish {
                ticket: 0,
                exchange: ShortStr::try_from("x").expect("short"),
                routing_key: ShortStr::try_from("k").expect("short"),
                mandatory: r >> 20 & 1 == 1,
                immediate: false,
            };
            write_method(&mut buf, 3, &Method::BasicPublish(method));
            write_content_header(&mut buf, 3, body.len() as u64, &props.to_raw());
            write_body(&mut buf, 3, &body, 4096);
            for _ in 0..(r >> 24) as usize % 3 {
                let i = next(&mut seed) as usize % buf.len();
                buf[i] ^= 1 << (next(&mut seed) % 8);
            }
            let Some(v) = parse_publish(&buf, 4096) else { continue };
            let mut g = BytesMut::from(&buf[..v.len]);
            let f = parse_frame(&mut g, 4096).expect("frame").expect("complete");
            assert_eq!(f.frame_type, FrameType::Method, "case {case}");
            let Method::BasicPublish(m) = Method::decode(f.payload).expect("method") else { panic!("case {case}") };
            assert!(!m.immediate);
            assert_eq!(
                (m.exchange.as_bytes(), m.routing_key.as_bytes(), m.mandatory),
                (v.exchange, v.routing_key, v.mandatory)
            );
            let f = parse_frame(&mut g, 4096).expect("frame").expect("complete");
            assert_eq!(f.frame_type, FrameType::Header, "case {case}");
            let h = ContentHeader::decode(f.payload).expect("header");
            assert_eq!(h.body_size, v.body.len() as u64);
            assert_eq!((h.delivery_mode, h.priority, h.timestamp), (v.delivery_mode, v.priority, v.timestamp));
            assert_eq!(h.expiration.as_ref().map(|e| e.as_bytes()), v.expiration);
            assert_eq!(&h.raw_properties[..], v.raw_properties);
            let p = h.properties().expect("properties");
            assert!(p.user_id.is_none() && p.reply_to.is_none());
            let routing = p.headers.as_ref().is_some_and(|t| t.get("CC").is_some() || t.get("BCC").is_some());
            assert!(!routing, "case {case}: CC/BCC take the general path");
            let view_headers = v.headers.map(|t| {
                let mut d = crate::codec::Decoder::new(bytes::Bytes::copy_from_slice(t), "headers");
                crate::table::decode_table(&mut d).expect("the view's table decodes")
            });
            assert_eq!(view_headers, p.headers, "case {case}");
            if h.body_size > 0 {
                let f = parse_frame(&mut g, 4096).expect("frame").expect("complete");
                assert_eq!(f.frame_type, FrameType::Body);
                assert_eq!(&f.payload[..], v.body);
            }
            assert!(g.is_empty());
        }
    }
}
