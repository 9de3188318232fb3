//! Holding a queue's deliveries while a large requeue comes back in pieces. A closing channel
//! with many unacknowledged messages requeues them a piece at a time (so that no queue lock
//! is held for 100,000 of them); meanwhile the queue delivers nothing, so a consumer never gets
//! a later message before an earlier one still to come back: as seen by consumers, the
//! requeue is one step, as RabbitMQ's. Publishing and acks go on; a `basic.get` waits for the
//! hold to end (see [`Queue::get`]), since it would otherwise take a message from behind the
//! ones still to come back.
//!
//! The hold is a guard: dropped (the requeue done, or its connection gone) it lets the queue
//! deliver again.

use std::sync::Arc;

use super::{Effects, Queue, QueueRef};

/// Holds a queue's deliveries while it exists (see the module doc).
#[derive(Debug)]
pub struct RequeueHold(QueueRef);

impl RequeueHold {
    /// Stops `queue` delivering until the hold is dropped.
    pub fn new(queue: QueueRef) -> RequeueHold {
        queue.state.lock().requeue_holds += 1;
        RequeueHold(queue)
    }

    pub fn queue(&self) -> &QueueRef {
        &self.0
    }
}

impl Drop for RequeueHold {
    fn drop(&mut self) {
        let queue: &Arc<Queue> = &self.0;
        let mut fx = Effects::default();
        {
            let mut st = queue.state.lock();
            st.requeue_holds = st.requeue_holds.saturating_sub(1);
            if st.requeue_holds == 0 {
                // The gets waiting for the hold ask again (after the requeued messages are
                // offered to consumers, who had them first had the requeue been one step).
                fx.wakes.append(&mut st.hold_waiters);
                if !st.deleted {
                    queue.assign(&mut st, &mut fx);
                }
            }
        }
        queue.finish(fx);
    }
}
