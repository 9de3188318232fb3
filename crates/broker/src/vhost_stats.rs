//! Per-vhost message counters and socket bytes, as RabbitMQ's `/api/vhosts` shows them
//! (`message_stats`, `recv_oct`, `send_oct`, each with its rate): a vhost's counts are its open
//! connections' counters plus those of its connections that have gone, which the registry hands
//! to [`VhostStats::retire`] as they deregister. Rates are sampled on the broker's rate timer
//! ([`crate::rates`]); a vhost's record goes with the vhost (at the next sample).
//!
//! Nothing here is on a connection's path: counts are read from the counters connections keep
//! anyway, at a request or a sample.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::io_stats::{IO_STAT_COUNT, IoTotals};
use crate::rates::{RateCell, Rates};
use crate::stats::Snapshot;

/// A vhost's counts at one moment, with their rates.
#[derive(Debug, Clone, Default)]
pub struct VhostView {
    pub stats: Snapshot,
    pub io: IoTotals,
    pub rates: Rates,
    /// Indexed by [`crate::io_stats::IoStat`].
    pub io_rates: [f64; IO_STAT_COUNT],
}

/// A vhost's open and closed connections' counts, summed.
pub(crate) type VhostCounts = (Snapshot, IoTotals);

#[derive(Debug, Default)]
struct Record {
    /// Counts of the vhost's connections that have gone.
    retired: VhostCounts,
    rates: RateCell,
    io_rates: RateCell<IO_STAT_COUNT>,
}

/// Every vhost's record (see the module doc).
#[derive(Debug, Default)]
pub struct VhostStats {
    by_name: Mutex<HashMap<String, Record>>,
}

impl VhostStats {
    /// Keeps a deregistering connection's counts (called under the registry's lock, so no
    /// reader sees them both open and retired).
    pub(crate) fn retire(&self, vhost: &str, stats: Snapshot, io: IoTotals) {
        let mut by_name = self.by_name.lock();
        let record = by_name.entry(vhost.to_owned()).or_default();
        record.retired.0 += stats;
        record.retired.1 += io;
    }

    /// The closed connections' counts of every vhost that has any.
    pub(crate) fn retired(&self) -> HashMap<String, VhostCounts> {
        self.by_name.lock().iter().map(|(name, r)| (name.clone(), r.retired)).collect()
    }

    /// Samples each of `live` vhosts' counts (zero for one not in `counts`) and drops the
    /// records of vhosts no longer live.
    pub(crate) fn sample(&self, now_ms: u64, counts: &HashMap<String, VhostCounts>, live: &[String]) {
        let mut by_name = self.by_name.lock();
        by_name.retain(|name, _| live.contains(name));
        for name in live {
            let (stats, io) = counts.get(name).copied().unwrap_or_default();
            let record = by_name.entry(name.clone()).or_default();
            record.rates.sample(now_ms, stats);
            record.io_rates.sample_counts(now_ms, io.0);
        }
    }

    /// `counts` with each vhost's rates.
    pub(crate) fn views(&self, counts: HashMap<String, VhostCounts>) -> HashMap<String, VhostView> {
        let by_name = self.by_name.lock();
        counts
            .into_iter()
            .map(|(name, (stats, io))| {
                let (rates, io_rates) =
                    by_name.get(&name).map(|r| (r.rates.rates(), r.io_rates.per_second())).unwrap_or_default();
                (name, VhostView { stats, io, rates, io_rates })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stat;

    fn published(n: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.0[Stat::Published as usize] = n;
        s
    }

    #[test]
    fn retired_counts_add_up_and_go_with_their_vhost() {
        let stats = VhostStats::default();
        stats.retire("a", published(3), IoTotals([10, 1, 20, 2]));
        stats.retire("a", published(4), IoTotals([1, 1, 1, 1]));
        stats.retire("b", published(1), IoTotals::default());
        let retired = stats.retired();
        assert_eq!(retired["a"], (published(7), IoTotals([11, 2, 21, 3])));
        stats.sample(0, &retired, &["a".to_owned()]);
        assert_eq!(stats.retired().keys().collect::<Vec<_>>(), ["a"], "b is no longer a vhost");
    }

    #[test]
    fn rates_come_from_two_samples_five_seconds_apart() {
        let stats = VhostStats::default();
        let live = ["a".to_owned()];
        let counts = |n| HashMap::from([("a".to_owned(), (published(n), IoTotals([n * 100, 0, 0, 0])))]);
        stats.sample(0, &counts(0), &live);
        stats.sample(5_000, &counts(50), &live);
        let views = stats.views(counts(50));
        assert_eq!(views["a"].rates.get(Stat::Published), 10.0);
        assert_eq!(views["a"].io_rates[0], 1_000.0);
    }
}
