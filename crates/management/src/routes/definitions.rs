//! `/api/definitions` (and per vhost): the node's users, vhosts and topology in RabbitMQ's
//! definitions format, exported (`GET`) so they load into RabbitMQ or back into Lepus, and
//! imported (`POST`) through the same node and topology commands as every other change: users,
//! vhosts, exchanges, queues, bindings, in that order; exchanges and queues that exist are
//! left as they are (as RabbitMQ's import does), so importing twice changes nothing.
//! Permissions, topic permissions, policies, vhost limits and operator policies (RabbitMQ's
//! `vhost-limits` and `operator_policy` parameters) go both ways too; the global parameters
//! are the cluster's name and id, exported and not imported; other parameters (plugins') are
//! skipped on import with a log line.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::VHost;
use lepus_broker::command::{Binding, Command, Issuer, NodeCommand};
use lepus_broker::exchange::Destination;
use lepus_broker::limits::VhostLimits;
use lepus_broker::policy::{ApplyTo, PolicyKind, PolicySpec};
use lepus_broker::vhost::{ExchangeDeclare, QueueDeclare};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::convert::{flag, json_to_table, short, table_to_json, text};
use crate::error::{ApiError, ApiResult};
use crate::{ApiRef, RABBITMQ_VERSION, views};

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/definitions", get(all).post(import_all))
        .route("/api/definitions/{vhost}", get(one_vhost).post(import_vhost))
}

/// Queues, exchanges and bindings of `v` as definitions list them (`with_vhost`: each names
/// its vhost, as in a node-wide export).
fn topology(v: &VHost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut item: Value| {
        if with_vhost && let Value::Object(map) = &mut item {
            map.insert("vhost".into(), json!(&*v.name));
        }
        item
    };
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut queues: Vec<Value> = v
        .queue_list()
        .iter()
        .filter(|q| q.exclusive_owner.is_none())
        .map(|q| tag(json!({"name": lossy(q.name.as_bytes()), "durable": q.durable, "auto_delete": q.auto_delete, "arguments": table_to_json(&q.arguments)})))
        .collect();
    let mut exchanges: Vec<Value> = v
        .exchange_views()
        .iter()
        .filter(|x| !x.name.is_empty() && !x.name.as_bytes().starts_with(b"amq."))
        .map(|x| tag(json!({"name": lossy(x.name.as_bytes()), "type": x.type_name, "durable": x.durable, "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table_to_json(&x.arguments)})))
        .collect();
    let mut bindings: Vec<Value> = v
        .binding_views()
        .iter()
        .filter(|b| !b.source.is_empty())
        .map(|b| {
            let (destination, kind) = match &b.destination {
                Destination::Queue(q) => (q, "queue"),
                Destination::Exchange(x) => (x, "exchange"),
            };
            tag(json!({"source": lossy(b.source.as_bytes()), "destination": lossy(destination.as_bytes()), "destination_type": kind, "routing_key": lossy(b.routing_key.as_bytes()), "arguments": table_to_json(&b.arguments)}))
        })
        .collect();
    let by_name = |a: &Value, b: &Value| a["name"].as_str().cmp(&b["name"].as_str());
    queues.sort_by(by_name);
    exchanges.sort_by(by_name);
    bindings.sort_by(|a, b| {
        (a["source"].as_str(), a["destination"].as_str()).cmp(&(b["source"].as_str(), b["destination"].as_str()))
    });
    (queues, exchanges, bindings)
}

/// A vhost's policies as definitions list them (`with_vhost`: each names its vhost).
fn policies(v: &VHost, with_vhost: bool) -> Vec<Value> {
    v.policies(PolicyKind::Policy)
        .iter()
        .map(|p| {
            let mut item = super::policies::policy_json(&v.name, p);
            if !with_vhost && let Value::Object(map) = &mut item {
                map.remove("vhost");
            }
            item
        })
        .collect()
}

async fn all(State(api): State<ApiRef>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let users: Vec<Value> = api.broker.users().list().into_iter().map(views::user).collect();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    let (mut vhosts, mut all_policies, mut parameters) = (Vec::new(), Vec::new(), Vec::new());
    for v in api.broker.vhosts() {
        vhosts.push(vhost_definition(&v));
        all_policies.extend(policies(&v, true));
        parameters.extend(super::parameters::of_vhost(&v, None));
        let (q, x, b) = topology(&v, true);
        queues.extend(q);
        exchanges.extend(x);
        bindings.extend(b);
    }
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Lepus",
        "product_version": api.node.product_version,
        "users": users,
        "vhosts": vhosts,
        "permissions": super::access::permissions(&api, None, None),
        "topic_permissions": super::access::topic_permissions(&api, None, None),
        "parameters": parameters,
        "global_parameters": super::parameters::global_parameters(&api),
        "policies": all_policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

async fn one_vhost(State(api): State<ApiRef>, caller: Caller, Path(vhost): Path<String>) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    // 400, not 404, as 3.10.8 answers a vhost it does not have here.
    let v = api.broker.vhost(&vhost).ok_or_else(|| ApiError::BadRequest("vhost_not_found".into()))?;
    let (queues, exchanges, bindings) = topology(&v, false);
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Lepus",
        "product_version": api.node.product_version,
        "parameters": super::parameters::of_vhost(&v, None),
        "policies": policies(&v, false),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

/// Objects of one kind in a definitions document (absent: none).
fn section<'a>(doc: &'a Map<String, Value>, key: &str) -> ApiResult<&'a [Value]> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ApiError::BadRequest(format!("{key} must be a list"))),
    }
}

fn object(item: &Value) -> ApiResult<&Map<String, Value>> {
    item.as_object().ok_or_else(|| ApiError::BadRequest("definitions entries must be objects".into()))
}

fn parse(body: &[u8]) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::BadRequest("failed_to_parse_json".into())),
    }
}

/// The vhost an entry belongs to: its own `vhost`, else the path's.
fn vhost_of(api: &ApiRef, item: &Map<String, Value>, default: Option<&str>) -> ApiResult<std::sync::Arc<VHost>> {
    let name = text(item, "vhost")
        .or_else(|| default.map(str::to_owned))
        .ok_or_else(|| ApiError::BadRequest("an entry names no vhost".into()))?;
    api.broker.vhost(&name).ok_or_else(|| ApiError::BadRequest(format!("vhost '{name}' does not exist")))
}

/// A vhost as RabbitMQ 3.11+ exports it (3.10 gives the name alone and reads `description` and
/// `tags` back from the top level).
fn vhost_definition(v: &VHost) -> Value {
    let m = v.metadata();
    let mut metadata = json!({"description": m.description, "tags": m.tags});
    if let Some(kind) = &m.default_queue_type {
        metadata["default_queue_type"] = json!(kind);
    }
    json!({"name": &*v.name, "description": m.description, "tags": m.tags, "metadata": metadata})
}

fn required(item: &Map<String, Value>, key: &str) -> ApiResult<String> {
    text(item, key).ok_or_else(|| ApiError::BadRequest(format!("an entry has no {key}")))
}

fn import_users(api: &ApiRef, doc: &Map<String, Value>) -> ApiResult<()> {
    for item in section(doc, "users")? {
        let item = object(item)?;
        let credential = super::users::credential_of(item)?
            .ok_or_else(|| ApiError::BadRequest("a user has neither password_hash nor password".into()))?;
        let tags = super::users::tags_of(item)?;
        api.broker.execute_node(NodeCommand::PutUser { name: required(item, "name")?, credential, tags })?;
    }
    for item in section(doc, "vhosts")? {
        let item = object(item)?;
        let metadata = Some(super::vhosts::metadata_of(item)?);
        api.broker.execute_node(NodeCommand::AddVhost { name: required(item, "name")?, metadata })?;
    }
    Ok(())
}

fn import_topology(api: &ApiRef, doc: &Map<String, Value>, vhost: Option<&str>) -> ApiResult<()> {
    for item in section(doc, "exchanges")? {
        let item = object(item)?;
        let v = vhost_of(api, item, vhost)?;
        let name = short(&required(item, "name")?)?;
        if v.exchange_exists(name.as_bytes()) {
            continue;
        }
        let declare = ExchangeDeclare {
            name,
            kind: required(item, "type")?,
            passive: false,
            durable: flag(item, "durable", true)?,
            auto_delete: flag(item, "auto_delete", false)?,
            internal: flag(item, "internal", false)?,
            arguments: json_to_table(item.get("arguments"))?,
        };
        v.execute(Issuer::node(), Command::DeclareExchange(declare))?;
    }
    for item in section(doc, "queues")? {
        let item = object(item)?;
        let v = vhost_of(api, item, vhost)?;
        let name = short(&required(item, "name")?)?;
        if v.queue_named(name.as_bytes()).is_some() {
            continue;
        }
        let declare = QueueDeclare {
            name,
            durable: flag(item, "durable", true)?,
            auto_delete: flag(item, "auto_delete", false)?,
            arguments: json_to_table(item.get("arguments"))?,
            ..QueueDeclare::default()
        };
        v.execute(Issuer::node(), Command::DeclareQueue(declare))?;
    }
    for item in section(doc, "bindings")? {
        let item = object(item)?;
        let v = vhost_of(api, item, vhost)?;
        let destination = short(&required(item, "destination")?)?;
        let destination = match text(item, "destination_type").as_deref() {
            Some("exchange") => Destination::Exchange(destination),
            _ => Destination::Queue(destination),
        };
        let binding = Binding {
            source: short(&required(item, "source")?)?,
            destination,
            routing_key: short(&text(item, "routing_key").unwrap_or_default())?,
            arguments: json_to_table(item.get("arguments"))?,
        };
        v.execute(Issuer::node(), Command::Bind(binding))?;
    }
    Ok(())
}

/// Permissions and topic permissions (users and vhosts are imported first).
fn import_permissions(api: &ApiRef, doc: &Map<String, Value>) -> ApiResult<()> {
    for item in section(doc, "permissions")? {
        let item = object(item)?;
        api.broker.execute_node(NodeCommand::SetPermissions {
            user: required(item, "user")?,
            vhost: required(item, "vhost")?,
            configure: required(item, "configure")?,
            write: required(item, "write")?,
            read: required(item, "read")?,
        })?;
    }
    for item in section(doc, "topic_permissions")? {
        let item = object(item)?;
        api.broker.execute_node(NodeCommand::SetTopicPermissions {
            user: required(item, "user")?,
            vhost: required(item, "vhost")?,
            exchange: required(item, "exchange")?,
            write: required(item, "write")?,
            read: required(item, "read")?,
        })?;
    }
    Ok(())
}

/// A policy of `kind` from the fields RabbitMQ's definitions give it (a policy's own object,
/// or an operator policy parameter's `value`).
fn policy_spec(kind: PolicyKind, name: String, fields: &Map<String, Value>) -> ApiResult<PolicySpec> {
    Ok(PolicySpec {
        kind,
        name,
        pattern: required(fields, "pattern")?,
        apply_to: ApplyTo::parse(text(fields, "apply-to").as_deref().unwrap_or("all"))?,
        priority: fields.get("priority").and_then(Value::as_i64).unwrap_or(0),
        definition: fields.get("definition").cloned().unwrap_or(Value::Object(Map::new())),
    })
}

/// Policies and the `vhost-limits` and `operator_policy` parameters; other parameters (plugin
/// components Lepus does not have) are logged and skipped.
fn import_policies_and_limits(api: &ApiRef, doc: &Map<String, Value>, vhost: Option<&str>) -> ApiResult<()> {
    for item in section(doc, "policies")? {
        let item = object(item)?;
        let v = vhost_of(api, item, vhost)?;
        let spec = policy_spec(PolicyKind::Policy, required(item, "name")?, item)?;
        v.execute(Issuer::node(), Command::SetPolicy(spec))?;
    }
    for item in section(doc, "parameters")? {
        let item = object(item)?;
        let value = item.get("value").and_then(Value::as_object).cloned().unwrap_or_default();
        match text(item, "component").as_deref() {
            Some("vhost-limits") => {
                let v = vhost_of(api, item, vhost)?;
                let pairs: Vec<(&str, i64)> =
                    value.iter().filter_map(|(k, n)| Some((k.as_str(), n.as_i64()?))).collect();
                let limits = VhostLimits::from_pairs(pairs)?;
                api.broker.execute_node(NodeCommand::SetVhostLimits { vhost: v.name.to_string(), limits })?;
            }
            Some("operator_policy") => {
                let v = vhost_of(api, item, vhost)?;
                let spec = policy_spec(PolicyKind::Operator, required(item, "name")?, &value)?;
                v.execute(Issuer::node(), Command::SetPolicy(spec))?;
            }
            other => tracing::warn!(component = ?other, "definitions import: parameter not supported, skipped"),
        }
    }
    Ok(())
}

/// The global parameters Lepus exports itself (the cluster's name and id): not changed by an
/// import, without a warning.
const OWN_GLOBAL_PARAMETERS: [&str; 2] = ["cluster_name", "internal_cluster_id"];

/// Logs what an import does not apply.
fn log_skipped(doc: &Map<String, Value>) {
    let others = doc
        .get("global_parameters")
        .and_then(Value::as_array)
        .map_or(0, |a| a.iter().filter(|p| !OWN_GLOBAL_PARAMETERS.iter().any(|own| p["name"] == *own)).count());
    if others > 0 {
        tracing::warn!(section = "global_parameters", entries = others, "definitions import: not supported, skipped");
    }
}

async fn import_all(State(api): State<ApiRef>, caller: Caller, body: Bytes) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let doc = parse(&body)?;
    import_users(&api, &doc)?;
    import_permissions(&api, &doc)?;
    import_policies_and_limits(&api, &doc, None)?;
    import_topology(&api, &doc, None)?;
    log_skipped(&doc);
    Ok(StatusCode::NO_CONTENT)
}

async fn import_vhost(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    api.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let doc = parse(&body)?;
    import_policies_and_limits(&api, &doc, Some(&vhost))?;
    import_topology(&api, &doc, Some(&vhost))?;
    log_skipped(&doc);
    Ok(StatusCode::NO_CONTENT)
}
