//! Content headers and the 14 basic properties.
//!
//! The broker keeps a header's raw property bytes (flags + list) and re-emits them verbatim on
//! delivery, so properties reach consumers byte for byte as published. [`ContentHeader::decode`]
//! validates the whole list (including the headers table, without building it) and pulls out
//! only what routing and queues need; [`BasicProperties`] is the full, owned view for the rare
//! paths that need every field.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::{Decoder, Encoder};
use crate::constants::CLASS_BASIC;
use crate::error::{ProtocolError, Result};
use crate::table::{FieldTable, decode_table, encode_table, skip_table};
use crate::types::ShortStr;

pub const FLAG_CONTENT_TYPE: u16 = 1 << 15;
pub const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
pub const FLAG_HEADERS: u16 = 1 << 13;
pub const FLAG_DELIVERY_MODE: u16 = 1 << 12;
pub const FLAG_PRIORITY: u16 = 1 << 11;
pub const FLAG_CORRELATION_ID: u16 = 1 << 10;
pub const FLAG_REPLY_TO: u16 = 1 << 9;
pub const FLAG_EXPIRATION: u16 = 1 << 8;
pub const FLAG_MESSAGE_ID: u16 = 1 << 7;
pub const FLAG_TIMESTAMP: u16 = 1 << 6;
pub const FLAG_TYPE: u16 = 1 << 5;
pub const FLAG_USER_ID: u16 = 1 << 4;
pub const FLAG_APP_ID: u16 = 1 << 3;
pub const FLAG_CLUSTER_ID: u16 = 1 << 2;
/// Bits 1 and 0 (reserved, continuation): basic has 14 properties, so neither may be set.
const FLAGS_INVALID: u16 = 0b11;

/// A decoded content header frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    /// Property flags followed by the property list, exactly as received.
    pub raw_properties: Bytes,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    /// The `expiration` property (a decimal string of milliseconds, per RabbitMQ).
    pub expiration: Option<ShortStr>,
    pub timestamp: Option<u64>,
}

impl ContentHeader {
    pub fn decode(payload: Bytes) -> Result<ContentHeader> {
        let mut d = Decoder::new(payload.clone(), "content header");
        let class_id = d.u16()?;
        if class_id != CLASS_BASIC {
            return Err(ProtocolError::UnknownContentClass(class_id));
        }
        let _weight = d.u16()?;
        let body_size = d.u64()?;
        let props_start = d.pos;
        let flags = d.u16()?;
        if flags & FLAGS_INVALID != 0 {
            return Err(ProtocolError::BadPropertyFlags(flags));
        }
        let mut header = ContentHeader {
            class_id,
            body_size,
            raw_properties: payload.slice(props_start..),
            delivery_mode: None,
            priority: None,
            expiration: None,
            timestamp: None,
        };
        for bit in (2..16).rev() {
            let flag = 1u16 << bit;
            if flags & flag == 0 {
                continue;
            }
            match flag {
                FLAG_HEADERS => skip_table(&mut d)?,
                FLAG_DELIVERY_MODE => header.delivery_mode = Some(d.u8()?),
                FLAG_PRIORITY => header.priority = Some(d.u8()?),
                FLAG_EXPIRATION => header.expiration = Some(d.short_str()?),
                FLAG_TIMESTAMP => header.timestamp = Some(d.u64()?),
                _ => {
                    d.short_str()?;
                }
            }
        }
        d.finish()?;
        Ok(header)
    }

    /// Whether the message asks to be persisted (delivery mode 2).
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    /// The full property set (allocates; for the paths that need `headers` and friends).
    pub fn properties(&self) -> Result<BasicProperties> {
        BasicProperties::decode(self.raw_properties.clone())
    }

    /// Appends a content header payload with the given raw properties.
    pub fn encode_payload(out: &mut BytesMut, body_size: u64, raw_properties: &[u8]) {
        out.put_u16(CLASS_BASIC);
        out.put_u16(0);
        out.put_u64(body_size);
        out.extend_from_slice(raw_properties);
    }
}

/// The 14 properties of the basic class, owned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BasicProperties {
    pub content_type: Option<ShortStr>,
    pub content_encoding: Option<ShortStr>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ShortStr>,
    pub reply_to: Option<ShortStr>,
    pub expiration: Option<ShortStr>,
    pub message_id: Option<ShortStr>,
    pub timestamp: Option<u64>,
    pub kind: Option<ShortStr>,
    pub user_id: Option<ShortStr>,
    pub app_id: Option<ShortStr>,
    pub cluster_id: Option<ShortStr>,
}

impl BasicProperties {
    /// Decodes flags + property list (the part of a content header after `body_size`).
    pub fn decode(raw: Bytes) -> Result<BasicProperties> {
        let mut d = Decoder::new(raw, "content header properties");
        let flags = d.u16()?;
        if flags & FLAGS_INVALID != 0 {
            return Err(ProtocolError::BadPropertyFlags(flags));
        }
        let has = |flag: u16| flags & flag != 0;
        let mut p = BasicProperties::default();
        let s = |d: &mut Decoder, on: bool| if on { d.short_str().map(Some) } else { Ok(None) };
        p.content_type = s(&mut d, has(FLAG_CONTENT_TYPE))?;
        p.content_encoding = s(&mut d, has(FLAG_CONTENT_ENCODING))?;
        if has(FLAG_HEADERS) {
            p.headers = Some(decode_table(&mut d)?);
        }
        if has(FLAG_DELIVERY_MODE) {
            p.delivery_mode = Some(d.u8()?);
        }
        if has(FLAG_PRIORITY) {
            p.priority = Some(d.u8()?);
        }
        p.correlation_id = s(&mut d, has(FLAG_CORRELATION_ID))?;
        p.reply_to = s(&mut d, has(FLAG_REPLY_TO))?;
        p.expiration = s(&mut d, has(FLAG_EXPIRATION))?;
        p.message_id = s(&mut d, has(FLAG_MESSAGE_ID))?;
        if has(FLAG_TIMESTAMP) {
            p.timestamp = Some(d.u64()?);
        }
        p.kind = s(&mut d, has(FLAG_TYPE))?;
        p.user_id = s(&mut d, has(FLAG_USER_ID))?;
        p.app_id = s(&mut d, has(FLAG_APP_ID))?;
        p.cluster_id = s(&mut d, has(FLAG_CLUSTER_ID))?;
        d.finish()?;
        Ok(p)
    }

    fn flags(&self) -> u16 {
        let mut flags = 0;
        let mut set = |on: bool, flag: u16| {
            if on {
                flags |= flag
            }
        };
        set(self.content_type.is_some(), FLAG_CONTENT_TYPE);
        set(self.content_encoding.is_some(), FLAG_CONTENT_ENCODING);
        set(self.headers.is_some(), FLAG_HEADERS);
        set(self.delivery_mode.is_some(), FLAG_DELIVERY_MODE);
        set(self.priority.is_some(), FLAG_PRIORITY);
        set(self.correlation_id.is_some(), FLAG_CORRELATION_ID);
        set(self.reply_to.is_some(), FLAG_REPLY_TO);
        set(self.expiration.is_some(), FLAG_EXPIRATION);
        set(self.message_id.is_some(), FLAG_MESSAGE_ID);
        set(self.timestamp.is_some(), FLAG_TIMESTAMP);
        set(self.kind.is_some(), FLAG_TYPE);
        set(self.user_id.is_some(), FLAG_USER_ID);
        set(self.app_id.is_some(), FLAG_APP_ID);
        set(self.cluster_id.is_some(), FLAG_CLUSTER_ID);
        flags
    }

    /// Appends flags + property list.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut e = Encoder::new(out);
        e.u16(self.flags());
        let s = |e: &mut Encoder<'_>, v: &Option<ShortStr>| {
            if let Some(v) = v {
                e.short_str(v)
            }
        };
        s(&mut e, &self.content_type);
        s(&mut e, &self.content_encoding);
        if let Some(h) = &self.headers {
            encode_table(h, &mut e);
        }
        if let Some(v) = self.delivery_mode {
            e.u8(v);
        }
        if let Some(v) = self.priority {
            e.u8(v);
        }
        s(&mut e, &self.correlation_id);
        s(&mut e, &self.reply_to);
        s(&mut e, &self.expiration);
        s(&mut e, &self.message_id);
        if let Some(v) = self.timestamp {
            e.u64(v);
        }
        s(&mut e, &self.kind);
        s(&mut e, &self.user_id);
        s(&mut e, &self.app_id);
        s(&mut e, &self.cluster_id);
    }

    /// The encoded flags + property list as one buffer.
    pub fn to_raw(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32);
        self.encode(&mut out);
        out.freeze()
    }
}

/// Reads the `body_size` out of a content header payload without decoding the rest.
pub fn peek_body_size(mut payload: &[u8]) -> Option<u64> {
    if payload.len() < 12 {
        return None;
    }
    payload.advance(4);
    Some(payload.get_u64())
}
