//! The broker model: virtual hosts, exchanges and routing, queues, consumers and the
//! hand-off of deliveries to connections. No sockets, no async runtime: the server drives it,
//! and everything here is testable with plain unit and property tests.
//!
//! # Layout
//! - [`vhost`]: a virtual host's topology (exchanges, queues, bindings), declaration rules and
//!   routing.
//! - [`exchange`]: an exchange and its bindings; the [`ExchangeType`](exchange::ExchangeType)
//!   seam, one module per type (direct, fanout, topic, headers) and the registry of types.
//! - [`topic`], [`headers`]: the topic trie and headers matching, for those two types;
//!   [`MessageHeaders`], a message's headers as routing receives them.
//! - [`route_cache`], [`route_memo`]: a connection's last route and the vhost's shared memo of
//!   routes, each valid for one topology version.
//! - [`queue`]: a queue's messages and consumers; assignment under its lock.
//! - [`outlet`]: the per-connection list queues push deliveries onto.
//! - [`message`]: a message as queues hold it.
//! - [`persist`]: what a vhost stores (metadata records, message logs).
//! - [`args`]: validation of `x-` queue arguments.
//! - [`error`]: [`BrokerError`], mapped to reply codes by the server.

pub mod args;
pub mod error;
pub mod exchange;
pub mod headers;
pub mod message;
pub mod outlet;
pub mod persist;
pub mod queue;
pub mod route_cache;
pub mod route_memo;
pub mod topic;
pub mod vhost;

pub use error::BrokerError;
pub use headers::MessageHeaders;
pub use message::{HeaderFields, Message, MessageBuilder, MessageRef};
pub use outlet::{Delivery, Outbound, Outlet, OutletRef, Wake};
pub use queue::{ChannelGate, ConsumerSpec, Queue, QueueRef};
pub use route_cache::RouteCache;
pub use vhost::VHost;
