//! The one way topology changes: a typed [`Command`], executed by [`VHost::execute`].
//!
//! AMQP's exchange, queue and binding methods build commands today; the management API, the
//! CLI and definitions import build the same commands next, so every rule (names, reserved
//! prefixes, equivalence, exclusivity, what is stored) holds whoever asks. A command is
//! executed under the vhost's topology write lock in three steps: it is checked against the
//! topology through shared access (a refused or no-op command changes nothing, not even the
//! topology version), its metadata changes are committed to the store, and only then is the
//! topology in memory changed. Commands therefore reach the disk in the order they took
//! effect, and a failed commit leaves memory as the disk is.
//!
//! Names a server chooses (`amq.gen-…` queues) are chosen by the front end and carried in the
//! command, and a durable queue's log id is allocated when its record is committed, so a
//! command applied again elsewhere (a replica, later) has the same effect.

use lepus_protocol::{FieldTable, ShortStr};

use crate::error::Result;
use crate::exchange::Destination;
use crate::queue::QueueRef;
use crate::vhost::{ExchangeDeclare, QueueDeclare, VHost};

/// Who issues a command: exclusive queues belong to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuer {
    pub connection_id: u64,
}

/// A binding, as `queue.bind`/`exchange.bind` name it.
#[derive(Debug, Clone)]
pub struct Binding {
    pub source: ShortStr,
    pub destination: Destination,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

/// A change to a vhost's topology (or, for `passive` declarations, a check of it).
#[derive(Debug, Clone)]
pub enum Command {
    DeclareExchange(ExchangeDeclare),
    DeleteExchange { name: ShortStr, if_unused: bool },
    DeclareQueue(QueueDeclare),
    DeleteQueue { name: ShortStr, if_unused: bool, if_empty: bool },
    PurgeQueue { name: ShortStr },
    Bind(Binding),
    Unbind(Binding),
}

impl Command {
    /// The command's name in logs and audit trails.
    pub fn name(&self) -> &'static str {
        match self {
            Command::DeclareExchange(_) => "declare exchange",
            Command::DeleteExchange { .. } => "delete exchange",
            Command::DeclareQueue(_) => "declare queue",
            Command::DeleteQueue { .. } => "delete queue",
            Command::PurgeQueue { .. } => "purge queue",
            Command::Bind(_) => "bind",
            Command::Unbind(_) => "unbind",
        }
    }
}

/// What an executed command reports.
#[derive(Debug)]
pub enum Applied {
    Done,
    /// A declared (or passively checked) queue with its ready messages and consumers.
    Queue {
        queue: QueueRef,
        messages: u32,
        consumers: u32,
    },
    /// Messages removed by a purge or delete.
    Removed(u32),
}

impl VHost {
    /// Executes `command` for `issuer` (see the module doc).
    pub fn execute(&self, issuer: Issuer, command: Command) -> Result<Applied> {
        let connection_id = issuer.connection_id;
        Ok(match command {
            Command::DeclareExchange(d) => self.declare_exchange(&d).map(|()| Applied::Done)?,
            Command::DeleteExchange { name, if_unused } => {
                self.delete_exchange(&name, if_unused).map(|()| Applied::Done)?
            }
            Command::DeclareQueue(d) => {
                let (queue, messages, consumers) = self.declare_queue(&d, connection_id)?;
                Applied::Queue { queue, messages, consumers }
            }
            Command::DeleteQueue { name, if_unused, if_empty } => {
                Applied::Removed(self.delete_queue(&name, if_unused, if_empty, connection_id)?)
            }
            Command::PurgeQueue { name } => Applied::Removed(self.queue(&name, connection_id)?.purge()),
            Command::Bind(b) => {
                self.bind(b.destination, &b.source, &b.routing_key, &b.arguments, connection_id)?;
                Applied::Done
            }
            Command::Unbind(b) => {
                self.unbind(b.destination, &b.source, &b.routing_key, &b.arguments, connection_id)?;
                Applied::Done
            }
        })
    }
}
