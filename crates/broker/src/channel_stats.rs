//! A channel's statistics, as RabbitMQ's management API shows them under `/api/channels`:
//! its message counts (`publish`, `confirm`, `return_unroutable`, `drop_unroutable`,
//! `deliver`, `deliver_no_ack`, `get`, `get_no_ack`, `get_empty`, `redeliver`, `ack`), its
//! gauges (consumers, prefetch, confirm and transaction mode, unacknowledged, unconfirmed and
//! uncommitted messages) and its consumers' tags.
//!
//! A connection's task counts per channel in plain integers of its own ([`ChannelTally`],
//! one add per counted event, no shared write) and publishes the tally of each channel it
//! touched once per turn of its loop (an input batch, an outlet drain) into the channel's
//! shared [`ChannelStats`] with relaxed stores: one writer, no locked instruction. The record
//! is entered in its connection's registry entry when the channel opens and leaves it when
//! the channel closes. The rate sampler reads the counts every 5 s of the broker's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::outlet::ConsumerId;
use crate::rates::RateCell;

/// What a channel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelStat {
    /// Messages published on it (at `tx.commit` in a transaction).
    Publish,
    /// Publisher confirms (acks) it sent.
    Confirm,
    /// Unroutable `mandatory` messages returned.
    ReturnUnroutable,
    /// Unroutable messages dropped (not `mandatory`).
    DropUnroutable,
    /// Deliveries to its consumers that acknowledge.
    Deliver,
    /// Deliveries to its `no_ack` consumers.
    DeliverNoAck,
    /// `basic.get`s answered with a message, acknowledged later.
    Get,
    /// `basic.get`s with `no_ack` answered with a message.
    GetNoAck,
    /// `basic.get`s on an empty queue.
    GetEmpty,
    /// Of the deliveries and gets, messages delivered before.
    Redeliver,
    /// Deliveries and gets acknowledged.
    Ack,
}

pub const CHANNEL_STAT_COUNT: usize = 11;

impl ChannelStat {
    pub const ALL: [ChannelStat; CHANNEL_STAT_COUNT] = [
        ChannelStat::Publish,
        ChannelStat::Confirm,
        ChannelStat::ReturnUnroutable,
        ChannelStat::DropUnroutable,
        ChannelStat::Deliver,
        ChannelStat::DeliverNoAck,
        ChannelStat::Get,
        ChannelStat::GetNoAck,
        ChannelStat::GetEmpty,
        ChannelStat::Redeliver,
        ChannelStat::Ack,
    ];

    /// Those RabbitMQ shows once the channel published (its exchange-side counts): the
    /// first four.
    pub fn publishing() -> &'static [ChannelStat] {
        &ChannelStat::ALL[..4]
    }

    /// Those RabbitMQ shows once the channel consumed or got (its queue-side counts; with
    /// `deliver_get`, their sum of deliveries and gets): the rest.
    pub fn consuming() -> &'static [ChannelStat] {
        &ChannelStat::ALL[4..]
    }

    /// RabbitMQ's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ChannelStat::Publish => "publish",
            ChannelStat::Confirm => "confirm",
            ChannelStat::ReturnUnroutable => "return_unroutable",
            ChannelStat::DropUnroutable => "drop_unroutable",
            ChannelStat::Deliver => "deliver",
            ChannelStat::DeliverNoAck => "deliver_no_ack",
            ChannelStat::Get => "get",
            ChannelStat::GetNoAck => "get_no_ack",
            ChannelStat::GetEmpty => "get_empty",
            ChannelStat::Redeliver => "redeliver",
            ChannelStat::Ack => "ack",
        }
    }
}

/// A channel's counts at one moment, indexed by [`ChannelStat`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounts(pub [u64; CHANNEL_STAT_COUNT]);

impl ChannelCounts {
    pub fn get(&self, stat: ChannelStat) -> u64 {
        self.0[stat as usize]
    }

    /// RabbitMQ's `deliver_get`: deliveries and gets, with and without acknowledgements.
    pub fn deliver_get(&self) -> u64 {
        [ChannelStat::Deliver, ChannelStat::DeliverNoAck, ChannelStat::Get, ChannelStat::GetNoAck]
            .iter()
            .map(|s| self.get(*s))
            .sum()
    }
}

/// A channel's running counts in its connection's task: plain integers, and whether they
/// changed since they were last published.
#[derive(Debug, Default)]
pub struct ChannelTally {
    counts: ChannelCounts,
    dirty: bool,
}

impl ChannelTally {
    /// Adds `n`; true if the tally was clean (the caller notes the channel as due).
    #[inline]
    pub fn count(&mut self, stat: ChannelStat, n: u64) -> bool {
        self.counts.0[stat as usize] += n;
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Marks the tally changed (a gauge moved); true if it was clean.
    #[inline]
    pub fn touch(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    /// The counts, marking the tally published.
    pub fn take_due(&mut self) -> ChannelCounts {
        self.dirty = false;
        self.counts
    }
}

/// A channel's gauges, as its connection last published them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelGauges {
    pub consumers: u64,
    /// `basic.qos global=false`: the prefetch of consumers created from now on.
    pub prefetch: u64,
    /// `basic.qos global=true`: the channel-wide limit.
    pub global_prefetch: u64,
    pub confirm: bool,
    pub transactional: bool,
    pub unacked: u64,
    pub unconfirmed: u64,
    pub uncommitted: u64,
    pub acks_uncommitted: u64,
}

const GAUGE_COUNT: usize = 9;

impl ChannelGauges {
    fn to_array(self) -> [u64; GAUGE_COUNT] {
        [
            self.consumers,
            self.prefetch,
            self.global_prefetch,
            u64::from(self.confirm),
            u64::from(self.transactional),
            self.unacked,
            self.unconfirmed,
            self.uncommitted,
            self.acks_uncommitted,
        ]
    }

    fn from_array(a: [u64; GAUGE_COUNT]) -> ChannelGauges {
        ChannelGauges {
            consumers: a[0],
            prefetch: a[1],
            global_prefetch: a[2],
            confirm: a[3] != 0,
            transactional: a[4] != 0,
            unacked: a[5],
            unconfirmed: a[6],
            uncommitted: a[7],
            acks_uncommitted: a[8],
        }
    }
}

/// One of a channel's consumers: its broker id (queues' consumer lists name it), its tag and
/// its queue (`None`: direct reply-to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConsumer {
    pub id: ConsumerId,
    pub tag: String,
    pub queue: Option<String>,
}

/// An open channel's shared record (see the module doc).
#[derive(Debug)]
pub struct ChannelStats {
    pub number: u16,
    counts: [AtomicU64; CHANNEL_STAT_COUNT],
    gauges: [AtomicU64; GAUGE_COUNT],
    /// Its consumers, written on consume and cancel only.
    consumers: Mutex<Vec<ChannelConsumer>>,
    rates: RateCell<CHANNEL_STAT_COUNT>,
}

pub type ChannelRef = Arc<ChannelStats>;

impl ChannelStats {
    pub fn new(number: u16) -> ChannelStats {
        ChannelStats {
            number,
            counts: Default::default(),
            gauges: Default::default(),
            consumers: Mutex::default(),
            rates: RateCell::default(),
        }
    }

    /// Publishes counts and gauges from their single writer (the connection's task).
    pub fn publish(&self, counts: &ChannelCounts, gauges: ChannelGauges) {
        for (c, n) in self.counts.iter().zip(counts.0) {
            c.store(n, Ordering::Relaxed);
        }
        for (g, n) in self.gauges.iter().zip(gauges.to_array()) {
            g.store(n, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> ChannelCounts {
        ChannelCounts(std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)))
    }

    pub fn gauges(&self) -> ChannelGauges {
        ChannelGauges::from_array(std::array::from_fn(|i| self.gauges[i].load(Ordering::Relaxed)))
    }

    /// The per-second rate of `stat` from the last two samples.
    pub fn rate(&self, stat: ChannelStat) -> f64 {
        self.rates.per_second()[stat as usize]
    }

    /// Per-second rates of every count, indexed by [`ChannelStat`].
    pub fn per_second(&self) -> [f64; CHANNEL_STAT_COUNT] {
        self.rates.per_second()
    }

    /// Replaces the consumer list (on consume and cancel).
    pub fn set_consumers(&self, consumers: impl Iterator<Item = ChannelConsumer>) {
        let mut list = self.consumers.lock();
        list.clear();
        list.extend(consumers);
    }

    pub fn consumers(&self) -> Vec<ChannelConsumer> {
        self.consumers.lock().clone()
    }

    pub(crate) fn sample(&self, now_ms: u64) {
        self.rates.sample_counts(now_ms, self.counts().0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_is_due_once_until_published() {
        let mut tally = ChannelTally::default();
        assert!(tally.count(ChannelStat::Publish, 1), "clean: due now");
        assert!(!tally.count(ChannelStat::Publish, 2), "already due");
        assert!(!tally.touch());
        let record = ChannelStats::new(1);
        let gauges = ChannelGauges { consumers: 2, confirm: true, unacked: 5, ..Default::default() };
        record.publish(&tally.take_due(), gauges);
        assert!(tally.touch(), "published: clean again");
        assert_eq!(record.counts().get(ChannelStat::Publish), 3);
        assert_eq!(record.gauges(), gauges);
        for (i, s) in ChannelStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{}", s.name());
        }
    }

    #[test]
    fn deliver_get_sums_deliveries_and_gets_and_rates_come_from_samples() {
        let mut tally = ChannelTally::default();
        tally.count(ChannelStat::Deliver, 3);
        tally.count(ChannelStat::GetNoAck, 1);
        tally.count(ChannelStat::GetEmpty, 4);
        let record = ChannelStats::new(2);
        record.sample(1_000);
        record.publish(&tally.take_due(), ChannelGauges::default());
        assert_eq!(record.counts().deliver_get(), 4);
        record.sample(6_000);
        assert_eq!(record.rate(ChannelStat::Deliver), 0.6);
    }
}
