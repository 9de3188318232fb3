//! A queue's consumers and the choice of the next one to serve.
//!
//! The policy: among consumers with credit (own prefetch, or the no-ack window; outlet open)
//! whose channel admits a message ([`ChannelGate`]: not paused by flow, channel-wide prefetch
//! for ack consumers), the highest priority; within it round-robin in registration order,
//! starting after the consumer served last. Lower priorities are served only while every
//! consumer of the higher ones is blocked. Cancelling consumers before the round-robin
//! position leaves it on the same next consumer.
//!
//! Layout, so that registering, cancelling and choosing do not scan every consumer: each
//! consumer gets a registration key (increasing); consumers are grouped by priority (a
//! `BTreeMap`, highest first), each group a vector in key order where a cancelled consumer
//! leaves a hole until holes are half the vector (then it is compacted: amortized O(1)); an
//! id → (priority, key) map finds a consumer in O(log n). The round-robin position is one
//! key for all groups: the search in a group starts at its first key at or above it (a binary
//! search). A group counts its consumers with own credit, so a group whose consumers are all
//! at their prefetch is passed over at once; the search in a group stops once it has seen
//! all of them. What it cannot count — closed outlets and channel gates, which change outside
//! the queue lock — is checked consumer by consumer, as before.
//!
//! Single active consumer (`x-single-active-consumer`, RabbitMQ 3.10's classic queues): one
//! consumer, the active one, is served and the others wait. The first consumer registered
//! becomes active; when the active one goes, the first consumer of the highest priority
//! (registration order among equals) takes over. A group keeps the position of its first
//! consumer (advanced past holes as consumers before it go, reset when it is compacted), so
//! the handover is O(log n) amortized like everything else. An exclusive consumer is refused
//! on such a queue, as RabbitMQ refuses it.
//!
//! Invariants, checked after every change in debug builds (per consumer only while there are
//! few): the map and the groups hold the same consumers; a group's live and credited counts
//! match its vector, which is in key order and at most half holes; a group's first-consumer
//! position is its first live member; no group is empty; the round-robin key is at most the
//! next key to be given out; with a single active consumer, one is active exactly while any
//! consumer is attached, and it is attached.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::outlet::{ConsumerId, OutletRef};

/// Credit units a no-ack consumer may have assigned and not yet written to its socket by
/// its connection: a message costs one unit per started [`NO_ACK_CREDIT_BYTES`] of its
/// size, so the window is 2,048 small messages or about 64 MiB of large ones (plus the one
/// message that crosses it), never 2,048 messages of any size.
pub const NO_ACK_WINDOW: u32 = 2048;

/// The bytes one unit of the no-ack window stands for.
pub const NO_ACK_CREDIT_BYTES: usize = 32 * 1024;

/// The units of a no-ack consumer's window that a message of `size` bytes takes (1 for
/// anything under [`NO_ACK_CREDIT_BYTES`]).
pub fn no_ack_credit(size: usize) -> u32 {
    u32::try_from(1 + size / NO_ACK_CREDIT_BYTES).unwrap_or(u32::MAX)
}

/// Debug builds check every consumer after each change up to this many.
const CHECK_ALL_MAX: usize = 64;

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
    /// Assigned and not yet acked, in deliveries; for a no-ack consumer, assigned and not yet
    /// written, in units of [`no_ack_credit`].
    in_flight: u32,
}

impl Consumer {
    /// Credit of its own: below its prefetch (ack) or the no-ack window.
    fn own_credit(&self) -> bool {
        let limit = if self.spec.ack_required { self.spec.prefetch } else { NO_ACK_WINDOW };
        limit == 0 || self.in_flight < limit
    }

    /// Whether it may be sent a message now; takes a unit of its channel's credit if so.
    fn admit(&self) -> bool {
        !self.spec.outlet.is_closed() && self.spec.gate.admit(self.spec.ack_required)
    }
}

/// A consumer, or the hole a cancelled one left, at its registration key.
#[derive(Debug)]
struct Member {
    key: u64,
    consumer: Option<Consumer>,
}

/// The consumers of one priority, in registration order.
#[derive(Debug, Default)]
struct Group {
    members: Vec<Member>,
    /// Consumers (not holes) in `members`, and how many of them have credit of their own.
    live: usize,
    credited: usize,
    /// Where the first consumer (not a hole) is in `members`.
    head: usize,
}

impl Group {
    /// The first consumer from the round-robin key on (wrapping around) that has credit and
    /// is admitted by its channel.
    fn find(&self, cursor: u64) -> Option<usize> {
        if self.credited == 0 {
            return None;
        }
        let start = self.members.partition_point(|m| m.key < cursor);
        let mut seen = 0;
        for i in (start..self.members.len()).chain(0..start) {
            let Some(c) = &self.members[i].consumer else { continue };
            if !c.own_credit() {
                continue;
            }
            if c.admit() {
                return Some(i);
            }
            seen += 1;
            if seen == self.credited {
                return None;
            }
        }
        None
    }

    /// Where the consumer registered with `key` is (or its hole).
    fn position(&self, key: u64) -> Option<usize> {
        self.members.binary_search_by_key(&key, |m| m.key).ok()
    }

    /// Changes the `in_flight` of the consumer at `i`, keeping `credited` right.
    fn set_in_flight(&mut self, i: usize, in_flight: impl FnOnce(u32) -> u32) {
        let Some(c) = self.members[i].consumer.as_mut() else { return };
        let before = c.own_credit();
        c.in_flight = in_flight(c.in_flight);
        let after = c.own_credit();
        self.credited = self.credited + usize::from(after) - usize::from(before);
    }

    /// Takes the consumer registered with `key` out; compacts once holes are half the vector.
    fn take(&mut self, key: u64) -> Option<Consumer> {
        let i = self.position(key)?;
        let consumer = self.members[i].consumer.take()?;
        self.live -= 1;
        self.credited -= usize::from(consumer.own_credit());
        if self.members.len() > 2 * self.live {
            self.members.retain(|m| m.consumer.is_some());
            self.members.shrink_to(2 * self.live);
            self.head = 0;
        } else if i == self.head {
            // Each hole is passed over once between compactions: amortized O(1).
            while self.members.get(self.head).is_some_and(|m| m.consumer.is_none()) {
                self.head += 1;
            }
        }
        Some(consumer)
    }

    /// The first consumer in registration order.
    fn first(&self) -> Option<&Consumer> {
        self.members.get(self.head)?.consumer.as_ref()
    }

    /// Checks the group's invariants (debug builds; per consumer only while it is small).
    fn check(&self, priority: i64) {
        debug_assert!(self.live > 0, "empty group {priority}");
        debug_assert!(self.credited <= self.live, "group {priority}: {} credited of {}", self.credited, self.live);
        debug_assert!(self.members.len() <= 2 * self.live, "group {priority}: too many holes");
        debug_assert!(self.first().is_some(), "group {priority}: its head {} is not a consumer", self.head);
        if !cfg!(debug_assertions) || self.members.len() > CHECK_ALL_MAX {
            return;
        }
        debug_assert!(self.members[..self.head].iter().all(|m| m.consumer.is_none()), "group {priority}: head too far");
        debug_assert!(self.members.windows(2).all(|w| w[0].key < w[1].key), "group {priority} out of order");
        let consumers = self.members.iter().filter_map(|m| m.consumer.as_ref());
        debug_assert_eq!(self.live, consumers.clone().count(), "live consumers of group {priority}");
        debug_assert_eq!(
            self.credited,
            consumers.clone().filter(|c| c.own_credit()).count(),
            "group {priority} credited"
        );
        debug_assert!(consumers.into_iter().all(|c| c.spec.priority == priority), "group {priority}: another priority");
    }
}

#[derive(Debug, Default)]
pub(super) struct Consumers {
    /// By priority, highest first.
    groups: BTreeMap<Reverse<i64>, Group>,
    /// Each consumer's priority and registration key.
    index: BTreeMap<ConsumerId, (i64, u64)>,
    next_key: u64,
    /// Round-robin: the search starts at the first consumer registered at or after this key.
    cursor: u64,
    /// An exclusive consumer is attached (and is then the only one).
    exclusive: bool,
    /// `x-single-active-consumer`: only `active` is served.
    single_active: bool,
    /// The single active consumer (always `None` without `single_active`).
    active: Option<ConsumerId>,
}

impl Consumers {
    /// No consumers; with `single_active`, only one of them will be served at a time.
    pub fn new(single_active: bool) -> Consumers {
        Consumers { single_active, ..Consumers::default() }
    }

    /// The consumer served while the queue has a single active consumer.
    pub fn active(&self) -> Option<ConsumerId> {
        self.active
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `spec` may join: not while an exclusive consumer is attached, and an exclusive
    /// one only alone, and never on a queue with a single active consumer (RabbitMQ refuses
    /// it there as "in exclusive use").
    pub fn may_join(&self, spec: &ConsumerSpec) -> bool {
        !self.exclusive && (!spec.exclusive || (self.is_empty() && !self.single_active))
    }

    /// Registers a consumer after the others. False (nothing changes) if its id is already
    /// attached.
    pub fn add(&mut self, spec: ConsumerSpec) -> bool {
        let (key, priority) = (self.next_key, spec.priority);
        let MapEntry::Vacant(slot) = self.index.entry(spec.id) else { return false };
        slot.insert((priority, key));
        self.next_key += 1;
        self.exclusive |= spec.exclusive;
        if self.single_active && self.active.is_none() {
            self.active = Some(spec.id);
        }
        let group = self.groups.entry(Reverse(priority)).or_default();
        group.members.push(Member { key, consumer: Some(Consumer { spec, in_flight: 0 }) });
        group.live += 1;
        group.credited += 1;
        self.check();
        true
    }

    /// Removes a consumer and returns it (`None` if it was not attached). If it was the
    /// single active consumer, the next one (see the module doc) becomes active.
    pub fn remove(&mut self, id: ConsumerId) -> Option<ConsumerSpec> {
        let (priority, key) = self.index.remove(&id)?;
        let MapEntry::Occupied(mut group) = self.groups.entry(Reverse(priority)) else {
            debug_assert!(false, "consumer {id:?} indexed in a missing group");
            return None;
        };
        let consumer = group.get_mut().take(key);
        if group.get().live == 0 {
            group.remove();
        }
        if consumer.as_ref().is_some_and(|c| c.spec.exclusive) {
            self.exclusive = false;
        }
        if self.active == Some(id) {
            self.active = self.groups.values().next().and_then(Group::first).map(|c| c.spec.id);
        }
        self.check();
        consumer.map(|c| c.spec)
    }

    /// Gives `n` units of credit back to a consumer, if it is still attached.
    pub fn return_credit(&mut self, id: ConsumerId, n: u32) {
        self.update_in_flight(id, |in_flight| in_flight.saturating_sub(n));
    }

    /// Takes `n` more units of a consumer's own credit (a large message to a no-ack
    /// consumer costs more than the one unit [`Consumers::next`] took).
    pub fn charge(&mut self, id: ConsumerId, n: u32) {
        self.update_in_flight(id, |in_flight| in_flight.saturating_add(n));
    }

    /// Gives back the credit that `sizes` (the messages' sizes) took from a consumer, if it
    /// is still attached: one unit each from a consumer that acks, their [`no_ack_credit`]
    /// from a no-ack one.
    pub fn return_credit_for(&mut self, id: ConsumerId, sizes: impl Iterator<Item = usize>) {
        let Some(no_ack) = self.get(id).map(|c| !c.spec.ack_required) else { return };
        let n = if no_ack { sizes.map(no_ack_credit).fold(0u32, u32::saturating_add) } else { sizes.count() as u32 };
        self.return_credit(id, n);
    }

    fn get(&self, id: ConsumerId) -> Option<&Consumer> {
        let &(priority, key) = self.index.get(&id)?;
        let group = self.groups.get(&Reverse(priority))?;
        group.members[group.position(key)?].consumer.as_ref()
    }

    fn update_in_flight(&mut self, id: ConsumerId, f: impl FnOnce(u32) -> u32) {
        let Some(&(priority, key)) = self.index.get(&id) else { return };
        if let Some(group) = self.groups.get_mut(&Reverse(priority))
            && let Some(i) = group.position(key)
        {
            group.set_in_flight(i, f);
            group.check(priority);
        }
    }

    /// The next consumer to serve (see the module doc), charged a unit of its own credit and
    /// of its channel's; the round-robin position moves past it.
    pub fn next(&mut self) -> Option<&ConsumerSpec> {
        if self.single_active {
            return self.next_active();
        }
        let cursor = self.cursor;
        let (priority, group, i) =
            self.groups.iter_mut().find_map(|(&Reverse(p), g)| g.find(cursor).map(|i| (p, g, i)))?;
        group.set_in_flight(i, |in_flight| in_flight + 1);
        self.cursor = group.members[i].key + 1;
        debug_assert!(self.cursor <= self.next_key, "round-robin key {} past {}", self.cursor, self.next_key);
        group.check(priority);
        group.members[i].consumer.as_ref().map(|c| &c.spec)
    }

    /// [`Consumers::next`] with a single active consumer: the active one, if it may be sent a
    /// message now; nobody else.
    fn next_active(&mut self) -> Option<&ConsumerSpec> {
        let &(priority, key) = self.index.get(&self.active?)?;
        let group = self.groups.get_mut(&Reverse(priority))?;
        let i = group.position(key)?;
        let c = group.members[i].consumer.as_ref()?;
        if !c.own_credit() || !c.admit() {
            return None;
        }
        group.set_in_flight(i, |in_flight| in_flight + 1);
        group.check(priority);
        group.members[i].consumer.as_ref().map(|c| &c.spec)
    }

    /// Removes every consumer; returns them in registration order.
    pub fn drain(&mut self) -> Vec<ConsumerSpec> {
        let mut all: Vec<(u64, ConsumerSpec)> = std::mem::take(&mut self.groups)
            .into_values()
            .flat_map(|g| g.members)
            .filter_map(|m| Some((m.key, m.consumer?.spec)))
            .collect();
        all.sort_unstable_by_key(|(key, _)| *key);
        self.index = BTreeMap::new();
        self.exclusive = false;
        self.active = None;
        self.check();
        all.into_iter().map(|(_, spec)| spec).collect()
    }

    /// Checks the invariants (debug builds; per consumer only while there are few).
    fn check(&self) {
        debug_assert!(self.cursor <= self.next_key, "round-robin key {} past {}", self.cursor, self.next_key);
        debug_assert!(!self.exclusive || self.len() == 1, "an exclusive consumer with others");
        debug_assert_eq!(self.active.is_some(), self.single_active && !self.is_empty(), "active consumer");
        debug_assert!(self.active.is_none_or(|id| self.index.contains_key(&id)), "the active consumer is attached");
        if !cfg!(debug_assertions) || self.len() > CHECK_ALL_MAX {
            return;
        }
        for (&Reverse(priority), group) in &self.groups {
            group.check(priority);
            for m in &group.members {
                if let Some(c) = &m.consumer {
                    debug_assert_eq!(self.index.get(&c.spec.id), Some(&(priority, m.key)), "index of {:?}", c.spec.id);
                }
            }
        }
        let live: usize = self.groups.values().map(|g| g.live).sum();
        debug_assert_eq!(self.len(), live, "consumers in the index and in the groups");
    }
}

/// Read-only views for the management API (`queue::inspect`).
impl Consumers {
    /// Deliveries assigned to consumers that acknowledge and not yet acknowledged.
    pub fn acked_in_flight(&self) -> u64 {
        self.groups
            .values()
            .flat_map(|g| g.members.iter())
            .filter_map(|m| m.consumer.as_ref())
            .filter(|c| c.spec.ack_required)
            .map(|c| u64::from(c.in_flight))
            .sum()
    }

    /// Every consumer, in priority and registration order.
    pub fn specs(&self) -> impl Iterator<Item = &ConsumerSpec> {
        self.groups.values().flat_map(|g| g.members.iter()).filter_map(|m| m.consumer.as_ref().map(|c| &c.spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlet::{Outlet, Wake};

    struct NoWake;

    impl Wake for NoWake {
        fn wake(&self) {}
    }

    fn spec(id: u64, prefetch: u32, priority: i64) -> ConsumerSpec {
        ConsumerSpec {
            id: ConsumerId(id),
            outlet: Arc::new(Outlet::new(Box::new(NoWake))),
            ack_required: true,
            prefetch,
            gate: Arc::new(ChannelGate::default()),
            priority,
            exclusive: false,
        }
    }

    fn served(c: &mut Consumers) -> Option<u64> {
        c.next().map(|s| s.id.0)
    }

    #[test]
    fn only_the_first_registered_consumer_is_served() {
        let mut c = Consumers::new(true);
        assert_eq!(c.active(), None);
        for id in 1..=3 {
            assert!(c.add(spec(id, 2, 0)));
        }
        assert_eq!(c.active(), Some(ConsumerId(1)));
        assert_eq!((served(&mut c), served(&mut c)), (Some(1), Some(1)));
        // At its prefetch the active consumer blocks the queue: the others wait.
        assert_eq!(served(&mut c), None);
        c.return_credit(ConsumerId(1), 1);
        assert_eq!(served(&mut c), Some(1));
    }

    #[test]
    fn round_robin_without_single_active_consumer() {
        let mut c = Consumers::new(false);
        for id in 1..=3 {
            assert!(c.add(spec(id, 0, 0)));
        }
        assert_eq!(c.active(), None);
        let order: Vec<_> = (0..4).map(|_| served(&mut c).unwrap()).collect();
        assert_eq!(order, [1, 2, 3, 1]);
    }

    #[test]
    fn the_next_in_registration_order_takes_over() {
        let mut c = Consumers::new(true);
        for id in 1..=4 {
            c.add(spec(id, 0, 0));
        }
        // A waiting consumer leaves: the active one stays.
        assert_eq!(c.remove(ConsumerId(2)).map(|s| s.id), Some(ConsumerId(2)));
        assert_eq!(c.active(), Some(ConsumerId(1)));
        assert!(c.remove(ConsumerId(2)).is_none(), "removing twice changes nothing");
        assert_eq!(c.remove(ConsumerId(1)).map(|s| s.id), Some(ConsumerId(1)));
        assert_eq!(c.active(), Some(ConsumerId(3)));
        assert_eq!(served(&mut c), Some(3));
        c.add(spec(5, 0, 0));
        c.remove(ConsumerId(3));
        assert_eq!(c.active(), Some(ConsumerId(4)));
        c.remove(ConsumerId(4));
        assert_eq!(c.active(), Some(ConsumerId(5)));
        c.remove(ConsumerId(5));
        assert_eq!((c.active(), c.is_empty()), (None, true));
        assert_eq!(served(&mut c), None);
        // The next consumer to join is active at once.
        c.add(spec(6, 0, 0));
        assert_eq!(c.active(), Some(ConsumerId(6)));
    }

    #[test]
    fn a_handover_goes_to_the_highest_priority_waiting() {
        let mut c = Consumers::new(true);
        c.add(spec(1, 0, 0));
        c.add(spec(2, 0, 0));
        c.add(spec(3, 0, 5));
        c.add(spec(4, 0, 5));
        // A higher priority does not take over from the active consumer...
        assert_eq!(served(&mut c), Some(1));
        // ...but is chosen when it goes (RabbitMQ 3.10's classic queues).
        c.remove(ConsumerId(1));
        assert_eq!(c.active(), Some(ConsumerId(3)));
        c.remove(ConsumerId(3));
        assert_eq!(c.active(), Some(ConsumerId(4)));
        c.remove(ConsumerId(4));
        assert_eq!(c.active(), Some(ConsumerId(2)));
    }

    #[test]
    fn handovers_through_many_consumers_follow_registration_order() {
        // Enough consumers that holes and compaction both happen along the way (debug builds
        // check the group's first position after every change while it is small).
        let mut c = Consumers::new(true);
        for id in 0..1_000 {
            c.add(spec(id, 0, 0));
        }
        // Waiting consumers leave from behind the active one and from the far end.
        for id in (500..1_000).step_by(3) {
            c.remove(ConsumerId(id));
        }
        let mut expected: Vec<u64> = (0..1_000).filter(|id| *id < 500 || (id - 500) % 3 != 0).collect();
        while let Some(active) = c.active() {
            assert_eq!(active.0, expected.remove(0));
            assert_eq!(served(&mut c), Some(active.0));
            c.remove(active);
        }
        assert!(expected.is_empty() && c.is_empty());
    }

    #[test]
    fn no_exclusive_consumer_on_a_single_active_consumer_queue() {
        let c = Consumers::new(true);
        let exclusive = ConsumerSpec { exclusive: true, ..spec(1, 0, 0) };
        assert!(!c.may_join(&exclusive), "refused even on an empty queue");
        assert!(c.may_join(&spec(1, 0, 0)));
        let mut plain = Consumers::new(false);
        assert!(plain.may_join(&exclusive));
        plain.add(exclusive);
        assert!(!plain.may_join(&spec(2, 0, 0)));
    }

    #[test]
    fn drain_forgets_the_active_consumer() {
        let mut c = Consumers::new(true);
        c.add(spec(1, 0, 0));
        c.add(spec(2, 0, 0));
        let ids: Vec<_> = c.drain().into_iter().map(|s| s.id.0).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(c.active(), None);
        c.add(spec(3, 0, 0));
        assert_eq!(c.active(), Some(ConsumerId(3)));
    }
}
