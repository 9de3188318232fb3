//! Retrying a failed message store commit on the broker's clock: a timer on the broker's
//! timer service fires every `store_retry_interval_ms` and, while the store's last commit
//! failed, asks the store thread to try again ([`Store::retry_now`]). The store itself is
//! opened with `retry_interval_ms` 0, so it retries only when asked: the pause after an I/O
//! error is the broker's time, which tests move with a `ManualClock`.

use std::sync::{Arc, Weak};

use lepus_store::store::Store;

use crate::timer::{TimerId, TimerService, TimerTarget};

/// The retry timer's target.
#[derive(Debug)]
pub(crate) struct StoreRetry {
    store: Store,
    timers: Weak<TimerService>,
    interval_ms: u64,
}

/// Starts retrying `store` every `interval_ms` (at least 1) on `timers`; the caller keeps
/// the returned target (the timer service holds it weakly).
pub(crate) fn start(store: Store, timers: &Arc<TimerService>, interval_ms: u64) -> Arc<StoreRetry> {
    let interval_ms = interval_ms.max(1);
    let retry = Arc::new(StoreRetry { store, timers: Arc::downgrade(timers), interval_ms });
    let target: Weak<dyn TimerTarget> = Arc::downgrade(&retry) as _;
    timers.schedule(target, timers.clock().now_ms().saturating_add(interval_ms));
    retry
}

impl TimerTarget for StoreRetry {
    fn on_timer(&self, id: TimerId, now_ms: u64) {
        if self.store.failed() {
            self.store.retry_now();
        }
        if let Some(timers) = self.timers.upgrade() {
            timers.reschedule(id, now_ms.saturating_add(self.interval_ms));
        }
    }
}
