//! The connection registry: who is connected, from where, as whom, to which vhost, with how
//! which channels (each with its statistics record, see [`crate::channel_stats`]) and what
//! they have published and consumed. Front ends register a
//! connection once it is open and deregister it when it ends; the management API, metrics
//! and vhost deletion read it. Protocol-neutral: a connection names its protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use lepus_protocol::FieldTable;
use parking_lot::Mutex;

use crate::outlet::Wake;

use crate::channel_stats::{ChannelRef, ChannelStats};
use crate::io_stats::IoStats;
use crate::outlet::ConsumerId;
use crate::stats::{Counters, SizeHistogram, SizeSnapshot, Snapshot};
use crate::vhost_stats::{VhostCounts, VhostStats, VhostView};

/// A registered connection. Fixed at registration, except its channels and counters.
#[derive(Debug)]
pub struct ConnectionInfo {
    pub id: u64,
    pub peer: SocketAddr,
    /// "AMQP 0-9-1" and, later, other protocols.
    pub protocol: &'static str,
    pub user: String,
    pub vhost: String,
    /// What the client said about itself (AMQP: `client_properties` of `start-ok`).
    pub client_properties: FieldTable,
    pub connected_at_ms: u64,
    /// Open channels (sessions): the length of `channel_list`, set with it.
    pub channels: AtomicU32,
    /// The open channels' records, by number; changed when a channel opens or closes.
    pub channel_list: Mutex<Vec<ChannelRef>>,
    /// Written by the connection's own task only (see [`crate::stats`]).
    pub stats: Counters,
    /// Of `stats`' deliveries, gets, redeliveries and acks, those of quorum queues (metrics
    /// label them by queue type); written by its own task only.
    pub quorum_stats: Counters,
    /// Sizes of the messages it published, written by its own task only.
    pub sizes: SizeHistogram,
    /// Bytes and socket calls in and out, published by its own task only.
    pub io: IoStats,
    /// How the broker asks the connection to close (management, vhost deletion).
    pub closer: Closer,
    /// A resource alarm holds its publishes: set and cleared by its own task, on those
    /// transitions only.
    pub alarm_blocked: AtomicBool,
    /// What it negotiated before it opened.
    pub negotiated: Negotiated,
}

/// What a connection negotiated, as `/api/connections` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The SASL mechanism it logged in with (`PLAIN`, `AMQPLAIN`, `EXTERNAL`).
    pub auth_mechanism: &'static str,
    pub channel_max: u16,
    pub frame_max: u32,
    /// The heartbeat interval agreed, in seconds (RabbitMQ's `timeout`); 0: none.
    pub heartbeat_s: u16,
    /// Its TLS session, on a TLS listener.
    pub tls: Option<TlsSession>,
}

/// A TLS session's protocol version and cipher suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// As RabbitMQ names it: `tlsv1.3`, `tlsv1.2`.
    pub protocol: &'static str,
    /// The suite's IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
}

/// A connection's state as RabbitMQ 3.10's `/api/connections` shows it under an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Running,
    /// An alarm is set and the connection has not sent message content since.
    Blocking,
    /// It sent message content during an alarm, which is held until the alarm clears.
    Blocked,
}

impl ConnectionState {
    pub fn name(self) -> &'static str {
        match self {
            ConnectionState::Running => "running",
            ConnectionState::Blocking => "blocking",
            ConnectionState::Blocked => "blocked",
        }
    }
}

impl ConnectionInfo {
    /// Enters channel `number` (its connection's task, at `channel.open`) and returns its
    /// record; the channel count follows.
    pub fn open_channel(&self, number: u16) -> ChannelRef {
        let record = Arc::new(ChannelStats::new(number));
        let mut list = self.channel_list.lock();
        let at = list.partition_point(|c| c.number < number);
        list.insert(at, record.clone());
        self.channels.store(list.len() as u32, Ordering::Relaxed);
        record
    }

    /// Removes channel `number` (closed); the channel count follows.
    pub fn close_channel(&self, number: u16) {
        let mut list = self.channel_list.lock();
        list.retain(|c| c.number != number);
        self.channels.store(list.len() as u32, Ordering::Relaxed);
    }

    /// The open channels' records, by number.
    pub fn channel_records(&self) -> Vec<ChannelRef> {
        self.channel_list.lock().clone()
    }

    /// Its state, given whether any alarm is set now (every connection is `blocking` then,
    /// publisher or not, as in RabbitMQ).
    pub fn state(&self, alarm_set: bool) -> ConnectionState {
        if self.alarm_blocked.load(Ordering::Relaxed) {
            ConnectionState::Blocked
        } else if alarm_set {
            ConnectionState::Blocking
        } else {
            ConnectionState::Running
        }
    }
}

/// A request to close a connection, and the wake-up that makes its task look at it.
pub struct Closer {
    reason: Mutex<Option<String>>,
    wake: Box<dyn Wake>,
}

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closer").field("reason", &*self.reason.lock()).finish_non_exhaustive()
    }
}

impl Closer {
    pub fn new(wake: Box<dyn Wake>) -> Closer {
        Closer { reason: Mutex::new(None), wake }
    }

    /// Asks for the close; the first reason given is kept.
    pub fn request(&self, reason: &str) {
        self.reason.lock().get_or_insert_with(|| reason.to_owned());
        self.wake.wake();
    }

    /// The reason, once, for the connection's task.
    pub fn take_request(&self) -> Option<String> {
        self.reason.lock().take()
    }
}

pub type ConnectionRef = Arc<ConnectionInfo>;

/// The connection limits [`Registry::admit`] applies.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The node's `connection_max`.
    pub node_max: usize,
    /// The vhost's `max-connections`.
    pub vhost_max: Option<u32>,
    /// The user's `max-connections`.
    pub user_max: Option<u32>,
}

/// The limit that refused a connection, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Node(usize),
    Vhost(u32),
    User(u32),
}

/// Every open connection, and the counts of those that closed.
#[derive(Debug)]
pub struct Registry {
    open: Mutex<HashMap<u64, ConnectionRef>>,
    next_id: AtomicU64,
    next_consumer_id: AtomicU64,
    /// Counters of connections that have gone.
    retired: Counters,
    retired_quorum: Counters,
    retired_sizes: SizeHistogram,
    opened_total: AtomicU64,
    closed_total: AtomicU64,
    /// Channels ever opened (those closed are these less the ones open now).
    channels_opened_total: AtomicU64,
    /// Per vhost: the closed connections' counts, and the rates of the vhost's totals.
    vhost_stats: VhostStats,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            open: Mutex::default(),
            next_id: AtomicU64::new(1),
            next_consumer_id: AtomicU64::new(1),
            retired: Counters::default(),
            retired_quorum: Counters::default(),
            retired_sizes: SizeHistogram::default(),
            opened_total: AtomicU64::new(0),
            closed_total: AtomicU64::new(0),
            channels_opened_total: AtomicU64::new(0),
            vhost_stats: VhostStats::default(),
        }
    }
}

impl Registry {
    /// A fresh connection id (never reused while the broker runs).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh consumer id, unique in the broker (see [`ConsumerId`]).
    pub fn next_consumer_id(&self) -> ConsumerId {
        ConsumerId(self.next_consumer_id.fetch_add(1, Ordering::Relaxed))
    }

    pub fn register(&self, info: ConnectionInfo) -> ConnectionRef {
        let info = Arc::new(info);
        self.open.lock().insert(info.id, info.clone());
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        info
    }

    /// [`Registry::register`] if the node, the connection's vhost and its user are under
    /// their connection limits (checked and entered in one step, so concurrent opens cannot
    /// pass a limit together); otherwise the limit that refused it.
    pub fn admit(&self, info: ConnectionInfo, limits: Admission) -> Result<ConnectionRef, Refusal> {
        let mut open = self.open.lock();
        if open.len() >= limits.node_max {
            return Err(Refusal::Node(limits.node_max));
        }
        // Counted only when a limit is set (rare), by a scan of the open connections.
        if let Some(max) = limits.vhost_max
            && open.values().filter(|c| c.vhost == info.vhost).count() >= max as usize
        {
            return Err(Refusal::Vhost(max));
        }
        if let Some(max) = limits.user_max
            && open.values().filter(|c| c.user == info.user).count() >= max as usize
        {
            return Err(Refusal::User(max));
        }
        let info = Arc::new(info);
        open.insert(info.id, info.clone());
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        Ok(info)
    }

    /// Channels open on all of `user`'s connections.
    pub fn user_channels(&self, user: &str) -> u64 {
        let open = self.open.lock();
        open.values().filter(|c| c.user == user).map(|c| u64::from(c.channels.load(Ordering::Relaxed))).sum()
    }

    /// Asks every connection that `select` picks to close with `reason`; returns how many.
    pub fn close_where(&self, select: impl Fn(&ConnectionInfo) -> bool, reason: &str) -> usize {
        let picked: Vec<ConnectionRef> = self.open.lock().values().filter(|c| select(c)).cloned().collect();
        for c in &picked {
            c.closer.request(reason);
        }
        picked.len()
    }

    /// Removes a connection, keeping its counts in the totals.
    pub fn deregister(&self, id: u64) {
        let mut open = self.open.lock();
        let Some(info) = open.remove(&id) else { return };
        // Under the lock, so `totals` never sees it both open and retired.
        self.retired.add_shared(&info.stats.snapshot());
        self.retired_quorum.add_shared(&info.quorum_stats.snapshot());
        self.retired_sizes.add_shared(&info.sizes.snapshot());
        self.vhost_stats.retire(&info.vhost, info.stats.snapshot(), info.io.totals());
        self.closed_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks an open connection to close, telling its client `reason` (RabbitMQ's management
    /// API: `CONNECTION_FORCED - Closed via management plugin`). False if it is not registered
    /// (never opened, or gone); a connection already closing ignores the request.
    pub fn close(&self, id: u64, reason: &str) -> bool {
        let Some(info) = self.get(id) else { return false };
        info.closer.request(reason);
        true
    }

    pub fn get(&self, id: u64) -> Option<ConnectionRef> {
        self.open.lock().get(&id).cloned()
    }

    /// The open connections, in id order (the order they were accepted).
    pub fn list(&self) -> Vec<ConnectionRef> {
        let mut all: Vec<ConnectionRef> = self.open.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (opened, closed) since the broker started.
    pub fn churn(&self) -> (u64, u64) {
        (self.opened_total.load(Ordering::Relaxed), self.closed_total.load(Ordering::Relaxed))
    }

    /// Counts a channel opened (its connection's channel count is set by the connection).
    pub fn channel_opened(&self) {
        self.channels_opened_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Channels open now, on every open connection.
    pub fn channels(&self) -> u64 {
        let open = self.open.lock();
        open.values().map(|c| u64::from(c.channels.load(Ordering::Relaxed))).sum()
    }

    /// (opened, closed) channels since the broker started: every channel ever opened is open
    /// now or closed (a connection's end closes its channels).
    pub fn channel_churn(&self) -> (u64, u64) {
        let opened = self.channels_opened_total.load(Ordering::Relaxed);
        (opened, opened.saturating_sub(self.channels()))
    }

    /// Open connections that have published at least once (RabbitMQ counts publishing
    /// channels; a connection is as fine as the registry knows).
    pub fn publishers(&self) -> u64 {
        let open = self.open.lock();
        open.values().filter(|c| c.stats.get(crate::stats::Stat::Published) > 0).count() as u64
    }

    /// Samples every open connection's socket counters and its channels' counts (the
    /// broker's rate sampler).
    pub(crate) fn sample_io(&self, now_ms: u64) {
        for c in self.list() {
            c.io.sample(now_ms);
            for channel in c.channel_records() {
                channel.sample(now_ms);
            }
        }
    }

    /// Broker-wide sizes of published messages (open connections' and closed ones').
    pub fn message_sizes(&self) -> SizeSnapshot {
        self.sum_with_retired(self.retired_sizes.snapshot(), |c| c.sizes.snapshot())
    }

    /// Broker-wide counts: every open connection's plus those of the closed ones.
    pub fn totals(&self) -> Snapshot {
        self.sum_with_retired(self.retired.snapshot(), |c| c.stats.snapshot())
    }

    /// Of [`Registry::totals`], the counts from quorum queues (deliveries, gets, acks).
    pub fn quorum_totals(&self) -> Snapshot {
        self.sum_with_retired(self.retired_quorum.snapshot(), |c| c.quorum_stats.snapshot())
    }

    /// Each vhost's counts: its open connections' plus its closed ones' (under the registry's
    /// lock, as [`Registry::totals`]).
    fn vhost_counts(&self) -> HashMap<String, VhostCounts> {
        let open = self.open.lock();
        let mut sums = self.vhost_stats.retired();
        for c in open.values() {
            let (stats, io) = (c.stats.snapshot(), c.io.totals());
            match sums.get_mut(&c.vhost) {
                Some(sum) => {
                    sum.0 += stats;
                    sum.1 += io;
                }
                None => drop(sums.insert(c.vhost.clone(), (stats, io))),
            }
        }
        sums
    }

    /// Every vhost's message counts and socket bytes with their rates (vhosts nothing has
    /// connected to are absent).
    pub fn vhost_views(&self) -> HashMap<String, VhostView> {
        self.vhost_stats.views(self.vhost_counts())
    }

    /// Samples the rates of each of `live` vhosts (the broker's rate sampler); forgets the
    /// counts of vhosts not among them.
    pub(crate) fn sample_vhosts(&self, now_ms: u64, live: &[String]) {
        self.vhost_stats.sample(now_ms, &self.vhost_counts(), live);
    }

    /// `retired` plus what `read` gives of each open connection, under the registry's lock
    /// (so no connection is counted both open and retired).
    fn sum_with_retired<T: std::ops::AddAssign>(&self, retired: T, read: impl Fn(&ConnectionInfo) -> T) -> T {
        let open = self.open.lock();
        let mut sum = retired;
        for c in open.values() {
            sum += read(c);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stat;

    struct CountWake(std::sync::Arc<AtomicU32>);

    impl Wake for CountWake {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn info(registry: &Registry, user: &str) -> ConnectionInfo {
        ConnectionInfo {
            id: registry.next_id(),
            peer: "127.0.0.1:5000".parse().expect("address"),
            protocol: "AMQP 0-9-1",
            user: user.into(),
            vhost: "/".into(),
            client_properties: FieldTable::new(),
            connected_at_ms: 0,
            channels: AtomicU32::new(0),
            channel_list: Mutex::default(),
            stats: Counters::default(),
            quorum_stats: Counters::default(),
            sizes: SizeHistogram::default(),
            io: IoStats::default(),
            closer: Closer::new(Box::new(CountWake(Default::default()))),
            alarm_blocked: AtomicBool::new(false),
            negotiated: Negotiated::default(),
        }
    }

    #[test]
    fn the_state_is_blocked_once_held_and_blocking_while_an_alarm_is_set() {
        let r = Registry::default();
        let c = r.register(info(&r, "a"));
        assert_eq!(c.state(false), ConnectionState::Running);
        assert_eq!(c.state(true), ConnectionState::Blocking);
        c.alarm_blocked.store(true, Ordering::Relaxed);
        assert_eq!(c.state(true).name(), "blocked");
    }

    #[test]
    fn a_close_request_wakes_the_connection_and_is_taken_once() {
        let r = Registry::default();
        let wakes = std::sync::Arc::new(AtomicU32::new(0));
        let mut c = info(&r, "a");
        c.closer = Closer::new(Box::new(CountWake(wakes.clone())));
        let c = r.register(c);
        assert!(r.close(c.id, "first"));
        assert!(r.close(c.id, "second"));
        assert_eq!(wakes.load(Ordering::Relaxed), 2);
        assert_eq!(c.closer.take_request().as_deref(), Some("first"));
        assert_eq!(c.closer.take_request(), None);
        r.deregister(c.id);
        assert!(!r.close(c.id, "gone"), "not open any more");
    }

    #[test]
    fn admission_counts_per_node_vhost_and_user() {
        let r = Registry::default();
        let limits = |node_max, vhost_max, user_max| Admission { node_max, vhost_max, user_max };
        assert!(r.admit(info(&r, "a"), limits(2, Some(2), Some(1))).is_ok());
        assert_eq!(r.admit(info(&r, "a"), limits(2, Some(2), Some(1))).unwrap_err(), Refusal::User(1));
        assert_eq!(r.admit(info(&r, "b"), limits(2, Some(1), None)).unwrap_err(), Refusal::Vhost(1));
        assert!(r.admit(info(&r, "b"), limits(2, None, None)).is_ok());
        assert_eq!(r.admit(info(&r, "c"), limits(2, None, None)).unwrap_err(), Refusal::Node(2));
        assert_eq!(r.close_where(|c| c.user == "b", "bye"), 1);
    }

    #[test]
    fn channels_are_listed_by_number_and_counted() {
        let r = Registry::default();
        let c = r.register(info(&r, "a"));
        c.open_channel(3);
        c.open_channel(1);
        assert_eq!(c.channel_records().iter().map(|ch| ch.number).collect::<Vec<_>>(), [1, 3]);
        assert_eq!((c.channels.load(Ordering::Relaxed), r.user_channels("a")), (2, 2));
        c.close_channel(3);
        c.close_channel(7);
        assert_eq!(c.channel_records().iter().map(|ch| ch.number).collect::<Vec<_>>(), [1]);
        assert_eq!(r.channels(), 1);
    }

    #[test]
    fn totals_survive_deregistration() {
        let r = Registry::default();
        let a = r.register(info(&r, "a"));
        let b = r.register(info(&r, "b"));
        assert!(b.id > a.id);
        a.stats.add(Stat::Published, 5);
        b.stats.add(Stat::Published, 2);
        assert_eq!(r.totals().get(Stat::Published), 7);
        r.deregister(a.id);
        a.stats.add(Stat::Published, 100); // a gone connection's late writes are not counted
        assert_eq!(r.totals().get(Stat::Published), 7);
        assert_eq!(r.list().iter().map(|c| c.user.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(r.churn(), (2, 1));
        r.deregister(a.id);
        assert_eq!(r.churn(), (2, 1), "deregistering twice counts once");
    }
}
