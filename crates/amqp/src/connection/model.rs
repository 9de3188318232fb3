//! Exchange and queue methods, `basic.qos`, `confirm.select`, `tx.select` and
//! `channel.flow`: the parts of a channel that change topology or channel settings.

use std::sync::atomic::Ordering;

use lepus_broker::command::{Applied, Binding, Command, Issuer};
use lepus_broker::exchange::Destination;
use lepus_broker::vhost::{ExchangeDeclare as XDeclare, QueueDeclare as QDeclare};

use super::publish::REPLY_TO;
use super::*;
use crate::error::{ChannelError, precondition};
use crate::names::random_name;

impl Connection {
    pub(super) fn vhost_arc(&self) -> Result<Arc<VHost>, Fail> {
        self.publisher.as_ref().map(|p| p.vhost().clone()).ok_or_else(super::publish::no_vhost)
    }

    /// Runs a topology command on this connection's vhost (the broker's one command path), as
    /// this connection's user.
    fn execute(&mut self, command: Command) -> Result<Applied, Fail> {
        let vhost = self.vhost_arc()?;
        let connection_id = self.id;
        Ok(vhost.execute(Issuer { connection_id, access: self.access() }, command)?)
    }

    /// Runs `command` and answers `ok`, unless the client asked for no answer.
    fn command_ok(&mut self, channel: u16, command: Command, no_wait: bool, ok: impl Into<Method>) -> Result<(), Fail> {
        self.execute(command)?;
        if !no_wait {
            self.send(channel, ok);
        }
        Ok(())
    }

    /// Runs a command that removes messages; returns how many.
    fn removed(&mut self, command: Command) -> Result<u32, Fail> {
        match self.execute(command)? {
            Applied::Removed(n) => Ok(n),
            other => Err(ConnectionError::Internal(format!("expected a count, applied {other:?}")).into()),
        }
    }

    pub(super) fn chan(&mut self, channel: u16) -> Result<&mut Channel, Fail> {
        self.channels
            .get_mut(&channel)
            .ok_or_else(|| ConnectionError::Internal(format!("channel {channel} vanished")).into())
    }

    /// A queue name from a method: '' means the channel's most recently declared queue.
    pub(super) fn queue_name(&mut self, channel: u16, name: ShortStr) -> Result<ShortStr, Fail> {
        if !name.is_empty() {
            return Ok(name);
        }
        self.chan(channel)?
            .last_queue
            .clone()
            .ok_or_else(|| ChannelError::NotFound("no previously declared queue".into()).into())
    }

    pub(super) fn exchange_declare(&mut self, channel: u16, m: ExchangeDeclare) -> Result<(), Fail> {
        let d = XDeclare {
            name: m.exchange,
            kind: m.kind.to_string(),
            passive: m.passive,
            durable: m.durable,
            auto_delete: m.auto_delete,
            internal: m.internal,
            arguments: m.arguments,
        };
        self.command_ok(channel, Command::DeclareExchange(d), m.no_wait, ExchangeDeclareOk {})
    }

    pub(super) fn exchange_delete(&mut self, channel: u16, m: ExchangeDelete) -> Result<(), Fail> {
        self.command_ok(
            channel,
            Command::DeleteExchange { name: m.exchange, if_unused: m.if_unused },
            m.no_wait,
            ExchangeDeleteOk {},
        )
    }

    pub(super) fn exchange_bind(&mut self, channel: u16, m: ExchangeBind) -> Result<(), Fail> {
        let destination = Destination::Exchange(m.destination);
        let b = Binding { source: m.source, destination, routing_key: m.routing_key, arguments: m.arguments };
        self.command_ok(channel, Command::Bind(b), m.no_wait, ExchangeBindOk {})
    }

    pub(super) fn exchange_unbind(&mut self, channel: u16, m: ExchangeUnbind) -> Result<(), Fail> {
        let destination = Destination::Exchange(m.destination);
        let b = Binding { source: m.source, destination, routing_key: m.routing_key, arguments: m.arguments };
        self.command_ok(channel, Command::Unbind(b), m.no_wait, ExchangeUnbindOk {})
    }

    pub(super) fn queue_declare(&mut self, channel: u16, m: QueueDeclare) -> Result<(), Fail> {
        if m.queue.as_bytes().starts_with(REPLY_TO.as_bytes()) {
            return self.declare_reply_to(channel, m);
        }
        let server_named = m.queue.is_empty() && !m.passive;
        let name = match (m.queue.is_empty(), m.passive) {
            (true, true) => self.queue_name(channel, m.queue)?,
            (true, false) => ShortStr::truncating(&random_name("amq.gen-")),
            (false, _) => m.queue,
        };
        let d = QDeclare {
            name: name.clone(),
            server_named,
            passive: m.passive,
            durable: m.durable,
            exclusive: m.exclusive,
            auto_delete: m.auto_delete,
            arguments: m.arguments,
        };
        let Applied::Queue { messages: message_count, consumers: consumer_count, .. } =
            self.execute(Command::DeclareQueue(d))?
        else {
            return Err(ConnectionError::Internal("queue.declare applied without a queue".into()).into());
        };
        self.chan(channel)?.last_queue = Some(name.clone());
        if !m.no_wait {
            self.send(channel, QueueDeclareOk { queue: name, message_count, consumer_count });
        }
        Ok(())
    }

    /// A declaration of the direct reply-to pseudo-queue (or a channel's reply-to address) is
    /// a check whatever its flags, as in RabbitMQ: it exists, with its one consumer, or 404.
    fn declare_reply_to(&mut self, channel: u16, m: QueueDeclare) -> Result<(), Fail> {
        let exists = m.queue == REPLY_TO || self.shared.reply_to.lock().contains_key(&m.queue);
        if !exists {
            let vhost = self.vhost_arc()?.name.to_string();
            return Err(lepus_broker::BrokerError::not_found("queue", m.queue.to_string(), vhost).into());
        }
        self.chan(channel)?.last_queue = Some(m.queue.clone());
        if !m.no_wait {
            self.send(channel, QueueDeclareOk { queue: m.queue, message_count: 0, consumer_count: 1 });
        }
        Ok(())
    }

    pub(super) fn queue_bind(&mut self, channel: u16, m: QueueBind) -> Result<(), Fail> {
        let destination = Destination::Queue(self.queue_name(channel, m.queue)?);
        let b = Binding { source: m.exchange, destination, routing_key: m.routing_key, arguments: m.arguments };
        self.command_ok(channel, Command::Bind(b), m.no_wait, QueueBindOk {})
    }

    pub(super) fn queue_unbind(&mut self, channel: u16, m: QueueUnbind) -> Result<(), Fail> {
        let destination = Destination::Queue(self.queue_name(channel, m.queue)?);
        let b = Binding { source: m.exchange, destination, routing_key: m.routing_key, arguments: m.arguments };
        self.execute(Command::Unbind(b))?;
        self.send(channel, QueueUnbindOk {});
        Ok(())
    }

    pub(super) fn queue_purge(&mut self, channel: u16, m: QueuePurge) -> Result<(), Fail> {
        let name = self.queue_name(channel, m.queue)?;
        let message_count = self.removed(Command::PurgeQueue { name })?;
        if !m.no_wait {
            self.send(channel, QueuePurgeOk { message_count });
        }
        Ok(())
    }

    pub(super) fn queue_delete(&mut self, channel: u16, m: QueueDelete) -> Result<(), Fail> {
        let name = self.queue_name(channel, m.queue)?;
        let message_count =
            self.removed(Command::DeleteQueue { name, if_unused: m.if_unused, if_empty: m.if_empty })?;
        // A queue with many bindings is unroutable already; the rest of its bindings are
        // removed a step at a time before delete-ok (see `release`).
        let vhost = self.vhost_arc()?;
        if vhost.unbinding_pending() {
            self.release_unbinding(vhost);
        }
        if !m.no_wait {
            self.reply_after_release(super::release::Reply::Method(channel, QueueDeleteOk { message_count }.into()));
        }
        Ok(())
    }

    pub(super) fn basic_qos(&mut self, channel: u16, m: BasicQos) -> Result<(), Fail> {
        if m.prefetch_size != 0 {
            let text = format!("prefetch_size!=0 ({})", m.prefetch_size);
            return Err(ConnectionError::NotImplemented(text).into());
        }
        let ch = self.chan(channel)?;
        if m.global {
            ch.gate.prefetch.store(m.prefetch_count.into(), Ordering::Release);
            self.kick_consumers(channel);
        } else {
            ch.consumer_prefetch = m.prefetch_count.into();
        }
        self.touch_channel(channel);
        self.send(channel, BasicQosOk {});
        Ok(())
    }

    /// Asks the queues of a channel's consumers to assign again (credit or flow reopened).
    pub(super) fn kick_consumers(&mut self, channel: u16) {
        let Some(ch) = self.channels.get(&channel) else { return };
        // Once per queue, however many of the channel's consumers it has.
        let mut queues: Vec<_> = ch.consumers.values().filter_map(|c| c.queue.clone()).collect();
        queues.sort_unstable_by_key(Arc::as_ptr);
        queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for q in queues {
            q.kick();
        }
    }

    pub(super) fn set_flow(&mut self, channel: u16, active: bool) {
        if let Some(ch) = self.channels.get(&channel) {
            ch.gate.paused.store(!active, Ordering::Release);
            if active {
                self.kick_consumers(channel);
            }
        }
    }

    pub(super) fn confirm_select(&mut self, channel: u16, m: ConfirmSelect) -> Result<(), Fail> {
        let ch = self.chan(channel)?;
        if ch.tx.is_some() {
            return Err(precondition("cannot switch from tx to confirm mode"));
        }
        ch.confirms.get_or_insert_default();
        self.touch_channel(channel);
        if !m.no_wait {
            self.send(channel, ConfirmSelectOk {});
        }
        Ok(())
    }

    pub(super) fn tx_select(&mut self, channel: u16) -> Result<(), Fail> {
        let ch = self.chan(channel)?;
        if ch.confirms.is_some() {
            return Err(precondition("cannot switch from confirm to tx mode"));
        }
        ch.tx.get_or_insert_default();
        self.touch_channel(channel);
        self.send(channel, TxSelectOk {});
        Ok(())
    }
}
