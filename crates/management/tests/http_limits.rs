//! The HTTP listeners' limits on slow and large clients, over a real socket: a body trickled
//! past its deadline closes its connection unanswered while other connections are served, an idle
//! keep-alive connection is closed at the header timeout, a body past the size limit is
//! refused with RabbitMQ's answer. No sleeps: each limit is short and the test waits for the
//! close with a read bounded by a generous guard.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::{get, post};
use lepus_management::http::{HttpLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a step may take before the test fails instead of hanging.
const HANG_GUARD: Duration = Duration::from_secs(20);

async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no outcome within {HANG_GUARD:?}"),
    }
}

/// A listener serving `/echo` (POST: the body back) and `/ping` under `limits`.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .route("/echo", post(|body: Bytes| async move { body }))
            .route("/ping", get(|| async { "pong" }));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, "test", async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        guard("shutdown", self.task).await.expect("server task");
    }
}

/// Sends `request` on a new connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request).await.expect("write");
    read_until_closed(&mut socket).await
}

async fn read_until_closed(socket: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    guard("the close", socket.read_to_end(&mut reply)).await.expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_closes_its_connection_unanswered_while_another_connection_is_served() {
    let server = Server::start(HttpLimits { body_timeout_ms: 1_000, ..HttpLimits::default() }).await;
    // One byte of ten, then nothing: the head is whole, the body never is.
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nx").await.expect("write");
    let served =
        exchange(server.addr, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .await;
    assert!(served.starts_with("HTTP/1.1 200") && served.ends_with("hello"), "{served:?}");
    // As RabbitMQ 3.10.8 (cowboy's idle_timeout): closed, nothing answered.
    assert_eq!(read_until_closed(&mut slow).await, "");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let server = Server::start(HttpLimits { header_timeout_ms: 300, ..HttpLimits::default() }).await;
    // A keep-alive request answered, then silence: the server ends the connection.
    let answer = exchange(server.addr, b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("pong"), "{answer:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_size_limit_is_refused_as_rabbitmq_refuses_it() {
    let server = Server::start(HttpLimits { body_max_bytes: 16, ..HttpLimits::default() }).await;
    let refusal = r#"{"error":"bad_request","reason":"Exceeded HTTP request body size limit"}"#;
    // Declared too long: refused before it is read.
    let declared = exchange(server.addr, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n").await;
    assert!(declared.starts_with("HTTP/1.1 400") && declared.ends_with(refusal), "{declared:?}");
    // Chunked: refused once past the limit.
    let chunked = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n0123456789abcdefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 400") && chunked.ends_with(refusal), "{chunked:?}");
    let within = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\nConnection: close\r\n\r\n0123456789abcdef",
    )
    .await;
    assert!(within.starts_with("HTTP/1.1 200") && within.ends_with("0123456789abcdef"), "{within:?}");
    server.stop().await;
}
