//! A vhost's memory of recent routes through topic and fanout exchanges, shared by all its
//! connections: (exchange, routing key) → the queues, for one topology version.
//!
//! A connection's [`RouteCache`] holds one route, which serves a publisher repeating one key.
//! A publisher cycling through many keys (S7: 1,000 keys over 1,000 wildcard bindings) misses
//! it on almost every message, and the walk it then pays for — the trie, de-duplicating dozens
//! of matching bindings, a hash lookup per queue, a few allocations — costs about a microsecond.
//! A memo hit costs a short lock, one hash lookup and one reference-count increment.
//!
//! Entries hold for one topology version, like the route cache: a shard found at an older
//! version is emptied before use, and an insert computed at an older version is dropped. The
//! memo is split into shards by key (one short `Mutex` each, so publishers on different cores
//! rarely meet), and each shard is bounded in entries and bytes: a full shard drops an arbitrary
//! entry for each new one. Routes reaching very many queues are not kept.
//!
//! [`RouteCache`]: crate::RouteCache

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::queue::QueueRef;

/// A route as the memo shares it: the queues, each once.
pub type Route = Arc<[QueueRef]>;

const SHARDS: usize = 8;
/// Entries per shard (so at most 4,096 routes per vhost).
const SHARD_ENTRIES_MAX: usize = 512;
/// Key and queue-reference bytes per shard (so at most 8 MiB per vhost).
const SHARD_BYTES_MAX: usize = 1 << 20;
/// A route reaching more queues than this is not kept (it would crowd out many small ones).
const ROUTE_QUEUES_MAX: usize = 1024;
/// Exchange names and routing keys are short strings (≤ 255 bytes each): a key is the exchange's
/// length, the exchange and the routing key, built on the stack for lookups.
const KEY_BYTES_MAX: usize = 1 + 255 + 255;

#[derive(Debug, Default)]
struct Shard {
    version: u64,
    routes: HashMap<Box<[u8]>, Route>,
    bytes: usize,
}

impl Shard {
    /// Empties the shard if it was filled at an older topology version.
    fn at_version(&mut self, version: u64) {
        if self.version < version {
            self.routes.clear();
            self.bytes = 0;
            self.version = version;
        }
    }
}

#[derive(Debug)]
pub struct RouteMemo {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for RouteMemo {
    fn default() -> Self {
        RouteMemo { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect() }
    }
}

/// `exchange` and `routing_key` as one memo key in `buf`; `None` if they are not short strings.
fn key<'b>(buf: &'b mut [u8; KEY_BYTES_MAX], exchange: &[u8], routing_key: &[u8]) -> Option<&'b [u8]> {
    let exchange_len = u8::try_from(exchange.len()).ok()?;
    let len = 1 + exchange.len() + routing_key.len();
    if routing_key.len() > 255 {
        return None;
    }
    buf[0] = exchange_len;
    buf[1..1 + exchange.len()].copy_from_slice(exchange);
    buf[1 + exchange.len()..len].copy_from_slice(routing_key);
    Some(&buf[..len])
}

/// Which shard a key lives in: a cheap multiplicative hash (a skewed spread costs only lock
/// contention, never correctness).
fn shard_of(key: &[u8]) -> usize {
    let h = key.iter().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)));
    (h ^ (h >> 16)) as usize % SHARDS
}

impl RouteMemo {
    /// The route of `exchange` + `routing_key` if it was kept at topology `version`.
    pub fn get(&self, version: u64, exchange: &[u8], routing_key: &[u8]) -> Option<Route> {
        let mut buf = [0u8; KEY_BYTES_MAX];
        let key = key(&mut buf, exchange, routing_key)?;
        let mut shard = self.shards[shard_of(key)].lock();
        shard.at_version(version);
        if shard.version != version {
            return None;
        }
        shard.routes.get(key).cloned()
    }

    /// Keeps `queues` as the route of `exchange` + `routing_key` at topology `version` (shared
    /// from here on; nothing is copied for a route that is not kept).
    pub fn insert(&self, version: u64, exchange: &[u8], routing_key: &[u8], queues: &[QueueRef]) {
        if queues.len() > ROUTE_QUEUES_MAX {
            return;
        }
        let mut buf = [0u8; KEY_BYTES_MAX];
        let Some(key) = key(&mut buf, exchange, routing_key) else { return };
        let bytes = key.len() + size_of_val(queues);
        let mut shard = self.shards[shard_of(key)].lock();
        shard.at_version(version);
        if shard.version != version {
            return; // computed at a version that is already gone
        }
        // Full: one arbitrary entry (the first in the table's order, so spread by hash) makes
        // room, so a client cycling through many keys cannot wipe everyone's routes at once.
        while shard.routes.len() >= SHARD_ENTRIES_MAX || shard.bytes + bytes > SHARD_BYTES_MAX {
            let Some(victim) = shard.routes.keys().next().cloned() else { break };
            if let Some(route) = shard.routes.remove(&victim) {
                shard.bytes = shard.bytes.saturating_sub(victim.len() + size_of_val(&*route));
            }
        }
        if shard.routes.insert(key.into(), Route::from(queues)).is_none() {
            shard.bytes += bytes;
        }
    }

    /// Routes kept, over all shards (tests and diagnostics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().routes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Queue;
    use lepus_protocol::{FieldTable, ShortStr};

    fn route(n: usize) -> Route {
        (0..n)
            .map(|i| {
                let name = ShortStr::try_from(format!("q{i}").as_str()).expect("short");
                Arc::new(Queue::new(name, "/".into(), false, None, false, FieldTable::new(), Default::default()))
            })
            .collect()
    }

    #[test]
    fn a_route_holds_for_its_version_only() {
        let memo = RouteMemo::default();
        let r = route(3);
        memo.insert(5, b"x", b"a.b", &r);
        let same = |got: Route| got.len() == r.len() && got.iter().zip(r.iter()).all(|(a, b)| Arc::ptr_eq(a, b));
        assert!(memo.get(5, b"x", b"a.b").is_some_and(same));
        assert!(memo.get(5, b"x", b"a.c").is_none());
        assert!(memo.get(5, b"y", b"a.b").is_none());
        // A reader that loaded an older version misses, and leaves the entry alone.
        assert!(memo.get(4, b"x", b"a.b").is_none());
        assert!(memo.get(5, b"x", b"a.b").is_some());
        // A newer version empties the shard; a route computed at the old one is not kept.
        assert!(memo.get(6, b"x", b"a.b").is_none());
        memo.insert(5, b"x", b"a.b", &r);
        assert!(memo.get(6, b"x", b"a.b").is_none());
        memo.insert(6, b"x", b"a.b", &r);
        assert!(memo.get(6, b"x", b"a.b").is_some());
    }

    #[test]
    fn exchange_and_key_cannot_run_into_each_other() {
        let memo = RouteMemo::default();
        memo.insert(1, b"ab", b"c", &route(1));
        assert!(memo.get(1, b"a", b"bc").is_none());
        assert!(memo.get(1, b"ab", b"c").is_some());
    }

    #[test]
    fn the_memo_stays_bounded() {
        let memo = RouteMemo::default();
        let r = route(2);
        for i in 0..SHARDS * SHARD_ENTRIES_MAX * 3 {
            memo.insert(1, b"x", format!("key.{i}").as_bytes(), &r);
        }
        assert!(memo.len() <= SHARDS * SHARD_ENTRIES_MAX);
        assert!(memo.len() > SHARDS * SHARD_ENTRIES_MAX / 2, "a full shard drops one entry, not all");
        let last = format!("key.{}", SHARDS * SHARD_ENTRIES_MAX * 3 - 1);
        assert!(memo.get(1, b"x", last.as_bytes()).is_some(), "the newest route is kept");
        memo.insert(1, b"x", b"many", &route(ROUTE_QUEUES_MAX + 1));
        assert!(memo.get(1, b"x", b"many").is_none(), "a route to very many queues is not kept");
        let long = [b'k'; 256];
        memo.insert(1, b"x", &long, &r);
        assert!(memo.get(1, b"x", &long).is_none(), "not a short string");
    }
}
