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
//! scratch log that is never synced and is removed at start. While the node's memory is above
//! the paging fraction of its watermark, only the head stays resident; the memory sampler
//! sweeps every queue ([`Queue::page_out`]) so that idle ones page out too.
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
//!
//! # TTL, expiry and dead letters
//! Queues reach the broker's clock, timer service and their vhost through a [`QueueEnv`],
//! attached when the vhost takes them in (a queue without one has no TTLs and drops dead
//! letters). A message's deadline is set when it is enqueued — the lower of `x-message-ttl` and
//! its `expiration` — and kept when it is requeued. Expired messages leave as the ready list
//! finds them (see `ready`): before each assignment and `basic.get`, and when the queue's one
//! timer fires at the earliest deadline (of a message, or of `x-expires` while the queue is
//! unused). A timer that fires early (its message was consumed) just re-arms.
//!
//! Operations collect what must happen after the lock is released in [`Effects`]: outlets to
//! wake, messages to dead-letter (with the reason), and stored copies to release once the dead
//! letters are in their new queues (see [`crate::dead_letter`]).

mod consumers;
mod hold;
mod inspect;
mod priority;
mod ready;
mod stored;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock, Weak};

use lepus_protocol::{FieldTable, FieldValue, ShortStr};
use lepus_store::log::{Loc, QueueLog};
use lepus_store::store::Store;
use parking_lot::Mutex;

use self::consumers::Consumers;
pub use self::consumers::{ChannelGate, ConsumerSpec, NO_ACK_CREDIT_BYTES, NO_ACK_WINDOW, no_ack_credit};
pub use self::hold::RequeueHold;
pub use self::inspect::{ConsumerView, QueueCounts};
use self::priority::Ready;
use self::ready::Removed;
pub use self::ready::{Entry, NO_EXPIRY, RESIDENT_MAX_BYTES, RESIDENT_MAX_MESSAGES, RESIDENT_MIN_MESSAGES};
use self::stored::{Fetched, Stored};
use crate::clock::ClockRef;
pub use crate::dead_letter::DeadLetterTarget;
use crate::dead_letter::{self, DeathReason};
use crate::dedup::QueueKeys;
use crate::durability::Durable;
use crate::error::{BrokerError, Result};
use crate::message::MessageRef;
use crate::outlet::{ConsumerId, Delivery, Outbound, OutletRef};
use crate::policy::Applied;
use crate::stats::{Counters, Snapshot, Stat};
use crate::timer::{TimerId, TimerService, TimerTarget};
use crate::vhost::VHost;

pub type QueueRef = Arc<Queue>;

/// The most messages one expiry pass removes under the queue lock; the queue's timer takes the
/// rest in later passes, so a mass expiry never holds the lock long.
const EXPIRE_BATCH: usize = 4096;

/// After a paged-out head could not be read back, how long until the queue tries again.
pub const READ_RETRY_MS: u64 = 1000;

/// Flow control: a queue that has consumers and more ready messages (or bytes) than the high
/// watermark is congested; publishers into it pause until it is back under the low one.
pub const FLOW_HIGH_MESSAGES: usize = 16_384;
pub const FLOW_LOW_MESSAGES: usize = 8_192;
pub const FLOW_HIGH_BYTES: u64 = 64 * 1024 * 1024;
pub const FLOW_LOW_BYTES: u64 = 32 * 1024 * 1024;

/// `x-overflow`: what happens when `x-max-length` or `x-max-length-bytes` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Enqueue, then drop (dead-letter) the oldest until within the limits (the default).
    DropHead,
    /// Refuse the message: the publisher's confirm is a nack.
    RejectPublish,
    /// Refuse it, and dead-letter it.
    RejectPublishDlx,
}

/// What the queue's arguments make the queue do itself: length limits, TTLs, expiry and
/// dead-lettering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_length: Option<u64>,
    /// Counts message bodies, as RabbitMQ.
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<Overflow>,
    /// `x-message-ttl`.
    pub message_ttl_ms: Option<u64>,
    /// `x-expires`: deleted after this long unused.
    pub expires_ms: Option<u64>,
    /// What becomes of a message that leaves undelivered: dead-lettered
    /// (`x-dead-letter-exchange`), released into a delayed exchange, or (`None`) dropped.
    pub departure: Option<Departure>,
    /// `x-max-priority`: a ready list per level, the highest served first.
    pub max_priority: Option<u8>,
    /// Deliveries carry `x-delivery-count`: 0, then how often the message came back (a quorum
    /// queue's behaviour).
    pub count_deliveries: bool,
    /// `x-delivery-limit` (quorum queues): a message returned more often than this is
    /// dead-lettered with reason `delivery_limit`.
    pub delivery_limit: Option<u64>,
}

/// What a queue does with a message that leaves it undelivered (expired, dropped by a length
/// limit, rejected), chosen when the queue is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Departure {
    /// Dead-lettered to `x-dead-letter-exchange` (see [`crate::dead_letter`]).
    DeadLetter(DeadLetterTarget),
    /// The queue is a delayed exchange's hidden queue, named as the exchange: a message's
    /// deadline is its `x-delay`, and when it comes the message is routed through the exchange
    /// (see [`crate::exchange::delayed`]).
    Release,
}

/// What a queue reaches of the broker: the clock and timer service for deadlines, and its
/// vhost, where dead letters are routed and an expired queue is removed.
#[derive(Debug, Clone)]
pub struct Services {
    pub clock: ClockRef,
    pub timers: Arc<TimerService>,
    pub vhost: Weak<VHost>,
    /// The broker's queue churn counters.
    pub churn: Arc<crate::stats::QueueChurn>,
}

/// A queue's [`Services`] and the queue itself, weakly (its timer's target).
#[derive(Debug)]
struct QueueEnv {
    services: Services,
    me: Weak<Queue>,
}

#[derive(Debug)]
struct State {
    ready: Ready,
    consumers: Consumers,
    /// The queue's stored copies of its messages (log and scratch log).
    stored: Stored,
    next_seq: u64,
    deleted: bool,
    ever_consumed: bool,
    /// Publishing connections paused by flow control, woken when the queue is relieved.
    flow_waiters: Vec<OutletRef>,
    /// The queue's timer, and the deadline it is armed for ([`NO_EXPIRY`]: not armed).
    timer: Option<TimerId>,
    timer_at_ms: u64,
    /// When to try again to read back a paged-out head that could not be read.
    read_retry_at_ms: u64,
    /// Last use (`x-expires`): declaration, `basic.get`, the last consumer leaving.
    last_used_ms: u64,
    /// Deadlines of delivered messages awaiting an ack, kept for a requeue.
    unacked_expiry: HashMap<u64, u64>,
    /// How often each message that came back was returned (queues that count deliveries).
    delivery_counts: HashMap<u64, u32>,
    /// What the queue applies now: its arguments' limits resolved with its policies.
    limits: QueueLimits,
    /// The policy and operator policy applied (see [`crate::policy`]).
    applied: Applied,
    /// Every timed message goes in the expiry index: the TTL changed while the queue held
    /// messages, so deadlines from it no longer rise with `seq`.
    index_all_timed: bool,
    /// A deduplication queue's keys of the messages it holds (empty for other queues).
    keys: QueueKeys,
    /// Requeues in pieces under way: nothing is delivered meanwhile (see [`hold`]).
    requeue_holds: u32,
    /// Connections whose `basic.get` waits for the holds to end, woken then (or at deletion).
    hold_waiters: Vec<OutletRef>,
}

impl Default for State {
    fn default() -> State {
        State {
            ready: Ready::default(),
            consumers: Consumers::default(),
            stored: Stored::default(),
            next_seq: 0,
            deleted: false,
            ever_consumed: false,
            flow_waiters: Vec::new(),
            timer: None,
            timer_at_ms: NO_EXPIRY,
            read_retry_at_ms: NO_EXPIRY,
            requeue_holds: 0,
            hold_waiters: Vec::new(),
            last_used_ms: 0,
            unacked_expiry: HashMap::new(),
            delivery_counts: HashMap::new(),
            limits: QueueLimits::default(),
            applied: Applied::default(),
            index_all_timed: false,
            keys: QueueKeys::default(),
        }
    }
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

    /// After messages left in bulk: the paging window moves up, paused publishers may resume.
    fn page_out_and_relieve(&mut self, fx: &mut Effects) {
        self.ready.page_out(&mut self.stored);
        self.release_flow_waiters(fx);
    }

    /// Moves the flow waiters to `wakes` once the queue is relieved.
    fn release_flow_waiters(&mut self, fx: &mut Effects) {
        if !self.flow_waiters.is_empty() && self.relieved() {
            fx.wakes.append(&mut self.flow_waiters);
        }
    }
}

/// What happened to a published message at one queue.
/// Why deliveries leave a queue for good, for [`Queue`]'s release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Acknowledged (`basic.ack`, an API get that acks): counted as `ack`.
    Acked,
    /// Sent to a consumer or getter that does not acknowledge.
    Sent,
    /// Rejected without requeue, with no dead letter made.
    Discarded,
    /// Rejected and stored in other queues as dead letters: the store writes the releases
    /// after those appends.
    Moved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Yes,
    /// Enqueued, and the queue is now over its flow-control high watermark.
    Congested,
    /// Refused by `x-overflow: reject-publish(-dlx)` (the publisher gets a `basic.nack`).
    Rejected,
    /// The queue was deleted concurrently.
    Gone,
    /// Held by a delayed exchange until its delay has passed (not routed yet: a `mandatory`
    /// message is returned, as by RabbitMQ's plugin).
    Held,
}

/// What `basic.get` found ([`Queue::get`]).
#[derive(Debug)]
pub enum Got {
    /// The next message, and how many remain ready.
    Message(Entry, u32),
    Empty,
    /// A requeue is coming back in pieces: ask again when woken.
    Held,
}

impl Got {
    /// The message, if one was got.
    pub fn message(self) -> Option<(Entry, u32)> {
        match self {
            Got::Message(entry, remaining) => Some((entry, remaining)),
            Got::Empty | Got::Held => None,
        }
    }
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
    /// `x-queue-type` (what metrics label its deliveries with).
    pub queue_type: crate::args::QueueType,
    /// The limits the arguments set; what applies is these resolved with the queue's policies
    /// ([`Queue::limits`]).
    pub arg_limits: QueueLimits,
    /// Persistent messages go to a message log (a durable queue of a broker with storage).
    pub logged: bool,
    /// A delayed exchange's hidden queue (`Departure::Release`): what it takes is held, not
    /// routed ([`Enqueued::Held`]).
    held: bool,
    /// `x-message-deduplication`: a message whose `x-deduplication-header` a message in the
    /// queue carries is refused (see [`crate::dedup`]).
    dedup: bool,
    /// Messages enqueued (`Published`), delivered to consumers (`Delivered`), taken by
    /// `basic.get` (`Get`), and of those two the redeliveries (`Redelivered`). Written only
    /// under the queue lock (so one writer at a time), readable without it.
    stats: Counters,
    /// Rates of those counters, sampled by the broker ([`crate::rates`]).
    rates: crate::rates::RateCell,
    env: OnceLock<QueueEnv>,
    state: Mutex<State>,
}

/// What an operation leaves to do once the queue lock is released.
#[derive(Default)]
struct Effects {
    /// Outlets to wake.
    wakes: Vec<OutletRef>,
    /// Messages to dead-letter, and why.
    dead: Vec<(MessageRef, DeathReason)>,
    /// Stored copies to release once the dead letters are enqueued elsewhere.
    forget: Vec<u64>,
    /// Where the dead letters go: the queue's departure when they died.
    departure: Option<Departure>,
}

impl Effects {
    /// A message to dead-letter (or release) through `departure` after the lock.
    fn dead_letter(&mut self, message: MessageRef, reason: DeathReason, departure: &Option<Departure>) {
        if self.departure.is_none() {
            self.departure = departure.clone();
        }
        self.dead.push((message, reason));
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
        let max_priority = limits.max_priority;
        let held = limits.departure == Some(Departure::Release);
        let dedup = crate::args::message_deduplication(&arguments);
        let queue_type = crate::args::queue_type(&arguments);
        Queue {
            name,
            vhost,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            queue_type,
            arg_limits: limits.clone(),
            logged: false,
            held,
            dedup,
            stats: Counters::default(),
            rates: Default::default(),
            env: OnceLock::new(),
            state: Mutex::new(State {
                ready: Ready::new(max_priority),
                consumers: Consumers::new(single_active),
                limits,
                ..State::default()
            }),
        }
    }

    /// The hidden queue of the delayed exchange `exchange` of `vhost`: each message it takes
    /// expires at its `x-delay` and is then released into the exchange.
    pub fn held_for(exchange: ShortStr, vhost: Arc<str>) -> Queue {
        let limits = QueueLimits {
            // Makes every message timed; its deadline is its delay (see `timed_deadline`).
            message_ttl_ms: Some(crate::exchange::delayed::DELAY_MAX_MS),
            departure: Some(Departure::Release),
            ..QueueLimits::default()
        };
        Queue::new(exchange, vhost, false, None, false, FieldTable::new(), limits)
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

    /// Connects the queue to the broker's clock, timers and its vhost (once; later calls do
    /// nothing), starts its `x-expires` period and arms its timer for what it holds.
    pub fn attach(self: &Arc<Self>, services: &Services) {
        let env = QueueEnv { services: services.clone(), me: Arc::downgrade(self) };
        if self.env.set(env).is_err() {
            return;
        }
        let mut st = self.state.lock();
        st.last_used_ms = services.clock.now_ms();
        self.arm(&mut st);
    }

    /// The queue made with `applied` (its policies) in force from the start.
    pub fn with_policy(mut self, applied: Applied) -> Queue {
        let st = self.state.get_mut();
        st.limits = applied.queue_limits(&self.arg_limits);
        st.applied = applied;
        self
    }

    /// Applies `applied` (the queue's policies, see [`crate::policy`]) at once: the limits
    /// become the arguments' resolved with them. As in RabbitMQ, a lower length limit drops
    /// (dead-letters) the excess under drop-head, a new TTL applies to messages enqueued from
    /// now on (those in the queue keep their deadlines), and a new expiry period counts from now.
    pub fn apply_policy(self: &Arc<Self>, applied: Applied) {
        let limits = applied.queue_limits(&self.arg_limits);
        let mut fx = Effects::default();
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            if st.deleted || (st.applied == applied && st.limits == limits) {
                return;
            }
            if limits.message_ttl_ms != st.limits.message_ttl_ms && st.next_seq > 0 {
                st.index_all_timed = true;
            }
            let now = self.now_ms();
            if limits.expires_ms != st.limits.expires_ms {
                st.last_used_ms = now.unwrap_or(st.last_used_ms);
            }
            st.limits = limits;
            st.applied = applied;
            self.drop_over_limits(st, &mut fx);
            if let Some(now) = now {
                self.expire(st, &mut fx, now);
            }
            self.arm(st);
            st.page_out_and_relieve(&mut fx);
        }
        self.finish(fx);
    }

    /// The limits in force: the arguments' resolved with the queue's policies.
    pub fn limits(&self) -> QueueLimits {
        self.state.lock().limits.clone()
    }

    /// The policy and operator policy applied to the queue (the management API's `policy`,
    /// `operator_policy` and `effective_policy_definition`).
    pub fn policy(&self) -> Applied {
        self.state.lock().applied.clone()
    }

    /// The consumer timeout of deliveries from this queue: its `x-consumer-timeout`, else its
    /// policy's `consumer-timeout`; `Some(0)` turns it off, `None` leaves the broker's.
    pub fn consumer_timeout_ms(&self) -> Option<u64> {
        crate::args::consumer_timeout_ms(&self.arguments).or_else(|| self.state.lock().applied.consumer_timeout_ms())
    }

    /// What a consumer timeout of a delivery from this queue does: its
    /// `x-consumer-timeout-action`, else its policy's `consumer-timeout-action`, else
    /// RabbitMQ's (the channel is closed).
    pub fn consumer_timeout_action(&self) -> crate::args::ConsumerTimeoutAction {
        crate::args::consumer_timeout_action(&self.arguments)
            .or_else(|| self.state.lock().applied.consumer_timeout_action())
            .unwrap_or_default()
    }

    /// The clock's time, if the queue has a clock.
    fn now_ms(&self) -> Option<u64> {
        self.env.get().map(|env| env.services.clock.now_ms())
    }

    /// Puts messages recovered from the log back, in order, before any publish.
    pub fn restore(&self, messages: Vec<Restored>) {
        let mut st = self.state.lock();
        for Restored { message, loc, body_len, timestamp_ms, redelivered, returns } in messages {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.stored.restore(seq, loc);
            if returns > 0 && self.arg_limits.count_deliveries {
                st.delivery_counts.insert(seq, returns);
            }
            if self.dedup
                && let Some(m) = &message
            {
                // The keys come back with the messages (a deduplication queue reads them all).
                let headers = m.properties().ok().and_then(|p| p.headers);
                if let Some(key) = st.keys.key_of(headers.as_ref(), || self.describe()) {
                    st.keys.insert(key, seq);
                }
            }
            let expires_at_ms = match &message {
                Some(m) => self.timed_deadline(&st, timestamp_ms, m).0,
                None => deadline(st.limits.message_ttl_ms, timestamp_ms, None),
            };
            match message {
                Some(message) => st.ready.push_back(Entry { seq, message, redelivered, expires_at_ms }, true),
                None => st.ready.push_back_paged(seq, loc, body_len, redelivered, expires_at_ms),
            }
        }
    }

    /// A timed message's deadline if enqueued at `now_ms`, and whether it may come before a
    /// later message's (then it goes in the expiry index). In a delayed exchange's queue, its
    /// delay, whatever its TTL.
    fn timed_deadline(&self, st: &State, now_ms: u64, message: &crate::message::Message) -> (u64, bool) {
        if self.held {
            return (now_ms.saturating_add(crate::exchange::delayed::message_delay_ms(message)), true);
        }
        // A deadline from the queue's TTL rises with `seq` (unless the TTL changed); a lower
        // per-message one may not.
        let ttl = st.limits.message_ttl_ms;
        let indexed = st.index_all_timed || message.expiration_ms.is_some_and(|e| ttl.is_none_or(|t| e < t));
        (deadline(ttl, now_ms, message.expiration_ms), indexed)
    }

    /// Whether this is a deduplication queue (`x-message-deduplication`).
    pub fn deduplicates(&self) -> bool {
        self.dedup
    }

    /// How many keys a deduplication queue holds (those of the messages in it).
    pub fn dedup_keys(&self) -> usize {
        self.state.lock().keys.len()
    }

    /// Whether this is a delayed exchange's hidden queue.
    pub fn is_held(&self) -> bool {
        self.held
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
        let mut fx = Effects::default();
        let mut durable = Durable::NOW;
        // Decoded before the lock, for deduplication queues only.
        let headers = if self.dedup { message.properties().ok().and_then(|p| p.headers) } else { None };
        let outcome = {
            let mut st = self.state.lock();
            if st.deleted {
                return (Enqueued::Gone, Durable::NOW);
            }
            let key = if self.dedup { st.keys.key_of(headers.as_ref(), || self.describe()) } else { None };
            if self.will_overflow(&st, &message) {
                if st.limits.overflow == Some(Overflow::RejectPublishDlx) {
                    fx.dead_letter(message, DeathReason::MaxLen, &st.limits.departure);
                }
                Enqueued::Rejected
            } else if let Some(key) = key.as_ref().filter(|k| st.keys.contains(k)) {
                self.refuse_duplicate(&st, &mut fx, message, key);
                Enqueued::Rejected
            } else {
                if let Some(key) = key {
                    let seq = st.next_seq;
                    st.keys.insert(key, seq);
                }
                self.enqueue(&mut st, &mut fx, message, now_ms, &mut durable);
                if st.congested() {
                    Enqueued::Congested
                } else if self.held {
                    Enqueued::Held
                } else {
                    Enqueued::Yes
                }
            }
        };
        self.finish(fx);
        (outcome, durable)
    }

    /// A duplicate in a deduplication queue: refused (its confirm is a nack) and, if the queue
    /// has a dead-letter exchange, dead-lettered with reason `maxlen` (the plugin's behaviour
    /// on RabbitMQ 4.1 and later).
    #[cold]
    fn refuse_duplicate(&self, st: &State, fx: &mut Effects, message: MessageRef, key: &crate::dedup::DedupKey) {
        tracing::trace!(queue = %self.describe(), ?key, "duplicate refused");
        if matches!(st.limits.departure, Some(Departure::DeadLetter(_))) {
            fx.dead_letter(message, DeathReason::MaxLen, &st.limits.departure);
        }
    }

    /// Appends a message, gives it to a consumer if one can take it now, then applies the
    /// length limits and expiry (a message with TTL 0 that no consumer took expires here).
    fn enqueue(
        self: &Arc<Self>,
        st: &mut State,
        fx: &mut Effects,
        message: MessageRef,
        now_ms: u64,
        durable: &mut Durable,
    ) {
        let timed = st.limits.message_ttl_ms.is_some() || message.expiration_ms.is_some();
        // Read under the lock, so deadlines from the queue's TTL rise with `seq`.
        let clock_ms = if timed { self.now_ms() } else { None };
        if let Some(now) = clock_ms {
            // Messages already due go first, but not one due this very millisecond.
            self.expire(st, fx, now.saturating_sub(1));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        if let Some(generation) = st.stored.append(seq, &message, now_ms) {
            *durable = Durable::after_generation(generation);
        }
        let (expires_at_ms, indexed) = match clock_ms {
            Some(now) => self.timed_deadline(st, now, &message),
            None => (NO_EXPIRY, false),
        };
        st.ready.push_back(Entry { seq, message, redelivered: false, expires_at_ms }, indexed);
        self.stats.add(Stat::Published, 1);
        self.deliver(st, fx);
        self.drop_over_limits(st, fx);
        if let Some(now) = clock_ms {
            self.expire(st, fx, now);
            self.arm(st);
        }
        st.ready.page_out(&mut st.stored);
    }

    /// Whether `x-overflow: reject-publish(-dlx)` refuses `message`.
    fn will_overflow(&self, st: &State, message: &MessageRef) -> bool {
        let QueueLimits { max_length, max_length_bytes, overflow, .. } = &st.limits;
        matches!(overflow, Some(Overflow::RejectPublish | Overflow::RejectPublishDlx))
            && (max_length.is_some_and(|m| st.ready.len() as u64 >= m)
                || max_length_bytes.is_some_and(|m| st.ready.bytes() + message.body().len() as u64 > m))
    }

    /// `x-overflow: drop-head` (the default): drops the oldest messages (dead-lettered with
    /// reason `maxlen`) until the queue is within its limits. A queue that dead-letters reads
    /// a paged-out head back first; one that cannot be read now stays in place and dropping
    /// stops there (the queue is over its limit until the read retry), so it is dead-lettered
    /// once it can be read, never lost, and dead letters keep their order (as expiry does).
    fn drop_over_limits(&self, st: &mut State, fx: &mut Effects) {
        let QueueLimits { max_length, max_length_bytes, overflow, .. } = st.limits;
        if max_length.is_none() && max_length_bytes.is_none() || overflow.is_some_and(|o| o != Overflow::DropHead) {
            return;
        }
        let over = |st: &State| {
            max_length.is_some_and(|m| st.ready.len() as u64 > m)
                || max_length_bytes.is_some_and(|m| st.ready.bytes() > m)
        };
        let dead_letters = st.limits.departure.is_some() && self.env.get().is_some();
        while over(st) {
            if dead_letters && !st.ready.load_head(&mut st.stored) {
                if st.stored.read_blocked() && st.read_retry_at_ms == NO_EXPIRY {
                    self.retry_read_later(st);
                }
                break;
            }
            let Some(removed) = st.ready.drop_head() else { break };
            self.drop_removed(st, fx, removed, DeathReason::MaxLen);
        }
    }

    /// Removes every ready message due at or before `now_ms` (dead-lettered as `expired`).
    fn expire(&self, st: &mut State, fx: &mut Effects, now_ms: u64) {
        if st.ready.next_expiry_ms() > now_ms {
            return;
        }
        let mut removed = Vec::new();
        // Dead-lettering needs the bodies: paged-out messages are read back as they leave,
        // and one that cannot be read now stops expiry until it can (see `ReadyList::expire`).
        let dead_letters = st.limits.departure.is_some() && self.env.get().is_some();
        let stored = dead_letters.then_some(&mut st.stored);
        st.ready.expire(now_ms, EXPIRE_BATCH, stored, &mut removed);
        for r in removed {
            self.drop_removed(st, fx, r, DeathReason::Expired);
        }
        if st.stored.read_blocked() && st.read_retry_at_ms == NO_EXPIRY {
            self.retry_read_later(st);
        }
        // More may be due: the timer, armed for now, takes the next batch (or, while a read
        // is blocked, the read retry does).
        self.arm(st);
    }

    /// A message leaves the queue without being delivered: dead-lettered if the queue has a
    /// dead-letter exchange (its stored copies go once it is enqueued there), else forgotten.
    fn drop_removed(&self, st: &mut State, fx: &mut Effects, removed: Removed, reason: DeathReason) {
        let seq = removed.seq();
        if !st.delivery_counts.is_empty() {
            st.delivery_counts.remove(&seq);
        }
        if self.dedup {
            st.keys.remove(seq);
        }
        if st.limits.departure.is_none() || self.env.get().is_none() {
            st.stored.forget(seq);
            return;
        }
        let message = match removed {
            Removed::Resident(e) => e.message,
            // An unreadable record is logged by `read`. Either way its copy stays in the log
            // (it comes back at the next start): dead-lettering needs its bytes.
            Removed::Paged { seq, place } => match st.stored.read(seq, place) {
                Fetched::Message(message, _) => message,
                Fetched::Unreadable | Fetched::Later => {
                    st.stored.unblock(seq);
                    return;
                }
            },
        };
        fx.dead_letter(message, reason, &st.limits.departure);
        fx.forget.push(seq);
    }

    /// Arms the queue's timer for its earliest deadline, if that is earlier than the one it is
    /// armed for (a later one fires early and re-arms).
    fn arm(&self, st: &mut State) {
        let Some(env) = self.env.get() else { return };
        // While a paged-out message cannot be read, expiry waits for the read retry (an
        // overdue message it holds back would arm the timer for now, again and again).
        let expiry_ms = if st.stored.read_blocked() { NO_EXPIRY } else { st.ready.next_expiry_ms() };
        let next = expiry_ms.min(self.expiry_deadline(st)).min(st.read_retry_at_ms);
        if next >= st.timer_at_ms {
            return;
        }
        st.timer_at_ms = next;
        match st.timer {
            Some(id) => {
                env.services.timers.reschedule(id, next);
            }
            None => {
                let target: Weak<dyn TimerTarget> = env.me.clone();
                st.timer = Some(env.services.timers.schedule(target, next));
            }
        }
    }

    /// When the queue expires (`x-expires`) if it stays unused: never while it has consumers.
    fn expiry_deadline(&self, st: &State) -> u64 {
        match st.limits.expires_ms {
            Some(ms) if st.consumers.is_empty() && !st.deleted => st.last_used_ms.saturating_add(ms),
            _ => NO_EXPIRY,
        }
    }

    /// Whether the queue is past its `x-expires` period at `now_ms` (and not deleted).
    pub fn is_unused_at(&self, now_ms: u64) -> bool {
        let st = self.state.lock();
        !st.deleted && self.expiry_deadline(&st) <= now_ms
    }

    /// Counts a use of the queue for `x-expires` (a declaration, `basic.get`).
    pub fn touch(&self) {
        if let Some(now) = self.now_ms() {
            self.state.lock().last_used_ms = now;
        }
    }

    /// Does what an operation left for after the lock: wakes outlets, publishes dead letters
    /// and then releases their stored copies here.
    #[inline(always)]
    fn finish(&self, fx: Effects) {
        let Effects { wakes, dead, forget, departure } = fx;
        for outlet in wakes {
            outlet.wake();
        }
        if !dead.is_empty() || !forget.is_empty() {
            let _ = self.dead_letter(departure, dead, forget);
        }
    }

    /// Publishes dead letters (on this thread's dead-letter work list), or releases delayed
    /// messages into their exchange, then releases the stored copies of `forget` here: as
    /// moved (after the appends, in the store's commit) if a dead letter was stored in a
    /// target's log. Returns whether one was, if the job ran at once (not queued behind the
    /// dead-lettering job running on this thread).
    #[cold]
    fn dead_letter(
        &self,
        departure: Option<Departure>,
        dead: Vec<(MessageRef, DeathReason)>,
        forget: Vec<u64>,
    ) -> bool {
        let (Some(env), Some(departure)) = (self.env.get(), departure) else { return false };
        let (Some(vhost), Some(me)) = (env.services.vhost.upgrade(), env.me.upgrade()) else { return false };
        let now_ms = env.services.clock.now_ms();
        let stored = Rc::new(Cell::new(false));
        let stored_in_job = stored.clone();
        dead_letter::run(move || {
            let moved = match &departure {
                Departure::DeadLetter(target) => dead_letter::publish(&vhost, &me.name, target, dead, now_ms),
                Departure::Release => {
                    let messages = dead.into_iter().map(|(m, _)| m).collect();
                    crate::exchange::delayed::release(&vhost, &me, messages, now_ms);
                    true
                }
            };
            stored_in_job.set(moved);
            if !forget.is_empty() {
                let mut st = me.state.lock();
                for seq in forget {
                    if moved {
                        st.stored.forget_moved(seq);
                    } else {
                        st.stored.forget(seq);
                    }
                }
            }
        });
        stored.get()
    }

    /// Drops due messages, then moves ready messages to consumers with credit.
    fn assign(self: &Arc<Self>, st: &mut State, fx: &mut Effects) {
        if !st.consumers.is_empty()
            && st.ready.next_expiry_ms() != NO_EXPIRY
            && let Some(now) = self.now_ms()
        {
            self.expire(st, fx, now);
        }
        self.deliver(st, fx);
    }

    /// Moves ready messages to consumers with credit.
    fn deliver(self: &Arc<Self>, st: &mut State, fx: &mut Effects) {
        if st.requeue_holds > 0 {
            return;
        }
        // A paged-out head is read back before a consumer's credit is taken for it.
        while !st.consumers.is_empty() && st.ready.load_head(&mut st.stored) {
            let Some(spec) = st.consumers.next() else { break };
            let Some(entry) = st.ready.pop(&mut st.stored) else { break };
            if spec.ack_required {
                st.stored.mark_delivered(entry.seq);
            }
            // Kept for a requeue (a no-ack delivery comes back if its consumer goes before it
            // is written); [`Queue::ack`] forgets it.
            if entry.expires_at_ms != NO_EXPIRY {
                st.unacked_expiry.insert(entry.seq, entry.expires_at_ms);
            }
            self.count_out(Stat::Delivered, entry.redelivered);
            if !spec.ack_required {
                self.stats.add(Stat::DeliveredNoAck, 1);
            }
            let message = self.counted(&st.delivery_counts, entry.seq, entry.message);
            // A no-ack consumer's window is charged by the size of the message it is sent,
            // as its connection and a requeue give the credit back.
            let (consumer, extra_credit) =
                (spec.id, if spec.ack_required { 0 } else { no_ack_credit(message.size()) - 1 });
            let delivery = Delivery {
                consumer: spec.id,
                queue: Some(self.clone()),
                seq: entry.seq,
                message,
                redelivered: entry.redelivered,
                ack_required: spec.ack_required,
            };
            if spec.outlet.push(Outbound::Deliver(delivery)) {
                fx.wakes.push(spec.outlet.clone());
            }
            if extra_credit > 0 {
                st.consumers.charge(consumer, extra_credit);
            }
        }
        st.release_flow_waiters(fx);
        if st.stored.read_blocked() && st.read_retry_at_ms == NO_EXPIRY {
            self.retry_read_later(st);
        }
    }

    /// The head could not be read back (see [`Fetched::Later`]): deliveries try again after
    /// [`READ_RETRY_MS`] on the broker's clock, or at the next publish, ack or consumer.
    #[cold]
    fn retry_read_later(&self, st: &mut State) {
        if let Some(now) = self.now_ms() {
            st.read_retry_at_ms = now.saturating_add(READ_RETRY_MS);
            self.arm(st);
        }
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
        let mut fx = Effects::default();
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
            self.assign(&mut st, &mut fx);
        }
        self.finish(fx);
        Ok(())
    }

    /// Detaches a consumer. What the queue had assigned to it that its connection has not
    /// taken from the outlet yet comes back to its place (with its channel-wide credit), and
    /// is assigned again: with a single active consumer, the next one takes over from there.
    /// Returns whether the queue should now be auto-deleted.
    pub fn cancel(self: &Arc<Self>, consumer: ConsumerId) -> bool {
        let mut fx = Effects::default();
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
                    let expires_at_ms = st.unacked_expiry.remove(&d.seq).unwrap_or(NO_EXPIRY);
                    st.ready.insert(Entry {
                        seq: d.seq,
                        message: d.message,
                        redelivered: d.redelivered,
                        expires_at_ms,
                    });
                }
                if let Some(now) = self.now_ms() {
                    self.expire(&mut st, &mut fx, now);
                }
                self.assign(&mut st, &mut fx);
                self.arm(&mut st);
            }
            // Without consumers a queue is never congested: paused publishers may resume.
            st.release_flow_waiters(&mut fx);
            if removed.is_some() && st.consumers.is_empty() && st.limits.expires_ms.is_some() {
                // The `x-expires` period starts again when the last consumer leaves.
                st.last_used_ms = self.now_ms().unwrap_or(st.last_used_ms);
                self.arm(&mut st);
            }
            removed.is_some() && self.auto_delete && st.consumers.is_empty() && st.ever_consumed && !st.deleted
        };
        self.finish(fx);
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
        let credit = seqs.len() as u32;
        self.release(consumer, seqs, credit, Release::Acked)
    }

    /// [`Queue::ack`] for deliveries to a no-ack consumer, which took `credit` units of its
    /// window (their [`no_ack_credit`]s) rather than one each.
    pub fn ack_sent(
        self: &Arc<Self>,
        consumer: Option<ConsumerId>,
        seqs: impl ExactSizeIterator<Item = u64>,
        credit: u32,
    ) -> Durable {
        self.release(consumer, seqs, credit, Release::Sent)
    }

    /// Releases deliveries that left the queue for good (see [`Queue::ack`] and [`Release`]).
    fn release(
        self: &Arc<Self>,
        consumer: Option<ConsumerId>,
        seqs: impl ExactSizeIterator<Item = u64>,
        credit: u32,
        how: Release,
    ) -> Durable {
        let mut fx = Effects::default();
        let moved = how == Release::Moved;
        let durable = {
            let mut st = self.state.lock();
            let st = &mut *st;
            if how == Release::Acked {
                self.stats.add(Stat::Acked, seqs.len() as u64);
            }
            let released = if st.stored.is_empty()
                && st.unacked_expiry.is_empty()
                && st.delivery_counts.is_empty()
                && st.keys.is_empty()
            {
                None
            } else {
                seqs.filter_map(|seq| {
                    st.unacked_expiry.remove(&seq);
                    st.delivery_counts.remove(&seq);
                    st.keys.remove(seq);
                    if moved { st.stored.forget_moved(seq) } else { st.stored.forget(seq) }
                })
                .max()
            };
            if let Some(id) = consumer {
                st.consumers.return_credit(id, credit);
                self.assign(st, &mut fx);
            }
            released.map_or(Durable::NOW, Durable::after_generation)
        };
        self.finish(fx);
        durable
    }

    /// Deliveries rejected without requeue (`basic.reject`, `basic.nack`): dead-lettered with
    /// reason `rejected` if the queue has a dead-letter exchange, then gone as with
    /// [`Queue::ack`]. Returns what makes the removal durable.
    pub fn discard(self: &Arc<Self>, consumer: Option<ConsumerId>, entries: &[(u64, MessageRef)]) -> Durable {
        let departure = {
            let st = self.state.lock();
            st.limits.departure.clone().filter(|d| matches!(d, Departure::DeadLetter(_)) && !st.deleted)
        };
        let mut moved = false;
        if departure.is_some() {
            // Published before the release below of their stored copies.
            let letters = entries.iter().map(|(_, m)| (m.clone(), DeathReason::Rejected)).collect();
            moved = self.dead_letter(departure, letters, Vec::new());
        }
        let how = if moved { Release::Moved } else { Release::Discarded };
        self.release(consumer, entries.iter().map(|(seq, _)| *seq), entries.len() as u32, how)
    }

    /// Assigns again (after a channel's flow or channel-wide credit reopened).
    pub fn kick(self: &Arc<Self>) {
        let mut fx = Effects::default();
        {
            let mut st = self.state.lock();
            self.assign(&mut st, &mut fx);
        }
        self.finish(fx);
    }

    /// Puts messages back at their original positions, marked redelivered, and returns their
    /// credit to `consumer` (if it is still attached; `None` for `basic.get`). They keep their
    /// deadlines.
    pub fn requeue(self: &Arc<Self>, entries: Vec<(u64, MessageRef)>, consumer: Option<ConsumerId>) {
        let mut fx = Effects::default();
        {
            let mut st = self.state.lock();
            if let Some(id) = consumer {
                st.consumers.return_credit_for(id, entries.iter().map(|(_, m)| m.size()));
            }
            if st.deleted {
                return;
            }
            for (seq, message) in entries {
                let expires_at_ms = st.unacked_expiry.remove(&seq).unwrap_or(NO_EXPIRY);
                let Some(message) = self.count_return(&mut st, &mut fx, seq, message) else { continue };
                st.ready.insert(Entry { seq, message, redelivered: true, expires_at_ms });
            }
            if let Some(now) = self.now_ms() {
                self.expire(&mut st, &mut fx, now);
            }
            self.assign(&mut st, &mut fx);
            self.arm(&mut st);
        }
        self.finish(fx);
    }

    /// Counts a return of a message (in a queue that counts deliveries): it comes back with
    /// `x-delivery-count`, or, past `x-delivery-limit`, is dead-lettered (`None`).
    fn count_return(&self, st: &mut State, fx: &mut Effects, seq: u64, message: MessageRef) -> Option<MessageRef> {
        if !self.arg_limits.count_deliveries {
            return Some(message);
        }
        let count = st.delivery_counts.entry(seq).or_insert(0);
        *count = count.saturating_add(1);
        let count = *count;
        if st.limits.delivery_limit.is_some_and(|limit| u64::from(count) > limit) {
            st.delivery_counts.remove(&seq);
            let entry = Entry { seq, message, redelivered: true, expires_at_ms: NO_EXPIRY };
            self.drop_removed(st, fx, Removed::Resident(entry), DeathReason::DeliveryLimit);
            return None;
        }
        // A stored message keeps its count across a restart (one ack-file entry per return).
        st.stored.mark_returned(seq, count);
        Some(message)
    }

    /// A message as a quorum queue hands it out: with its `x-delivery-count` (0, then how
    /// often it came back), set at each delivery so the stored copy never needs rewriting.
    fn counted(&self, counts: &HashMap<u64, u32>, seq: u64, message: MessageRef) -> MessageRef {
        if !self.arg_limits.count_deliveries {
            return message;
        }
        let count = counts.get(&seq).copied().unwrap_or(0);
        Arc::new(message.with_header("x-delivery-count", FieldValue::I64(i64::from(count))))
    }

    /// `basic.get`: the next ready message and how many remain (with no-ack, the caller
    /// [`Queue::ack`]s it at once). While a requeue comes back in pieces ([`RequeueHold`]) the
    /// get waits, as if the requeue were one step: [`Got::Held`], and `waiter` is woken when
    /// the last hold goes (or the queue is deleted); the caller asks again then.
    /// (With no `waiter`, a held queue answers [`Got::Held`] and wakes no one.)
    pub fn get(&self, waiter: Option<&OutletRef>) -> Got {
        let mut fx = Effects::default();
        let got = {
            let mut st = self.state.lock();
            let st = &mut *st;
            if st.requeue_holds > 0 && !st.deleted {
                if let Some(waiter) = waiter
                    && !st.hold_waiters.iter().any(|w| Arc::ptr_eq(w, waiter))
                {
                    st.hold_waiters.push(waiter.clone());
                }
                return Got::Held;
            }
            let now = self.now_ms();
            if let Some(now) = now {
                st.last_used_ms = now;
                self.expire(st, &mut fx, now);
            }
            match st.ready.pop(&mut st.stored) {
                None => {
                    self.stats.add(Stat::GetEmpty, 1);
                    Got::Empty
                }
                Some(mut entry) => {
                    entry.message = self.counted(&st.delivery_counts, entry.seq, entry.message);
                    st.stored.mark_delivered(entry.seq);
                    if entry.expires_at_ms != NO_EXPIRY {
                        st.unacked_expiry.insert(entry.seq, entry.expires_at_ms);
                    }
                    self.count_out(Stat::Get, entry.redelivered);
                    Got::Message(entry, st.ready.len() as u32)
                }
            }
        };
        self.finish(fx);
        got
    }

    /// How many connections' `basic.get`s wait for a requeue's holds to end.
    pub fn held_gets(&self) -> usize {
        self.state.lock().hold_waiters.len()
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

    /// The rates of the queue's message counters, per second, from the last two samples.
    pub fn rates(&self) -> crate::rates::Rates {
        self.rates.rates()
    }

    /// Samples the queue's counters (the broker's rate sampler).
    pub(crate) fn sample_rates(&self, now_ms: u64) {
        self.rates.sample(now_ms, self.stats.snapshot());
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut fx = Effects::default();
        let n = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let n = st.ready.clear(&mut st.stored) as u32;
            // (The counts of unacknowledged messages go too: a purge is a fresh start. So do
            // a deduplication queue's keys, as the plugin flushes its cache.)
            st.delivery_counts = HashMap::new();
            st.keys.clear();
            st.release_flow_waiters(&mut fx);
            n
        };
        self.finish(fx);
        n
    }

    /// Pages out what the resident window leaves over (the memory sampler's sweep, while the
    /// node's memory is above the paging fraction; publishes and departures do it otherwise).
    pub fn page_out(&self) {
        let st = &mut *self.state.lock();
        st.ready.page_out(&mut st.stored);
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

    /// Before the queue's deletion is stored: makes the dead letters moved out of it durable
    /// in their targets (a commit of the store, on this thread, if they are not yet). Once
    /// the deletion is stored its log is removed at the next start whatever it holds, so a
    /// dead letter not yet durable in its target would be lost to a crash (STORAGE.md §8).
    /// False if they are not durable: the store is failing.
    pub fn settle_moves(&self) -> bool {
        let Some((store, stamp)) = self.state.lock().stored.undurable_moves() else { return true };
        if !store.failed() {
            store.commit();
        }
        store.is_durable(stamp)
    }

    /// Marks the queue deleted: drops its messages and tells every consumer's connection that
    /// the consumer is cancelled. Returns the number of ready messages dropped.
    pub fn delete(&self) -> u32 {
        let mut wakes = Vec::new();
        let n = {
            let mut st = self.state.lock();
            if st.deleted {
                return 0;
            }
            st.deleted = true;
            if let (Some(id), Some(env)) = (st.timer.take(), self.env.get()) {
                env.services.timers.cancel(id);
            }
            st.unacked_expiry = HashMap::new();
            st.delivery_counts = HashMap::new();
            st.keys.clear();
            // Freed, not just emptied: something may hold the deleted queue a while longer
            // (a route cache, the route memo until its next refresh, a delivery in flight).
            let n = st.ready.free() as u32;
            st.stored.destroy();
            wakes.append(&mut st.flow_waiters);
            wakes.append(&mut st.hold_waiters);
            for spec in st.consumers.drain() {
                if spec.outlet.push(Outbound::ConsumerCancelled(spec.id)) {
                    wakes.push(spec.outlet);
                }
            }
            n
        };
        for outlet in wakes {
            outlet.wake();
        }
        n
    }
}

/// A message's deadline if enqueued at `now_ms` in a queue with TTL `ttl_ms`: the lower of the
/// queue's TTL and its own.
fn deadline(ttl_ms: Option<u64>, now_ms: u64, expiration_ms: Option<u64>) -> u64 {
    match (ttl_ms, expiration_ms) {
        (None, None) => NO_EXPIRY,
        (Some(a), Some(b)) => now_ms.saturating_add(a.min(b)),
        (Some(ttl), None) | (None, Some(ttl)) => now_ms.saturating_add(ttl),
    }
}

/// A message recovered from a queue's log, as [`Queue::restore`] takes it.
#[derive(Debug)]
pub struct Restored {
    /// The message, or `None` to leave it paged out.
    pub message: Option<MessageRef>,
    pub loc: Loc,
    pub body_len: u32,
    /// When it was published (its deadline counts from there).
    pub timestamp_ms: u64,
    /// Delivered before the restart (or the stop was unclean).
    pub redelivered: bool,
    /// How often it had come back before the restart (a quorum-typed queue's
    /// `x-delivery-count`; 0 otherwise).
    pub returns: u32,
}

impl TimerTarget for Queue {
    /// The earliest deadline came: expired messages leave; an unused queue past `x-expires`
    /// is deleted from its vhost.
    fn on_timer(&self, _id: TimerId, now_ms: u64) {
        let mut fx = Effects::default();
        let unused = {
            let mut st = self.state.lock();
            if st.deleted {
                return;
            }
            st.timer_at_ms = NO_EXPIRY;
            if st.read_retry_at_ms <= now_ms {
                st.read_retry_at_ms = NO_EXPIRY;
                if let Some(me) = self.env.get().and_then(|env| env.me.upgrade()) {
                    me.deliver(&mut st, &mut fx);
                }
                // A head held back from `x-max-length`'s drop while it could not be read.
                self.drop_over_limits(&mut st, &mut fx);
            }
            self.expire(&mut st, &mut fx, now_ms);
            st.release_flow_waiters(&mut fx);
            let unused = self.expiry_deadline(&st) <= now_ms;
            if !unused {
                self.arm(&mut st);
            }
            unused
        };
        self.finish(fx);
        if unused
            && let Some(env) = self.env.get()
            && let (Some(vhost), Some(me)) = (env.services.vhost.upgrade(), env.me.upgrade())
        {
            // Checked again under the vhost's topology lock: a declaration may have used it.
            vhost.expire_queue(&me, now_ms);
        }
    }
}
