//! Message counters: published, routed, delivered, acked and the rest, kept per connection
//! on the hot path and summed for the broker, and per queue (what it enqueued, delivered,
//! handed to `basic.get` and redelivered), written under the queue's lock.
//!
//! A connection's [`Counters`] have one writer, the connection's own task, which adds with a
//! plain load and store (no locked instruction, no shared cache line); anyone may read them at
//! any time. When a connection goes away its counts are folded into the broker's retired
//! totals with atomic adds, so the global count (live connections plus retired) never goes
//! backwards by more than the reads in flight.

use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Messages received from publishers (in a transaction: counted at `tx.commit`, and not
    /// at all if rolled back).
    Published,
    /// Published messages that reached at least one queue (or a direct reply-to consumer).
    Routed,
    /// Published messages that reached no queue.
    Unroutable,
    /// Messages returned to their publisher (`mandatory`, no route).
    Returned,
    /// Publisher confirms sent (acks; each message counts once).
    Confirmed,
    /// Deliveries to consumers (with and without acks).
    Delivered,
    /// Of those, deliveries of messages delivered before.
    Redelivered,
    /// Deliveries acknowledged.
    Acked,
    /// `basic.get` that returned a message.
    Get,
    /// `basic.get` on an empty queue.
    GetEmpty,
}

impl Stat {
    pub const ALL: [Stat; STAT_COUNT] = [
        Stat::Published,
        Stat::Routed,
        Stat::Unroutable,
        Stat::Returned,
        Stat::Confirmed,
        Stat::Delivered,
        Stat::Redelivered,
        Stat::Acked,
        Stat::Get,
        Stat::GetEmpty,
    ];

    /// The name the management API and metrics use for it.
    pub fn name(self) -> &'static str {
        match self {
            Stat::Published => "publish",
            Stat::Routed => "routed",
            Stat::Unroutable => "unroutable",
            Stat::Returned => "return_unroutable",
            Stat::Confirmed => "confirm",
            Stat::Delivered => "deliver",
            Stat::Redelivered => "redeliver",
            Stat::Acked => "ack",
            Stat::Get => "get",
            Stat::GetEmpty => "get_empty",
        }
    }
}

pub const STAT_COUNT: usize = 10;

/// One set of counters.
#[derive(Debug, Default)]
pub struct Counters([AtomicU64; STAT_COUNT]);

/// Counts read at one moment, indexed by [`Stat`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot(pub [u64; STAT_COUNT]);

impl Snapshot {
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
}

impl std::ops::AddAssign for Snapshot {
    fn add_assign(&mut self, other: Snapshot) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

impl Counters {
    /// Adds `n` from the counters' single writer (a connection's task): a load and a store,
    /// which is correct only while no one else writes these counters.
    #[inline]
    pub fn add(&self, stat: Stat, n: u64) {
        let c = &self.0[stat as usize];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds a whole snapshot from any thread (the retired totals).
    pub fn add_shared(&self, snapshot: &Snapshot) {
        for (c, n) in self.0.iter().zip(snapshot.0) {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_snapshots() {
        let c = Counters::default();
        c.add(Stat::Published, 3);
        c.add(Stat::Delivered, 2);
        c.add(Stat::Published, 1);
        let s = c.snapshot();
        assert_eq!((s.get(Stat::Published), s.get(Stat::Delivered), s.get(Stat::Acked)), (4, 2, 0));
        let total = Counters::default();
        total.add_shared(&s);
        total.add_shared(&s);
        assert_eq!(total.get(Stat::Published), 8);
        let mut sum = Snapshot::default();
        sum += s;
        sum += total.snapshot();
        assert_eq!(sum.get(Stat::Delivered), 6);
    }

    #[test]
    fn stat_indexes_match_their_order() {
        for (i, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, i, "{}", stat.name());
        }
    }
}
