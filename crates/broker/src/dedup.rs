//! Message deduplication, as the rabbitmq-message-deduplication plugin defines it: a message's
//! `x-deduplication-header` value identifies it; a deduplication exchange
//! (`x-message-deduplication`, see [`crate::exchange::dedup`]) routes a value it has seen
//! within its cache's lifetime nowhere, and a queue declared with `x-message-deduplication:
//! true` refuses a message whose value a message still in the queue carries.
//!
//! - [`DedupKey`]: a header value as the plugin compares them (Erlang terms: every integer
//!   type is one integer, a long string and a byte array are one binary, a float differs from
//!   an integer). Arrays, tables and decimals identify nothing (the plugin fails on them); a
//!   string longer than [`KEY_MAX_BYTES`] identifies nothing either (logged once per cache).
//! - [`Cache`]: an exchange's cache: at most `x-cache-size` entries (at most
//!   [`CACHE_SIZE_MAX`]), the oldest evicted first when full; each entry lives its TTL (the
//!   message's `x-cache-ttl` header, else the exchange's `x-cache-ttl`, else for ever) on the
//!   broker's clock. Expired entries leave when the cache is next used, in deadline order
//!   from an index: no scan, no timer.
//! - A durable exchange's cache with `x-cache-persistence: disk` writes each entry to a journal,
//!   a message log of the store ([`Cache::set_journal`]): an entry is a record (its encoded key,
//!   its deadline as the record's stamp) appended when cached and forgotten when evicted or
//!   expired, so the group commit makes it durable no later than a message routed after it, and
//!   the cache comes back at start ([`Cache::restore`]).
//! - [`QueueKeys`]: a queue's keys of the messages it holds (ready or unacknowledged), by
//!   message `seq`, removed when the message leaves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use lepus_protocol::{FieldTable, FieldValue};
use lepus_store::log::{Loc, QueueLog};
use lepus_store::record::RecordParts;

/// The message header whose value identifies a message.
pub const HEADER: &str = "x-deduplication-header";

/// The message header that overrides an exchange's `x-cache-ttl` for its message.
pub const TTL_HEADER: &str = "x-cache-ttl";

/// The longest header value that identifies a message; a longer one is not deduplicated.
pub const KEY_MAX_BYTES: usize = 1024;

/// The largest exchange cache: a larger `x-cache-size` is lowered to it (logged).
pub const CACHE_SIZE_MAX: u64 = 1_000_000;

/// A deduplication header's value, compared as the plugin compares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DedupKey {
    /// A long string or byte array.
    Binary(Box<[u8]>),
    /// Any integer type, or a timestamp.
    Integer(i64),
    /// A float or double, by its bits as a double.
    Float(u64),
    Bool(bool),
    Void,
}

/// Why a header value identifies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefused {
    /// No header, or a type that identifies nothing (array, table, decimal).
    Absent,
    /// A string longer than [`KEY_MAX_BYTES`].
    TooLong,
}

/// The key of a message with `headers`.
pub fn key(headers: Option<&FieldTable>) -> Result<DedupKey, KeyRefused> {
    let value = headers.and_then(|h| h.get(HEADER)).ok_or(KeyRefused::Absent)?;
    Ok(match value {
        FieldValue::LongStr(b) | FieldValue::Bytes(b) if b.len() > KEY_MAX_BYTES => return Err(KeyRefused::TooLong),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => DedupKey::Binary(Box::from(&b[..])),
        FieldValue::F32(f) => DedupKey::Float(f64::from(*f).to_bits()),
        FieldValue::F64(f) => DedupKey::Float(f.to_bits()),
        FieldValue::Bool(b) => DedupKey::Bool(*b),
        FieldValue::Void => DedupKey::Void,
        other => DedupKey::Integer(other.as_i64().ok_or(KeyRefused::Absent)?),
    })
}

/// The `x-cache-ttl` header of a message: an integer (any type), in milliseconds.
pub fn message_ttl_ms(headers: Option<&FieldTable>) -> Option<i64> {
    headers?.get(TTL_HEADER)?.as_i64()
}

/// One entry's place in the cache's two orders.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Insertion order (eviction takes the lowest).
    order: u64,
    /// When it expires (`u64::MAX`: never).
    expires_at_ms: u64,
    /// Its record in the journal, if the cache has one.
    loc: Option<Loc>,
}

/// A deduplication exchange's cache of the keys it routed (see the module doc).
#[derive(Debug)]
pub struct Cache {
    size_max: usize,
    ttl_ms: Option<u64>,
    entries: HashMap<Arc<DedupKey>, Slot>,
    /// Insertion order → key.
    by_order: BTreeMap<u64, Arc<DedupKey>>,
    /// (deadline, order) of the entries that expire.
    by_deadline: BTreeSet<(u64, u64)>,
    next_order: u64,
    /// Whether a too long header was logged already.
    warned: bool,
    /// Where a durable cache writes its entries.
    journal: Option<QueueLog>,
}

impl Cache {
    /// A cache of at most `size` entries (at most [`CACHE_SIZE_MAX`]) that keep for `ttl_ms`
    /// unless a message says otherwise (`None`: for ever).
    pub fn new(size: u64, ttl_ms: Option<u64>) -> Cache {
        Cache {
            size_max: size.clamp(1, CACHE_SIZE_MAX) as usize,
            ttl_ms,
            entries: HashMap::new(),
            by_order: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            next_order: 0,
            warned: false,
            journal: None,
        }
    }

    /// Writes entries to `journal` from now on (a durable exchange's `disk` cache).
    pub fn set_journal(&mut self, journal: QueueLog) {
        self.journal = Some(journal);
    }

    /// Whether the cache writes a journal.
    pub fn has_journal(&self) -> bool {
        self.journal.is_some()
    }

    /// The journal, if the cache has one (taken when the exchange is deleted).
    pub fn take_journal(&mut self) -> Option<QueueLog> {
        self.journal.take()
    }

    /// An entry read back from the journal (set first) at `loc`, in the order they were
    /// written: kept as the oldest so far (expired ones leave at the next use); an unreadable
    /// record or a repeated key is forgotten.
    pub fn restore(&mut self, record: Option<&RecordParts<Vec<u8>>>, loc: Loc) {
        match record.and_then(|r| Some((decode_key(&r.data)?, r.timestamp_ms))) {
            Some((key, expires_at_ms)) if !self.entries.contains_key(&key) => {
                self.insert_at(key, expires_at_ms, Some(loc));
            }
            _ => self.forget(Slot { order: 0, expires_at_ms: 0, loc: Some(loc) }),
        }
    }

    /// How many entries it holds (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a message with `headers` is a duplicate at `now_ms`: its key is cached and not
    /// expired. If not, its key is cached (evicting the oldest entry if the cache is full)
    /// for its TTL. A message without a usable key is never a duplicate.
    pub fn is_duplicate(&mut self, headers: Option<&FieldTable>, now_ms: u64, what: &str) -> bool {
        let key = match key(headers) {
            Ok(key) => key,
            Err(KeyRefused::Absent) => return false,
            Err(KeyRefused::TooLong) => {
                self.warn_too_long(what);
                return false;
            }
        };
        self.expire(now_ms);
        if self.entries.contains_key(&key) {
            return true;
        }
        let ttl = message_ttl_ms(headers).or_else(|| self.ttl_ms.map(|t| t.min(i64::MAX as u64) as i64));
        let expires_at_ms = match ttl {
            // Expired at once, as in the plugin: nothing to keep.
            Some(t) if t <= 0 => return false,
            Some(t) => now_ms.saturating_add(t as u64),
            None => u64::MAX,
        };
        self.insert(key, expires_at_ms);
        false
    }

    fn insert(&mut self, key: DedupKey, expires_at_ms: u64) {
        let loc = self.journal.as_mut().map(|journal| {
            let data = encode_key(&key);
            let record = RecordParts {
                timestamp_ms: expires_at_ms,
                exchange_len: 0,
                routing_key_len: 0,
                properties_len: 0,
                data: &data[..],
            };
            journal.append(&record).0
        });
        self.insert_at(key, expires_at_ms, loc);
    }

    fn insert_at(&mut self, key: DedupKey, expires_at_ms: u64, loc: Option<Loc>) {
        while self.entries.len() >= self.size_max {
            let Some((_, oldest)) = self.by_order.pop_first() else { break };
            self.remove(&oldest);
        }
        let order = self.next_order;
        self.next_order += 1;
        let key = Arc::new(key);
        self.entries.insert(key.clone(), Slot { order, expires_at_ms, loc });
        self.by_order.insert(order, key);
        if expires_at_ms != u64::MAX {
            self.by_deadline.insert((expires_at_ms, order));
        }
    }

    /// Removes `key` from the entries, the deadline index and the journal (not from
    /// `by_order`).
    fn remove(&mut self, key: &DedupKey) {
        let Some(slot) = self.entries.remove(key) else { return };
        if slot.expires_at_ms != u64::MAX {
            self.by_deadline.remove(&(slot.expires_at_ms, slot.order));
        }
        self.forget(slot);
    }

    fn forget(&mut self, slot: Slot) {
        if let (Some(journal), Some(loc)) = (self.journal.as_mut(), slot.loc) {
            journal.forget(loc);
        }
    }

    /// Removes the entries expired at `now_ms` (their deadline is at or before it).
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(deadline, order)) = self.by_deadline.first() {
            if deadline > now_ms {
                break;
            }
            self.by_deadline.pop_first();
            if let Some(slot) = self.by_order.remove(&order).and_then(|key| self.entries.remove(&key)) {
                self.forget(slot);
            }
        }
    }

    #[cold]
    fn warn_too_long(&mut self, what: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                exchange = what,
                limit = KEY_MAX_BYTES,
                "x-deduplication-header longer than the limit: such messages are not deduplicated"
            );
        }
    }
}

/// A key as a journal record holds it: a type byte, then the value.
fn encode_key(key: &DedupKey) -> Vec<u8> {
    match key {
        DedupKey::Binary(b) => [&b"S"[..], b].concat(),
        DedupKey::Integer(i) => [&b"I"[..], &i.to_be_bytes()].concat(),
        DedupKey::Float(bits) => [&b"F"[..], &bits.to_be_bytes()].concat(),
        DedupKey::Bool(b) => vec![b'B', u8::from(*b)],
        DedupKey::Void => vec![b'V'],
    }
}

/// A key from a journal record (`None` for a record this broker did not write).
fn decode_key(data: &[u8]) -> Option<DedupKey> {
    let (&tag, value) = data.split_first()?;
    let word = || value.try_into().ok().map(u64::from_be_bytes);
    Some(match tag {
        b'S' if value.len() <= KEY_MAX_BYTES => DedupKey::Binary(Box::from(value)),
        b'I' => DedupKey::Integer(word()? as i64),
        b'F' => DedupKey::Float(word()?),
        b'B' => DedupKey::Bool(*value.first()? != 0),
        b'V' => DedupKey::Void,
        _ => return None,
    })
}

/// A deduplication queue's keys: those of the messages it holds, ready or unacknowledged.
#[derive(Debug, Default)]
pub struct QueueKeys {
    /// Key → the `seq` of the message carrying it.
    by_key: HashMap<Arc<DedupKey>, u64>,
    by_seq: HashMap<u64, Arc<DedupKey>>,
    warned: bool,
}

impl QueueKeys {
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Whether a message in the queue carries `key`.
    pub fn contains(&self, key: &DedupKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// The message `seq`, entering the queue, carries `key`.
    pub fn insert(&mut self, key: DedupKey, seq: u64) {
        let key = Arc::new(key);
        if let Some(previous) = self.by_key.insert(key.clone(), seq) {
            // Two recovered messages with one key (published before the queue deduplicated,
            // or a restart between): the later one holds it.
            self.by_seq.remove(&previous);
        }
        self.by_seq.insert(seq, key);
    }

    /// The message `seq` left the queue: its key is free again.
    pub fn remove(&mut self, seq: u64) {
        if let Some(key) = self.by_seq.remove(&seq) {
            self.by_key.remove(&key);
        }
    }

    /// Every message left (a purge, as the plugin flushes its cache, or a deletion).
    pub fn clear(&mut self) {
        *self = QueueKeys { warned: self.warned, ..QueueKeys::default() };
    }

    /// The key of a message with `headers` for the queue `what` names, logging a too long one
    /// once.
    pub fn key_of(&mut self, headers: Option<&FieldTable>, what: impl FnOnce() -> String) -> Option<DedupKey> {
        match key(headers) {
            Ok(key) => Some(key),
            Err(KeyRefused::Absent) => None,
            Err(KeyRefused::TooLong) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        queue = what(),
                        limit = KEY_MAX_BYTES,
                        "x-deduplication-header longer than the limit: such messages are not deduplicated"
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn h(value: FieldValue) -> FieldTable {
        FieldTable::new().with(HEADER, value)
    }

    fn text(s: &'static str) -> FieldTable {
        h(FieldValue::LongStr(Bytes::from_static(s.as_bytes())))
    }

    #[test]
    fn keys_compare_as_the_plugin_s_erlang_terms() {
        let k = |v: FieldValue| key(Some(&h(v)));
        assert_eq!(k(FieldValue::I8(7)), k(FieldValue::I64(7)), "every integer type is one integer");
        assert_eq!(k(FieldValue::LongStr(Bytes::from_static(b"a"))), k(FieldValue::Bytes(Bytes::from_static(b"a"))));
        assert_ne!(k(FieldValue::I32(1)), k(FieldValue::F64(1.0)), "a float is not an integer");
        assert_ne!(k(FieldValue::I32(1)), k(FieldValue::LongStr(Bytes::from_static(b"1"))));
        assert_eq!(k(FieldValue::F32(0.5)), k(FieldValue::F64(0.5)));
        assert_eq!(key(None), Err(KeyRefused::Absent));
        assert_eq!(k(FieldValue::Array(Vec::new())), Err(KeyRefused::Absent));
        assert_eq!(k(FieldValue::Decimal { scale: 1, value: 5 }), Err(KeyRefused::Absent));
        let long = Bytes::from(vec![b'x'; KEY_MAX_BYTES + 1]);
        assert_eq!(k(FieldValue::LongStr(long)), Err(KeyRefused::TooLong));
        assert!(k(FieldValue::LongStr(Bytes::from(vec![b'x'; KEY_MAX_BYTES]))).is_ok());
    }

    #[test]
    fn entries_expire_at_their_ttl_and_a_message_ttl_overrides_the_cache_s() {
        let mut c = Cache::new(10, Some(100));
        assert!(!c.is_duplicate(Some(&text("a")), 1_000, "x"));
        assert!(c.is_duplicate(Some(&text("a")), 1_099, "x"));
        assert!(!c.is_duplicate(Some(&text("a")), 1_100, "x"), "expired at its deadline");
        let short = text("b").with(TTL_HEADER, FieldValue::I32(10));
        assert!(!c.is_duplicate(Some(&short), 2_000, "x"));
        assert!(c.is_duplicate(Some(&text("b")), 2_009, "x"));
        assert!(!c.is_duplicate(Some(&text("b")), 2_010, "x"));
        let none = text("c").with(TTL_HEADER, FieldValue::I32(0));
        assert!(!c.is_duplicate(Some(&none), 3_000, "x"));
        assert!(!c.is_duplicate(Some(&text("c")), 3_000, "x"), "a TTL of 0 keeps nothing");
        assert!(!c.is_duplicate(None, 3_000, "x"));
        assert!(!c.is_duplicate(None, 3_000, "x"), "no header: never a duplicate");
    }

    #[test]
    fn a_full_cache_evicts_its_oldest_entry_and_expired_ones_first() {
        let mut c = Cache::new(2, None);
        c.is_duplicate(Some(&text("a")), 0, "x");
        c.is_duplicate(Some(&text("b")), 0, "x");
        assert!(!c.is_duplicate(Some(&text("c")), 0, "x"));
        assert_eq!(c.len(), 2);
        assert!(!c.is_duplicate(Some(&text("a")), 0, "x"), "the oldest was evicted");
        // An expired entry goes before the oldest live one is evicted.
        let mut c = Cache::new(2, None);
        c.is_duplicate(Some(&text("long")), 0, "x");
        c.is_duplicate(Some(&text("short").with(TTL_HEADER, FieldValue::I32(5))), 0, "x");
        assert!(!c.is_duplicate(Some(&text("new")), 5, "x"));
        assert!(c.is_duplicate(Some(&text("long")), 5, "x"), "kept: the expired entry made room");
        assert!(c.is_duplicate(Some(&text("new")), 5, "x"));
    }

    #[test]
    fn the_cache_size_is_bounded_by_the_broker_s_maximum() {
        assert_eq!(Cache::new(u64::MAX, None).size_max, CACHE_SIZE_MAX as usize);
    }

    #[test]
    fn keys_survive_their_journal_encoding() {
        let keys = [
            DedupKey::Binary(Box::from(&b"order-1"[..])),
            DedupKey::Integer(-5),
            DedupKey::Float(2.5f64.to_bits()),
            DedupKey::Bool(true),
            DedupKey::Void,
        ];
        for k in keys {
            assert_eq!(decode_key(&encode_key(&k)), Some(k));
        }
        assert_eq!(decode_key(b""), None);
        assert_eq!(decode_key(b"I12"), None);
    }

    #[test]
    fn queue_keys_are_freed_when_their_message_leaves() {
        let mut keys = QueueKeys::default();
        let a = key(Some(&text("a"))).unwrap();
        keys.insert(a.clone(), 1);
        assert!(keys.contains(&a));
        keys.remove(2);
        assert!(keys.contains(&a));
        keys.remove(1);
        assert!(!keys.contains(&a) && keys.is_empty());
        keys.insert(a.clone(), 3);
        keys.insert(a.clone(), 4);
        keys.remove(3);
        assert!(keys.contains(&a), "the later message holds the key");
        keys.clear();
        assert!(!keys.contains(&a));
    }
}
