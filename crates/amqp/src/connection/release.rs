//! Large releases a step at a time: the unacknowledged deliveries of closed channels (and of
//! channels that sent `basic.recover`) are requeued [`REQUEUE_STEP_MAX`] per turn of the
//! connection's loop (their queues holding their deliveries, and other connections' gets,
//! until the last piece, see `lepus_broker::queue::RequeueHold`), then the
//! consumers of closed channels are cancelled
//! [`CANCEL_STEP_MAX`] per turn, and a deleted queue's bindings
//! removed [`lepus_broker::vhost::UNBIND_STEP_MAX`] per turn, the task yielding to the runtime
//! between turns, so that closing a channel with 100,000 consumers or deleting a queue with
//! 100,000 bindings does not hold a runtime worker (and every connection waiting on it).
//!
//! While work is pending the connection processes no input, and the replies it owes (the
//! `channel.close-ok`, `connection.close-ok`, `queue.delete-ok` that waited for it) are sent
//! once it is done, in order. A consumer waiting to be cancelled receives nothing in the
//! meantime: its channel's gate is paused (its queue assigns it nothing) and its route is not
//! live (what its outlet held goes back to its queue). A deleted queue is unroutable from the
//! moment it leaves its vhost, before the first step (see `lepus_broker::vhost::unbind`).

use std::collections::VecDeque;
use std::sync::Arc;

use lepus_broker::queue::RequeueHold;
use lepus_broker::{ConsumerId, QueueRef, VHost};
use lepus_protocol::Method;

use super::{Connection, Phase};
use crate::channel::{Settle, Unacked};

/// Consumers cancelled per turn of the connection's loop (a few milliseconds of work).
pub(super) const CANCEL_STEP_MAX: usize = 2048;

/// Unacknowledged deliveries of released channels requeued per turn of the loop.
pub(super) const REQUEUE_STEP_MAX: usize = 4096;

/// What a connection still has to release, and the replies waiting for it.
#[derive(Default)]
pub(super) struct Release {
    /// Unacknowledged deliveries of released channels still to requeue (channel, delivery),
    /// in the order they were delivered, and their queues, held until the last is back.
    requeues: VecDeque<(u16, Unacked)>,
    holds: Vec<RequeueHold>,
    /// Consumers of released channels still attached to their queues.
    consumers: VecDeque<(ConsumerId, QueueRef)>,
    /// A vhost with a deleted queue's bindings still to remove.
    unbinding: Option<Arc<VHost>>,
    /// Sent, in order, when nothing is left.
    replies: Vec<Reply>,
}

/// A reply that waits for the release to end.
pub(super) enum Reply {
    Method(u16, Method),
    /// `connection.close-ok`, after which the connection is closed.
    ConnectionCloseOk,
}

impl Release {
    pub(super) fn is_pending(&self) -> bool {
        !self.requeues.is_empty() || !self.consumers.is_empty() || self.unbinding.is_some()
    }
}

impl Connection {
    /// Queues a consumer of a released channel to be cancelled (see
    /// [`Connection::release_small`]).
    pub(super) fn release_consumer(&mut self, id: ConsumerId, queue: QueueRef) {
        self.release.consumers.push_back((id, queue));
    }

    /// Requeues a released (or recovered) channel's unacknowledged deliveries (in delivery
    /// order): now if
    /// they are one step's worth and nothing waits before them, else a piece per turn, their
    /// queues delivering nothing until the last piece is back.
    pub(super) fn release_unacked(&mut self, channel: u16, unacked: Vec<Unacked>) {
        if self.release.requeues.is_empty() && unacked.len() <= REQUEUE_STEP_MAX {
            self.apply_settles(channel, Settle::Requeue, unacked.into_iter().map(|u| (0, u)).collect());
            return;
        }
        for u in unacked {
            if !self.release.holds.iter().any(|h| std::sync::Arc::ptr_eq(h.queue(), &u.queue)) {
                self.release.holds.push(RequeueHold::new(u.queue.clone()));
            }
            self.release.requeues.push_back((channel, u));
        }
    }

    /// Cancels what is queued now if it is one step's worth (the common case keeps its reply
    /// in the same turn), else leaves it to the loop.
    pub(super) fn release_small(&mut self) {
        if self.release.requeues.is_empty()
            && self.release.unbinding.is_none()
            && self.release.consumers.len() <= CANCEL_STEP_MAX
        {
            self.release_step();
        }
    }

    /// A deleted queue's bindings are still being removed from `vhost`'s exchanges.
    pub(super) fn release_unbinding(&mut self, vhost: Arc<VHost>) {
        self.release.unbinding = Some(vhost);
    }

    /// Sends `reply` now, or once the pending release is done.
    pub(super) fn reply_after_release(&mut self, reply: Reply) {
        if self.release.is_pending() {
            self.release.replies.push(reply);
        } else {
            self.send_reply(reply);
        }
    }

    fn send_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Method(channel, method) => self.send(channel, method),
            Reply::ConnectionCloseOk => {
                self.send(0, lepus_protocol::method::ConnectionCloseOk {});
                self.phase = Phase::Closed;
            }
        }
    }

    /// One step of the pending release; once nothing is left, the waiting replies go out.
    pub(super) fn release_step(&mut self) {
        if !self.release.requeues.is_empty() {
            self.requeue_released(REQUEUE_STEP_MAX);
        } else if !self.release.consumers.is_empty() {
            self.cancel_released(CANCEL_STEP_MAX);
        } else if let Some(vhost) = &self.release.unbinding
            && vhost.unbind_deleted()
        {
            self.release.unbinding = None;
        }
        if !self.release.is_pending() {
            for reply in std::mem::take(&mut self.release.replies) {
                self.send_reply(reply);
            }
        }
    }

    /// Requeues up to `max` unacknowledged deliveries of released channels (each channel's
    /// run in one settle); after the last, their queues deliver again.
    fn requeue_released(&mut self, max: usize) {
        let n = self.release.requeues.len().min(max);
        let mut piece: Vec<(u16, Unacked)> = self.release.requeues.drain(..n).collect();
        while let Some(&(channel, _)) = piece.first() {
            let run = piece.iter().take_while(|(c, _)| *c == channel).count();
            let settles = piece.drain(..run).map(|(_, u)| (0, u)).collect();
            self.apply_settles(channel, Settle::Requeue, settles);
        }
        if self.release.requeues.is_empty() {
            // Dropped: each queue delivers again, the requeued messages first.
            self.release.holds.clear();
        }
    }

    /// Cancels up to `max` released consumers (auto-deleting queues left without consumers);
    /// what their queues had assigned to them is requeued by the drain, after which their
    /// routes are forgotten.
    fn cancel_released(&mut self, max: usize) {
        let n = self.release.consumers.len().min(max);
        let taken: Vec<(ConsumerId, QueueRef)> = self.release.consumers.drain(..n).collect();
        for (id, queue) in &taken {
            if queue.cancel(*id)
                && let Some(p) = &self.publisher
            {
                p.vhost().remove_queue(queue);
            }
        }
        self.drain_outlet();
        for (id, _) in taken {
            self.consumer_routes.remove(&id);
        }
    }

    /// Runs the pending release to its end, yielding between steps (the connection is over).
    pub(super) async fn finish_release(&mut self) {
        while self.release.is_pending() {
            self.release_step();
            tokio::task::yield_now().await;
        }
    }
}
