//! The broker's one timer service: every deadline (message TTL, queue expiry, delayed messages,
//! consumer timeouts) is a timer here, fired by one driver the server runs.
//!
//! A timer belongs to a [`TimerTarget`], held weakly, and has a deadline in the [`Clock`]'s
//! milliseconds. An entity typically holds one timer for its life and reschedules it to its
//! next deadline: firing a timer only disarms it (its deadline becomes [`NEVER`]), so the target
//! reschedules the same id from inside [`TimerTarget::on_timer`] or later; [`cancel`] forgets
//! it. A timer whose target has been dropped is forgotten when it comes due; an unarmed one
//! stays until cancelled, so an entity cancels its timer when it goes away.
//!
//! The index is a time-ordered set of `(deadline_ms, id)` for armed timers plus a map from id to
//! deadline and target, under one mutex (the shape of mini-redis's expiry set): scheduling,
//! rescheduling and cancelling cost O(log n), and firing takes the due timers off the front of
//! the set; nothing scans all timers. Timers due at the same millisecond fire in the order they
//! were created. [`TimerService::fire_due`] takes at most [`FIRE_BATCH`] timers per call, so a
//! burst never holds the lock long, and calls the targets after releasing it. The driver is
//! woken through [`Wake`] only when a change makes the earliest deadline earlier; it sleeps until
//! [`TimerService::next_deadline`] otherwise.
//!
//! Memory: 65 to 104 bytes per timer, besides the target itself (measured with a counting
//! allocator at 0.9 to 4 million timers): a 33-byte map slot at 44 to 88% load, as the map
//! doubles, and 27 (random deadlines) to 34 (deadlines in order) bytes of B-tree per armed key.
//!
//! **Lock order:** the timer lock is innermost. It may be taken under any other lock (an entity
//! reschedules under its own lock, so its deadline always matches its state); nothing is locked
//! under it, and no target is called and no driver woken while it is held, so a target may
//! schedule, reschedule or cancel from inside `on_timer`.
//!
//! [`Clock`]: crate::clock::Clock
//! [`cancel`]: TimerService::cancel

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::clock::ClockRef;
use crate::outlet::Wake;

/// The most due timers one [`TimerService::fire_due`] call takes out.
pub const FIRE_BATCH: usize = 4096;

/// The deadline of an unarmed timer: it is kept, but never fires until rescheduled.
pub const NEVER: u64 = u64::MAX;

/// Indexes whose every operation is checked in full (debug builds).
const FULL_CHECK_MAX: usize = 64;

/// A timer's identity; ids come from a counter and are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(u64);

/// Whatever owns a timer: told when it comes due.
pub trait TimerTarget: Send + Sync {
    /// Timer `id` came due at `now_ms` (it is now unarmed). Called with no timer lock held.
    fn on_timer(&self, id: TimerId, now_ms: u64);
}

struct Entry {
    /// [`NEVER`] while unarmed.
    deadline_ms: u64,
    target: Weak<dyn TimerTarget>,
}

#[derive(Default)]
struct Index {
    /// Armed timers, in firing order.
    by_deadline: BTreeSet<(u64, TimerId)>,
    timers: HashMap<TimerId, Entry>,
    next_id: u64,
}

/// A due timer taken out of the index, to be fired with no lock held.
type Due = (TimerId, Arc<dyn TimerTarget>);

impl Index {
    fn earliest_ms(&self) -> u64 {
        self.by_deadline.first().map_or(NEVER, |&(deadline_ms, _)| deadline_ms)
    }

    fn insert(&mut self, target: Weak<dyn TimerTarget>, deadline_ms: u64) -> TimerId {
        let id = TimerId(self.next_id);
        self.next_id += 1;
        self.timers.insert(id, Entry { deadline_ms, target });
        self.arm(id, deadline_ms);
        id
    }

    fn reschedule(&mut self, id: TimerId, deadline_ms: u64) -> bool {
        let Some(entry) = self.timers.get_mut(&id) else { return false };
        let old_ms = std::mem::replace(&mut entry.deadline_ms, deadline_ms);
        self.disarm(id, old_ms);
        self.arm(id, deadline_ms);
        true
    }

    fn remove(&mut self, id: TimerId) -> bool {
        let Some(entry) = self.timers.remove(&id) else { return false };
        self.disarm(id, entry.deadline_ms);
        true
    }

    fn arm(&mut self, id: TimerId, deadline_ms: u64) {
        if deadline_ms != NEVER {
            let inserted = self.by_deadline.insert((deadline_ms, id));
            debug_assert!(inserted, "timer {id:?} armed twice");
        }
    }

    fn disarm(&mut self, id: TimerId, deadline_ms: u64) {
        if deadline_ms != NEVER {
            let removed = self.by_deadline.remove(&(deadline_ms, id));
            debug_assert!(removed, "armed timer {id:?} missing from the time index");
        }
    }

    /// Takes out up to [`FIRE_BATCH`] timers due at `now_ms`: live ones are disarmed and pushed
    /// onto `due`, those whose target has gone are forgotten. Returns how many were taken.
    fn take_due(&mut self, now_ms: u64, due: &mut Vec<Due>) -> usize {
        let mut taken = 0;
        while taken < FIRE_BATCH {
            match self.by_deadline.first() {
                Some(&(deadline_ms, id)) if deadline_ms <= now_ms => {
                    self.by_deadline.pop_first();
                    self.take(id, deadline_ms, due);
                    taken += 1;
                }
                _ => break,
            }
        }
        taken
    }

    /// Timer `id`, just taken off the time index at `deadline_ms`, is disarmed (or forgotten).
    fn take(&mut self, id: TimerId, deadline_ms: u64, due: &mut Vec<Due>) {
        let Some(entry) = self.timers.get_mut(&id) else {
            debug_assert!(false, "timer {id:?} in the time index but not in the map");
            return;
        };
        debug_assert_eq!(entry.deadline_ms, deadline_ms, "the two indexes disagree on {id:?}");
        match entry.target.upgrade() {
            Some(target) => {
                entry.deadline_ms = NEVER;
                due.push((id, target));
            }
            None => {
                self.timers.remove(&id);
            }
        }
    }

    /// Debug builds: the time index holds exactly the armed timers, each at its deadline
    /// (checked in full for small indexes, by size otherwise).
    fn check(&self) {
        debug_assert!(self.by_deadline.len() <= self.timers.len(), "more armed timers than timers");
        if cfg!(debug_assertions) && self.timers.len() <= FULL_CHECK_MAX {
            let armed = self.timers.iter().filter(|(_, entry)| entry.deadline_ms != NEVER);
            for (id, entry) in armed.clone() {
                assert!(self.by_deadline.contains(&(entry.deadline_ms, *id)), "timer {id:?} not in the time index");
            }
            assert_eq!(armed.count(), self.by_deadline.len(), "the time index holds unarmed timers");
        }
    }
}

pub struct TimerService {
    index: Mutex<Index>,
    clock: ClockRef,
    /// Wakes the driver when the earliest deadline moves earlier.
    wake: Box<dyn Wake>,
}

impl std::fmt::Debug for TimerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let index = self.index.lock();
        f.debug_struct("TimerService")
            .field("timers", &index.timers.len())
            .field("armed", &index.by_deadline.len())
            .field("clock", &self.clock)
            .finish()
    }
}

impl TimerService {
    pub fn new(clock: ClockRef, wake: Box<dyn Wake>) -> TimerService {
        TimerService { index: Mutex::new(Index::default()), clock, wake }
    }

    pub fn clock(&self) -> &ClockRef {
        &self.clock
    }

    /// A new timer for `target`, due at `deadline_ms` ([`NEVER`]: unarmed).
    pub fn schedule(&self, target: Weak<dyn TimerTarget>, deadline_ms: u64) -> TimerId {
        self.update(|index| index.insert(target, deadline_ms))
    }

    /// Moves timer `id` to `deadline_ms`, arming it again if it fired ([`NEVER`]: disarms it).
    /// False if there is no such timer (cancelled, or its target gone).
    pub fn reschedule(&self, id: TimerId, deadline_ms: u64) -> bool {
        self.update(|index| index.reschedule(id, deadline_ms))
    }

    /// Forgets timer `id`; false if there was no such timer.
    pub fn cancel(&self, id: TimerId) -> bool {
        self.update(|index| index.remove(id))
    }

    /// Applies `change` under the lock, then wakes the driver if the earliest deadline moved
    /// earlier.
    fn update<R>(&self, change: impl FnOnce(&mut Index) -> R) -> R {
        let mut index = self.index.lock();
        let earliest_ms = index.earliest_ms();
        let result = change(&mut index);
        let earlier = index.earliest_ms() < earliest_ms;
        index.check();
        drop(index);
        if earlier {
            self.wake.wake();
        }
        result
    }

    /// The earliest deadline of an armed timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.index.lock().by_deadline.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    /// Fires up to [`FIRE_BATCH`] timers due now, earliest first, and returns how many it took
    /// out (fired, or forgotten because their target had gone). The driver calls again while
    /// that is a whole batch.
    pub fn fire_due(&self) -> usize {
        let now_ms = self.clock.now_ms();
        let mut due = Vec::new();
        let taken = {
            let mut index = self.index.lock();
            let taken = index.take_due(now_ms, &mut due);
            index.check();
            taken
        };
        for (id, target) in &due {
            target.on_timer(*id, now_ms);
        }
        taken
    }

    /// Timers held, armed or not.
    pub fn len(&self) -> usize {
        self.index.lock().timers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
