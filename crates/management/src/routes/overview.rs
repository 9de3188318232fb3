//! `/api/overview`, `/api/whoami`, `/api/nodes`, `/api/cluster-name` (show; set to itself),
//! `/api/extensions`:
//! the node at a glance, from counters and counts (no message is walked).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::alarms::Resource;
use lepus_broker::stats::{CHURN_NAMES, Stat};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::convert::{body_json, text};
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};
use crate::metrics::process;
use crate::views::{message_counts, message_stats};
use crate::{ApiRef, RABBITMQ_VERSION};

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
        .route("/api/cluster-name", get(cluster_name).put(set_cluster_name))
        .route("/api/extensions", get(|_: Caller| async { Json(json!([])) }))
        // Asked before login by RabbitMQ's own UI and tools: no OAuth 2 here.
        .route(
            "/api/auth",
            get(|| async {
                Json(json!({"enable_uaa": false, "uaa_client_id": "", "uaa_location": "", "oauth_enabled": false}))
            }),
        )
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.name, "tags": caller.tags}))
}

async fn cluster_name(State(api): State<ApiRef>, _: Caller) -> Json<Value> {
    Json(json!({"name": api.node.name}))
}

/// The cluster's name is the node's: setting it to that is a no-op (rabbit-hole's
/// `SetClusterName` of what `GetClusterName` gave); another name is refused.
async fn set_cluster_name(State(api): State<ApiRef>, caller: Caller, body: Bytes) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    match text(&body, "name") {
        Some(name) if name == api.node.name => Ok(StatusCode::NO_CONTENT),
        Some(_) => Err(ApiError::BadRequest("the cluster name is the node's name; Lepus cannot change it".into())),
        None => Err(ApiError::BadRequest("name is missing".into())),
    }
}

const EXCHANGE_TYPES: [(&str, &str); 6] = [
    ("direct", "AMQP direct exchange, as per the AMQP specification"),
    ("fanout", "AMQP fanout exchange, as per the AMQP specification"),
    ("headers", "AMQP headers exchange, as per the AMQP specification"),
    ("topic", "AMQP topic exchange, as per the AMQP specification"),
    ("x-delayed-message", "Delayed Message Exchange"),
    ("x-message-deduplication", "Message Deduplication Exchange."),
];

async fn overview(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let broker = &api.broker;
    let vhosts = super::vhosts_for(&api, &caller, None)?;
    let (mut exchanges, mut queues, mut consumers, mut ready, mut unacked) = (0, 0, 0u64, 0u64, 0u64);
    for v in &vhosts {
        let (x, _) = v.object_counts();
        exchanges += x;
        for queue in v.queue_list() {
            let c = queue.inspect_counts();
            queues += 1;
            consumers += u64::from(c.consumers);
            ready += u64::from(c.ready);
            unacked += c.unacked;
        }
    }
    let connections = broker.connections().list();
    let visible: Vec<_> = connections.iter().filter(|c| caller.sees_all() || c.user == caller.name).collect();
    let channels: u64 = visible.iter().map(|c| u64::from(c.channels.load(std::sync::atomic::Ordering::Relaxed))).sum();
    let mut queue_totals = Map::new();
    message_counts(&mut queue_totals, ready, unacked);
    let listeners: Vec<Value> = api
        .node
        .listeners
        .iter()
        .map(|l| json!({"node": api.node.name, "protocol": l.protocol, "ip_address": l.address.ip().to_string(), "port": l.address.port(), "socket_opts": {}}))
        .collect();
    let exchange_types: Vec<Value> = EXCHANGE_TYPES
        .iter()
        .map(|(name, description)| json!({"name": name, "description": description, "enabled": true}))
        .collect();
    let body = json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types,
        "product_version": api.node.product_version,
        "product_name": "Lepus",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": api.node.name,
        "erlang_version": "n/a",
        "erlang_full_version": "n/a (Lepus is written in Rust)",
        "disable_stats": false,
        "enable_queue_totals": true,
        "message_stats": message_stats(&broker.connections().totals(), &broker.rates(), Stat::management()),
        "churn_rates": churn_rates(broker),
        "queue_totals": queue_totals,
        "object_totals": {
            "channels": channels,
            "connections": visible.len(),
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
        "node": api.node.name,
        "listeners": listeners,
        "contexts": [],
    });
    Ok(Json(respond_one(body, &q)))
}

/// RabbitMQ's `churn_rates`: each count since start with its sampled rate.
fn churn_rates(broker: &lepus_broker::Broker) -> Value {
    let (counts, rates) = (broker.churn(), broker.churn_rates());
    let mut map = Map::new();
    for (i, name) in CHURN_NAMES.iter().enumerate() {
        map.insert((*name).into(), json!(counts[i]));
        map.insert(format!("{name}_details"), json!({"rate": rates[i]}));
    }
    Value::Object(map)
}

fn node_json(api: &ApiRef) -> Value {
    let now = api.broker.clock().now_ms();
    let processors = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let alarms = api.broker.alarms();
    let (reading, limits, active) = (alarms.reading(), alarms.limits(), alarms.active());
    let mut node = json!({
        "name": api.node.name,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "uptime": now.saturating_sub(api.node.started_at_ms),
        "processors": processors,
        "mem_used": reading.memory_used_bytes,
        "mem_limit": limits.memory_limit_bytes,
        "mem_alarm": active.contains(&Resource::Memory),
        "disk_free": reading.disk_free_bytes.unwrap_or(0),
        "disk_free_limit": limits.disk_free_limit_bytes,
        "disk_free_alarm": active.contains(&Resource::Disk),
        "fd_used": process::open_fds(),
        "fd_total": process::max_fds(),
        "sockets_used": api.broker.connections().len(),
        "sockets_total": process::max_fds(),
        "proc_used": process::threads(),
        "proc_total": process::threads_max(),
        "partitions": [],
        "rates_mode": "basic",
        "run_queue": 0,
        "applications": [],
        "exchange_types": EXCHANGE_TYPES
            .iter()
            .map(|(n, d)| json!({"name": n, "description": d, "enabled": true}))
            .collect::<Vec<_>>(),
        "auth_mechanisms": auth_mechanisms(api),
    });
    // The node's churn counters, as 3.10.8 shows them on the node too.
    if let (Value::Object(node), Value::Object(churn)) = (&mut node, churn_rates(&api.broker)) {
        node.extend(churn);
    }
    node
}

/// The SASL mechanisms as RabbitMQ lists them: EXTERNAL is offered only by a TLS listener
/// that verifies client certificates (one with a CA file).
fn auth_mechanisms(api: &ApiRef) -> Value {
    let external = api.node.tls_files.as_ref().is_some_and(|t| t.cacertfile.is_some());
    json!([
        {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
        {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        {"name": "EXTERNAL", "description": "TLS peer verification-based authentication", "enabled": external},
    ])
}

async fn nodes(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(respond(vec![node_json(&api)], &q, &["name"])?))
}

async fn node(State(api): State<ApiRef>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    if name != api.node.name {
        return Err(ApiError::NotFound);
    }
    Ok(Json(node_json(&api)))
}
