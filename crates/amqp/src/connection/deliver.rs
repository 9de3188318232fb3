//! Consuming: `basic.consume`/`cancel`/`get`, draining the outlet into `basic.deliver`
//! frames (delivery tags assigned in send order), acknowledgements (`ack`, `nack`, `reject`,
//! `recover`) and the release of a channel's consumers and unacknowledged deliveries.

use lepus_broker::queue::ConsumerSpec;
use lepus_broker::stats::Stat;
use lepus_broker::{ConsumerId, Delivery, Durable, QueueRef};
use lepus_protocol::fast::write_deliver;

use super::publish::REPLY_TO;
use super::*;
use crate::channel::{ConsumerInfo, Settle, Unacked};
use crate::connection::Watch;
use crate::context::ReplyTarget;
use crate::error::precondition;
use crate::names::random_name;

/// Deliveries of one queue and consumer settled together: (queue, consumer, (seq, message)s).
type SettleGroup = (QueueRef, Option<ConsumerId>, Vec<(u64, lepus_broker::MessageRef)>);

impl Connection {
    pub(super) fn basic_consume(&mut self, channel: u16, m: BasicConsume) -> Result<(), Fail> {
        let tag =
            if m.consumer_tag.is_empty() { ShortStr::truncating(&random_name("amq.ctag-")) } else { m.consumer_tag };
        if self.chan(channel)?.consumers.contains_key(&tag) {
            return Err(ConnectionError::NotAllowed(format!("attempt to reuse consumer tag '{tag}'")).into());
        }
        self.check_consumer_max(channel)?;
        if m.queue == REPLY_TO {
            return self.consume_reply_to(channel, tag, m.no_ack, m.no_wait);
        }
        let name = self.queue_name(channel, m.queue)?;
        self.access().check(Permission::Read, Resource::Queue, name.as_bytes())?;
        let queue = self.vhost_arc()?.queue(&name, self.id)?;
        let priority = m.arguments.get("x-priority").and_then(|v| v.as_i64()).unwrap_or(0);
        let id = self.shared.broker.connections().next_consumer_id();
        let outlet = self.outlet.clone();
        let ch = self.chan(channel)?;
        let spec = ConsumerSpec {
            id,
            outlet,
            ack_required: !m.no_ack,
            prefetch: ch.consumer_prefetch,
            gate: ch.gate.clone(),
            priority,
            exclusive: m.exclusive,
        };
        queue.consume(spec)?;
        self.add_consumer(channel, tag.clone(), ConsumerInfo { queue: Some(queue), id })?;
        // Deliveries the queue just assigned sit in the outlet and are written after this.
        if !m.no_wait {
            self.send(channel, BasicConsumeOk { consumer_tag: tag });
        }
        Ok(())
    }

    /// `consumer_max_per_channel`: a channel at the limit gets no more consumers, and the
    /// connection is closed with 530 as RabbitMQ closes it.
    fn check_consumer_max(&mut self, channel: u16) -> Result<(), Fail> {
        let max = self.shared.limits.consumer_max_per_channel;
        if max == 0 || self.chan(channel)?.consumers.len() < max {
            return Ok(());
        }
        tracing::warn!(connection = self.id, peer = %self.peer, channel, consumer_max_per_channel = max, "a channel reached consumer_max_per_channel: closing the connection");
        Err(ConnectionError::NotAllowed(format!("reached maximum ({max}) of consumers per channel")).into())
    }

    /// Consuming from `amq.rabbitmq.reply-to`: the channel gets a private address that
    /// publishers reach through the default exchange.
    fn consume_reply_to(&mut self, channel: u16, tag: ShortStr, no_ack: bool, no_wait: bool) -> Result<(), Fail> {
        if !no_ack {
            return Err(precondition("reply consumer cannot acknowledge"));
        }
        if self.chan(channel)?.reply_to.is_some() {
            return Err(precondition("reply consumer already set"));
        }
        let address = ShortStr::truncating(&random_name("amq.rabbitmq.reply-to."));
        let id = self.shared.broker.connections().next_consumer_id();
        let target = ReplyTarget { outlet: self.outlet.clone(), consumer: id };
        self.shared.reply_to.lock().insert(address.clone(), target);
        self.chan(channel)?.reply_to = Some((address, tag.clone()));
        self.add_consumer(channel, tag.clone(), ConsumerInfo { queue: None, id })?;
        if !no_wait {
            self.send(channel, BasicConsumeOk { consumer_tag: tag });
        }
        Ok(())
    }

    /// Enters a consumer in its channel and in this connection's routes.
    fn add_consumer(&mut self, channel: u16, tag: ShortStr, info: ConsumerInfo) -> Result<(), Fail> {
        let route = ConsumerRoute { channel, tag: tag.clone(), live: true };
        self.consumer_routes.insert(info.id, route);
        let ch = self.chan(channel)?;
        ch.consumers.insert(tag, info);
        ch.publish_consumers();
        self.touch_channel(channel);
        Ok(())
    }

    pub(super) fn basic_cancel(&mut self, channel: u16, m: BasicCancel) -> Result<(), Fail> {
        let cancelled = self.cancel_consumer(channel, &m.consumer_tag);
        // What the queue assigned before the cancel is written before cancel-ok (or, past
        // the cancel, requeued); then the consumer's route is forgotten.
        self.drain_outlet();
        if let Some(id) = cancelled {
            self.consumer_routes.remove(&id);
        }
        // Requeued deliveries gave channel-wide credit back: other consumers may use it.
        if self.channels.get(&channel).is_some_and(|ch| ch.gate.prefetch.load(std::sync::atomic::Ordering::Acquire) > 0)
        {
            self.kick_consumers(channel);
        }
        if !m.no_wait {
            self.send(channel, BasicCancelOk { consumer_tag: m.consumer_tag });
        }
        Ok(())
    }

    /// Detaches a consumer from its queue (auto-deleting the queue if it was the last). What
    /// the queue had already assigned to it is requeued when the outlet is next drained,
    /// after which the caller forgets its route. Returns the consumer's id.
    pub(super) fn cancel_consumer(&mut self, channel: u16, tag: &ShortStr) -> Option<ConsumerId> {
        let ch = self.channels.get_mut(&channel)?;
        let info = ch.consumers.remove(tag)?;
        ch.publish_consumers();
        if ch.tally.touch() {
            self.channels_due.push(channel);
        }
        if let Some(route) = self.consumer_routes.get_mut(&info.id) {
            route.live = false;
        }
        match info.queue {
            Some(queue) => {
                if queue.cancel(info.id)
                    && let Some(p) = &self.publisher
                {
                    p.vhost().remove_queue(&queue);
                }
            }
            None => {
                if let Some((address, _)) = ch.reply_to.take() {
                    self.shared.reply_to.lock().remove(&address);
                }
            }
        }
        Some(info.id)
    }

    /// `basic.ack` / `nack` / `reject`: settles one delivery, or with `multiple` every one
    /// up to `delivery_tag` (0 = all).
    pub(super) fn settle(&mut self, channel: u16, delivery_tag: u64, multiple: bool, kind: Settle) -> Result<(), Fail> {
        let ch = self.chan(channel)?;
        let unknown = || precondition(format!("unknown delivery tag {delivery_tag}"));
        let taken: Vec<(u64, Unacked)> = if multiple && delivery_tag == 0 {
            ch.forget_timed_out_through(0);
            std::mem::take(&mut ch.unacked).into_iter().collect()
        } else if multiple {
            let timed_out = ch.forget_timed_out_through(delivery_tag);
            if !timed_out && !ch.unacked.contains_key(&delivery_tag) {
                return Err(unknown());
            }
            let rest = ch.unacked.split_off(&(delivery_tag + 1));
            std::mem::replace(&mut ch.unacked, rest).into_iter().collect()
        } else {
            match ch.unacked.remove(&delivery_tag) {
                Some(unacked) => vec![(delivery_tag, unacked)],
                None if ch.timed_out.remove(&delivery_tag) => {
                    tracing::debug!(
                        connection = self.id,
                        channel,
                        delivery_tag,
                        "ignoring a settle of a delivery taken back by its consumer timeout"
                    );
                    return Ok(());
                }
                None => return Err(unknown()),
            }
        };
        if ch.tally.touch() {
            self.channels_due.push(channel);
        }
        let Some(ch) = self.channels.get_mut(&channel) else { return Ok(()) };
        if let Some(tx) = ch.tx.as_mut() {
            tx.settles.extend(taken.into_iter().map(|(tag, u)| (kind, u, tag)));
        } else {
            self.apply_settles(channel, kind, taken);
        }
        self.timeout_settled(channel);
        Ok(())
    }

    /// Applies acks, requeues or discards, returning consumer and channel credit. Returns
    /// what makes the removals durable.
    pub(super) fn apply_settles(&mut self, channel: u16, kind: Settle, taken: Vec<(u64, Unacked)>) -> Durable {
        let mut durable = Durable::NOW;
        if taken.is_empty() {
            return durable;
        }
        // Group consecutive deliveries of the same queue and consumer.
        let mut groups: Vec<SettleGroup> = Vec::new();
        let mut consumer_count = 0u32;
        for (_, u) in taken {
            consumer_count += u.consumer.is_some() as u32;
            match groups.last_mut() {
                Some((q, consumer, items)) if Arc::ptr_eq(q, &u.queue) && *consumer == u.consumer => {
                    items.push((u.seq, u.message))
                }
                _ => groups.push((u.queue, u.consumer, vec![(u.seq, u.message)])),
            }
        }
        if kind == Settle::Ack {
            for (queue, _, items) in &groups {
                self.count_at(Some(&**queue), Stat::Acked, items.len() as u64);
            }
        }
        let acked: u64 =
            if kind == Settle::Ack { groups.iter().map(|(_, _, items)| items.len() as u64).sum() } else { 0 };
        let gate = match self.channels.get_mut(&channel) {
            Some(ch) => {
                if (acked > 0 && ch.tally.count(ChannelStat::Ack, acked)) || ch.tally.touch() {
                    self.channels_due.push(channel);
                }
                Some(ch.gate.clone())
            }
            None => None,
        };
        if let Some(gate) = &gate {
            gate.release(consumer_count);
        }
        for (queue, consumer, items) in groups {
            if kind == Settle::Requeue {
                queue.requeue(items, consumer);
                continue;
            }
            // Acked or discarded (dead-lettered first, if the queue says so): gone from the queue
            // (and its log) for good.
            let gone = match kind {
                Settle::Discard => queue.discard(consumer, &items),
                _ => queue.ack(consumer, items.iter().map(|(seq, _)| *seq)),
            };
            durable = durable.and(gone);
        }
        if gate.is_some_and(|g| g.prefetch.load(std::sync::atomic::Ordering::Acquire) > 0) {
            self.kick_consumers(channel);
        }
        durable
    }

    pub(super) fn basic_recover(&mut self, channel: u16, requeue: bool) -> Result<(), Fail> {
        if !requeue {
            return Err(ConnectionError::NotImplemented("requeue=false".into()).into());
        }
        // Requeued as a closing channel's are: in pieces if there are many, their queues
        // delivering nothing (and gets waiting) until the last is back (see `release`). The
        // requeue is decided now, so recover-ok goes at once; input waits for the pieces.
        let unacked = std::mem::take(&mut self.chan(channel)?.unacked);
        self.release_unacked(channel, unacked.into_values().collect());
        self.timeout_settled(channel);
        self.touch_channel(channel);
        Ok(())
    }

    /// Encodes what queues assigned to this connection, in order, until the output holds
    /// [`Connection::encode_limit`]: what is left waits in the
    /// backlog for the output to drain, so a consumer that reads slowly holds messages, not
    /// encoded frames. Deliveries to consumers no longer live (cancelled, channel closed)
    /// are requeued at once wherever they are in the backlog.
    pub(super) fn drain_outlet(&mut self) {
        let mut items = std::mem::take(&mut self.backlog);
        self.outlet.drain_into(&mut items);
        let limit = self.encode_limit();
        // The consumer the previous delivery went to, with its channel and tag: runs of
        // deliveries to one consumer (the common case) skip the lookups. A consumer's route
        // changes during a drain only through its own cancellation, which no delivery to it
        // follows.
        let mut live: Option<(ConsumerId, u16, ShortStr)> = None;
        let now_ms = if items.is_empty() { 0 } else { self.shared.broker.clock().now_ms() };
        // What is not encoded now, in order.
        let mut rest = std::mem::take(&mut self.drained);
        {
            let mut iter = items.drain(..);
            while let Some(item) = iter.next() {
                if self.out_len() >= limit {
                    rest.push(item);
                    rest.extend(iter);
                    break;
                }
                match item {
                    Outbound::Deliver(d) => self.deliver(d, now_ms, &mut live),
                    Outbound::ConsumerCancelled(id) => {
                        live = None;
                        self.on_consumer_cancelled(id);
                    }
                }
            }
        }
        if !rest.is_empty() {
            self.requeue_backlog_not_live(&mut rest);
        }
        // Both vectors keep their capacity: a drain allocates nothing.
        self.drained = items;
        self.backlog = rest;
        let mut pending = std::mem::take(&mut self.watch_pending);
        for channel in pending.drain(..) {
            self.watch_timeout(channel);
        }
        self.watch_pending = pending;
    }

    /// Whether deliveries wait in the backlog for the output to drain.
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Requeues the backlog's deliveries to consumers that are no longer live, keeping the
    /// rest in order.
    #[cold]
    fn requeue_backlog_not_live(&mut self, items: &mut Vec<Outbound>) {
        let mut kept = Vec::with_capacity(items.len());
        for item in items.drain(..) {
            match item {
                Outbound::Deliver(d) if self.live_route(d.consumer).is_none() => self.requeue_undelivered(d),
                other => kept.push(other),
            }
        }
        *items = kept;
    }

    /// The queue went away: the consumer is gone, and the client is told if it asked to be.
    fn on_consumer_cancelled(&mut self, id: ConsumerId) {
        let Some(route) = self.consumer_routes.remove(&id) else { return };
        let removed = route.live
            && self
                .channels
                .get_mut(&route.channel)
                .filter(|ch| ch.phase == ChannelPhase::Open)
                .and_then(|ch| ch.consumers.remove(&route.tag).map(|_| ch.publish_consumers()))
                .is_some();
        if removed {
            self.touch_channel(route.channel);
            self.notify_cancelled(route.channel, route.tag);
        }
    }

    /// The broker cancelled a consumer: the client is told if it asked to be
    /// (`consumer_cancel_notify`).
    pub(super) fn notify_cancelled(&mut self, channel: u16, consumer_tag: ShortStr) {
        let notify = self.client_capabilities.get("consumer_cancel_notify").and_then(|v| v.as_bool());
        if notify == Some(true) {
            self.send(channel, BasicCancel { consumer_tag, no_wait: true });
        }
    }

    /// Where a delivery to `id` goes: its channel and tag, if the consumer is live and its
    /// channel open.
    fn live_route(&self, id: ConsumerId) -> Option<(u16, ShortStr)> {
        let route = self.consumer_routes.get(&id).filter(|r| r.live)?;
        let open = self.channels.get(&route.channel).is_some_and(|ch| ch.phase == ChannelPhase::Open);
        open.then(|| (route.channel, route.tag.clone()))
    }

    /// Encodes one delivery, or puts it back if its consumer or channel is gone.
    fn deliver(&mut self, d: Delivery, now_ms: u64, live: &mut Option<(ConsumerId, u16, ShortStr)>) {
        if live.as_ref().is_none_or(|(id, _, _)| *id != d.consumer) {
            *live = self.live_route(d.consumer).map(|(channel, tag)| (d.consumer, channel, tag));
        }
        let Some((_, channel, tag)) = live.as_ref() else {
            self.requeue_undelivered(d);
            return;
        };
        let channel = *channel;
        let Some(ch) = self.channels.get_mut(&channel) else {
            debug_assert!(false, "a live route names channel {channel}, which is not open");
            self.requeue_undelivered(d);
            return;
        };
        let delivery_tag = ch.next_delivery_tag;
        ch.next_delivery_tag += 1;
        // The channel's counts: plain adds in its tally, published at the end of this turn.
        let kind = if d.ack_required { ChannelStat::Deliver } else { ChannelStat::DeliverNoAck };
        if ch.tally.count(kind, 1) {
            self.channels_due.push(channel);
        }
        if d.redelivered {
            ch.tally.count(ChannelStat::Redeliver, 1);
        }
        match (&d.queue, d.ack_required) {
            (Some(queue), true) => {
                let unacked = Unacked {
                    queue: queue.clone(),
                    seq: d.seq,
                    message: d.message.clone(),
                    consumer: Some(d.consumer),
                    delivered_at_ms: now_ms,
                };
                ch.unacked.insert(delivery_tag, unacked);
                if ch.watch == Watch::Idle {
                    // Looked at once the drain is done (the timer is armed then).
                    ch.watch = Watch::Armed;
                    self.watch_pending.push(channel);
                }
            }
            // Leaves the queue once written (see `unwritten`).
            (Some(_), false) => {}
            (None, _) => {}
        }
        let queue = d.queue.as_deref();
        self.count_at(queue, Stat::Delivered, 1);
        if !d.ack_required {
            self.count_at(queue, Stat::DeliveredNoAck, 1);
        }
        if d.redelivered {
            self.count_at(queue, Stat::Redelivered, 1);
        }
        let m = &d.message;
        write_deliver(
            &mut self.out,
            channel,
            tag.as_bytes(),
            delivery_tag,
            d.redelivered,
            m.exchange(),
            m.routing_key(),
        );
        self.write_content(channel, m);
        if !d.ack_required
            && let Some(queue) = d.queue
        {
            let end = self.unwritten.stream_end(self.out_len());
            self.unwritten.push(end, channel, (queue, Some(d.consumer), d.seq, d.message));
        }
    }

    /// A delivery to a consumer that was cancelled (or whose channel closed) before it was
    /// written goes back to its queue, with the channel-wide credit it took.
    fn requeue_undelivered(&mut self, d: Delivery) {
        let Some(queue) = d.queue else { return };
        if d.ack_required
            && let Some(route) = self.consumer_routes.get(&d.consumer)
            && let Some(ch) = self.channels.get(&route.channel)
        {
            ch.gate.release(1);
        }
        queue.requeue(vec![(d.seq, d.message)], Some(d.consumer));
    }

    /// Cancels a channel's consumers and requeues its unacknowledged deliveries (in the
    /// order they were delivered), as when the channel or connection closes.
    ///
    /// The order matters to a queue with a single active consumer on this channel: the
    /// channel's gate is paused first, so nothing more is assigned to it; what the outlet
    /// holds for its consumers and its unacked deliveries are requeued while its consumers
    /// are still attached (their queues, paused, hold them); only then are the consumers
    /// cancelled, so the consumer that takes over gets the requeued messages at their
    /// original positions, before later ones (as RabbitMQ's queue does in one step).
    pub(super) fn release_channel_resources(&mut self, channel: u16) {
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        ch.gate.paused.store(true, std::sync::atomic::Ordering::Release);
        ch.assembling = None;
        ch.timer = None;
        ch.watch = Watch::Idle;
        // Confirms and commit-oks still waiting for the store are never sent on this channel.
        ch.commits_waiting.clear();
        if let Some(c) = ch.confirms.as_mut() {
            c.waiting.clear();
        }
        let mut unacked = std::mem::take(&mut ch.unacked);
        if let Some(tx) = ch.tx.as_mut() {
            tx.publishes.clear();
            for (_, u, tag) in std::mem::take(&mut tx.settles) {
                unacked.insert(tag, u);
            }
        }
        let consumers = std::mem::take(&mut ch.consumers);
        ch.publish_consumers();
        let reply_to = ch.reply_to.take();
        // What the outlet holds for these consumers is requeued by this drain (their routes
        // are no longer live), not written: once, rather than taken back by each cancel.
        for info in consumers.values() {
            if let Some(route) = self.consumer_routes.get_mut(&info.id) {
                route.live = false;
            }
        }
        self.drain_outlet();
        // In pieces if there are many (see `release`), before the consumers are cancelled.
        self.release_unacked(channel, unacked.into_values().collect());
        if let Some((address, _)) = reply_to {
            self.shared.reply_to.lock().remove(&address);
        }
        // The consumers are cancelled a step at a time (see `release`); their routes are
        // forgotten after the drain that follows each step.
        for (_, info) in consumers {
            match info.queue {
                Some(queue) => self.release_consumer(info.id, queue),
                None => {
                    self.consumer_routes.remove(&info.id);
                }
            }
        }
        self.release_small();
    }
}
