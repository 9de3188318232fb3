//! AMQP over TLS (RabbitMQ's `amqps`, port 5671): the TLS handshake of an accepted socket,
//! inside the connection's handshake deadline and holding its place in the listener's pool of
//! connections not yet open, so a silent TLS socket cannot hold a slot for longer than a silent
//! plain one; then the connection runs as any other, over the TLS stream, with SASL EXTERNAL
//! offered where the listener verifies client certificates. The TLS configuration itself
//! (certificates, keys, client verification, reloading) is the server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus_broker::connections::TlsSession;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::auth::external_name;
use crate::cert_name::CertLoginFrom;
use crate::connection::{Start, serve_started};
use crate::context::Context;
use crate::handshake_pool::HandshakePermit;

/// How a TLS listener's connections start, taken from its configuration at accept time.
#[derive(Clone)]
pub struct TlsSetup {
    /// The rustls server configuration current when the socket was accepted.
    pub acceptor: TlsAcceptor,
    /// Where EXTERNAL takes the user name from; `None`: the listener does not verify client
    /// certificates and EXTERNAL is not offered.
    pub external: Option<CertLoginFrom>,
}

/// Runs the TLS handshake on an accepted socket, then serves the AMQP connection over it.
pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    handshake_permit: Option<HandshakePermit>,
    setup: TlsSetup,
) {
    let deadline = Instant::now() + Duration::from_millis(shared.limits.handshake_timeout_ms);
    // The TLS handshake is timed by tokio; the AMQP handshake after it by the broker's clock.
    let handshake_deadline_ms = shared.broker.clock().now_ms().saturating_add(shared.limits.handshake_timeout_ms);
    // The handshake's round trips should not wait for delayed acks either.
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout_at(deadline.into(), setup.acceptor.accept(stream));
    let tls = tokio::select! {
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            // A connect that sends nothing (port probes, health checks): as on plain TCP.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!(%peer, "connection ended before the TLS handshake");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "TLS handshake timeout (handshake_timeout_ms)");
                return;
            }
        },
        _ = crate::stopped(&mut stop) => return,
    };
    let external = setup.external.map(|from| {
        let certificate = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
        external_name(certificate.map(|c| c.as_ref()), from)
    });
    let start = Start { handshake_deadline_ms, handshake_permit, external, tls: session(tls.get_ref().1) };
    serve_started(tls, peer, shared, stop, start).await;
}

/// The session's protocol version (as RabbitMQ names it) and cipher suite.
fn session(tls: &rustls::ServerConnection) -> Option<TlsSession> {
    let protocol = match tls.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => "tlsv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "tlsv1.2",
        _ => "tls",
    };
    let cipher_suite = tls.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
    Some(TlsSession { protocol, cipher_suite })
}
