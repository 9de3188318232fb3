//! Test harness: a real broker on an ephemeral loopback port, and a raw AMQP client built on
//! our codec for the cases real clients refuse to produce (malformed input).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use lepus_protocol::constants::PROTOCOL_HEADER;
use lepus_protocol::frame::write_method;
use lepus_protocol::method::*;
use lepus_protocol::{FieldTable, Frame, FrameType, LongStr, Method, ShortStr, parse_frame};
use lepus_server::{Config, ShutdownHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on waiting for an event the test expects; hitting it means a hang (a bug),
/// never a slow machine: nothing here measures time.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

pub struct Broker {
    pub addr: SocketAddr,
    /// The management API's address, when started with one ([`start_managed`]).
    pub management: Option<SocketAddr>,
    /// The Prometheus metrics' address, when started with them ([`start_with_metrics`]).
    pub prometheus: Option<SocketAddr>,
    /// The broker service behind the listener.
    pub service: lepus_broker::BrokerRef,
    handle: ShutdownHandle,
    task: tokio::task::JoinHandle<()>,
}

pub fn test_config() -> Config {
    // A short close timeout: raw clients that never answer our close at shutdown cost less.
    // No management listener: tests that want one bind it on an ephemeral port.
    Config {
        bind_address: [127, 0, 0, 1].into(),
        port: 0,
        management_port: 0,
        prometheus_port: 0,
        close_timeout_ms: 300,
        data_dir: None,
        ..Config::default()
    }
}

pub async fn start() -> Broker {
    start_with(test_config()).await
}

pub async fn start_with(config: Config) -> Broker {
    let server = lepus_server::Server::bind(config).await.expect("broker binds");
    run(server, None, None)
}

/// A broker on the broker clock `clock` (a `ManualClock` the test moves).
pub async fn start_with_clock(config: Config, clock: lepus_broker::clock::ClockRef) -> Broker {
    let server = lepus_server::Server::bind_with_clock(config, clock).await.expect("broker binds");
    run(server, None, None)
}

/// A broker with its management API on an ephemeral loopback port.
pub async fn start_managed(config: Config) -> Broker {
    let mut server = lepus_server::Server::bind(config).await.expect("broker binds");
    let management = server.bind_management(([127, 0, 0, 1], 0).into()).await.expect("management binds");
    run(server, Some(management), None)
}

/// A broker with its management API on an ephemeral loopback port, on the broker clock
/// `clock`.
pub async fn start_managed_with_clock(config: Config, clock: lepus_broker::clock::ClockRef) -> Broker {
    let mut server = lepus_server::Server::bind_with_clock(config, clock).await.expect("broker binds");
    let management = server.bind_management(([127, 0, 0, 1], 0).into()).await.expect("management binds");
    run(server, Some(management), None)
}

/// Runs a server the test bound itself (e.g. with [`lepus_server::Server::bind_with_storage`]).
pub fn run_bound(server: lepus_server::Server) -> Broker {
    run(server, None, None)
}

/// A broker with its Prometheus metrics on an ephemeral loopback port.
pub async fn start_with_metrics(config: Config) -> Broker {
    let mut server = lepus_server::Server::bind(config).await.expect("broker binds");
    let prometheus = server.bind_prometheus(([127, 0, 0, 1], 0).into()).await.expect("metrics bind");
    run(server, None, Some(prometheus))
}

fn run(server: lepus_server::Server, management: Option<SocketAddr>, prometheus: Option<SocketAddr>) -> Broker {
    let addr = server.local_addr().expect("bound address");
    let (service, handle) = (server.broker(), server.shutdown_handle());
    let task = tokio::spawn(server.run());
    Broker { addr, management, prometheus, service, handle, task }
}

impl Broker {
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Shuts down and waits until every connection task has finished.
    pub async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(HANG_GUARD, self.task).await.expect("broker stops").expect("broker task ok");
    }
}

/// A hand-driven AMQP client, over TCP or any other stream (TLS).
pub struct Raw<S = TcpStream> {
    pub stream: S,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw::over(TcpStream::connect(addr).await.expect("connect"))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Raw<S> {
    pub fn over(stream: S) -> Raw<S> {
        Raw { stream, buf: BytesMut::with_capacity(64 * 1024) }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        // The broker may already have closed on us; a failed write shows up on the next read.
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        write_method(&mut out, channel, &method.into());
        self.send(&out).await;
    }

    /// Reads raw bytes until at least `n` are buffered, or EOF.
    pub async fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match tokio::time::timeout(HANG_GUARD, self.stream.read_buf(&mut self.buf)).await.expect("no hang") {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = n.min(self.buf.len());
        self.buf.split_to(n).to_vec()
    }

    /// The next frame, or `None` at EOF.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = parse_frame(&mut self.buf, 16 * 1024 * 1024).expect("broker sends valid frames") {
                return Some(frame);
            }
            match tokio::time::timeout(HANG_GUARD, self.stream.read_buf(&mut self.buf)).await.expect("no hang") {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next method frame (skipping heartbeats), or `None` at EOF.
    pub async fn next_method(&mut self) -> Option<(u16, Method)> {
        loop {
            let frame = self.next_frame().await?;
            if frame.frame_type == FrameType::Method {
                return Some((frame.channel, Method::decode(frame.payload).expect("valid method")));
            }
        }
    }

    /// Reads until the broker sends `connection.close`; answers it with close-ok.
    pub async fn expect_connection_close(&mut self) -> ConnectionClose {
        loop {
            match self.next_method().await {
                Some((0, Method::ConnectionClose(close))) => {
                    self.send_method(0, ConnectionCloseOk {}).await;
                    return close;
                }
                Some(_) => continue,
                None => panic!("connection ended without connection.close"),
            }
        }
    }

    pub async fn expect_channel_close(&mut self, channel: u16) -> ChannelClose {
        loop {
            match self.next_method().await {
                Some((ch, Method::ChannelClose(close))) if ch == channel => return close,
                Some((_, Method::ConnectionClose(c))) => panic!("connection closed instead: {c:?}"),
                Some(_) => continue,
                None => panic!("connection ended without channel.close"),
            }
        }
    }

    /// Asserts the broker closes the socket (skipping anything it sends first).
    pub async fn expect_eof(&mut self) {
        while self.next_frame().await.is_some() {}
    }
}

impl Raw {
    /// Protocol header, start-ok with PLAIN guest/guest, tune-ok with the given values.
    pub async fn start_and_tune(addr: SocketAddr, channel_max: u16, frame_max: u32, heartbeat: u16) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(&PROTOCOL_HEADER).await;
        let Some((0, Method::ConnectionStart(_))) = raw.next_method().await else {
            panic!("expected connection.start")
        };
        let caps = FieldTable::new().with("authentication_failure_close", true);
        let start_ok = ConnectionStartOk {
            client_properties: FieldTable::new().with("capabilities", caps).with("product", "lepus-tests"),
            mechanism: ShortStr::from_static("PLAIN"),
            response: LongStr::from("\0guest\0guest"),
            locale: ShortStr::from_static("en_US"),
        };
        raw.send_method(0, start_ok).await;
        let Some((0, Method::ConnectionTune(_))) = raw.next_method().await else { panic!("expected connection.tune") };
        raw.send_method(0, ConnectionTuneOk { channel_max, frame_max, heartbeat }).await;
        raw
    }

    /// A fully open connection (channel_max 2047, frame_max 131072, no heartbeats).
    pub async fn open(addr: SocketAddr) -> Raw {
        let mut raw = Raw::start_and_tune(addr, 2047, 131_072, 0).await;
        raw.send_method(0, ConnectionOpen { virtual_host: ShortStr::from_static("/"), ..Default::default() }).await;
        let Some((0, Method::ConnectionOpenOk(_))) = raw.next_method().await else { panic!("expected open-ok") };
        raw
    }

    /// An open connection with channel 1 open.
    pub async fn open_with_channel(addr: SocketAddr) -> Raw {
        let mut raw = Raw::open(addr).await;
        raw.send_method(1, ChannelOpen::default()).await;
        let Some((1, Method::ChannelOpenOk(_))) = raw.next_method().await else { panic!("expected channel.open-ok") };
        raw
    }
}
