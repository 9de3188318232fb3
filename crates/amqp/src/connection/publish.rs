//! Publishing: assembling `basic.publish` + content header + body frames into a message,
//! checking it (size, `user_id`, `CC`/`BCC`, direct reply-to), routing it to queues,
//! `basic.return` for unroutable mandatory messages, publisher confirms (coalesced into one
//! `basic.ack multiple=true` per channel per input batch) and transactions.

use bytes::Bytes;
use lepus_broker::args::{parse_expiration, type_name};
use lepus_broker::stats::Stat;
use lepus_broker::{Durable, HeaderFields, Message, MessageBuilder, MessageHeaders, Outcome, Publish};
use lepus_protocol::content::{ContentHeader, FLAG_HEADERS, FLAG_REPLY_TO, FLAG_USER_ID};
use lepus_protocol::fast::{write_ack, write_nack, write_return};
use lepus_protocol::frame::{write_body, write_content_header};
use lepus_protocol::publish_view::{PublishView, ROUTING_HEADERS};
use lepus_protocol::{FieldValue, ProtocolError};

use super::outbox;
use super::*;
use crate::channel::{Assembled, Assembling};
use crate::error::precondition;

/// The pseudo-queue clients consume from and name in `reply_to` for direct reply-to.
pub(super) const REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Prefix of the per-channel addresses direct reply-to hands out.
pub(super) const REPLY_TO_PREFIX: &[u8] = b"amq.rabbitmq.reply-to.";

impl Connection {
    pub(super) fn basic_publish(&mut self, channel: u16, m: BasicPublish) -> Result<(), Fail> {
        if m.immediate {
            return Err(ConnectionError::NotImplemented("immediate=true".into()).into());
        }
        self.chan(channel)?.assembling = Some(Assembling { method: m, content: None });
        Ok(())
    }

    /// A content header or body frame on a channel that is assembling a publish.
    pub(super) fn on_content(&mut self, channel: u16, frame: Frame) -> Result<(), Exception> {
        let size_max = self.shared.limits.message_size_max;
        let tag_publish = |f: Fail| f.tag(channel, 60, 40);
        let ch = self.chan(channel).map_err(tag_publish)?;
        let Some(asm) = ch.assembling.as_mut() else { return Ok(()) };
        let unexpected = |text: String| -> Exception { tag_publish(ConnectionError::UnexpectedFrame(text).into()) };
        match (frame.frame_type, asm.content.as_mut()) {
            (FrameType::Header, None) => {
                let header = ContentHeader::decode(frame.payload).map_err(|e| match e {
                    ProtocolError::UnknownContentClass(class) => {
                        unexpected(format!("expected content header for class 60, got one for class {class} instead"))
                    }
                    other => tag_publish(ConnectionError::Protocol(other).into()),
                })?;
                if header.body_size > size_max {
                    ch.assembling = None;
                    let text =
                        format!("message size {} is larger than configured max size {size_max}", header.body_size);
                    return Err(tag_publish(precondition(text)));
                }
                let m = &asm.method;
                let builder = MessageBuilder::new(
                    m.exchange.as_bytes(),
                    m.routing_key.as_bytes(),
                    &header.raw_properties,
                    &header,
                );
                asm.content = Some((header, builder));
            }
            (FrameType::Body, Some((header, builder))) => {
                if builder.body_len() + frame.payload.len() as u64 > header.body_size {
                    return Err(unexpected("content body is larger than the size in its header".into()));
                }
                builder.push_body(&frame.payload);
            }
            (FrameType::Header, Some(_)) => {
                return Err(unexpected("expected content body, got non content body frame instead".into()));
            }
            _ => {
                return Err(unexpected(
                    "expected content header for class 60, got non content header frame instead".into(),
                ));
            }
        }
        let complete = asm.content.as_ref().is_some_and(|(h, b)| b.body_len() == h.body_size);
        if !complete {
            return Ok(());
        }
        let Some(Assembling { method, content: Some((header, builder)) }) = ch.assembling.take() else {
            return Ok(());
        };
        let publish = Assembled { method, header, message: builder.finish() };
        self.complete_publish(channel, publish).map_err(tag_publish)
    }

    fn complete_publish(&mut self, channel: u16, publish: Assembled) -> Result<(), Fail> {
        self.check_publish(publish.method.exchange.as_bytes(), publish.method.routing_key.as_bytes())?;
        if self.chan(channel)?.tx.is_some() {
            let vhost = self.vhost_arc()?;
            if !vhost.exchange_exists(publish.method.exchange.as_bytes()) {
                return Err(lepus_broker::BrokerError::not_found(
                    "exchange",
                    publish.method.exchange.to_string(),
                    vhost.name.to_string(),
                )
                .into());
            }
            if let Some(tx) = self.chan(channel)?.tx.as_mut() {
                tx.publishes.push(publish.detached());
            }
            self.touch_channel(channel);
            return Ok(());
        }
        self.route_publish(channel, publish).map(drop)
    }

    /// Routes one complete message, writes a return if it was unroutable and mandatory, and
    /// records its confirm. Returns what makes it durable.
    pub(super) fn route_publish(&mut self, channel: u16, p: Assembled) -> Result<Durable, Fail> {
        let mut checked = self.check_properties(channel, &p.header)?;
        let exchange = p.method.exchange.as_bytes();
        let routing_key = p.method.routing_key.as_bytes();
        let message = match &checked.raw_properties {
            // Rewritten properties (reply_to, BCC) need a new buffer; the common case does not.
            Some(raw) => Message::with_raw_properties(exchange, routing_key, raw, &p.header, p.message.body()),
            None => p.message,
        };
        let message = message.with_bcc_keys(std::mem::take(&mut checked.bcc_keys));
        self.route_message(channel, p.method.mandatory, &checked, Arc::new(message))
    }

    /// A complete ordinary publish read straight from the input buffer (see
    /// [`lepus_protocol::publish_view`]). Returns false, having done nothing, when the channel's
    /// state needs the general path (not open, assembling, transactional, direct reply-to, a
    /// message over the size limit); that path then takes the same frames.
    pub(super) fn publish_view(&mut self, v: &PublishView<'_>) -> bool {
        let Some(ch) = self.channels.get_mut(&v.channel) else { return false };
        if ch.phase != ChannelPhase::Open
            || ch.assembling.is_some()
            || ch.tx.is_some()
            || v.body.len() as u64 > self.shared.limits.message_size_max
            || (v.exchange.is_empty() && v.routing_key.starts_with(REPLY_TO_PREFIX))
            || v.expiration.is_some_and(|e| parse_expiration(e).is_err())
        {
            return false;
        }
        let fields = HeaderFields {
            body_size: v.body.len() as u64,
            delivery_mode: v.delivery_mode,
            priority: v.priority,
            expiration: v.expiration,
        };
        let mut builder = MessageBuilder::with_fields(v.exchange, v.routing_key, v.raw_properties, &fields);
        builder.push_body(v.body);
        let message = Arc::new(builder.finish());
        let checked = Checked { raw_headers: v.headers, ..Checked::default() };
        let routed = self
            .check_publish(v.exchange, v.routing_key)
            .and_then(|()| self.route_message(v.channel, v.mandatory, &checked, message));
        if let Err(f) = routed {
            self.on_exception(f.tag(v.channel, 60, 40));
        }
        true
    }

    /// Write permission on the exchange and, through a topic exchange with a topic permission,
    /// on the routing key (RabbitMQ's checks at `basic.publish`). The common case — the same
    /// exchange as the last publish, permissions unchanged, no topic permissions — is an
    /// atomic load and a comparison.
    fn check_publish(&mut self, exchange: &[u8], routing_key: &[u8]) -> Result<(), Fail> {
        let current = self.access.version() == self.shared.broker.permissions_version();
        if current && self.write_allowed.as_deref() == Some(exchange) && !self.access.has_topic_grants() {
            return Ok(());
        }
        self.access().check(Permission::Write, Resource::Exchange, exchange)?;
        if self.write_allowed.as_deref() != Some(exchange) {
            self.write_allowed = Some(exchange.to_vec());
        }
        if self.access.has_topic_grants() && self.vhost_arc()?.exchange_kind(exchange) == Some("topic") {
            self.access.check_topic(Permission::Write, exchange, routing_key)?;
        }
        Ok(())
    }

    /// Routes a checked message to its queues (or a direct reply-to consumer), writes a
    /// `basic.return` if it went nowhere and was mandatory, and records its confirm (numbered
    /// here, the one place both publish paths meet). Returns what makes it durable.
    fn route_message(
        &mut self,
        channel: u16,
        mandatory: bool,
        checked: &Checked,
        message: lepus_broker::MessageRef,
    ) -> Result<Durable, Fail> {
        let ch = self.chan(channel)?;
        let confirm_seq = ch.confirms.as_mut().map(|c| {
            c.last_published += 1;
            c.last_published
        });
        // Counted before routing: a publish that fails closes its channel, and its record.
        if ch.tally.count(ChannelStat::Publish, 1) {
            self.channels_due.push(channel);
        }
        let (exchange, routing_key) = (message.exchange(), message.routing_key());
        let outcome = if exchange.is_empty() && routing_key.starts_with(REPLY_TO_PREFIX) {
            Outcome { routed: self.deliver_reply(routing_key, &message), ..Outcome::default() }
        } else {
            let publisher = self.publisher.as_mut().ok_or_else(no_vhost)?;
            let publish = Publish {
                message: message.clone(),
                extra_keys: &checked.extra_keys,
                headers: checked.message_headers(),
            };
            let outcome = publisher.publish(publish)?;
            if let Some(q) = &outcome.congested {
                self.congested = Some(q.clone());
            }
            outcome
        };
        self.count(Stat::Published, 1);
        if let Some(info) = &self.info {
            info.sizes.observe(message.body().len() as u64);
        }
        if confirm_seq.is_some() {
            self.count(Stat::PublishedConfirm, 1);
        }
        if outcome.routed {
            self.count(Stat::Routed, 1);
        } else if outcome.is_unroutable() {
            self.count(Stat::Unroutable, 1);
        }
        if outcome.is_unroutable() {
            let unroutable = if mandatory { ChannelStat::ReturnUnroutable } else { ChannelStat::DropUnroutable };
            self.count_channel(channel, unroutable, 1);
        }
        if mandatory && outcome.is_unroutable() {
            self.count(Stat::Returned, 1);
            write_return(&mut self.out, channel, NO_ROUTE, b"NO_ROUTE", exchange, routing_key);
            self.write_content(channel, &message);
        }
        if let Some(seq) = confirm_seq {
            self.record_confirm(channel, seq, &outcome);
        }
        Ok(outcome.durable)
    }

    /// Queues the confirm of publish `seq`: a nack if a queue refused it or the store failed,
    /// else an ack once what it waits for is durable (in order after earlier ones).
    fn record_confirm(&mut self, channel: u16, seq: u64, outcome: &Outcome) {
        let durable = outcome.durable;
        let store_failed = durable.is_pending() && self.shared.broker.durability().failed();
        let Some(c) = self.channels.get_mut(&channel).and_then(|ch| ch.confirms.as_mut()) else { return };
        if outcome.rejected || store_failed {
            // A nack is sent in order, after the acks of everything before it.
            c.waiting.push_back((seq, Durable::NOW, true));
        } else if durable.is_pending() || !c.waiting.is_empty() {
            c.waiting.push_back((seq, durable, false));
        }
        if !self.confirms_due.contains(&channel) {
            self.confirms_due.push(channel);
        }
    }

    /// Appends a message's content header and body frames.
    pub(super) fn write_content(&mut self, channel: u16, message: &Message) {
        let body_len = message.body().len();
        write_content_header(&mut self.out, channel, body_len as u64, message.raw_properties());
        if body_len >= outbox::BODY_BY_REFERENCE_MIN {
            self.sealed.write_body(&mut self.out, channel, &message.body_bytes(), self.frame_max);
        } else {
            write_body(&mut self.out, channel, message.body(), self.frame_max);
        }
    }

    /// Direct reply-to: hands the message straight to the consuming channel, if it exists.
    fn deliver_reply(&mut self, address: &[u8], message: &lepus_broker::MessageRef) -> bool {
        let target = self.shared.reply_to.lock().get(address).cloned();
        let Some(target) = target else { return false };
        let delivery = lepus_broker::Delivery {
            consumer: target.consumer,
            queue: None,
            seq: 0,
            message: message.clone(),
            redelivered: false,
            ack_required: false,
        };
        if target.outlet.push(Outbound::Deliver(delivery)) {
            target.outlet.wake();
        }
        true
    }

    /// Checks and rewrites what routing needs from the properties. Only messages whose
    /// property flags include headers, user_id or reply_to are parsed at all.
    fn check_properties(&mut self, channel: u16, header: &ContentHeader) -> Result<Checked<'static>, Fail> {
        if let Some(expiration) = &header.expiration
            && let Err(why) = parse_expiration(expiration.as_bytes())
        {
            return Err(precondition(format!("invalid expiration '{expiration}': {why}")));
        }
        let raw = &header.raw_properties;
        let flags = u16::from_be_bytes([raw.first().copied().unwrap_or(0), raw.get(1).copied().unwrap_or(0)]);
        let mut checked = Checked::default();
        if flags & (FLAG_HEADERS | FLAG_USER_ID | FLAG_REPLY_TO) == 0 {
            return Ok(checked);
        }
        let mut props = header.properties().map_err(|e| Fail::Connection(ConnectionError::Protocol(e)))?;
        let mut rewritten = false;
        if let Some(user_id) = &props.user_id
            && user_id.as_bytes() != self.user.as_bytes()
            && !self.impersonator
        {
            return Err(precondition(format!(
                "user_id property set to '{user_id}' but authenticated user was '{}'",
                self.user
            )));
        }
        if props.reply_to.as_ref().is_some_and(|r| *r == REPLY_TO) {
            let Some((address, _)) = self.chan(channel)?.reply_to.clone() else {
                return Err(precondition("fast reply consumer does not exist"));
            };
            props.reply_to = Some(address);
            rewritten = true;
        }
        if let Some(headers) = props.headers.as_mut() {
            for key in ROUTING_HEADERS {
                match headers.get(key) {
                    None => {}
                    Some(FieldValue::Array(items)) => {
                        for item in items {
                            if let Some(b) = item.as_bytes() {
                                checked.extra_keys.push(Bytes::copy_from_slice(b));
                                if key == "BCC" {
                                    checked.bcc_keys.push(Bytes::copy_from_slice(b));
                                }
                            }
                        }
                    }
                    Some(other) => {
                        return Err(precondition(format!(
                            "invalid message: {{unacceptable_type_in_header,\"{key}\",{}}}",
                            type_name(other)
                        )));
                    }
                }
            }
            checked.headers = Some(headers.clone());
            if headers.remove("BCC").is_some() {
                rewritten = true;
            }
        }
        if rewritten {
            checked.raw_properties = Some(props.to_raw());
        }
        Ok(checked)
    }

    /// Sends the pending confirms of every channel that published in this input batch, then
    /// makes sure the connection is woken when the store makes more of them durable.
    pub(super) fn flush_confirms(&mut self) {
        let due = std::mem::take(&mut self.confirms_due);
        for &channel in &due {
            self.flush_channel_confirms(channel);
        }
        self.confirms_due = due;
        self.confirms_due.clear();
        self.await_durability();
    }

    /// Acknowledges (or nacks) every publish of the channel that can be, in order: up to the
    /// first one still waiting for the store, coalesced into `multiple=true` acks.
    fn flush_channel_confirms(&mut self, channel: u16) {
        let progress = self.shared.broker.durability().progress();
        let out = &mut self.out;
        let Some(c) = self.channels.get_mut(&channel).and_then(|ch| ch.confirms.as_mut()) else { return };
        let (answered_before, mut nacks) = (c.acked_through, 0);
        let ack_through = |c: &mut crate::channel::Confirms, out: &mut BytesMut, through: u64| {
            if through > c.acked_through {
                write_ack(out, channel, through, through - c.acked_through > 1);
                c.acked_through = through;
            }
        };
        loop {
            match c.waiting.front().copied() {
                None => {
                    let through = c.last_published;
                    ack_through(c, out, through);
                    break;
                }
                Some((seq, durable, nack)) => {
                    if nack || (progress.failed && !progress.covers(durable)) {
                        ack_through(c, out, seq - 1);
                        write_nack(out, channel, seq, false);
                        c.acked_through = seq;
                        nacks += 1;
                    } else if !progress.covers(durable) {
                        ack_through(c, out, seq - 1);
                        break;
                    }
                    c.waiting.pop_front();
                }
            }
        }
        let acked = c.acked_through - answered_before - nacks;
        self.count(Stat::Confirmed, acked);
        if acked > 0 {
            self.count_channel(channel, ChannelStat::Confirm, acked);
        }
    }

    /// Whether anything of this connection waits for the message store.
    pub(super) fn waits_for_store(&self) -> bool {
        self.channels
            .values()
            .any(|ch| !ch.commits_waiting.is_empty() || ch.confirms.as_ref().is_some_and(|c| !c.waiting.is_empty()))
    }

    /// Asks the store to wake this connection after its next commit, if anything waits.
    pub(super) fn await_durability(&mut self) {
        if !self.waits_for_store() {
            return;
        }
        if !self.store_waker.registered.swap(true, std::sync::atomic::Ordering::AcqRel)
            && !self.shared.broker.durability().wake_after_commit(self.store_waker.clone())
        {
            // No storage: nothing ever waits for it.
            self.store_waker.registered.store(false, std::sync::atomic::Ordering::Release);
            return;
        }
        // A commit that finished before we asked would wake nobody: look once more.
        self.on_store_progress();
    }

    /// After a commit: sends the confirms and `tx.commit-ok`s that became durable.
    pub(super) fn on_store_progress(&mut self) {
        let progress = self.shared.broker.durability().progress();
        // A channel being closed answers nothing but close/close-ok; its waits were dropped.
        let channels: Vec<u16> =
            self.channels.iter().filter(|(_, ch)| ch.phase == ChannelPhase::Open).map(|(&n, _)| n).collect();
        for channel in channels {
            self.flush_channel_confirms(channel);
            while let Some(&durable) = self.channels.get(&channel).and_then(|ch| ch.commits_waiting.front()) {
                if progress.covers(durable) {
                    self.channels.get_mut(&channel).map(|ch| ch.commits_waiting.pop_front());
                    self.send(channel, TxCommitOk {});
                } else if progress.failed {
                    if let Some(ch) = self.channels.get_mut(&channel) {
                        ch.commits_waiting.clear();
                    }
                    let error = ConnectionError::Internal("message store failed: transaction not durable".into());
                    self.on_exception(Fail::Connection(error).tag(channel, 90, 20));
                    return;
                } else {
                    break;
                }
            }
        }
    }

    pub(super) fn tx_commit(&mut self, channel: u16) -> Result<(), Fail> {
        let ch = self.chan(channel)?;
        let Some(tx) = ch.tx.as_mut() else { return Err(precondition("channel is not transactional")) };
        let publishes = std::mem::take(&mut tx.publishes);
        let settles = std::mem::take(&mut tx.settles);
        let mut durable = Durable::NOW;
        for p in publishes {
            durable = durable.and(self.route_publish(channel, p)?);
        }
        for (kind, unacked, tag) in settles {
            durable = durable.and(self.apply_settles(channel, kind, vec![(tag, unacked)]));
        }
        // Durable before commit-ok: wait for the store if anything was logged.
        let pending = !self.shared.broker.durability().is_durable(durable);
        let ch = self.chan(channel)?;
        if pending || !ch.commits_waiting.is_empty() {
            ch.commits_waiting.push_back(durable);
            self.await_durability();
        } else {
            self.send(channel, TxCommitOk {});
        }
        self.touch_channel(channel);
        Ok(())
    }

    pub(super) fn tx_rollback(&mut self, channel: u16) -> Result<(), Fail> {
        let ch = self.chan(channel)?;
        let Some(tx) = ch.tx.as_mut() else { return Err(precondition("channel is not transactional")) };
        tx.publishes.clear();
        // Acks, nacks and rejects of the transaction are forgotten: the deliveries are
        // unacknowledged again.
        for (_, unacked, tag) in std::mem::take(&mut tx.settles) {
            ch.unacked.insert(tag, unacked);
        }
        self.touch_channel(channel);
        self.send(channel, TxRollbackOk {});
        Ok(())
    }
}

pub(super) fn no_vhost() -> Fail {
    ConnectionError::Internal("connection has no vhost".into()).into()
}

/// What [`Connection::check_properties`] found.
#[derive(Default)]
struct Checked<'a> {
    /// Routing keys from `CC` and `BCC`.
    extra_keys: Vec<Bytes>,
    /// The message's headers, for headers exchanges.
    headers: Option<FieldTable>,
    /// The borrowed publish path's headers table, not decoded (see [`MessageHeaders::Raw`]).
    raw_headers: Option<&'a [u8]>,
    /// Replacement properties (reply_to rewritten, BCC removed).
    raw_properties: Option<Bytes>,
    /// The `BCC` keys, which the message keeps for dead-lettering (its header goes).
    bcc_keys: Vec<Bytes>,
}

impl Checked<'_> {
    /// The headers as routing takes them: decoded by the general path, raw from the view.
    fn message_headers(&self) -> MessageHeaders<'_> {
        match (&self.headers, self.raw_headers) {
            (Some(table), _) => MessageHeaders::Decoded(table),
            (None, Some(raw)) => MessageHeaders::Raw(raw),
            (None, None) => MessageHeaders::None,
        }
    }
}
