//! The AMQP listeners: plain TCP and, when a certificate is configured, TLS. Both accept into
//! one pool of at most `handshake_max` sockets before `connection.open` (the TLS handshake
//! inside it), of which one source address holds at most `handshake_max_per_source` (its
//! sockets beyond are closed at once); open ones count against `connection_max` in the
//! broker's registry. Accepting is paced by `connection_rate_max` (`accept_rate`). Every
//! socket also holds one of the descriptors left for sockets ([`socket_max`]): the process's
//! limit minus the message store's budget and a reserve, so accepting stops (clients wait in
//! the listen backlog) before the store's share is touched. One task
//! per connection; a graceful shutdown closes every connection with 320 CONNECTION_FORCED and
//! waits for them to finish.
//!
//! With a data directory, start-up locks it, opens the metadata store and the message store
//! (with its group-commit thread), and restores every vhost: durable exchanges, queues,
//! bindings and the messages in the queues' logs.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use lepus_amqp::handshake_pool::HandshakePool;
use lepus_amqp::{Context, Limits, NotifyWake, stopped};
use lepus_broker::broker::AccessControl;
use lepus_broker::clock::{ClockRef, SystemClock};
use lepus_broker::command::{Command, Issuer};
use lepus_broker::limits::{UserLimits, VhostLimits};
use lepus_broker::permissions::{Grant, TopicGrant};
use lepus_broker::persist::{Persistence, PersistenceRef};
use lepus_broker::users::{User, Users};
use lepus_broker::{Broker, BrokerError, BrokerParts, BrokerRef, VHost};
use lepus_store::backend::{Backend, DirLock, FsBackend};
use lepus_store::meta::{BackendFactory, Change, LimitScope, MetaStore, PermissionRecord, Snapshot};
use lepus_store::store::{Committer, Store, StoreOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::tls::{Tls, TlsFiles};

/// A bound, not yet running broker.
pub struct Server {
    listener: TcpListener,
    /// The TLS listener and its (reloadable) configuration, when a certificate is configured.
    tls: Option<(TcpListener, Arc<Tls>)>,
    /// The management HTTP API's listener, unless turned off.
    management: Option<TcpListener>,
    /// The Prometheus metrics' listener, unless turned off.
    prometheus: Option<TcpListener>,
    config: Config,
    /// What the AMQP connections share: the broker service, limits, reply-to addresses.
    amqp: Arc<Context>,
    shutdown: Arc<watch::Sender<bool>>,
    /// Wakes the timer task when the earliest deadline moves earlier.
    timer_notify: Arc<Notify>,
    /// Keeps the group-commit thread and the data-directory lock for the broker's life
    /// (dropped last: the committer writes what is buffered before it stops).
    _storage: Option<(Committer, DirLock)>,
}

/// Asks a running [`Server`] to shut down.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        // `send` would drop the value while nobody subscribed yet (a shutdown requested
        // before the server task first ran); `send_replace` always stores it.
        self.0.send_replace(true);
    }
}

impl Server {
    /// Binds the listener; `config.port = 0` picks an ephemeral port.
    pub async fn bind(config: Config) -> io::Result<Server> {
        Server::bind_with_storage(config, StorageBackends::default()).await
    }

    /// [`Server::bind`] with the data directory's files reached through `backends` (tests
    /// inject I/O errors this way).
    pub async fn bind_with_storage(config: Config, backends: StorageBackends) -> io::Result<Server> {
        Server::bind_with_parts(config, backends, Arc::new(SystemClock::new())).await
    }

    /// [`Server::bind`] on the broker clock `clock` (tests move a [`lepus_broker::clock::ManualClock`]
    /// to drive heartbeats, timeouts and expiry without waiting).
    pub async fn bind_with_clock(config: Config, clock: ClockRef) -> io::Result<Server> {
        Server::bind_with_parts(config, StorageBackends::default(), clock).await
    }

    async fn bind_with_parts(config: Config, backends: StorageBackends, clock: ClockRef) -> io::Result<Server> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = bind(config.bind_address, config.port).await?;
        let tls = bind_tls(&config).await?;
        let management = bind_optional(&config, config.management_port).await?;
        let prometheus = bind_optional(&config, config.prometheus_port).await?;
        let opened = match &config.data_dir {
            Some(dir) => open_storage(dir, &config, backends)?,
            None => Opened {
                vhosts: vec![VHost::new("/")],
                users: default_users(&config),
                access_control: default_access(&config),
                persistence: None,
                storage: None,
            },
        };
        let timer_notify = Arc::new(Notify::new());
        let timer_wake = Box::new(NotifyWake(timer_notify.clone()));
        let storage = opened.storage;
        let broker = Broker::new(BrokerParts {
            vhosts: opened.vhosts,
            users: opened.users,
            access_control: opened.access_control,
            clock,
            persistence: opened.persistence,
            timer_wake,
        });
        set_policies(&broker, &config)?;
        watch_resources(&broker, &config);
        let broker = Arc::new(broker);
        broker.page_under_memory_pressure(config.memory_high_watermark_paging_ratio);
        broker.retry_store_every(config.store_retry_interval_ms);
        broker.start_rate_sampling();
        let amqp = Arc::new(Context::new(broker, limits(&config)));
        let (tx, _) = watch::channel(false);
        let shutdown = Arc::new(tx);
        Ok(Server { listener, tls, management, prometheus, config, amqp, shutdown, timer_notify, _storage: storage })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The TLS listener's address, if it runs.
    pub fn tls_local_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.tls.as_ref().map(|(listener, _)| listener.local_addr())
    }

    /// The TLS listener and its certificate files, as the management API shows and checks them.
    fn tls_files(&self) -> Option<lepus_management::TlsFiles> {
        let address = self.tls_local_addr()?.ok()?;
        Some(lepus_management::TlsFiles {
            listener: lepus_management::Listener { protocol: "amqp/ssl", address },
            certfile: self.config.tls_cert_file.clone()?,
            cacertfile: self.config.tls_ca_file.clone(),
        })
    }

    /// The TLS configuration, to reload it (SIGHUP, the management API); `None` without TLS.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.as_ref().map(|(_, tls)| tls.clone())
    }

    /// Serves the management API on `address` (port 0: an ephemeral port) instead of the
    /// configured one; returns the address bound. Tests use it to learn their port.
    pub async fn bind_management(&mut self, address: SocketAddr) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        self.management = Some(listener);
        Ok(bound)
    }

    /// Serves the Prometheus metrics on `address` (port 0: an ephemeral port) instead of the
    /// configured one; returns the address bound.
    pub async fn bind_prometheus(&mut self, address: SocketAddr) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        self.prometheus = Some(listener);
        Ok(bound)
    }

    /// Where the management API listens, if it is on.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The broker service this server fronts (for embedding, tests and other front ends).
    pub fn broker(&self) -> BrokerRef {
        self.amqp.broker.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Accepts connections until shut down, then waits for every connection to close.
    pub async fn run(mut self) {
        // Sockets still in their handshake; an open connection counts against `connection_max`
        // in the broker's registry instead.
        let pool = HandshakePool::new(self.config.handshake_max, self.config.handshake_max_per_source);
        let clock = self.amqp.broker.clock().clone();
        let mut rate = crate::accept_rate::AcceptRate::new(self.config.connection_rate_max, clock);
        let socket_max = socket_max(self.config.store_open_files_max);
        let sockets = Arc::new(Semaphore::new(socket_max));
        let mut stop = self.shutdown.subscribe();
        let mut tasks = JoinSet::new();
        let timers = self.amqp.broker.timers().clone();
        let timer_task = crate::timers::spawn_driver(timers, self.timer_notify.clone(), self.shutdown.subscribe());
        let amqp_addr =
            self.local_addr().unwrap_or_else(|_| SocketAddr::from((self.config.bind_address, self.config.port)));
        let http = crate::management::Http {
            management: self.management.take(),
            prometheus: self.prometheus.take(),
            data_dir: self.config.data_dir.clone(),
            node_name: self.config.node_name.clone(),
            tls: self.tls_files(),
            config: lepus_management::HttpConfig {
                limits: lepus_management::http::HttpLimits {
                    header_timeout_ms: self.config.http_header_timeout_ms,
                    connection_max: self.config.http_connection_max,
                    ..lepus_management::http::HttpLimits::default()
                },
                login_failure_delay_ms: self.config.login_failure_delay_ms,
                login_failures_per_minute: self.config.login_failures_per_minute,
            },
        };
        let http_tasks = crate::management::spawn(http, self.amqp.broker.clone(), amqp_addr, &self.shutdown);
        tracing::info!(address = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(), "accepting AMQP 0-9-1 connections");
        if let Some(Ok(address)) = self.tls_local_addr() {
            tracing::info!(%address, "accepting AMQP 0-9-1 connections over TLS");
        }
        loop {
            let socket = match sockets.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    tracing::warn!(
                        socket_max,
                        "the descriptors left for sockets are all in use; new connections wait in the listen backlog"
                    );
                    tokio::select! {
                        permit = sockets.clone().acquire_owned() => match permit {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        _ = stopped(&mut stop) => break,
                    }
                }
            };
            let place = tokio::select! {
                place = pool.reserve() => match place {
                    Some(p) => p,
                    None => break,
                },
                _ = stopped(&mut stop) => break,
            };
            if let Some(rate) = rate.as_mut() {
                tokio::select! {
                    () = rate.admit() => {}
                    _ = stopped(&mut stop) => break,
                }
            }
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Some(permit) = pool.admit(place, peer.ip()) else { continue };
                        let (amqp, stop) = (self.amqp.clone(), self.shutdown.subscribe());
                        let serve = lepus_amqp::serve_admitted(stream, peer, amqp, stop, Some(permit));
                        tasks.spawn(async move { serve.await; drop(socket) });
                    }
                    Err(e) => accept_failed(e).await,
                },
                accepted = accept_tls(&self.tls), if self.tls.is_some() => match accepted {
                    Ok((stream, peer, setup)) => {
                        let Some(permit) = pool.admit(place, peer.ip()) else { continue };
                        let (amqp, stop) = (self.amqp.clone(), self.shutdown.subscribe());
                        let serve = lepus_amqp::serve_tls(stream, peer, amqp, stop, Some(permit), setup);
                        tasks.spawn(async move { serve.await; drop(socket) });
                    }
                    Err(e) => accept_failed(e).await,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stopped(&mut stop) => break,
            }
        }
        drop(self.listener);
        drop(self.tls);
        tracing::info!(connections = tasks.len(), "shutting down: closing connections");
        while tasks.join_next().await.is_some() {}
        for task in http_tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "HTTP listener task failed");
            }
        }
        if let Err(e) = timer_task.await {
            tracing::error!(error = %e, "timer task failed");
        }
        tracing::info!("shutdown complete");
    }
}

/// A listener on `port` of the configured address, unless `port` is 0 (turned off).
async fn bind_optional(config: &Config, port: u16) -> io::Result<Option<TcpListener>> {
    match port {
        0 => Ok(None),
        port => Ok(Some(TcpListener::bind((config.bind_address, port)).await?)),
    }
}

/// The TLS listener, when a certificate is configured; its files are read now, so a bad one
/// stops the start with a message naming it.
async fn bind_tls(config: &Config) -> io::Result<Option<(TcpListener, Arc<Tls>)>> {
    let invalid = |e: crate::tls::TlsError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    let Some(files) = TlsFiles::from_config(config).map_err(invalid)? else {
        return Ok(None);
    };
    let tls = Tls::load(files, config.tls_cert_login_from.into()).map_err(invalid)?;
    let listener = bind(config.bind_address, config.tls_port).await?;
    Ok(Some((listener, Arc::new(tls))))
}

/// A listener, or an error naming the address.
async fn bind(address: std::net::IpAddr, port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((address, port))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {address}:{port}: {e}")))
}

/// Accepts from the TLS listener (never resolves without one); the socket comes with the TLS
/// configuration current at its accept.
async fn accept_tls(
    tls: &Option<(TcpListener, Arc<Tls>)>,
) -> io::Result<(TcpStream, SocketAddr, lepus_amqp::TlsSetup)> {
    let Some((listener, tls)) = tls else {
        return std::future::pending().await;
    };
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, tls.setup()))
}

/// Descriptors kept out of the socket budget besides the message store's: listeners, the
/// metadata store, the lock file, management connections, logs.
const DESCRIPTORS_RESERVED: usize = 128;

/// How many AMQP sockets may be open at once: the process's descriptor limit minus the
/// message store's budget and [`DESCRIPTORS_RESERVED`] (at least 1; no bound if the limit is
/// unknown or unlimited).
fn socket_max(store_open_files_max: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => n.saturating_sub(store_open_files_max + DESCRIPTORS_RESERVED).clamp(1, Semaphore::MAX_PERMITS),
        None => Semaphore::MAX_PERMITS,
    }
}

/// Typically EMFILE: back off instead of spinning.
async fn accept_failed(e: io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// What start-up restored (or, without a data directory, made).
struct Opened {
    vhosts: Vec<VHost>,
    users: Users,
    access_control: AccessControl,
    persistence: Option<PersistenceRef>,
    /// The group-commit thread and the data-directory lock.
    storage: Option<(Committer, DirLock)>,
}

/// The configured default user alone, an administrator.
fn default_users(config: &Config) -> Users {
    let mut users = Users::new(config.loopback_users.clone());
    users.add(User::new(&config.default_user, &config.default_pass, &["administrator"]));
    users
}

/// The default user's full permissions on the default vhost, as RabbitMQ sets them up.
fn default_access(config: &Config) -> AccessControl {
    let mut access = AccessControl::default();
    access.permissions.set(&config.default_user, "/", Grant::full());
    access
}

/// The stored permissions and limits. A data directory from before permissions were stored
/// (users, but no permission ever) gets full permissions for every user on every vhost, the
/// access they had; a new one, the default user's (both stored now).
fn restore_access(
    config: &Config,
    snapshot: &Snapshot,
    vhosts: &[VHost],
    persistence: &Persistence,
) -> io::Result<AccessControl> {
    if !snapshot.permissions_initialised {
        let users: Vec<String> = if snapshot.users_initialised {
            snapshot.users.iter().map(|u| u.name.clone()).collect()
        } else {
            vec![config.default_user.clone()]
        };
        let vhost_names: Vec<String> = if snapshot.users_initialised {
            vhosts.iter().map(|v| v.name.to_string()).collect()
        } else {
            vec!["/".to_owned()]
        };
        let mut access = AccessControl::default();
        let mut records = Vec::new();
        for user in &users {
            for vhost in &vhost_names {
                access.permissions.set(user, vhost, Grant::full());
                let all = ".*".to_owned();
                records.push(Change::PutPermission(PermissionRecord {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    configure: all.clone(),
                    write: all.clone(),
                    read: all,
                }));
            }
        }
        persistence.apply(&records).map_err(|e| io::Error::other(format!("storing permissions: {e}")))?;
        return Ok(access);
    }
    let mut access = AccessControl::default();
    let damaged = |what: &str, e: lepus_broker::BrokerError| {
        tracing::error!(problem = %e, "ignoring stored {what}");
    };
    for p in &snapshot.permissions {
        match Grant::new(&p.configure, &p.write, &p.read) {
            Ok(grant) => access.permissions.set(&p.user, &p.vhost, grant),
            Err(e) => damaged("permission", e),
        }
    }
    for p in &snapshot.topic_permissions {
        match TopicGrant::new(&p.user, &p.vhost, &p.write, &p.read) {
            Ok(grant) => access.permissions.set_topic(&p.user, &p.vhost, &p.exchange, grant),
            Err(e) => damaged("topic permission", e),
        }
    }
    for l in &snapshot.limits {
        let pairs = l.limits.iter().map(|(k, v)| (k.as_str(), *v));
        match l.scope {
            LimitScope::User => match UserLimits::from_pairs(pairs) {
                Ok(limits) => {
                    access.user_limits.insert(l.name.clone(), limits);
                }
                Err(e) => damaged("user limits", e),
            },
            LimitScope::Vhost => match (VhostLimits::from_pairs(pairs), vhosts.iter().find(|v| *v.name == *l.name)) {
                (Ok(limits), Some(vhost)) => vhost.set_limits(limits),
                (Ok(_), None) => {}
                (Err(e), _) => damaged("vhost limits", e),
            },
        }
    }
    Ok(access)
}

/// The stored users; if users were never set up (a new data directory, or one from before
/// users were stored), the configured default user, stored now, as RabbitMQ creates its
/// default user on a node's first start. Later changes to the configured default do not apply
/// to it, and deleting every user does not bring it back.
/// Sets the configuration file's `[[policies]]` through the broker's command path (validated,
/// stored, applied), in file order.
fn set_policies(broker: &Broker, config: &Config) -> io::Result<()> {
    for p in &config.policies {
        let fail = |e: lepus_broker::BrokerError| {
            let text = e.to_string().trim().replace("\n\n", ": ");
            io::Error::new(io::ErrorKind::InvalidInput, format!("policy '{}' in vhost '{}': {text}", p.name, p.vhost))
        };
        let vhost = broker.vhost(&p.vhost).ok_or_else(|| {
            let text = format!("Virtual host '{}' does not exist", p.vhost);
            fail(BrokerError::NotAllowed(text))
        })?;
        let spec = p.spec().map_err(fail)?;
        vhost.execute(Issuer::node(), Command::SetPolicy(spec)).map_err(fail)?;
        tracing::info!(policy = %p.name.escape_debug(), vhost = %p.vhost.escape_debug(), "policy from the configuration set");
    }
    Ok(())
}

fn restore_users(config: &Config, snapshot: &Snapshot, persistence: &Persistence) -> io::Result<Users> {
    if !snapshot.users_initialised {
        let users = default_users(config);
        let records: Vec<Change> = users.list().into_iter().map(|u| Change::PutUser(u.record())).collect();
        persistence.apply(&records).map_err(|e| io::Error::other(format!("storing the default user: {e}")))?;
        tracing::info!(user = %config.default_user.escape_debug(), "created the default user");
        return Ok(users);
    }
    let mut users = Users::new(config.loopback_users.clone());
    for record in &snapshot.users {
        users.add(User::from_record(record.clone()));
    }
    Ok(users)
}

/// How the stores reach their files: the file system, unless a test injects faults.
#[derive(Clone)]
pub struct StorageBackends {
    /// The message store's files.
    pub messages: Arc<dyn Backend>,
    /// The metadata store's file (`None`: the file itself).
    pub meta: Option<BackendFactory>,
}

impl Default for StorageBackends {
    fn default() -> StorageBackends {
        StorageBackends { messages: Arc::new(FsBackend), meta: None }
    }
}

/// Locks the data directory, opens the stores and restores every vhost from them.
fn open_storage(dir: &std::path::Path, config: &Config, backends: StorageBackends) -> io::Result<Opened> {
    let fail = |e: lepus_store::StoreError| io::Error::other(e.to_string());
    let started = std::time::Instant::now();
    let lock = DirLock::acquire(dir).map_err(fail)?;
    let meta = MetaStore::open_with(&dir.join("meta.redb"), backends.meta).map_err(fail)?;
    let snapshot = meta.load().map_err(fail)?;
    let options = StoreOptions {
        transient_paging_bytes: config.transient_paging_bytes,
        open_files_max: config.store_open_files_max,
        // Retries are paced by the broker, on its clock (`Broker::retry_store_every`).
        retry_interval_ms: 0,
        ..StoreOptions::default()
    };
    let store = Store::new(backends.messages, dir, options);
    store.remove_scratch()?;
    let clean = store.take_clean_marker()?;
    if !clean && !snapshot.queues.is_empty() {
        tracing::warn!(data_dir = %dir.display(), "previous run did not stop cleanly: recovered messages are marked redelivered");
    }
    let persistence = Arc::new(Persistence::open(store.clone(), meta).map_err(|e| io::Error::other(e.to_string()))?);
    let users = restore_users(config, &snapshot, &persistence)?;
    let mut names = snapshot.vhosts.clone();
    if !names.iter().any(|n| n == "/") {
        names.push("/".to_owned());
    }
    let mut vhosts = Vec::new();
    for name in names {
        let (vhost, report) = VHost::restore(&name, persistence.clone(), &snapshot, clean)
            .map_err(|e| io::Error::other(format!("restoring vhost '{name}': {e}")))?;
        for problem in &report.problems {
            tracing::error!(vhost = %name, problem = %problem, "damaged data found during recovery");
        }
        tracing::info!(
            vhost = %name,
            exchanges = report.exchanges,
            queues = report.queues,
            bindings = report.bindings,
            messages = report.messages,
            "vhost restored"
        );
        vhosts.push(vhost);
    }
    let access_control = restore_access(config, &snapshot, &vhosts, &persistence)?;
    let known: std::collections::HashSet<u64> = snapshot.queues.iter().map(|q| q.id).collect();
    store.remove_orphan_logs(&known)?;
    // Recovery may have scheduled deletions of fully acked segments: write them now.
    store.commit();
    let committer = store.spawn_committer()?;
    tracing::info!(data_dir = %dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "storage opened");
    Ok(Opened { vhosts, users, access_control, persistence: Some(persistence), storage: Some((committer, lock)) })
}

/// What a test harness or embedding needs to reach a broker on an ephemeral port.
pub async fn start(config: Config) -> io::Result<(SocketAddr, ShutdownHandle, tokio::task::JoinHandle<()>)> {
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    let handle = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    Ok((addr, handle, task))
}

/// The AMQP limits this configuration sets.
fn limits(config: &Config) -> Limits {
    Limits {
        frame_max: config.frame_max,
        channel_max: config.channel_max,
        heartbeat_s: config.heartbeat_s,
        handshake_timeout_ms: config.handshake_timeout_ms,
        protocol_header_timeout_ms: config.protocol_header_timeout_ms,
        connection_max: config.connection_max,
        login_failure_delay_ms: config.login_failure_delay_ms,
        login_failures_per_minute: config.login_failures_per_minute,
        close_timeout_ms: config.close_timeout_ms,
        message_size_max: config.message_size_max,
        outbound_buffer_max: config.outbound_buffer_max,
        consumer_timeout_ms: config.consumer_timeout,
        consumer_max_per_channel: config.consumer_max_per_channel,
    }
}

/// Starts the memory and disk alarms with the configured limits.
fn watch_resources(broker: &Broker, config: &Config) {
    let limits = crate::resources::alarm_limits(config);
    tracing::info!(
        memory_limit_bytes = limits.memory_limit_bytes,
        available_memory_bytes = crate::resources::available_memory_bytes(),
        disk_free_limit_bytes = limits.disk_free_limit_bytes,
        "resource alarms: memory high watermark and disk free limit"
    );
    let probe = crate::resources::SystemProbe::new(config.data_dir.clone());
    broker.watch_resources(Box::new(probe), limits);
}
