//! `/api/vhosts`: list, show, create (`NodeCommand::AddVhost`; the creating user gets every
//! permission in a new vhost, as RabbitMQ's API gives it), delete (`NodeCommand::DeleteVhost`:
//! its connections are closed with 320, its queues dropped).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::VHost;
use lepus_broker::command::NodeCommand;
use serde_json::{Map, Value, json};

use crate::ApiRef;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};
use crate::views::message_counts;

pub fn routes() -> Router<ApiRef> {
    Router::new().route("/api/vhosts", get(list)).route("/api/vhosts/{name}", get(show).put(create).delete(delete))
}

fn vhost_json(api: &ApiRef, v: &VHost) -> Value {
    let (mut ready, mut unacked) = (0u64, 0u64);
    for q in v.queue_list() {
        let c = q.inspect_counts();
        ready += u64::from(c.ready);
        unacked += c.unacked;
    }
    let description = if &*v.name == "/" { "Default virtual host" } else { "" };
    let mut map = Map::new();
    map.insert("name".into(), json!(&*v.name));
    map.insert("description".into(), json!(description));
    map.insert("tags".into(), json!([]));
    map.insert("metadata".into(), json!({"description": description, "tags": []}));
    map.insert("default_queue_type".into(), json!("classic"));
    map.insert("tracing".into(), json!(false));
    map.insert("cluster_state".into(), json!({ api.node.name.clone(): "running" }));
    message_counts(&mut map, ready, unacked);
    Value::Object(map)
}

async fn list(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let items = super::vhosts_for(&api, &caller, None)?.iter().map(|v| vhost_json(&api, v)).collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = super::vhosts_for(&api, &caller, Some(&name))?;
    Ok(Json(respond_one(vhost_json(&api, &v[0]), &q)))
}

async fn create(State(api): State<ApiRef>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let existed = api.broker.vhost(&name).is_some();
    api.broker.execute_node(NodeCommand::AddVhost { name: name.clone() })?;
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
