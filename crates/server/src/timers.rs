//! The driver of the broker's timer service (`lepus_broker::timer`): one task that fires the
//! due timers, then yields (a timer due again at once waits for the other tasks) or sleeps until the next deadline, woken early through a `Notify` when a timer
//! is scheduled before it, and ended by the shutdown signal.
//!
//! Targets run on this task (`on_timer` is synchronous and meant to be short: expire messages,
//! delete a queue, cancel a consumer). Between whole batches of due timers the task yields, so
//! a burst does not hold a core from the connections. A sleep lasts at most a second, so a
//! clock that jumps forward (the system clock following a wall-clock step) is read again soon.

use std::sync::Arc;
use std::time::Duration;

use lepus_broker::TimerService;
use lepus_broker::timer::FIRE_BATCH;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use lepus_amqp::stopped;

/// The longest sleep between two readings of the clock.
const SLEEP_MAX_MS: u64 = 1_000;

/// Runs `service` until `stop` turns true (or its sender is dropped). `notify` is the one the
/// service's `Wake` notifies (`connection::NotifyWake`).
pub(crate) fn spawn_driver(
    service: Arc<TimerService>,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            while service.fire_due() == FIRE_BATCH {
                if *stop.borrow() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let sleep_ms = sleep_ms(&service);
            if sleep_ms == 0 {
                // A target re-armed itself for now (a step of a long job, such as the paging
                // sweep): the other tasks get a turn first.
                if *stop.borrow() {
                    return;
                }
                tokio::task::yield_now().await;
                continue;
            }
            let sleep = Duration::from_millis(sleep_ms);
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                () = notify.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    })
}

/// How long the driver may sleep: until the next deadline, at most [`SLEEP_MAX_MS`].
fn sleep_ms(service: &TimerService) -> u64 {
    let Some(deadline_ms) = service.next_deadline() else { return SLEEP_MAX_MS };
    deadline_ms.saturating_sub(service.clock().now_ms()).min(SLEEP_MAX_MS)
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use lepus_broker::{SystemClock, TimerId, TimerTarget};
    use tokio::sync::mpsc;
    use tokio::time::timeout;

    use super::*;
    use lepus_amqp::NotifyWake;

    /// Turns a hang into a failure; never measures speed.
    const HANG_GUARD: Duration = Duration::from_secs(20);

    /// Sends each firing on a channel.
    struct Fired(mpsc::UnboundedSender<TimerId>);

    impl TimerTarget for Fired {
        fn on_timer(&self, id: TimerId, _now_ms: u64) {
            let _ = self.0.send(id);
        }
    }

    struct Driver {
        service: Arc<TimerService>,
        task: JoinHandle<()>,
        stop: watch::Sender<bool>,
        target: Arc<Fired>,
        fired: mpsc::UnboundedReceiver<TimerId>,
    }

    fn start() -> Driver {
        let notify = Arc::new(Notify::new());
        let wake = Box::new(NotifyWake(notify.clone()));
        let service = Arc::new(TimerService::new(Arc::new(SystemClock::new()), wake));
        let (stop, stop_rx) = watch::channel(false);
        let task = spawn_driver(service.clone(), notify, stop_rx);
        let (fired_tx, fired) = mpsc::unbounded_channel();
        Driver { service, task, stop, target: Arc::new(Fired(fired_tx)), fired }
    }

    impl Driver {
        fn schedule_in(&self, in_ms: u64) -> TimerId {
            let target: Weak<Fired> = Arc::downgrade(&self.target);
            self.service.schedule(target, self.service.clock().now_ms() + in_ms)
        }

        async fn next_fired(&mut self) -> Option<TimerId> {
            timeout(HANG_GUARD, self.fired.recv()).await.expect("a timer fires")
        }

        async fn stop(self) {
            self.stop.send_replace(true);
            timeout(HANG_GUARD, self.task).await.expect("the driver stops").expect("the driver ends cleanly");
        }
    }

    #[tokio::test]
    async fn fires_a_timer_scheduled_ahead_of_the_one_it_sleeps_for() {
        let mut driver = start();
        driver.schedule_in(3_600_000);
        // On this single-threaded runtime the driver now runs and goes to sleep on that timer,
        // so the next one wakes it (correctness does not rest on this yield, only coverage).
        tokio::task::yield_now().await;
        let id = driver.schedule_in(5);
        assert_eq!(driver.next_fired().await, Some(id));
        assert!(driver.service.next_deadline().is_some(), "the hour-long timer waits");
        driver.stop().await;
    }

    #[tokio::test]
    async fn fires_more_than_a_batch_due_at_once() {
        let mut driver = start();
        let due = 2 * FIRE_BATCH + 1;
        for _ in 0..due {
            driver.schedule_in(0);
        }
        for _ in 0..due {
            assert!(driver.next_fired().await.is_some());
        }
        assert_eq!(driver.service.next_deadline(), None);
        driver.stop().await;
    }

    #[tokio::test]
    async fn stop_ends_the_driver_with_timers_pending() {
        let driver = start();
        driver.schedule_in(3_600_000);
        driver.stop().await;
    }
}
