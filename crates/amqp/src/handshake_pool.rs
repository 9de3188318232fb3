//! The pool of accepted sockets not yet open (`handshake_max`), with a share per source
//! address (`handshake_max_per_source`), so that one address cannot take the whole pool with
//! silent or slow sockets.
//!
//! A listener reserves a place before it accepts (beyond the pool, clients wait in the listen
//! backlog); once the peer is known, the place goes to its source address, or, if that source
//! already holds its share, the place returns to the pool and the socket is closed at once
//! (logged once each time a source reaches its share). A connection holds its
//! [`HandshakePermit`] until it is open or gone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The handshake pool of a broker's listeners.
#[derive(Debug)]
pub struct HandshakePool {
    places: Arc<Semaphore>,
    per_source_max: usize,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

#[derive(Debug, Default)]
struct Source {
    handshaking: usize,
    /// Its refusal was logged since it last had room.
    refusal_logged: bool,
}

/// A place taken before accept, not yet given to a source address.
#[derive(Debug)]
pub struct Reserved(OwnedSemaphorePermit);

/// A place in the pool, held by one connection until it is open or gone.
#[derive(Debug)]
pub struct HandshakePermit {
    _place: OwnedSemaphorePermit,
    pool: Arc<HandshakePool>,
    source: IpAddr,
}

impl HandshakePool {
    /// A pool of `max` places, at most `per_source_max` of them (at least 1) per source.
    pub fn new(max: usize, per_source_max: usize) -> Arc<HandshakePool> {
        Arc::new(HandshakePool {
            places: Arc::new(Semaphore::new(max)),
            per_source_max: per_source_max.max(1),
            sources: Mutex::default(),
        })
    }

    /// Waits for a free place (`None`: the pool was closed).
    pub async fn reserve(&self) -> Option<Reserved> {
        self.places.clone().acquire_owned().await.ok().map(Reserved)
    }

    /// Gives `place` to `source`, unless it holds its share already (`None`: the place is
    /// back in the pool; the caller closes the socket).
    pub fn admit(self: &Arc<Self>, place: Reserved, source: IpAddr) -> Option<HandshakePermit> {
        let mut sources = self.sources.lock();
        let entry = sources.entry(source).or_default();
        if entry.handshaking >= self.per_source_max {
            if !std::mem::replace(&mut entry.refusal_logged, true) {
                tracing::warn!(%source, handshake_max_per_source = self.per_source_max, "a source address holds its share of the handshake pool: its new sockets are closed until one finishes");
            }
            return None;
        }
        entry.handshaking += 1;
        Some(HandshakePermit { _place: place.0, pool: self.clone(), source })
    }

    /// Sockets of `source` in the pool now.
    pub fn handshaking(&self, source: IpAddr) -> usize {
        self.sources.lock().get(&source).map_or(0, |s| s.handshaking)
    }
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let mut sources = self.pool.sources.lock();
        let Some(entry) = sources.get_mut(&self.source) else { return };
        entry.handshaking -= 1;
        entry.refusal_logged = false;
        if entry.handshaking == 0 {
            sources.remove(&self.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[tokio::test]
    async fn a_source_gets_its_share_and_the_rest_of_the_pool_stays_for_others() {
        let pool = HandshakePool::new(3, 2);
        let a1 = pool.admit(pool.reserve().await.expect("place"), A).expect("first");
        let _a2 = pool.admit(pool.reserve().await.expect("place"), A).expect("second");
        assert!(pool.admit(pool.reserve().await.expect("place"), A).is_none(), "over its share");
        let _b = pool.admit(pool.reserve().await.expect("the refused place came back"), B).expect("another source");
        assert_eq!(pool.places.available_permits(), 0);
        drop(a1);
        assert_eq!(pool.handshaking(A), 1);
        let _a3 = pool.admit(pool.reserve().await.expect("freed"), A).expect("room again");
    }

    #[tokio::test]
    async fn a_source_leaves_the_table_when_its_last_socket_does() {
        let pool = HandshakePool::new(4, 0);
        let a = pool.admit(pool.reserve().await.expect("place"), A).expect("a share of at least one");
        assert!(pool.admit(pool.reserve().await.expect("place"), A).is_none());
        drop(a);
        assert!(pool.sources.lock().is_empty());
    }
}
