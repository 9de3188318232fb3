//! A ready list: a queue's messages waiting for a consumer, in `seq` order, each in memory
//! ([`Entry`]) or paged out (only where its stored copy is), with the counts flow control,
//! limits and paging read — body bytes, resident bytes, paged-out messages — the paging scan,
//! the queue's share of the store's memory gauge, and message expiry. A queue has one; a
//! priority queue is to have one per priority.
//!
//! Where copies are stored is the queue's [`Stored`], which the list is handed whenever a
//! message leaves it, pages out or is read back.
//!
//! Paging: beyond a window of [`RESIDENT_MAX_MESSAGES`] ready messages (or
//! [`RESIDENT_MAX_BYTES`]), a message whose stored copy has been written keeps only its place
//! in memory; it is read back when it reaches the head. A logged message pages out once its
//! record is written; under memory pressure any other one is first copied to the scratch log.
//! While the node's memory is above the paging fraction of its watermark (RabbitMQ's
//! `vm_memory_high_watermark_paging_ratio`), the window shrinks to the head
//! ([`RESIDENT_MIN_MESSAGES`]) and every other message pages out, transient ones too.
//!
//! Expiry: a message may have a deadline ([`Entry::expires_at_ms`]). Expired messages leave
//! wherever they are, resident or paged out, without a scan: the deadlines that can come out
//! of order (a per-message `expiration` below the queue's TTL, requeued and recovered messages)
//! are kept in an index by `(deadline, seq)`; the others (a queue's TTL counted from publish)
//! rise with `seq`, so the earliest of them is the head's. A message expiring behind the head
//! leaves a hole, dropped when it reaches the head (or when holes are over half the list), so
//! removal never shifts the list. The head is never a hole.
//!
//! Invariants, checked after every change in debug builds: `bytes` is the sum of the messages'
//! body sizes, `resident_bytes` the sum of the resident ones' whole sizes, `paged` the number
//! of paged-out slots, `holes` that of holes, the head is not a hole, every indexed deadline
//! belongs to a message, and `seq`s strictly increase. The sums are checked while the list is
//! short ([`CHECK_ALL_MAX`]) and every [`CHECK_ALL_EVERY`]th change, so the checks stay cheap on
//! long queues.

use std::collections::{BTreeSet, VecDeque};

use lepus_store::log::Loc;
use lepus_store::store::Store;

use super::stored::{Fetched, Place, Stored};
use crate::message::MessageRef;

/// Ready messages kept in memory before logged ones are paged out.
pub const RESIDENT_MAX_MESSAGES: usize = 8_192;
pub const RESIDENT_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// The head of the queue is never paged out: it is about to be delivered.
pub const RESIDENT_MIN_MESSAGES: usize = 256;

/// Holes are dropped from a list that has more than this many and more holes than messages.
const HOLES_MIN: usize = 64;

/// Granularity of a list's reports to the store's memory gauge.
const GAUGE_STEP_BYTES: u64 = 1024 * 1024;

/// Debug builds check every slot after each change up to this length…
#[cfg(debug_assertions)]
const CHECK_ALL_MAX: usize = 64;
/// …and beyond it, once in this many changes.
#[cfg(debug_assertions)]
const CHECK_ALL_EVERY: u32 = 4096;

/// The deadline of a message that never expires.
pub const NO_EXPIRY: u64 = u64::MAX;

/// A message waiting in a queue.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub message: MessageRef,
    pub redelivered: bool,
    /// When it expires, in the clock's milliseconds ([`NO_EXPIRY`]: never).
    pub expires_at_ms: u64,
}

/// A message taken out of the list: in memory, or where its stored copy is.
#[derive(Debug)]
pub(super) enum Removed {
    Resident(Entry),
    Paged { seq: u64, place: Place },
}

impl Removed {
    pub fn seq(&self) -> u64 {
        match self {
            Removed::Resident(e) => e.seq,
            Removed::Paged { seq, .. } => *seq,
        }
    }
}

/// A ready message: in memory, or only in the queue's log; or the hole an expired one left.
#[derive(Debug)]
enum Slot {
    Resident(Entry),
    /// In the queue's log (`scratch` false) or its scratch log; `body` is its body's size.
    Paged {
        seq: u64,
        loc: Loc,
        body: u32,
        redelivered: bool,
        scratch: bool,
        expires_at_ms: u64,
    },
    Hole {
        seq: u64,
    },
}

impl Slot {
    fn seq(&self) -> u64 {
        match self {
            Slot::Resident(e) => e.seq,
            Slot::Paged { seq, .. } | Slot::Hole { seq } => *seq,
        }
    }

    /// Body bytes, which `x-max-length-bytes` and flow control count (as RabbitMQ).
    fn body_bytes(&self) -> u64 {
        match self {
            Slot::Resident(e) => e.message.body().len() as u64,
            Slot::Paged { body, .. } => *body as u64,
            Slot::Hole { .. } => 0,
        }
    }

    /// Whether it counts as persistent: a resident persistent message, or one paged out to
    /// the queue's own log (a durable queue's persistent message) rather than the scratch log.
    fn persistent(&self) -> bool {
        match self {
            Slot::Resident(e) => e.message.is_persistent(),
            Slot::Paged { scratch, .. } => !scratch,
            Slot::Hole { .. } => false,
        }
    }

    fn expires_at_ms(&self) -> u64 {
        match self {
            Slot::Resident(e) => e.expires_at_ms,
            Slot::Paged { expires_at_ms, .. } => *expires_at_ms,
            Slot::Hole { .. } => NO_EXPIRY,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct ReadyList {
    slots: VecDeque<Slot>,
    /// Body bytes of the messages.
    bytes: u64,
    /// How many slots are paged out and their body bytes, and the whole size of the resident
    /// messages.
    paged: usize,
    paged_bytes: u64,
    resident_bytes: u64,
    /// How many slots count as persistent ([`Slot::persistent`]), and their body bytes.
    persistent: usize,
    persistent_bytes: u64,
    /// How many slots are holes, and how many messages have a deadline.
    holes: usize,
    expiring: usize,
    /// Deadlines that may come out of `seq` order, with their message's `seq`.
    expiry_index: BTreeSet<(u64, u64)>,
    /// One past the last `seq` pushed at the back.
    end_seq: u64,
    /// Paging resumes its scan at the first slot with this `seq` or above.
    page_scan_seq: u64,
    /// Memory pressure at the last paging scan.
    pressure_seen: bool,
    /// The store whose memory gauge counts resident bytes, and what it was last told.
    gauge: Option<Store>,
    gauge_reported: u64,
    /// Changes since the last full check (debug builds).
    #[cfg(debug_assertions)]
    changes: u32,
}

impl ReadyList {
    /// Reports resident bytes to `store`'s memory gauge from now on.
    pub fn set_gauge(&mut self, store: Store) {
        self.gauge = Some(store);
        self.report_resident();
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.holes
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The body sizes of every ready message, resident or not.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The earliest deadline of a ready message ([`NO_EXPIRY`] if none): the head's or the
    /// index's first.
    #[inline]
    pub fn next_expiry_ms(&self) -> u64 {
        if self.expiring == 0 {
            return NO_EXPIRY;
        }
        let head = self.slots.front().map_or(NO_EXPIRY, Slot::expires_at_ms);
        self.expiry_index.first().map_or(head, |&(at, _)| at.min(head))
    }

    /// An estimate of the memory the ready messages take: the resident messages' whole sizes
    /// (shared with other queues a fanout reached, counted whole here too), the slots'
    /// allocation and the deadline index's entries.
    pub fn memory_bytes(&self) -> u64 {
        let slots = self.slots.capacity() * std::mem::size_of::<Slot>();
        // A B-tree entry with its share of a node, roughly.
        let index = self.expiry_index.len() * 2 * std::mem::size_of::<(u64, u64)>();
        self.resident_bytes + (slots + index) as u64
    }

    /// Ready messages that count as persistent (see `Slot::persistent`) and their body bytes.
    pub fn persistent(&self) -> (usize, u64) {
        (self.persistent, self.persistent_bytes)
    }

    #[inline(always)]
    fn add_persistent(&mut self, slot: &Slot) {
        if slot.persistent() {
            self.persistent += 1;
            self.persistent_bytes += slot.body_bytes();
        }
    }

    /// Body bytes of the ready messages held only in a log.
    pub fn paged_bytes(&self) -> u64 {
        self.paged_bytes
    }

    /// Ready messages held only in a log.
    pub fn paged_count(&self) -> usize {
        self.paged
    }

    /// Appends a message (its `seq` is above every other's). `indexed`: its deadline may come
    /// before a later message's (see the module doc); a deadline that rises with `seq` need not be.
    pub fn push_back(&mut self, entry: Entry, indexed: bool) {
        debug_assert!(entry.seq >= self.end_seq, "seq {} pushed after {}", entry.seq, self.end_seq);
        self.bytes += entry.message.body().len() as u64;
        self.end_seq = entry.seq + 1;
        if entry.expires_at_ms != NO_EXPIRY {
            self.expiring += 1;
            if indexed {
                self.expiry_index.insert((entry.expires_at_ms, entry.seq));
            }
        }
        let size = entry.message.size() as u64;
        let slot = Slot::Resident(entry);
        self.add_persistent(&slot);
        self.slots.push_back(slot);
        self.add_resident(size);
        self.check();
    }

    /// Appends a message left in the queue's log at `loc` (recovered, not read); `body`
    /// counts as its body size.
    pub fn push_back_paged(&mut self, seq: u64, loc: Loc, body: u32, redelivered: bool, expires_at_ms: u64) {
        debug_assert!(seq >= self.end_seq, "seq {seq} pushed after {}", self.end_seq);
        self.bytes += body as u64;
        self.paged += 1;
        self.paged_bytes += body as u64;
        self.end_seq = seq + 1;
        if expires_at_ms != NO_EXPIRY {
            self.expiring += 1;
            self.expiry_index.insert((expires_at_ms, seq));
        }
        let slot = Slot::Paged { seq, loc, body, redelivered, scratch: false, expires_at_ms };
        self.add_persistent(&slot);
        self.slots.push_back(slot);
        self.check();
    }

    /// Inserts a requeued message at its original position (its deadline is indexed).
    pub fn insert(&mut self, entry: Entry) {
        self.bytes += entry.message.body().len() as u64;
        let at = self.slots.partition_point(|s| s.seq() < entry.seq);
        debug_assert!(self.slots.get(at).is_none_or(|s| s.seq() > entry.seq), "seq {} is ready twice", entry.seq);
        if entry.expires_at_ms != NO_EXPIRY {
            self.expiring += 1;
            self.expiry_index.insert((entry.expires_at_ms, entry.seq));
        }
        let size = entry.message.size() as u64;
        let slot = Slot::Resident(entry);
        self.add_persistent(&slot);
        self.slots.insert(at, slot);
        self.add_resident(size);
        self.check();
    }

    /// Removes the head, resident or not (never a hole).
    fn pop_slot(&mut self) -> Option<Slot> {
        let slot = self.slots.pop_front()?;
        self.unaccount(&slot);
        self.drop_front_holes();
        self.check();
        Some(slot)
    }

    /// Takes a slot that leaves the list (or becomes a hole) out of the counts and the index.
    #[inline(always)]
    fn unaccount(&mut self, slot: &Slot) {
        self.bytes -= slot.body_bytes();
        if slot.persistent() {
            self.persistent -= 1;
            self.persistent_bytes -= slot.body_bytes();
        }
        match slot {
            Slot::Resident(e) => self.sub_resident(e.message.size() as u64),
            Slot::Paged { body, .. } => {
                self.paged -= 1;
                self.paged_bytes -= *body as u64;
            }
            Slot::Hole { .. } => self.holes -= 1,
        }
        let at = slot.expires_at_ms();
        if at != NO_EXPIRY {
            self.expiring -= 1;
            if !self.expiry_index.is_empty() {
                self.expiry_index.remove(&(at, slot.seq()));
            }
        }
    }

    /// Keeps the invariant that the head is a message.
    #[inline]
    fn drop_front_holes(&mut self) {
        if self.holes == 0 {
            return;
        }
        while let Some(Slot::Hole { .. }) = self.slots.front() {
            self.slots.pop_front();
            self.holes -= 1;
        }
    }

    /// Removes messages whose deadline is at or before `now_ms`, wherever they are, into `out`
    /// (earliest deadline first, ties in `seq` order), until `out` holds `max`. With `stored`
    /// (their bodies are needed: the queue dead-letters), a paged-out message is read back
    /// first and leaves in memory; one that cannot be read now ([`Fetched::Later`]) stays in
    /// its place and expiry stops there, to go on once it can be read (nothing is lost, and
    /// dead letters keep their order); a damaged one leaves unread.
    pub fn expire(&mut self, now_ms: u64, max: usize, mut stored: Option<&mut Stored>, out: &mut Vec<Removed>) {
        while out.len() < max {
            // Earliest deadline first (ties by `seq`), so messages overdue together leave in
            // deadline order: the head, or the first indexed one if that is earlier.
            let indexed_first = self.expiry_index.first().map_or(NO_EXPIRY, |&(at, _)| at);
            if let Some(head) = self.slots.front()
                && head.expires_at_ms() <= now_ms
                && head.expires_at_ms() <= indexed_first
            {
                let fetched = Self::fetch(head, stored.as_deref_mut());
                if matches!(fetched, Some(Fetched::Later)) {
                    break;
                }
                let Some(slot) = self.pop_slot() else { break };
                out.extend(Self::removed_read(slot, fetched));
                continue;
            }
            let Some(&(at, seq)) = self.expiry_index.first() else { break };
            if at > now_ms {
                break;
            }
            let i = self.slots.partition_point(|s| s.seq() < seq);
            let Some(slot) = self.slots.get(i).filter(|s| s.seq() == seq) else {
                debug_assert!(false, "indexed seq {seq} is not in the list");
                self.expiry_index.pop_first();
                continue;
            };
            let fetched = Self::fetch(slot, stored.as_deref_mut());
            if matches!(fetched, Some(Fetched::Later)) {
                break;
            }
            self.expiry_index.pop_first();
            let slot = std::mem::replace(&mut self.slots[i], Slot::Hole { seq });
            self.unaccount(&slot);
            self.holes += 1;
            out.extend(Self::removed_read(slot, fetched));
            self.drop_front_holes();
        }
        self.compact();
        self.check();
    }

    /// A paged-out slot's message read back, if `stored` is given (else, or for a slot in
    /// memory, `None`).
    fn fetch(slot: &Slot, stored: Option<&mut Stored>) -> Option<Fetched> {
        match (slot, stored) {
            (Slot::Paged { seq, loc, scratch, .. }, Some(stored)) => {
                Some(stored.read(*seq, Place { loc: *loc, scratch: *scratch }))
            }
            _ => None,
        }
    }

    /// What leaves with `slot`, given what was read of it: a message read back leaves in
    /// memory; a damaged one (logged by the read) leaves nothing.
    fn removed_read(slot: Slot, fetched: Option<Fetched>) -> Option<Removed> {
        match (slot, fetched) {
            (Slot::Paged { seq, redelivered, expires_at_ms, .. }, Some(Fetched::Message(message, _))) => {
                Some(Removed::Resident(Entry { seq, message, redelivered, expires_at_ms }))
            }
            (_, Some(_)) => None,
            (slot, None) => Self::removed(slot),
        }
    }

    fn removed(slot: Slot) -> Option<Removed> {
        match slot {
            Slot::Resident(e) => Some(Removed::Resident(e)),
            Slot::Paged { seq, loc, scratch, .. } => Some(Removed::Paged { seq, place: Place { loc, scratch } }),
            Slot::Hole { .. } => None,
        }
    }

    /// Drops the holes once they are over half the list (amortised: each hole is moved once).
    fn compact(&mut self) {
        if self.holes > HOLES_MIN && self.holes * 2 > self.slots.len() {
            self.slots.retain(|s| !matches!(s, Slot::Hole { .. }));
            self.holes = 0;
        }
    }

    /// Removes the head, reading it back if it was paged out. A record that cannot be read
    /// is skipped ([`Fetched::Unreadable`]); one that cannot be read *now* stays at the head
    /// and nothing is returned ([`Fetched::Later`]): the queue tries again later.
    pub fn pop(&mut self, stored: &mut Stored) -> Option<Entry> {
        loop {
            let fetched = match self.slots.front()? {
                Slot::Paged { seq, loc, scratch, .. } => {
                    match stored.read(*seq, Place { loc: *loc, scratch: *scratch }) {
                        Fetched::Later => return None,
                        fetched => Some(fetched),
                    }
                }
                _ => None,
            };
            match self.pop_slot()? {
                Slot::Resident(e) => {
                    stored.forget_scratch(e.seq);
                    return Some(e);
                }
                Slot::Paged { seq, redelivered, scratch, expires_at_ms, .. } => {
                    if let Some(Fetched::Message(message, stamp_ms)) = fetched {
                        // A message recovered paged out learns its own TTL only now (its
                        // record's stamp is its publish time; scratch copies have none).
                        let own = message.expiration_ms.filter(|_| !scratch && stamp_ms > 0);
                        let expires_at_ms = own.map_or(expires_at_ms, |ttl| expires_at_ms.min(stamp_ms + ttl));
                        return Some(Entry { seq, message, redelivered, expires_at_ms });
                    }
                }
                Slot::Hole { .. } => debug_assert!(false, "a hole at the head"),
            }
        }
    }

    /// Reads a paged-out head back into memory, so that [`ReadyList::pop`] cannot fail.
    /// False if the list is empty, or its head cannot be read back now.
    pub fn load_head(&mut self, stored: &mut Stored) -> bool {
        if !matches!(self.slots.front(), Some(Slot::Paged { .. })) {
            return !self.slots.is_empty();
        }
        let Some(entry) = self.pop(stored) else { return false };
        self.insert(entry);
        true
    }

    /// Takes the head out (`x-max-length`), resident or not; its stored copies stay.
    pub fn drop_head(&mut self) -> Option<Removed> {
        self.pop_slot().and_then(Self::removed)
    }

    /// Drops every message, releasing their stored copies; returns how many.
    pub fn clear(&mut self, stored: &mut Stored) -> usize {
        for slot in &self.slots {
            if !matches!(slot, Slot::Hole { .. }) {
                stored.forget(slot.seq());
            }
        }
        self.free()
    }

    /// Drops every message and frees the list's memory, leaving stored copies alone (the
    /// queue was deleted: they go with its logs). Returns how many.
    pub fn free(&mut self) -> usize {
        let n = self.len();
        self.slots = VecDeque::new();
        self.expiry_index = BTreeSet::new();
        self.expiring = 0;
        let resident = self.resident_bytes;
        self.sub_resident(resident);
        (self.bytes, self.paged, self.paged_bytes, self.holes) = (0, 0, 0, 0);
        (self.persistent, self.persistent_bytes) = (0, 0);
        self.check();
        n
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
        let Some(store) = &self.gauge else { return };
        let (now, reported) = (self.resident_bytes, self.gauge_reported);
        if now >= reported + GAUGE_STEP_BYTES {
            store.add_resident_bytes(now - reported);
            self.gauge_reported = now;
        } else if now + GAUGE_STEP_BYTES <= reported || (now == 0 && reported > 0) {
            store.sub_resident_bytes(reported - now);
            self.gauge_reported = now;
        }
    }

    fn resident_count(&self) -> usize {
        self.slots.len() - self.paged - self.holes
    }

    /// Whether more is resident than the window allows: the usual one, or only the head
    /// under the node's memory pressure (read only past the head: one atomic load).
    #[inline]
    fn over_resident_limits(&self, stored: &Stored) -> bool {
        let count = self.resident_count();
        (count > RESIDENT_MAX_MESSAGES || self.resident_bytes > RESIDENT_MAX_BYTES)
            || (count > RESIDENT_MIN_MESSAGES && stored.node_memory_pressure())
    }

    /// The resident window (messages, bytes): the head alone under the node's memory pressure.
    fn window(stored: &Stored) -> (usize, u64) {
        if stored.node_memory_pressure() {
            (RESIDENT_MIN_MESSAGES, u64::MAX)
        } else {
            (RESIDENT_MAX_MESSAGES, RESIDENT_MAX_BYTES)
        }
    }

    /// Pages out messages beyond the resident window, scanning from where the last call
    /// stopped. A logged message pages out once its record is written. Any other message is
    /// first copied to the scratch log, and pages out once that copy is written (a later
    /// call). The scan stops at the first message still waiting for a write.
    #[inline]
    pub fn page_out(&mut self, stored: &mut Stored) {
        if self.over_resident_limits(stored) {
            self.page_out_excess(stored);
        }
    }

    #[cold]
    fn page_out_excess(&mut self, stored: &mut Stored) {
        if stored.failed() {
            return;
        }
        // Transient messages page out only under memory pressure (their copy costs a write).
        let pressure = stored.memory_pressure();
        if !stored.has_log() && !pressure {
            return;
        }
        if pressure && !self.pressure_seen {
            // Transient messages the scan passed before the pressure began are candidates now.
            self.page_scan_seq = 0;
        }
        self.pressure_seen = pressure;
        if pressure {
            stored.open_scratch();
        }
        self.page_scan_seq = self.scan(stored, pressure);
        self.check();
    }

    /// Pages out from where the last scan stopped until the excess is gone (`to_scratch`:
    /// copying to the scratch log what the log does not hold); returns where the next scan
    /// starts.
    fn scan(&mut self, stored: &mut Stored, to_scratch: bool) -> u64 {
        let (window_messages, window_bytes) = Self::window(stored);
        let mut excess_messages = self.resident_count().saturating_sub(window_messages);
        let mut excess_bytes = self.resident_bytes.saturating_sub(window_bytes);
        let start = self.slots.partition_point(|s| s.seq() < self.page_scan_seq).max(RESIDENT_MIN_MESSAGES);
        let mut i = start;
        let mut waiting: Option<u64> = None;
        while i < self.slots.len() && (excess_messages > 0 || excess_bytes > 0) {
            if let Some((size, paged)) = self.page_slot(i, stored, to_scratch) {
                if !paged {
                    // Its record is being written: page it out on a later call.
                    waiting.get_or_insert(self.slots[i].seq());
                }
                excess_messages = excess_messages.saturating_sub(1);
                excess_bytes = excess_bytes.saturating_sub(size);
            }
            i += 1;
        }
        waiting.unwrap_or_else(|| self.slots.get(i).map_or(self.end_seq, Slot::seq))
    }

    /// Pages out the message at `i` if it is resident and has a copy: `Some((its size, whether
    /// the copy was written and it paged out))`; `None` if it has no copy or is paged out.
    fn page_slot(&mut self, i: usize, stored: &mut Stored, to_scratch: bool) -> Option<(u64, bool)> {
        let Slot::Resident(e) = &self.slots[i] else { return None };
        let was_persistent = e.message.is_persistent();
        let (seq, redelivered, size) = (e.seq, e.redelivered, e.message.size() as u64);
        let (body, expires_at_ms) = (e.message.body().len() as u32, e.expires_at_ms);
        let place = stored.copy_of(seq, &e.message, to_scratch)?;
        if !stored.is_written(place) {
            return Some((size, false));
        }
        let Place { loc, scratch } = place;
        self.slots[i] = Slot::Paged { seq, loc, body, redelivered, scratch, expires_at_ms };
        // A persistent message of a transient queue pages out to the scratch log.
        if was_persistent && scratch {
            self.persistent -= 1;
            self.persistent_bytes -= body as u64;
        } else if !was_persistent && !scratch {
            self.persistent += 1;
            self.persistent_bytes += body as u64;
        }
        self.paged += 1;
        self.paged_bytes += body as u64;
        self.sub_resident(size);
        Some((size, true))
    }

    /// Checks the invariants (debug builds): the counters always, every slot only while the
    /// list is short or once in [`CHECK_ALL_EVERY`] changes.
    fn check(&mut self) {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.paged <= self.slots.len(), "{} paged of {}", self.paged, self.slots.len());
            debug_assert!(self.slots.back().is_none_or(|s| s.seq() < self.end_seq), "seq past the end");
            debug_assert!(!matches!(self.slots.front(), Some(Slot::Hole { .. })), "a hole at the head");
            debug_assert!(self.expiry_index.len() <= self.len(), "more deadlines than messages");
            self.changes += 1;
            if self.slots.len() <= CHECK_ALL_MAX || self.changes >= CHECK_ALL_EVERY {
                self.changes = 0;
                self.check_all();
            }
        }
    }

    #[cfg(debug_assertions)]
    fn check_all(&self) {
        let (mut bytes, mut resident, mut paged, mut paged_bytes, mut holes, mut prev) = (0, 0, 0, 0, 0, None);
        let (mut persistent, mut persistent_bytes) = (0, 0);
        for slot in &self.slots {
            debug_assert!(prev.is_none_or(|p| p < slot.seq()), "seq {} after {prev:?}", slot.seq());
            prev = Some(slot.seq());
            bytes += slot.body_bytes();
            if slot.persistent() {
                persistent += 1;
                persistent_bytes += slot.body_bytes();
            }
            match slot {
                Slot::Resident(e) => resident += e.message.size() as u64,
                Slot::Paged { body, .. } => {
                    paged += 1;
                    paged_bytes += *body as u64;
                }
                Slot::Hole { .. } => holes += 1,
            }
        }
        for &(at, seq) in &self.expiry_index {
            let i = self.slots.partition_point(|s| s.seq() < seq);
            debug_assert!(self.slots.get(i).is_some_and(|s| s.seq() == seq && s.expires_at_ms() == at), "index");
        }
        debug_assert_eq!(self.bytes, bytes, "ready bytes");
        debug_assert_eq!(self.resident_bytes, resident, "resident bytes");
        debug_assert_eq!(self.paged, paged, "paged-out messages");
        debug_assert_eq!(self.paged_bytes, paged_bytes, "paged-out bytes");
        debug_assert_eq!((self.persistent, self.persistent_bytes), (persistent, persistent_bytes), "persistent");
        debug_assert_eq!(self.holes, holes, "holes");
        let expiring = self.slots.iter().filter(|s| s.expires_at_ms() != NO_EXPIRY).count();
        debug_assert_eq!(self.expiring, expiring, "messages with a deadline");
    }
}
