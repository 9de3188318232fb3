//! Consumer timeout (RabbitMQ's `consumer_timeout`): a channel whose oldest unacknowledged
//! delivery has waited longer than its timeout is closed with 406 PRECONDITION_FAILED, and
//! its unacknowledged deliveries are requeued as with any channel close.
//!
//! The timeout that applies to a delivery is its queue's `x-consumer-timeout` if it has one
//! (0: none), else the broker's `consumer_timeout` (0: none). As in RabbitMQ, only the
//! channel's oldest unacknowledged delivery (lowest delivery tag; `basic.get` ones included)
//! is looked at: it is the first to time out when every delivery has the same timeout.
//!
//! Each channel has at most one timer in the broker's [`TimerService`], created at its first
//! deadline and cancelled when the channel goes. It is armed at the oldest unacknowledged
//! delivery's deadline and re-armed only when it fires: acknowledgements never touch it (a
//! timer that fires after its delivery was acked finds the next oldest and moves to its
//! deadline), so nothing on the delivery or ack path takes the timer lock, except a delivery
//! to a channel whose timer is idle. The timer fires on the timer driver's task: its target
//! only records the channel and wakes the connection, whose own task looks at the channel (in
//! its wake-up and tick branches, like a close request), so channel state stays with its task.
//!
//! What a timeout does is its queue's `x-consumer-timeout-action` (or policy
//! `consumer-timeout-action`): `close-channel`, RabbitMQ's, as above; `cancel-and-requeue` and
//! `cancel-and-dead-letter` leave the channel open and only cancel the consumer the timed-out
//! delivery went to (`basic.cancel` from the server when the client has
//! `consumer_cancel_notify`), taking back its unacknowledged deliveries on the channel
//! (requeued, or dead-lettered with reason `rejected` and dropped without a dead-letter
//! exchange); a timed-out `basic.get` delivery is taken back alone. The taken tags are
//! remembered (bounded, see [`crate::channel::TIMED_OUT_TAGS_MAX`]) so that a late settle of
//! one is ignored rather than closing the channel as an unknown tag.
//!
//! A channel's watch is [`Watch::Idle`] (no timer armed: nothing to watch when last looked),
//! [`Watch::Armed`], or [`Watch::Parked`] (the oldest delivery has no timeout — its queue's is
//! 0 — so nothing can time out until it is settled: settling looks again).

use std::sync::{Arc, Weak};

use lepus_broker::args::ConsumerTimeoutAction;
use lepus_broker::timer::{NEVER, TimerId, TimerService, TimerTarget};
use parking_lot::Mutex;

use super::*;
use crate::channel::{Settle, Unacked};
use crate::error::ChannelError;

/// Channels whose timer fired, waiting for the connection's task; shared with the targets.
pub(super) struct DueChannels {
    channels: Mutex<Vec<u16>>,
    wake: NotifyWake,
}

impl DueChannels {
    pub(super) fn new(notify: Arc<Notify>) -> DueChannels {
        DueChannels { channels: Mutex::new(Vec::new()), wake: NotifyWake(notify) }
    }
}

/// A channel's timer target: runs on the timer driver's task.
struct ChannelTarget {
    channel: u16,
    due: Arc<DueChannels>,
}

impl TimerTarget for ChannelTarget {
    fn on_timer(&self, _id: TimerId, _now_ms: u64) {
        self.due.channels.lock().push(self.channel);
        self.due.wake.wake();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Watch {
    #[default]
    Idle,
    Armed,
    Parked,
}

/// A channel's timer; cancelled when the channel (or its connection) goes.
pub(crate) struct ChannelTimer {
    id: TimerId,
    timers: Arc<TimerService>,
    _target: Arc<dyn TimerTarget>,
}

impl std::fmt::Debug for ChannelTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelTimer").field("id", &self.id).finish()
    }
}

impl Drop for ChannelTimer {
    fn drop(&mut self) {
        self.timers.cancel(self.id);
    }
}

/// What the oldest unacknowledged delivery of a channel says.
enum Oldest {
    None,
    /// Its timeout is off.
    NoTimeout,
    /// It times out once the clock is past `delivered_at_ms + timeout_ms`.
    Due {
        delivered_at_ms: u64,
        timeout_ms: u64,
    },
}

impl Connection {
    /// The timeout of deliveries from `queue`: its `x-consumer-timeout` (or its policy's
    /// `consumer-timeout`), else the broker's; `None` when off.
    fn timeout_of(&self, queue: &lepus_broker::Queue) -> Option<u64> {
        let ms = queue.consumer_timeout_ms().unwrap_or(self.shared.limits.consumer_timeout_ms);
        (ms > 0).then_some(ms)
    }

    fn oldest(&self, channel: u16) -> Oldest {
        let Some((_, u)) = self.channels.get(&channel).and_then(|ch| ch.unacked.first_key_value()) else {
            return Oldest::None;
        };
        match self.timeout_of(&u.queue) {
            None => Oldest::NoTimeout,
            Some(timeout_ms) => Oldest::Due { delivered_at_ms: u.delivered_at_ms, timeout_ms },
        }
    }

    /// Looks at a channel's oldest unacknowledged delivery and sets its watch: the timer at
    /// its deadline (a deadline already past fires at once and closes the channel from the
    /// timer's path), parked, or idle.
    pub(super) fn watch_timeout(&mut self, channel: u16) {
        let deadline_ms = match self.oldest(channel) {
            Oldest::None => {
                self.set_watch(channel, Watch::Idle, NEVER);
                return;
            }
            Oldest::NoTimeout => {
                self.set_watch(channel, Watch::Parked, NEVER);
                return;
            }
            Oldest::Due { delivered_at_ms, timeout_ms } => delivered_at_ms.saturating_add(timeout_ms).saturating_add(1),
        };
        self.set_watch(channel, Watch::Armed, deadline_ms);
    }

    fn set_watch(&mut self, channel: u16, watch: Watch, deadline_ms: u64) {
        let due = self.due_channels.clone();
        let timers = self.shared.broker.timers().clone();
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        ch.watch = watch;
        match &ch.timer {
            Some(timer) => {
                timers.reschedule(timer.id, deadline_ms);
            }
            None if deadline_ms == NEVER => {}
            None => {
                let target: Arc<dyn TimerTarget> = Arc::new(ChannelTarget { channel, due });
                let id = timers.schedule(Arc::downgrade(&target) as Weak<dyn TimerTarget>, deadline_ms);
                ch.timer = Some(ChannelTimer { id, timers, _target: target });
            }
        }
    }

    /// After deliveries were settled on `channel`: a parked watch looks again.
    pub(super) fn timeout_settled(&mut self, channel: u16) {
        if self.channels.get(&channel).is_some_and(|ch| ch.watch == Watch::Parked) {
            self.watch_timeout(channel);
        }
    }

    /// Handles the channels whose timer fired: closes those whose oldest unacknowledged
    /// delivery timed out (RabbitMQ's text), re-arms the others.
    pub(super) fn check_timeouts(&mut self) {
        let due = std::mem::take(&mut *self.due_channels.channels.lock());
        if due.is_empty() {
            return;
        }
        let now_ms = self.shared.broker.clock().now_ms();
        for channel in due {
            let open = self.channels.get(&channel).is_some_and(|ch| ch.phase == ChannelPhase::Open);
            if !open || self.phase != Phase::Running {
                continue;
            }
            match self.oldest(channel) {
                Oldest::Due { delivered_at_ms, timeout_ms } if now_ms.saturating_sub(delivered_at_ms) > timeout_ms => {
                    self.timed_out(channel, timeout_ms)
                }
                _ => self.watch_timeout(channel),
            }
        }
    }

    /// The oldest unacknowledged delivery of `channel` timed out: its queue's action.
    fn timed_out(&mut self, channel: u16, timeout_ms: u64) {
        let Some((&tag, u)) = self.channels.get(&channel).and_then(|ch| ch.unacked.first_key_value()) else { return };
        let (queue, consumer) = (u.queue.clone(), u.consumer);
        let settle = match queue.consumer_timeout_action() {
            ConsumerTimeoutAction::CloseChannel => {
                let text = format!(
                    "delivery acknowledgement on channel {channel} timed out. Timeout value used: {timeout_ms} \
                     ms. This timeout value can be configured, see consumers doc guide to learn more"
                );
                let error = ChannelError::PreconditionFailed(text);
                self.on_exception(Exception::Channel { error, channel, class_id: 0, method_id: 0 });
                return;
            }
            ConsumerTimeoutAction::CancelAndRequeue => Settle::Requeue,
            ConsumerTimeoutAction::CancelAndDeadLetter => Settle::Discard,
        };
        tracing::debug!(
            connection = self.id,
            channel,
            delivery_tag = tag,
            timeout_ms,
            queue = %queue.name.to_string().escape_debug(),
            "delivery acknowledgement timed out: cancelling its consumer"
        );
        self.take_back_timed_out(channel, tag, consumer, settle);
        self.watch_timeout(channel);
    }

    /// Cancels `consumer` (if it is still attached) and settles its unacknowledged deliveries
    /// on `channel` (a `basic.get` delivery: `tag` alone) with `settle`, remembering their tags.
    /// The channel's gate is closed meanwhile, so nothing is assigned to it while they go
    /// back and the queue's next consumer takes them at their places.
    fn take_back_timed_out(&mut self, channel: u16, tag: u64, consumer: Option<ConsumerId>, settle: Settle) {
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        let tags: Vec<u64> = match consumer {
            Some(id) => ch.unacked.iter().filter(|(_, u)| u.consumer == Some(id)).map(|(t, _)| *t).collect(),
            None => vec![tag],
        };
        let taken: Vec<(u64, Unacked)> = tags.iter().filter_map(|t| ch.unacked.remove_entry(t)).collect();
        let forgotten = ch.remember_timed_out(tags);
        if forgotten > 0 {
            tracing::warn!(
                connection = self.id,
                channel,
                forgotten,
                "a channel remembers at most {} timed-out delivery tags: the oldest are forgotten",
                crate::channel::TIMED_OUT_TAGS_MAX
            );
        }
        let gate = ch.gate.clone();
        let was_paused = gate.paused.swap(true, std::sync::atomic::Ordering::AcqRel);
        self.apply_settles(channel, settle, taken);
        let route = consumer.and_then(|id| self.consumer_routes.get(&id).filter(|r| r.live && r.channel == channel));
        if let (Some(id), Some(consumer_tag)) = (consumer, route.map(|r| r.tag.clone())) {
            self.cancel_consumer(channel, &consumer_tag);
            self.drain_outlet();
            self.consumer_routes.remove(&id);
            self.notify_cancelled(channel, consumer_tag);
        }
        if !was_paused {
            gate.paused.store(false, std::sync::atomic::Ordering::Release);
            self.kick_consumers(channel);
        }
    }
}
