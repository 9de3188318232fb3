//! Cursor-style primitives: [`Decoder`] reads AMQP domains out of a frame payload,
//! [`Encoder`] writes them into an output buffer. Both pack consecutive `bit` fields into
//! octets as the spec requires, so method definitions can list bits like any other field.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};
use crate::types::{LongStr, ShortStr};

/// Reads fields from a payload. Reads never go past `end`, which nested tables narrow.
pub struct Decoder {
    pub(crate) buf: Bytes,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    /// The octet bits are being read from, and the next bit index (8 = none pending).
    bit_octet: u8,
    bit_index: u8,
    what: &'static str,
}

impl Decoder {
    /// `what` names the structure being decoded, for error messages.
    pub fn new(buf: Bytes, what: &'static str) -> Decoder {
        let end = buf.len();
        Decoder { buf, pos: 0, end, bit_octet: 0, bit_index: 8, what }
    }

    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub fn set_what(&mut self, what: &'static str) {
        self.what = what;
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(self.what, n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        self.bit_index = 8;
        if self.remaining() < n {
            return Err(ProtocolError::Truncated(self.what));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A zero-copy slice of the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes> {
        self.take(n)?;
        Ok(self.buf.slice(self.pos - n..self.pos))
    }

    pub fn short_str(&mut self) -> Result<ShortStr> {
        let len = self.u8()? as usize;
        Ok(ShortStr::from_bytes_unchecked(self.bytes(len)?))
    }

    pub fn long_str(&mut self) -> Result<LongStr> {
        let len = self.u32()? as usize;
        Ok(LongStr(self.bytes(len)?))
    }

    pub fn bit(&mut self) -> Result<bool> {
        if self.bit_index >= 8 {
            self.bit_octet = self.u8()?;
            self.bit_index = 0;
        }
        let value = (self.bit_octet >> self.bit_index) & 1 == 1;
        self.bit_index += 1;
        Ok(value)
    }

    pub(crate) fn truncated(&self) -> ProtocolError {
        ProtocolError::Truncated(self.what)
    }
}

/// Writes fields into a buffer, packing consecutive bits into one octet.
pub struct Encoder<'a> {
    pub out: &'a mut BytesMut,
    /// Position of the octet bits are being packed into, and the next bit index.
    bit_pos: usize,
    bit_index: u8,
}

impl<'a> Encoder<'a> {
    pub fn new(out: &'a mut BytesMut) -> Encoder<'a> {
        Encoder { out, bit_pos: 0, bit_index: 8 }
    }

    pub fn u8(&mut self, v: u8) {
        self.bit_index = 8;
        self.out.put_u8(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.bit_index = 8;
        self.out.put_u16(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.bit_index = 8;
        self.out.put_u32(v);
    }

    pub fn u64(&mut self, v: u64) {
        self.bit_index = 8;
        self.out.put_u64(v);
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.bit_index = 8;
        self.out.extend_from_slice(bytes);
    }

    pub fn short_str(&mut self, s: &ShortStr) {
        self.u8(s.len() as u8);
        self.raw(s.as_bytes());
    }

    /// A server-side string that may be longer than a shortstr allows: truncated to 255.
    pub fn short_str_bytes(&mut self, s: &[u8]) {
        let s = &s[..s.len().min(ShortStr::LEN_MAX)];
        self.u8(s.len() as u8);
        self.raw(s);
    }

    pub fn long_str(&mut self, s: &[u8]) {
        self.u32(s.len() as u32);
        self.raw(s);
    }

    pub fn bit(&mut self, v: bool) {
        if self.bit_index >= 8 {
            self.out.put_u8(0);
            self.bit_pos = self.out.len() - 1;
            self.bit_index = 0;
        }
        if v {
            self.out[self.bit_pos] |= 1 << self.bit_index;
        }
        self.bit_index += 1;
    }
}

/// A method argument type: how one field is read and written.
pub trait Field: Sized {
    fn decode(d: &mut Decoder) -> Result<Self>;
    fn encode(&self, e: &mut Encoder<'_>);
}

impl Field for u8 {
    fn decode(d: &mut Decoder) -> Result<u8> {
        d.u8()
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        e.u8(*self)
    }
}

impl Field for u16 {
    fn decode(d: &mut Decoder) -> Result<u16> {
        d.u16()
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        e.u16(*self)
    }
}

impl Field for u32 {
    fn decode(d: &mut Decoder) -> Result<u32> {
        d.u32()
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        e.u32(*self)
    }
}

impl Field for u64 {
    fn decode(d: &mut Decoder) -> Result<u64> {
        d.u64()
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        e.u64(*self)
    }
}

impl Field for bool {
    fn decode(d: &mut Decoder) -> Result<bool> {
        d.bit()
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        e.bit(*self)
    }
}

impl Field for ShortStr {
    fn decode(d: &mut Decoder) -> Result<ShortStr> {
        d.short_str()
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        e.short_str(self)
    }
}

impl Field for LongStr {
    fn decode(d: &mut Decoder) -> Result<LongStr> {
        d.long_str()
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        e.long_str(self.as_bytes())
    }
}
