//! Prometheus metrics on their own listener (`prometheus_port`), with the names, types and
//! labels of RabbitMQ's `rabbitmq_prometheus` plugin, so its Grafana dashboards (RabbitMQ-
//! Overview) work unchanged:
//! - `/metrics`: aggregated — node-wide totals, per-queue series summed (RabbitMQ's default);
//! - `/metrics/per-object`: the same with one series per queue (`vhost`, `queue` labels);
//! - `/metrics/detailed?family=...&vhost=...`: only the per-queue families asked for,
//!   prefixed `rabbitmq_detailed_`, optionally in some vhosts.
//!
//! Everything is read at scrape time from counters the broker keeps anyway (the connection
//! registry, each queue's counts and counters, the churn counters): no message is walked,
//! nothing is added to the publish path. OpenMetrics text through `prometheus-client`.

mod families;
pub(crate) mod process;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::ApiRef;
pub use families::Scope;
pub(crate) use families::permanent_id;

/// The content type of what `/metrics` answers.
pub const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics routes over `api` (no authentication, as RabbitMQ's plugin).
pub fn router(api: ApiRef) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
        .with_state(api)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(SCRAPES_IN_FLIGHT_MAX))
}

/// Scrapes served at once; more wait.
pub const SCRAPES_IN_FLIGHT_MAX: usize = 4;

/// Serves the metrics on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, api: ApiRef, shutdown: impl Future<Output = ()> + Send + 'static) {
    let limits = api.http.limits;
    crate::http::serve(listener, router(api), limits, "prometheus", shutdown).await;
}

async fn aggregated(State(api): State<ApiRef>) -> impl IntoResponse {
    scrape(api, Scope::Aggregated).await
}

async fn per_object(State(api): State<ApiRef>) -> impl IntoResponse {
    scrape(api, Scope::PerObject).await
}

/// `/metrics/detailed`'s query: `family` and `vhost`, each repeatable.
#[derive(Debug, Default, Deserialize)]
struct DetailedQuery {
    #[serde(default)]
    family: Vec<String>,
    #[serde(default)]
    vhost: Vec<String>,
}

async fn detailed(State(api): State<ApiRef>, query: axum::extract::RawQuery) -> impl IntoResponse {
    let q: DetailedQuery = query.0.as_deref().map(parse_detailed).unwrap_or_default();
    scrape(api, Scope::Detailed { families: q.family, vhosts: q.vhost }).await
}

/// `family=a&family=b&vhost=v` (repeated keys, which `Query`'s map would not keep).
fn parse_detailed(raw: &str) -> DetailedQuery {
    let mut q = DetailedQuery::default();
    for pair in raw.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " ")).decode_utf8_lossy().into_owned();
        match key {
            "family" => q.family.push(value),
            "vhost" => q.vhost.push(value),
            _ => {}
        }
    }
    q
}

/// The size of the last body of each scope (aggregated, per object, detailed): the next
/// one's buffer starts that large rather than growing by doubling (a per-object scrape of
/// 100,000 queues is about 50 MB). A hint only, shared by every broker in the process.
static LAST_BODY_BYTES: [AtomicUsize; 3] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

/// Encodes the metrics of `scope` (on a blocking thread: 100,000 queues take a while).
async fn scrape(api: ApiRef, scope: Scope) -> axum::response::Response {
    let encoded = tokio::task::spawn_blocking(move || {
        let sizes = (!matches!(scope, Scope::Detailed { .. })).then(|| api.broker.connections().message_sizes());
        let last = &LAST_BODY_BYTES[match scope {
            Scope::Aggregated => 0,
            Scope::PerObject => 1,
            Scope::Detailed { .. } => 2,
        }];
        let mut registry = Registry::default();
        registry.register_collector(Box::new(families::Scrape { api, scope }));
        // A little more than last time, for the queues declared since.
        let hint = last.load(Ordering::Relaxed);
        let mut body = String::with_capacity(hint + hint / 8);
        prometheus_client::encoding::text::encode(&mut body, &registry)?;
        last.store(body.len(), Ordering::Relaxed);
        if let Some(sizes) = sizes {
            // Before the closing `# EOF`.
            let end = body.rfind("# EOF").unwrap_or(body.len());
            body.insert_str(end, &families::message_size_histogram(&sizes));
        }
        Ok::<_, std::fmt::Error>(body)
    })
    .await;
    match encoded {
        Ok(Ok(body)) => ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], body).into_response(),
        _ => {
            tracing::error!("metrics scrape failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
