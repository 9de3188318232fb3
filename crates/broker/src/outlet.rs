//! The hand-off from queues to a consuming connection.
//!
//! Each connection has one [`Outlet`]. A queue that assigns a message to one of the
//! connection's consumers pushes a small [`Delivery`] record onto the outlet while holding the
//! queue lock (lock order: queue, then outlet; nothing else), and the connection is woken only
//! when the outlet goes from empty to non-empty. The connection drains the whole list at once,
//! assigns delivery tags in send order, encodes and writes: one wake-up per batch, not per
//! message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lepus_protocol::ShortStr;
use parking_lot::Mutex;

use crate::message::MessageRef;
use crate::queue::QueueRef;

/// How a connection is woken; the server implements it over its async runtime.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// What a queue hands a connection.
#[derive(Debug)]
pub enum Outbound {
    Deliver(Delivery),
    /// The queue went away: tell the client its consumer is cancelled (`basic.cancel`).
    ConsumerCancelled {
        channel: u16,
        consumer_tag: ShortStr,
    },
}

/// One message assigned to one consumer, waiting to be written.
#[derive(Debug)]
pub struct Delivery {
    pub channel: u16,
    pub consumer_tag: ShortStr,
    /// The queue the message came from (`None` for direct reply-to).
    pub queue: Option<QueueRef>,
    /// The message's position in its queue, for acks and requeues.
    pub seq: u64,
    pub message: MessageRef,
    pub redelivered: bool,
    /// Whether the consumer acknowledges (false: no-ack, the message left the queue).
    pub ack_required: bool,
}

pub struct Outlet {
    pending: Mutex<Vec<Outbound>>,
    wake: Box<dyn Wake>,
    /// Set once the connection has gone; queues stop assigning to it.
    closed: AtomicBool,
}

pub type OutletRef = Arc<Outlet>;

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet").field("pending", &self.pending.lock().len()).finish()
    }
}

impl Outlet {
    pub fn new(wake: Box<dyn Wake>) -> Outlet {
        Outlet { pending: Mutex::new(Vec::new()), wake, closed: AtomicBool::new(false) }
    }

    /// Queues a delivery; returns true when the outlet was empty (the caller wakes it).
    pub fn push(&self, item: Outbound) -> bool {
        let mut pending = self.pending.lock();
        pending.push(item);
        pending.len() == 1
    }

    pub fn wake(&self) {
        self.wake.wake();
    }

    /// Moves every pending delivery into `into` (which the caller reuses between drains).
    pub fn drain_into(&self, into: &mut Vec<Outbound>) {
        let mut pending = self.pending.lock();
        if into.is_empty() {
            std::mem::swap(&mut *pending, into);
        } else {
            into.append(&mut pending);
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
