//! `/api/connections` (list, show, close with 320 through the registry), `/api/channels`
//! (list, show) and `/api/consumers`. A management user sees its own connections and their
//! channels, monitoring and administrator users all of them.
//!
//! Channels come from each connection's channel records in the registry; a consumer's tag
//! and channel from the channel records too, joined by consumer id with the queue's own
//! consumer list (see `channel_views`).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::connections::ConnectionRef;
use serde_json::Value;

use crate::ApiRef;
use crate::auth::Caller;
use crate::channel_views;
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
        .route("/api/channels/{name}", get(show_channel))
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
        for ch in c.channel_records() {
            items.push(channel_views::channel(api, c, &ch));
        }
    }
    items
}

/// `/api/channels/{name}`: "<connection name> (<number>)", with its consumers.
async fn show_channel(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let (conn_name, number) = split_channel_name(&name).ok_or(ApiError::NotFound)?;
    let c = find(&api, &caller, conn_name)?;
    let ch = c.channel_records().into_iter().find(|ch| ch.number == number).ok_or(ApiError::NotFound)?;
    Ok(Json(respond_one(channel_views::channel_with_consumers(&api, &c, &ch), &q)))
}

/// A channel's name split into its connection's name and its number.
fn split_channel_name(name: &str) -> Option<(&str, u16)> {
    let (conn_name, number) = name.strip_suffix(')')?.rsplit_once(" (")?;
    Some((conn_name, number.parse().ok()?))
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
    let vhosts = super::vhosts_for(api, caller, vhost)?;
    let owners = channel_views::owners(api);
    let mut items = Vec::new();
    for v in vhosts {
        for queue in v.queue_list() {
            items.extend(channel_views::queue_consumers(api, &queue, &v.name, &owners));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_name_splits_at_its_last_parenthesis() {
        assert_eq!(
            split_channel_name("127.0.0.1:5000 -> 127.0.0.1:5672 (2)"),
            Some(("127.0.0.1:5000 -> 127.0.0.1:5672", 2))
        );
        assert_eq!(split_channel_name("a (b) (65535)"), Some(("a (b)", 65535)));
        assert_eq!(split_channel_name("a (x)"), None);
        assert_eq!(split_channel_name("a (70000)"), None);
        assert_eq!(split_channel_name("a"), None);
    }
}
