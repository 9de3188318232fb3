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

use parking_lot::Mutex;

use crate::message::MessageRef;
use crate::queue::QueueRef;

/// How a connection is woken; the server implements it over its async runtime.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// A consumer, as the broker knows it: an id unique in the broker, given by the front end
/// that registered it, which alone knows what it means on its protocol (AMQP: a channel and a
/// consumer tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);

/// What a queue hands a connection.
#[derive(Debug)]
pub enum Outbound {
    Deliver(Delivery),
    /// The queue went away: tell the client its consumer is cancelled (AMQP: `basic.cancel`).
    ConsumerCancelled(ConsumerId),
}

/// One message assigned to one consumer, waiting to be written.
#[derive(Debug)]
pub struct Delivery {
    pub consumer: ConsumerId,
    /// The queue the message came from (`None` for direct reply-to).
    pub queue: Option<QueueRef>,
    /// The message's position in its queue, for acks and requeues.
    pub seq: u64,
    pub message: MessageRef,
    pub redelivered: bool,
    /// Whether the consumer acknowledges (false: no-ack, the message leaves the queue once
    /// the connection has sent it: [`crate::Queue::ack`]).
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

    /// Takes the deliveries to `consumer` still waiting here out (in order), leaving the rest
    /// in theirs: its queue takes them back when the consumer is cancelled (queue lock, then
    /// outlet lock).
    pub fn take_deliveries(&self, consumer: ConsumerId, into: &mut Vec<Delivery>) {
        let mut pending = self.pending.lock();
        if !pending.iter().any(|o| matches!(o, Outbound::Deliver(d) if d.consumer == consumer)) {
            return;
        }
        for item in std::mem::take(&mut *pending) {
            match item {
                Outbound::Deliver(d) if d.consumer == consumer => into.push(d),
                other => pending.push(other),
            }
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
