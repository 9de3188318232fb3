//! Publishing: assembling `basic.publish` + content header + body frames into a message,
//! checking it (size, `user_id`, `CC`/`BCC`, direct reply-to), routing it to queues,
//! `basic.return` for unroutable mandatory messages, publisher confirms (coalesced into one
//! `basic.ack multiple=true` per channel per input batch) and transactions.

use bytes::Bytes;
use lepus_broker::args::type_name;
use lepus_broker::queue::Enqueued;
use lepus_broker::{Message, MessageBuilder};
use lepus_protocol::content::{ContentHeader, FLAG_HEADERS, FLAG_REPLY_TO, FLAG_USER_ID};
use lepus_protocol::fast::{write_ack, write_nack, write_return};
use lepus_protocol::frame::{write_body, write_content_header};
use lepus_protocol::{FieldValue, ProtocolError};

use super::*;
use crate::channel::{Assembling, Publish};
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
        let size_max = self.shared.config.message_size_max;
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
        let publish = Publish { method, header, message: builder.finish() };
        self.complete_publish(channel, publish).map_err(tag_publish)
    }

    fn complete_publish(&mut self, channel: u16, publish: Publish) -> Result<(), Fail> {
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
                tx.publishes.push(publish);
            }
            return Ok(());
        }
        self.route_publish(channel, publish)
    }

    /// Routes one complete message, writes a return if it was unroutable and mandatory, and
    /// records its confirm.
    pub(super) fn route_publish(&mut self, channel: u16, p: Publish) -> Result<(), Fail> {
        let vhost = self.vhost_arc()?;
        let confirm_seq = self.chan(channel)?.confirms.as_mut().map(|c| {
            c.last_published += 1;
            c.last_published
        });
        let checked = self.check_properties(channel, &p.header)?;
        let exchange = p.method.exchange.as_bytes();
        let routing_key = p.method.routing_key.as_bytes();
        let message = match &checked.raw_properties {
            // Rewritten properties (reply_to, BCC) need a new buffer; the common case does not.
            Some(raw) => {
                Arc::new(Message::with_raw_properties(exchange, routing_key, raw, &p.header, p.message.body()))
            }
            None => Arc::new(p.message),
        };
        let single = [routing_key];
        let with_extra: Vec<&[u8]>;
        let keys: &[&[u8]] = if checked.extra_keys.is_empty() {
            &single
        } else {
            with_extra = single.into_iter().chain(checked.extra_keys.iter().map(|k| k.as_ref())).collect();
            &with_extra
        };

        let mut routed = false;
        let mut rejected = false;
        if exchange.is_empty() && routing_key.starts_with(REPLY_TO_PREFIX) {
            routed = self.deliver_reply(&p.method.routing_key, &message);
        } else {
            let mut queues = std::mem::take(&mut self.routed);
            queues.clear();
            let routing = vhost.route(exchange, keys, checked.headers.as_ref(), &mut queues);
            if let Err(e) = routing {
                self.routed = queues;
                return Err(e.into());
            }
            for q in &queues {
                match q.publish(message.clone()) {
                    Enqueued::Yes => routed = true,
                    Enqueued::Congested => {
                        routed = true;
                        self.congested = Some(q.clone());
                    }
                    Enqueued::Rejected => rejected = true,
                    Enqueued::Gone => {}
                }
            }
            queues.clear();
            self.routed = queues;
        }
        if !routed && !rejected && p.method.mandatory {
            write_return(&mut self.out, channel, NO_ROUTE, b"NO_ROUTE", exchange, routing_key);
            self.write_content(channel, &message);
        }
        if let Some(seq) = confirm_seq {
            if rejected {
                self.flush_channel_confirms(channel, seq - 1);
                write_nack(&mut self.out, channel, seq, false);
                if let Some(c) = self.channels.get_mut(&channel).and_then(|ch| ch.confirms.as_mut()) {
                    c.acked_through = seq;
                }
            } else if !self.confirms_due.contains(&channel) {
                self.confirms_due.push(channel);
            }
        }
        Ok(())
    }

    /// Appends a message's content header and body frames.
    pub(super) fn write_content(&mut self, channel: u16, message: &Message) {
        write_content_header(&mut self.out, channel, message.body().len() as u64, message.raw_properties());
        write_body(&mut self.out, channel, message.body(), self.frame_max);
    }

    /// Direct reply-to: hands the message straight to the consuming channel, if it exists.
    fn deliver_reply(&mut self, address: &ShortStr, message: &lepus_broker::MessageRef) -> bool {
        let target = self.shared.reply_to.lock().get(address).cloned();
        let Some(target) = target else { return false };
        let delivery = lepus_broker::Delivery {
            channel: target.channel,
            consumer_tag: target.consumer_tag,
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
    fn check_properties(&mut self, channel: u16, header: &ContentHeader) -> Result<Checked, Fail> {
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
            for key in ["CC", "BCC"] {
                match headers.get(key) {
                    None => {}
                    Some(FieldValue::Array(items)) => {
                        for item in items {
                            if let Some(b) = item.as_bytes() {
                                checked.extra_keys.push(Bytes::copy_from_slice(b));
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

    /// Sends the pending confirms of every channel that published in this input batch.
    pub(super) fn flush_confirms(&mut self) {
        let due = std::mem::take(&mut self.confirms_due);
        for &channel in &due {
            let through = self.channels.get(&channel).and_then(|ch| ch.confirms.as_ref()).map(|c| c.last_published);
            if let Some(through) = through {
                self.flush_channel_confirms(channel, through);
            }
        }
        self.confirms_due = due;
        self.confirms_due.clear();
    }

    /// Acknowledges every publish up to `through` not yet acknowledged, in one frame.
    fn flush_channel_confirms(&mut self, channel: u16, through: u64) {
        let Some(c) = self.channels.get_mut(&channel).and_then(|ch| ch.confirms.as_mut()) else { return };
        if through > c.acked_through {
            let multiple = through - c.acked_through > 1;
            c.acked_through = through;
            write_ack(&mut self.out, channel, through, multiple);
        }
    }

    pub(super) fn tx_commit(&mut self, channel: u16) -> Result<(), Fail> {
        let ch = self.chan(channel)?;
        let Some(tx) = ch.tx.as_mut() else { return Err(precondition("channel is not transactional")) };
        let publishes = std::mem::take(&mut tx.publishes);
        let settles = std::mem::take(&mut tx.settles);
        for p in publishes {
            self.route_publish(channel, p)?;
        }
        for (kind, unacked, tag) in settles {
            self.apply_settles(channel, kind, vec![(tag, unacked)]);
        }
        self.send(channel, TxCommitOk {});
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
        self.send(channel, TxRollbackOk {});
        Ok(())
    }
}

/// What [`Connection::check_properties`] found.
#[derive(Default)]
struct Checked {
    /// Routing keys from `CC` and `BCC`.
    extra_keys: Vec<Bytes>,
    /// The message's headers, for headers exchanges.
    headers: Option<FieldTable>,
    /// Replacement properties (reply_to rewritten, BCC removed).
    raw_properties: Option<Bytes>,
}
