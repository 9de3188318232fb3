//! The management HTTP API: RabbitMQ's management plugin paths, JSON shapes, status codes and
//! tag-based authorisation, over the broker service, so `rabbitmqadmin`, the rabbit-hole Go
//! client (Terraform, Kubernetes operators) and scripts written for RabbitMQ work unchanged.
//!
//! Every change goes through the broker's one command path (`VHost::execute` for topology,
//! `Broker::execute_node` for users and vhosts); reads use the broker's read-only views and
//! counters and never walk messages.
//!
//! # Layout
//! - [`Api`]: what the handlers share (the broker, the node's name and listeners); [`router`]
//!   and [`serve`] put it on a listener.
//! - `auth`: HTTP basic auth against the broker's users, the tags' rights, and the one place
//!   vhost permissions are asked (`auth::vhost_permitted`).
//! - `error`: [`ApiError`], each variant mapped once to a status and RabbitMQ's JSON body.
//! - `listing`: pagination, filtering by name, sorting and `columns=` as RabbitMQ does them.
//! - `convert`: field tables, message properties and request bodies to and from JSON.
//! - `views`: the JSON of a queue, exchange, binding, connection, user, vhost.
//! - [`metrics`]: Prometheus metrics in RabbitMQ's names, on their own listener.
//! - `routes/`: one module per resource (overview and nodes, vhosts, users, connections and
//!   channels, exchanges, queues, bindings, health checks, definitions).
//! - `ui`: the web UI's files, embedded, at `/` and `/ui/...`.

mod auth;
mod convert;
mod error;
mod listing;
pub mod metrics;
mod routes;
mod ui;
mod views;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use lepus_broker::BrokerRef;
use tokio::net::TcpListener;

pub use error::ApiError;

/// The RabbitMQ version whose management API this one follows (what clients see as
/// `rabbitmq_version`, the compatibility level).
pub const RABBITMQ_VERSION: &str = "3.10.8";

/// A listener the node runs, as `/api/overview` lists it.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `amqp`, `http`.
    pub protocol: &'static str,
    pub address: SocketAddr,
}

/// What the API tells about the node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's name (`lepus@host`); also the cluster's name.
    pub name: String,
    /// Lepus's version.
    pub product_version: String,
    pub listeners: Vec<Listener>,
    /// When the node started, on the broker's clock.
    pub started_at_ms: u64,
    /// Where the node keeps its data (its free space is a metric); the working directory
    /// without a data directory.
    pub data_dir: std::path::PathBuf,
}

/// What the handlers share.
pub struct Api {
    pub broker: BrokerRef,
    pub node: NodeInfo,
}

pub type ApiRef = Arc<Api>;

/// Requests handled at once; more wait (in the order they came) for one to finish.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// Largest request body (a definitions import of many objects; a publish's payload has its
/// own, lower limit). Larger bodies get 413.
pub const BODY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The API's routes over `api`, with its limits.
pub fn router(api: ApiRef) -> axum::Router {
    routes::all()
        .with_state(api)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_MAX_BYTES))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, api: ApiRef, shutdown: impl Future<Output = ()> + Send + 'static) {
    let app = router(api).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "management listener failed");
    }
}
