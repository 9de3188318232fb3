//! `/api/queues`: list, show, declare (PUT), delete (`if-unused`, `if-empty`), purge
//! (`DELETE .../contents`), get (`POST .../get`, with requeue), actions (mirror sync: nothing to
//! do), a queue's bindings, and `POST /api/rebalance/queues` (one node: nothing to do).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete as delete_route, get, post};
use axum::{Json, Router};
use base64::Engine;
use lepus_broker::QueueRef;
use lepus_broker::command::Command;
use lepus_broker::exchange::Destination;
use lepus_broker::queue::Entry;
use lepus_broker::vhost::QueueDeclare;
use serde_json::{Value, json};

use super::{HTTP_CONNECTION, put_status, query_flag, vhosts_for};
use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::{body_json, flag, json_to_table, number, properties_to_json, short, text};
use crate::error::{ApiError, ApiResult};
use crate::listing::{Lazy, ListQuery, respond_lazily, respond_one};
use crate::views;

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/queues", get(list))
        .route("/api/queues/{vhost}", get(list_in))
        .route("/api/queues/{vhost}/{name}", get(show).put(declare).delete(delete))
        .route("/api/queues/{vhost}/{name}/contents", delete_route(purge))
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/actions", post(action))
        // Queue leaders spread over the cluster's nodes: one node, nothing to move.
        .route(
            "/api/rebalance/queues",
            post(|caller: Caller| async move { caller.require_admin().map(|()| StatusCode::NO_CONTENT) }),
        )
        .route("/api/queues/{vhost}/{name}/bindings", get(bindings))
}

/// The queues of one vhost or all the caller may see, as a list answer: paged and sorted by
/// name, counts, counters or other plain fields, only the page's queues are turned into JSON
/// (100,000 queues cost a page).
fn list_queues(api: &ApiRef, caller: &Caller, vhost: Option<&str>, q: &ListQuery) -> ApiResult<Value> {
    let mut queues = Vec::new();
    for v in vhosts_for(api, caller, vhost)? {
        queues.extend(v.queue_list());
    }
    let value = |queue: &QueueRef, column: &str| views::queue_column(api, queue, column);
    let lazy = Lazy { cheap: &views::queue_column_is_cheap, value: &value, default_sort: &["vhost", "name"] };
    respond_lazily(queues, q, lazy, |queue| views::queue(api, queue, &queue.inspect_counts()))
}

async fn list(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    Ok(Json(list_queues(&api, &caller, None, &q)?))
}

async fn list_in(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(list_queues(&api, &caller, Some(&vhost), &q)?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhosts_for(&api, &caller, Some(&vhost))?.remove(0);
    let queue = v.queue_named(name.as_bytes()).ok_or(ApiError::NotFound)?;
    let mut body = views::queue(&api, &queue, &queue.inspect_counts());
    if let Value::Object(map) = &mut body {
        let owners = crate::channel_views::owners(&api);
        let consumers = crate::channel_views::queue_consumers(&api, &queue, &v.name, &owners);
        map.insert("consumer_details".into(), Value::Array(consumers));
        // The tags of its exclusive consumer and of its single active consumer, if any.
        let tag = |id| owners.get(&id).map(|o| o.tag.clone());
        let exclusive = queue.consumer_views().into_iter().find(|c| c.exclusive).and_then(|c| tag(c.id));
        map.insert("exclusive_consumer_tag".into(), json!(exclusive));
        map.insert("single_active_consumer_tag".into(), json!(queue.active_consumer().and_then(tag)));
        map.insert("deliveries".into(), json!([]));
        map.insert("incoming".into(), json!([]));
    }
    Ok(Json(respond_one(body, &q)))
}

async fn declare(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let body = body_json(&body)?;
    let name = short(&name)?;
    let declare = QueueDeclare {
        name: name.clone(),
        server_named: false,
        passive: false,
        durable: flag(&body, "durable", true)?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete", false)?,
        arguments: json_to_table(body.get("arguments"))?,
    };
    let existed = v.queue_named(name.as_bytes()).is_some();
    super::execute(&api, &caller, &v, Command::DeclareQueue(declare))?;
    Ok(put_status(existed))
}

async fn delete(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let name = short(&name)?;
    v.queue_named(name.as_bytes()).ok_or(ApiError::NotFound)?;
    let command = Command::DeleteQueue {
        name,
        if_unused: query_flag(&query, "if-unused"),
        if_empty: query_flag(&query, "if-empty"),
    };
    super::execute(&api, &caller, &v, command)?;
    // A queue with many bindings is unroutable already; its bindings are removed a step at
    // a time, yielding between steps, before the answer.
    while !v.unbind_deleted() {
        tokio::task::yield_now().await;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn purge(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    super::execute(&api, &caller, &v, Command::PurgeQueue { name: short(&name)? })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"action": "sync"}` or `"cancel_sync"` (rabbit-hole v2's `SyncQueue`): mirror
/// synchronisation, which a queue without mirrors (every queue of Lepus, as a classic queue of
/// a single RabbitMQ node) has nothing to do for.
async fn action(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    v.queue_named(short(&name)?.as_bytes()).ok_or(ApiError::NotFound)?;
    match text(&body_json(&body)?, "action").as_deref() {
        Some("sync" | "cancel_sync") => Ok(StatusCode::NO_CONTENT),
        other => Err(ApiError::BadRequest(format!("unknown action {}", other.unwrap_or("(none)").escape_debug()))),
    }
}

/// Most messages one get request takes.
const GET_COUNT_MAX: u64 = 10_000;

/// What becomes of the messages a get took.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AckMode {
    Requeue,
    Ack,
    /// Rejected without requeue: dead-lettered if the queue has a dead-letter exchange.
    Reject,
}

async fn get_messages(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let body = body_json(&body)?;
    let mode =
        match text(&body, "ackmode").as_deref() {
            Some("ack_requeue_true" | "reject_requeue_true") => AckMode::Requeue,
            Some("ack_requeue_false") => AckMode::Ack,
            Some("reject_requeue_false") => AckMode::Reject,
            _ => return Err(ApiError::BadRequest(
                "ackmode must be one of ack_requeue_true, ack_requeue_false, reject_requeue_true, reject_requeue_false"
                    .into(),
            )),
        };
    let base64_always = match text(&body, "encoding").as_deref().unwrap_or("auto") {
        "auto" => false,
        "base64" => true,
        other => return Err(ApiError::BadRequest(format!("invalid encoding '{other}'"))),
    };
    let mut count = number(body.get("count"), "count")?.unwrap_or(1);
    if count > GET_COUNT_MAX {
        tracing::info!(count, limit = GET_COUNT_MAX, "management get: count capped");
        count = GET_COUNT_MAX;
    }
    let truncate = number(body.get("truncate"), "truncate")?;
    let queue = v.queue(&short(&name)?, HTTP_CONNECTION)?;
    let mut taken: Vec<(Entry, u32)> = Vec::new();
    while (taken.len() as u64) < count {
        match crate::get::get(&queue).await {
            Some(got) => taken.push(got),
            None => break,
        }
    }
    let out: Vec<Value> =
        taken.iter().map(|(e, remaining)| message_json(e, *remaining, base64_always, truncate)).collect();
    let entries: Vec<_> = taken.into_iter().map(|(e, _)| (e.seq, e.message)).collect();
    match mode {
        AckMode::Requeue => queue.requeue(entries, None),
        AckMode::Ack => drop(queue.ack(None, entries.iter().map(|(seq, _)| *seq).collect::<Vec<_>>().into_iter())),
        AckMode::Reject => drop(queue.discard(None, &entries)),
    }
    Ok(Json(Value::Array(out)))
}

fn message_json(e: &Entry, remaining: u32, base64_always: bool, truncate: Option<u64>) -> Value {
    let body = e.message.body();
    let shown = match truncate {
        Some(t) if (t as usize) < body.len() => &body[..t as usize],
        _ => body,
    };
    let (payload, encoding) = match std::str::from_utf8(shown) {
        Ok(s) if !base64_always => (s.to_owned(), "string"),
        _ => (base64::engine::general_purpose::STANDARD.encode(shown), "base64"),
    };
    let properties = e.message.properties().map(|p| properties_to_json(&p)).unwrap_or_else(|_| json!({}));
    json!({
        "payload_bytes": body.len(),
        "redelivered": e.redelivered,
        "exchange": String::from_utf8_lossy(e.message.exchange()),
        "routing_key": String::from_utf8_lossy(e.message.routing_key()),
        "message_count": remaining,
        "properties": properties,
        "payload": payload,
        "payload_encoding": encoding,
    })
}

async fn bindings(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhosts_for(&api, &caller, Some(&vhost))?.remove(0);
    v.queue_named(name.as_bytes()).ok_or(ApiError::NotFound)?;
    let to_queue = v
        .binding_views()
        .into_iter()
        .filter(|b| matches!(&b.destination, Destination::Queue(d) if d.as_bytes() == name.as_bytes()))
        .collect();
    Ok(Json(super::bindings::respond_bindings(super::bindings::in_vhost(&v, to_queue), &q)?))
}
