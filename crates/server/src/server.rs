//! The AMQP listener: accepts TCP connections (bounded by `connection_max`), runs one task
//! per connection, and shuts down gracefully, closing every connection with 320
//! CONNECTION_FORCED and waiting for them to finish.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use std::collections::HashMap;

use lepus_broker::{OutletRef, VHost};
use lepus_protocol::ShortStr;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::auth::{User, Users};
use crate::config::Config;
use crate::connection;

/// State shared by all connections.
pub(crate) struct Shared {
    pub config: Config,
    pub users: RwLock<Users>,
    pub vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    /// Direct reply-to addresses (`amq.rabbitmq.reply-to.…`) of consuming channels.
    pub reply_to: parking_lot::Mutex<HashMap<ShortStr, ReplyTarget>>,
    pub next_connection_id: AtomicU64,
}

/// Where a direct reply-to address delivers.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTarget {
    pub outlet: OutletRef,
    pub channel: u16,
    pub consumer_tag: ShortStr,
}

/// A bound, not yet running broker.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: Arc<watch::Sender<bool>>,
}

/// Asks a running [`Server`] to shut down.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Server {
    /// Binds the listener; `config.port = 0` picks an ephemeral port.
    pub async fn bind(config: Config) -> io::Result<Server> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = TcpListener::bind((config.bind_address, config.port)).await?;
        let mut users = Users::new(config.loopback_users.clone());
        users.add(User::new(&config.default_user, &config.default_pass, &["administrator"]));
        let shared = Arc::new(Shared {
            config,
            users: RwLock::new(users),
            vhosts: RwLock::new(HashMap::from([("/".to_owned(), Arc::new(VHost::new("/")))])),
            reply_to: parking_lot::Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
        });
        let (tx, _) = watch::channel(false);
        Ok(Server { listener, shared, shutdown: Arc::new(tx) })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Accepts connections until shut down, then waits for every connection to close.
    pub async fn run(self) {
        let limit = Arc::new(Semaphore::new(self.shared.config.connection_max));
        let mut stop = self.shutdown.subscribe();
        let mut tasks = JoinSet::new();
        tracing::info!(address = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(), "accepting AMQP 0-9-1 connections");
        loop {
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = crate::server::stopped(&mut stop) => break,
            };
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = self.shared.clone();
                        let stop = self.shutdown.subscribe();
                        tasks.spawn(async move {
                            connection::serve(stream, peer, shared, stop).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = crate::server::stopped(&mut stop) => break,
            }
        }
        drop(self.listener);
        tracing::info!(connections = tasks.len(), "shutting down: closing connections");
        while tasks.join_next().await.is_some() {}
        tracing::info!("shutdown complete");
    }
}

/// What a test harness or embedding needs to reach a broker on an ephemeral port.
pub async fn start(config: Config) -> io::Result<(SocketAddr, ShutdownHandle, tokio::task::JoinHandle<()>)> {
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    let handle = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    Ok((addr, handle, task))
}

/// Resolves once shutdown was requested (returns no guard, so callers stay `Send`).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
