//! The broker's time: one time base, milliseconds since the UNIX epoch, behind a trait so tests
//! control it.
//!
//! Deadlines (message TTL, queue expiry, delayed messages, consumer timeouts) and timestamps
//! (`x-death` times are wall-clock in RabbitMQ) are read from the same [`Clock`], so a deadline
//! is simply a time in milliseconds. The server uses [`SystemClock`]; tests and simulations use
//! [`ManualClock`] and move time themselves, so nothing in a test waits for real time.
//!
//! Neither clock ever goes backwards. [`SystemClock`] counts elapsed time on the monotonic clock
//! and follows the wall clock only when the wall clock is ahead. A wall clock stepped back
//! neither turns the broker's time back (timestamps out of order) nor stops it (deadlines would
//! fire late by the step): the broker's time keeps counting and stays ahead of the wall clock
//! by the step, as Erlang's default time mode (RabbitMQ's) does. A wall clock stepped forward
//! (start-up before NTP, a resume from suspend) is followed, so timestamps stay true and
//! deadlines pending at the step fire early by it.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of the broker's time.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the UNIX epoch; never less than a value returned before.
    fn now_ms(&self) -> u64;
}

pub type ClockRef = Arc<dyn Clock>;

/// The wall clock, made monotonic: elapsed time from [`Instant`], plus an offset raised
/// whenever the wall clock is ahead (a forward step, or start-up) and never lowered.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    /// Wall-clock milliseconds at `origin`, as far as the clock has seen; only grows.
    offset_ms: AtomicU64,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock { origin: Instant::now(), offset_ms: AtomicU64::new(wall_ms()) }
    }

    /// The time for a reading of `elapsed_ms` since `origin` on the monotonic clock and
    /// `wall_ms` on the wall clock.
    fn observe(&self, elapsed_ms: u64, wall_ms: u64) -> u64 {
        let offset_ms = self.offset_ms.load(Ordering::Acquire);
        let counted_ms = offset_ms.saturating_add(elapsed_ms);
        if wall_ms <= counted_ms {
            return counted_ms;
        }
        self.offset_ms.fetch_max(wall_ms - elapsed_ms, Ordering::AcqRel);
        wall_ms
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let elapsed_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.observe(elapsed_ms, wall_ms())
    }
}

/// The wall clock in milliseconds since the epoch (0 if it reads before 1970).
fn wall_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// A clock that moves only when told to; for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock { now_ms: AtomicU64::new(start_ms) }
    }

    /// Moves the clock to `now_ms`; an earlier time is ignored (the clock never goes back).
    pub fn set(&self, now_ms: u64) {
        self.now_ms.fetch_max(now_ms, Ordering::AcqRel);
    }

    /// Moves the clock forward by `by_ms` (saturating at `u64::MAX`).
    pub fn advance(&self, by_ms: u64) {
        let _ = self.now_ms.fetch_update(Ordering::AcqRel, Ordering::Acquire, |ms| Some(ms.saturating_add(by_ms)));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_at(wall_ms: u64) -> SystemClock {
        SystemClock { origin: Instant::now(), offset_ms: AtomicU64::new(wall_ms) }
    }

    #[test]
    fn system_clock_counts_elapsed_time_through_a_backward_step() {
        let clock = clock_at(10_000_000);
        assert_eq!(clock.observe(0, 10_000_000), 10_000_000);
        assert_eq!(clock.observe(100, 10_000_100), 10_000_100);
        // The wall clock is stepped back an hour: time neither goes back nor stops.
        assert_eq!(clock.observe(200, 10_000_200 - 3_600_000), 10_000_200);
        assert_eq!(clock.observe(300, 10_000_300 - 3_600_000), 10_000_300);
    }

    #[test]
    fn system_clock_follows_a_forward_step() {
        let clock = clock_at(1_000_000);
        assert_eq!(clock.observe(100, 1_000_100 + 60_000), 1_060_100);
        // And keeps counting from there even if the wall clock is then stepped back again.
        assert_eq!(clock.observe(200, 1_000_200), 1_060_200);
    }

    #[test]
    fn system_clock_never_goes_backwards() {
        let clock = clock_at(1_000_000);
        let mut last_ms = 0;
        // Wall readings jumping back and forth around the elapsed time.
        for elapsed_ms in 0..2_000u64 {
            let wall_ms = 1_000_000 + elapsed_ms * 3 % 1_500;
            let now_ms = clock.observe(elapsed_ms, wall_ms);
            assert!(now_ms >= last_ms, "{now_ms} after {last_ms}");
            assert!(now_ms >= wall_ms);
            last_ms = now_ms;
        }
        let real = SystemClock::new();
        let mut last_ms = real.now_ms();
        for _ in 0..10_000 {
            let now_ms = real.now_ms();
            assert!(now_ms >= last_ms);
            last_ms = now_ms;
        }
    }

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new(500);
        assert_eq!(clock.now_ms(), 500);
        clock.advance(20);
        assert_eq!(clock.now_ms(), 520);
        clock.set(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.set(900);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(u64::MAX);
        assert_eq!(clock.now_ms(), u64::MAX);
    }
}
