//! A ready list: a queue's messages waiting for a consumer, in `seq` order, each in memory
//! ([`Entry`]) or paged out (only where its stored copy is), with the counts flow control,
//! limits and paging read — bytes, resident bytes, paged-out messages — the paging scan and
//! the queue's share of the store's memory gauge. A queue has one; a priority queue is to
//! have one per priority.
//!
//! Where copies are stored is the queue's [`Stored`], which the list is handed whenever a
//! message leaves it, pages out or is read back.
//!
//! Paging: beyond a window of [`RESIDENT_MAX_MESSAGES`] ready messages (or
//! [`RESIDENT_MAX_BYTES`]), a message whose stored copy has been written keeps only its place
//! in memory; it is read back when it reaches the head. A logged message pages out once its
//! record is written; under memory pressure any other one is first copied to the scratch log.
//!
//! Invariants, checked after every change in debug builds: `bytes` is the sum of the slots'
//! sizes, `resident_bytes` that of the resident ones, `paged` the number of paged-out slots,
//! and `seq`s strictly increase. The sums are checked while the list is short
//! ([`CHECK_ALL_MAX`]) and every [`CHECK_ALL_EVERY`]th change, so the checks stay cheap on long
//! queues.

use std::collections::VecDeque;

use lepus_store::log::Loc;
use lepus_store::store::Store;

use super::stored::{Place, Stored};
use crate::message::MessageRef;

/// Ready messages kept in memory before logged ones are paged out.
pub const RESIDENT_MAX_MESSAGES: usize = 8_192;
pub const RESIDENT_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// The head of the queue is never paged out: it is about to be delivered.
const RESIDENT_MIN_MESSAGES: usize = 256;

/// Granularity of a list's reports to the store's memory gauge.
const GAUGE_STEP_BYTES: u64 = 1024 * 1024;

/// Debug builds check every slot after each change up to this length…
const CHECK_ALL_MAX: usize = 64;
/// …and beyond it, once in this many changes.
const CHECK_ALL_EVERY: u32 = 4096;

/// A message waiting in a queue.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub message: MessageRef,
    pub redelivered: bool,
}

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

#[derive(Debug, Default)]
pub(super) struct ReadyList {
    slots: VecDeque<Slot>,
    bytes: u64,
    /// How many slots are paged out, and the bytes of the resident ones.
    paged: usize,
    resident_bytes: u64,
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
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The sizes of every ready message, resident or not.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Ready messages held only in a log.
    pub fn paged_count(&self) -> usize {
        self.paged
    }

    /// Appends a message (its `seq` is above every other's).
    pub fn push_back(&mut self, entry: Entry) {
        debug_assert!(entry.seq >= self.end_seq, "seq {} pushed after {}", entry.seq, self.end_seq);
        let size = entry.message.size() as u64;
        self.bytes += size;
        self.end_seq = entry.seq + 1;
        self.slots.push_back(Slot::Resident(entry));
        self.add_resident(size);
        self.check();
    }

    /// Appends a message left in the queue's log at `loc` (recovered, not read).
    pub fn push_back_paged(&mut self, seq: u64, loc: Loc, size: u32, redelivered: bool) {
        debug_assert!(seq >= self.end_seq, "seq {seq} pushed after {}", self.end_seq);
        self.bytes += size as u64;
        self.paged += 1;
        self.end_seq = seq + 1;
        self.slots.push_back(Slot::Paged { seq, loc, size, redelivered, scratch: false });
        self.check();
    }

    /// Inserts a requeued message at its original position.
    pub fn insert(&mut self, entry: Entry) {
        let size = entry.message.size() as u64;
        self.bytes += size;
        let at = self.slots.partition_point(|s| s.seq() < entry.seq);
        debug_assert!(self.slots.get(at).is_none_or(|s| s.seq() > entry.seq), "seq {} is ready twice", entry.seq);
        self.slots.insert(at, Slot::Resident(entry));
        self.add_resident(size);
        self.check();
    }

    /// Removes the head, resident or not.
    fn pop_slot(&mut self) -> Option<Slot> {
        let slot = self.slots.pop_front()?;
        self.bytes -= slot.size();
        match &slot {
            Slot::Resident(e) => self.sub_resident(e.message.size() as u64),
            Slot::Paged { .. } => self.paged -= 1,
        }
        self.check();
        Some(slot)
    }

    /// Removes the head, reading it back if it was paged out (a record that cannot be read is
    /// skipped: see [`Stored::read`]).
    pub fn pop(&mut self, stored: &mut Stored) -> Option<Entry> {
        loop {
            match self.pop_slot()? {
                Slot::Resident(e) => {
                    stored.forget_scratch(e.seq);
                    return Some(e);
                }
                Slot::Paged { seq, loc, redelivered, scratch, .. } => {
                    if let Some(message) = stored.read(seq, Place { loc, scratch }) {
                        return Some(Entry { seq, message, redelivered });
                    }
                }
            }
        }
    }

    /// Reads a paged-out head back into memory, so that [`ReadyList::pop`] cannot fail.
    /// False if the list is empty (or nothing in it could be read back).
    pub fn load_head(&mut self, stored: &mut Stored) -> bool {
        if !matches!(self.slots.front(), Some(Slot::Paged { .. })) {
            return !self.slots.is_empty();
        }
        let Some(entry) = self.pop(stored) else { return false };
        self.insert(entry);
        true
    }

    /// Drops the head (`x-max-length`), releasing its stored copies. False if empty.
    pub fn drop_head(&mut self, stored: &mut Stored) -> bool {
        let Some(slot) = self.pop_slot() else { return false };
        stored.forget(slot.seq());
        true
    }

    /// Drops every message, releasing their stored copies; returns how many.
    pub fn clear(&mut self, stored: &mut Stored) -> usize {
        for slot in &self.slots {
            stored.forget(slot.seq());
        }
        self.free()
    }

    /// Drops every message and frees the list's memory, leaving stored copies alone (the
    /// queue was deleted: they go with its logs). Returns how many.
    pub fn free(&mut self) -> usize {
        let n = self.slots.len();
        self.slots = VecDeque::new();
        let resident = self.resident_bytes;
        self.sub_resident(resident);
        (self.bytes, self.paged) = (0, 0);
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
        self.slots.len() - self.paged
    }

    fn over_resident_limits(&self) -> bool {
        self.resident_count() > RESIDENT_MAX_MESSAGES || self.resident_bytes > RESIDENT_MAX_BYTES
    }

    /// Pages out messages beyond the resident window, scanning from where the last call
    /// stopped. A logged message pages out once its record is written. Any other message is
    /// first copied to the scratch log, and pages out once that copy is written (a later
    /// call). The scan stops at the first message still waiting for a write.
    pub fn page_out(&mut self, stored: &mut Stored) {
        if !self.over_resident_limits() || stored.failed() {
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
        let mut excess_messages = self.resident_count().saturating_sub(RESIDENT_MAX_MESSAGES);
        let mut excess_bytes = self.resident_bytes.saturating_sub(RESIDENT_MAX_BYTES);
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
        let (seq, redelivered, size) = (e.seq, e.redelivered, e.message.size() as u64);
        let place = stored.copy_of(seq, &e.message, to_scratch)?;
        if !stored.is_written(place) {
            return Some((size, false));
        }
        let Place { loc, scratch } = place;
        self.slots[i] = Slot::Paged { seq, loc, size: size as u32, redelivered, scratch };
        self.paged += 1;
        self.sub_resident(size);
        Some((size, true))
    }

    /// Checks the invariants (debug builds): the counters always, every slot only while the
    /// list is short or once in [`CHECK_ALL_EVERY`] changes.
    fn check(&mut self) {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.paged <= self.slots.len(), "{} paged of {}", self.paged, self.slots.len());
            debug_assert!(
                self.resident_bytes <= self.bytes,
                "{} resident of {} bytes",
                self.resident_bytes,
                self.bytes
            );
            debug_assert!(self.slots.back().is_none_or(|s| s.seq() < self.end_seq), "seq past the end");
            self.changes += 1;
            if self.slots.len() <= CHECK_ALL_MAX || self.changes >= CHECK_ALL_EVERY {
                self.changes = 0;
                self.check_all();
            }
        }
    }

    #[cfg(debug_assertions)]
    fn check_all(&self) {
        let (mut bytes, mut resident, mut paged, mut prev) = (0, 0, 0, None);
        for slot in &self.slots {
            debug_assert!(prev.is_none_or(|p| p < slot.seq()), "seq {} after {prev:?}", slot.seq());
            prev = Some(slot.seq());
            bytes += slot.size();
            match slot {
                Slot::Resident(_) => resident += slot.size(),
                Slot::Paged { .. } => paged += 1,
            }
        }
        debug_assert_eq!(self.bytes, bytes, "ready bytes");
        debug_assert_eq!(self.resident_bytes, resident, "resident bytes");
        debug_assert_eq!(self.paged, paged, "paged-out messages");
    }
}
