//! The Lepus broker server: the AMQP 0-9-1 listener, connections, channels, authentication,
//! heartbeats and configuration. The `lepus` binary (`src/main.rs`) is a thin shell over
//! [`Server`].
//!
//! # Layout
//! - [`config`]: [`Config`], its defaults, the TOML file format and validation.
//! - `server`: the listener, connection limit and graceful shutdown.
//! - `connection`: one task per connection: handshake, frame dispatch, heartbeats, close.
//! - `connection/`: `model.rs` (exchange, queue, qos, confirm and tx methods), `publish.rs`
//!   (content assembly, routing, returns, confirms, commit), `deliver.rs` (consumers, the
//!   outlet drain, acks, gets, channel cleanup).
//! - `channel`: per-channel state: consumers, unacked deliveries, confirms, transactions.
//! - `names`: server-generated queue names, consumer tags, reply-to addresses.
//! - `heartbeat`: when to send a heartbeat and when the peer counts as dead (pure, clock
//!   passed in).
//! - `timers`: the task that drives the broker's timer service (fires due timers, sleeps until
//!   the next deadline).
//! - `auth`: SASL PLAIN/AMQPLAIN, decoded for the broker's users.
//! - `error`: typed connection and channel errors, mapped once to AMQP reply codes.

pub mod auth;
mod channel;
pub mod config;
mod connection;
pub mod error;
mod heartbeat;
mod names;
mod server;
mod timers;

pub use config::Config;
pub use server::{Server, ShutdownHandle, start};
