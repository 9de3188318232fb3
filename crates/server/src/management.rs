//! The management HTTP listener: binding it, and running `lepus_management` on it next to the
//! AMQP listener, stopped by the same shutdown signal.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use lepus_amqp::stopped;
use lepus_broker::BrokerRef;
use lepus_management::{Api, Listener, NodeInfo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The node's name, as RabbitMQ's `rabbit@host`: `lepus@` and the host name.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("lepus@{host}")
}

/// Starts serving the API on `listener` until `shutdown` turns true.
pub fn spawn(
    listener: TcpListener,
    broker: BrokerRef,
    amqp: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> io::Result<JoinHandle<()>> {
    let http = listener.local_addr()?;
    let node = NodeInfo {
        name: node_name(),
        product_version: env!("CARGO_PKG_VERSION").into(),
        listeners: vec![Listener { protocol: "amqp", address: amqp }, Listener { protocol: "http", address: http }],
        started_at_ms: broker.clock().now_ms(),
    };
    let api = Arc::new(Api { broker, node });
    tracing::info!(address = %http, "accepting management HTTP connections");
    let mut stop = shutdown;
    Ok(tokio::spawn(lepus_management::serve(listener, api, async move { stopped(&mut stop).await })))
}
