//! Unbinding a deleted queue a step at a time. A queue with more than [`UNBIND_STEP_MAX`]
//! bindings leaves its vhost at once (from then it is unroutable: routing skips a binding to
//! a queue the vhost does not hold), and its bindings move to the topology's `unbinding` list;
//! whoever deleted it removes them from their exchanges [`UNBIND_STEP_MAX`] at a time
//! ([`VHost::unbind_deleted`]), the topology lock released between steps, so neither the lock
//! nor a runtime worker is held for the whole of 100,000 bindings.
//!
//! Bindings in the list route nowhere and are not listed. Only a queue declared again under
//! the same name could meet them (it would inherit them): declaring it removes them all first,
//! as does deleting an exchange `if-unused` (which counts bindings).

use lepus_protocol::{FieldTable, ShortStr};
use lepus_store::meta::Change;

use super::{Topology, VHost};
use crate::exchange::Destination;

/// Bindings of a deleted queue removed from their exchanges per step.
pub const UNBIND_STEP_MAX: usize = 4096;

/// A binding waiting to be removed: (source exchange, routing key, arguments).
pub(super) type Unbound = (ShortStr, ShortStr, FieldTable);

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
        // Only exchanges auto-deleted in cascade: a failure is logged by `persist` (they come
        // back, unbound, after a restart).
        let _ = self.persist(&changes);
        done
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
