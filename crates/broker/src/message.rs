//! A published message as queues hold it: routing information, raw properties and body, in
//! one allocation.
//!
//! Frames arrive as slices of a connection's read buffer; a queued message that kept such a
//! slice would pin the whole buffer. So the connection builds each message into its own
//! buffer while its frames arrive ([`MessageBuilder`]): exchange ‖ routing key ‖ raw
//! properties ‖ body. That is one allocation and one copy of the body per message, shared by
//! every queue it is routed to through an `Arc`.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use lepus_protocol::{BasicProperties, ContentHeader, FieldValue, ProtocolError, ShortStr};
use lepus_store::record::RecordParts;

/// Body bytes reserved up front from a header's `body_size` claim; larger bodies grow as
/// their frames actually arrive (a claim alone never commits much memory).
const BODY_RESERVE_MAX: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct Message {
    /// exchange ‖ routing key ‖ raw properties ‖ body.
    data: Bytes,
    exchange_len: u8,
    routing_key_len: u8,
    properties_len: u32,
    pub delivery_mode: u8,
    pub priority: Option<u8>,
    /// The `expiration` property, in milliseconds, if it was a valid number.
    pub expiration_ms: Option<u64>,
    /// Routing keys from the `BCC` header, which was removed before the message was queued:
    /// dead-lettering routes by them again, as RabbitMQ (not kept across a restart).
    bcc_keys: Option<Box<[Bytes]>>,
}

pub type MessageRef = Arc<Message>;

/// What a message keeps from its content header besides the raw properties.
#[derive(Debug, Clone, Copy)]
pub struct HeaderFields<'a> {
    pub body_size: u64,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    /// The `expiration` property as sent (a decimal string of milliseconds).
    pub expiration: Option<&'a [u8]>,
}

/// Fills a message's buffer while its body frames arrive.
#[derive(Debug)]
pub struct MessageBuilder {
    buf: BytesMut,
    exchange_len: u8,
    routing_key_len: u8,
    properties_len: u32,
    body_start: usize,
    delivery_mode: u8,
    priority: Option<u8>,
    expiration_ms: Option<u64>,
}

impl MessageBuilder {
    /// Starts a message for `header`, with these routing data and raw properties.
    pub fn new(exchange: &[u8], routing_key: &[u8], raw_properties: &[u8], header: &ContentHeader) -> MessageBuilder {
        let fields = HeaderFields {
            body_size: header.body_size,
            delivery_mode: header.delivery_mode,
            priority: header.priority,
            expiration: header.expiration.as_ref().map(|e| e.as_bytes()),
        };
        Self::with_fields(exchange, routing_key, raw_properties, &fields)
    }

    /// Like [`MessageBuilder::new`], from the header fields alone (the borrowed publish path).
    pub fn with_fields(
        exchange: &[u8],
        routing_key: &[u8],
        raw_properties: &[u8],
        fields: &HeaderFields<'_>,
    ) -> MessageBuilder {
        let exchange = &exchange[..exchange.len().min(255)];
        let routing_key = &routing_key[..routing_key.len().min(255)];
        let meta_len = exchange.len() + routing_key.len() + raw_properties.len();
        let mut buf = BytesMut::with_capacity(meta_len + fields.body_size.min(BODY_RESERVE_MAX) as usize);
        buf.put_slice(exchange);
        buf.put_slice(routing_key);
        buf.put_slice(raw_properties);
        let expiration_ms =
            fields.expiration.and_then(|e| std::str::from_utf8(e).ok()).and_then(|s| s.parse::<u64>().ok());
        MessageBuilder {
            buf,
            exchange_len: exchange.len() as u8,
            routing_key_len: routing_key.len() as u8,
            properties_len: raw_properties.len() as u32,
            body_start: meta_len,
            delivery_mode: fields.delivery_mode.unwrap_or(1),
            priority: fields.priority,
            expiration_ms,
        }
    }

    pub fn push_body(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    pub fn body_len(&self) -> u64 {
        (self.buf.len() - self.body_start) as u64
    }

    pub fn finish(self) -> Message {
        Message {
            data: self.buf.freeze(),
            exchange_len: self.exchange_len,
            routing_key_len: self.routing_key_len,
            properties_len: self.properties_len,
            delivery_mode: self.delivery_mode,
            priority: self.priority,
            expiration_ms: self.expiration_ms,
            bcc_keys: None,
        }
    }
}

impl Message {
    /// A message from complete parts (tests, and property rewrites).
    pub fn new(exchange: &[u8], routing_key: &[u8], header: &ContentHeader, body: impl AsRef<[u8]>) -> Message {
        Self::with_raw_properties(exchange, routing_key, &header.raw_properties, header, body)
    }

    /// Like [`Message::new`] with replacement raw properties (direct reply-to rewrites
    /// `reply_to`, `BCC` is removed before delivery).
    pub fn with_raw_properties(
        exchange: &[u8],
        routing_key: &[u8],
        raw_properties: &[u8],
        header: &ContentHeader,
        body: impl AsRef<[u8]>,
    ) -> Message {
        let mut b = MessageBuilder::new(exchange, routing_key, raw_properties, header);
        b.push_body(body.as_ref());
        b.finish()
    }

    /// A message with these properties (dead-lettering rewrites headers and expiration).
    pub fn with_properties(exchange: &[u8], routing_key: &[u8], props: &BasicProperties, body: &[u8]) -> Message {
        let raw = props.to_raw();
        let fields = HeaderFields {
            body_size: body.len() as u64,
            delivery_mode: props.delivery_mode,
            priority: props.priority,
            expiration: props.expiration.as_ref().map(|e| e.as_bytes()),
        };
        let mut b = MessageBuilder::with_fields(exchange, routing_key, &raw, &fields);
        b.push_body(body);
        b.finish()
    }

    /// The message with `key` set in its headers (the rest as it was). A message whose
    /// properties do not parse is returned as it is.
    pub fn with_header(&self, key: &'static str, value: FieldValue) -> Message {
        let Ok(mut props) = self.properties() else { return self.clone_parts() };
        let mut headers = props.headers.take().unwrap_or_default();
        headers.insert(ShortStr::from_static(key), value);
        props.headers = Some(headers);
        Message::with_properties(self.exchange(), self.routing_key(), &props, self.body())
            .with_bcc_keys(self.bcc_keys().to_vec())
    }

    /// A copy sharing this message's buffer.
    fn clone_parts(&self) -> Message {
        Message {
            data: self.data.clone(),
            exchange_len: self.exchange_len,
            routing_key_len: self.routing_key_len,
            properties_len: self.properties_len,
            delivery_mode: self.delivery_mode,
            priority: self.priority,
            expiration_ms: self.expiration_ms,
            bcc_keys: self.bcc_keys.clone(),
        }
    }

    /// The message with the keys its `BCC` header had (see `bcc_keys`).
    pub fn with_bcc_keys(mut self, keys: Vec<Bytes>) -> Message {
        self.bcc_keys = (!keys.is_empty()).then(|| keys.into_boxed_slice());
        self
    }

    /// The keys its `BCC` header had.
    pub fn bcc_keys(&self) -> &[Bytes] {
        self.bcc_keys.as_deref().unwrap_or(&[])
    }

    pub fn exchange(&self) -> &[u8] {
        &self.data[..self.exchange_len as usize]
    }

    pub fn routing_key(&self) -> &[u8] {
        let start = self.exchange_len as usize;
        &self.data[start..start + self.routing_key_len as usize]
    }

    fn properties_start(&self) -> usize {
        self.exchange_len as usize + self.routing_key_len as usize
    }

    fn body_start(&self) -> usize {
        self.properties_start() + self.properties_len as usize
    }

    /// Property flags + property list, byte for byte as published.
    pub fn raw_properties(&self) -> &[u8] {
        &self.data[self.properties_start()..self.body_start()]
    }

    pub fn body(&self) -> &[u8] {
        &self.data[self.body_start()..]
    }

    /// The body as shared bytes: a reference to this message's buffer, not a copy.
    pub fn body_bytes(&self) -> Bytes {
        self.data.slice(self.body_start()..)
    }

    pub fn properties(&self) -> Result<BasicProperties, ProtocolError> {
        BasicProperties::decode(self.data.slice(self.properties_start()..self.body_start()))
    }

    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == 2
    }

    /// Bytes this message costs, for limits and accounting.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// The message as a message-store record, stamped with `timestamp_ms`.
    pub fn record(&self, timestamp_ms: u64) -> RecordParts<&[u8]> {
        RecordParts {
            timestamp_ms,
            exchange_len: self.exchange_len,
            routing_key_len: self.routing_key_len,
            properties_len: self.properties_len,
            data: &self.data,
        }
    }

    /// A message read back from the message store. The properties are parsed once for
    /// what queues need (delivery mode, priority, expiration); a record whose properties do
    /// not parse keeps them raw and counts as persistent (it was stored because it was).
    pub fn from_record(parts: RecordParts<Vec<u8>>) -> Message {
        let data = Bytes::from(parts.data);
        let start = parts.exchange_len as usize + parts.routing_key_len as usize;
        let end = start + parts.properties_len as usize;
        let props = data.get(start..end).and_then(|_| BasicProperties::decode(data.slice(start..end)).ok());
        let expiration_ms = props
            .as_ref()
            .and_then(|p| p.expiration.as_ref())
            .and_then(|e| e.as_str())
            .and_then(|s| s.parse::<u64>().ok());
        Message {
            exchange_len: parts.exchange_len,
            routing_key_len: parts.routing_key_len,
            properties_len: parts.properties_len,
            delivery_mode: props.as_ref().and_then(|p| p.delivery_mode).unwrap_or(2),
            priority: props.as_ref().and_then(|p| p.priority),
            expiration_ms,
            data,
            bcc_keys: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus_protocol::ShortStr;

    fn header(props: &BasicProperties, body_size: u64) -> ContentHeader {
        let mut payload = BytesMut::new();
        ContentHeader::encode_payload(&mut payload, body_size, &props.to_raw());
        ContentHeader::decode(payload.freeze()).unwrap()
    }

    #[test]
    fn message_keeps_routing_and_properties() {
        let props = BasicProperties {
            delivery_mode: Some(2),
            priority: Some(3),
            expiration: Some(ShortStr::from_static("1500")),
            ..Default::default()
        };
        let m = Message::new(b"amq.direct", b"key", &header(&props, 5), b"hello");
        assert_eq!(m.exchange(), b"amq.direct");
        assert_eq!(m.routing_key(), b"key");
        assert_eq!(m.raw_properties(), &props.to_raw()[..]);
        assert_eq!(m.body(), b"hello");
        assert_eq!(m.properties().unwrap(), props);
        assert!(m.is_persistent());
        assert_eq!((m.priority, m.expiration_ms), (Some(3), Some(1500)));
    }

    #[test]
    fn record_roundtrip_keeps_message() {
        let props = BasicProperties { delivery_mode: Some(2), priority: Some(4), ..Default::default() };
        let m = Message::new(b"x", b"key", &header(&props, 3), b"abc");
        let r = m.record(77);
        let back = Message::from_record(RecordParts {
            timestamp_ms: r.timestamp_ms,
            exchange_len: r.exchange_len,
            routing_key_len: r.routing_key_len,
            properties_len: r.properties_len,
            data: r.data.to_vec(),
        });
        assert_eq!((back.exchange(), back.routing_key(), back.body()), (&b"x"[..], &b"key"[..], &b"abc"[..]));
        assert_eq!(back.raw_properties(), m.raw_properties());
        assert_eq!((back.delivery_mode, back.priority), (2, Some(4)));
    }

    #[test]
    fn builder_assembles_body_frames() {
        let props = BasicProperties::default();
        let h = header(&props, 7);
        let mut b = MessageBuilder::new(b"", b"q", &h.raw_properties, &h);
        b.push_body(b"abc");
        b.push_body(b"defg");
        assert_eq!(b.body_len(), 7);
        let m = b.finish();
        assert_eq!((m.exchange(), m.routing_key(), m.body()), (&b""[..], &b"q"[..], &b"abcdefg"[..]));
        assert_eq!(m.size(), 1 + 2 + 7);
    }
}
