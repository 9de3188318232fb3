//! `GET /api/definitions` (and per vhost): the node's users, vhosts and topology in
//! RabbitMQ's definitions format, so they load into RabbitMQ or back into Lepus. Permissions,
//! policies and parameters are empty until the broker has them.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::VHost;
use lepus_broker::exchange::Destination;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::convert::table_to_json;
use crate::error::{ApiError, ApiResult};
use crate::{ApiRef, RABBITMQ_VERSION, views};

pub fn routes() -> Router<ApiRef> {
    Router::new().route("/api/definitions", get(all)).route("/api/definitions/{vhost}", get(one_vhost))
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

async fn all(State(api): State<ApiRef>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let users: Vec<Value> = api.broker.users().list().into_iter().map(views::user).collect();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    let mut vhosts = Vec::new();
    for v in api.broker.vhosts() {
        vhosts.push(json!({"name": &*v.name}));
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
        "permissions": [],
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

async fn one_vhost(State(api): State<ApiRef>, caller: Caller, Path(vhost): Path<String>) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let v = api.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let (queues, exchanges, bindings) = topology(&v, false);
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Lepus",
        "product_version": api.node.product_version,
        "parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}
