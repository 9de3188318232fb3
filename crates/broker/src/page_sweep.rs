//! The memory-pressure paging sweep: while memory is above the paging fraction of its limit,
//! every queue pages out what its resident window leaves over, at every alarm sample (once a
//! second). With many queues that is long work, so it is not done inside the sample: it runs
//! on the broker's timer service, [`SWEEP_STEP_MAX`] queues per firing, and the timer task
//! yields to the runtime between firings (`crates/server/src/timers.rs`), so the sweep never
//! holds a runtime worker for long.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::queue::QueueRef;
use crate::timer::{TimerId, TimerService, TimerTarget};

/// Queues paged out per firing of the sweep's timer.
pub const SWEEP_STEP_MAX: usize = 64;

/// The sweep in progress: the queues still to page out, and its one timer.
#[derive(Debug)]
pub(crate) struct PageSweep {
    timers: Arc<TimerService>,
    state: Mutex<SweepState>,
}

#[derive(Debug, Default)]
struct SweepState {
    queues: Vec<QueueRef>,
    timer: Option<TimerId>,
}

impl PageSweep {
    pub(crate) fn new(timers: Arc<TimerService>) -> PageSweep {
        PageSweep { timers, state: Mutex::default() }
    }

    /// Starts a sweep of `queues` now; one not finished is replaced (the new list is every
    /// queue again).
    pub(crate) fn start(self: &Arc<Self>, queues: Vec<QueueRef>) {
        let now_ms = self.timers.clock().now_ms();
        let mut st = self.state.lock();
        st.queues = queues;
        if let Some(id) = st.timer
            && self.timers.reschedule(id, now_ms)
        {
            return;
        }
        let target: Weak<dyn TimerTarget> = Arc::downgrade(self) as _;
        st.timer = Some(self.timers.schedule(target, now_ms));
    }

    /// Queues the sweep has still to page out.
    pub(crate) fn remaining(&self) -> usize {
        self.state.lock().queues.len()
    }
}

impl TimerTarget for PageSweep {
    fn on_timer(&self, id: TimerId, now_ms: u64) {
        let step = {
            let mut st = self.state.lock();
            let n = st.queues.len().min(SWEEP_STEP_MAX);
            let at = st.queues.len() - n;
            let step = st.queues.split_off(at);
            if !st.queues.is_empty() {
                self.timers.reschedule(id, now_ms);
            }
            step
        };
        // No lock held: a queue's page-out takes its own.
        for queue in step {
            queue.page_out();
        }
    }
}
