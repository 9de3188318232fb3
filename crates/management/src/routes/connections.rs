//! `/api/connections` (list, show, close with 320 through the registry), `/api/channels` and
//! `/api/consumers`. A management user sees its own connections, monitoring and
//! administrator users all of them.
//!
//! The broker's registry knows each connection's channel count, not its channels, and a
//! consumer's id, not its AMQP tag or channel (those are the front end's): channels are
//! listed one per open channel of each connection, numbered in order, and consumers
//! without a tag.

use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::connections::ConnectionRef;
use serde_json::{Value, json};

use crate::ApiRef;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};
use crate::views;

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/connections", get(list))
        .route("/api/vhosts/{vhost}/connections", get(list_in_vhost))
        .route("/api/connections/{name}", get(show).delete(close))
        .route("/api/connections/{name}/channels", get(channels_of))
        .route("/api/channels", get(channels))
        .route("/api/vhosts/{vhost}/channels", get(channels_in_vhost))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(consumers_in_vhost))
}

/// The open connections `caller` may see, in `vhost` if given.
fn visible(api: &ApiRef, caller: &Caller, vhost: Option<&str>) -> Vec<ConnectionRef> {
    api.broker
        .connections()
        .list()
        .into_iter()
        .filter(|c| caller.sees_all() || c.user == caller.name)
        .filter(|c| vhost.is_none_or(|v| c.vhost == v))
        .collect()
}

fn find(api: &ApiRef, caller: &Caller, name: &str) -> ApiResult<ConnectionRef> {
    visible(api, caller, None).into_iter().find(|c| views::connection_name(api, c) == name).ok_or(ApiError::NotFound)
}

async fn list(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let items = visible(&api, &caller, None).iter().map(|c| views::connection(&api, c)).collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

async fn list_in_vhost(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    super::vhosts_for(&api, &caller, Some(&vhost))?;
    let items = visible(&api, &caller, Some(&vhost)).iter().map(|c| views::connection(&api, c)).collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let c = find(&api, &caller, &name)?;
    Ok(Json(respond_one(views::connection(&api, &c), &q)))
}

/// RabbitMQ's reason when none is given in `X-Reason`.
const CLOSE_REASON: &str = "Closed via management plugin";
/// Longest reason passed on to the client (it goes into a short string).
const CLOSE_REASON_MAX_BYTES: usize = 200;

async fn close(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let c = find(&api, &caller, &name)?;
    let reason = headers.get("x-reason").and_then(|v| v.to_str().ok()).unwrap_or(CLOSE_REASON);
    let reason = crate::convert::prefix(reason, CLOSE_REASON_MAX_BYTES);
    tracing::info!(connection = c.id, user = %caller.name.escape_debug(), "connection closed through the management API");
    api.broker.connections().close(c.id, reason);
    Ok(StatusCode::NO_CONTENT)
}

fn channel_items(api: &ApiRef, conns: &[ConnectionRef]) -> Vec<Value> {
    let mut items = Vec::new();
    for c in conns {
        let conn_name = views::connection_name(api, c);
        for number in 1..=c.channels.load(Ordering::Relaxed) {
            items.push(json!({
                "name": format!("{conn_name} ({number})"),
                "number": number,
                "node": api.node.name,
                "user": c.user,
                "vhost": c.vhost,
                "state": "running",
                "connection_details": views::connection_details(api, c),
            }));
        }
    }
    items
}

async fn channels(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    Ok(Json(respond(channel_items(&api, &visible(&api, &caller, None)), &q, &["name"])?))
}

async fn channels_in_vhost(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    super::vhosts_for(&api, &caller, Some(&vhost))?;
    Ok(Json(respond(channel_items(&api, &visible(&api, &caller, Some(&vhost))), &q, &["name"])?))
}

async fn channels_of(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let c = find(&api, &caller, &name)?;
    Ok(Json(respond(channel_items(&api, &[c]), &q, &["name"])?))
}

fn consumer_items(api: &ApiRef, caller: &Caller, vhost: Option<&str>) -> ApiResult<Vec<Value>> {
    let mut items = Vec::new();
    for v in super::vhosts_for(api, caller, vhost)? {
        for queue in v.queue_list() {
            for consumer in queue.consumer_views() {
                items.push(json!({
                    "queue": {"name": String::from_utf8_lossy(queue.name.as_bytes()), "vhost": &*v.name},
                    "consumer_tag": "",
                    "ack_required": consumer.ack_required,
                    "prefetch_count": consumer.prefetch,
                    "exclusive": consumer.exclusive,
                    "active": consumer.active,
                    "activity_status": if consumer.active { "up" } else { "waiting" },
                    "arguments": if consumer.priority == 0 { json!({}) } else { json!({"x-priority": consumer.priority}) },
                    "channel_details": {},
                }));
            }
        }
    }
    Ok(items)
}

async fn consumers(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    Ok(Json(respond(consumer_items(&api, &caller, None)?, &q, &["queue.vhost", "queue.name"])?))
}

async fn consumers_in_vhost(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(respond(consumer_items(&api, &caller, Some(&vhost))?, &q, &["queue.vhost", "queue.name"])?))
}
