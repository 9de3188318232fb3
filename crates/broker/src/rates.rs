//! Message rates, as RabbitMQ's management API shows them (`publish_details.rate`): the
//! broker's message counters sampled every [`SAMPLE_INTERVAL_MS`] on its clock, by one timer
//! in its timer service, and each rate taken from the last two samples.
//!
//! A sample reads counters that are kept anyway (the connection registry's totals, each
//! queue's counters: atomic loads), so sampling costs nothing per message; with 100,000
//! queues it is 100,000 short lock-free reads and one small mutex each, every 5 s.

use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;

use crate::broker::Broker;
use crate::stats::{STAT_COUNT, Snapshot, Stat};
use crate::timer::{TimerId, TimerTarget};

/// How often the counters are sampled (RabbitMQ's default `collect_statistics_interval`).
pub const SAMPLE_INTERVAL_MS: u64 = 5_000;

/// Per-second rates of each [`Stat`], from the last two samples (0.0 before there are two).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates(pub [f64; STAT_COUNT]);

impl Rates {
    pub fn get(&self, stat: Stat) -> f64 {
        self.0[stat as usize]
    }
}

/// The last sample of one set of `N` counters and the rates it gave: a queue's or the
/// broker's message counters ([`STAT_COUNT`], read as [`Rates`]), or any other set sampled on
/// the same timer (a connection's socket counters, an exchange's publishes, churn).
#[derive(Debug)]
pub struct RateCell<const N: usize = STAT_COUNT>(Mutex<Sampled<N>>);

#[derive(Debug)]
struct Sampled<const N: usize> {
    /// When the last sample was taken, and what it read.
    last: Option<(u64, [u64; N])>,
    rates: [f64; N],
}

impl<const N: usize> Default for RateCell<N> {
    fn default() -> RateCell<N> {
        RateCell(Mutex::new(Sampled { last: None, rates: [0.0; N] }))
    }
}

impl<const N: usize> RateCell<N> {
    /// Records `counts` read at `now_ms`; the rates become the change since the last sample
    /// per second (a sample at the same instant changes nothing).
    pub fn sample_counts(&self, now_ms: u64, counts: [u64; N]) {
        let mut s = self.0.lock();
        if let Some((then_ms, before)) = s.last {
            if now_ms <= then_ms {
                return;
            }
            let seconds = (now_ms - then_ms) as f64 / 1_000.0;
            s.rates = std::array::from_fn(|i| counts[i].saturating_sub(before[i]) as f64 / seconds);
        }
        s.last = Some((now_ms, counts));
    }

    /// Per-second rates of each counter, from the last two samples (0.0 before there are two).
    pub fn per_second(&self) -> [f64; N] {
        self.0.lock().rates
    }
}

impl RateCell<STAT_COUNT> {
    /// [`RateCell::sample_counts`] of message counters.
    pub fn sample(&self, now_ms: u64, counts: Snapshot) {
        self.sample_counts(now_ms, counts.0);
    }

    pub fn rates(&self) -> Rates {
        Rates(self.per_second())
    }
}

/// The timer target that samples a broker's counters.
#[derive(Debug)]
pub(crate) struct RateSampler {
    broker: Weak<Broker>,
}

impl TimerTarget for RateSampler {
    fn on_timer(&self, id: TimerId, now_ms: u64) {
        let Some(broker) = self.broker.upgrade() else { return };
        broker.sample_rates(now_ms);
        broker.timers().reschedule(id, now_ms + SAMPLE_INTERVAL_MS);
    }
}

/// Starts sampling `broker`'s counters now and every [`SAMPLE_INTERVAL_MS`] (once; the
/// broker keeps the sampler, the timer service holds it weakly).
pub(crate) fn start(broker: &Arc<Broker>, slot: &OnceLock<Arc<RateSampler>>) {
    let sampler = Arc::new(RateSampler { broker: Arc::downgrade(broker) });
    if slot.set(sampler.clone()).is_err() {
        return;
    }
    let now_ms = broker.clock().now_ms();
    broker.sample_rates(now_ms);
    let target: Weak<RateSampler> = Arc::downgrade(&sampler);
    broker.timers().schedule(target, now_ms + SAMPLE_INTERVAL_MS);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(published: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.0[Stat::Published as usize] = published;
        s
    }

    #[test]
    fn rates_come_from_the_last_two_samples() {
        let cell = RateCell::default();
        cell.sample(1_000, counts(10));
        assert_eq!(cell.rates().get(Stat::Published), 0.0, "one sample gives no rate");
        cell.sample(6_000, counts(60));
        assert_eq!(cell.rates().get(Stat::Published), 10.0);
        cell.sample(6_000, counts(1_000));
        assert_eq!(cell.rates().get(Stat::Published), 10.0, "no time passed: kept");
        cell.sample(11_000, counts(60));
        assert_eq!(cell.rates().get(Stat::Published), 0.0);
    }
}
