//! What the broker model refuses, as typed errors. The server maps each variant once to an
//! AMQP reply code and scope (`crates/amqp/src/error.rs`); the texts follow RabbitMQ's.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BrokerError {
    /// 404 NOT_FOUND (channel).
    #[error("no {kind} '{name}' in vhost '{vhost}'")]
    NotFound { kind: &'static str, name: String, vhost: String },
    /// A node-wide entity (a user) that does not exist; 404 wherever it is reported.
    #[error("no {kind} '{name}'")]
    Absent { kind: &'static str, name: String },
    /// 406 PRECONDITION_FAILED (channel).
    #[error("{0}")]
    PreconditionFailed(String),
    /// 403 ACCESS_REFUSED (channel).
    #[error("{0}")]
    AccessRefused(String),
    /// 405 RESOURCE_LOCKED (channel).
    #[error("{0}")]
    ResourceLocked(String),
    /// 503 COMMAND_INVALID (connection).
    #[error("{0}")]
    CommandInvalid(String),
    /// 530 NOT_ALLOWED (connection).
    #[error("{0}")]
    NotAllowed(String),
    /// 540 NOT_IMPLEMENTED (connection).
    #[error("{0}")]
    NotImplemented(String),
    /// 541 INTERNAL_ERROR (connection): the metadata store failed to commit a change.
    #[error("storage failure: {0}")]
    Storage(String),
    /// 541 INTERNAL_ERROR (connection): a broken invariant (a bug), reported, not panicked on.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    pub fn not_found(kind: &'static str, name: impl Into<String>, vhost: impl Into<String>) -> BrokerError {
        BrokerError::NotFound { kind, name: name.into(), vhost: vhost.into() }
    }
}

pub type Result<T> = std::result::Result<T, BrokerError>;
