//! Taking a message for the API (a queue's `get`, the aliveness check) as `basic.get` does:
//! while a requeue comes back to the queue in pieces (`lepus_broker::queue::RequeueHold`) the
//! next message may still be on its way, so the request waits, without holding a worker,
//! until the queue wakes it at the hold's end, then asks again.

use std::sync::Arc;

use lepus_broker::queue::{Entry, Got};
use lepus_broker::{Outlet, OutletRef, QueueRef, Wake};
use tokio::sync::Notify;

/// Wakes a request waiting for a queue's hold to end.
struct NotifyWake(Arc<Notify>);

impl Wake for NotifyWake {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// The queue's next message and how many remain, or `None` if it has none.
pub(crate) async fn get(queue: &QueueRef) -> Option<(Entry, u32)> {
    let mut waiter: Option<(OutletRef, Arc<Notify>)> = None;
    loop {
        match queue.get(waiter.as_ref().map(|(outlet, _)| outlet)) {
            Got::Message(entry, remaining) => return Some((entry, remaining)),
            Got::Empty => return None,
            // Asked again with a waiter registered (a hold that ended between the two asks
            // answers at once); a permit left by a wake-up before the wait is not lost.
            Got::Held => match &waiter {
                None => {
                    let notify = Arc::new(Notify::new());
                    waiter = Some((Arc::new(Outlet::new(Box::new(NotifyWake(notify.clone())))), notify));
                }
                Some((_, notify)) => notify.notified().await,
            },
        }
    }
}
