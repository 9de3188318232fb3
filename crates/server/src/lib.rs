//! The Lepus server: configuration, storage start-up, the broker service, listeners and the
//! tasks that drive the core, wired together. The `lepus` binary (`src/main.rs`) is a thin
//! shell over [`Server`]; the AMQP protocol itself is `lepus_amqp`.
//!
//! # Layout
//! - [`config`]: [`Config`], its defaults, the TOML file format and validation.
//! - `server`: opening the stores and restoring the vhosts, building the `Broker`, the AMQP
//!   listener (connection limit, one task per connection), graceful shutdown.
//! - `accept_rate`: the connection-rate limit (a token bucket on the broker's clock).
//! - [`tls`]: the TLS listener's configuration from PEM files, client certificate
//!   verification, reloading.
//! - `management`: the HTTP listeners (`lepus_management` on `management_port`, its metrics on
//!   `prometheus_port`).
//! - [`resources`]: what the memory and disk alarms read (resident memory, the RAM or cgroup
//!   limit, free disk space).
//! - `timers`: the task that drives the broker's timer service (fires due timers, sleeps until
//!   the next deadline).

mod accept_rate;
pub mod config;
mod management;
pub mod resources;
mod server;
mod timers;
pub mod tls;

pub use config::Config;
pub use server::{Server, ShutdownHandle, StorageBackends, start};
pub use tls::{Tls, TlsError};
