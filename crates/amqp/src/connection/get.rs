//! `basic.get`, and a get that waits for its queue's requeue to come back.
//!
//! A queue held by a requeue in pieces (`lepus_broker::queue::RequeueHold`: a channel closed or
//! recovered with many unacknowledged messages) answers a get with `Got::Held`: the next
//! message may still be on its way back. The get is kept, input waits unprocessed behind it
//! (so replies stay in order; heartbeats are still read) and the queue wakes the connection
//! when the hold ends, a few turns of the releasing connection's loop later; the get is then
//! asked again. So a get sees the requeue as one step, as in RabbitMQ, and no worker blocks.

use lepus_broker::QueueRef;
use lepus_broker::queue::Got;
use lepus_broker::stats::Stat;
use lepus_protocol::fast::write_get_ok;

use super::*;
use crate::channel::Unacked;
use crate::connection::Watch;

/// A `basic.get` waiting for its queue's requeue hold to end.
pub(super) struct HeldGet {
    channel: u16,
    no_ack: bool,
    queue: QueueRef,
}

impl Connection {
    pub(super) fn basic_get(&mut self, channel: u16, m: BasicGet) -> Result<(), Fail> {
        let name = self.queue_name(channel, m.queue)?;
        self.access().check(Permission::Read, Resource::Queue, name.as_bytes())?;
        let queue = self.vhost_arc()?.queue(&name, self.id)?;
        self.get_from(channel, m.no_ack, queue)
    }

    /// Whether input waits for a held get.
    pub(super) fn get_is_held(&self) -> bool {
        self.held_get.is_some()
    }

    /// Asks a held get's queue again (its hold may have ended; if not, it stays held).
    pub(super) fn retry_held_get(&mut self) {
        let Some(HeldGet { channel, no_ack, queue }) = self.held_get.take() else { return };
        if self.phase != Phase::Running || !self.channels.contains_key(&channel) {
            // The connection is closing: the get is answered by nothing, as any method then.
            return;
        }
        if let Err(e) = self.get_from(channel, no_ack, queue) {
            // (basic.get: class 60, method 70.)
            self.on_exception(e.tag(channel, 60, 70));
        }
    }

    fn get_from(&mut self, channel: u16, no_ack: bool, queue: QueueRef) -> Result<(), Fail> {
        let (entry, remaining) = match queue.get(Some(&self.outlet)) {
            Got::Message(entry, remaining) => (entry, remaining),
            Got::Held => {
                tracing::debug!(connection = self.id, channel, queue = %queue.name.to_string().escape_debug(), "basic.get waits for a requeue in pieces");
                self.held_get = Some(HeldGet { channel, no_ack, queue });
                return Ok(());
            }
            Got::Empty => {
                self.count_at(Some(&*queue), Stat::GetEmpty, 1);
                self.count_channel(channel, ChannelStat::GetEmpty, 1);
                self.send(channel, BasicGetEmpty::default());
                return Ok(());
            }
        };
        self.count_at(Some(&*queue), Stat::Get, 1);
        if no_ack {
            self.count_at(Some(&*queue), Stat::GetNoAck, 1);
        }
        let ch = self.chan(channel)?;
        let tag = ch.next_delivery_tag;
        ch.next_delivery_tag += 1;
        let counted = ch.tally.count(if no_ack { ChannelStat::GetNoAck } else { ChannelStat::Get }, 1);
        if entry.redelivered {
            ch.tally.count(ChannelStat::Redeliver, 1);
        }
        if counted {
            self.channels_due.push(channel);
        }
        let message = entry.message.clone();
        let unwritten = if no_ack {
            // Leaves the queue once written (see `unwritten`).
            Some((queue, entry.seq, entry.message))
        } else {
            let delivered_at_ms = self.shared.broker.clock().now_ms();
            let ch = self.chan(channel)?;
            let unacked = Unacked { queue, seq: entry.seq, message: entry.message, consumer: None, delivered_at_ms };
            ch.unacked.insert(tag, unacked);
            if ch.watch == Watch::Idle {
                self.watch_timeout(channel);
            }
            None
        };
        let (exchange, key) = (message.exchange(), message.routing_key());
        write_get_ok(&mut self.out, channel, tag, entry.redelivered, exchange, key, remaining);
        self.write_content(channel, &message);
        if let Some((queue, seq, message)) = unwritten {
            let end = self.unwritten.stream_end(self.out_len());
            self.unwritten.push(end, channel, (queue, None, seq, message));
        }
        Ok(())
    }
}
