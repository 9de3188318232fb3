//! String domains of the wire format: `shortstr` (at most 255 bytes) and `longstr`.
//!
//! Both wrap [`Bytes`], so decoding one is a slice of the frame (a reference count bump),
//! not a copy. AMQP strings are bytes; nothing here insists on UTF-8.

use std::fmt;

use bytes::Bytes;

/// An AMQP `shortstr`: at most 255 bytes, enforced at construction.
#[derive(Clone, Default, Eq, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

impl std::hash::Hash for ShortStr {
    /// Hashes the bytes exactly as `[u8]` does (the `Borrow<[u8]>` impl relies on it).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl PartialEq for ShortStr {
    /// Clones of one string (consumer tags, queue names) share their bytes: comparing the
    /// pointer first makes the common equal case O(1).
    fn eq(&self, other: &ShortStr) -> bool {
        (self.0.as_ptr() == other.0.as_ptr() && self.0.len() == other.0.len()) || self.0 == other.0
    }
}

impl ShortStr {
    pub const LEN_MAX: usize = 255;

    pub const fn from_static(s: &'static str) -> ShortStr {
        assert!(s.len() <= Self::LEN_MAX);
        ShortStr(Bytes::from_static(s.as_bytes()))
    }

    /// `None` when longer than 255 bytes.
    pub fn from_bytes(bytes: Bytes) -> Option<ShortStr> {
        (bytes.len() <= Self::LEN_MAX).then_some(ShortStr(bytes))
    }

    /// Truncates to 255 bytes (on a char boundary), for server-made texts such as reply texts.
    pub fn truncating(s: &str) -> ShortStr {
        let mut end = s.len().min(Self::LEN_MAX);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        ShortStr(Bytes::copy_from_slice(&s.as_bytes()[..end]))
    }

    /// Internal: the decoder has already checked the length.
    pub(crate) fn from_bytes_unchecked(bytes: Bytes) -> ShortStr {
        debug_assert!(bytes.len() <= Self::LEN_MAX);
        ShortStr(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<&str> for ShortStr {
    type Error = usize;
    fn try_from(s: &str) -> Result<ShortStr, usize> {
        ShortStr::from_bytes(Bytes::copy_from_slice(s.as_bytes())).ok_or(s.len())
    }
}

impl TryFrom<String> for ShortStr {
    type Error = usize;
    fn try_from(s: String) -> Result<ShortStr, usize> {
        let len = s.len();
        ShortStr::from_bytes(Bytes::from(s)).ok_or(len)
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// An AMQP `longstr`: up to 2^32-1 bytes (in practice bounded by the frame size).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LongStr(pub Bytes);

impl LongStr {
    pub fn from_static(s: &'static str) -> LongStr {
        LongStr(Bytes::from_static(s.as_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl From<&str> for LongStr {
    fn from(s: &str) -> LongStr {
        LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> LongStr {
        LongStr(Bytes::from(s))
    }
}

impl From<Vec<u8>> for LongStr {
    fn from(v: Vec<u8>) -> LongStr {
        LongStr(Bytes::from(v))
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Lets maps keyed by `ShortStr` be queried with `&[u8]` (the derived `Hash` hashes the bytes
/// exactly as `[u8]` does, which `Borrow` requires).
impl std::borrow::Borrow<[u8]> for ShortStr {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}
