//! Unbinding a deleted queue a step at a time. A queue with more than [`UNBIND_STEP_MAX`]
//! bindings leaves its vhost at once (from then it is unroutable: routing skips a binding to
//! a queue the vhost does not hold), and its bindings move to the topology's `unbinding` list;
//! whoever deleted it removes them from their exchanges [`UNBIND_STEP_MAX`] at a time
//! ([`VHost::unbind_deleted`]), the topology lock released between steps, so neither the lock
//! nor a runtime worker is held for the whole of 100,000 bindings.
//!
//! A queue deleted with no client waiting for the answer (auto-delete when its last consumer
//! goes, exclusive clean-up when its owner's connection closes, `x-expires`) is unbound the
//! same way, by the vhost's timer on the broker's timer service ([`VHost::unbind_later`]):
//! one step per firing, re-armed for now while bindings are left, the timer task yielding to
//! the runtime between firings (`crates/server/src/timers.rs`).
//!
//! Bindings in the list route nowhere and are not listed. Only a queue declared again under
//! the same name could meet them (it would inherit them): declaring it removes them all first,
//! as does deleting an exchange `if-unused` (which counts bindings).

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use lepus_protocol::{FieldTable, ShortStr};
use lepus_store::meta::Change;
use parking_lot::Mutex;

use super::{Topology, VHost};
use crate::exchange::Destination;
use crate::queue::Services;
use crate::timer::{TimerId, TimerTarget};

/// Bindings of a deleted queue removed from their exchanges per step.
pub const UNBIND_STEP_MAX: usize = 4096;

/// A binding waiting to be removed: (source exchange, routing key, arguments).
pub(super) type Unbound = (ShortStr, ShortStr, FieldTable);

/// The vhost's unbinding timer (created on first use, kept unarmed between uses) and the
/// count of steps taken.
#[derive(Debug, Default)]
pub(super) struct Unbinder {
    timer: Mutex<Option<TimerId>>,
    steps: AtomicU64,
}

impl Unbinder {
    /// Forgets the timer (the vhost is being deleted).
    pub(super) fn cancel(&self, services: Option<&Services>) {
        if let (Some(id), Some(s)) = (self.timer.lock().take(), services) {
            s.timers.cancel(id);
        }
    }
}

impl VHost {
    /// Removes a deleted queue's bindings, or, past [`UNBIND_STEP_MAX`], moves them to the
    /// `unbinding` list for [`VHost::unbind_deleted`].
    pub(super) fn unlink_queue(&self, t: &mut Topology, name: &ShortStr, changes: &mut Vec<Change>) {
        let dest = Destination::Queue(name.clone());
        if t.bindings_to.get(&dest).is_some_and(|list| list.len() > UNBIND_STEP_MAX) {
            let list = t.bindings_to.remove(&dest).unwrap_or_default();
            t.unbinding.entry(name.clone()).or_default().extend(list);
        } else {
            self.remove_bindings_to(t, &dest, changes);
        }
    }

    /// One step of unbinding deleted queues, under the topology write lock: true once none
    /// is left (the caller then answers its client).
    pub fn unbind_deleted(&self) -> bool {
        let mut t = self.write_topology();
        if t.unbinding.is_empty() {
            return true;
        }
        let mut changes = Vec::new();
        let done = self.unbind_step(&mut t, UNBIND_STEP_MAX, &mut changes);
        self.unbinder.steps.fetch_add(1, Ordering::Relaxed);
        // Only exchanges auto-deleted in cascade: a failure is logged by `persist` (they come
        // back, unbound, after a restart).
        let _ = self.persist(&changes);
        done
    }

    /// Removes the `unbinding` list a step per firing of the vhost's timer, starting now
    /// (at once, for a vhost without a broker's timers).
    pub(super) fn unbind_later(&self) {
        let Some(services) = self.services.get() else {
            while !self.unbind_deleted() {}
            return;
        };
        let now_ms = services.clock.now_ms();
        let mut timer = self.unbinder.timer.lock();
        if let Some(id) = *timer
            && services.timers.reschedule(id, now_ms)
        {
            return;
        }
        let target: Weak<dyn TimerTarget> = services.vhost.clone();
        *timer = Some(services.timers.schedule(target, now_ms));
    }

    /// Steps of unbinding deleted queues taken so far (each removes up to
    /// [`UNBIND_STEP_MAX`] bindings under the topology lock, released between steps).
    pub fn unbind_steps(&self) -> u64 {
        self.unbinder.steps.load(Ordering::Relaxed)
    }

    /// Whether a deleted queue's bindings are still being removed.
    pub fn unbinding_pending(&self) -> bool {
        !self.topology.read().unbinding.is_empty()
    }

    /// Removes everything in the `unbinding` list now (before `name` is declared again, if
    /// it is in it).
    pub(super) fn settle_unbinding(&self, t: &mut Topology, changes: &mut Vec<Change>) {
        if !t.unbinding.is_empty() {
            self.unbind_step(t, usize::MAX, changes);
        }
    }

    /// Removes up to `max` bindings of the `unbinding` list from their exchanges, deleting a
    /// source left without bindings that is auto-delete; true once the list is empty.
    fn unbind_step(&self, t: &mut Topology, max: usize, changes: &mut Vec<Change>) -> bool {
        let mut budget = max;
        while budget > 0 {
            let Some(name) = t.unbinding.keys().next().cloned() else { break };
            let Some(list) = t.unbinding.get_mut(&name) else { break };
            let n = list.len().min(budget);
            let taken: Vec<Unbound> = list.drain(list.len() - n..).collect();
            if list.is_empty() {
                t.unbinding.remove(&name);
            }
            budget -= n;
            let dest = Destination::Queue(name);
            for (source, key, args) in taken {
                let Some(x) = t.exchanges.get_mut(&source) else { continue };
                // Only a binding really removed can leave its source empty (an exchange
                // declared again since has none of these).
                if x.unbind(&dest, &key, &args) && x.auto_delete && x.binding_count() == 0 {
                    self.remove_exchange(t, &source, changes);
                }
            }
        }
        t.unbinding.is_empty()
    }
}

impl TimerTarget for VHost {
    /// The unbinding timer: one step, re-armed for now while bindings are left.
    fn on_timer(&self, id: TimerId, now_ms: u64) {
        if !self.unbind_deleted()
            && let Some(services) = self.services.get()
        {
            services.timers.reschedule(id, now_ms);
        }
    }
}
