//! Health checks (`/api/health/checks/...`: alarms, virtual hosts, mirror sync and quorum
//! criticality, port and protocol listeners) and `/api/aliveness-test/{vhost}`, as RabbitMQ
//! answers them for a single node.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::command::{Command, Issuer};
use lepus_broker::vhost::QueueDeclare;
use lepus_broker::{Message, MessageHeaders, Publish};
use lepus_protocol::ShortStr;
use lepus_protocol::content::BasicProperties;
use serde_json::json;

use crate::ApiRef;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<ApiRef> {
    let ok = |_: Caller| async { Json(json!({"status": "ok"})) };
    Router::new()
        .route("/api/health/checks/alarms", get(|api, caller| alarms(api, caller, "in the cluster")))
        .route("/api/health/checks/local-alarms", get(|api, caller| alarms(api, caller, "on the node")))
        .route("/api/health/checks/virtual-hosts", get(ok))
        .route("/api/health/checks/node-is-mirror-sync-critical", get(ok))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(|_: Caller| async { Json(json!({"status": "ok", "reason": "single node cluster"})) }),
        )
        .route("/api/health/checks/port-listener/{port}", get(port_listener))
        .route("/api/health/checks/protocol-listener/{protocol}", get(protocol_listener))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
}

/// 503 with the alarms in effect, as RabbitMQ 3.10 answers (one node: cluster and local agree).
async fn alarms(State(api): State<ApiRef>, _: Caller, scope: &'static str) -> Response {
    let active = api.broker.alarms().active();
    if active.is_empty() {
        return Json(json!({"status": "ok"})).into_response();
    }
    let alarms: Vec<_> =
        active.into_iter().map(|r| json!({"node": api.node.name, "resource": r.alarm_name()})).collect();
    let body = json!({"status": "failed", "reason": format!("There are alarms in effect {scope}"), "alarms": alarms});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn port_listener(State(api): State<ApiRef>, _: Caller, Path(port): Path<String>) -> ApiResult<Response> {
    let port: u16 = port.parse().map_err(|_| ApiError::BadRequest(format!("invalid port {port}")))?;
    let mut ports: Vec<u16> = api.node.listeners.iter().map(|l| l.address.port()).collect();
    ports.sort_unstable();
    if ports.contains(&port) {
        return Ok(Json(json!({"status": "ok", "port": port})).into_response());
    }
    let body = json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports});
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

/// 200 if the node has a listener of `protocol` (`amqp`, `http`, `http/prometheus`), else 503
/// with the protocols it has, as RabbitMQ answers.
async fn protocol_listener(State(api): State<ApiRef>, _: Caller, Path(protocol): Path<String>) -> Response {
    let protocols: Vec<&str> = api.node.listeners.iter().map(|l| l.protocol).collect();
    if protocols.contains(&protocol.as_str()) {
        return Json(json!({"status": "ok", "protocol": protocol})).into_response();
    }
    let body = json!({"status": "failed", "reason": "No active listener", "missing": protocol, "protocols": protocols});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

const ALIVENESS_QUEUE: &str = "aliveness-test";

/// Declares the `aliveness-test` queue, publishes a message to it and gets it back.
async fn aliveness(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let name = ShortStr::from_static(ALIVENESS_QUEUE);
    let declare = QueueDeclare { name: name.clone(), ..QueueDeclare::default() };
    v.execute(Issuer::node(), Command::DeclareQueue(declare))?;
    let message = Message::with_properties(b"", name.as_bytes(), &BasicProperties::default(), b"test_message");
    let mut publisher = api.broker.publisher(v.clone());
    let outcome = publisher.publish(Publish {
        message: std::sync::Arc::new(message),
        extra_keys: &[],
        headers: MessageHeaders::None,
    })?;
    let queue = v.queue(&name, super::HTTP_CONNECTION)?;
    let got = crate::get::get(&queue).await;
    if let Some((entry, _)) = got.as_ref() {
        let _ = queue.ack(None, std::iter::once(entry.seq));
    }
    if !outcome.routed || got.is_none() {
        return Ok(Json(json!({"status": "failed", "reason": "the test message did not come back"})));
    }
    Ok(Json(json!({"status": "ok"})))
}
