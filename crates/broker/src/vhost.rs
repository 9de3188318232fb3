//! A virtual host: its exchanges, queues and bindings, the declaration rules for them, and
//! routing a message to queues.
//!
//! Topology lives behind one `RwLock`: routing takes it for reading (publishers never
//! contend with each other), declarations and bindings for writing. Queue state has its own
//! lock (see [`crate::queue`]); the topology lock is never held while a queue lock is taken
//! for publishing.
//!
//! A vhost with [`Persistence`] commits every change to a durable entity to the metadata
//! store before returning (see [`crate::persist`]), and gives durable queues message logs.

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use lepus_protocol::{FieldTable, ShortStr};
use parking_lot::{RwLock, RwLockWriteGuard};

use crate::args::{QueueType, assert_args_equivalent, parse_queue_args};
use crate::error::{BrokerError, Result};
use crate::exchange::{self, Destination, Exchange};
use crate::headers::MessageHeaders;
use crate::persist::{self, PersistenceRef};
use crate::policy::{Applied, POLICIES_MAX, Policies, Policy, PolicyKind, PolicySpec, Target};
use crate::queue::{Queue, QueueRef, Restored, Services};
use crate::route_cache::RouteCache;
use crate::route_memo::RouteMemo;
use crate::vhost_metadata::VhostMetadata;
use lepus_store::log::QueueLog;
use lepus_store::meta::{BindingRecord, Change, Snapshot};

/// Exchanges reached while routing one message, bounding exchange-to-exchange chains.
pub const ROUTE_EXCHANGES_MAX: usize = 1024;

/// RabbitMQ's predeclared exchanges: (name, type, internal).
const PREDECLARED: [(&str, &str, bool); 7] = [
    ("", "direct", false),
    ("amq.direct", "direct", false),
    ("amq.fanout", "fanout", false),
    ("amq.topic", "topic", false),
    ("amq.headers", "headers", false),
    ("amq.match", "headers", false),
    ("amq.rabbitmq.trace", "topic", true),
];

#[derive(Debug, Default)]
struct Topology {
    exchanges: HashMap<ShortStr, Exchange>,
    queues: HashMap<ShortStr, QueueRef>,
    /// destination → (source exchange, key, arguments), to remove bindings when a queue or
    /// exchange is deleted.
    bindings_to: HashMap<Destination, Vec<(ShortStr, ShortStr, FieldTable)>>,
    /// The vhost's policies and operator policies (see [`crate::policy`]).
    policies: Policies,
    /// Bindings of deleted queues not yet removed from their exchanges, by queue name
    /// (see [`unbind`]).
    unbinding: HashMap<ShortStr, Vec<unbind::Unbound>>,
}

/// Parameters of `queue.declare`.
#[derive(Debug, Clone, Default)]
pub struct QueueDeclare {
    pub name: ShortStr,
    /// The broker chose the name (`amq.gen-…`): the reserved-prefix rule does not apply.
    pub server_named: bool,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// Parameters of `exchange.declare`.
#[derive(Debug, Clone, Default)]
pub struct ExchangeDeclare {
    pub name: ShortStr,
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug)]
pub struct VHost {
    pub name: Arc<str>,
    topology: RwLock<Topology>,
    /// Bumped under the write lock by every topology change; a [`RouteCache`] entry and the
    /// memo's routes are valid while it is unchanged.
    topology_version: AtomicU64,
    /// Recent routes through topic and fanout exchanges, shared by the vhost's connections.
    memo: RouteMemo,
    persistence: Option<PersistenceRef>,
    /// The clock, timers and this vhost, for its queues (set once the broker holds it).
    services: OnceLock<Services>,
    /// `max-connections`, `max-queues` (see [`crate::limits`]).
    limits: parking_lot::RwLock<crate::limits::VhostLimits>,
    /// Held by a policy command from its check until every queue has its new limits, so
    /// policy changes reach queues in the order they were made.
    policy_commands: parking_lot::Mutex<()>,
    /// Description, tags, default queue type (see [`crate::vhost_metadata`]).
    metadata: parking_lot::Mutex<VhostMetadata>,
    /// The timer that removes, a step per firing, the bindings of queues deleted with no
    /// client waiting (see [`unbind`]).
    unbinder: unbind::Unbinder,
}

/// What restoring a vhost from storage found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub exchanges: usize,
    pub queues: usize,
    pub bindings: usize,
    pub messages: u64,
    /// Records skipped as damaged, segments quarantined, unreadable metadata.
    pub problems: Vec<String>,
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

use crate::exchange::unknown_type;

mod inspect;
mod unbind;

pub use inspect::{BindingView, ExchangeView};
pub use unbind::UNBIND_STEP_MAX;

impl VHost {
    /// A vhost with RabbitMQ's predeclared exchanges.
    pub fn new(name: &str) -> VHost {
        let mut vhost = VHost {
            name: name.into(),
            topology: RwLock::default(),
            topology_version: AtomicU64::new(0),
            memo: RouteMemo::default(),
            persistence: None,
            services: OnceLock::new(),
            limits: Default::default(),
            policy_commands: parking_lot::Mutex::new(()),
            metadata: parking_lot::Mutex::new(VhostMetadata::initial(name)),
            unbinder: unbind::Unbinder::default(),
        };
        let t = vhost.topology.get_mut();
        for (name, type_name, internal) in PREDECLARED {
            let index = exchange::new_index(type_name);
            debug_assert!(index.is_some(), "predeclared exchange of unknown type {type_name}");
            let Some(index) = index else { continue };
            let x = Exchange::new(ShortStr::from_static(name), index, true, false, internal, FieldTable::new());
            t.exchanges.insert(x.name.clone(), x);
        }
        vhost
    }

    /// A vhost that stores its durable entities and persistent messages, restored from
    /// `snapshot` (this vhost's part of the metadata) and the queues' message logs. After an
    /// unclean stop (`clean` false) every recovered message is marked redelivered: whether it
    /// had been delivered cannot be known.
    pub fn restore(
        name: &str,
        persistence: PersistenceRef,
        snapshot: &Snapshot,
        clean: bool,
    ) -> Result<(VHost, RestoreReport)> {
        let mut vhost = VHost::new(name);
        persistence.apply(&[Change::PutVhost(name.to_owned())])?;
        let mut report = RestoreReport::default();
        if let Some((_, body)) = snapshot.vhost_metadata.iter().find(|(v, _)| v == name) {
            match VhostMetadata::decode(body) {
                Some(metadata) => *vhost.metadata.get_mut() = metadata,
                None => report.problems.push("unreadable metadata (description, tags); reset".to_owned()),
            }
        }
        {
            let t = vhost.topology.get_mut();
            for r in snapshot.policies.iter().filter(|r| r.vhost == name) {
                let kind = if r.operator { PolicyKind::Operator } else { PolicyKind::Policy };
                match Policy::from_record(kind, &r.name, &r.body) {
                    Ok(policy) => {
                        t.policies.put(policy);
                    }
                    Err(e) => report.problems.push(format!("policy '{}': {e}; dropped", r.name.escape_debug())),
                }
            }
            for r in snapshot.exchanges.iter().filter(|r| r.vhost == name) {
                let Some(xname) = ShortStr::from_bytes(bytes::Bytes::from(r.name.clone())) else {
                    report.problems.push(format!("exchange record {:?} unreadable", String::from_utf8_lossy(&r.name)));
                    continue;
                };
                let args = persist::decode_arguments(&r.arguments).unwrap_or_else(|e| {
                    report.problems.push(format!("exchange '{xname}': arguments unreadable ({e}); restored without"));
                    FieldTable::new()
                });
                let Ok(index) = exchange::index_for(&r.kind, &args) else {
                    report.problems.push(format!("exchange '{xname}': type '{}' unknown", r.kind.escape_debug()));
                    continue;
                };
                let mut x = Exchange::new(xname.clone(), index, true, r.auto_delete, r.internal, args);
                x.apply_policy(t.policies.applied(Target::Exchange, xname.as_bytes()));
                t.exchanges.insert(xname, x);
                report.exchanges += 1;
            }
            for r in snapshot.queues.iter().filter(|r| r.vhost == name) {
                if let Some(xname) = persist::dedup_exchange_name(&r.name) {
                    let what = format!("deduplication cache of exchange '{xname}' in vhost '{name}'");
                    Self::restore_dedup_journal(&persistence, t.exchanges.get(&xname), r.id, &what, &mut report)?;
                    continue;
                }
                if let Some(xname) = persist::held_exchange_name(&r.name) {
                    // A durable delayed exchange's hidden queue: every message is read back, to
                    // find its delay.
                    let what = format!("delayed messages of exchange '{xname}' in vhost '{name}'");
                    let (log, recovered, log_report) =
                        QueueLog::recover(&persistence.store, r.id, usize::MAX, u64::MAX)
                            .map_err(|e| BrokerError::Storage(format!("{what}: {e}")))?;
                    for (segment, offset, damage) in &log_report.damaged {
                        report.problems.push(format!("{what}: record at segment {segment} offset {offset}: {damage}"));
                    }
                    let Some(x) = t.exchanges.get_mut(&xname) else {
                        report.problems.push(format!("{what}: no such exchange; dropped"));
                        log.destroy();
                        continue;
                    };
                    let Some(queue) = Self::held_queue(&vhost.name, x, Some(&persistence), Some(log)) else {
                        report.problems.push(format!("{what}: not a delayed exchange; dropped"));
                        continue;
                    };
                    report.messages += recovered.len() as u64;
                    queue.restore(
                        recovered
                            .into_iter()
                            .map(|m| Restored {
                                message: m.parts.map(|p| Arc::new(crate::Message::from_record(p))),
                                loc: m.loc,
                                body_len: m.body_len,
                                timestamp_ms: m.timestamp_ms,
                                redelivered: false,
                                returns: 0,
                            })
                            .collect(),
                    );
                    x.held = Some(Arc::new(queue));
                    continue;
                }
                let Some(qname) = ShortStr::from_bytes(bytes::Bytes::from(r.name.clone())) else {
                    report.problems.push(format!("queue record {:?} unreadable", String::from_utf8_lossy(&r.name)));
                    continue;
                };
                let args = persist::decode_arguments(&r.arguments).unwrap_or_else(|e| {
                    report.problems.push(format!("queue '{qname}': arguments unreadable ({e}); restored without"));
                    FieldTable::new()
                });
                let what = format!("queue '{qname}' in vhost '{name}'");
                let limits = parse_queue_args(&args, &what).map(|a| a.limits).unwrap_or_default();
                // A priority queue reads every message at start, to put each on its level, and a
                // deduplication queue, to take its key (they page out again as the queue's
                // paging window passes).
                let read_all = limits.max_priority.is_some() || crate::args::message_deduplication(&args);
                let (most, most_bytes) = match read_all {
                    true => (usize::MAX, u64::MAX),
                    false => (crate::queue::RESIDENT_MAX_MESSAGES, crate::queue::RESIDENT_MAX_BYTES),
                };
                let (log, recovered, log_report) = QueueLog::recover(&persistence.store, r.id, most, most_bytes)
                    .map_err(|e| BrokerError::Storage(format!("{what}: {e}")))?;
                for (segment, offset, damage) in &log_report.damaged {
                    report.problems.push(format!("{what}: record at segment {segment} offset {offset}: {damage}"));
                }
                for segment in &log_report.missing_acks {
                    report
                        .problems
                        .push(format!("{what}: ack file of segment {segment} unreadable; its messages come back"));
                }
                for path in &log_report.quarantined {
                    report.problems.push(format!("{what}: segment quarantined as {}", path.display()));
                }
                let queue = Queue::new(qname.clone(), vhost.name.clone(), true, None, r.auto_delete, args, limits)
                    .with_policy(t.policies.applied(Target::Queue, qname.as_bytes()))
                    .with_log(log)
                    .with_scratch(persistence.store.clone());
                report.messages += recovered.len() as u64;
                queue.restore(
                    recovered
                        .into_iter()
                        .map(|m| Restored {
                            message: m.parts.map(|p| Arc::new(crate::Message::from_record(p))),
                            loc: m.loc,
                            body_len: m.body_len,
                            timestamp_ms: m.timestamp_ms,
                            redelivered: m.delivered || !clean,
                            returns: m.returns,
                        })
                        .collect(),
                );
                t.queues.insert(qname, Arc::new(queue));
                report.queues += 1;
            }
            // Delayed exchanges without a stored hidden queue hold in memory only.
            for x in t.exchanges.values_mut().filter(|x| x.held.is_none()) {
                x.held = Self::held_queue(&vhost.name, x, Some(&persistence), None).map(Arc::new);
            }
            for r in snapshot.bindings.iter().filter(|r| r.vhost == name) {
                let to_short = |b: &[u8]| ShortStr::from_bytes(bytes::Bytes::copy_from_slice(b));
                let dest = match &r.destination {
                    lepus_store::meta::Destination::Queue(q) => to_short(q).map(Destination::Queue),
                    lepus_store::meta::Destination::Exchange(x) => to_short(x).map(Destination::Exchange),
                };
                let (Some(source), Some(dest), Some(key)) = (to_short(&r.source), dest, to_short(&r.routing_key))
                else {
                    report.problems.push("binding record unreadable".into());
                    continue;
                };
                let args = persist::decode_arguments(&r.arguments).unwrap_or_default();
                let Some(x) = t.exchanges.get_mut(&source) else { continue };
                if let Ok(true) = x.bind(&dest, &key, &args) {
                    t.bindings_to.entry(dest).or_default().push((source, key, args));
                    report.bindings += 1;
                }
            }
        }
        vhost.persistence = Some(persistence);
        Ok((vhost, report))
    }

    /// Connects the vhost and its queues to the broker's clock and timers (once): TTLs,
    /// expiry and dead-lettering work from now on. `services.vhost` is this vhost.
    pub fn attach(&self, services: Services) {
        if self.services.set(services).is_err() {
            return;
        }
        let Some(services) = self.services.get() else { return };
        let t = self.topology.read();
        for q in t.queues.values().chain(t.exchanges.values().filter_map(|x| x.held.as_ref())) {
            q.attach(services);
        }
    }

    /// The broker clock's time (0 for a vhost without a broker).
    fn now_ms(&self) -> u64 {
        self.services.get().map_or(0, |s| s.clock.now_ms())
    }

    /// Counts queue churn in the broker's counters (none for a vhost without a broker).
    fn count_churn(&self, count: impl FnOnce(&crate::stats::QueueChurn)) {
        if let Some(services) = self.services.get() {
            count(&services.churn);
        }
    }

    /// Commits metadata changes (a no-op without persistence).
    fn persist(&self, changes: &[Change]) -> Result<()> {
        match &self.persistence {
            Some(p) => p.apply(changes),
            None => Ok(()),
        }
    }

    /// Whether a binding to `dest` is stored (when its source is durable).
    fn stored_destination(t: &Topology, dest: &Destination) -> bool {
        match dest {
            Destination::Queue(q) => t.queues.get(q).is_some_and(|q| q.logged),
            Destination::Exchange(x) => t.exchanges.get(x).is_some_and(|x| x.durable),
        }
    }

    fn queue_what(&self, name: &ShortStr) -> String {
        format!("queue '{name}' in vhost '{}'", self.name)
    }

    fn exchange_what(&self, name: &ShortStr) -> String {
        format!("exchange '{name}' in vhost '{}'", self.name)
    }

    fn no_queue(&self, name: &ShortStr) -> BrokerError {
        BrokerError::not_found("queue", name.to_string(), self.name.to_string())
    }

    fn no_exchange(&self, name: &ShortStr) -> BrokerError {
        BrokerError::not_found("exchange", name.to_string(), self.name.to_string())
    }

    fn default_exchange_refused(&self) -> BrokerError {
        BrokerError::AccessRefused(format!("operation not permitted on the default exchange in vhost '{}'", self.name))
    }

    /// The 405 for touching another connection's exclusive queue.
    fn locked(&self, name: &ShortStr) -> BrokerError {
        BrokerError::ResourceLocked(format!(
            "cannot obtain exclusive access to locked {}. It could be originally declared on another \
             connection or the exclusive property value does not match that of the original declaration.",
            self.queue_what(name)
        ))
    }

    fn check_owner(&self, queue: &Queue, connection_id: u64) -> Result<()> {
        match queue.exclusive_owner {
            Some(owner) if owner != connection_id => Err(self.locked(&queue.name)),
            _ => Ok(()),
        }
    }

    // ---- exchanges ----------------------------------------------------------------------

    /// The hidden queue of a delayed exchange (`None` for other types): not in the vhost's
    /// queues, so no client can route to it, consume from it or see it. Without `log` its
    /// messages are in memory only (paged out to scratch files under memory pressure).
    fn held_queue(
        vhost: &Arc<str>,
        x: &Exchange,
        persistence: Option<&PersistenceRef>,
        log: Option<QueueLog>,
    ) -> Option<Queue> {
        if x.type_name() != exchange::delayed::NAME {
            return None;
        }
        let mut queue = Queue::held_for(x.name.clone(), vhost.clone());
        if let Some(p) = persistence {
            queue = queue.with_scratch(p.store.clone());
        }
        if let Some(log) = log {
            queue = queue.with_log(log);
        }
        Some(queue)
    }

    /// An exchange left the topology: a delayed exchange's pending messages go with it (and
    /// its hidden queue's log, whose record `changes` gets), and a deduplication exchange's
    /// cache journal.
    fn exchange_gone(&self, x: &Exchange, changes: &mut Vec<Change>) {
        if let Some(q) = &x.held {
            if q.logged {
                changes.push(self.held_deleted(&x.name));
            }
            q.delete();
        }
        if let Some(journal) = x.dedup.as_ref().and_then(|c| c.lock().take_journal()) {
            changes.push(self.dedup_deleted(&x.name));
            journal.destroy();
        }
    }

    /// The metadata change that deletes a durable deduplication exchange's cache journal.
    fn dedup_deleted(&self, exchange: &ShortStr) -> Change {
        Change::DeleteQueue { vhost: self.name.to_string(), name: persist::dedup_record_name(exchange) }
    }

    /// A durable deduplication exchange's cache journal, read back into its cache (`x`: the
    /// exchange restored under its name, if any; without a cache there the journal goes).
    fn restore_dedup_journal(
        persistence: &PersistenceRef,
        x: Option<&Exchange>,
        id: u64,
        what: &str,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let (journal, recovered, log_report) = QueueLog::recover(&persistence.store, id, usize::MAX, u64::MAX)
            .map_err(|e| BrokerError::Storage(format!("{what}: {e}")))?;
        for (segment, offset, damage) in &log_report.damaged {
            report.problems.push(format!("{what}: record at segment {segment} offset {offset}: {damage}"));
        }
        let Some(cache) = x.and_then(|x| x.dedup.as_ref()) else {
            report.problems.push(format!("{what}: no such deduplication exchange; dropped"));
            journal.destroy();
            return Ok(());
        };
        let mut cache = cache.lock();
        cache.set_journal(journal);
        for m in recovered {
            cache.restore(m.parts.as_ref(), m.loc);
        }
        Ok(())
    }

    /// The metadata change that deletes a durable delayed exchange's hidden queue.
    fn held_deleted(&self, exchange: &ShortStr) -> Change {
        Change::DeleteQueue { vhost: self.name.to_string(), name: persist::held_record_name(exchange) }
    }

    pub fn declare_exchange(&self, d: &ExchangeDeclare) -> Result<()> {
        if d.name.is_empty() {
            return Err(self.default_exchange_refused());
        }
        let mut t = self.write_topology();
        if let Some(x) = t.exchanges.get(&d.name) {
            if d.passive {
                return Ok(());
            }
            return self.assert_exchange_equivalent(x, d);
        }
        if d.passive {
            return Err(self.no_exchange(&d.name));
        }
        if !exchange::is_type(&d.kind) {
            return Err(unknown_type(&d.kind));
        }
        if d.name.as_bytes().starts_with(b"amq.") {
            return Err(BrokerError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        // The type's own checks (a delayed exchange's `x-delayed-type`).
        let index = exchange::index_for(&d.kind, &d.arguments)?;
        let mut x = Exchange::new(d.name.clone(), index, d.durable, d.auto_delete, d.internal, d.arguments.clone());
        x.apply_policy(t.policies.applied(Target::Exchange, d.name.as_bytes()));
        let (mut log, mut journal) = (None, None);
        if let Some(p) = self.persistence.as_ref().filter(|_| d.durable) {
            let mut changes = vec![Change::PutExchange(persist::exchange_record(&self.name, &x))];
            if x.dedup.is_some() && exchange::dedup::parse_args(&d.arguments).is_ok_and(|a| a.disk) {
                // `x-cache-persistence: disk`: the cache writes its entries to a journal.
                let id = p.next_queue_id()?;
                let name = persist::dedup_record_name(&d.name);
                changes.push(Change::PutQueue(persist::queue_record_named(&self.name, name, id)));
                journal = Some(QueueLog::create(&p.store, id));
            }
            if x.type_name() == exchange::delayed::NAME {
                // A durable delayed exchange logs its persistent delayed messages, in a queue
                // record under a name no client can declare.
                let id = p.next_queue_id()?;
                let name = persist::held_record_name(&d.name);
                changes.push(Change::PutQueue(persist::queue_record_named(&self.name, name, id)));
                log = Some(QueueLog::create(&p.store, id));
            }
            p.apply(&changes)?;
        }
        if let (Some(journal), Some(cache)) = (journal, &x.dedup) {
            cache.lock().set_journal(journal);
        }
        x.held = Self::held_queue(&self.name, &x, self.persistence.as_ref(), log).map(Arc::new);
        if let (Some(q), Some(services)) = (&x.held, self.services.get()) {
            q.attach(services);
        }
        t.exchanges.insert(d.name.clone(), x);
        Ok(())
    }

    fn assert_exchange_equivalent(&self, x: &Exchange, d: &ExchangeDeclare) -> Result<()> {
        let what = self.exchange_what(&x.name);
        let differs = |field: &str, received: &str, current: &str| {
            BrokerError::PreconditionFailed(format!(
                "inequivalent arg '{field}' for {what}: received '{received}' but current is '{current}'"
            ))
        };
        if d.kind != x.type_name() {
            if !exchange::is_type(&d.kind) {
                return Err(unknown_type(&d.kind));
            }
            return Err(differs("type", &d.kind, x.type_name()));
        }
        if d.durable != x.durable {
            return Err(differs("durable", bool_text(d.durable), bool_text(x.durable)));
        }
        if d.auto_delete != x.auto_delete {
            return Err(differs("auto_delete", bool_text(d.auto_delete), bool_text(x.auto_delete)));
        }
        if d.internal != x.internal {
            return Err(differs("internal", bool_text(d.internal), bool_text(x.internal)));
        }
        let (r, c) = (d.arguments.get("alternate-exchange"), x.arguments.get("alternate-exchange"));
        if r != c {
            let show = |v: Option<&lepus_protocol::FieldValue>| match v.and_then(|v| v.as_str()) {
                Some(s) => format!("the value '{s}' of type 'longstr'"),
                None => "none".into(),
            };
            return Err(BrokerError::PreconditionFailed(format!(
                "inequivalent arg 'alternate-exchange' for {what}: received {} but current is {}",
                show(r),
                show(c)
            )));
        }
        Ok(())
    }

    /// An exchange's type name (`x-delayed-message` for a delayed exchange), if it exists.
    pub fn exchange_type(&self, name: &[u8]) -> Option<&'static str> {
        self.topology.read().exchanges.get(name).map(Exchange::type_name)
    }

    /// How many messages a delayed exchange holds (the plugin's `messages_delayed`); `None` for
    /// another type or no such exchange.
    pub fn messages_delayed(&self, name: &[u8]) -> Option<u32> {
        let held = self.topology.read().exchanges.get(name)?.held.clone()?;
        Some(held.message_count())
    }

    pub fn exchange_exists(&self, name: &[u8]) -> bool {
        self.topology.read().exchanges.contains_key(name)
    }

    pub fn delete_exchange(&self, name: &ShortStr, if_unused: bool) -> Result<()> {
        if name.is_empty() {
            return Err(self.default_exchange_refused());
        }
        if name.as_bytes().starts_with(b"amq.") && self.exchange_exists(name.as_bytes()) {
            return Err(BrokerError::AccessRefused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut t = self.write_topology();
        let Some(x) = t.exchanges.get(name) else {
            // RabbitMQ 3.x: deleting an exchange that does not exist succeeds.
            return Ok(());
        };
        if if_unused && x.binding_count() > 0 && !t.unbinding.is_empty() {
            // Bindings to deleted queues do not count.
            let mut changes = Vec::new();
            self.settle_unbinding(&mut t, &mut changes);
            let _ = self.persist(&changes);
        }
        let Some(x) = t.exchanges.get(name) else { return Ok(()) };
        if if_unused && x.binding_count() > 0 {
            return Err(BrokerError::PreconditionFailed(format!("{} in use", self.exchange_what(name))));
        }
        if x.durable {
            // A delayed exchange's released messages are moves out of its hidden queue.
            if x.held.as_ref().is_some_and(|q| !q.settle_moves()) {
                return Err(BrokerError::Storage(format!(
                    "{} cannot be deleted while the message store is failing: messages it released are not durable yet",
                    self.exchange_what(name)
                )));
            }
            // Stored first: if that fails the exchange stays, in memory as on disk.
            let mut changes =
                vec![Change::DeleteExchange { vhost: self.name.to_string(), name: name.as_bytes().to_vec() }];
            if x.held.as_ref().is_some_and(|q| q.logged) {
                changes.push(self.held_deleted(name));
            }
            if x.dedup.as_ref().is_some_and(|c| c.lock().has_journal()) {
                changes.push(self.dedup_deleted(name));
            }
            self.persist(&changes)?;
        }
        let mut changes = Vec::new();
        self.remove_exchange(&mut t, name, &mut changes);
        // What remains are exchanges auto-deleted in cascade; a failure to store those is
        // logged by `persist` (they come back, unbound, after a restart).
        let (held, journal) = (persist::held_record_name(name), persist::dedup_record_name(name));
        changes.retain(|c| match c {
            Change::DeleteExchange { name: n, .. } => n.as_slice() != name.as_bytes(),
            Change::DeleteQueue { name: n, .. } => *n != held && *n != journal,
            _ => true,
        });
        let _ = self.persist(&changes);
        Ok(())
    }

    /// Removes an exchange with its bindings both ways, cascading auto-deletes.
    fn remove_exchange(&self, t: &mut Topology, name: &ShortStr, changes: &mut Vec<Change>) {
        let Some(x) = t.exchanges.remove(name) else { return };
        self.exchange_gone(&x, changes);
        if x.durable {
            changes.push(Change::DeleteExchange { vhost: self.name.to_string(), name: name.as_bytes().to_vec() });
        }
        // Each destination's list is walked once, whatever the number of bindings to it (a
        // walk per binding made deleting an exchange with 100,000 bindings take a minute under
        // the topology lock).
        let dests: HashSet<&Destination> = x.bindings().map(|(dest, _, _)| dest).collect();
        for dest in dests {
            if let Some(list) = t.bindings_to.get_mut(dest) {
                list.retain(|(source, _, _)| source != name);
                if list.is_empty() {
                    t.bindings_to.remove(dest);
                }
            }
        }
        self.remove_bindings_to(t, &Destination::Exchange(name.clone()), changes);
    }

    /// Removes every binding leading to `dest`; sources left without bindings that are
    /// auto-delete are deleted in turn, however long the cascade (every destination after the
    /// first is an exchange just removed, so it takes at most one step per exchange).
    /// (The metadata store drops stored bindings with their destination; `changes` gets the
    /// auto-deleted durable exchanges.)
    fn remove_bindings_to(&self, t: &mut Topology, dest: &Destination, changes: &mut Vec<Change>) {
        let steps_max = 1 + t.exchanges.len();
        let mut work = vec![dest.clone()];
        let mut steps = 0usize;
        while let Some(dest) = work.pop() {
            steps += 1;
            debug_assert!(steps <= steps_max, "more steps than exchanges removing bindings to {dest:?}");
            let Some(bindings) = t.bindings_to.remove(&dest) else { continue };
            for (source, key, args) in bindings {
                let Some(x) = t.exchanges.get_mut(&source) else { continue };
                x.unbind(&dest, &key, &args);
                if x.auto_delete && x.binding_count() == 0 {
                    let name = x.name.clone();
                    if let Some(gone) = t.exchanges.remove(&name) {
                        self.exchange_gone(&gone, changes);
                        if gone.durable {
                            changes.push(Change::DeleteExchange {
                                vhost: self.name.to_string(),
                                name: name.as_bytes().to_vec(),
                            });
                        }
                        work.push(Destination::Exchange(name));
                    }
                }
            }
        }
    }

    // ---- bindings ---------------------------------------------------------------------

    /// `queue.bind` (dest = queue) or `exchange.bind` (dest = exchange). Checked before
    /// anything changes: a refused bind, or one of a binding that exists, keeps the topology
    /// version (and so every route cache).
    pub fn bind(
        &self,
        dest: Destination,
        source: &ShortStr,
        key: &ShortStr,
        args: &FieldTable,
        connection_id: u64,
    ) -> Result<()> {
        let mut t = self.write_topology();
        let x = self.binding_source(&t, &dest, source, connection_id)?;
        if !x.check_bind(&dest, key, args)? {
            return Ok(());
        }
        if let Some(record) = self.stored_binding(&t, x, &dest, key, args) {
            // Stored first: if that fails nothing is bound (a retry binds and stores it).
            self.persist(&[Change::PutBinding(record)])?;
        }
        let x = t.exchanges.get_mut(source).ok_or_else(|| self.no_exchange(source))?;
        if x.bind(&dest, key, args)? {
            t.bindings_to.entry(dest).or_default().push((source.clone(), key.clone(), args.clone()));
        }
        Ok(())
    }

    /// The checks `bind` and `unbind` share: not the default exchange (403), a destination
    /// that exists and is usable by this connection (404, 405), a source that exists (404).
    fn binding_source<'t>(
        &self,
        t: &'t Topology,
        dest: &Destination,
        source: &ShortStr,
        connection_id: u64,
    ) -> Result<&'t Exchange> {
        if source.is_empty() {
            return Err(self.default_exchange_refused());
        }
        self.check_destination(t, dest, connection_id)?;
        t.exchanges.get(source).ok_or_else(|| self.no_exchange(source))
    }

    /// The metadata record of a binding from `x`, if it is stored (see [`crate::persist`]).
    fn stored_binding(
        &self,
        t: &Topology,
        x: &Exchange,
        dest: &Destination,
        key: &ShortStr,
        args: &FieldTable,
    ) -> Option<BindingRecord> {
        (self.persistence.is_some() && x.durable && Self::stored_destination(t, dest))
            .then(|| persist::binding_record(&self.name, &x.name, dest, key, args))
    }

    fn check_destination(&self, t: &Topology, dest: &Destination, connection_id: u64) -> Result<()> {
        match dest {
            Destination::Queue(q) => {
                let queue = t.queues.get(q).ok_or_else(|| self.no_queue(q))?;
                self.check_owner(queue, connection_id)
            }
            Destination::Exchange(x) if x.is_empty() => Err(self.default_exchange_refused()),
            Destination::Exchange(x) => t.exchanges.get(x).map(|_| ()).ok_or_else(|| self.no_exchange(x)),
        }
    }

    /// `queue.unbind` / `exchange.unbind`. Unbinding what is not bound succeeds, and so (as
    /// in RabbitMQ 3.x) does unbinding from or to a queue or exchange that does not exist;
    /// neither, nor a refused unbind, changes the topology version.
    pub fn unbind(
        &self,
        dest: Destination,
        source: &ShortStr,
        key: &ShortStr,
        args: &FieldTable,
        connection_id: u64,
    ) -> Result<()> {
        let mut t = self.write_topology();
        let missing = match &dest {
            Destination::Queue(q) => !t.queues.contains_key(q),
            Destination::Exchange(x) => !x.is_empty() && !t.exchanges.contains_key(x),
        };
        if !source.is_empty() && (missing || !t.exchanges.contains_key(source)) {
            return Ok(());
        }
        let x = self.binding_source(&t, &dest, source, connection_id)?;
        if !x.is_bound(&dest, key, args) {
            return Ok(());
        }
        let mut changes = Vec::new();
        changes.extend(self.stored_binding(&t, x, &dest, key, args).map(Change::DeleteBinding));
        let x = t.exchanges.get_mut(source).ok_or_else(|| self.no_exchange(source))?;
        x.unbind(&dest, key, args);
        let auto_delete_now = x.auto_delete && x.binding_count() == 0;
        if let Some(list) = t.bindings_to.get_mut(&dest) {
            list.retain(|(s, k, a)| !(s == source && k == key && a == args));
        }
        if auto_delete_now {
            self.remove_exchange(&mut t, source, &mut changes);
        }
        self.persist(&changes)
    }

    // ---- queues -----------------------------------------------------------------------

    /// `queue.declare`. Returns the queue and its message and consumer counts. An empty name
    /// must have been replaced by a server-generated one by the caller.
    pub fn declare_queue(&self, d: &QueueDeclare, connection_id: u64) -> Result<(QueueRef, u32, u32)> {
        let what = self.queue_what(&d.name);
        if !d.passive && !d.server_named && d.name.as_bytes().starts_with(b"amq.") {
            // Even for a queue that exists (a server-named one redeclared by name).
            return Err(BrokerError::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        let mut t = self.write_topology();
        if let Some(q) = t.queues.get(&d.name) {
            self.check_owner(q, connection_id)?;
            if !d.passive {
                if d.exclusive != q.exclusive_owner.is_some() {
                    return Err(self.locked(&d.name));
                }
                let differs = |field: &str, received: bool, current: bool| {
                    BrokerError::PreconditionFailed(format!(
                        "inequivalent arg '{field}' for {what}: received '{}' but current is '{}'",
                        bool_text(received),
                        bool_text(current)
                    ))
                };
                if d.durable != q.durable {
                    return Err(differs("durable", d.durable, q.durable));
                }
                if d.auto_delete != q.auto_delete {
                    return Err(differs("auto_delete", d.auto_delete, q.auto_delete));
                }
                assert_args_equivalent(&q.arguments, &d.arguments, &what)?;
            }
            q.touch();
            if !d.passive {
                self.count_churn(|c| c.declared(false));
            }
            let (messages, consumers) = q.counts();
            return Ok((q.clone(), messages, consumers));
        }
        if d.passive {
            return Err(self.no_queue(&d.name));
        }
        self.check_queue_limit(t.queues.len(), &d.name)?;
        if t.unbinding.contains_key(&d.name) {
            // The bindings of the queue deleted under this name must not become its.
            let mut changes = Vec::new();
            self.settle_unbinding(&mut t, &mut changes);
            let _ = self.persist(&changes);
        }
        let args = parse_queue_args(&d.arguments, &what)?;
        if args.queue_type == QueueType::Quorum {
            let refuse =
                |property: &str| BrokerError::PreconditionFailed(format!("invalid property '{property}' for {what}"));
            if !d.durable {
                return Err(refuse("non-durable"));
            }
            if d.exclusive {
                return Err(refuse("exclusive-owner"));
            }
            if d.auto_delete {
                return Err(refuse("auto-delete"));
            }
        }
        let owner = d.exclusive.then_some(connection_id);
        let mut queue = Queue::new(
            d.name.clone(),
            self.name.clone(),
            d.durable,
            owner,
            d.auto_delete,
            d.arguments.clone(),
            args.limits,
        )
        .with_policy(t.policies.applied(Target::Queue, d.name.as_bytes()));
        if let Some(p) = &self.persistence {
            queue = queue.with_scratch(p.store.clone());
        }
        if let Some(p) = self.persistence.as_ref().filter(|_| d.durable && !d.exclusive) {
            let id = p.next_queue_id()?;
            let record = persist::queue_record(&self.name, &d.name, id, d.auto_delete, &d.arguments);
            p.apply(&[Change::PutQueue(record)])?;
            queue = queue.with_log(QueueLog::create(&p.store, id));
        }
        let queue = Arc::new(queue);
        if let Some(services) = self.services.get() {
            queue.attach(services);
        }
        t.queues.insert(d.name.clone(), queue.clone());
        self.count_churn(|c| c.declared(true));
        Ok((queue, 0, 0))
    }

    /// Looks a queue up for use by `connection_id` (404 if missing, 405 if another
    /// connection's exclusive queue).
    pub fn queue(&self, name: &ShortStr, connection_id: u64) -> Result<QueueRef> {
        let t = self.topology.read();
        let q = t.queues.get(name).ok_or_else(|| self.no_queue(name))?;
        self.check_owner(q, connection_id)?;
        Ok(q.clone())
    }

    /// `queue.delete`; returns the number of messages deleted. A missing queue is deleted
    /// already (RabbitMQ 3.x answers delete-ok with 0).
    pub fn delete_queue(&self, name: &ShortStr, if_unused: bool, if_empty: bool, connection_id: u64) -> Result<u32> {
        let mut t = self.write_topology();
        let Some(q) = t.queues.get(name).cloned() else { return Ok(0) };
        self.check_owner(&q, connection_id)?;
        q.check_delete(if_unused, if_empty)?;
        if !q.settle_moves() {
            return Err(BrokerError::Storage(format!(
                "{} cannot be deleted while the message store is failing: dead letters moved out of it are not durable yet",
                q.describe()
            )));
        }
        // Stored first: if that fails the queue stays, in memory as on disk.
        self.persist(&self.queue_deleted(&q))?;
        t.queues.remove(name);
        self.count_churn(|c| c.deleted(1));
        let mut changes = Vec::new();
        self.unlink_queue(&mut t, name, &mut changes);
        // The queue is deleted (on disk too); a failure to store the auto-deletes it cascaded
        // to is logged by `persist`, and those exchanges come back empty after a restart.
        let _ = self.persist(&changes);
        drop(t);
        Ok(q.delete())
    }

    /// Deletes `queue` if it is still the queue of that name (auto-delete, exclusive cleanup).
    pub fn remove_queue(&self, queue: &QueueRef) {
        self.remove_queue_if(queue, || true);
    }

    /// [`VHost::remove_queue`] if `condition` holds under the topology write lock; returns
    /// whether the queue was removed.
    fn remove_queue_if(&self, queue: &QueueRef, condition: impl FnOnce() -> bool) -> bool {
        let mut t = self.write_topology();
        let current = t.queues.get(&queue.name).is_some_and(|q| Arc::ptr_eq(q, queue));
        if current && !condition() {
            return false;
        }
        if current {
            if !queue.settle_moves() {
                tracing::warn!(queue = %queue.describe().escape_debug(), "deleting a queue while the message store is failing: dead letters moved out of it are lost if the node crashes before the store recovers");
            }
            t.queues.remove(&queue.name);
            self.count_churn(|c| c.deleted(1));
            let mut changes = self.queue_deleted(queue);
            self.unlink_queue(&mut t, &queue.name, &mut changes);
            // Auto-delete and exclusive clean-up have no client waiting for an answer: a
            // failure is logged by `persist` and the queue comes back after a restart.
            let _ = self.persist(&changes);
        }
        let unbinding = !t.unbinding.is_empty();
        drop(t);
        if unbinding {
            // Many bindings: removed a step at a time on the timer service (see `unbind`).
            self.unbind_later();
        }
        queue.delete();
        current
    }

    fn queue_deleted(&self, queue: &Queue) -> Vec<Change> {
        if queue.logged {
            vec![Change::DeleteQueue { vhost: self.name.to_string(), name: queue.name.as_bytes().to_vec() }]
        } else {
            Vec::new()
        }
    }

    /// Deletes `queue` for `x-expires` if it is still this vhost's queue of that name and still
    /// unused at `now_ms` (checked under the topology lock, which a declaration holds while it
    /// counts as a use).
    pub fn expire_queue(&self, queue: &QueueRef, now_ms: u64) {
        if self.remove_queue_if(queue, || queue.is_unused_at(now_ms)) {
            tracing::info!(queue = %queue.describe().escape_debug(), "queue unused for its x-expires period: deleted");
        }
    }

    /// Deletes every exclusive queue owned by a closing connection.
    pub fn remove_exclusive_queues(&self, connection_id: u64) {
        let owned: Vec<QueueRef> = {
            let t = self.topology.read();
            t.queues.values().filter(|q| q.exclusive_owner == Some(connection_id)).cloned().collect()
        };
        for q in owned {
            self.remove_queue(&q);
        }
    }

    // ---- policies ---------------------------------------------------------------------

    /// Sets (adds or replaces) a policy or operator policy: validated, stored, then applied to
    /// every queue and exchange (see [`crate::policy`]). Setting what is already set changes
    /// nothing.
    pub fn set_policy(&self, spec: PolicySpec) -> Result<()> {
        let policy = Policy::new(spec)?;
        let _one_at_a_time = self.policy_commands.lock();
        let changed = {
            let mut t = self.write_topology();
            let current = t.policies.get(policy.kind, &policy.name);
            if current.is_some_and(|p| **p == policy) {
                return Ok(());
            }
            if current.is_none() && t.policies.len(policy.kind) >= POLICIES_MAX {
                tracing::warn!(vhost = ?self.name, limit = POLICIES_MAX, "policy refused: the vhost has the most allowed");
                return Err(BrokerError::PreconditionFailed(format!(
                    "Validation failed\n\nvhost '{}' has {POLICIES_MAX} policies of this kind already\n",
                    self.name
                )));
            }
            self.persist(&[Change::PutPolicy(policy.record(&self.name))])?;
            t.policies.put(policy);
            Self::reapply_policies(&mut t)
        };
        for (queue, applied) in changed {
            queue.apply_policy(applied);
        }
        Ok(())
    }

    /// Clears a policy or operator policy: stored, then every queue and exchange it applied to
    /// goes back to what else applies (its arguments, another policy).
    pub fn clear_policy(&self, kind: PolicyKind, name: &str) -> Result<()> {
        let _one_at_a_time = self.policy_commands.lock();
        let changed = {
            let mut t = self.write_topology();
            if t.policies.get(kind, name).is_none() {
                return Err(BrokerError::not_found(kind.noun(), name, self.name.to_string()));
            }
            let operator = kind == PolicyKind::Operator;
            self.persist(&[Change::DeletePolicy { vhost: self.name.to_string(), operator, name: name.to_owned() }])?;
            t.policies.remove(kind, name);
            Self::reapply_policies(&mut t)
        };
        for (queue, applied) in changed {
            queue.apply_policy(applied);
        }
        Ok(())
    }

    /// Applies the policies to every exchange now, and returns the queues whose policies
    /// changed, to be applied once the topology lock is released (a queue applying new limits
    /// may dead-letter, which routes).
    fn reapply_policies(t: &mut Topology) -> Vec<(QueueRef, Applied)> {
        let Topology { exchanges, queues, policies, .. } = t;
        for x in exchanges.values_mut() {
            let applied = policies.applied(Target::Exchange, x.name.as_bytes());
            if applied != x.policy {
                x.apply_policy(applied);
            }
        }
        let mut changed = Vec::new();
        for q in queues.values() {
            let applied = policies.applied(Target::Queue, q.name.as_bytes());
            if applied != q.policy() {
                changed.push((q.clone(), applied));
            }
        }
        changed
    }

    /// The vhost's policies (or operator policies), by name.
    pub fn policies(&self, kind: PolicyKind) -> Vec<Arc<Policy>> {
        self.topology.read().policies.list(kind).cloned().collect()
    }

    /// The policies applied to an exchange (`None`: no such exchange).
    pub fn exchange_policy(&self, name: &[u8]) -> Option<Applied> {
        self.topology.read().exchanges.get(name).map(|x| x.policy.clone())
    }

    // ---- routing ----------------------------------------------------------------------

    /// Routes a message published to `exchange` with `routing_keys` (the routing key first,
    /// then `CC`/`BCC` keys) and `headers` to queues, following exchange-to-exchange bindings
    /// and alternate exchanges. Each queue appears once in `out`.
    pub fn route<'h>(
        &self,
        exchange: &[u8],
        routing_keys: &[&[u8]],
        headers: impl Into<MessageHeaders<'h>>,
        out: &mut Vec<QueueRef>,
    ) -> Result<()> {
        self.route_inner(exchange, routing_keys, headers.into(), out, true).map(|_| ())
    }

    /// [`VHost::route`] for a dead letter: an internal exchange may be a dead-letter exchange
    /// (RabbitMQ refuses only clients' publishes to it).
    pub fn route_dead_letter<'h>(
        &self,
        exchange: &[u8],
        routing_keys: &[&[u8]],
        headers: impl Into<MessageHeaders<'h>>,
        out: &mut Vec<QueueRef>,
    ) -> Result<()> {
        self.route_inner(exchange, routing_keys, headers.into(), out, false).map(|_| ())
    }

    /// Routes a message released by `held`, a delayed exchange's hidden queue, through that
    /// exchange (as its inner type, with its bindings now). Nothing if the exchange is gone.
    pub fn route_released<'h>(
        &self,
        held: &QueueRef,
        routing_keys: &[&[u8]],
        headers: impl Into<MessageHeaders<'h>>,
        out: &mut Vec<QueueRef>,
    ) -> Result<()> {
        let current = {
            let t = self.topology.read();
            t.exchanges.get(&held.name).and_then(|x| x.held.as_ref()).is_some_and(|q| Arc::ptr_eq(q, held))
        };
        if !current {
            return Ok(());
        }
        self.route_inner(held.name.as_bytes(), routing_keys, headers.into(), out, false).map(|_| ())
    }

    /// Routes a message with one routing key through `cache`: a repeat of the cached exchange
    /// and key, with the topology unchanged since, skips the topology lock and every lookup.
    /// A route through a headers exchange depends on the message and is never cached.
    pub fn route_cached<'c, 'h>(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
        headers: impl Into<MessageHeaders<'h>>,
        cache: &'c mut RouteCache,
    ) -> Result<&'c [QueueRef]> {
        let headers = headers.into();
        let version = self.topology_version.load(Ordering::Acquire);
        if cache.hit(version, exchange, routing_key) {
            return Ok(cache.queues());
        }
        // Routes through the default exchange (one lookup) are never memoized: no lock for them.
        if !exchange.is_empty()
            && let Some(route) = self.memo.get(version, exchange, routing_key)
        {
            cache.fill_shared(version, exchange, routing_key, route);
            return Ok(cache.queues());
        }
        let out = cache.begin_fill();
        match self.route_inner(exchange, &[routing_key], headers, out, true) {
            Ok(Reuse { version, cacheable: true, memoizable }) => {
                if memoizable {
                    self.memo.insert(version, exchange, routing_key, out);
                }
                cache.fill(version, exchange, routing_key);
            }
            Ok(_) => {}
            Err(e) => {
                cache.begin_fill();
                return Err(e);
            }
        }
        Ok(cache.queues())
    }

    /// The topology version: it changes whenever exchanges, queues or bindings change.
    pub fn topology_version(&self) -> u64 {
        self.topology_version.load(Ordering::Acquire)
    }

    /// A write lock on the topology. If anything is changed through it, every [`RouteCache`]
    /// entry is invalidated when it is released; a passive or repeated declaration changes
    /// nothing and keeps the caches (RPC clients redeclare their reply queue on every call).
    fn write_topology(&self) -> TopologyWrite<'_> {
        TopologyWrite { guard: self.topology.write(), version: &self.topology_version, changed: false }
    }

    /// Routes into `out`; says for which topology version the result holds and whether it
    /// may be reused (not when a headers exchange took part) and is worth sharing in the memo
    /// (a topic or fanout exchange took part). `from_client`: an internal exchange refuses it.
    fn route_inner(
        &self,
        exchange: &[u8],
        routing_keys: &[&[u8]],
        headers: MessageHeaders<'_>,
        out: &mut Vec<QueueRef>,
        from_client: bool,
    ) -> Result<Reuse> {
        let t = self.topology.read();
        let version = self.topology_version.load(Ordering::Acquire);
        let mut cacheable = true;
        let Some(start) = t.exchanges.get(exchange) else {
            let name = String::from_utf8_lossy(exchange).into_owned();
            return Err(BrokerError::not_found("exchange", name, self.name.to_string()));
        };
        if start.internal && from_client {
            return Err(BrokerError::AccessRefused(format!(
                "cannot publish to internal {}",
                self.exchange_what(&start.name)
            )));
        }
        if exchange.is_empty() {
            // The default exchange: every queue is bound by its name.
            for key in routing_keys {
                if let Some(q) = t.queues.get(*key)
                    && !out.iter().any(|o| Arc::ptr_eq(o, q))
                {
                    out.push(q.clone());
                }
            }
            return Ok(Reuse { version, cacheable: true, memoizable: false });
        }
        let mut memoizable = false;
        let mut visited: HashSet<&[u8]> = HashSet::new();
        let mut work: Vec<&Exchange> = vec![start];
        let decoded = std::cell::OnceCell::new();
        let mut dests = Vec::new();
        while let Some(x) = work.pop() {
            if !visited.insert(x.name.as_bytes()) {
                continue;
            }
            if visited.len() > ROUTE_EXCHANGES_MAX {
                tracing::warn!(
                    vhost = ?self.name,
                    exchange = ?String::from_utf8_lossy(exchange),
                    limit = ROUTE_EXCHANGES_MAX,
                    "route reached more exchanges than the limit; delivered to the queues found before it"
                );
                break;
            }
            dests.clear();
            let by_headers = x.routes_by_headers();
            cacheable &= !by_headers;
            memoizable |= x.memoizable();
            let table = if by_headers { headers.table(&decoded) } else { None };
            if x.held.is_some()
                && let Some(held) = x.holds(table)
            {
                // Delayed: held in the exchange's hidden queue, routed nowhere now (so, as with
                // RabbitMQ's plugin, its alternate exchange takes a copy at once).
                if !out.iter().any(|o| Arc::ptr_eq(o, held)) {
                    out.push(held.clone());
                }
                if let Some(ae) = x.alternate.as_ref().and_then(|name| t.exchanges.get(name)) {
                    work.push(ae);
                }
                continue;
            }
            // A duplicate routes nowhere (its alternate exchange takes it, as with the plugin).
            if x.dedup.is_none() || !x.is_duplicate(table, self.now_ms()) {
                x.route(routing_keys, table, &mut dests);
            }
            let before = out.len();
            let mut reached_exchange = false;
            for dest in dests.drain(..) {
                match dest {
                    Destination::Queue(name) => {
                        if let Some(q) = t.queues.get(&name)
                            && !out.iter().any(|o| Arc::ptr_eq(o, q))
                        {
                            out.push(q.clone());
                        }
                    }
                    Destination::Exchange(name) => {
                        if let Some(next) = t.exchanges.get(&name) {
                            reached_exchange = true;
                            work.push(next);
                        }
                    }
                }
            }
            if out.len() == before
                && !reached_exchange
                && let Some(ae) = x.alternate.as_ref().and_then(|name| t.exchanges.get(name))
            {
                work.push(ae);
            }
        }
        Ok(Reuse { version, cacheable, memoizable: memoizable && cacheable })
    }
}

/// Limits and deletion: what the node does to a vhost as a whole.
impl VHost {
    pub fn limits(&self) -> crate::limits::VhostLimits {
        *self.limits.read()
    }

    pub fn set_limits(&self, limits: crate::limits::VhostLimits) {
        *self.limits.write() = limits;
    }

    pub fn metadata(&self) -> VhostMetadata {
        self.metadata.lock().clone()
    }

    /// Replaces the description, tags and default queue type, stored first when durable.
    pub fn set_metadata(&self, metadata: VhostMetadata) -> Result<()> {
        let mut current = self.metadata.lock();
        if *current == metadata {
            return Ok(());
        }
        if let Some(p) = &self.persistence {
            p.apply(&[Change::PutVhostMetadata { vhost: self.name.to_string(), body: metadata.encode() }])?;
        }
        *current = metadata;
        Ok(())
    }

    /// The type name of exchange `name`, if it exists.
    pub fn exchange_kind(&self, name: &[u8]) -> Option<&'static str> {
        self.topology.read().exchanges.get(name).map(|x| x.type_name())
    }

    /// `max-queues`: a new queue beyond it is refused with RabbitMQ's 406.
    fn check_queue_limit(&self, queues: usize, name: &ShortStr) -> Result<()> {
        match self.limits.read().max_queues {
            Some(max) if queues >= max as usize => Err(BrokerError::PreconditionFailed(format!(
                "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                self.name
            ))),
            _ => Ok(()),
        }
    }

    /// Drops every queue (its messages and stored log with it) and every exchange, for the
    /// vhost's deletion; its metadata records are the caller's to delete. Consumers are told
    /// their queue is gone.
    pub(crate) fn delete_everything(&self) {
        let queues: Vec<QueueRef> = {
            let mut t = self.write_topology();
            self.count_churn(|c| c.deleted(t.queues.len() as u64));
            let mut queues: Vec<QueueRef> = t.queues.drain().map(|(_, q)| q).collect();
            for x in t.exchanges.values() {
                if let Some(journal) = x.dedup.as_ref().and_then(|c| c.lock().take_journal()) {
                    journal.destroy();
                }
            }
            queues.extend(t.exchanges.drain().filter_map(|(_, x)| x.held));
            t.bindings_to.clear();
            t.unbinding.clear();
            self.unbinder.cancel(self.services.get());
            queues
        };
        for q in queues {
            q.delete();
        }
    }
}

/// What [`VHost::route_inner`] says about reusing a route.
#[derive(Debug, Clone, Copy)]
struct Reuse {
    /// The topology version the route was computed at.
    version: u64,
    /// No headers exchange took part: the exchange and routing key determine the route.
    cacheable: bool,
    /// Cacheable, and a topic or fanout exchange took part: worth keeping in the memo.
    memoizable: bool,
}

/// The topology's write guard. Any mutable access marks it changed, and a changed topology
/// gets a new version before the lock is released (so a reader never pairs the new topology
/// with the old version, nor the reverse).
struct TopologyWrite<'a> {
    guard: RwLockWriteGuard<'a, Topology>,
    version: &'a AtomicU64,
    changed: bool,
}

impl Deref for TopologyWrite<'_> {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        &self.guard
    }
}

impl DerefMut for TopologyWrite<'_> {
    fn deref_mut(&mut self) -> &mut Topology {
        self.changed = true;
        &mut self.guard
    }
}

impl Drop for TopologyWrite<'_> {
    fn drop(&mut self) {
        // Runs before `guard` is dropped: still under the write lock.
        if self.changed {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> ShortStr {
        ShortStr::try_from(text).expect("short string")
    }

    /// Bindings, in either index, from or to an exchange or queue that does not exist.
    fn dangling_bindings(t: &Topology) -> usize {
        let exists = |d: &Destination| match d {
            Destination::Queue(q) => t.queues.contains_key(q),
            Destination::Exchange(x) => t.exchanges.contains_key(x),
        };
        let forward = t.exchanges.values().flat_map(Exchange::bindings).filter(|(d, _, _)| !exists(d)).count();
        let reverse = t
            .bindings_to
            .iter()
            .flat_map(|(d, list)| list.iter().map(move |(source, _, _)| (d, source)))
            .filter(|(d, source)| !exists(d) || !t.exchanges.contains_key(*source))
            .count();
        forward + reverse
    }

    /// root → x4999 → … → x0 → q, every x auto-delete: deleting q deletes every x, however
    /// long the chain, and leaves root with no binding.
    #[test]
    fn a_long_auto_delete_cascade_runs_to_its_end() {
        const CHAIN: usize = 5_000;
        let vhost = VHost::new("/");
        let none = FieldTable::new();
        let x = |i: usize| s(&format!("x{i}"));
        vhost.declare_queue(&QueueDeclare { name: s("q"), ..Default::default() }, 1).expect("declare");
        for i in 0..CHAIN {
            let d = ExchangeDeclare { name: x(i), kind: "fanout".into(), auto_delete: true, ..Default::default() };
            vhost.declare_exchange(&d).expect("declare");
            let dest = if i == 0 { Destination::Queue(s("q")) } else { Destination::Exchange(x(i - 1)) };
            vhost.bind(dest, &x(i), &s(""), &none, 1).expect("bind");
        }
        let root = ExchangeDeclare { name: s("root"), kind: "fanout".into(), ..Default::default() };
        vhost.declare_exchange(&root).expect("declare");
        vhost.bind(Destination::Exchange(x(CHAIN - 1)), &s("root"), &s(""), &none, 1).expect("bind");
        let mut queues = Vec::new();
        vhost.route(b"root", &[b""], None, &mut queues).expect("route");
        assert!(queues.is_empty(), "q is further than {ROUTE_EXCHANGES_MAX} exchanges away");

        vhost.delete_queue(&s("q"), false, false, 1).expect("delete");
        let t = vhost.topology.read();
        assert_eq!((0..CHAIN).filter(|&i| t.exchanges.contains_key(&x(i))).count(), 0);
        assert_eq!(t.exchanges.get(&s("root")).map(Exchange::binding_count), Some(0));
        assert_eq!(dangling_bindings(&t), 0);
    }

    /// Deleting an exchange drops its bindings from every destination's reverse list in one
    /// walk per destination, and leaves other exchanges' bindings to the same destinations.
    #[test]
    fn deleting_an_exchange_with_many_bindings_leaves_only_the_others() {
        const KEYS: usize = 20_000;
        let vhost = VHost::new("/");
        let none = FieldTable::new();
        for q in ["q1", "q2"] {
            vhost.declare_queue(&QueueDeclare { name: s(q), ..Default::default() }, 1).expect("declare");
        }
        for (x, kind) in [("x", "direct"), ("y", "direct"), ("e", "fanout")] {
            vhost
                .declare_exchange(&ExchangeDeclare { name: s(x), kind: kind.into(), ..Default::default() })
                .expect("x");
        }
        for i in 0..KEYS {
            let dest = if i % 2 == 0 { Destination::Queue(s("q1")) } else { Destination::Queue(s("q2")) };
            vhost.bind(dest, &s("x"), &s(&format!("k{i}")), &none, 1).expect("bind");
        }
        vhost.bind(Destination::Exchange(s("e")), &s("x"), &s("to-e"), &none, 1).expect("bind");
        vhost.bind(Destination::Queue(s("q1")), &s("y"), &s("k0"), &none, 1).expect("bind");
        vhost.delete_exchange(&s("x"), false).expect("delete");
        let t = vhost.topology.read();
        assert_eq!(dangling_bindings(&t), 0);
        let sources = |q: &str| -> Vec<String> {
            let dest = Destination::Queue(s(q));
            t.bindings_to.get(&dest).map_or(Vec::new(), |list| list.iter().map(|(x, _, _)| x.to_string()).collect())
        };
        assert_eq!(sources("q1"), vec!["y".to_string()]);
        assert!(sources("q2").is_empty());
        assert!(!t.bindings_to.contains_key(&Destination::Exchange(s("e"))));
    }

    /// `n` bindings of queue `q` to direct exchange `x`, keys `k0`…
    fn bind_many(vhost: &VHost, x: &str, q: &str, n: usize) {
        for i in 0..n {
            vhost.bind(Destination::Queue(s(q)), &s(x), &s(&format!("k{i}")), &FieldTable::new(), 1).expect("bind");
        }
    }

    fn routed(vhost: &VHost, x: &str, key: &str) -> Vec<String> {
        let mut queues = Vec::new();
        vhost.route(x.as_bytes(), &[key.as_bytes()], None, &mut queues).expect("route");
        queues.iter().map(|q| q.name.to_string()).collect()
    }

    fn listed_to(vhost: &VHost, q: &str) -> usize {
        let to_q = |d: &Destination| matches!(d, Destination::Queue(n) if n.as_bytes() == q.as_bytes());
        vhost.binding_views().iter().filter(|b| !b.source.is_empty() && to_q(&b.destination)).count()
    }

    /// A queue deleted with more bindings than a step removes is unroutable and unlisted at
    /// once; its bindings leave their exchanges a step at a time, the lock released between
    /// steps; an auto-delete source goes with its last binding.
    #[test]
    fn a_queue_deleted_with_many_bindings_is_unbound_step_by_step_and_unroutable_from_the_start() {
        let n = 2 * UNBIND_STEP_MAX + 10;
        let vhost = VHost::new("/");
        for q in ["q", "other"] {
            vhost.declare_queue(&QueueDeclare { name: s(q), ..Default::default() }, 1).expect("declare");
        }
        for (x, auto_delete) in [("x", false), ("a", true)] {
            let d = ExchangeDeclare { name: s(x), kind: "direct".into(), auto_delete, ..Default::default() };
            vhost.declare_exchange(&d).expect("declare");
        }
        bind_many(&vhost, "x", "q", n);
        bind_many(&vhost, "x", "other", 1);
        bind_many(&vhost, "a", "q", 1);
        vhost.delete_queue(&s("q"), false, false, 1).expect("delete");
        assert!(vhost.unbinding_pending());
        assert!(routed(&vhost, "x", "k1").is_empty() && routed(&vhost, "x", &format!("k{}", n - 1)).is_empty());
        assert_eq!(routed(&vhost, "x", "k0"), ["other"]);
        assert_eq!(listed_to(&vhost, "q"), 0, "not listed while being removed");
        let mut steps = 1;
        while !vhost.unbind_deleted() {
            steps += 1;
        }
        assert!(steps >= 3, "{n} bindings take several steps, took {steps}");
        let t = vhost.topology.read();
        assert_eq!(dangling_bindings(&t), 0);
        assert!(t.unbinding.is_empty());
        assert_eq!(t.exchanges.get(&s("x")).map(Exchange::binding_count), Some(1));
        assert!(!t.exchanges.contains_key(&s("a")), "the auto-delete exchange went with its last binding");
    }

    /// A queue declared again under a deleted queue's name while its bindings are still being
    /// removed inherits none of them.
    #[test]
    fn a_queue_declared_again_under_its_name_inherits_no_binding_being_removed() {
        let vhost = VHost::new("/");
        vhost.declare_queue(&QueueDeclare { name: s("q"), ..Default::default() }, 1).expect("declare");
        let d = ExchangeDeclare { name: s("x"), kind: "direct".into(), ..Default::default() };
        vhost.declare_exchange(&d).expect("declare");
        bind_many(&vhost, "x", "q", UNBIND_STEP_MAX + 1);
        vhost.delete_queue(&s("q"), false, false, 1).expect("delete");
        assert!(vhost.unbinding_pending());
        vhost.declare_queue(&QueueDeclare { name: s("q"), ..Default::default() }, 1).expect("declare again");
        assert!(!vhost.unbinding_pending());
        assert!(routed(&vhost, "x", "k0").is_empty());
        assert_eq!(listed_to(&vhost, "q"), 0);
        bind_many(&vhost, "x", "q", 1);
        assert_eq!(routed(&vhost, "x", "k0"), ["q"], "bound again from scratch");
        assert_eq!(dangling_bindings(&vhost.topology.read()), 0);
    }
}
