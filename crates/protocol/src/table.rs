//! Field tables and arrays with RabbitMQ's field types (its AMQP 0-9-1 errata, not the
//! spec's table): `t b B s u I i l f d D S A T F V x`.
//!
//! Decoding and encoding walk nested tables with an explicit, bounded stack: no recursion,
//! so a hostile 1,500-deep table in a 10 KB frame costs a [`ProtocolError::TableTooDeep`]
//! instead of the process (the stack overflow that `amq-protocol`'s recursive parser has).

use bytes::Bytes;

use crate::codec::{Decoder, Encoder};
use crate::constants::{TABLE_DEPTH_MAX, TABLE_VALUES_MAX};
use crate::error::{ProtocolError, Result};
use crate::types::ShortStr;

/// One value in a field table or array.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal { scale: u8, value: u32 },
    LongStr(Bytes),
    Array(Vec<FieldValue>),
    Timestamp(u64),
    Table(FieldTable),
    Void,
    Bytes(Bytes),
}

impl FieldValue {
    /// The type tag on the wire.
    pub fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal { .. } => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
            FieldValue::Bytes(_) => b'x',
        }
    }

    /// The value as an integer, for any integer type (RabbitMQ accepts every integer type
    /// for numeric arguments such as `x-max-length`).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v.into(),
            FieldValue::U8(v) => v.into(),
            FieldValue::I16(v) => v.into(),
            FieldValue::U16(v) => v.into(),
            FieldValue::I32(v) => v.into(),
            FieldValue::U32(v) => v.into(),
            FieldValue::I64(v) => v,
            FieldValue::Timestamp(v) => i64::try_from(v).ok()?,
            _ => return None,
        })
    }

    /// The value as bytes, for `S` and `x`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<bool> for FieldValue {
    fn from(b: bool) -> FieldValue {
        FieldValue::Bool(b)
    }
}

impl From<i64> for FieldValue {
    fn from(v: i64) -> FieldValue {
        FieldValue::I64(v)
    }
}

impl From<FieldTable> for FieldValue {
    fn from(t: FieldTable) -> FieldValue {
        FieldValue::Table(t)
    }
}

/// A field table: ordered entries, as on the wire (duplicate keys are kept; lookups see the
/// first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    pub fn new() -> FieldTable {
        FieldTable(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`, replacing an existing entry.
    pub fn insert(&mut self, key: ShortStr, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Builder-style insert for server-made tables with static keys.
    pub fn with(mut self, key: &'static str, value: impl Into<FieldValue>) -> FieldTable {
        self.insert(ShortStr::from_static(key), value.into());
        self
    }

    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&ShortStr, &FieldValue)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// A table or array being decoded, with where it ends and the key it sits under.
enum Open {
    Table { end: usize, key: Option<ShortStr>, entries: Vec<(ShortStr, FieldValue)> },
    Array { end: usize, key: Option<ShortStr>, items: Vec<FieldValue> },
}

impl Open {
    fn end(&self) -> usize {
        match self {
            Open::Table { end, .. } | Open::Array { end, .. } => *end,
        }
    }

    fn push(&mut self, key: Option<ShortStr>, value: FieldValue) {
        match self {
            Open::Table { entries, .. } => entries.push((key.unwrap_or_default(), value)),
            Open::Array { items, .. } => items.push(value),
        }
    }

    fn close(self) -> (Option<ShortStr>, FieldValue) {
        match self {
            Open::Table { key, entries, .. } => (key, FieldValue::Table(FieldTable(entries))),
            Open::Array { key, items, .. } => (key, FieldValue::Array(items)),
        }
    }
}

/// Reads a scalar value of type `tag`; `None` for the container types `F` and `A`.
fn decode_scalar(tag: u8, d: &mut Decoder) -> Result<Option<FieldValue>> {
    Ok(Some(match tag {
        b't' => FieldValue::Bool(d.u8()? != 0),
        b'b' => FieldValue::I8(d.u8()? as i8),
        b'B' => FieldValue::U8(d.u8()?),
        b's' => FieldValue::I16(d.u16()? as i16),
        b'u' => FieldValue::U16(d.u16()?),
        b'I' => FieldValue::I32(d.u32()? as i32),
        b'i' => FieldValue::U32(d.u32()?),
        b'l' => FieldValue::I64(d.u64()? as i64),
        b'f' => FieldValue::F32(f32::from_bits(d.u32()?)),
        b'd' => FieldValue::F64(f64::from_bits(d.u64()?)),
        b'D' => FieldValue::Decimal { scale: d.u8()?, value: d.u32()? },
        b'S' => FieldValue::LongStr(d.long_str()?.0),
        b'T' => FieldValue::Timestamp(d.u64()?),
        b'V' => FieldValue::Void,
        b'x' => FieldValue::Bytes(d.long_str()?.0),
        b'F' | b'A' => return Ok(None),
        other => return Err(ProtocolError::UnknownFieldType(other)),
    }))
}

/// Reads a container's length prefix and narrows the decoder to it; returns its end.
fn open_container(d: &mut Decoder) -> Result<usize> {
    let len = d.u32()? as usize;
    if len > d.remaining() {
        return Err(ProtocolError::TableOverrun);
    }
    d.end = d.pos + len;
    Ok(d.end)
}

/// Decodes a length-prefixed field table at the decoder's position.
pub fn decode_table(d: &mut Decoder) -> Result<FieldTable> {
    let outer_end = d.end;
    let end = open_container(d).map_err(|_| d.truncated())?;
    let mut stack = Vec::with_capacity(4);
    stack.push(Open::Table { end, key: None, entries: Vec::new() });
    let mut values = 0usize;
    loop {
        let Some(top) = stack.last() else {
            return Err(d.truncated());
        };
        if d.pos == top.end() {
            let Some(done) = stack.pop() else {
                return Err(d.truncated());
            };
            let (key, value) = done.close();
            match stack.last_mut() {
                Some(parent) => {
                    d.end = parent.end();
                    parent.push(key, value);
                }
                None => {
                    d.end = outer_end;
                    return match value {
                        FieldValue::Table(t) => Ok(t),
                        _ => Err(d.truncated()),
                    };
                }
            }
            continue;
        }
        let key = match top {
            Open::Table { .. } => Some(d.short_str().map_err(|_| ProtocolError::TableOverrun)?),
            Open::Array { .. } => None,
        };
        let tag = d.u8().map_err(|_| ProtocolError::TableOverrun)?;
        values += 1;
        if values > TABLE_VALUES_MAX {
            return Err(ProtocolError::TableTooManyValues(TABLE_VALUES_MAX));
        }
        match decode_scalar(tag, d).map_err(overrun)? {
            Some(value) => {
                if let Some(top) = stack.last_mut() {
                    top.push(key, value);
                }
            }
            None => {
                if stack.len() >= TABLE_DEPTH_MAX {
                    return Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX));
                }
                let end = open_container(d)?;
                stack.push(if tag == b'F' {
                    Open::Table { end, key, entries: Vec::new() }
                } else {
                    Open::Array { end, key, items: Vec::new() }
                });
            }
        }
    }
}

/// Inside a container, running out of bytes means the value overran its container.
fn overrun(e: ProtocolError) -> ProtocolError {
    match e {
        ProtocolError::Truncated(_) => ProtocolError::TableOverrun,
        other => other,
    }
}

/// Walks a length-prefixed table without building it: validates types, lengths, depth.
/// Used where a table is kept as raw bytes (the `headers` property) but must be well-formed.
pub fn skip_table(d: &mut Decoder) -> Result<()> {
    let outer_end = d.end;
    let end = open_container(d).map_err(|_| d.truncated())?;
    walk_entries(&d.buf[d.pos..end], d.truncated(), |_| {})?;
    d.pos = end;
    d.end = outer_end;
    Ok(())
}

/// Like [`skip_table`] on a borrowed table (length prefix included, nothing after it), calling
/// `top_key` with each top-level key: the borrowed publish path looks for `CC` and `BCC`
/// without building the table. Accepts exactly what [`skip_table`] and [`decode_table`] accept.
pub fn walk_table(table: &[u8], top_key: impl FnMut(&[u8])) -> Result<()> {
    let len = table.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match len {
        Some(len) if len == table.len() - 4 => walk_entries(&table[4..], ProtocolError::Truncated(WHAT), top_key),
        _ => Err(ProtocolError::Truncated(WHAT)),
    }
}

/// What [`walk_table`] calls the structure in a `Truncated` error.
const WHAT: &str = "field table";

/// The entries of one table (its bytes after the length prefix), nested containers walked with
/// an explicit stack bounded by [`TABLE_DEPTH_MAX`]; the errors are [`decode_table`]'s, with
/// `truncated` where it reports a nested container's length prefix cut short.
fn walk_entries(entries: &[u8], truncated: ProtocolError, mut top_key: impl FnMut(&[u8])) -> Result<()> {
    let take = |pos: &mut usize, end: usize, n: usize| -> Result<usize> {
        let at = *pos;
        if n > end - at {
            return Err(ProtocolError::TableOverrun);
        }
        *pos += n;
        Ok(at)
    };
    let mut ends = [0usize; TABLE_DEPTH_MAX];
    let mut is_table = [false; TABLE_DEPTH_MAX];
    ends[0] = entries.len();
    is_table[0] = true;
    let (mut depth, mut pos, mut values) = (1usize, 0usize, 0usize);
    while depth > 0 {
        let end = ends[depth - 1];
        if pos == end {
            depth -= 1;
            continue;
        }
        if is_table[depth - 1] {
            let len = entries[take(&mut pos, end, 1)?] as usize;
            let key = take(&mut pos, end, len)?;
            if depth == 1 {
                top_key(&entries[key..key + len]);
            }
        }
        let tag = entries[take(&mut pos, end, 1)?];
        values += 1;
        if values > TABLE_VALUES_MAX {
            return Err(ProtocolError::TableTooManyValues(TABLE_VALUES_MAX));
        }
        let prefixed = |pos: &mut usize| -> Result<usize> {
            let at = take(pos, end, 4)?;
            Ok(u32::from_be_bytes([entries[at], entries[at + 1], entries[at + 2], entries[at + 3]]) as usize)
        };
        let fixed = match tag {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'l' | b'd' | b'T' => 8,
            b'V' => 0,
            b'S' | b'x' => prefixed(&mut pos)?,
            b'F' | b'A' => {
                if depth >= TABLE_DEPTH_MAX {
                    return Err(ProtocolError::TableTooDeep(TABLE_DEPTH_MAX));
                }
                // As `open_container`: a cut prefix is `Truncated`, a cut body an overrun.
                let len = prefixed(&mut pos).map_err(|_| truncated.clone())?;
                take(&mut pos, end, len)?;
                ends[depth] = pos;
                is_table[depth] = tag == b'F';
                depth += 1;
                pos -= len;
                continue;
            }
            other => return Err(ProtocolError::UnknownFieldType(other)),
        };
        take(&mut pos, end, fixed)?;
    }
    Ok(())
}

fn encode_scalar(v: &FieldValue, e: &mut Encoder<'_>) {
    e.u8(v.tag());
    match v {
        FieldValue::Bool(b) => e.u8(*b as u8),
        FieldValue::I8(x) => e.u8(*x as u8),
        FieldValue::U8(x) => e.u8(*x),
        FieldValue::I16(x) => e.u16(*x as u16),
        FieldValue::U16(x) => e.u16(*x),
        FieldValue::I32(x) => e.u32(*x as u32),
        FieldValue::U32(x) => e.u32(*x),
        FieldValue::I64(x) => e.u64(*x as u64),
        FieldValue::F32(x) => e.u32(x.to_bits()),
        FieldValue::F64(x) => e.u64(x.to_bits()),
        FieldValue::Decimal { scale, value } => {
            e.u8(*scale);
            e.u32(*value);
        }
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => e.long_str(b),
        FieldValue::Timestamp(x) => e.u64(*x),
        FieldValue::Void | FieldValue::Table(_) | FieldValue::Array(_) => {}
    }
}

enum Walk<'a> {
    Table(std::slice::Iter<'a, (ShortStr, FieldValue)>, usize),
    Array(std::slice::Iter<'a, FieldValue>, usize),
}

/// Writes `table` with its length prefix. Iterative, like decoding.
pub fn encode_table(table: &FieldTable, e: &mut Encoder<'_>) {
    let len_pos = e.out.len();
    e.u32(0);
    let mut stack = vec![Walk::Table(table.0.iter(), len_pos)];
    while let Some(top) = stack.last_mut() {
        let next = match top {
            Walk::Table(it, _) => it.next().map(|(k, v)| {
                e.short_str(k);
                v
            }),
            Walk::Array(it, _) => it.next(),
        };
        match next {
            None => {
                if let Some(Walk::Table(_, pos) | Walk::Array(_, pos)) = stack.pop() {
                    let len = (e.out.len() - pos - 4) as u32;
                    e.out[pos..pos + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
            Some(FieldValue::Table(t)) => {
                e.u8(b'F');
                let pos = e.out.len();
                e.u32(0);
                stack.push(Walk::Table(t.0.iter(), pos));
            }
            Some(FieldValue::Array(a)) => {
                e.u8(b'A');
                let pos = e.out.len();
                e.u32(0);
                stack.push(Walk::Array(a.iter(), pos));
            }
            Some(scalar) => encode_scalar(scalar, e),
        }
    }
}

impl crate::codec::Field for FieldTable {
    fn decode(d: &mut Decoder) -> Result<FieldTable> {
        decode_table(d)
    }
    fn encode(&self, e: &mut Encoder<'_>) {
        encode_table(self, e)
    }
}
