//! The AMQP 0-9-1 front end of Lepus: everything that knows frames, methods, channels and
//! consumer tags, over the protocol-neutral core in `lepus_broker`.
//!
//! A front end is handed a connected [`Transport`] (plain TCP, or TLS after [`serve_tls`]'s
//! handshake) by the server and serves it to the end with [`serve`]: protocol header, SASL, tuning, channels, methods
//! mapped to broker commands and publishes, deliveries encoded from the connection's outlet,
//! heartbeats, and both directions of `connection.close`, with every error mapped once to
//! RabbitMQ's reply code and text.
//!
//! # Layout
//! - `connection`: one task per connection: handshake, frame dispatch, heartbeats, close;
//!   `connection/`: `model.rs` (exchange, queue and binding methods as broker commands; qos,
//!   confirm and tx), `publish.rs` (content assembly, publishing, returns, confirms, commit),
//!   `deliver.rs` (consumers, the outlet drain, acks, gets, channel cleanup), `outbox.rs`
//!   (output sealed ahead of the buffer and the vectored write).
//! - `channel`: per-channel state: consumers, unacked deliveries, confirms, transactions.
//! - [`context`]: what every connection shares: the broker, the protocol limits, direct
//!   reply-to addresses.
//! - [`transport`]: the byte stream a connection runs over (TCP, TLS).
//! - [`tls`]: the TLS handshake inside the handshake deadline, then the connection.
//! - [`handshake_pool`]: the pool of accepted sockets not yet open, with a share per source
//!   address.
//! - `names`: server-generated queue names, consumer tags, reply-to addresses.
//! - `heartbeat`: when to send a heartbeat and when the peer counts as dead (pure, clock
//!   passed in).
//! - [`auth`]: SASL PLAIN/AMQPLAIN, decoded for the broker's users, and EXTERNAL;
//!   [`cert_name`]: the user name in a client certificate (CN or RabbitMQ's DN form).
//! - [`error`]: typed connection and channel errors, mapped once to AMQP reply codes.

pub mod auth;
pub mod cert_name;
mod channel;
mod connection;
pub mod context;
pub mod error;
pub mod handshake_pool;
mod heartbeat;
mod names;
pub mod tls;
pub mod transport;

pub use connection::{NotifyWake, serve, serve_admitted};
pub use context::{Context, Limits};
pub use tls::{TlsSetup, serve_tls};
pub use transport::Transport;

/// Resolves once `rx` says shutdown was requested, or its sender is gone (returns no guard,
/// so callers stay `Send`).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
