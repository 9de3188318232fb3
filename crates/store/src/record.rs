//! The byte format of segment files, message records and ack files (STORAGE.md has the
//! tables). All integers are little-endian.
//!
//! A record is `len u32 | crc32c u32 | payload`, where `crc32c` covers the payload and the
//! payload is `timestamp_ms u64 | exchange_len u8 | routing_key_len u8 | properties_len u32 |
//! exchange | routing key | raw AMQP properties | body`.

/// Format version written in every file header; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;

pub const SEGMENT_MAGIC: [u8; 8] = *b"LEPUSSEG";
pub const ACK_MAGIC: [u8; 8] = *b"LEPUSACK";
/// `magic[8] | version u32 | reserved u32 | queue_id u64 | segment u32 | reserved u32`.
pub const SEGMENT_HEADER_LEN: u32 = 32;
/// `magic[8] | version u32 | reserved u32`.
pub const ACK_HEADER_LEN: u32 = 16;
/// `len u32 | crc32c u32`.
pub const RECORD_PREFIX_LEN: usize = 8;
/// `timestamp_ms u64 | exchange_len u8 | routing_key_len u8 | properties_len u32`.
pub const PAYLOAD_FIXED_LEN: usize = 14;
/// An ack-file entry with this bit set marks a delivery, not an ack.
pub const DELIVERED_BIT: u32 = 1 << 31;
/// An ack-file entry: `value u32 | !value u32`. The complement makes a torn entry (its tail
/// lost or zero-filled) unreadable instead of turning a delivery mark into an ack.
pub const ACK_ENTRY_LEN: usize = 8;

pub fn encode_ack_entry(value: u32, out: &mut Vec<u8>) {
    AckEntry::plain(value).encode(out);
}

/// Mixed into a return-count entry's check, so that it does not pass as a plain entry
/// (readers before counts skip it).
pub const RETURNS_TAG: u16 = 0xa5a5;

/// A return-count entry's 16-bit check of its value and count; never 0, so a zero-filled
/// tail fails it.
fn returns_check(value: u32, returns: u16) -> u16 {
    let check = (!value as u16) ^ ((!value >> 16) as u16) ^ RETURNS_TAG ^ returns.rotate_left(8);
    check.max(1)
}

/// An ack-file entry as written: `value u32 | second u32`, both little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckEntry {
    value: u32,
    second: u32,
}

impl AckEntry {
    /// A plain entry: an acked offset, or a delivery mark (`offset | DELIVERED_BIT`); its
    /// second word is `!value`.
    pub fn plain(value: u32) -> AckEntry {
        AckEntry { value, second: !value }
    }

    /// A return count: the record at `offset` was delivered and came back `returns` times
    /// (a quorum-typed queue's `x-delivery-count`). The second word is `check << 16 |
    /// returns` ([`returns_check`]), with `value = offset | DELIVERED_BIT`. Were it ever
    /// `!value`, the entry would read as a plain delivery mark: its count lost, nothing else.
    pub fn returns(offset: u32, returns: u16) -> AckEntry {
        let value = offset | DELIVERED_BIT;
        AckEntry { value, second: (u32::from(returns_check(value, returns)) << 16) | u32::from(returns) }
    }

    pub fn encode(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.value.to_le_bytes());
        out.extend_from_slice(&self.second.to_le_bytes());
    }
}

/// What an ack-file entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMeaning {
    /// The record at this offset left the queue for good.
    Gone(u32),
    /// The record at this offset was delivered.
    Delivered(u32),
    /// The record at this offset was delivered and came back this many times.
    Returned(u32, u16),
}

/// The meaning of an ack-file entry, or `None` if it is torn or damaged.
pub fn decode_ack_meaning(entry: &[u8]) -> Option<AckMeaning> {
    let value = u32::from_le_bytes(entry.get(0..4)?.try_into().ok()?);
    let second = u32::from_le_bytes(entry.get(4..8)?.try_into().ok()?);
    let offset = value & !DELIVERED_BIT;
    if second == !value {
        return Some(if value & DELIVERED_BIT != 0 { AckMeaning::Delivered(offset) } else { AckMeaning::Gone(value) });
    }
    let returns = second as u16;
    let checked = returns > 0 && (second >> 16) as u16 == returns_check(value, returns);
    (value & DELIVERED_BIT != 0 && checked).then_some(AckMeaning::Returned(offset, returns))
}

/// The value of an ack-file entry, or `None` if it is torn or damaged.
pub fn decode_ack_entry(entry: &[u8]) -> Option<u32> {
    let value = u32::from_le_bytes(entry.get(0..4)?.try_into().ok()?);
    let check = u32::from_le_bytes(entry.get(4..8)?.try_into().ok()?);
    (check == !value).then_some(value)
}

/// The parts of a message a record holds. `data` is exchange ‖ routing key ‖ properties ‖
/// body, the same layout the broker keeps messages in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordParts<D> {
    pub timestamp_ms: u64,
    pub exchange_len: u8,
    pub routing_key_len: u8,
    pub properties_len: u32,
    pub data: D,
}

impl<D: AsRef<[u8]>> RecordParts<D> {
    /// Bytes the record takes on disk.
    pub fn encoded_len(&self) -> usize {
        RECORD_PREFIX_LEN + PAYLOAD_FIXED_LEN + self.data.as_ref().len()
    }

    /// Appends the record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let data = self.data.as_ref();
        let start = out.len();
        let payload_len = (PAYLOAD_FIXED_LEN + data.len()) as u32;
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.push(self.exchange_len);
        out.push(self.routing_key_len);
        out.extend_from_slice(&self.properties_len.to_le_bytes());
        out.extend_from_slice(data);
        let crc = crc32c::crc32c(&out[start + RECORD_PREFIX_LEN..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Why a record could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the record claims (a torn tail), or no room for a prefix.
    Short,
    /// A length of 0: nothing was ever written here.
    Empty,
    /// The length cannot be a record.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
    /// The lengths inside the payload do not add up.
    BadLayout,
}

/// Decodes the record at the start of `buf`; returns it and its total length.
pub fn decode(buf: &[u8]) -> Result<(RecordParts<&[u8]>, usize), RecordError> {
    if buf.len() < RECORD_PREFIX_LEN {
        return Err(if buf.iter().all(|&b| b == 0) { RecordError::Empty } else { RecordError::Short });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return Err(RecordError::Empty);
    }
    if len < PAYLOAD_FIXED_LEN {
        return Err(RecordError::BadLength);
    }
    let Some(payload) = buf.get(RECORD_PREFIX_LEN..RECORD_PREFIX_LEN + len) else {
        return Err(RecordError::Short);
    };
    if crc32c::crc32c(payload) != crc {
        return Err(RecordError::BadChecksum);
    }
    let timestamp_ms = u64::from_le_bytes(payload[0..8].try_into().map_err(|_| RecordError::BadLayout)?);
    let (exchange_len, routing_key_len) = (payload[8], payload[9]);
    let properties_len = u32::from_le_bytes(payload[10..14].try_into().map_err(|_| RecordError::BadLayout)?);
    let data = &payload[PAYLOAD_FIXED_LEN..];
    if exchange_len as usize + routing_key_len as usize + properties_len as usize > data.len() {
        return Err(RecordError::BadLayout);
    }
    Ok((RecordParts { timestamp_ms, exchange_len, routing_key_len, properties_len, data }, RECORD_PREFIX_LEN + len))
}

pub fn segment_header(queue_id: u64, segment: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&queue_id.to_le_bytes());
    h[24..28].copy_from_slice(&segment.to_le_bytes());
    h
}

pub fn ack_header() -> [u8; ACK_HEADER_LEN as usize] {
    let mut h = [0u8; ACK_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&ACK_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// What a file header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Valid,
    /// Right magic, a version newer than this build reads.
    Newer(u32),
    Invalid,
}

pub fn check_header(buf: &[u8], magic: &[u8; 8]) -> Header {
    if buf.len() < 12 || &buf[0..8] != magic {
        return Header::Invalid;
    }
    match u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) {
        0 => Header::Invalid,
        v if v > FORMAT_VERSION => Header::Newer(v),
        _ => Header::Valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(data: &[u8]) -> RecordParts<&[u8]> {
        RecordParts { timestamp_ms: 42, exchange_len: 1, routing_key_len: 2, properties_len: 3, data }
    }

    #[test]
    fn record_roundtrip() {
        let mut out = Vec::new();
        let p = parts(b"xkkpppbody");
        p.encode(&mut out);
        assert_eq!(out.len(), p.encoded_len());
        let (back, len) = decode(&out).unwrap();
        assert_eq!((back, len), (p, out.len()));
    }

    #[test]
    fn damaged_records_are_refused() {
        let mut out = Vec::new();
        parts(b"xkkpppbody").encode(&mut out);
        assert_eq!(decode(&out[..out.len() - 1]).unwrap_err(), RecordError::Short);
        assert_eq!(decode(&out[..5]).unwrap_err(), RecordError::Short);
        assert_eq!(decode(&[0; 30]).unwrap_err(), RecordError::Empty);
        let mut flipped = out.clone();
        flipped[20] ^= 1;
        assert_eq!(decode(&flipped).unwrap_err(), RecordError::BadChecksum);
        let mut short_len = out.clone();
        short_len[0] = 3;
        assert_eq!(decode(&short_len).unwrap_err(), RecordError::BadLength);
        let mut bad_layout = Vec::new();
        RecordParts { timestamp_ms: 0, exchange_len: 200, routing_key_len: 0, properties_len: 0, data: &b"x"[..] }
            .encode(&mut bad_layout);
        assert_eq!(decode(&bad_layout).unwrap_err(), RecordError::BadLayout);
    }

    #[test]
    fn torn_ack_entries_are_unreadable() {
        let mut out = Vec::new();
        encode_ack_entry(32 | DELIVERED_BIT, &mut out);
        assert_eq!(decode_ack_entry(&out), Some(32 | DELIVERED_BIT));
        for keep in 0..ACK_ENTRY_LEN {
            let mut torn = out[..keep].to_vec();
            torn.resize(ACK_ENTRY_LEN, 0);
            assert_eq!(decode_ack_entry(&torn), None, "torn after {keep} bytes");
        }
    }

    #[test]
    fn return_counts_ride_delivery_marks_and_old_readers_skip_them() {
        let mut out = Vec::new();
        AckEntry::returns(32, 3).encode(&mut out);
        assert_eq!(decode_ack_meaning(&out), Some(AckMeaning::Returned(32, 3)));
        assert_eq!(decode_ack_entry(&out), None, "a reader without counts skips it");
        for keep in 0..ACK_ENTRY_LEN {
            let mut torn = out[..keep].to_vec();
            torn.resize(ACK_ENTRY_LEN, 0);
            assert_eq!(decode_ack_meaning(&torn), None, "torn after {keep} bytes");
        }
        let (mut plain, mut mark) = (Vec::new(), Vec::new());
        encode_ack_entry(32, &mut plain);
        encode_ack_entry(32 | DELIVERED_BIT, &mut mark);
        assert_eq!(decode_ack_meaning(&plain), Some(AckMeaning::Gone(32)));
        assert_eq!(decode_ack_meaning(&mark), Some(AckMeaning::Delivered(32)));
        let mut most = Vec::new();
        AckEntry::returns(8_388_607, u16::MAX).encode(&mut most);
        assert_eq!(decode_ack_meaning(&most), Some(AckMeaning::Returned(8_388_607, u16::MAX)));
    }

    #[test]
    fn headers_carry_magic_and_version() {
        assert_eq!(check_header(&segment_header(7, 3), &SEGMENT_MAGIC), Header::Valid);
        assert_eq!(check_header(&ack_header(), &ACK_MAGIC), Header::Valid);
        assert_eq!(check_header(&ack_header(), &SEGMENT_MAGIC), Header::Invalid);
        let mut newer = ack_header();
        newer[8] = 9;
        assert_eq!(check_header(&newer, &ACK_MAGIC), Header::Newer(9));
    }
}
