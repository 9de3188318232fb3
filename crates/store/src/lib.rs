//! Lepus storage: what survives a restart.
//!
//! - [`log`]: one append-only segment log per durable queue (records with CRC32C, ack files,
//!   segment deletion once fully acked) and its recovery scan.
//! - [`store`]: the group commit: one thread writes every dirty log and `fdatasync`s, then
//!   publishes the durable generation that publisher confirms wait for.
//! - [`open_files`]: the budget of open segment and ack files (an LRU of handles).
//! - [`meta`]: durable exchanges, queues and bindings in redb, committed before the `*-ok`.
//! - [`backend`]: file I/O behind a trait, with the real file system and a crash-simulating
//!   in-memory backend ([`crash`]) that tests use to cut the power at any point, and a wrapper
//!   that injects ENOSPC, EIO or EMFILE at chosen call sites ([`fault`]).
//!
//! The byte format of every file and the crash analysis are in STORAGE.md at the repository
//! root. This crate knows nothing of AMQP methods or sockets.

pub mod backend;
pub mod crash;
pub mod error;
pub mod fault;
pub mod log;
pub mod meta;
pub mod open_files;
pub mod record;
pub mod store;

pub use error::{Result, StoreError};
