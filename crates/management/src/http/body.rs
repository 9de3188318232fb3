//! A request's body read whole before the app sees it (outside the API's limit of requests in
//! flight, so slow bodies hold no request slot), within the listener's limits: its deadline
//! (past it the connection is closed unanswered, as RabbitMQ's cowboy closes one idle 60 s),
//! its size (RabbitMQ's 400 "Exceeded HTTP request body size limit" and a close) and the
//! listener's budget of body bytes held at once (taken as bytes arrive, given back once the
//! request is answered; past it, reading waits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::HttpLimits;

/// What the body reader needs: the limits, the listener's name for logs, its byte budget.
#[derive(Clone)]
struct Guard {
    limits: HttpLimits,
    what: &'static str,
    budget: Arc<Semaphore>,
}

/// `app` with its request bodies read under `limits` first.
pub(super) fn guard(app: axum::Router, limits: HttpLimits, what: &'static str) -> axum::Router {
    let budget = Arc::new(Semaphore::new(limits.body_bytes_in_flight_max.max(limits.body_max_bytes)));
    app.layer(axum::middleware::from_fn_with_state(Guard { limits, what, budget }, read_body))
}

/// On a response: send nothing, close the connection (the body deadline).
#[derive(Debug, Clone, Copy)]
pub(super) struct CloseUnanswered;

impl std::fmt::Display for CloseUnanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body not whole in time")
    }
}

impl std::error::Error for CloseUnanswered {}

/// Why a body was not read whole.
#[derive(Debug)]
enum Unread {
    TooLarge,
    Broken(axum::Error),
}

async fn read_body(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let Guard { limits, what, budget } = guard;
    let (parts, body) = request.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.body_max_bytes as u64) {
        return too_large(&peer, limits, what);
    }
    let reading = read_within(body, limits.body_max_bytes, &budget, || {
        let limit = limits.body_bytes_in_flight_max.max(limits.body_max_bytes);
        tracing::warn!(%peer, limit, "{what} HTTP request bodies hold their byte budget: reading waits");
    });
    let read = match limits.body_timeout_ms {
        0 => Some(reading.await),
        ms => tokio::time::timeout(Duration::from_millis(ms), reading).await.ok(),
    };
    match read {
        // The budget's share is held until the answer is made.
        Some(Ok((bytes, _held))) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Some(Err(Unread::TooLarge)) => too_large(&peer, limits, what),
        Some(Err(Unread::Broken(e))) => {
            tracing::debug!(%peer, error = %e, "{what} HTTP request body broken off");
            closing(crate::ApiError::BadRequest("incomplete request body".into()).into_response())
        }
        None => {
            let limit_ms = limits.body_timeout_ms;
            tracing::warn!(%peer, limit_ms, "{what} HTTP request body not whole in time: connection closed unanswered");
            let mut unanswered = Response::default();
            unanswered.extensions_mut().insert(CloseUnanswered);
            unanswered
        }
    }
}

/// Reads `body` whole, up to `max_bytes`, taking each piece's size from `budget` as it
/// arrives (`on_wait` once if it must wait for it); the share is held by the permit returned.
async fn read_within(
    mut body: Body,
    max_bytes: usize,
    budget: &Arc<Semaphore>,
    on_wait: impl FnOnce(),
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Unread> {
    let mut on_wait = Some(on_wait);
    let (mut bytes, mut held) = (BytesMut::new(), None::<OwnedSemaphorePermit>);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Unread::Broken)?.into_data() else { continue };
        if bytes.len() + data.len() > max_bytes {
            return Err(Unread::TooLarge);
        }
        // At most `max_bytes`, which the budget is at least.
        let size = u32::try_from(data.len()).map_err(|_| Unread::TooLarge)?;
        let share = match budget.clone().try_acquire_many_owned(size) {
            Ok(share) => share,
            Err(_) => {
                if let Some(warn) = on_wait.take() {
                    warn();
                }
                budget.clone().acquire_many_owned(size).await.map_err(|_| Unread::TooLarge)?
            }
        };
        match &mut held {
            Some(permit) => permit.merge(share),
            None => held = Some(share),
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes.freeze(), held))
}

fn too_large(peer: &str, limits: HttpLimits, what: &'static str) -> Response {
    let limit = limits.body_max_bytes;
    tracing::warn!(%peer, limit, "{what} HTTP request body larger than the limit: refused, connection closed");
    closing(crate::ApiError::BadRequest("Exceeded HTTP request body size limit".into()).into_response())
}

/// `response`, after which hyper closes the connection.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_holds_its_bytes_of_the_budget_until_it_is_let_go() {
        let budget = Arc::new(Semaphore::new(16));
        let (bytes, held) = read_within(Body::from("0123456789"), 16, &budget, || {}).await.expect("read");
        assert_eq!((&bytes[..], budget.available_permits()), (&b"0123456789"[..], 6));
        drop(held);
        assert_eq!(budget.available_permits(), 16);
        let too_large = read_within(Body::from("0123456789abcdefg"), 16, &budget, || {}).await;
        assert!(matches!(too_large, Err(Unread::TooLarge)));
        assert_eq!(budget.available_permits(), 16, "a refused body gives its share back");
    }

    #[tokio::test]
    async fn past_the_budget_reading_waits_for_a_share_given_back() {
        let budget = Arc::new(Semaphore::new(16));
        let (_, first) = read_within(Body::from("0123456789"), 16, &budget, || {}).await.expect("first");
        let waited = std::cell::Cell::new(false);
        let second = read_within(Body::from("abcdefghij"), 16, &budget, || waited.set(true));
        let release = async {
            // Runs once the second read waits: the first body is answered, its share freed.
            tokio::task::yield_now().await;
            drop(first);
        };
        let (second, ()) = tokio::join!(second, release);
        assert!(waited.get(), "the second body waited for the budget");
        assert_eq!(&second.expect("second").0[..], b"abcdefghij");
    }
}
