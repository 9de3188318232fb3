//! A queue's ready messages by priority: one [`ReadyList`] for a plain queue, one per level for
//! a priority queue (`x-max-priority`, 1–255). A message's level is its `priority` property,
//! capped at the queue's maximum (none counts as 0), as RabbitMQ; the highest non-empty level is
//! served first, FIFO within a level, and a length limit drops from the highest level's head
//! (RabbitMQ's head is the message it would deliver next). Each level keeps its own order,
//! paging window and deadlines; counts are the sums over the levels. A plain queue pays one
//! bounds check per operation.

use lepus_store::log::Loc;
use lepus_store::store::Store;

use super::ready::{Entry, ReadyList, Removed};
use super::stored::Stored;
use crate::message::Message;

#[derive(Debug)]
pub(super) struct Ready {
    /// Index = priority level; one list for a plain queue.
    levels: Vec<ReadyList>,
}

impl Default for Ready {
    fn default() -> Ready {
        Ready::new(None)
    }
}

impl Ready {
    pub fn new(max_priority: Option<u8>) -> Ready {
        let count = max_priority.map_or(1, |max| max as usize + 1);
        Ready { levels: (0..count).map(|_| ReadyList::default()).collect() }
    }

    /// The level a message goes to.
    fn level_of(&self, message: &Message) -> usize {
        if self.levels.len() == 1 {
            return 0;
        }
        (message.priority.unwrap_or(0) as usize).min(self.levels.len() - 1)
    }

    /// The highest level holding a message.
    #[inline]
    fn top(&mut self) -> Option<&mut ReadyList> {
        match self.levels.as_mut_slice() {
            [only] => (!only.is_empty()).then_some(only),
            levels => levels.iter_mut().rev().find(|l| !l.is_empty()),
        }
    }

    pub fn set_gauge(&mut self, store: Store) {
        for level in &mut self.levels {
            level.set_gauge(store.clone());
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        match self.levels.as_slice() {
            [only] => only.len(),
            levels => levels.iter().map(ReadyList::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(ReadyList::is_empty)
    }

    #[inline]
    pub fn bytes(&self) -> u64 {
        match self.levels.as_slice() {
            [only] => only.bytes(),
            levels => levels.iter().map(ReadyList::bytes).sum(),
        }
    }

    pub fn paged_count(&self) -> usize {
        self.levels.iter().map(ReadyList::paged_count).sum()
    }

    pub fn persistent(&self) -> (usize, u64) {
        self.levels.iter().map(ReadyList::persistent).fold((0, 0), |(n, b), (m, c)| (n + m, b + c))
    }

    pub fn paged_bytes(&self) -> u64 {
        self.levels.iter().map(ReadyList::paged_bytes).sum()
    }

    /// See [`ReadyList::memory_bytes`]; every priority level's.
    pub fn memory_bytes(&self) -> u64 {
        self.levels.iter().map(ReadyList::memory_bytes).sum()
    }

    #[inline]
    pub fn next_expiry_ms(&self) -> u64 {
        match self.levels.as_slice() {
            [only] => only.next_expiry_ms(),
            levels => levels.iter().map(ReadyList::next_expiry_ms).min().unwrap_or(super::NO_EXPIRY),
        }
    }

    pub fn push_back(&mut self, entry: Entry, indexed: bool) {
        let level = self.level_of(&entry.message);
        self.levels[level].push_back(entry, indexed);
    }

    /// A recovered message left paged out: only plain queues have any (a priority queue's
    /// messages are all read at start, to know their levels).
    pub fn push_back_paged(&mut self, seq: u64, loc: Loc, body: u32, redelivered: bool, expires_at_ms: u64) {
        debug_assert_eq!(self.levels.len(), 1, "a paged-out message restored into a priority queue");
        self.levels[0].push_back_paged(seq, loc, body, redelivered, expires_at_ms);
    }

    pub fn insert(&mut self, entry: Entry) {
        let level = self.level_of(&entry.message);
        self.levels[level].insert(entry);
    }

    #[inline]
    pub fn pop(&mut self, stored: &mut Stored) -> Option<Entry> {
        while let Some(level) = self.top() {
            if let Some(entry) = level.pop(stored) {
                return Some(entry);
            }
            if !level.is_empty() {
                // Its head cannot be read back now: nothing overtakes it.
                return None;
            }
        }
        None
    }

    /// Reads the next message to deliver back into memory if it was paged out; false if there
    /// is none.
    #[inline]
    pub fn load_head(&mut self, stored: &mut Stored) -> bool {
        while let Some(level) = self.top() {
            if level.load_head(stored) {
                return true;
            }
            if !level.is_empty() {
                return false;
            }
        }
        false
    }

    pub fn drop_head(&mut self) -> Option<Removed> {
        self.top()?.drop_head()
    }

    /// Removes due messages, up to `max` in all.
    pub fn expire(&mut self, now_ms: u64, max: usize, mut stored: Option<&mut Stored>, out: &mut Vec<Removed>) {
        for level in &mut self.levels {
            if level.next_expiry_ms() <= now_ms && out.len() < max {
                level.expire(now_ms, max, stored.as_deref_mut(), out);
            }
        }
    }

    pub fn clear(&mut self, stored: &mut Stored) -> usize {
        self.levels.iter_mut().map(|l| l.clear(stored)).sum()
    }

    pub fn free(&mut self) -> usize {
        self.levels.iter_mut().map(ReadyList::free).sum()
    }

    #[inline]
    pub fn page_out(&mut self, stored: &mut Stored) {
        for level in &mut self.levels {
            level.page_out(stored);
        }
    }
}
