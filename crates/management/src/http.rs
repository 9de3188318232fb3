//! The HTTP/1.1 connection loop both listeners (the management API, the Prometheus metrics)
//! run, with limits on what a client controls:
//! - a header-read timeout (hyper's, on tokio's timer): a socket that has not sent a whole
//!   request head that long after it connected or after its last answer is closed, so
//!   clients trickling headers (slowloris) or idling cannot hold connections;
//! - the request head's size and header count (431 beyond);
//! - a request body deadline: the whole body must arrive within
//!   [`HttpLimits::body_timeout_ms`] of the head, else the connection is closed unanswered (as
//!   RabbitMQ 3.10.8 closes it after 60 s without data), so a client trickling a body (a byte
//!   a minute) or stopping halfway holds nothing for long (the body is read before the app
//!   sees the request, outside its limit of requests in flight);
//! - the request body's size: past [`HttpLimits::body_max_bytes`], RabbitMQ's 400
//!   "Exceeded HTTP request body size limit" and the connection is closed;
//! - the body bytes held at once ([`HttpLimits::body_bytes_in_flight_max`]), as they arrive,
//!   so 1024 connections cannot hold 1024 large bodies (a trickled body holds what it sent);
//! - open connections per listener: past [`HttpLimits::connection_max`], more wait in the
//!   listen backlog (a warning when the limit is reached).
//!
//! Each limit hit is logged (an idle connection's close at the header timeout only at debug
//! level: keep-alive connections end so).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Service;

mod body;

/// Largest request head (request line and headers), bytes.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Most headers one request may have.
pub const HEADER_COUNT_MAX: usize = 100;
/// How long accepting pauses after the listener fails (out of descriptors).
const ACCEPT_RETRY_MS: u64 = 1000;

/// The limits of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request head not complete this long after the connection opened or answered its
    /// last request closes the connection; 0: no timeout.
    pub header_timeout_ms: u64,
    /// A request body not complete this long after its head arrived closes its connection
    /// unanswered; 0: no timeout.
    pub body_timeout_ms: u64,
    /// Largest request body (RabbitMQ's `management.http.max_body_size`).
    pub body_max_bytes: usize,
    /// Request body bytes a listener holds at once, each body's until it is answered (at
    /// least `body_max_bytes`): past them, reading bodies waits (within their deadline).
    pub body_bytes_in_flight_max: usize,
    /// Connections open at once.
    pub connection_max: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout_ms: 10_000,
            body_timeout_ms: BODY_TIMEOUT_MS_DEFAULT,
            body_max_bytes: BODY_MAX_BYTES_DEFAULT,
            body_bytes_in_flight_max: 128 * 1024 * 1024,
            connection_max: 1024,
        }
    }
}

/// Newer RabbitMQ's default `management.http.max_body_size` (3.10.8 refuses past
/// 10,000,000 bytes; 20 MB lets a definitions export of 100,000 queues back in; a publish's
/// payload has its own, lower limit).
pub const BODY_MAX_BYTES_DEFAULT: usize = 20_000_000;
/// Time a request body has to arrive whole after its head: RabbitMQ 3.10.8 closes a request
/// that sends nothing for 60 s (cowboy's `idle_timeout`); at 20 MB this takes 350 KB/s.
pub const BODY_TIMEOUT_MS_DEFAULT: u64 = 60_000;

/// Serves `app` on `listener` (`what` names it in logs) until `shutdown` completes, then
/// waits for the open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let builder = connection_builder(limits);
    let app = body::guard(app, limits, what);
    let slots = Arc::new(Semaphore::new(limits.connection_max.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots, limits, what) => accepted,
        };
        let Some((stream, peer, slot)) = accepted else { break };
        let app = app.clone();
        // `ConnectInfo` as axum's own server gives it (login rules read the peer's address).
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let answer = app.clone().call(request);
            async move {
                let response = answer.await.unwrap_or_else(|never| match never {});
                // An error: hyper closes the connection without writing anything.
                match response.extensions().get::<body::CloseUnanswered>() {
                    Some(_) => Err(body::CloseUnanswered),
                    None => Ok(response),
                }
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            match connection.await {
                Err(e) if e.is_timeout() => tracing::debug!(
                    %peer,
                    limit_ms = limits.header_timeout_ms,
                    "{what} HTTP connection closed: no whole request head in time (http_header_timeout_ms)"
                ),
                Err(e) => tracing::debug!(%peer, error = %e, "{what} HTTP connection ended"),
                Ok(()) => {}
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
}

/// hyper's HTTP/1.1 connection settings for `limits`.
fn connection_builder(limits: HttpLimits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    let timeout = (limits.header_timeout_ms > 0).then(|| Duration::from_millis(limits.header_timeout_ms));
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_header_size(HEADER_BYTES_MAX)
        .max_headers(HEADER_COUNT_MAX);
    builder
}

/// The next connection, once a slot is free; `None` if the slots are gone.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    limits: HttpLimits,
    what: &'static str,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let slot = match slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            let limit = limits.connection_max;
            tracing::warn!(
                limit,
                "{what} HTTP connection limit (http_connection_max) reached: more connections wait in the listen backlog"
            );
            slots.clone().acquire_owned().await.ok()?
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return Some((stream, peer, slot)),
            Err(e) => {
                tracing::error!(error = %e, "{what} HTTP listener cannot accept; retrying");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
            }
        }
    }
}
