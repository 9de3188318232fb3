//! Health checks (`/api/health/checks/...`: alarms, virtual hosts, mirror sync and quorum
//! criticality, port and protocol listeners, the TLS listener's certificate expiration) and `/api/aliveness-test/{vhost}`, as RabbitMQ
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

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{ApiRef, cert_expiry};

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
        .route("/api/health/checks/certificate-expiration/{within}/{unit}", get(certificate_expiration))
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

/// 503 if a certificate of the TLS listener (its certificate file or its CA file) expires
/// within the window, as RabbitMQ answers; 200 without a TLS listener.
async fn certificate_expiration(
    State(api): State<ApiRef>,
    _: Caller,
    Path((within, unit)): Path<(String, String)>,
) -> ApiResult<Response> {
    let window_secs = cert_expiry::window_secs(&within, &unit).map_err(|reason| ApiError::BadRequest(reason.into()))?;
    let Some(tls) = api.node.tls_files.clone() else {
        return Ok(Json(json!({"status": "ok"})).into_response());
    };
    let now_secs = i64::try_from(api.broker.clock().now_ms() / 1000).unwrap_or(i64::MAX);
    let deadline_secs = now_secs.saturating_add(window_secs);
    let files = [Some(tls.certfile.clone()), tls.cacertfile.clone()];
    let read = tokio::task::spawn_blocking(move || files.map(|f| f.map(|path| expiring_in(&path, deadline_secs))));
    let [cert_dates, ca_dates] = read.await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let cert_dates = cert_dates.transpose()?.unwrap_or_default();
    let ca_dates = ca_dates.transpose()?.unwrap_or_default();
    if cert_dates.is_empty() && ca_dates.is_empty() {
        return Ok(Json(json!({"status": "ok"})).into_response());
    }
    let expired = json!({
        "cacertfile": tls.cacertfile.as_ref().map(|p| p.display().to_string()),
        "cacertfile_expires_on": ca_dates,
        "certfile": tls.certfile.display().to_string(),
        "certfile_expires_on": cert_dates,
        "interface": tls.listener.address.ip().to_string(),
        "node": api.node.name,
        "port": tls.listener.address.port(),
        "protocol": tls.listener.protocol,
    });
    let body = json!({"status": "failed", "reason": "Certificates expiring", "expired": [expired]});
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

/// The expiry dates of the certificates in the PEM file at `path` due before `deadline_secs`.
fn expiring_in(path: &std::path::Path, deadline_secs: i64) -> ApiResult<Vec<String>> {
    let unreadable = |e: String| ApiError::Internal(format!("{}: {e}", path.display()));
    let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    cert_expiry::expiring(&pem, deadline_secs).map_err(unreadable)
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
