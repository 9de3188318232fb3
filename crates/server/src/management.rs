//! The HTTP listeners: the management API and the Prometheus metrics, each run next to the
//! AMQP listener on a listener the server bound, and stopped by the same shutdown signal;
//! the node's name (`node_name`, else `lepus@host`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lepus_amqp::stopped;
use lepus_broker::BrokerRef;
use lepus_management::{Api, HttpConfig, Listener, NodeInfo, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The node's name: the configured one (`node_name`), else, as RabbitMQ's `rabbit@host`,
/// `lepus@` and the host name.
pub fn node_name(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("lepus@{host}")
}

/// The HTTP listeners the server bound (each `None` when turned off).
pub struct Http {
    pub management: Option<TcpListener>,
    pub prometheus: Option<TcpListener>,
    pub data_dir: Option<PathBuf>,
    /// `node_name` from the configuration.
    pub node_name: Option<String>,
    /// The TLS listener and its certificate files, if there is one.
    pub tls: Option<TlsFiles>,
    pub config: HttpConfig,
}

/// Starts serving the API and the metrics on their listeners until `shutdown` turns true;
/// the tasks to wait for.
pub fn spawn(http: Http, broker: BrokerRef, amqp: SocketAddr, shutdown: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
    let mut listeners = vec![Listener { protocol: "amqp", address: amqp }];
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(address) = local(&http.management) {
        listeners.push(Listener { protocol: "http", address });
    }
    if let Some(address) = local(&http.prometheus) {
        listeners.push(Listener { protocol: "http/prometheus", address });
    }
    if let Some(tls) = &http.tls {
        listeners.push(tls.listener.clone());
    }
    let node = NodeInfo {
        name: node_name(http.node_name.as_deref()),
        product_version: env!("CARGO_PKG_VERSION").into(),
        listeners,
        started_at_ms: broker.clock().now_ms(),
        data_dir: http.data_dir.unwrap_or_else(|| PathBuf::from(".")),
        tls_files: http.tls,
    };
    let api = Arc::new(Api::new(broker, node, http.config));
    let mut tasks = Vec::new();
    if let Some(listener) = http.management {
        tracing::info!(address = ?listener.local_addr().ok(), "accepting management HTTP connections");
        let mut stop = shutdown.subscribe();
        let serve = lepus_management::serve(listener, api.clone(), async move { stopped(&mut stop).await });
        tasks.push(tokio::spawn(serve));
    }
    if let Some(listener) = http.prometheus {
        tracing::info!(address = ?listener.local_addr().ok(), "serving Prometheus metrics");
        let mut stop = shutdown.subscribe();
        let serve = lepus_management::metrics::serve(listener, api, async move { stopped(&mut stop).await });
        tasks.push(tokio::spawn(serve));
    }
    tasks
}
