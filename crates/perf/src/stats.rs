//! Run statistics: counters shared by all tasks, per-consumer results, and the final
//! verification (lost, duplicated, reordered messages) and summary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;

/// Counters updated by every producer and consumer.
#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub received: AtomicU64,
    /// Messages still queued when the run ended (undelivered, not lost).
    pub remaining: AtomicU64,
    /// When the last delivery arrived, in ns since the run's start (drain-only runs).
    pub last_receive_ns: AtomicU64,
    pub stop_producers: AtomicBool,
    pub stop_consumers: AtomicBool,
    /// `--expire-every`: messages with an expiration that were delivered all the same.
    pub expiring_received: AtomicU64,
    /// `--retry-loop`: rejections, each a pass through the delay queue.
    pub passes: AtomicU64,
    /// `--retry-loop`: signalled when messages complete (publishers wait for room).
    pub completed: Notify,
}

/// A growable bit set of sequence numbers seen.
#[derive(Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Sets `seq`; returns whether it was already set.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        was
    }

    pub fn union_with(&mut self, other: &SeqSet) -> u64 {
        let mut overlap = 0;
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            overlap += (*a & *b).count_ones() as u64;
            *a |= *b;
        }
        overlap
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.words.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// How many are set.
    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// How many of `1..=max` are set.
    pub fn count_upto(&self, max: u64) -> u64 {
        let mut n = 0;
        for (i, w) in self.words.iter().enumerate() {
            for b in 0..64 {
                let seq = i as u64 * 64 + b;
                if seq >= 1 && seq <= max && w & (1 << b) != 0 {
                    n += 1;
                }
            }
        }
        n
    }
}

/// What one consumer saw.
pub struct ConsumerReport {
    pub queue: usize,
    pub received: u64,
    pub redelivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency_ns: Histogram<u64>,
    pub seen: HashMap<u16, SeqSet>,
}

impl ConsumerReport {
    pub fn new(queue: usize) -> ConsumerReport {
        ConsumerReport {
            queue,
            received: 0,
            redelivered: 0,
            duplicates: 0,
            reordered: 0,
            latency_ns: latency_histogram(),
            seen: HashMap::new(),
        }
    }
}

/// An empty latency histogram in nanoseconds: 1 ns to 120 s, three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in microseconds, as a summary reports them: p50, p99, p99.9, max.
pub fn latency_percentiles_us(latency_ns: &Histogram<u64>) -> [f64; 4] {
    let us = |ns: u64| ns as f64 / 1e3;
    let q = |quantile: f64| us(latency_ns.value_at_quantile(quantile));
    [q(0.5), q(0.99), q(0.999), us(latency_ns.max())]
}

/// What one producer did.
pub struct ProducerReport {
    pub id: u16,
    pub sent: u64,
    pub nacked: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub scenario: String,
    /// `load` (producers and consumers), `drain` (`-x 0`: consume an existing backlog),
    /// `idle-connections`, `declare-queues`, `delete-queues` or `churn`.
    pub mode: &'static str,
    pub duration_s: f64,
    pub message_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub queues: usize,
    pub published: u64,
    pub publish_rate: f64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub received: u64,
    /// Deliveries per second while producers ran (drain runs: while consuming, from
    /// `basic.consume-ok` to the last delivery).
    pub receive_rate: f64,
    /// Deliveries due but not yet made when producers stopped (how far the queues grew).
    pub backlog_at_stop: i64,
    /// Deliveries per publish (1 direct, the queue count for fanout, the mean for topic).
    pub deliveries_per_publish: f64,
    pub megabytes_per_s: f64,
    pub latency_us_p50: Option<f64>,
    pub latency_us_p99: Option<f64>,
    pub latency_us_p999: Option<f64>,
    pub latency_us_max: Option<f64>,
    /// `None` where nothing could be verified (no consumers, bodies under 16 B).
    pub lost: Option<u64>,
    /// Messages delivered to a queue their routing key does not reach (topic runs).
    pub misrouted: u64,
    /// Messages still in the queues when consumers stopped (not delivered within the drain
    /// timeout); they do not count as lost.
    pub remaining_in_queues: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub redelivered: u64,
    /// Connections opened (idle-connections, churn).
    pub connections: u64,
    /// Connections opened per second (churn: opened and closed, each with a handshake, a
    /// channel open and a connection close).
    pub connections_per_s: Option<f64>,
    pub connection_errors: u64,
    /// `--loopback-ceiling`: bytes/s from a writer to a reader thread over loopback TCP.
    pub loopback_direct_bytes_per_s: Option<f64>,
    /// `--loopback-ceiling`: bytes/s through a relay thread (two hops, no broker logic).
    pub loopback_relay_bytes_per_s: Option<f64>,
    /// `--expire-every`: messages published with an expiration (not in `lost`'s reckoning).
    pub expiring_published: Option<u64>,
    /// `--expire-every`: of those, delivered before they expired.
    pub expiring_received: Option<u64>,
    /// `--expire-every`: of those, never delivered (expired, or still queued at the end).
    pub expired: Option<u64>,
    /// `--retry-loop`: passes through the delay queue (rejections) in all, and per second
    /// while producers ran (`receive_rate` counts completed messages).
    pub loop_passes: Option<u64>,
    pub loop_pass_rate: Option<f64>,
    /// `--delayed`: its own figures.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub delayed: Option<crate::delayed::DelayedFigures>,
}

impl Summary {
    /// No message lost, duplicated, reordered or misrouted.
    pub fn is_clean(&self) -> bool {
        self.lost.unwrap_or(0) == 0 && self.duplicated == 0 && self.reordered == 0 && self.misrouted == 0
    }

    pub fn text(&self) -> String {
        match self.mode {
            "idle-connections" | "churn" => {
                return format!(
                    "{} ({}): {} connections in {:.1}s, {:.0} connections/s, {} errors",
                    self.scenario,
                    self.mode,
                    self.connections,
                    self.duration_s,
                    self.connections_per_s.unwrap_or(0.0),
                    self.connection_errors
                );
            }
            "loopback-ceiling" => {
                let gb = |v: Option<f64>| v.unwrap_or(0.0) / 1e9;
                return format!(
                    "{} ({}): {} B messages in batched writes, {:.1}s each: direct {:.2} GB/s, through a relay {:.2} GB/s",
                    self.scenario,
                    self.mode,
                    self.message_size,
                    self.duration_s,
                    gb(self.loopback_direct_bytes_per_s),
                    gb(self.loopback_relay_bytes_per_s)
                );
            }
            "delayed" => {
                return format!(
                    "{} ({}): {:.1}s\n  publish {:.0} msg/s ({} published, {} confirmed, {} nacked)\n  \
                     received {}, lost {} duplicated {}{}",
                    self.scenario,
                    self.mode,
                    self.duration_s,
                    self.publish_rate,
                    self.published,
                    self.confirmed,
                    self.nacked,
                    self.received,
                    self.lost.map(|l| l.to_string()).unwrap_or_else(|| "n/a".into()),
                    self.duplicated,
                    self.delayed.as_ref().map(|d| d.text()).unwrap_or_default()
                );
            }
            "declare-queues" | "delete-queues" => {
                return format!(
                    "{} ({}): {} queues in {:.1}s, {:.0} queues/s",
                    self.scenario,
                    self.mode,
                    self.queues,
                    self.duration_s,
                    self.queues as f64 / self.duration_s.max(1e-9)
                );
            }
            _ => {}
        }
        let lat = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        let mut extra = String::new();
        if let Some(passes) = self.loop_passes {
            extra += &format!(
                "\n  retry loop: {passes} passes through the delay queue, {:.0} passes/s; completed {:.0} msg/s",
                self.loop_pass_rate.unwrap_or(0.0),
                self.receive_rate
            );
        }
        if let Some(expired) = self.expired {
            extra += &format!(
                "\n  expiring: {} published, {} delivered before expiry, {expired} not delivered (expired); \
                 the rest are verified",
                self.expiring_published.unwrap_or(0),
                self.expiring_received.unwrap_or(0)
            );
        }
        if let Some(d) = &self.delayed {
            extra += &d.text();
        }
        format!(
            "{} ({}): {:.1}s, {} B, {}p/{}c/{}q\n  publish {:.0} msg/s ({} published, {} confirmed, {} nacked, {} returned)\n  \
             receive {:.0} msg/s ({} received, {:.1} MB/s, {:.2} per publish), backlog at stop {}\n  \
             latency us p50 {} p99 {} p99.9 {} max {}\n  \
             verification: lost {} duplicated {} reordered {} misrouted {} redelivered {} (still queued at the end {}){}",
            self.scenario,
            self.mode,
            self.duration_s,
            self.message_size,
            self.producers,
            self.consumers,
            self.queues,
            self.publish_rate,
            self.published,
            self.confirmed,
            self.nacked,
            self.returned,
            self.receive_rate,
            self.received,
            self.megabytes_per_s,
            self.deliveries_per_publish,
            self.backlog_at_stop,
            lat(self.latency_us_p50),
            lat(self.latency_us_p99),
            lat(self.latency_us_p999),
            lat(self.latency_us_max),
            self.lost.map(|l| l.to_string()).unwrap_or_else(|| "n/a".into()),
            self.duplicated,
            self.reordered,
            self.misrouted,
            self.redelivered,
            self.remaining_in_queues,
            extra,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_set_counts_and_overlaps() {
        let mut a = SeqSet::default();
        assert!(!a.insert(1));
        assert!(a.insert(1));
        a.insert(70);
        let mut b = SeqSet::default();
        b.insert(70);
        b.insert(200);
        assert_eq!(a.union_with(&b), 1);
        assert_eq!(a.count_upto(100), 2);
        assert_eq!(a.count_upto(1000), 3);
        assert!(a.contains(70) && a.contains(200) && !a.contains(71) && !a.contains(100_000));
    }
}
