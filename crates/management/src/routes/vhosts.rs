//! `/api/vhosts`: list (with each vhost's message counts and socket bytes, and their rates,
//! from its connections: [`lepus_broker::vhost_stats`]), show, create or update (`NodeCommand::AddVhost` with the body's
//! description, tags and default queue type; the creating user gets every permission in a new
//! vhost, as RabbitMQ's API gives it), delete (`NodeCommand::DeleteVhost`:
//! its connections are closed with 320, its queues dropped).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::VHost;
use lepus_broker::command::NodeCommand;
use lepus_broker::io_stats::IoStat;
use lepus_broker::stats::Stat;
use lepus_broker::vhost_metadata::VhostMetadata;
use lepus_broker::vhost_stats::VhostView;
use serde_json::{Map, Value, json};

use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::body_json;
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};
use crate::views::{message_counts, message_stats};

pub fn routes() -> Router<ApiRef> {
    Router::new().route("/api/vhosts", get(list)).route("/api/vhosts/{name}", get(show).put(create).delete(delete))
}

/// `v`'s JSON; `traffic`: its connections' counts and socket bytes (absent before any
/// connection to it).
fn vhost_json(api: &ApiRef, v: &VHost, traffic: Option<&VhostView>) -> Value {
    let (mut ready, mut unacked) = (0u64, 0u64);
    for q in v.queue_list() {
        let c = q.inspect_counts();
        ready += u64::from(c.ready);
        unacked += c.unacked;
    }
    let metadata = v.metadata();
    let mut map = Map::new();
    map.insert("name".into(), json!(&*v.name));
    map.insert("description".into(), json!(metadata.description));
    map.insert("tags".into(), json!(metadata.tags));
    map.insert("default_queue_type".into(), json!(metadata.default_queue_type.as_deref().unwrap_or("undefined")));
    map.insert("metadata".into(), json!({"description": metadata.description, "tags": metadata.tags}));
    map.insert("tracing".into(), json!(false));
    map.insert("cluster_state".into(), json!({ api.node.name.clone(): "running" }));
    message_counts(&mut map, ready, unacked);
    let traffic = traffic.cloned().unwrap_or_default();
    map.insert("message_stats".into(), message_stats(&traffic.stats, &traffic.rates, Stat::management()));
    for stat in [IoStat::RecvOct, IoStat::SendOct] {
        map.insert(stat.name().into(), json!(traffic.io.get(stat)));
        map.insert(format!("{}_details", stat.name()), json!({"rate": traffic.io_rates[stat as usize]}));
    }
    Value::Object(map)
}

async fn list(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let traffic = api.broker.connections().vhost_views();
    let items =
        super::vhosts_for(&api, &caller, None)?.iter().map(|v| vhost_json(&api, v, traffic.get(&*v.name))).collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = super::vhosts_for(&api, &caller, Some(&name))?;
    let traffic = api.broker.connections().vhost_views();
    Ok(Json(respond_one(vhost_json(&api, &v[0], traffic.get(&*v[0].name)), &q)))
}

/// A vhost's description, tags and default queue type from a `PUT` or definitions body, as
/// RabbitMQ reads them: at the top level, or (as 3.11+ exports them) under `metadata`; what is
/// absent is reset.
pub fn metadata_of(body: &Map<String, Value>) -> ApiResult<VhostMetadata> {
    let nested = body.get("metadata").and_then(Value::as_object);
    let field = |key: &str| body.get(key).filter(|v| !v.is_null()).or_else(|| nested.and_then(|m| m.get(key)));
    let string = |key: &str| match field(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::BadRequest(format!("{key} must be a string"))),
    };
    let tags = match body.get("tags").filter(|v| !v.is_null()) {
        Some(_) => super::users::tags_of(body)?,
        None => nested.map_or(Ok(Vec::new()), super::users::tags_of)?,
    };
    Ok(VhostMetadata {
        description: string("description")?.unwrap_or_default(),
        tags,
        // 3.10.8 reads `defaultqueuetype`; 3.11 and later (and rabbit-hole) `default_queue_type`.
        default_queue_type: string("default_queue_type")?.or(string("defaultqueuetype")?).filter(|t| t != "undefined"),
    })
}

async fn create(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let metadata = metadata_of(&body_json(&body)?)?;
    let existed = api.broker.vhost(&name).is_some();
    api.broker.execute_node(NodeCommand::AddVhost { name: name.clone(), metadata: Some(metadata) })?;
    if !existed {
        let all = || ".*".to_owned();
        let grant =
            NodeCommand::SetPermissions { user: caller.name, vhost: name, configure: all(), write: all(), read: all() };
        api.broker.execute_node(grant)?;
    }
    Ok(super::put_status(existed))
}

async fn delete(State(api): State<ApiRef>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    api.broker.vhost(&name).ok_or(ApiError::NotFound)?;
    api.broker.execute_node(NodeCommand::DeleteVhost { name })?;
    Ok(StatusCode::NO_CONTENT)
}
