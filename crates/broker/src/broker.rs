//! The broker service: what one Lepus node holds — vhosts, users, the connection registry,
//! the clock and timer service, and the durability its confirms wait for. Front ends (AMQP
//! today; HTTP, the CLI and other protocols next) reach the model through a shared [`Broker`];
//! users and vhosts change through [`crate::command::NodeCommand`]s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::alarms::{AlarmLimits, Alarms, Pager, ResourceProbe};
use crate::clock::ClockRef;
use crate::connections::Registry;
use crate::durability::Durability;
use crate::limits::UserLimits;
use crate::outlet::Wake;
use crate::page_sweep::PageSweep;
use crate::permissions::{Access, Permissions};
use crate::persist::PersistenceRef;
use crate::publish::Publisher;
use crate::queue::Services;
use crate::rates::{RateCell, RateSampler, Rates};
use crate::stats::{CHURN_COUNT, QueueChurn};
use crate::timer::TimerService;
use crate::users::Users;
use crate::vhost::VHost;

pub type BrokerRef = Arc<Broker>;

#[derive(Debug)]
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<Users>,
    /// Who may do what where ([`crate::permissions`]), and the version an [`Access`] is
    /// checked against: raised by every change.
    permissions: RwLock<Permissions>,
    permissions_version: AtomicU64,
    user_limits: RwLock<HashMap<String, UserLimits>>,
    connections: Registry,
    clock: ClockRef,
    timers: Arc<TimerService>,
    durability: Durability,
    /// Where vhosts and users are stored (none: in memory only).
    persistence: Option<PersistenceRef>,
    /// Held by a node command from its check to its change in memory, so node commands reach
    /// the disk in the order they apply; logins never wait for it.
    node_commands: parking_lot::Mutex<()>,
    /// Memory and disk alarms ([`crate::alarms`]); none is set until a probe is installed.
    alarms: Arc<Alarms>,
    /// Queue churn, counted by the vhosts.
    churn: Arc<QueueChurn>,
    /// The broker-wide message rates, and what samples them ([`crate::rates`]).
    rates: RateCell,
    /// Rates of [`Broker::churn`]'s counts.
    churn_rates: RateCell<CHURN_COUNT>,
    sampler: OnceLock<Arc<RateSampler>>,
    /// The memory-pressure paging sweep ([`crate::page_sweep`]).
    page_sweep: Arc<PageSweep>,
    /// Retries of a failed store commit on the broker's clock ([`crate::store_retry`]).
    store_retry: OnceLock<Arc<crate::store_retry::StoreRetry>>,
}

/// What a broker is made of at start.
pub struct BrokerParts {
    /// The vhosts, restored from storage or new.
    pub vhosts: Vec<VHost>,
    /// The users, restored from storage or the configured default.
    pub users: Users,
    /// Permissions and per-user limits (per-vhost limits are the vhosts').
    pub access_control: AccessControl,
    pub clock: ClockRef,
    pub persistence: Option<PersistenceRef>,
    /// Wakes whatever drives the timer service (the server's timer task) when its earliest
    /// deadline moves earlier.
    pub timer_wake: Box<dyn Wake>,
}

/// Who may do what, as restored or configured at start.
#[derive(Debug, Default)]
pub struct AccessControl {
    pub permissions: Permissions,
    pub user_limits: HashMap<String, UserLimits>,
}

/// Memory above the paging fraction: the store tells every queue (one flag they read when
/// past the head of their window), and every queue pages out, idle ones included, a step at
/// a time on the timer service ([`crate::page_sweep`]).
impl Pager for Broker {
    fn memory_pressure(&self, on: bool) {
        let Some(persistence) = &self.persistence else { return };
        persistence.store.set_node_memory_pressure(on);
        if !on {
            return;
        }
        let queues = self.vhosts().iter().flat_map(|vhost| vhost.queue_list()).collect();
        self.page_sweep.start(queues);
    }
}

/// A vhost as the broker holds it: shared, and connected to the clock and timers.
fn attached(vhost: VHost, clock: &ClockRef, timers: &Arc<TimerService>, churn: &Arc<QueueChurn>) -> Arc<VHost> {
    Arc::new_cyclic(|me| {
        let (clock, timers, churn) = (clock.clone(), timers.clone(), churn.clone());
        vhost.attach(Services { clock, timers, vhost: me.clone(), churn });
        vhost
    })
}

impl Broker {
    pub fn new(parts: BrokerParts) -> Broker {
        let BrokerParts { vhosts, users, access_control, clock, persistence, timer_wake } = parts;
        let timers = Arc::new(TimerService::new(clock.clone(), timer_wake));
        let churn = Arc::new(QueueChurn::default());
        let page_sweep = Arc::new(PageSweep::new(timers.clone()));
        let vhosts = vhosts.into_iter().map(|v| (v.name.to_string(), attached(v, &clock, &timers, &churn))).collect();
        let durability = Durability::new(persistence.as_ref().map(|p| p.store.clone()));
        Broker {
            vhosts: RwLock::new(vhosts),
            users: RwLock::new(users),
            permissions: RwLock::new(access_control.permissions),
            permissions_version: AtomicU64::new(1),
            user_limits: RwLock::new(access_control.user_limits),
            connections: Registry::default(),
            clock,
            timers,
            durability,
            persistence,
            node_commands: parking_lot::Mutex::new(()),
            alarms: Arc::default(),
            churn,
            rates: RateCell::default(),
            churn_rates: RateCell::default(),
            sampler: OnceLock::new(),
            page_sweep,
            store_retry: OnceLock::new(),
        }
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// Every vhost, by name.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let mut all: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn users(&self) -> RwLockReadGuard<'_, Users> {
        self.users.read()
    }

    pub(crate) fn users_mut(&self) -> RwLockWriteGuard<'_, Users> {
        self.users.write()
    }

    /// What `user` may do in `vhost` now (see [`crate::permissions`]).
    pub fn access(&self, user: &str, vhost: &str) -> Access {
        let permissions = self.permissions.read();
        // Read under the lock that changes take before raising it: never newer than the grants.
        let version = self.permissions_version.load(Ordering::Acquire);
        Access::new(user, vhost, permissions.get(user, vhost).cloned(), version)
    }

    /// Raised by every change of permissions; an [`Access`] of an older version is stale.
    pub fn permissions_version(&self) -> u64 {
        self.permissions_version.load(Ordering::Acquire)
    }

    pub fn permissions(&self) -> RwLockReadGuard<'_, Permissions> {
        self.permissions.read()
    }

    /// Changes permissions and raises the version, under the write lock.
    pub(crate) fn edit_permissions(&self, f: impl FnOnce(&mut Permissions)) {
        let mut permissions = self.permissions.write();
        f(&mut permissions);
        self.permissions_version.fetch_add(1, Ordering::AcqRel);
    }

    pub fn user_limits(&self, user: &str) -> UserLimits {
        self.user_limits.read().get(user).copied().unwrap_or_default()
    }

    /// Every user's limits that are set, by user.
    pub fn all_user_limits(&self) -> Vec<(String, UserLimits)> {
        let mut all: Vec<_> = self.user_limits.read().iter().map(|(u, l)| (u.clone(), *l)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(crate) fn set_user_limits(&self, user: &str, limits: UserLimits) {
        let mut all = self.user_limits.write();
        if limits == UserLimits::default() {
            all.remove(user);
        } else {
            all.insert(user.to_owned(), limits);
        }
    }

    /// Removes a vhost from the node's map (its deletion does the rest).
    pub(crate) fn take_vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.write().remove(name)
    }

    pub fn connections(&self) -> &Registry {
        &self.connections
    }

    pub fn clock(&self) -> &ClockRef {
        &self.clock
    }

    /// The one timer service: TTLs, expiries, delays and timeouts schedule here.
    pub fn timers(&self) -> &Arc<TimerService> {
        &self.timers
    }

    /// The node's memory and disk alarms.
    pub fn alarms(&self) -> &Arc<Alarms> {
        &self.alarms
    }

    /// Starts the memory and disk alarms: `probe` is read now and then on the timer service.
    pub fn watch_resources(&self, probe: Box<dyn ResourceProbe>, limits: AlarmLimits) {
        self.alarms.start(probe, limits, &self.timers);
    }

    /// Pages queues out while memory is above `paging_ratio` of the memory alarm's limit
    /// (RabbitMQ's `vm_memory_high_watermark_paging_ratio`; above 1.0, never).
    pub fn page_under_memory_pressure(self: &Arc<Self>, paging_ratio: f64) {
        let pager: Weak<dyn Pager> = Arc::downgrade(self) as _;
        self.alarms.page_with(pager, paging_ratio);
    }

    pub fn durability(&self) -> &Durability {
        &self.durability
    }

    pub(crate) fn node_command_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.node_commands.lock()
    }

    pub(crate) fn persistence(&self) -> Option<&PersistenceRef> {
        self.persistence.as_ref()
    }

    /// Adds a vhost (see [`crate::command::NodeCommand`]).
    pub(crate) fn insert_vhost(&self, vhost: VHost) {
        let mut vhosts = self.vhosts.write();
        vhosts.entry(vhost.name.to_string()).or_insert_with(|| attached(vhost, &self.clock, &self.timers, &self.churn));
    }

    /// A publisher into `vhost` on this broker's clock.
    pub fn publisher(&self, vhost: Arc<VHost>) -> Publisher {
        Publisher::new(vhost, self.clock.clone())
    }

    /// Queue churn since start: (declared, created, deleted).
    pub fn queue_churn(&self) -> (u64, u64, u64) {
        self.churn.totals()
    }

    /// Starts sampling message rates every [`crate::rates::SAMPLE_INTERVAL_MS`] on the
    /// broker's clock (once; the server calls it when it starts).
    pub fn start_rate_sampling(self: &Arc<Self>) {
        crate::rates::start(self, &self.sampler);
    }

    /// Samples the broker's, every queue's, exchange's and connection's counters and the
    /// churn at `now_ms` (the sampler's timer).
    pub fn sample_rates(&self, now_ms: u64) {
        self.rates.sample(now_ms, self.connections.totals());
        self.churn_rates.sample_counts(now_ms, self.churn());
        self.connections.sample_io(now_ms);
        let live: Vec<String> = self.vhosts().iter().map(|v| v.name.to_string()).collect();
        self.connections.sample_vhosts(now_ms, &live);
        for vhost in self.vhosts() {
            vhost.sample_exchange_rates(now_ms);
            for queue in vhost.queue_list() {
                queue.sample_rates(now_ms);
            }
        }
    }

    /// Churn since start, in the order of [`crate::stats::CHURN_NAMES`]: connections opened
    /// and closed, channels opened and closed, queues declared, created and deleted.
    pub fn churn(&self) -> [u64; CHURN_COUNT] {
        let (conn_opened, conn_closed) = self.connections.churn();
        let (ch_opened, ch_closed) = self.connections.channel_churn();
        let (declared, created, deleted) = self.churn.totals();
        [conn_opened, conn_closed, ch_opened, ch_closed, declared, created, deleted]
    }

    /// Per-second rates of [`Broker::churn`] from the last two samples.
    pub fn churn_rates(&self) -> [f64; CHURN_COUNT] {
        self.churn_rates.per_second()
    }

    /// The broker-wide message rates (all connections' counters).
    pub fn rates(&self) -> Rates {
        self.rates.rates()
    }

    /// Retries a failed message store commit every `interval_ms` of the broker's clock (once;
    /// the server opens the store with `retry_interval_ms` 0, so these are its only retries).
    pub fn retry_store_every(&self, interval_ms: u64) {
        let Some(persistence) = &self.persistence else { return };
        if self.store_retry.get().is_none() {
            let _ =
                self.store_retry.set(crate::store_retry::start(persistence.store.clone(), &self.timers, interval_ms));
        }
    }

    /// Queues the memory-pressure paging sweep has still to page out.
    pub fn paging_sweep_remaining(&self) -> usize {
        self.page_sweep.remaining()
    }
}
