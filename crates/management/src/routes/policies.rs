//! `/api/policies` and `/api/operator-policies`: list, show, set and clear through the
//! vhost's policy commands. Policymakers (for vhosts they have permissions in) and
//! administrators set and clear user policies; operator policies are administrators' only.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::VHost;
use lepus_broker::command::Command;
use lepus_broker::policy::{ApplyTo, Policy, PolicyKind, PolicySpec};
use serde_json::{Value, json};

use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::{body_json, text};
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/policies", get(|s, c, q| list(s, c, q, None, PolicyKind::Policy)))
        .route(
            "/api/policies/{vhost}",
            get(|s, c, Path(v): Path<String>, q| list(s, c, q, Some(v), PolicyKind::Policy)),
        )
        .route(
            "/api/policies/{vhost}/{name}",
            get(|s, c, p, q| show(s, c, p, q, PolicyKind::Policy))
                .put(|s, c, p, b| put(s, c, p, b, PolicyKind::Policy))
                .delete(|s, c, p| delete(s, c, p, PolicyKind::Policy)),
        )
        .route("/api/operator-policies", get(|s, c, q| list(s, c, q, None, PolicyKind::Operator)))
        .route(
            "/api/operator-policies/{vhost}",
            get(|s, c, Path(v): Path<String>, q| list(s, c, q, Some(v), PolicyKind::Operator)),
        )
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(|s, c, p, q| show(s, c, p, q, PolicyKind::Operator))
                .put(|s, c, p, b| put(s, c, p, b, PolicyKind::Operator))
                .delete(|s, c, p| delete(s, c, p, PolicyKind::Operator)),
        )
}

/// A policy as RabbitMQ shows it.
pub(super) fn policy_json(vhost: &str, p: &Policy) -> Value {
    json!({
        "vhost": vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to.as_str(),
        "definition": p.definition, "priority": p.priority,
    })
}

/// Who may change policies of `kind` in `vhost`.
fn may_change(api: &ApiRef, caller: &Caller, vhost: &str, kind: PolicyKind) -> ApiResult<std::sync::Arc<VHost>> {
    let allowed = match kind {
        PolicyKind::Policy => caller.rights.policymaker,
        PolicyKind::Operator => caller.rights.administrator,
    };
    if !allowed {
        return Err(ApiError::NotAuthorised("Not policymaker user"));
    }
    caller.require_vhost(&api.broker, vhost)
}

async fn list(
    State(api): State<ApiRef>,
    caller: Caller,
    Query(q): Query<ListQuery>,
    vhost: Option<String>,
    kind: PolicyKind,
) -> ApiResult<Json<Value>> {
    let items = super::vhosts_for(&api, &caller, vhost.as_deref())?
        .iter()
        .flat_map(|v| v.policies(kind).iter().map(|p| policy_json(&v.name, p)).collect::<Vec<_>>())
        .collect();
    Ok(Json(respond(items, &q, &["vhost", "name"])?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    kind: PolicyKind,
) -> ApiResult<Json<Value>> {
    let v = super::vhosts_for(&api, &caller, Some(&vhost))?.remove(0);
    let found = v.policies(kind).into_iter().find(|p| p.name == name).ok_or(ApiError::NotFound)?;
    Ok(Json(respond_one(policy_json(&v.name, &found), &q)))
}

async fn put(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
    kind: PolicyKind,
) -> ApiResult<StatusCode> {
    let v = may_change(&api, &caller, &vhost, kind)?;
    let body = body_json(&body)?;
    let pattern = text(&body, "pattern").ok_or_else(|| ApiError::BadRequest("[{key_missing,pattern}]".into()))?;
    let definition =
        body.get("definition").cloned().ok_or_else(|| ApiError::BadRequest("[{key_missing,definition}]".into()))?;
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_i64()
            .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| ApiError::BadRequest("priority must be an integer".into()))?,
    };
    let apply_to = ApplyTo::parse(text(&body, "apply-to").as_deref().unwrap_or("all"))?;
    let existed = v.policies(kind).iter().any(|p| p.name == name);
    let spec = PolicySpec { kind, name, pattern, apply_to, priority, definition };
    super::execute(&api, &caller, &v, Command::SetPolicy(spec))?;
    Ok(super::put_status(existed))
}

async fn delete(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    kind: PolicyKind,
) -> ApiResult<StatusCode> {
    let v = may_change(&api, &caller, &vhost, kind)?;
    super::execute(&api, &caller, &v, Command::ClearPolicy { kind, name })?;
    Ok(StatusCode::NO_CONTENT)
}
