//! `/api/exchanges`: list, show, declare (PUT), delete, publish (`/publish`, answering
//! `{"routed": bool}` once a persistent message is on disk, as RabbitMQ answers after its
//! confirm), and an exchange's bindings as source or destination.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use lepus_broker::command::Command;
use lepus_broker::exchange::Destination;
use lepus_broker::vhost::{BindingView, ExchangeDeclare, ExchangeView};
use lepus_broker::{Durable, Message, MessageHeaders, Publish};
use serde_json::{Value, json};

use super::{exchange_name, put_status, query_flag, vhosts_for};
use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::{body_json, flag, json_to_properties, json_to_table, short, text};
use crate::error::{ApiError, ApiResult};
use crate::listing::{Lazy, ListQuery, respond_lazily, respond_one};
use crate::views;

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/exchanges", get(list))
        .route("/api/exchanges/{vhost}", get(list_in))
        .route("/api/exchanges/{vhost}/{name}", get(show).put(declare).delete(delete))
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route("/api/exchanges/{vhost}/{name}/bindings/source", get(bindings_source))
        .route("/api/exchanges/{vhost}/{name}/bindings/destination", get(bindings_destination))
}

/// The exchanges of one vhost or all the caller may see, as a list answer: paged and sorted by
/// name, publish counts or other plain fields, only the page's are turned into JSON.
fn list_exchanges(api: &ApiRef, caller: &Caller, vhost: Option<&str>, q: &ListQuery) -> ApiResult<Value> {
    let mut exchanges = Vec::new();
    for v in vhosts_for(api, caller, vhost)? {
        exchanges.extend(v.exchange_views().into_iter().map(|x| (v.name.clone(), x)));
    }
    let value = |(vhost, x): &(Arc<str>, ExchangeView), column: &str| views::exchange_column(vhost, x, column);
    let lazy = Lazy { cheap: &views::exchange_column_is_cheap, value: &value, default_sort: &["vhost", "name"] };
    respond_lazily(exchanges, q, lazy, |(vhost, x)| views::exchange(vhost, x))
}

async fn list(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    Ok(Json(list_exchanges(&api, &caller, None, &q)?))
}

async fn list_in(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(list_exchanges(&api, &caller, Some(&vhost), &q)?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhosts_for(&api, &caller, Some(&vhost))?.remove(0);
    let x = v.exchange_view(exchange_name(&name).as_bytes()).ok_or(ApiError::NotFound)?;
    let mut body = views::exchange(&v.name, &x);
    if let Value::Object(map) = &mut body {
        // Per-publisher and per-queue rates: none sampled yet.
        map.insert("incoming".into(), json!([]));
        map.insert("outgoing".into(), json!([]));
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
    let name = short(exchange_name(&name))?;
    let declare = ExchangeDeclare {
        name: name.clone(),
        kind: text(&body, "type").unwrap_or_else(|| "direct".into()),
        passive: false,
        durable: flag(&body, "durable", true)?,
        auto_delete: flag(&body, "auto_delete", false)?,
        internal: flag(&body, "internal", false)?,
        arguments: json_to_table(body.get("arguments"))?,
    };
    let existed = v.exchange_exists(name.as_bytes());
    super::execute(&api, &caller, &v, Command::DeclareExchange(declare))?;
    Ok(put_status(existed))
}

async fn delete(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let name = short(exchange_name(&name))?;
    if !v.exchange_exists(name.as_bytes()) {
        return Err(ApiError::NotFound);
    }
    super::execute(&api, &caller, &v, Command::DeleteExchange { name, if_unused: query_flag(&query, "if-unused") })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Largest payload the publish endpoint takes (the HTTP body limit bounds it too).
const PUBLISH_PAYLOAD_MAX_BYTES: usize = 16 * 1024 * 1024;

async fn publish(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let body = body_json(&body)?;
    let exchange = exchange_name(&name);
    let routing_key = text(&body, "routing_key").ok_or_else(|| ApiError::BadRequest("routing_key missing".into()))?;
    // As 3.10.8 (once the exchange is known to exist): the properties are mandatory, even
    // empty (rabbit-hole leaves out an empty map).
    if !body.contains_key("properties") && v.exchange_exists(exchange.as_bytes()) {
        return Err(ApiError::BadRequest("[{key_missing,properties}]".into()));
    }
    let payload = text(&body, "payload").unwrap_or_default();
    let payload = match text(&body, "payload_encoding").as_deref().unwrap_or("string") {
        "string" => payload.into_bytes(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|_| ApiError::BadRequest("payload is not valid base64".into()))?,
        other => return Err(ApiError::BadRequest(format!("invalid payload_encoding '{other}'"))),
    };
    if payload.len() > PUBLISH_PAYLOAD_MAX_BYTES {
        tracing::warn!(
            bytes = payload.len(),
            limit = PUBLISH_PAYLOAD_MAX_BYTES,
            "management publish refused: payload too large"
        );
        return Err(ApiError::BadRequest(format!("payload larger than {PUBLISH_PAYLOAD_MAX_BYTES} bytes")));
    }
    short(&routing_key)?;
    let properties = json_to_properties(body.get("properties"))?;
    let message = Message::with_properties(exchange.as_bytes(), routing_key.as_bytes(), &properties, &payload);
    let mut publisher = api.broker.publisher(v.clone());
    let headers = MessageHeaders::from(properties.headers.as_ref());
    let outcome = publisher.publish(Publish { message: Arc::new(message), extra_keys: &[], headers })?;
    wait_durable(&api, outcome.durable).await?;
    Ok(Json(json!({"routed": outcome.routed})))
}

/// Wakes a waiting request after a commit.
struct NotifyAfterCommit(Arc<tokio::sync::Notify>);

impl lepus_broker::durability::CommitWaker for NotifyAfterCommit {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// Returns once `token` holds (a persistent message in a durable queue is on disk).
async fn wait_durable(api: &ApiRef, token: Durable) -> ApiResult<()> {
    let durability = api.broker.durability();
    let notify = Arc::new(tokio::sync::Notify::new());
    loop {
        // Registered before looking, so a commit in between still wakes us.
        let has_store = durability.wake_after_commit(Arc::new(NotifyAfterCommit(notify.clone())));
        let progress = durability.progress();
        if !has_store || progress.covers(token) {
            return Ok(());
        }
        if progress.failed {
            return Err(ApiError::Internal("the message store failed: the message may be lost".into()));
        }
        notify.notified().await;
    }
}

/// The bindings of exchange `name` that `keep` picks, as a list answer.
fn bindings_where(
    api: &ApiRef,
    caller: &Caller,
    (vhost, name): (&str, &str),
    q: &ListQuery,
    keep: impl Fn(&BindingView, &[u8]) -> bool,
) -> ApiResult<Value> {
    let v = vhosts_for(api, caller, Some(vhost))?.remove(0);
    let name = exchange_name(name);
    if !v.exchange_exists(name.as_bytes()) {
        return Err(ApiError::NotFound);
    }
    let picked = v.binding_views().into_iter().filter(|b| keep(b, name.as_bytes())).collect();
    super::bindings::respond_bindings(super::bindings::in_vhost(&v, picked), q)
}

async fn bindings_source(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(bindings_where(&api, &caller, (&vhost, &name), &q, |b, x| b.source.as_bytes() == x)?))
}

async fn bindings_destination(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let to_exchange =
        |b: &BindingView, x: &[u8]| matches!(&b.destination, Destination::Exchange(d) if d.as_bytes() == x);
    Ok(Json(bindings_where(&api, &caller, (&vhost, &name), &q, to_exchange)?))
}
