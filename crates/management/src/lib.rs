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
//! - `cert_expiry`: which certificates of the TLS listener expire within a health check's window.
//! - `error`: [`ApiError`], each variant mapped once to a status and RabbitMQ's JSON body.
//! - `get`: taking a message as `basic.get` does, waiting out a requeue in pieces.
//! - `listing`: pagination, filtering by name, sorting and `columns=` as RabbitMQ does them.
//! - `convert`: field tables, message properties and request bodies to and from JSON.
//! - `views`: the JSON of a queue, exchange, binding, connection, user, vhost.
//! - [`metrics`]: Prometheus metrics in RabbitMQ's names, on their own listener.
//! - `routes/`: one module per resource (overview and nodes, vhosts, users, connections and
//!   channels, exchanges, queues, bindings, health checks, definitions).
//! - `ui`: the web UI's files, embedded, at `/` and `/ui/...`.
//! - [`http`]: the HTTP/1.1 connection loop both listeners run, with its limits (header-read
//!   timeout, request head size, request body deadline, size and bytes held at once, open
//!   connections).

mod auth;
mod cert_expiry;
mod channel_views;
mod convert;
mod error;
mod get;
pub mod http;
mod listing;
pub mod metrics;
mod routes;
mod ui;
mod views;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use lepus_broker::BrokerRef;
use lepus_broker::login_guard::LoginGuard;
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

/// The certificate files of the node's TLS listener, which the certificate expiration health
/// check reads (again at each check: a reload may have replaced them).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The listener, as `/api/overview` lists it (`amqp/ssl`).
    pub listener: Listener,
    pub certfile: std::path::PathBuf,
    pub cacertfile: Option<std::path::PathBuf>,
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
    /// The TLS listener's certificates, if it has one.
    pub tls_files: Option<TlsFiles>,
}

/// The HTTP listeners' settings.
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    pub limits: http::HttpLimits,
    /// How long a refused login waits for its 401.
    pub login_failure_delay_ms: u64,
    /// Failed logins one source address may have per minute; past them its logins are
    /// refused unchecked until the minute ends (0: no limit).
    pub login_failures_per_minute: u32,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig { limits: http::HttpLimits::default(), login_failure_delay_ms: 1000, login_failures_per_minute: 60 }
    }
}

/// What the handlers share.
pub struct Api {
    pub broker: BrokerRef,
    pub node: NodeInfo,
    pub http: HttpConfig,
    /// Failed basic-auth logins per source address.
    login_guard: LoginGuard,
}

impl Api {
    pub fn new(broker: BrokerRef, node: NodeInfo, http: HttpConfig) -> Api {
        let login_guard = LoginGuard::new(http.login_failures_per_minute, 60_000);
        Api { broker, node, http, login_guard }
    }
}

pub type ApiRef = Arc<Api>;

/// Requests handled at once; more wait (in the order they came) for one to finish.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// The API's routes over `api`, with its limits (the request body's size and deadline are
/// [`http::serve`]'s).
pub fn router(api: ApiRef) -> axum::Router {
    let body_max_bytes = api.http.limits.body_max_bytes;
    let routes = routes::all()
        .with_state(api.clone())
        .layer(axum::extract::DefaultBodyLimit::max(body_max_bytes))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX))
        // Outside the limit: a refused login waits without holding a request slot.
        .layer(axum::middleware::map_response_with_state(api, auth::delay_refused_login))
        .layer(axum::middleware::map_response(rejection_as_json));
    // Before routing (a layer of the routes runs after it): `/api/users/` is `/api/users`.
    let trimmed = tower::Layer::layer(&axum::middleware::map_request(trim_trailing_slash), routes);
    axum::Router::new().fallback_service(trimmed)
}

/// Longest text of a rejection turned into JSON (axum's are one short line).
const REJECTION_TEXT_MAX_BYTES: usize = 4096;

/// A request axum's extractors refused (a path segment that is not UTF-8, a query that does
/// not parse) answers in plain text; the API answers every error as RabbitMQ's JSON
/// `{"error": "bad_request", "reason": ...}`.
async fn rejection_as_json(response: axum::response::Response) -> axum::response::Response {
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/plain"));
    if response.status() != axum::http::StatusCode::BAD_REQUEST || !plain {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), REJECTION_TEXT_MAX_BYTES).await.unwrap_or_default();
    axum::response::IntoResponse::into_response(ApiError::BadRequest(String::from_utf8_lossy(&text).into_owned()))
}

/// An API path without its trailing `/`, as RabbitMQ routes `/api/users/` (rabbit-hole's
/// `ListUsers`, `ListBindings`, `ListPermissions`, `GetClusterName` ask with one).
async fn trim_trailing_slash(mut request: axum::extract::Request) -> axum::extract::Request {
    let uri = request.uri();
    let path = uri.path();
    if path.len() > "/api/".len() && path.starts_with("/api/") && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match uri.query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(rebuilt) = rebuilt.parse() {
            *request.uri_mut() = rebuilt;
        }
    }
    request
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, api: ApiRef, shutdown: impl Future<Output = ()> + Send + 'static) {
    let limits = api.http.limits;
    http::serve(listener, router(api), limits, "management", shutdown).await;
}
