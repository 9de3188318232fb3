//! A queue's stored copies of its messages, by `seq`: the message log of a durable queue
//! (persistent messages, from publish until they leave the queue for good) and the scratch
//! log other messages page out through under memory pressure (never synced, removed at start).
//!
//! One per queue, shared by its ready lists: a ready list decides when a message pages out and
//! asks this module for a written copy to leave in its place; acks, drops and purges release
//! copies here.

use std::collections::HashMap;
use std::sync::Arc;

use lepus_store::log::{Loc, QueueLog};
use lepus_store::store::Store;

use crate::message::{Message, MessageRef};

#[derive(Debug, Default)]
pub(super) struct Stored {
    /// The message log of a durable queue.
    log: Option<QueueLog>,
    /// Where each logged message (ready or unacked) is in the log.
    locs: HashMap<u64, Loc>,
    /// Where to create a scratch log, and the scratch log once created.
    scratch_store: Option<Store>,
    scratch: Option<QueueLog>,
    /// Where each ready message copied to the scratch log is in it.
    scratch_locs: HashMap<u64, Loc>,
    /// The message whose read failed with an error that may pass (logged once).
    blocked_read: Option<u64>,
    /// The generation of the latest release of a moved record (see [`Stored::undurable_moves`]).
    moved_stamp: u64,
}

/// A paged-out message read back.
#[derive(Debug)]
pub(super) enum Fetched {
    /// The message, with its record's stamp.
    Message(MessageRef, u64),
    /// Its record is damaged (or gone): no retry can help. It is skipped in memory but stays
    /// in the log, so a restart reports it again.
    Unreadable,
    /// An error that may pass (EIO, out of descriptors, …): the message is kept and read
    /// again later, in its place. Skipping it would lose it until a restart and break its
    /// queue's order.
    Later,
}

/// Whether a read error is damage to the record (a checksum or a length that does not
/// hold), not a failing read.
fn is_damage(e: &lepus_store::StoreError) -> bool {
    use std::io::ErrorKind::{InvalidData, NotFound, UnexpectedEof};
    matches!(e, lepus_store::StoreError::Io { source, .. } if matches!(source.kind(), InvalidData | NotFound | UnexpectedEof))
}

/// Where a paged-out message can be read back from: its log or the scratch log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub loc: Loc,
    pub scratch: bool,
}

impl Stored {
    pub fn set_log(&mut self, log: QueueLog) {
        self.log = Some(log);
    }

    pub fn set_scratch_store(&mut self, store: Store) {
        self.scratch_store = Some(store);
    }

    /// Logs a persistent message (if the queue has a log); returns the generation that makes
    /// it durable. `now_ms` stamps the record.
    pub fn append(&mut self, seq: u64, message: &Message, now_ms: u64) -> Option<u64> {
        if !message.is_persistent() {
            return None;
        }
        let (loc, generation) = self.log.as_mut()?.append(&message.record(now_ms));
        self.locs.insert(seq, loc);
        Some(generation)
    }

    /// A message recovered from the log at `loc`.
    pub fn restore(&mut self, seq: u64, loc: Loc) {
        self.locs.insert(seq, loc);
    }

    /// Whether no message has a stored copy (acks have nothing to release).
    pub fn is_empty(&self) -> bool {
        self.locs.is_empty() && self.scratch_locs.is_empty()
    }

    /// Tells the log a message left the queue for good; returns the generation that makes
    /// that durable.
    pub fn forget(&mut self, seq: u64) -> Option<u64> {
        self.forget_scratch(seq);
        let loc = self.locs.remove(&seq)?;
        Some(self.log.as_mut()?.forget(loc))
    }

    /// [`Stored::forget`] for a message moved to other queues' logs (a dead letter): the
    /// store writes the release only after it synced the appends of the same commit.
    pub fn forget_moved(&mut self, seq: u64) -> Option<u64> {
        self.forget_scratch(seq);
        let loc = self.locs.remove(&seq)?;
        let stamp = self.log.as_mut()?.forget_moved(loc);
        self.moved_stamp = self.moved_stamp.max(stamp);
        Some(stamp)
    }

    /// The store and the generation that make durable every dead letter moved out of this
    /// queue, if that is not durable yet: a target's append comes before the release here, so
    /// it is stamped no later.
    pub fn undurable_moves(&self) -> Option<(Store, u64)> {
        let store = self.log.as_ref()?.store();
        (!store.is_durable(self.moved_stamp)).then(|| (store.clone(), self.moved_stamp))
    }

    /// Releases a message's scratch copy (it is back in memory, or gone).
    pub fn forget_scratch(&mut self, seq: u64) {
        if self.scratch_locs.is_empty() {
            return;
        }
        if let Some(loc) = self.scratch_locs.remove(&seq)
            && let Some(scratch) = self.scratch.as_mut()
        {
            scratch.forget(loc);
        }
    }

    /// Notes in the log that a message was handed out: after a restart it is redelivered.
    pub fn mark_delivered(&mut self, seq: u64) {
        if self.locs.is_empty() {
            return;
        }
        if let Some(&loc) = self.locs.get(&seq)
            && let Some(log) = self.log.as_mut()
        {
            log.mark_delivered(loc);
        }
    }

    /// Notes in the log that a message came back for the `returns`th time (a quorum-typed
    /// queue's `x-delivery-count`): after a restart it keeps that count.
    pub fn mark_returned(&mut self, seq: u64, returns: u32) {
        if self.locs.is_empty() {
            return;
        }
        if let Some(&loc) = self.locs.get(&seq)
            && let Some(log) = self.log.as_mut()
        {
            log.mark_returned(loc, returns);
        }
    }

    /// Reads a paged-out message back, with its record's stamp; its scratch copy, if any, is
    /// released. See [`Fetched`] for what happens when it cannot be read.
    pub fn read(&mut self, seq: u64, place: Place) -> Fetched {
        let log = if place.scratch { self.scratch.as_ref() } else { self.log.as_ref() };
        let Some(log) = log else { return Fetched::Unreadable };
        let Place { loc, scratch } = place;
        match log.read(loc) {
            Ok(parts) => {
                if self.blocked_read.take() == Some(seq) {
                    tracing::info!(
                        segment = loc.segment,
                        offset = loc.offset,
                        scratch,
                        "paged-out message readable again"
                    );
                }
                self.forget_scratch(seq);
                let stamp_ms = parts.timestamp_ms;
                Fetched::Message(Arc::new(Message::from_record(parts)), stamp_ms)
            }
            Err(e) if is_damage(&e) => {
                tracing::error!(error = %e, segment = loc.segment, offset = loc.offset, scratch, "paged-out message damaged; skipped (its record stays in the log)");
                self.blocked_read = None;
                self.locs.remove(&seq);
                self.scratch_locs.remove(&seq);
                Fetched::Unreadable
            }
            Err(e) => {
                if self.blocked_read.replace(seq) != Some(seq) {
                    tracing::error!(error = %e, segment = loc.segment, offset = loc.offset, scratch, "paged-out message cannot be read now; it stays at the head of its queue and is read again later");
                }
                Fetched::Later
            }
        }
    }

    /// `seq` left its ready list unread: its failed read no longer blocks anything.
    pub fn unblock(&mut self, seq: u64) {
        if self.blocked_read == Some(seq) {
            self.blocked_read = None;
        }
    }

    /// Whether a paged-out message at the head of a ready list could not be read back (the
    /// queue retries).
    pub fn read_blocked(&self) -> bool {
        self.blocked_read.is_some()
    }

    pub fn has_log(&self) -> bool {
        self.log.is_some()
    }

    /// Whether a write failed: "written" may then run past records that never reached a file.
    pub fn failed(&self) -> bool {
        [self.log.as_ref(), self.scratch.as_ref()].into_iter().flatten().any(|log| log.store().failed())
    }

    /// Whether queues together hold more than the store allows in memory.
    pub fn memory_pressure(&self) -> bool {
        self.scratch_store.as_ref().is_some_and(Store::memory_pressure)
    }

    /// Whether the node's memory is above the paging fraction of its watermark (one atomic
    /// read).
    #[inline]
    pub fn node_memory_pressure(&self) -> bool {
        self.scratch_store.as_ref().is_some_and(Store::node_memory_pressure)
    }

    /// Creates the scratch log, if the queue may have one and has none yet.
    pub fn open_scratch(&mut self) {
        if self.scratch.is_none()
            && let Some(store) = &self.scratch_store
        {
            self.scratch = Some(QueueLog::create_scratch(store));
        }
    }

    /// A copy of a message to page it out with: its record in the log, or else (with
    /// `to_scratch`, once the scratch log is open) a copy in the scratch log, appended on the
    /// first call. `None`: it stays in memory.
    pub fn copy_of(&mut self, seq: u64, message: &Message, to_scratch: bool) -> Option<Place> {
        if let Some(&loc) = self.locs.get(&seq) {
            return Some(Place { loc, scratch: false });
        }
        let scratch = self.scratch.as_mut().filter(|_| to_scratch)?;
        let loc = *self.scratch_locs.entry(seq).or_insert_with(|| scratch.append(&message.record(0)).0);
        Some(Place { loc, scratch: true })
    }

    /// Whether a copy's record has been written, so it can be read back.
    pub fn is_written(&self, place: Place) -> bool {
        let log = if place.scratch { self.scratch.as_ref() } else { self.log.as_ref() };
        log.is_some_and(|log| log.is_written(place.loc))
    }

    /// The queue was deleted: every copy goes, and the logs with the next commit.
    pub fn destroy(&mut self) {
        self.locs = HashMap::new();
        self.scratch_locs = HashMap::new();
        if let Some(scratch) = self.scratch.take() {
            scratch.destroy();
        }
        if let Some(log) = self.log.take() {
            log.destroy();
        }
    }
}
