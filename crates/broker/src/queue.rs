//! A queue: messages in order, the consumers attached to it, and the assignment of one to
//! the other.
//!
//! A queue is passive data behind a short mutex, not a task. Whoever changes its state —
//! a publish, an ack, a new consumer, a requeue — does the bookkeeping inline under the lock:
//! append, then assign deliverable messages to consumers with credit (round-robin within the
//! highest consumer priority, per-consumer prefetch, per-channel prefetch) by pushing small
//! [`Outbound`] records onto the consuming connection's [`Outlet`]. Outlets that went from
//! empty to non-empty are woken after the lock is released.
//!
//! Requeued messages go back to their original position (ordered by `seq`) with
//! `redelivered` set. No-ack consumers get a bounded window of deliveries in flight, returned
//! by [`Queue::settle`] once the connection has encoded them, so a slow socket stops its
//! consumers being fed instead of buffering without bound.
//!
//! A durable queue has a message log ([`QueueLog`]): persistent messages are appended to it
//! when published and forgotten when acked or dropped, all under the queue lock, and the
//! group commit writes them. [`Queue::publish_stamped`] returns the generation that makes a
//! message durable, which its publisher confirm waits for.
//!
//! Paging: beyond a window of [`RESIDENT_MAX_MESSAGES`] ready messages (or
//! [`RESIDENT_MAX_BYTES`]), a logged message whose record has been written keeps only its
//! location in memory ([`Slot::Paged`]); it is read back when it reaches the head of the
//! queue. Under memory pressure (queues together holding more than the store's
//! `transient_paging_bytes`), other messages — transient ones, or any in a non-durable queue —
//! page out the same way through a scratch log that is never synced and is removed at start.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use lepus_protocol::{FieldTable, ShortStr};
use lepus_store::log::{Loc, QueueLog};
use lepus_store::store::Store;
use parking_lot::Mutex;

use crate::durability::Durable;
use crate::error::{BrokerError, Result};
use crate::message::{Message, MessageRef};
use crate::outlet::{ConsumerId, Delivery, Outbound, OutletRef};

pub type QueueRef = Arc<Queue>;

/// Deliveries a no-ack consumer may have assigned but not yet encoded by its connection.
pub const NO_ACK_WINDOW: u32 = 2048;

/// Flow control: a queue that has consumers and more ready messages (or bytes) than the high
/// watermark is congested; publishers into it pause until it is back under the low one.
pub const FLOW_HIGH_MESSAGES: usize = 16_384;
pub const FLOW_LOW_MESSAGES: usize = 8_192;
pub const FLOW_HIGH_BYTES: u64 = 64 * 1024 * 1024;
pub const FLOW_LOW_BYTES: u64 = 32 * 1024 * 1024;

/// Ready messages kept in memory before logged ones are paged out.
pub const RESIDENT_MAX_MESSAGES: usize = 8_192;
pub const RESIDENT_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// A ready message: in memory, or only in the queue's log.
#[derive(Debug)]
enum Slot {
    Resident(Entry),
    /// In the queue's log (`scratch` false) or its scratch log.
    Paged {
        seq: u64,
        loc: Loc,
        size: u32,
        redelivered: bool,
        scratch: bool,
    },
}

impl Slot {
    fn seq(&self) -> u64 {
        match self {
            Slot::Resident(e) => e.seq,
            Slot::Paged { seq, .. } => *seq,
        }
    }

    fn size(&self) -> u64 {
        match self {
            Slot::Resident(e) => e.message.size() as u64,
            Slot::Paged { size, .. } => *size as u64,
        }
    }
}

/// A message waiting in a queue.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub message: MessageRef,
    pub redelivered: bool,
}

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
struct Consumer {
    spec: ConsumerSpec,
    /// Assigned and not yet acked (or, for no-ack consumers, not yet encoded).
    in_flight: u32,
}

impl Consumer {
    fn has_credit(&self) -> bool {
        let limit = if self.spec.ack_required { self.spec.prefetch } else { NO_ACK_WINDOW };
        (limit == 0 || self.in_flight < limit) && !self.spec.outlet.is_closed()
    }
}

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
    ready: VecDeque<Slot>,
    ready_bytes: u64,
    /// How many of `ready` are paged out, and the bytes of the resident ones.
    paged: usize,
    resident_bytes: u64,
    /// Paging resumes its scan at the first slot with this `seq` or above.
    page_scan_seq: u64,
    /// Memory pressure at the last paging scan.
    pressure_seen: bool,
    /// `resident_bytes` as last reported to the store's gauge.
    gauge_reported: u64,
    next_seq: u64,
    consumers: Vec<Consumer>,
    cursor: usize,
    deleted: bool,
    ever_consumed: bool,
    /// Publishing connections paused by flow control, woken when the queue is relieved.
    flow_waiters: Vec<OutletRef>,
    /// The message log of a durable queue.
    log: Option<QueueLog>,
    /// Where each logged message (ready or unacked) is in the log, by `seq`.
    locs: HashMap<u64, Loc>,
    /// Where to create a scratch log, and the scratch log once created.
    scratch_store: Option<Store>,
    scratch: Option<QueueLog>,
    /// Where each ready message copied to the scratch log is in it, by `seq`.
    scratch_locs: HashMap<u64, Loc>,
}

impl State {
    /// Gives `n` units of credit back to a consumer, if it is still attached.
    fn return_credit(&mut self, id: ConsumerId, n: u32) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.spec.id == id) {
            c.in_flight = c.in_flight.saturating_sub(n);
        }
    }

    /// Tells the log a message left the queue for good; returns the generation that makes
    /// that durable.
    fn forget(&mut self, seq: u64) -> Option<u64> {
        self.forget_scratch(seq);
        let loc = self.locs.remove(&seq)?;
        Some(self.log.as_mut()?.forget(loc))
    }

    /// Releases a message's scratch copy (it is back in memory, or gone).
    fn forget_scratch(&mut self, seq: u64) {
        if self.scratch_locs.is_empty() {
            return;
        }
        if let Some(loc) = self.scratch_locs.remove(&seq)
            && let Some(scratch) = self.scratch.as_mut()
        {
            scratch.forget(loc);
        }
    }

    fn push_back(&mut self, entry: Entry) {
        let size = entry.message.size() as u64;
        self.ready_bytes += size;
        self.add_resident(size);
        self.ready.push_back(Slot::Resident(entry));
    }

    /// Inserts a requeued message at its original position.
    fn insert(&mut self, entry: Entry) {
        let size = entry.message.size() as u64;
        self.ready_bytes += size;
        self.add_resident(size);
        let at = self.ready.partition_point(|s| s.seq() < entry.seq);
        self.ready.insert(at, Slot::Resident(entry));
    }

    /// Removes the head, resident or not.
    fn pop_slot(&mut self) -> Option<Slot> {
        let slot = self.ready.pop_front()?;
        self.ready_bytes -= slot.size();
        match &slot {
            Slot::Resident(e) => self.sub_resident(e.message.size() as u64),
            Slot::Paged { .. } => self.paged -= 1,
        }
        Some(slot)
    }

    /// Removes the head, reading it back from the log if it was paged out. A record that
    /// cannot be read is logged and dropped (it is gone from the disk too).
    fn pop_entry(&mut self) -> Option<Entry> {
        loop {
            match self.pop_slot()? {
                Slot::Resident(e) => {
                    self.forget_scratch(e.seq);
                    return Some(e);
                }
                Slot::Paged { seq, loc, redelivered, scratch, .. } => {
                    let log = if scratch { self.scratch.as_ref() } else { self.log.as_ref() };
                    let read = log.map(|log| log.read(loc));
                    match read {
                        Some(Ok(parts)) => {
                            self.forget_scratch(seq);
                            let message = Arc::new(Message::from_record(parts));
                            return Some(Entry { seq, message, redelivered });
                        }
                        Some(Err(e)) => {
                            // Dropped from memory but not from the log: a later start reads it
                            // again (the error may have been passing).
                            tracing::error!(error = %e, segment = loc.segment, offset = loc.offset, scratch, "paged-out message unreadable; skipped (a stored one comes back at the next start)");
                            self.locs.remove(&seq);
                            self.scratch_locs.remove(&seq);
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Counts message bytes entering memory, here and (in steps of [`GAUGE_STEP_BYTES`], so
    /// that queues on different cores do not contend for it per message) in the store's gauge.
    fn add_resident(&mut self, bytes: u64) {
        self.resident_bytes += bytes;
        self.report_resident();
    }

    fn sub_resident(&mut self, bytes: u64) {
        self.resident_bytes -= bytes;
        self.report_resident();
    }

    fn report_resident(&mut self) {
        let Some(store) = &self.scratch_store else { return };
        let (now, reported) = (self.resident_bytes, self.gauge_reported);
        if now >= reported + GAUGE_STEP_BYTES {
            store.add_resident_bytes(now - reported);
            self.gauge_reported = now;
        } else if now + GAUGE_STEP_BYTES <= reported || (now == 0 && reported > 0) {
            store.sub_resident_bytes(reported - now);
            self.gauge_reported = now;
        }
    }

    fn over_resident_limits(&self) -> bool {
        self.ready.len() - self.paged > RESIDENT_MAX_MESSAGES || self.resident_bytes > RESIDENT_MAX_BYTES
    }

    /// Pages out messages beyond the resident window, scanning from where the last call
    /// stopped. A logged message pages out once its record is written. Any other message is
    /// first copied to the scratch log, and pages out once that copy is written (a later
    /// call). The scan stops at the first message still waiting for a write.
    fn page_out(&mut self) {
        if !self.over_resident_limits() {
            return;
        }
        let logs = [self.log.as_ref(), self.scratch.as_ref()];
        // After a write error "written" may run past records that never reached the file.
        if logs.iter().flatten().any(|log| log.store().failed()) {
            return;
        }
        // Transient messages page out only under memory pressure (their copy costs a write).
        let pressure = self.scratch_store.as_ref().is_some_and(Store::memory_pressure);
        if self.log.is_none() && !pressure {
            return;
        }
        if pressure && !self.pressure_seen {
            // Transient messages the scan passed before the pressure began are candidates now.
            self.page_scan_seq = 0;
        }
        self.pressure_seen = pressure;
        if self.scratch.is_none()
            && pressure
            && let Some(store) = &self.scratch_store
        {
            self.scratch = Some(QueueLog::create_scratch(store));
        }
        let resident = self.ready.len() - self.paged;
        let mut excess_messages = resident.saturating_sub(RESIDENT_MAX_MESSAGES);
        let mut excess_bytes = self.resident_bytes.saturating_sub(RESIDENT_MAX_BYTES);
        let start = self.ready.partition_point(|s| s.seq() < self.page_scan_seq).max(RESIDENT_MIN_MESSAGES);
        let mut i = start;
        let mut waiting: Option<u64> = None;
        while i < self.ready.len() && (excess_messages > 0 || excess_bytes > 0) {
            if let Slot::Resident(e) = &self.ready[i] {
                let (seq, redelivered, size) = (e.seq, e.redelivered, e.message.size());
                // Where it can be read back from, once written: (location, in the scratch log).
                let copy = if let Some(&loc) = self.locs.get(&seq) {
                    Some((loc, false))
                } else if let Some(scratch) = self.scratch.as_mut().filter(|_| pressure) {
                    let loc = match self.scratch_locs.get(&seq) {
                        Some(&loc) => loc,
                        None => {
                            let loc = scratch.append(&e.message.record(0)).0;
                            self.scratch_locs.insert(seq, loc);
                            loc
                        }
                    };
                    Some((loc, true))
                } else {
                    None
                };
                if let Some((loc, scratch)) = copy {
                    let log = if scratch { self.scratch.as_ref() } else { self.log.as_ref() };
                    if log.is_some_and(|log| log.is_written(loc)) {
                        self.ready[i] = Slot::Paged { seq, loc, size: size as u32, redelivered, scratch };
                        self.paged += 1;
                        self.sub_resident(size as u64);
                    } else {
                        // Its record is being written: page it out on a later call.
                        waiting.get_or_insert(seq);
                    }
                    excess_messages = excess_messages.saturating_sub(1);
                    excess_bytes = excess_bytes.saturating_sub(size as u64);
                }
            }
            i += 1;
        }
        self.page_scan_seq = waiting.unwrap_or_else(|| self.ready.get(i).map_or(self.next_seq, Slot::seq));
    }
}

/// Granularity of a queue's reports to the store's memory gauge.
const GAUGE_STEP_BYTES: u64 = 1024 * 1024;

/// The head of the queue is never paged out: it is about to be delivered.
const RESIDENT_MIN_MESSAGES: usize = 256;

impl State {
    fn congested(&self) -> bool {
        !self.consumers.is_empty() && (self.ready.len() > FLOW_HIGH_MESSAGES || self.ready_bytes > FLOW_HIGH_BYTES)
    }

    fn relieved(&self) -> bool {
        self.consumers.is_empty()
            || self.deleted
            || (self.ready.len() <= FLOW_LOW_MESSAGES && self.ready_bytes <= FLOW_LOW_BYTES)
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
        Queue {
            name,
            vhost,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            limits,
            logged: false,
            state: Mutex::default(),
        }
    }

    /// Lets the queue page out messages it does not log, through a scratch log in `store`.
    pub fn with_scratch(mut self, store: Store) -> Queue {
        self.state.get_mut().scratch_store = Some(store);
        self
    }

    /// Gives the queue a message log: persistent messages published from now on are stored.
    pub fn with_log(mut self, log: QueueLog) -> Queue {
        self.logged = true;
        self.state.get_mut().log = Some(log);
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
            st.locs.insert(seq, loc);
            match message {
                Some(message) => st.push_back(Entry { seq, message, redelivered }),
                None => {
                    st.ready_bytes += size as u64;
                    st.paged += 1;
                    st.ready.push_back(Slot::Paged { seq, loc, size, redelivered, scratch: false });
                }
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
                if message.is_persistent()
                    && let Some(log) = st.log.as_mut()
                {
                    let (loc, generation) = log.append(&message.record(now_ms));
                    st.locs.insert(seq, loc);
                    durable = Durable::after_generation(generation);
                }
                st.push_back(Entry { seq, message, redelivered: false });
                self.assign(&mut st, &mut wakes);
                st.page_out();
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
                || max_length_bytes.is_some_and(|m| st.ready_bytes + size > m)
        };
        if !full(st) {
            return true;
        }
        if *overflow == Some(Overflow::RejectPublish) {
            return false;
        }
        while full(st) {
            match st.pop_slot() {
                Some(dropped) => {
                    st.forget(dropped.seq());
                }
                None => return max_length.is_none_or(|m| m > 0) && max_length_bytes.is_none_or(|m| size <= m),
            }
        }
        true
    }

    /// Moves ready messages to consumers with credit.
    fn assign(self: &Arc<Self>, st: &mut State, wakes: &mut Wakes) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            // Read a paged-out head back before taking a consumer's credit for it.
            if matches!(st.ready.front(), Some(Slot::Paged { .. })) {
                let Some(entry) = st.pop_entry() else { break };
                st.insert(entry);
            }
            let Some(index) = Self::next_consumer(st) else { break };
            let Some(entry) = st.pop_entry() else { break };
            if st.consumers[index].spec.ack_required
                && let Some(loc) = st.locs.get(&entry.seq).copied()
                && let Some(log) = st.log.as_mut()
            {
                log.mark_delivered(loc);
            }
            let consumer = &mut st.consumers[index];
            consumer.in_flight += 1;
            let spec = &consumer.spec;
            let delivery = Delivery {
                consumer: spec.id,
                queue: Some(self.clone()),
                seq: entry.seq,
                message: entry.message,
                redelivered: entry.redelivered,
                ack_required: spec.ack_required,
            };
            let outlet = spec.outlet.clone();
            st.cursor = index + 1;
            if outlet.push(Outbound::Deliver(delivery)) {
                wakes.push(outlet);
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

    /// The next consumer to serve: highest priority among those with credit whose channel
    /// admits a message, round-robin from the cursor. Takes the consumer's channel-wide credit.
    fn next_consumer(st: &mut State) -> Option<usize> {
        let n = st.consumers.len();
        let mut below: Option<i64> = None;
        loop {
            let best = st
                .consumers
                .iter()
                .filter(|c| c.has_credit() && below.is_none_or(|b| c.spec.priority < b))
                .map(|c| c.spec.priority)
                .max()?;
            for offset in 0..n {
                let i = (st.cursor + offset) % n;
                let c = &st.consumers[i];
                if c.spec.priority == best && c.has_credit() && c.spec.gate.admit(c.spec.ack_required) {
                    return Some(i);
                }
            }
            // Every consumer of this priority is blocked by its channel: try the next lower one.
            below = Some(best);
        }
    }

    /// Attaches a consumer (after the exclusivity checks) and feeds it.
    pub fn consume(self: &Arc<Self>, spec: ConsumerSpec) -> Result<()> {
        let mut wakes = Wakes::new();
        {
            let mut st = self.state.lock();
            if st.deleted {
                return Err(BrokerError::not_found("queue", self.name.to_string(), self.vhost.to_string()));
            }
            let exclusive_held = st.consumers.iter().any(|c| c.spec.exclusive);
            if exclusive_held || (spec.exclusive && !st.consumers.is_empty()) {
                return Err(BrokerError::AccessRefused(format!("{} in exclusive use", self.describe())));
            }
            st.consumers.push(Consumer { spec, in_flight: 0 });
            st.ever_consumed = true;
            self.assign(&mut st, &mut wakes);
        }
        wake_all(wakes);
        Ok(())
    }

    /// Detaches a consumer. Returns whether the queue should now be auto-deleted.
    pub fn cancel(&self, consumer: ConsumerId) -> bool {
        let mut wakes = Wakes::new();
        let auto_delete = {
            let mut st = self.state.lock();
            let before = st.consumers.len();
            // Keep the round-robin cursor on the same next consumer: removing one before it
            // shifts the ones after it down.
            let (cursor, mut index, mut removed_before_cursor) = (st.cursor, 0, 0);
            st.consumers.retain(|c| {
                let keep = c.spec.id != consumer;
                removed_before_cursor += usize::from(!keep && index < cursor);
                index += 1;
                keep
            });
            st.cursor -= removed_before_cursor;
            let removed = st.consumers.len() < before;
            if st.cursor > st.consumers.len() {
                st.cursor = 0;
            }
            // Without consumers a queue is never congested: paused publishers may resume.
            st.release_flow_waiters(&mut wakes);
            removed && self.auto_delete && st.consumers.is_empty() && st.ever_consumed && !st.deleted
        };
        wake_all(wakes);
        auto_delete
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
            let stored = !st.locs.is_empty() || !st.scratch_locs.is_empty();
            let released = if stored { seqs.filter_map(|seq| st.forget(seq)).max() } else { None };
            if let Some(id) = consumer {
                st.return_credit(id, count);
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
                st.return_credit(id, entries.len() as u32);
            }
            if st.deleted {
                return;
            }
            for (seq, message) in entries {
                st.insert(Entry { seq, message, redelivered: true });
            }
            self.assign(&mut st, &mut wakes);
        }
        wake_all(wakes);
    }

    /// `basic.get`: the next ready message and how many remain. (With no-ack, the caller
    /// [`Queue::ack`]s it at once.)
    pub fn get(&self) -> Option<(Entry, u32)> {
        let mut st = self.state.lock();
        let entry = st.pop_entry()?;
        if let Some(loc) = st.locs.get(&entry.seq).copied()
            && let Some(log) = st.log.as_mut()
        {
            log.mark_delivered(loc);
        }
        Some((entry, st.ready.len() as u32))
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut wakes = Wakes::new();
        let n = {
            let mut st = self.state.lock();
            let n = st.ready.len() as u32;
            let ready = std::mem::take(&mut st.ready);
            for slot in ready {
                st.forget(slot.seq());
            }
            let resident = st.resident_bytes;
            st.sub_resident(resident);
            (st.ready_bytes, st.paged) = (0, 0);
            st.release_flow_waiters(&mut wakes);
            n
        };
        wake_all(wakes);
        n
    }

    /// Ready messages held only in the log (paged out).
    pub fn paged_count(&self) -> u32 {
        self.state.lock().paged as u32
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
            let n = st.ready.len() as u32;
            // Freed, not just emptied: something may hold the deleted queue a while longer
            // (a route cache, the route memo until its next refresh, a delivery in flight).
            st.ready = Default::default();
            let resident = st.resident_bytes;
            st.sub_resident(resident);
            (st.ready_bytes, st.paged) = (0, 0);
            st.locs = Default::default();
            st.scratch_locs = Default::default();
            if let Some(scratch) = st.scratch.take() {
                scratch.destroy();
            }
            if let Some(log) = st.log.take() {
                log.destroy();
            }
            wakes.append(&mut st.flow_waiters);
            for c in st.consumers.drain(..) {
                if c.spec.outlet.push(Outbound::ConsumerCancelled(c.spec.id)) {
                    wakes.push(c.spec.outlet.clone());
                }
            }
            n
        };
        wake_all(wakes);
        n
    }
}
