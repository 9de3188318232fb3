//! A queue's consumers and the choice of the next one to serve.
//!
//! The policy: among consumers with credit (own prefetch, or the no-ack window; outlet open)
//! whose channel admits a message ([`ChannelGate`]: not paused by flow, channel-wide prefetch
//! for ack consumers), the highest priority; within it round-robin in registration order,
//! starting after the consumer served last. Lower priorities are served only while every
//! consumer of the higher ones is blocked. Cancelling consumers before the round-robin
//! position leaves it on the same next consumer.
//!
//! Invariant, checked after every change in debug builds: the round-robin position is within
//! the list.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::outlet::{ConsumerId, OutletRef};

/// Deliveries a no-ack consumer may have assigned but not yet encoded by its connection.
pub const NO_ACK_WINDOW: u32 = 2048;

/// Flow and channel-wide prefetch (`basic.qos global=true`) shared by a channel's consumers.
#[derive(Debug, Default)]
pub struct ChannelGate {
    /// `channel.flow`: false stops deliveries to the channel.
    pub paused: AtomicBool,
    /// 0 = unlimited.
    pub prefetch: AtomicU32,
    pub unacked: AtomicU32,
}

impl ChannelGate {
    fn try_take(&self) -> bool {
        if self.paused.load(Ordering::Acquire) {
            return false;
        }
        let limit = self.prefetch.load(Ordering::Acquire);
        self.unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (limit == 0 || n < limit).then_some(n + 1))
            .is_ok()
    }

    /// Whether a consumer on this channel may be sent a message now: never while the channel
    /// is paused; consumers that ack also take a unit of channel-wide credit (no-ack consumers
    /// are not subject to `basic.qos`).
    fn admit(&self, ack_required: bool) -> bool {
        if ack_required { self.try_take() } else { !self.paused.load(Ordering::Acquire) }
    }

    /// Returns `n` units of channel-wide credit.
    pub fn release(&self, n: u32) {
        let _ = self.unacked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
    }
}

/// Who a consumer is and how it consumes.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub id: ConsumerId,
    pub outlet: OutletRef,
    pub ack_required: bool,
    /// Per-consumer prefetch (`basic.qos global=false`); 0 = unlimited.
    pub prefetch: u32,
    pub gate: Arc<ChannelGate>,
    /// `x-priority`: higher is served first while it has credit.
    pub priority: i64,
    pub exclusive: bool,
}

#[derive(Debug)]
pub(super) struct Consumer {
    pub spec: ConsumerSpec,
    /// Assigned and not yet acked (or, for no-ack consumers, not yet encoded).
    in_flight: u32,
}

impl Consumer {
    /// Credit of its own: below its prefetch (ack) or the no-ack window.
    fn own_credit(&self) -> bool {
        let limit = if self.spec.ack_required { self.spec.prefetch } else { NO_ACK_WINDOW };
        limit == 0 || self.in_flight < limit
    }

    fn has_credit(&self) -> bool {
        self.own_credit() && !self.spec.outlet.is_closed()
    }
}

#[derive(Debug, Default)]
pub(super) struct Consumers {
    /// In registration order.
    list: Vec<Consumer>,
    /// Round-robin: the scan starts at this position.
    cursor: usize,
}

impl Consumers {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `spec` may join: not while an exclusive consumer is attached, and an exclusive
    /// one only alone.
    pub fn may_join(&self, spec: &ConsumerSpec) -> bool {
        !self.list.iter().any(|c| c.spec.exclusive) && (!spec.exclusive || self.is_empty())
    }

    /// Registers a consumer after the others.
    pub fn add(&mut self, spec: ConsumerSpec) {
        self.list.push(Consumer { spec, in_flight: 0 });
        self.check();
    }

    /// Removes a consumer; false if it was not attached.
    pub fn remove(&mut self, id: ConsumerId) -> bool {
        let before = self.list.len();
        // Keep the round-robin cursor on the same next consumer: removing one before it
        // shifts the ones after it down.
        let (cursor, mut index, mut removed_before_cursor) = (self.cursor, 0, 0);
        self.list.retain(|c| {
            let keep = c.spec.id != id;
            removed_before_cursor += usize::from(!keep && index < cursor);
            index += 1;
            keep
        });
        self.cursor -= removed_before_cursor;
        if self.cursor > self.list.len() {
            self.cursor = 0;
        }
        self.check();
        self.list.len() < before
    }

    /// Gives `n` units of credit back to a consumer, if it is still attached.
    pub fn return_credit(&mut self, id: ConsumerId, n: u32) {
        if let Some(c) = self.list.iter_mut().find(|c| c.spec.id == id) {
            c.in_flight = c.in_flight.saturating_sub(n);
        }
    }

    /// The next consumer to serve (see the module doc), charged a unit of its own credit and
    /// of its channel's; the round-robin position moves past it.
    pub fn next(&mut self) -> Option<&ConsumerSpec> {
        let i = self.find()?;
        self.cursor = i + 1;
        self.check();
        let consumer = &mut self.list[i];
        consumer.in_flight += 1;
        Some(&consumer.spec)
    }

    /// The position of the next consumer to serve; takes its channel's credit.
    fn find(&self) -> Option<usize> {
        let n = self.list.len();
        let mut below: Option<i64> = None;
        loop {
            let best = self
                .list
                .iter()
                .filter(|c| c.has_credit() && below.is_none_or(|b| c.spec.priority < b))
                .map(|c| c.spec.priority)
                .max()?;
            for offset in 0..n {
                let i = (self.cursor + offset) % n;
                let c = &self.list[i];
                if c.spec.priority == best && c.has_credit() && c.spec.gate.admit(c.spec.ack_required) {
                    return Some(i);
                }
            }
            // Every consumer of this priority is blocked by its channel: try the next lower one.
            below = Some(best);
        }
    }

    /// Removes every consumer; returns them in registration order.
    pub fn drain(&mut self) -> Vec<ConsumerSpec> {
        self.list.drain(..).map(|c| c.spec).collect()
    }

    /// Checks the invariant (debug builds).
    fn check(&self) {
        debug_assert!(self.cursor <= self.list.len(), "round-robin position {} past {}", self.cursor, self.list.len());
    }
}
