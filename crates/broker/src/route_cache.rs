//! A connection's memory of its last route: publishers mostly repeat one exchange and routing
//! key, and a repeat should cost two short comparisons and one atomic load, not the topology
//! lock, two hash lookups and an allocation-free but branchy walk (see [`VHost::route_cached`]).
//!
//! An entry holds for one topology version: any change to the vhost's exchanges, queues or
//! bindings bumps the version and so invalidates every cache at once (a passive or repeated
//! declaration changes nothing and keeps them).
//!
//! [`VHost::route_cached`]: crate::VHost::route_cached

use crate::queue::QueueRef;
use crate::route_memo::Route;

/// Exchange names and routing keys are short strings (≤ 255 bytes): the cache holds its own
/// copies, so it never pins a connection's read buffer.
#[derive(Debug, Default)]
pub struct RouteCache {
    valid: bool,
    version: u64,
    exchange: Vec<u8>,
    routing_key: Vec<u8>,
    queues: Vec<QueueRef>,
    /// The entry's queues when they came from the vhost's memo (then `queues` is empty).
    shared: Option<Route>,
}

impl RouteCache {
    pub fn new() -> RouteCache {
        RouteCache::default()
    }

    pub(crate) fn hit(&self, version: u64, exchange: &[u8], routing_key: &[u8]) -> bool {
        self.valid
            && self.version == version
            && short_eq(&self.routing_key, routing_key)
            && short_eq(&self.exchange, exchange)
    }

    /// The queues of the last route (valid or not: a route that may not be cached is still
    /// returned from here).
    pub(crate) fn queues(&self) -> &[QueueRef] {
        match &self.shared {
            Some(route) => route,
            None => &self.queues,
        }
    }

    /// Forgets the entry and hands out its (emptied) queue list to route into.
    pub(crate) fn begin_fill(&mut self) -> &mut Vec<QueueRef> {
        self.valid = false;
        self.shared = None;
        self.queues.clear();
        &mut self.queues
    }

    /// Makes a route from the vhost's memo the entry for `exchange` + `routing_key`.
    pub(crate) fn fill_shared(&mut self, version: u64, exchange: &[u8], routing_key: &[u8], route: Route) {
        self.queues.clear();
        self.shared = Some(route);
        self.fill(version, exchange, routing_key);
    }

    /// Marks the queues just routed into as the route of `exchange` + `routing_key` at
    /// `version`.
    pub(crate) fn fill(&mut self, version: u64, exchange: &[u8], routing_key: &[u8]) {
        self.exchange.clear();
        self.exchange.extend_from_slice(exchange);
        self.routing_key.clear();
        self.routing_key.extend_from_slice(routing_key);
        self.version = version;
        self.valid = true;
    }

    /// Drops the entry and the queue references it holds.
    pub fn clear(&mut self) {
        self.valid = false;
        self.queues.clear();
        self.shared = None;
    }
}

/// Byte equality of two short strings without calling `memcmp`. glibc's AVX-512 `memcmp` reads
/// short inputs with one masked vector load, which stalled on this (virtual) machine: the
/// route-cache check took 15% of the broker's CPU in an S1 profile, nearly all of it on that
/// load. A plain loop over at most 255 bytes costs a few nanoseconds.
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::short_eq;

    #[test]
    fn short_eq_is_byte_equality() {
        let samples: [&[u8]; 7] = [b"", b"a", b"b", b"ab", b"amq.topic", b"amq.topiC", &[0xff; 255]];
        for a in samples {
            for b in samples {
                assert_eq!(short_eq(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
