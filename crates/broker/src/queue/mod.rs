//! A queue: messages in order, the consumers attached to it, and the assignment of one to
//! the other.
//!
//! A queue is passive data behind a short mutex, not a task. Whoever changes its state —
//! a publish, an ack, a new consumer, a requeue — does the bookkeeping inline under the lock:
//! append, then assign deliverable messages to consumers with credit (round-robin within the
//! highest consumer priority, per-consumer prefetch, per-channel prefetch) by pushing small
//! [`Outbound`] records onto the consuming connection's [`Outlet`](crate::outlet::Outlet).
//! Outlets that went from empty to non-empty are woken after the lock is released.
//!
//! Requeued messages go back to their original position (ordered by `seq`) with
//! `redelivered` set. No-ack consumers get a bounded window of deliveries in flight, returned
//! by [`Queue::ack`] once the connection has encoded them, so a slow socket stops its
//! consumers being fed instead of buffering without bound.
//!
//! A durable queue has a message log ([`QueueLog`]): persistent messages are appended to it
//! when published and forgotten when acked or dropped, all under the queue lock, and the
//! group commit writes them. [`Queue::publish_stamped`] returns the generation that makes a
//! message durable, which its publisher confirm waits for.
//!
//! Paging: beyond a window of [`RESIDENT_MAX_MESSAGES`] ready messages (or
//! [`RESIDENT_MAX_BYTES`]), a logged message whose record has been written keeps only its
//! location in memory; it is read back when it reaches the head of the queue. Under memory
//! pressure (queues together holding more than the store's `transient_paging_bytes`), other
//! messages — transient ones, or any in a non-durable queue — page out the same way through a
//! scratch log that is never synced and is removed at start.
//!
//! # Layout
//! This module holds [`Queue`], its lock and the rules that span its parts: limits, flow
//! control, assignment, deletion. The parts, each behind its own invariants (checked after
//! every change in debug builds):
//! - `ready`: a ready list ([`Entry`]s, or paged-out slots, in `seq` order), its byte and
//!   paging counts, the paging scan and the memory gauge.
//! - `stored`: the stored copies of a queue's messages, shared by its ready lists: the log of a
//!   durable queue, the scratch log, and where each message is in them.
//! - `consumers`: the consumers by priority and registration order, the choice of the next one
//!   to serve (or the single active consumer, `x-single-active-consumer`), [`ChannelGate`] and
//!   [`ConsumerSpec`]; registering and cancelling in O(log n).

mod consumers;
mod ready;
mod stored;

use std::sync::Arc;

use lepus_protocol::{FieldTable, ShortStr};
use lepus_store::log::{Loc, QueueLog};
use lepus_store::store::Store;
use parking_lot::Mutex;

use self::consumers::Consumers;
pub use self::consumers::{ChannelGate, ConsumerSpec, NO_ACK_WINDOW};
use self::ready::ReadyList;
pub use self::ready::{Entry, RESIDENT_MAX_BYTES, RESIDENT_MAX_MESSAGES};
use self::stored::Stored;
use crate::durability::Durable;
use crate::error::{BrokerError, Result};
use crate::message::MessageRef;
use crate::outlet::{ConsumerId, Delivery, Outbound, OutletRef};
use crate::stats::{Counters, Snapshot, Stat};

pub type QueueRef = Arc<Queue>;

/// Flow control: a queue that has consumers and more ready messages (or bytes) than the high
/// watermark is congested; publishers into it pause until it is back under the low one.
pub const FLOW_HIGH_MESSAGES: usize = 16_384;
pub const FLOW_LOW_MESSAGES: usize = 8_192;
pub const FLOW_HIGH_BYTES: u64 = 64 * 1024 * 1024;
pub const FLOW_LOW_BYTES: u64 = 32 * 1024 * 1024;

/// `x-overflow`: what happens when `x-max-length` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    DropHead,
    RejectPublish,
}

/// Limits from the queue's arguments that the queue enforces itself.
#[derive(Debug, Clone, Default)]
pub struct QueueLimits {
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<Overflow>,
}

#[derive(Debug, Default)]
struct State {
    ready: ReadyList,
    consumers: Consumers,
    /// The queue's stored copies of its messages (log and scratch log).
    stored: Stored,
    next_seq: u64,
    deleted: bool,
    ever_consumed: bool,
    /// Publishing connections paused by flow control, woken when the queue is relieved.
    flow_waiters: Vec<OutletRef>,
}

impl State {
    fn congested(&self) -> bool {
        !self.consumers.is_empty() && (self.ready.len() > FLOW_HIGH_MESSAGES || self.ready.bytes() > FLOW_HIGH_BYTES)
    }

    fn relieved(&self) -> bool {
        self.consumers.is_empty()
            || self.deleted
            || (self.ready.len() <= FLOW_LOW_MESSAGES && self.ready.bytes() <= FLOW_LOW_BYTES)
    }

    /// Moves the flow waiters to `wakes` once the queue is relieved.
    fn release_flow_waiters(&mut self, wakes: &mut Wakes) {
        if !self.flow_waiters.is_empty() && self.relieved() {
            wakes.append(&mut self.flow_waiters);
        }
    }
}

/// What happened to a published message at one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Yes,
    /// Enqueued, and the queue is now over its flow-control high watermark.
    Congested,
    /// Refused by `x-overflow: reject-publish` (the publisher gets a `basic.nack`).
    Rejected,
    /// The queue was deleted concurrently.
    Gone,
}

#[derive(Debug)]
pub struct Queue {
    pub name: ShortStr,
    pub vhost: Arc<str>,
    pub durable: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub limits: QueueLimits,
    /// Persistent messages go to a message log (a durable queue of a broker with storage).
    pub logged: bool,
    /// Messages enqueued (`Published`), delivered to consumers (`Delivered`), taken by
    /// `basic.get` (`Get`), and of those two the redeliveries (`Redelivered`). Written only
    /// under the queue lock (so one writer at a time), readable without it.
    stats: Counters,
    state: Mutex<State>,
}

/// Outlets to wake once the queue lock is released.
type Wakes = Vec<OutletRef>;

fn wake_all(wakes: Wakes) {
    for outlet in wakes {
        outlet.wake();
    }
}

impl Queue {
    pub fn new(
        name: ShortStr,
        vhost: Arc<str>,
        durable: bool,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
        limits: QueueLimits,
    ) -> Queue {
        let single_active = crate::args::single_active_consumer(&arguments);
        Queue {
            name,
            vhost,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            limits,
            logged: false,
            stats: Counters::default(),
            state: Mutex::new(State { consumers: Consumers::new(single_active), ..State::default() }),
        }
    }

    /// Lets the queue page out messages it does not log, through a scratch log in `store`.
    pub fn with_scratch(mut self, store: Store) -> Queue {
        let st = self.state.get_mut();
        st.ready.set_gauge(store.clone());
        st.stored.set_scratch_store(store);
        self
    }

    /// Gives the queue a message log: persistent messages published from now on are stored.
    pub fn with_log(mut self, log: QueueLog) -> Queue {
        self.logged = true;
        self.state.get_mut().stored.set_log(log);
        self
    }

    /// Puts messages recovered from the log back, in order, before any publish: (the
    /// message, or `None` to leave it paged out; where it is; its size; whether it had been
    /// delivered before the restart).
    pub fn restore(&self, messages: Vec<(Option<MessageRef>, Loc, u32, bool)>) {
        let mut st = self.state.lock();
        for (message, loc, size, redelivered) in messages {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.stored.restore(seq, loc);
            match message {
                Some(message) => st.ready.push_back(Entry { seq, message, redelivered }),
                None => st.ready.push_back_paged(seq, loc, size, redelivered),
            }
        }
    }

    /// `'name' in vhost 'v'`, for reply texts.
    pub fn describe(&self) -> String {
        format!("queue '{}' in vhost '{}'", self.name, self.vhost)
    }

    /// Appends a message and assigns what can be assigned.
    pub fn publish(self: &Arc<Self>, message: MessageRef) -> Enqueued {
        self.publish_stamped(message, 0).0
    }

    /// [`Queue::publish`], also returning what makes the message durable (a persistent
    /// message stored in the queue's log: the store generation). `now_ms` stamps the record.
    pub fn publish_stamped(self: &Arc<Self>, message: MessageRef, now_ms: u64) -> (Enqueued, Durable) {
        let mut wakes = Wakes::new();
        let mut durable = Durable::NOW;
        let outcome = {
            let mut st = self.state.lock();
            if st.deleted {
                return (Enqueued::Gone, Durable::NOW);
            }
            if !self.make_room(&mut st, message.size() as u64) {
                Enqueued::Rejected
            } else {
                let seq = st.next_seq;
                st.next_seq += 1;
                if let Some(generation) = st.stored.append(seq, &message, now_ms) {
                    durable = Durable::after_generation(generation);
                }
                st.ready.push_back(Entry { seq, message, redelivered: false });
                self.stats.add(Stat::Published, 1);
                self.assign(&mut st, &mut wakes);
                let st = &mut *st;
                st.ready.page_out(&mut st.stored);
                if st.congested() { Enqueued::Congested } else { Enqueued::Yes }
            }
        };
        wake_all(wakes);
        (outcome, durable)
    }

    /// Applies `x-max-length`/`x-max-length-bytes` before a message of `size` bytes is added.
    fn make_room(&self, st: &mut State, size: u64) -> bool {
        let QueueLimits { max_length, max_length_bytes, overflow } = &self.limits;
        if max_length.is_none() && max_length_bytes.is_none() {
            return true;
        }
        let full = |st: &State| {
            max_length.is_some_and(|m| st.ready.len() as u64 + 1 > m)
                || max_length_bytes.is_some_and(|m| st.ready.bytes() + size > m)
        };
        if !full(st) {
            return true;
        }
        if *overflow == Some(Overflow::RejectPublish) {
            return false;
        }
        while full(st) {
            if !st.ready.drop_head(&mut st.stored) {
                return max_length.is_none_or(|m| m > 0) && max_length_bytes.is_none_or(|m| size <= m);
            }
        }
        true
    }

    /// Moves ready messages to consumers with credit.
    fn assign(self: &Arc<Self>, st: &mut State, wakes: &mut Wakes) {
        // A paged-out head is read back before a consumer's credit is taken for it.
        while !st.consumers.is_empty() && st.ready.load_head(&mut st.stored) {
            let Some(spec) = st.consumers.next() else { break };
            let Some(entry) = st.ready.pop(&mut st.stored) else { break };
            if spec.ack_required {
                st.stored.mark_delivered(entry.seq);
            }
            self.count_out(Stat::Delivered, entry.redelivered);
            let delivery = Delivery {
                consumer: spec.id,
                queue: Some(self.clone()),
                seq: entry.seq,
                message: entry.message,
                redelivered: entry.redelivered,
                ack_required: spec.ack_required,
            };
            if spec.outlet.push(Outbound::Deliver(delivery)) {
                wakes.push(spec.outlet.clone());
            }
        }
        st.release_flow_waiters(wakes);
    }

    /// Registers a publishing connection to be woken when this queue is no longer congested.
    /// False if it is not congested now (nothing to wait for).
    pub fn wait_for_relief(&self, outlet: &OutletRef) -> bool {
        let mut st = self.state.lock();
        if st.relieved() {
            return false;
        }
        if !st.flow_waiters.iter().any(|w| Arc::ptr_eq(w, outlet)) {
            st.flow_waiters.push(outlet.clone());
        }
        true
    }

    /// Whether publishers paused on this queue may resume.
    pub fn is_relieved(&self) -> bool {
        self.state.lock().relieved()
    }

    /// Attaches a consumer (after the exclusivity checks) and feeds it.
    pub fn consume(self: &Arc<Self>, spec: ConsumerSpec) -> Result<()> {
        let mut wakes = Wakes::new();
        {
            let mut st = self.state.lock();
            if st.deleted {
                return Err(BrokerError::not_found("queue", self.name.to_string(), self.vhost.to_string()));
            }
            if !st.consumers.may_join(&spec) {
                return Err(BrokerError::AccessRefused(format!("{} in exclusive use", self.describe())));
            }
            if !st.consumers.add(spec) {
                // Front ends take ids from the registry, unique in the broker.
                debug_assert!(false, "a consumer id attached twice to {}", self.describe());
                return Err(BrokerError::Internal(format!("a consumer id attached twice to {}", self.describe())));
            }
            st.ever_consumed = true;
            self.assign(&mut st, &mut wakes);
        }
        wake_all(wakes);
        Ok(())
    }

    /// Detaches a consumer. What the queue had assigned to it that its connection has not
    /// taken from the outlet yet comes back to its place (with its channel-wide credit), and
    /// is assigned again: with a single active consumer, the next one takes over from there.
    /// Returns whether the queue should now be auto-deleted.
    pub fn cancel(self: &Arc<Self>, consumer: ConsumerId) -> bool {
        let mut wakes = Wakes::new();
        let auto_delete = {
            let mut st = self.state.lock();
            let active = st.consumers.active();
            let removed = st.consumers.remove(consumer);
            let mut back = Vec::new();
            if let Some(spec) = &removed {
                spec.outlet.take_deliveries(consumer, &mut back);
                spec.gate.release(back.iter().filter(|d| d.ack_required).count() as u32);
            }
            let handover = active.is_some() && st.consumers.active() != active;
            if !back.is_empty() || handover {
                for d in back {
                    st.ready.insert(Entry { seq: d.seq, message: d.message, redelivered: d.redelivered });
                }
                self.assign(&mut st, &mut wakes);
            }
            // Without consumers a queue is never congested: paused publishers may resume.
            st.release_flow_waiters(&mut wakes);
            removed.is_some() && self.auto_delete && st.consumers.is_empty() && st.ever_consumed && !st.deleted
        };
        wake_all(wakes);
        auto_delete
    }

    /// The consumer served while the queue has a single active consumer
    /// (`x-single-active-consumer`); `None` otherwise, or while it has no consumers.
    pub fn active_consumer(&self) -> Option<ConsumerId> {
        self.state.lock().consumers.active()
    }

    /// Deliveries that left the queue for good: acked, rejected without requeue, or (for a
    /// no-ack consumer) sent. Their stored copies are released, the consumer (if any: not for
    /// `basic.get`) gets its credit back, and more is assigned. Returns what makes the removal
    /// durable.
    pub fn ack(self: &Arc<Self>, consumer: Option<ConsumerId>, seqs: impl ExactSizeIterator<Item = u64>) -> Durable {
        let mut wakes = Wakes::new();
        let count = seqs.len() as u32;
        let durable = {
            let mut st = self.state.lock();
            let released = if st.stored.is_empty() { None } else { seqs.filter_map(|seq| st.stored.forget(seq)).max() };
            if let Some(id) = consumer {
                st.consumers.return_credit(id, count);
                self.assign(&mut st, &mut wakes);
            }
            released.map_or(Durable::NOW, Durable::after_generation)
        };
        wake_all(wakes);
        durable
    }

    /// Assigns again (after a channel's flow or channel-wide credit reopened).
    pub fn kick(self: &Arc<Self>) {
        let mut wakes = Wakes::new();
        {
            let mut st = self.state.lock();
            self.assign(&mut st, &mut wakes);
        }
        wake_all(wakes);
    }

    /// Puts messages back at their original positions, marked redelivered, and returns their
    /// credit to `consumer` (if it is still attached; `None` for `basic.get`).
    pub fn requeue(self: &Arc<Self>, entries: Vec<(u64, MessageRef)>, consumer: Option<ConsumerId>) {
        let mut wakes = Wakes::new();
        {
            let mut st = self.state.lock();
            if let Some(id) = consumer {
                st.consumers.return_credit(id, entries.len() as u32);
            }
            if st.deleted {
                return;
            }
            for (seq, message) in entries {
                st.ready.insert(Entry { seq, message, redelivered: true });
            }
            self.assign(&mut st, &mut wakes);
        }
        wake_all(wakes);
    }

    /// `basic.get`: the next ready message and how many remain. (With no-ack, the caller
    /// [`Queue::ack`]s it at once.)
    pub fn get(&self) -> Option<(Entry, u32)> {
        let mut st = self.state.lock();
        let st = &mut *st;
        let entry = st.ready.pop(&mut st.stored)?;
        st.stored.mark_delivered(entry.seq);
        self.count_out(Stat::Get, entry.redelivered);
        Some((entry, st.ready.len() as u32))
    }

    /// Counts a message leaving for a consumer or `basic.get` (under the queue lock).
    #[inline]
    fn count_out(&self, stat: Stat, redelivered: bool) {
        self.stats.add(stat, 1);
        if redelivered {
            self.stats.add(Stat::Redelivered, 1);
        }
    }

    /// The queue's message counters (see [`Queue`]'s `stats`).
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut wakes = Wakes::new();
        let n = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let n = st.ready.clear(&mut st.stored) as u32;
            st.release_flow_waiters(&mut wakes);
            n
        };
        wake_all(wakes);
        n
    }

    /// Ready messages held only in the log (paged out).
    pub fn paged_count(&self) -> u32 {
        self.state.lock().ready.paged_count() as u32
    }

    pub fn message_count(&self) -> u32 {
        self.state.lock().ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.state.lock().consumers.len() as u32
    }

    pub fn counts(&self) -> (u32, u32) {
        let st = self.state.lock();
        (st.ready.len() as u32, st.consumers.len() as u32)
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Checks `queue.delete`'s conditions.
    pub fn check_delete(&self, if_unused: bool, if_empty: bool) -> Result<()> {
        let st = self.state.lock();
        if if_unused && !st.consumers.is_empty() {
            return Err(BrokerError::PreconditionFailed(format!("{} in use", self.describe())));
        }
        if if_empty && !st.ready.is_empty() {
            return Err(BrokerError::PreconditionFailed(format!("{} not empty", self.describe())));
        }
        Ok(())
    }

    /// Marks the queue deleted: drops its messages and tells every consumer's connection that
    /// the consumer is cancelled. Returns the number of ready messages dropped.
    pub fn delete(&self) -> u32 {
        let mut wakes = Wakes::new();
        let n = {
            let mut st = self.state.lock();
            if st.deleted {
                return 0;
            }
            st.deleted = true;
            // Freed, not just emptied: something may hold the deleted queue a while longer
            // (a route cache, the route memo until its next refresh, a delivery in flight).
            let n = st.ready.free() as u32;
            st.stored.destroy();
            wakes.append(&mut st.flow_waiters);
            for spec in st.consumers.drain() {
                if spec.outlet.push(Outbound::ConsumerCancelled(spec.id)) {
                    wakes.push(spec.outlet);
                }
            }
            n
        };
        wake_all(wakes);
        n
    }
}
