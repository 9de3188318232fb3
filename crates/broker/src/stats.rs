//! Message counters: published, routed, delivered, acked and the rest (and, for metrics, the
//! no-ack deliveries and gets and the publishes in confirm mode among them), kept per connection
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
    /// Of the deliveries, those to consumers that do not acknowledge (`no_ack`).
    DeliveredNoAck,
    /// Of the `basic.get`s that returned a message, those with `no_ack`.
    GetNoAck,
    /// Of the published messages, those published on a channel in confirm mode.
    PublishedConfirm,
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
        Stat::DeliveredNoAck,
        Stat::GetNoAck,
        Stat::PublishedConfirm,
    ];

    /// What the management API's `message_stats` show (RabbitMQ's names; the management
    /// crate shows `deliver` and `get` without the no-ack ones, as RabbitMQ does): the first
    /// twelve.
    pub fn management() -> &'static [Stat] {
        &Stat::ALL[..12]
    }

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
            Stat::DeliveredNoAck => "deliver_no_ack",
            Stat::GetNoAck => "get_no_ack",
            Stat::PublishedConfirm => "publish_confirm",
        }
    }
}

pub const STAT_COUNT: usize = 13;

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

/// Upper bounds (bytes) of the message size histogram's buckets, RabbitMQ's; one more bucket
/// takes the rest.
pub const SIZE_BUCKETS: [u64; 8] = [100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 50_000_000, 100_000_000];

/// Published message body sizes, per connection: a count per [`SIZE_BUCKETS`] bucket (and
/// one above them) and the sum, with one writer like [`Counters`].
#[derive(Debug, Default)]
pub struct SizeHistogram {
    counts: [AtomicU64; SIZE_BUCKETS.len() + 1],
    sum: AtomicU64,
}

/// A [`SizeHistogram`] read at one moment: per-bucket counts (not cumulative) and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeSnapshot {
    pub counts: [u64; SIZE_BUCKETS.len() + 1],
    pub sum: u64,
}

impl SizeHistogram {
    /// Counts one message of `bytes` from the single writer (a load and a store each).
    #[inline]
    pub fn observe(&self, bytes: u64) {
        let bucket = SIZE_BUCKETS.iter().position(|&le| bytes <= le).unwrap_or(SIZE_BUCKETS.len());
        let add = |c: &AtomicU64, n: u64| c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        add(&self.counts[bucket], 1);
        add(&self.sum, bytes);
    }

    /// Adds a whole snapshot from any thread (the retired totals).
    pub fn add_shared(&self, s: &SizeSnapshot) {
        for (c, n) in self.counts.iter().zip(s.counts) {
            c.fetch_add(n, Ordering::Relaxed);
        }
        self.sum.fetch_add(s.sum, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SizeSnapshot {
        SizeSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::AddAssign for SizeSnapshot {
    fn add_assign(&mut self, other: SizeSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

/// RabbitMQ's `churn_rates` names, in the order of [`crate::Broker::churn`]'s counts.
pub const CHURN_NAMES: [&str; CHURN_COUNT] = [
    "connection_created",
    "connection_closed",
    "channel_created",
    "channel_closed",
    "queue_declared",
    "queue_created",
    "queue_deleted",
];

pub const CHURN_COUNT: usize = 7;

/// Queue churn since the broker started: declarations (new or not), queues created and
/// queues deleted, however they went (deleted, auto-deleted, expired, exclusive owner gone,
/// vhost deleted). Counted by the vhosts, read by metrics.
#[derive(Debug, Default)]
pub struct QueueChurn {
    declared: AtomicU64,
    created: AtomicU64,
    deleted: AtomicU64,
}

impl QueueChurn {
    pub(crate) fn declared(&self, created: bool) {
        self.declared.fetch_add(1, Ordering::Relaxed);
        if created {
            self.created.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn deleted(&self, n: u64) {
        self.deleted.fetch_add(n, Ordering::Relaxed);
    }

    /// (declared, created, deleted).
    pub fn totals(&self) -> (u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (get(&self.declared), get(&self.created), get(&self.deleted))
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
    fn sizes_fall_in_rabbitmq_s_buckets() {
        let h = SizeHistogram::default();
        for bytes in [0, 100, 101, 100_000_000, 100_000_001] {
            h.observe(bytes);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, [2, 1, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(s.sum, 200_000_202);
    }

    #[test]
    fn stat_indexes_match_their_order() {
        for (i, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, i, "{}", stat.name());
        }
    }
}
