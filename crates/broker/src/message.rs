//! A published message as queues hold it: routing information, raw properties and body.
//!
//! A message owns its bytes. Frames arrive as slices of a connection's 64 KiB read buffer; a
//! queued message that kept such a slice would pin the whole buffer, so the exchange, routing
//! key and properties are copied into one small allocation and the body into another (or, for
//! a body spread over several frames, assembled there). Queues share a message by `Arc`.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use lepus_protocol::{BasicProperties, ContentHeader, ProtocolError};

#[derive(Debug)]
pub struct Message {
    /// exchange ‖ routing key ‖ raw properties (flags + list).
    meta: Bytes,
    exchange_len: u8,
    routing_key_len: u8,
    pub body: Bytes,
    pub delivery_mode: u8,
    pub priority: Option<u8>,
    /// The `expiration` property, in milliseconds, if it was a valid number.
    pub expiration_ms: Option<u64>,
}

pub type MessageRef = Arc<Message>;

impl Message {
    /// Builds a message from the pieces of a `basic.publish`. `exchange` and `routing_key`
    /// are at most 255 bytes (they come from shortstrs).
    pub fn new(exchange: &[u8], routing_key: &[u8], header: &ContentHeader, body: Bytes) -> Message {
        Self::with_raw_properties(exchange, routing_key, &header.raw_properties, header, body)
    }

    /// Like [`Message::new`] but with replacement raw properties (used when the broker rewrites
    /// properties, e.g. `reply_to` for direct reply-to or removing `BCC`).
    pub fn with_raw_properties(
        exchange: &[u8],
        routing_key: &[u8],
        raw_properties: &[u8],
        header: &ContentHeader,
        body: Bytes,
    ) -> Message {
        let exchange = &exchange[..exchange.len().min(255)];
        let routing_key = &routing_key[..routing_key.len().min(255)];
        let mut meta = BytesMut::with_capacity(exchange.len() + routing_key.len() + raw_properties.len());
        meta.put_slice(exchange);
        meta.put_slice(routing_key);
        meta.put_slice(raw_properties);
        let expiration_ms = header.expiration.as_ref().and_then(|e| e.as_str()).and_then(|s| s.parse::<u64>().ok());
        Message {
            meta: meta.freeze(),
            exchange_len: exchange.len() as u8,
            routing_key_len: routing_key.len() as u8,
            body,
            delivery_mode: header.delivery_mode.unwrap_or(1),
            priority: header.priority,
            expiration_ms,
        }
    }

    pub fn exchange(&self) -> &[u8] {
        &self.meta[..self.exchange_len as usize]
    }

    pub fn routing_key(&self) -> &[u8] {
        let start = self.exchange_len as usize;
        &self.meta[start..start + self.routing_key_len as usize]
    }

    /// Property flags + property list, byte for byte as published.
    pub fn raw_properties(&self) -> &[u8] {
        &self.meta[self.exchange_len as usize + self.routing_key_len as usize..]
    }

    pub fn raw_properties_bytes(&self) -> Bytes {
        self.meta.slice(self.exchange_len as usize + self.routing_key_len as usize..)
    }

    pub fn properties(&self) -> Result<BasicProperties, ProtocolError> {
        BasicProperties::decode(self.raw_properties_bytes())
    }

    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == 2
    }

    /// Bytes this message costs, for limits and accounting.
    pub fn size(&self) -> usize {
        self.meta.len() + self.body.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus_protocol::ShortStr;

    #[test]
    fn message_keeps_routing_and_properties() {
        let props = BasicProperties {
            delivery_mode: Some(2),
            priority: Some(3),
            expiration: Some(ShortStr::from_static("1500")),
            ..Default::default()
        };
        let raw = props.to_raw();
        let mut payload = BytesMut::new();
        ContentHeader::encode_payload(&mut payload, 5, &raw);
        let header = ContentHeader::decode(payload.freeze()).unwrap();
        let m = Message::new(b"amq.direct", b"key", &header, Bytes::from_static(b"hello"));
        assert_eq!(m.exchange(), b"amq.direct");
        assert_eq!(m.routing_key(), b"key");
        assert_eq!(m.raw_properties(), &raw[..]);
        assert_eq!(m.properties().unwrap(), props);
        assert!(m.is_persistent());
        assert_eq!((m.priority, m.expiration_ms), (Some(3), Some(1500)));
    }
}
