//! A connection's socket counters, as RabbitMQ's management API shows them: bytes received
//! and sent (`recv_oct`, `send_oct`) and socket read and write calls (`recv_cnt`,
//! `send_cnt`), counted per call — not per frame or message — by the connection's own task.
//!
//! The task keeps its running totals in plain integers ([`IoTotals`]) and publishes them after
//! each call with relaxed stores into the registry's [`IoStats`] (one writer, so no locked
//! instruction; readers see a value at most one call old). The rate sampler reads them every
//! 5 s of the broker's clock ([`crate::rates`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::rates::RateCell;

/// Which socket counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStat {
    RecvOct,
    RecvCnt,
    SendOct,
    SendCnt,
}

pub const IO_STAT_COUNT: usize = 4;

impl IoStat {
    pub const ALL: [IoStat; IO_STAT_COUNT] = [IoStat::RecvOct, IoStat::RecvCnt, IoStat::SendOct, IoStat::SendCnt];

    /// RabbitMQ's name for it.
    pub fn name(self) -> &'static str {
        match self {
            IoStat::RecvOct => "recv_oct",
            IoStat::RecvCnt => "recv_cnt",
            IoStat::SendOct => "send_oct",
            IoStat::SendCnt => "send_cnt",
        }
    }
}

/// A connection task's own running totals, indexed by [`IoStat`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals(pub [u64; IO_STAT_COUNT]);

impl IoTotals {
    /// One socket read call that returned `bytes`.
    #[inline]
    pub fn read(&mut self, bytes: usize) {
        self.0[IoStat::RecvOct as usize] += bytes as u64;
        self.0[IoStat::RecvCnt as usize] += 1;
    }

    /// One socket write call that took `bytes`.
    #[inline]
    pub fn wrote(&mut self, bytes: usize) {
        self.0[IoStat::SendOct as usize] += bytes as u64;
        self.0[IoStat::SendCnt as usize] += 1;
    }

    pub fn get(&self, stat: IoStat) -> u64 {
        self.0[stat as usize]
    }
}

impl std::ops::AddAssign for IoTotals {
    fn add_assign(&mut self, other: IoTotals) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// A registered connection's published socket counters and their sampled rates.
#[derive(Debug, Default)]
pub struct IoStats {
    counts: [AtomicU64; IO_STAT_COUNT],
    rates: RateCell<IO_STAT_COUNT>,
}

impl IoStats {
    /// Publishes the totals from the counters' single writer (the connection's task).
    #[inline]
    pub fn publish(&self, totals: &IoTotals) {
        for (c, n) in self.counts.iter().zip(totals.0) {
            c.store(n, Ordering::Relaxed);
        }
    }

    pub fn totals(&self) -> IoTotals {
        IoTotals(std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)))
    }

    /// Per-second rates from the last two samples, indexed by [`IoStat`].
    pub fn rates(&self) -> [f64; IO_STAT_COUNT] {
        self.rates.per_second()
    }

    /// Samples the counters (the broker's rate sampler).
    pub(crate) fn sample(&self, now_ms: u64) {
        self.rates.sample_counts(now_ms, self.totals().0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_calls_and_bytes_and_publish_whole() {
        let mut t = IoTotals::default();
        t.read(100);
        t.read(20);
        t.wrote(7);
        let stats = IoStats::default();
        stats.publish(&t);
        assert_eq!(stats.totals().0, [120, 2, 7, 1]);
        stats.sample(1_000);
        t.read(500);
        stats.publish(&t);
        stats.sample(6_000);
        assert_eq!(stats.rates(), [100.0, 0.2, 0.0, 0.0]);
        for (i, s) in IoStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{}", s.name());
        }
    }
}
