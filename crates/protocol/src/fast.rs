//! Hand-written encoders for the hot server-to-client methods: `basic.deliver`,
//! `basic.get-ok`, `basic.return`, `basic.ack`/`basic.nack` (confirms). They take byte slices
//! straight from a queued message, so a delivery builds no method value and no strings; the
//! generic [`crate::Method`] path is for everything else. Equivalence with the generic
//! encoder is tested below.

use bytes::{BufMut, BytesMut};

use crate::constants::{FRAME_END, FRAME_METHOD};

fn begin(out: &mut BytesMut, channel: u16, class_id: u16, method_id: u16) -> usize {
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(0);
    let size_pos = out.len() - 4;
    out.put_u16(class_id);
    out.put_u16(method_id);
    size_pos
}

fn finish(out: &mut BytesMut, size_pos: usize) {
    let size = (out.len() - size_pos - 4) as u32;
    out[size_pos..size_pos + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

fn short_str(out: &mut BytesMut, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

/// `basic.deliver` (60.60).
pub fn write_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let pos = begin(out, channel, 60, 60);
    short_str(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    short_str(out, exchange);
    short_str(out, routing_key);
    finish(out, pos);
}

/// `basic.get-ok` (60.71).
pub fn write_get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
    message_count: u32,
) {
    let pos = begin(out, channel, 60, 71);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    short_str(out, exchange);
    short_str(out, routing_key);
    out.put_u32(message_count);
    finish(out, pos);
}

/// `basic.return` (60.50).
pub fn write_return(
    out: &mut BytesMut,
    channel: u16,
    reply_code: u16,
    reply_text: &[u8],
    exchange: &[u8],
    routing_key: &[u8],
) {
    let pos = begin(out, channel, 60, 50);
    out.put_u16(reply_code);
    short_str(out, reply_text);
    short_str(out, exchange);
    short_str(out, routing_key);
    finish(out, pos);
}

/// `basic.ack` (60.80), as a publisher confirm.
pub fn write_ack(out: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    let pos = begin(out, channel, 60, 80);
    out.put_u64(delivery_tag);
    out.put_u8(multiple as u8);
    finish(out, pos);
}

/// `basic.nack` (60.120), as a negative publisher confirm.
pub fn write_nack(out: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    let pos = begin(out, channel, 60, 120);
    out.put_u64(delivery_tag);
    out.put_u8(multiple as u8);
    finish(out, pos);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShortStr;
    use crate::frame::write_method;
    use crate::method::*;

    fn generic(channel: u16, m: impl Into<Method>) -> BytesMut {
        let mut out = BytesMut::new();
        write_method(&mut out, channel, &m.into());
        out
    }

    #[test]
    fn fast_encoders_match_the_generic_encoder() {
        let s = |t: &'static str| ShortStr::from_static(t);
        let mut out = BytesMut::new();
        write_deliver(&mut out, 3, b"ctag", 42, true, b"amq.direct", b"rk");
        let m = BasicDeliver {
            consumer_tag: s("ctag"),
            delivery_tag: 42,
            redelivered: true,
            exchange: s("amq.direct"),
            routing_key: s("rk"),
        };
        assert_eq!(out, generic(3, m));

        let mut out = BytesMut::new();
        write_get_ok(&mut out, 1, 7, false, b"", b"q", 9);
        let m =
            BasicGetOk { delivery_tag: 7, redelivered: false, exchange: s(""), routing_key: s("q"), message_count: 9 };
        assert_eq!(out, generic(1, m));

        let mut out = BytesMut::new();
        write_return(&mut out, 2, 312, b"NO_ROUTE", b"x", b"k");
        let m = BasicReturn { reply_code: 312, reply_text: s("NO_ROUTE"), exchange: s("x"), routing_key: s("k") };
        assert_eq!(out, generic(2, m));

        let mut out = BytesMut::new();
        write_ack(&mut out, 1, 5, true);
        assert_eq!(out, generic(1, BasicAck { delivery_tag: 5, multiple: true }));

        let mut out = BytesMut::new();
        write_nack(&mut out, 1, 6, false);
        assert_eq!(out, generic(1, BasicNack { delivery_tag: 6, multiple: false, requeue: false }));
    }
}
