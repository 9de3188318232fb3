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

use lepus_protocol::{FieldTable, FieldValue, ShortStr};
use lepus_store::meta::{Change, LimitScope, LimitsRecord, PermissionRecord, TopicPermissionRecord};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::exchange::Destination;
use crate::limits::{UserLimits, VhostLimits};
use crate::permissions::{Access, Grant, Permission, Resource, TopicGrant};
use crate::policy::{PolicyKind, PolicySpec};
use crate::queue::QueueRef;
use crate::users::User;
use crate::vhost::{ExchangeDeclare, QueueDeclare, VHost};
use crate::vhost_metadata::VhostMetadata;

/// Who issues a command: exclusive queues belong to one connection, and what it may do is
/// its user's [`Access`] in the vhost.
#[derive(Debug, Clone, Copy)]
pub struct Issuer<'a> {
    pub connection_id: u64,
    pub access: &'a Access,
}

impl Issuer<'static> {
    /// The node itself (configuration and definitions at start, tests): every permission,
    /// no connection.
    pub fn node() -> Issuer<'static> {
        static UNRESTRICTED: std::sync::LazyLock<Access> = std::sync::LazyLock::new(Access::unrestricted);
        Issuer { connection_id: 0, access: &UNRESTRICTED }
    }
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
    DeleteExchange {
        name: ShortStr,
        if_unused: bool,
    },
    DeclareQueue(QueueDeclare),
    DeleteQueue {
        name: ShortStr,
        if_unused: bool,
        if_empty: bool,
    },
    PurgeQueue {
        name: ShortStr,
    },
    Bind(Binding),
    Unbind(Binding),
    /// Adds or replaces a policy or operator policy (see [`crate::policy`]); applied at once
    /// to the vhost's queues and exchanges.
    SetPolicy(PolicySpec),
    /// Clears a policy or operator policy (404 if there is none of that name).
    ClearPolicy {
        kind: PolicyKind,
        name: String,
    },
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
    /// Executes `command` for `issuer` (see the module doc), if the issuer's permissions
    /// allow it.
    pub fn execute(&self, issuer: Issuer<'_>, command: Command) -> Result<Applied> {
        self.authorize(issuer.access, &command)?;
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
            Command::SetPolicy(spec) => self.set_policy(spec).map(|()| Applied::Done)?,
            Command::ClearPolicy { kind, name } => self.clear_policy(kind, &name).map(|()| Applied::Done)?,
        })
    }
}

/// An exchange named in a `x-` argument (`alternate-exchange`, `x-dead-letter-exchange`).
fn exchange_argument<'a>(arguments: &'a FieldTable, key: &str) -> Option<&'a [u8]> {
    match arguments.get(key) {
        Some(FieldValue::LongStr(b)) | Some(FieldValue::Bytes(b)) => Some(b),
        _ => None,
    }
}

impl VHost {
    /// The permissions `command` needs, checked where and in the order RabbitMQ checks them:
    /// `passive` declarations need none; declarations and deletions need configure; a
    /// declaration naming an alternate or dead-letter exchange needs read on what is declared
    /// and write on that exchange; a binding needs write on its destination, read on its
    /// source and, through a topic exchange, topic read on its key; a purge needs read.
    fn authorize(&self, access: &Access, command: &Command) -> Result<()> {
        use Permission::{Configure, Read, Write};
        use Resource::{Exchange, Queue};
        match command {
            Command::DeclareExchange(d) if d.passive || d.name.is_empty() => Ok(()),
            Command::DeclareExchange(d) => {
                access.check(Configure, Exchange, d.name.as_bytes())?;
                if let Some(ae) = exchange_argument(&d.arguments, "alternate-exchange") {
                    access.check(Read, Exchange, d.name.as_bytes())?;
                    access.check(Write, Exchange, ae)?;
                }
                Ok(())
            }
            Command::DeleteExchange { name, .. } if name.is_empty() => Ok(()),
            Command::DeleteExchange { name, .. } => access.check(Configure, Exchange, name.as_bytes()),
            Command::DeclareQueue(d) if d.passive => Ok(()),
            Command::DeclareQueue(d) => {
                access.check(Configure, Queue, d.name.as_bytes())?;
                if let Some(dlx) = exchange_argument(&d.arguments, "x-dead-letter-exchange") {
                    access.check(Read, Queue, d.name.as_bytes())?;
                    access.check(Write, Exchange, dlx)?;
                }
                Ok(())
            }
            Command::DeleteQueue { name, .. } => access.check(Configure, Queue, name.as_bytes()),
            Command::PurgeQueue { name } => access.check(Read, Queue, name.as_bytes()),
            // Policies are a management operation: the API checks the user's tags.
            Command::SetPolicy(_) | Command::ClearPolicy { .. } => Ok(()),
            Command::Bind(b) | Command::Unbind(b) => {
                match &b.destination {
                    Destination::Queue(q) => access.check(Write, Queue, q.as_bytes())?,
                    Destination::Exchange(x) => access.check(Write, Exchange, x.as_bytes())?,
                }
                if b.source.is_empty() {
                    return Ok(()); // refused as the default exchange by the binding itself
                }
                access.check(Read, Exchange, b.source.as_bytes())?;
                if access.has_topic_grants() && self.exchange_kind(b.source.as_bytes()) == Some("topic") {
                    access.check_topic(Read, b.source.as_bytes(), b.routing_key.as_bytes())?;
                }
                Ok(())
            }
        }
    }
}

/// A change to the node: its users and vhosts. Executed by [`Broker::execute_node`]; the
/// management API, the CLI and definitions import build these.
#[derive(Debug, Clone)]
pub enum NodeCommand {
    /// Creates a user or replaces one of that name.
    PutUser {
        name: String,
        credential: Credential,
        tags: Vec<String>,
    },
    DeleteUser {
        name: String,
    },
    /// Creates a vhost (a no-op for one that exists); with `metadata`, replaces its
    /// description, tags and default queue type, as RabbitMQ's `PUT /api/vhosts/{v}` does.
    AddVhost {
        name: String,
        metadata: Option<VhostMetadata>,
    },
    /// Deletes a vhost and everything in it; its connections are closed with 320.
    DeleteVhost {
        name: String,
    },
    /// Sets a user's configure, write and read expressions in a vhost.
    SetPermissions {
        user: String,
        vhost: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        user: String,
        vhost: String,
    },
    /// Sets a user's write and read expressions on routing keys through a topic exchange.
    SetTopicPermissions {
        user: String,
        vhost: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// Clears one exchange's topic permissions, or (`None`) all in the vhost.
    ClearTopicPermissions {
        user: String,
        vhost: String,
        exchange: Option<String>,
    },
    /// Replaces a vhost's limits (all unset: none).
    SetVhostLimits {
        vhost: String,
        limits: VhostLimits,
    },
    /// Replaces a user's limits (all unset: none).
    SetUserLimits {
        user: String,
        limits: UserLimits,
    },
}

/// How a user proves who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Hashed here (salted SHA-256, RabbitMQ's default).
    Password(String),
    /// A salted SHA-256 hash from elsewhere (RabbitMQ definitions): 4 bytes of salt, then
    /// the digest.
    Hash(Vec<u8>),
    /// No password: only a login that needs none (SASL EXTERNAL) gets in.
    Passwordless,
}

/// Names (users, vhosts) are AMQP short strings at most.
pub const NAME_MAX_BYTES: usize = 255;
/// Tags per user.
pub const TAGS_MAX: usize = 32;

impl NodeCommand {
    /// The checks that need no state: names, tags, hash length.
    fn validate(&self) -> Result<()> {
        let name_ok = |kind: &str, name: &str| {
            if name.is_empty() || name.len() > NAME_MAX_BYTES {
                return Err(BrokerError::PreconditionFailed(format!(
                    "{kind} name must be 1 to {NAME_MAX_BYTES} bytes long"
                )));
            }
            Ok(())
        };
        match self {
            NodeCommand::PutUser { name, credential, tags } => {
                name_ok("user", name)?;
                if tags.len() > TAGS_MAX || tags.iter().any(|t| t.is_empty() || t.contains(',') || t.len() > 64) {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "at most {TAGS_MAX} tags of 1 to 64 bytes, without ','"
                    )));
                }
                if let Credential::Hash(hash) = credential
                    && crate::users::HashingAlgorithm::of_hash(hash).is_none()
                {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "a password hash is a 4-byte salt and a SHA-256, SHA-512 or MD5 digest (36, 68 or 20 bytes), not {} bytes",
                        hash.len()
                    )));
                }
                Ok(())
            }
            NodeCommand::DeleteUser { name } => name_ok("user", name),
            NodeCommand::AddVhost { name, metadata } => {
                name_ok("vhost", name)?;
                metadata.as_ref().map_or(Ok(()), VhostMetadata::validate)
            }
            NodeCommand::DeleteVhost { name } => name_ok("vhost", name),
            NodeCommand::SetPermissions { configure, write, read, .. } => {
                Grant::new(configure, write, read).map(|_| ())
            }
            NodeCommand::SetTopicPermissions { user, vhost, write, read, .. } => {
                TopicGrant::new(user, vhost, write, read).map(|_| ())
            }
            NodeCommand::ClearPermissions { .. }
            | NodeCommand::ClearTopicPermissions { .. }
            | NodeCommand::SetVhostLimits { .. }
            | NodeCommand::SetUserLimits { .. } => Ok(()),
        }
    }
}

impl Broker {
    /// Executes a node command: checked, stored, then applied in memory. Node commands run
    /// one at a time, so they reach the disk in the order they apply; the users' lock is taken
    /// only for the change in memory, so logins never wait for a commit.
    pub fn execute_node(&self, command: NodeCommand) -> Result<()> {
        command.validate()?;
        let _one_at_a_time = self.node_command_lock();
        match command {
            NodeCommand::PutUser { name, credential, tags } => {
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                let user = match credential {
                    Credential::Password(password) => User::new(&name, &password, &tags),
                    Credential::Hash(hash) => User::with_password_hash(&name, hash, &tags),
                    Credential::Passwordless => User::passwordless(&name, &tags),
                };
                self.store(&[Change::PutUser(user.record())])?;
                self.users_mut().add(user);
            }
            NodeCommand::DeleteUser { name } => {
                self.user_exists(&name)?;
                self.store(&[Change::DeleteUser(name.clone())])?;
                self.users_mut().remove(&name);
                self.edit_permissions(|p| p.remove_user(&name));
                self.set_user_limits(&name, UserLimits::default());
                let reason = format!("user '{name}' is deleted");
                self.connections().close_where(|c| c.user == name, &reason);
            }
            NodeCommand::DeleteVhost { name } => self.delete_vhost(&name)?,
            NodeCommand::SetPermissions { user, vhost, configure, write, read } => {
                self.user_exists(&user)?;
                self.vhost_exists(&vhost)?;
                let grant = Grant::new(&configure, &write, &read)?;
                let record = PermissionRecord { user: user.clone(), vhost: vhost.clone(), configure, write, read };
                self.store(&[Change::PutPermission(record)])?;
                self.edit_permissions(|p| p.set(&user, &vhost, grant));
            }
            NodeCommand::ClearPermissions { user, vhost } => {
                self.store(&[Change::DeletePermission { user: user.clone(), vhost: vhost.clone() }])?;
                self.edit_permissions(|p| p.clear(&user, &vhost));
            }
            NodeCommand::SetTopicPermissions { user, vhost, exchange, write, read } => {
                self.user_exists(&user)?;
                self.vhost_exists(&vhost)?;
                let grant = TopicGrant::new(&user, &vhost, &write, &read)?;
                let exchange = exchange.into_bytes();
                let record = TopicPermissionRecord {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    exchange: exchange.clone(),
                    write,
                    read,
                };
                self.store(&[Change::PutTopicPermission(record)])?;
                self.edit_permissions(|p| p.set_topic(&user, &vhost, &exchange, grant));
            }
            NodeCommand::ClearTopicPermissions { user, vhost, exchange } => {
                let exchange = exchange.map(String::into_bytes);
                let change = Change::DeleteTopicPermission {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    exchange: exchange.clone(),
                };
                self.store(&[change])?;
                self.edit_permissions(|p| p.clear_topic(&user, &vhost, exchange.as_deref()));
            }
            NodeCommand::SetVhostLimits { vhost, limits } => {
                let target = self.vhost_exists(&vhost)?;
                self.store(&[Change::PutLimits(limits_record(LimitScope::Vhost, &vhost, &limits.pairs()))])?;
                target.set_limits(limits);
            }
            NodeCommand::SetUserLimits { user, limits } => {
                self.user_exists(&user)?;
                self.store(&[Change::PutLimits(limits_record(LimitScope::User, &user, &limits.pairs()))])?;
                self.set_user_limits(&user, limits);
            }
            NodeCommand::AddVhost { name, metadata } => {
                let vhost = match self.vhost(&name) {
                    Some(vhost) => vhost,
                    None => {
                        let vhost = match self.persistence() {
                            Some(p) => VHost::restore(&name, p.clone(), &Default::default(), true)?.0,
                            None => VHost::new(&name),
                        };
                        self.insert_vhost(vhost);
                        self.vhost_exists(&name)?
                    }
                };
                if let Some(metadata) = metadata {
                    vhost.set_metadata(metadata)?;
                }
            }
        }
        Ok(())
    }

    fn user_exists(&self, name: &str) -> Result<()> {
        match self.users().get(name) {
            Some(_) => Ok(()),
            None => Err(BrokerError::Absent { kind: "user", name: name.to_owned() }),
        }
    }

    fn vhost_exists(&self, name: &str) -> Result<std::sync::Arc<VHost>> {
        self.vhost(name).ok_or_else(|| BrokerError::Absent { kind: "vhost", name: name.to_owned() })
    }

    /// Deletes a vhost: stored first (its records, permissions and limits), then taken out of
    /// the node so no connection opens to it, its connections asked to close with 320, and its
    /// queues (with their logs) and exchanges dropped.
    fn delete_vhost(&self, name: &str) -> Result<()> {
        self.vhost_exists(name)?;
        self.store(&[Change::DeleteVhost(name.to_owned())])?;
        let Some(vhost) = self.take_vhost(name) else { return Ok(()) };
        self.edit_permissions(|p| p.remove_vhost(name));
        let reason = format!("vhost '{name}' is deleted");
        self.connections().close_where(|c| c.vhost == name, &reason);
        vhost.delete_everything();
        tracing::info!(vhost = %name.escape_debug(), "vhost deleted");
        Ok(())
    }

    fn store(&self, changes: &[Change]) -> Result<()> {
        match self.persistence() {
            Some(p) => p.apply(changes),
            None => Ok(()),
        }
    }
}

fn limits_record(scope: LimitScope, name: &str, pairs: &[(&str, i64)]) -> LimitsRecord {
    LimitsRecord { scope, name: name.to_owned(), limits: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::users::Users;
    use crate::{BrokerParts, Wake};

    struct NoWake;

    impl Wake for NoWake {
        fn wake(&self) {}
    }

    fn broker() -> Broker {
        Broker::new(BrokerParts {
            vhosts: vec![VHost::new("/")],
            users: Users::new(Vec::new()),
            access_control: Default::default(),
            clock: Arc::new(ManualClock::new(0)),
            persistence: None,
            timer_wake: Box::new(NoWake),
        })
    }

    fn put(name: &str, credential: Credential, tags: &[&str]) -> NodeCommand {
        NodeCommand::PutUser { name: name.into(), credential, tags: tags.iter().map(|t| t.to_string()).collect() }
    }

    const PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn users_are_added_replaced_and_deleted() {
        let b = broker();
        b.execute_node(put("alice", Credential::Password("one".into()), &["management"])).expect("add");
        assert!(b.users().login("alice", b"one", PEER).is_ok());
        b.execute_node(put("alice", Credential::Password("two".into()), &[])).expect("replace");
        assert!(b.users().login("alice", b"one", PEER).is_err());
        assert_eq!(b.users().login("alice", b"two", PEER).map(|u| u.tags.len()), Ok(0));
        b.execute_node(NodeCommand::DeleteUser { name: "alice".into() }).expect("delete");
        assert!(b.users().get("alice").is_none());
        let again = b.execute_node(NodeCommand::DeleteUser { name: "alice".into() });
        assert_eq!(again, Err(BrokerError::Absent { kind: "user", name: "alice".into() }));
    }

    #[test]
    fn a_password_hash_from_rabbitmq_definitions_logs_in() {
        // salt 908DC60A, password test12 (RabbitMQ's password hashing docs).
        let mut hash = vec![0x90, 0x8D, 0xC6, 0x0A];
        hash.extend_from_slice(&[
            0xa5, 0xb9, 0x24, 0xb3, 0x09, 0x6b, 0x88, 0x97, 0xd6, 0x5a, 0x3b, 0x5f, 0x80, 0xfa, 0x5d, 0xb6, 0x2a, 0x94,
            0xb8, 0x31, 0x22, 0xcd, 0xf4, 0xf8, 0xfe, 0xad, 0x10, 0xd5, 0x15, 0xd8, 0xf3, 0x91,
        ]);
        let b = broker();
        b.execute_node(put("t", Credential::Hash(hash), &[])).expect("add with hash");
        assert!(b.users().login("t", b"test12", PEER).is_ok());
        assert!(b.users().login("t", b"test13", PEER).is_err());
    }

    #[test]
    fn a_passwordless_user_logs_in_only_externally() {
        let b = broker();
        b.execute_node(put("app", Credential::Passwordless, &[])).expect("add passwordless");
        assert!(b.users().login("app", b"", PEER).is_err());
        assert!(b.users().login_external("app", PEER).is_ok());
    }

    #[test]
    fn bad_names_tags_and_hashes_are_refused() {
        let b = broker();
        let refused = |c: NodeCommand| matches!(b.execute_node(c), Err(BrokerError::PreconditionFailed(_)));
        assert!(refused(put("", Credential::Password("p".into()), &[])));
        assert!(refused(put(&"x".repeat(256), Credential::Password("p".into()), &[])));
        assert!(refused(put("u", Credential::Password("p".into()), &["a,b"])));
        assert!(refused(put("u", Credential::Password("p".into()), &[""])));
        assert!(refused(put("u", Credential::Hash(vec![1, 2, 3]), &[])));
        assert!(refused(NodeCommand::AddVhost { name: String::new(), metadata: None }));
        assert!(b.users().is_empty(), "nothing refused was applied");
    }

    #[test]
    fn vhosts_are_added_once() {
        let b = broker();
        b.execute_node(NodeCommand::AddVhost { name: "apps".into(), metadata: None }).expect("add");
        let first = b.vhost("apps").expect("added");
        b.execute_node(NodeCommand::AddVhost { name: "apps".into(), metadata: None }).expect("again: no-op");
        assert!(Arc::ptr_eq(&first, &b.vhost("apps").expect("still there")));
        assert_eq!(b.vhosts().iter().map(|v| v.name.to_string()).collect::<Vec<_>>(), ["/", "apps"]);
    }
}
