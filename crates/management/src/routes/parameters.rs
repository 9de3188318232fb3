//! `/api/parameters` and `/api/global-parameters`: RabbitMQ's runtime parameters, as far as
//! Lepus has them. The components are `vhost-limits` (one parameter per vhost, named
//! `limits`), `operator_policy` and `policy` (listed only when asked for by component, as
//! RabbitMQ 3.10.8 does); plugin components (federation, shovel) do not exist, so their lists
//! are empty and setting one is refused with RabbitMQ's "component not found". The global
//! parameters are the cluster's name and id, read-only.
//!
//! Policymakers read them (for the vhosts they may see). Setting `vhost-limits` here takes an
//! administrator, as `/api/vhost-limits` does (RabbitMQ 3.10.8 lets a policymaker set them
//! through this path); policies are set through `/api/policies`, as RabbitMQ requires.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::VHost;
use lepus_broker::command::{Command, NodeCommand};
use lepus_broker::limits::VhostLimits;
use lepus_broker::policy::{ApplyTo, PolicyKind, PolicySpec};
use serde_json::{Value, json};

use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::body_json;
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};

const VHOST_LIMITS: &str = "vhost-limits";
const OPERATOR_POLICY: &str = "operator_policy";
const POLICY: &str = "policy";
/// The one name a vhost's limits parameter has.
const LIMITS_NAME: &str = "limits";

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/parameters", get(|s, c, q| list(s, c, q, None, None)))
        .route("/api/parameters/{component}", get(|s, c, Path(p): Path<String>, q| list(s, c, q, Some(p), None)))
        .route(
            "/api/parameters/{component}/{vhost}",
            get(|s, c, Path((p, v)): Path<(String, String)>, q| list(s, c, q, Some(p), Some(v))),
        )
        .route("/api/parameters/{component}/{vhost}/{name}", get(show).put(put).delete(delete))
        .route("/api/global-parameters", get(list_global))
        .route("/api/global-parameters/{name}", get(show_global).put(put_global).delete(delete_global))
}

fn require_policymaker(caller: &Caller) -> ApiResult<()> {
    if caller.rights.policymaker {
        Ok(())
    } else {
        Err(ApiError::NotAuthorised("User not authorised to access object"))
    }
}

/// The parameters of the vhosts `caller` may see (or of `vhost`), of `component` or of every
/// component but `policy`.
fn parameters(api: &ApiRef, caller: &Caller, component: Option<&str>, vhost: Option<&str>) -> ApiResult<Vec<Value>> {
    Ok(super::vhosts_for(api, caller, vhost)?.iter().flat_map(|v| of_vhost(v, component)).collect())
}

/// `v`'s parameters of `component`, or of every component but `policy` (what RabbitMQ's
/// list and definitions export hold).
pub(super) fn of_vhost(v: &VHost, component: Option<&str>) -> Vec<Value> {
    let wanted = |c: &str| component.map_or(c != POLICY, |x| x == c);
    let mut items = Vec::new();
    if wanted(VHOST_LIMITS) {
        let pairs = v.limits().pairs();
        if !pairs.is_empty() {
            items.push(parameter(&v.name, VHOST_LIMITS, LIMITS_NAME, super::access::limits_json(&pairs)));
        }
    }
    for (name, kind) in [(OPERATOR_POLICY, PolicyKind::Operator), (POLICY, PolicyKind::Policy)] {
        if wanted(name) {
            items.extend(v.policies(kind).iter().map(|p| {
                let value = json!({"pattern": p.pattern, "definition": p.definition, "priority": p.priority,
                                   "apply-to": p.apply_to.as_str()});
                parameter(&v.name, name, &p.name, value)
            }));
        }
    }
    items
}

fn parameter(vhost: &str, component: &str, name: &str, value: Value) -> Value {
    json!({"value": value, "vhost": vhost, "component": component, "name": name})
}

async fn list(
    State(api): State<ApiRef>,
    caller: Caller,
    Query(q): Query<ListQuery>,
    component: Option<String>,
    vhost: Option<String>,
) -> ApiResult<Json<Value>> {
    require_policymaker(&caller)?;
    let items = parameters(&api, &caller, component.as_deref(), vhost.as_deref())?;
    Ok(Json(respond(items, &q, &["vhost", "name"])?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    require_policymaker(&caller)?;
    let found = parameters(&api, &caller, Some(&component), Some(&vhost))?
        .into_iter()
        .find(|p| p["name"] == name.as_str())
        .ok_or(ApiError::NotFound)?;
    Ok(Json(respond_one(found, &q)))
}

fn component_not_found(component: &str) -> ApiError {
    ApiError::BadRequest(format!("Validation failed\n\ncomponent {component} not found\n"))
}

async fn put(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    require_policymaker(&caller)?;
    let body = body_json(&body)?;
    let value = body.get("value").ok_or_else(|| ApiError::BadRequest("[{key_missing,value}]".into()))?;
    match component.as_str() {
        VHOST_LIMITS => put_limits(&api, &caller, vhost, &name, value),
        OPERATOR_POLICY => put_operator_policy(&api, &caller, &vhost, name, value),
        POLICY => Err(ApiError::BadRequest("policies may not be set using this method".into())),
        other => Err(component_not_found(other)),
    }
}

/// A vhost's limits, replaced whole (as `rabbitmqctl set_vhost_limits`).
fn put_limits(api: &ApiRef, caller: &Caller, vhost: String, name: &str, value: &Value) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let v = caller.require_vhost(&api.broker, &vhost)?;
    if name != LIMITS_NAME {
        return Err(ApiError::BadRequest(format!("vhost limits are the parameter named \"{LIMITS_NAME}\"")));
    }
    let limits = limits_of(value)?;
    let existed = !v.limits().pairs().is_empty();
    api.broker.execute_node(NodeCommand::SetVhostLimits { vhost, limits })?;
    Ok(super::put_status(existed))
}

fn limits_of(value: &Value) -> ApiResult<VhostLimits> {
    let object = value.as_object().ok_or_else(|| ApiError::BadRequest("limits must be a JSON object".into()))?;
    let mut pairs = Vec::with_capacity(object.len());
    for (key, n) in object {
        let n = n.as_i64().ok_or_else(|| ApiError::BadRequest(format!("limit {key} must be an integer")))?;
        pairs.push((key.as_str(), n));
    }
    Ok(VhostLimits::from_pairs(pairs)?)
}

/// An operator policy; unlike `/api/operator-policies`, RabbitMQ requires its priority here.
fn put_operator_policy(
    api: &ApiRef,
    caller: &Caller,
    vhost: &str,
    name: String,
    value: &Value,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let v = caller.require_vhost(&api.broker, vhost)?;
    let missing = |key: &str| ApiError::BadRequest(format!("Validation failed\n\nKey \"{key}\" not found in {name}\n"));
    let pattern = value.get("pattern").and_then(Value::as_str).ok_or_else(|| missing("pattern"))?.to_owned();
    let definition = value.get("definition").cloned().ok_or_else(|| missing("definition"))?;
    let priority = value.get("priority").and_then(Value::as_i64).ok_or_else(|| missing("priority"))?;
    let apply_to = ApplyTo::parse(value.get("apply-to").and_then(Value::as_str).unwrap_or("all"))?;
    let kind = PolicyKind::Operator;
    let existed = v.policies(kind).iter().any(|p| p.name == name);
    let spec = PolicySpec { kind, name, pattern, apply_to, priority, definition };
    super::execute(api, caller, &v, Command::SetPolicy(spec))?;
    Ok(super::put_status(existed))
}

async fn delete(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let v = caller.require_vhost(&api.broker, &vhost)?;
    match component.as_str() {
        VHOST_LIMITS if name == LIMITS_NAME && !v.limits().pairs().is_empty() => {
            api.broker.execute_node(NodeCommand::SetVhostLimits { vhost, limits: VhostLimits::default() })?;
        }
        OPERATOR_POLICY if v.policies(PolicyKind::Operator).iter().any(|p| p.name == name) => {
            super::execute(&api, &caller, &v, Command::ClearPolicy { kind: PolicyKind::Operator, name })?;
        }
        POLICY => return Err(ApiError::BadRequest("policies may not be cleared using this method".into())),
        _ => return Err(ApiError::NotFound),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The cluster's name and id (the id as the Prometheus identity metric gives it).
pub(super) fn global_parameters(api: &ApiRef) -> Vec<Value> {
    let name = &api.node.name;
    vec![
        json!({"name": "cluster_name", "value": name}),
        json!({"name": "internal_cluster_id", "value": crate::metrics::permanent_id(name)}),
    ]
}

async fn list_global(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    require_policymaker(&caller)?;
    Ok(Json(respond(global_parameters(&api), &q, &["name"])?))
}

async fn show_global(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    require_policymaker(&caller)?;
    let found = global_parameters(&api).into_iter().find(|p| p["name"] == name.as_str()).ok_or(ApiError::NotFound)?;
    Ok(Json(respond_one(found, &q)))
}

/// Lepus keeps no global parameters of its own: setting or clearing one is refused (not
/// silently dropped).
async fn put_global(caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    Err(ApiError::BadRequest(format!("global parameter {name} cannot be changed: Lepus keeps no global parameters")))
}

/// Clearing one of the read-only parameters is refused; one that is not there is 404, as in
/// RabbitMQ (a client's cleanup, such as rabbit-hole's, takes that as done).
async fn delete_global(State(api): State<ApiRef>, caller: Caller, name: Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if !global_parameters(&api).iter().any(|p| p["name"] == name.as_str()) {
        return Err(ApiError::NotFound);
    }
    put_global(caller, name).await
}
