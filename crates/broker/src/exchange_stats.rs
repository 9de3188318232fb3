//! Per-exchange message counts, as RabbitMQ's management API shows them: `publish_in`
//! (messages published to the exchange) and `publish_out` (the queues they were enqueued
//! into, through every binding and exchange-to-exchange hop: a message reaching three queues
//! counts three, on the exchange it was published to).
//!
//! These are on the publish hot path and an exchange is shared by every publisher, so nothing
//! shared is written per message. A [`Publisher`](crate::Publisher) counts into its own
//! [`PublishTally`] (a few plain integers per exchange it publishes to, found by comparing the
//! name with the last one counted) and flushes it into the exchanges' [`ExchangeStats`] when
//! its owner says so — a connection at the end of each input batch (one read call's worth of
//! frames), before confirms go out — or when it is dropped: per batch, one topology read lock
//! and two relaxed atomic adds per exchange. The rate sampler reads the atomics every 5 s of
//! the broker's clock.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::rates::RateCell;

/// An exchange's counters: (`publish_in`, `publish_out`), and their sampled rates.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    counts: [AtomicU64; 2],
    rates: RateCell<2>,
}

impl ExchangeStats {
    /// Adds a publisher's tally (any thread).
    pub(crate) fn add(&self, publish_in: u64, publish_out: u64) {
        self.counts[0].fetch_add(publish_in, Ordering::Relaxed);
        self.counts[1].fetch_add(publish_out, Ordering::Relaxed);
    }

    /// (`publish_in`, `publish_out`).
    pub fn counts(&self) -> [u64; 2] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Per-second rates of [`ExchangeStats::counts`] from the last two samples.
    pub fn rates(&self) -> [f64; 2] {
        self.rates.per_second()
    }

    pub(crate) fn sample(&self, now_ms: u64) {
        self.rates.sample_counts(now_ms, self.counts());
    }
}

/// Exchanges a tally keeps apart before it flushes on its own (a publisher cycling through
/// more exchanges than this between flushes flushes more often).
const TALLY_EXCHANGES_MAX: usize = 16;

/// One publisher's counts not yet flushed, by exchange name.
#[derive(Debug, Default)]
pub struct PublishTally {
    /// (exchange, publish_in, publish_out); names stay between flushes (no allocation per
    /// batch), counts go back to 0.
    entries: Vec<(Vec<u8>, u64, u64)>,
    /// Something was counted since the last flush.
    dirty: bool,
}

impl PublishTally {
    /// Counts one message published to `exchange` and enqueued into `queues` queues. True if
    /// the tally is full and must be flushed before another exchange can be counted.
    #[inline]
    pub fn count(&mut self, exchange: &[u8], queues: u64) -> bool {
        self.dirty = true;
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == exchange) {
            e.1 += 1;
            e.2 += queues;
            return false;
        }
        self.entries.push((exchange.to_vec(), 1, queues));
        self.entries.len() >= TALLY_EXCHANGES_MAX
    }

    /// Hands each exchange's counts to `add` (name, in, out) and starts again from 0; the
    /// names are forgotten too when the tally was full.
    pub fn flush(&mut self, mut add: impl FnMut(&[u8], u64, u64)) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        for (name, publish_in, publish_out) in &mut self.entries {
            if *publish_in > 0 {
                add(name, *publish_in, *publish_out);
            }
            (*publish_in, *publish_out) = (0, 0);
        }
        if self.entries.len() >= TALLY_EXCHANGES_MAX {
            self.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_flushes_each_exchange_once_and_only_what_it_counted() {
        let mut tally = PublishTally::default();
        assert!(!tally.count(b"x", 3));
        assert!(!tally.count(b"x", 0));
        assert!(!tally.count(b"y", 1));
        let mut flushed = Vec::new();
        tally.flush(|name, i, o| flushed.push((name.to_vec(), i, o)));
        assert_eq!(flushed, [(b"x".to_vec(), 2, 3), (b"y".to_vec(), 1, 1)]);
        tally.flush(|_, _, _| panic!("nothing counted since"));
        tally.count(b"y", 2);
        flushed.clear();
        tally.flush(|name, i, o| flushed.push((name.to_vec(), i, o)));
        assert_eq!(flushed, [(b"y".to_vec(), 1, 2)]);
    }

    #[test]
    fn a_full_tally_asks_to_be_flushed_and_forgets_its_names() {
        let mut tally = PublishTally::default();
        let full = (0..TALLY_EXCHANGES_MAX).map(|i| tally.count(format!("x{i}").as_bytes(), 1)).filter(|f| *f).count();
        assert_eq!(full, 1, "full at the last one");
        let stats = ExchangeStats::default();
        tally.flush(|_, i, o| stats.add(i, o));
        assert_eq!(stats.counts(), [TALLY_EXCHANGES_MAX as u64; 2]);
        assert!(tally.entries.is_empty());
    }
}
