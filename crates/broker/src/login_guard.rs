//! Failed logins per source address: past `max` failures within a window, a source's logins
//! are refused without looking at the password until the window ends, so one host cannot
//! guess passwords at speed however many sockets it opens. Windows are fixed (they start at a
//! source's first failure) and read on the broker's clock.
//!
//! Bounded: at most [`TRACKED_MAX`] sources are remembered; past that, sources whose window has
//! ended are forgotten, and if none has, the oldest windows go first.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

/// Sources tracked at once.
pub const TRACKED_MAX: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    failures: u32,
}

#[derive(Debug)]
pub struct LoginGuard {
    /// Failures a source may have in one window; 0 turns the guard off.
    max: u32,
    window_ms: u64,
    sources: Mutex<HashMap<IpAddr, Window>>,
}

impl LoginGuard {
    pub fn new(max: u32, window_ms: u64) -> LoginGuard {
        LoginGuard { max, window_ms, sources: Mutex::default() }
    }

    /// Whether `source` may try to log in at `now_ms`.
    pub fn allows(&self, source: IpAddr, now_ms: u64) -> bool {
        if self.max == 0 {
            return true;
        }
        match self.sources.lock().get(&source) {
            Some(w) => w.failures < self.max || now_ms >= w.start_ms.saturating_add(self.window_ms),
            None => true,
        }
    }

    /// Counts a failed login from `source` at `now_ms`; returns whether that reached the limit
    /// (worth a log line: the source is refused until its window ends).
    pub fn failed(&self, source: IpAddr, now_ms: u64) -> bool {
        if self.max == 0 {
            return false;
        }
        let mut sources = self.sources.lock();
        if sources.len() >= TRACKED_MAX && !sources.contains_key(&source) {
            self.make_room(&mut sources, now_ms);
        }
        let w = sources.entry(source).or_insert(Window { start_ms: now_ms, failures: 0 });
        if now_ms >= w.start_ms.saturating_add(self.window_ms) {
            *w = Window { start_ms: now_ms, failures: 0 };
        }
        w.failures = w.failures.saturating_add(1);
        w.failures == self.max
    }

    /// Forgets ended windows, or else the older half.
    fn make_room(&self, sources: &mut HashMap<IpAddr, Window>, now_ms: u64) {
        sources.retain(|_, w| now_ms < w.start_ms.saturating_add(self.window_ms));
        if sources.len() >= TRACKED_MAX {
            let mut starts: Vec<u64> = sources.values().map(|w| w.start_ms).collect();
            let (_, median, _) = starts.select_nth_unstable(TRACKED_MAX / 2);
            let median = *median;
            sources.retain(|_, w| w.start_ms > median);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.sources.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_source_is_refused_after_max_failures_until_its_window_ends() {
        let guard = LoginGuard::new(3, 60_000);
        let (a, b) = (ip(1), ip(2));
        assert!(!guard.failed(a, 1_000));
        assert!(!guard.failed(a, 2_000));
        assert!(guard.allows(a, 2_000));
        assert!(guard.failed(a, 3_000), "the third failure reaches the limit");
        assert!(!guard.allows(a, 3_000));
        assert!(guard.allows(b, 3_000), "other sources are not affected");
        assert!(!guard.allows(a, 60_999));
        assert!(guard.allows(a, 61_000), "the window started at the first failure");
        assert!(!guard.failed(a, 61_000), "a new window");
        assert!(guard.allows(a, 61_000));
    }

    #[test]
    fn zero_turns_the_guard_off() {
        let guard = LoginGuard::new(0, 60_000);
        for t in 0..100 {
            assert!(!guard.failed(ip(1), t));
        }
        assert!(guard.allows(ip(1), 100));
        assert_eq!(guard.tracked(), 0);
    }

    #[test]
    fn the_tracked_sources_stay_bounded() {
        let guard = LoginGuard::new(5, 60_000);
        for n in 0..(TRACKED_MAX as u32 * 2) {
            guard.failed(ip(n), u64::from(n));
        }
        assert!(guard.tracked() <= TRACKED_MAX);
        assert!(guard.tracked() >= TRACKED_MAX / 2, "only the older half went");
    }
}
