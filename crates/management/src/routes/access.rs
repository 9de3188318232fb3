//! `/api/permissions`, `/api/topic-permissions`, `/api/vhost-limits`, `/api/user-limits`:
//! RabbitMQ's shapes over the broker's permission and limit commands. Administrators only.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use lepus_broker::command::NodeCommand;
use lepus_broker::limits::{UserLimits, VhostLimits};
use serde_json::{Map, Value, json};

use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::{body_json, text};
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/permissions", get(|s, c, q| list_all(s, c, q, permissions)))
        .route("/api/permissions/{vhost}/{user}", get(show_permission).put(put_permission).delete(delete_permission))
        .route("/api/vhosts/{vhost}/permissions", get(|s, c, p, q| of_vhost(s, c, p, q, permissions)))
        .route("/api/users/{user}/permissions", get(|s, c, p, q| of_user(s, c, p, q, permissions)))
        .route("/api/topic-permissions", get(|s, c, q| list_all(s, c, q, topic_permissions)))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(show_topic_permissions).put(put_topic_permission).delete(delete_topic_permissions),
        )
        .route("/api/topic-permissions/{vhost}/{user}/{exchange}", delete(delete_topic_permission))
        .route("/api/vhosts/{vhost}/topic-permissions", get(|s, c, p, q| of_vhost(s, c, p, q, topic_permissions)))
        .route("/api/users/{user}/topic-permissions", get(|s, c, p, q| of_user(s, c, p, q, topic_permissions)))
        .route("/api/vhost-limits", get(list_vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(show_vhost_limits))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            put(|s, c, p, b| put_limit(s, c, p, b, Owner::Vhost)).delete(|s, c, p| delete_limit(s, c, p, Owner::Vhost)),
        )
        .route("/api/user-limits", get(list_user_limits))
        .route("/api/user-limits/{user}", get(show_user_limits))
        .route(
            "/api/user-limits/{user}/{name}",
            put(|s, c, p, b| put_limit(s, c, p, b, Owner::User)).delete(|s, c, p| delete_limit(s, c, p, Owner::User)),
        )
}

/// Every permission, as RabbitMQ lists them, optionally for one vhost or one user.
pub(super) fn permissions(api: &ApiRef, vhost: Option<&str>, user: Option<&str>) -> Vec<Value> {
    let all = api.broker.permissions();
    all.list()
        .into_iter()
        .filter(|(u, v, _)| vhost.is_none_or(|x| x == *v) && user.is_none_or(|x| x == *u))
        .filter_map(|(u, v, g)| {
            let grant = g.grant.as_ref()?;
            Some(json!({
                "user": u, "vhost": v,
                "configure": grant.configure.source(), "write": grant.write.source(), "read": grant.read.source(),
            }))
        })
        .collect()
}

pub(super) fn topic_permissions(api: &ApiRef, vhost: Option<&str>, user: Option<&str>) -> Vec<Value> {
    let all = api.broker.permissions();
    let mut out = Vec::new();
    for (u, v, g) in all.list() {
        if vhost.is_some_and(|x| x != v) || user.is_some_and(|x| x != u) {
            continue;
        }
        for (exchange, t) in &g.topics {
            out.push(json!({
                "user": u, "vhost": v, "exchange": String::from_utf8_lossy(exchange),
                "write": t.write_source, "read": t.read_source,
            }));
        }
    }
    out
}

/// Lists permissions or topic permissions, optionally for one vhost and one user.
type Lister = fn(&ApiRef, Option<&str>, Option<&str>) -> Vec<Value>;

async fn list_all(
    State(api): State<ApiRef>,
    caller: Caller,
    Query(q): Query<ListQuery>,
    lister: Lister,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(respond(lister(&api, None, None), &q, &["vhost", "user"])?))
}

async fn of_vhost(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
    lister: Lister,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    api.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    Ok(Json(respond(lister(&api, Some(&vhost), None), &q, &["user"])?))
}

async fn of_user(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(user): Path<String>,
    Query(q): Query<ListQuery>,
    lister: Lister,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    api.broker.users().get(&user).ok_or(ApiError::NotFound)?;
    Ok(Json(respond(lister(&api, None, Some(&user)), &q, &["vhost"])?))
}

async fn show_permission(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let found = permissions(&api, Some(&vhost), Some(&user)).pop().ok_or(ApiError::NotFound)?;
    Ok(Json(respond_one(found, &q)))
}

/// A mandatory text field, as RabbitMQ reports a missing one.
fn required(body: &Map<String, Value>, key: &str) -> ApiResult<String> {
    text(body, key).ok_or_else(|| ApiError::BadRequest(format!("[{{key_missing,{key}}}]")))
}

/// 404 unless both the vhost and the user exist (RabbitMQ checks both before the body).
fn vhost_and_user(api: &ApiRef, vhost: &str, user: &str) -> ApiResult<()> {
    api.broker.vhost(vhost).ok_or(ApiError::NotFound)?;
    api.broker.users().get(user).ok_or(ApiError::NotFound)?;
    Ok(())
}

async fn put_permission(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    vhost_and_user(&api, &vhost, &user)?;
    let body = body_json(&body)?;
    let (configure, write, read) = (required(&body, "configure")?, required(&body, "write")?, required(&body, "read")?);
    let existed = api.broker.permissions().get(&user, &vhost).is_some_and(|g| g.grant.is_some());
    api.broker.execute_node(NodeCommand::SetPermissions { user, vhost, configure, write, read })?;
    Ok(super::put_status(existed))
}

async fn delete_permission(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if api.broker.permissions().get(&user, &vhost).is_none_or(|g| g.grant.is_none()) {
        return Err(ApiError::NotFound);
    }
    api.broker.execute_node(NodeCommand::ClearPermissions { user, vhost })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn show_topic_permissions(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let found = topic_permissions(&api, Some(&vhost), Some(&user));
    if found.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(respond(found, &q, &["exchange"])?))
}

async fn put_topic_permission(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    vhost_and_user(&api, &vhost, &user)?;
    let body = body_json(&body)?;
    let (exchange, write, read) = (required(&body, "exchange")?, required(&body, "write")?, required(&body, "read")?);
    let existed =
        api.broker.permissions().get(&user, &vhost).is_some_and(|g| g.topics.contains_key(exchange.as_bytes()));
    api.broker.execute_node(NodeCommand::SetTopicPermissions { user, vhost, exchange, write, read })?;
    Ok(super::put_status(existed))
}

async fn delete_topic_permissions(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if api.broker.permissions().get(&user, &vhost).is_none_or(|g| g.topics.is_empty()) {
        return Err(ApiError::NotFound);
    }
    api.broker.execute_node(NodeCommand::ClearTopicPermissions { user, vhost, exchange: None })?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's topic permissions for one exchange (rabbit-hole's `DeleteTopicPermissionsIn`).
async fn delete_topic_permission(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, user, exchange)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if api.broker.permissions().get(&user, &vhost).is_none_or(|g| !g.topics.contains_key(exchange.as_bytes())) {
        return Err(ApiError::NotFound);
    }
    let exchange = Some(exchange);
    api.broker.execute_node(NodeCommand::ClearTopicPermissions { user, vhost, exchange })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Limits as RabbitMQ shows them: `{"max-connections": 10, ...}`.
pub(super) fn limits_json(pairs: &[(&str, i64)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

pub(super) fn vhost_limits(api: &ApiRef, vhost: Option<&str>) -> Vec<Value> {
    api.broker
        .vhosts()
        .iter()
        .filter(|v| vhost.is_none_or(|x| x == &*v.name))
        .filter_map(|v| {
            let pairs = v.limits().pairs();
            (!pairs.is_empty()).then(|| json!({"vhost": &*v.name, "value": limits_json(&pairs)}))
        })
        .collect()
}

async fn list_vhost_limits(
    State(api): State<ApiRef>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(respond(vhost_limits(&api, None), &q, &["vhost"])?))
}

async fn show_vhost_limits(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    api.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    Ok(Json(Value::Array(vhost_limits(&api, Some(&vhost)))))
}

/// The `value` of a limit body, a whole number.
fn limit_value(body: &[u8]) -> ApiResult<i64> {
    let body = body_json(body)?;
    body.get("value").and_then(Value::as_i64).ok_or_else(|| ApiError::BadRequest("[{key_missing,value}]".into()))
}

/// `pairs` with `name` set to `value` (or, `None`, removed).
fn with_limit(pairs: Vec<(&'static str, i64)>, name: &str, value: Option<i64>) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> =
        pairs.into_iter().filter(|(k, _)| *k != name).map(|(k, v)| (k.to_owned(), v)).collect();
    if let Some(v) = value {
        out.push((name.to_owned(), v));
    }
    out
}

fn user_limits(api: &ApiRef, user: Option<&str>) -> Vec<Value> {
    api.broker
        .all_user_limits()
        .into_iter()
        .filter(|(u, _)| user.is_none_or(|x| x == u))
        .filter_map(|(u, l)| {
            let pairs = l.pairs();
            (!pairs.is_empty()).then(|| json!({"user": u, "value": limits_json(&pairs)}))
        })
        .collect()
}

async fn list_user_limits(
    State(api): State<ApiRef>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(respond(user_limits(&api, None), &q, &["user"])?))
}

async fn show_user_limits(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    api.broker.users().get(&user).ok_or(ApiError::NotFound)?;
    Ok(Json(Value::Array(user_limits(&api, Some(&user)))))
}

/// Whose limits a request sets.
#[derive(Clone, Copy)]
enum Owner {
    Vhost,
    User,
}

/// Sets (or, `None`, clears) one limit of a vhost or a user, keeping its others.
fn set_limit(api: &ApiRef, owner: Owner, who: String, name: &str, value: Option<i64>) -> ApiResult<StatusCode> {
    let command = match owner {
        Owner::Vhost => {
            let current = api.broker.vhost(&who).ok_or(ApiError::NotFound)?.limits();
            let pairs = with_limit(current.pairs(), name, value);
            let limits = VhostLimits::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), *v)))?;
            NodeCommand::SetVhostLimits { vhost: who, limits }
        }
        Owner::User => {
            api.broker.users().get(&who).ok_or(ApiError::NotFound)?;
            let pairs = with_limit(api.broker.user_limits(&who).pairs(), name, value);
            let limits = UserLimits::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), *v)))?;
            NodeCommand::SetUserLimits { user: who, limits }
        }
    };
    api.broker.execute_node(command)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_limit(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((who, name)): Path<(String, String)>,
    body: Bytes,
    owner: Owner,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let value = limit_value(&body)?;
    set_limit(&api, owner, who, &name, Some(value))
}

async fn delete_limit(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((who, name)): Path<(String, String)>,
    owner: Owner,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    set_limit(&api, owner, who, &name, None)
}
