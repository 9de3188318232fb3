//! The broker model: virtual hosts, exchanges and routing, queues, consumers and the
//! hand-off of deliveries to connections. No sockets, no async runtime: the server drives it,
//! and everything here is testable with plain unit and property tests.
//!
//! # Layout
//! - [`broker`]: [`Broker`], the service a node runs: vhosts, users, connections, clock and
//!   timers, durability.
//! - [`command`]: [`Command`](command::Command), the one way topology changes.
//! - [`users`]: users, password hashes, the loopback-only rule; [`permissions`]: what a user
//!   may do in a vhost ([`Access`](permissions::Access)); [`limits`]: per-vhost and per-user
//!   limits; [`login_guard`]: failed logins per source address (AMQP and HTTP).
//! - [`connections`]: the registry of open connections; [`stats`]: message counters.
//! - [`vhost`]: a virtual host's topology (exchanges, queues, bindings), declaration rules and
//!   routing.
//! - [`exchange`]: an exchange and its bindings; the [`ExchangeType`](exchange::ExchangeType)
//!   seam, one module per type (direct, fanout, topic, headers, and the delayed message
//!   exchange around one of them) and the registry of types.
//! - [`dedup`]: message deduplication (the plugin's keys, an exchange's bounded cache, a
//!   queue's keys of the messages it holds).
//! - [`topic`], [`headers`]: the topic trie and headers matching, for those two types;
//!   [`MessageHeaders`], a message's headers as routing receives them.
//! - [`route_cache`], [`route_memo`]: a publisher's last route and the vhost's shared memo of
//!   routes, each valid for one topology version.
//! - [`queue`]: a queue and its lock (assignment, limits, flow control); its parts: a ready
//!   list of messages, resident or paged out (`queue::ready`), their stored copies
//!   (`queue::stored`), the consumer set (`queue::consumers`).
//! - [`outlet`]: the per-connection list queues push deliveries onto.
//! - [`message`]: a message as queues hold it.
//! - [`publish`]: [`Publisher`]: route, enqueue into each queue, combine the outcome.
//! - [`durability`]: [`Durable`] tokens (what a confirm waits for) and when they hold.
//! - [`persist`]: what a vhost stores (metadata records, message logs).
//! - [`args`]: validation of `x-` queue arguments.
//! - [`clock`]: the broker's time ([`Clock`]): the system clock, never going backwards, and a
//!   manual clock for tests.
//! - [`timer`]: the one timer service ([`TimerService`]): deadlines in a time-ordered index,
//!   fired by a driver the server runs.
//! - [`error`]: [`BrokerError`], mapped to reply codes by the server.

pub mod alarms;
pub mod args;
pub mod broker;
pub mod channel_stats;
pub mod clock;
pub mod command;
pub mod connections;
pub mod dead_letter;
pub mod dedup;
pub mod durability;
pub mod error;
pub mod exchange;
pub mod exchange_stats;
pub mod headers;
pub mod io_stats;
pub mod limits;
pub mod login_guard;
pub mod message;
pub mod outlet;
pub mod page_sweep;
pub mod permissions;
pub mod persist;
pub mod policy;
pub mod publish;
pub mod queue;
pub mod rates;
pub mod route_cache;
pub mod route_memo;
pub mod stats;
mod store_retry;
pub mod timer;
pub mod topic;
pub mod users;
pub mod vhost;
pub mod vhost_metadata;
pub mod vhost_stats;

pub use broker::{Broker, BrokerParts, BrokerRef};
pub use clock::{Clock, ClockRef, ManualClock, SystemClock};
pub use durability::{Durability, Durable};
pub use error::BrokerError;
pub use headers::MessageHeaders;
pub use message::{HeaderFields, Message, MessageBuilder, MessageRef};
pub use outlet::{ConsumerId, Delivery, Outbound, Outlet, OutletRef, Wake};
pub use publish::{Outcome, Publish, Publisher};
pub use queue::{ChannelGate, ConsumerSpec, Queue, QueueRef};
pub use route_cache::RouteCache;
pub use timer::{TimerId, TimerService, TimerTarget};
pub use vhost::VHost;
