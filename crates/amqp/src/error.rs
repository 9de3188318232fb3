//! Typed errors of the connection layer and their single mapping to AMQP exceptions.
//!
//! A [`ConnectionError`] closes the whole connection (`connection.close`); a [`ChannelError`]
//! closes one channel (`channel.close`). Which reply code each variant carries, and therefore
//! which scope it has, follows RabbitMQ: the spec's "hard" codes (5xx, 320, 402, 530) are
//! connection errors, the "soft" ones (403–406, 311–313) channel errors.

use lepus_protocol::ProtocolError;
use lepus_protocol::constants::*;
use thiserror::Error;

/// An error that closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    UnexpectedFrame(String),
    #[error("expected 'channel.open' on channel {0}")]
    ChannelNotOpen(u16),
    #[error("second 'channel.open' seen on channel {0}")]
    ChannelAlreadyOpen(u16),
    #[error("channel number {channel} is above the negotiated channel_max ({channel_max})")]
    ChannelOutOfRange { channel: u16, channel_max: u16 },
    #[error("unexpected method {method} in connection state {state}")]
    UnexpectedMethod { method: &'static str, state: &'static str },
    #[error("{0}")]
    CommandInvalid(String),
    #[error("{0}")]
    NotAllowed(String),
    /// Login failed; the text is deliberately vague (details go to the log only).
    #[error("{0}")]
    AuthFailure(String),
    #[error("{0}")]
    Forced(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Internal(String),
}

impl ConnectionError {
    pub fn reply_code(&self) -> u16 {
        match self {
            ConnectionError::Protocol(e) => e.reply_code(),
            ConnectionError::UnexpectedFrame(_) => UNEXPECTED_FRAME,
            ConnectionError::ChannelNotOpen(_)
            | ConnectionError::ChannelAlreadyOpen(_)
            | ConnectionError::UnexpectedMethod { .. } => CHANNEL_ERROR,
            ConnectionError::ChannelOutOfRange { .. } | ConnectionError::NotAllowed(_) => NOT_ALLOWED,
            ConnectionError::CommandInvalid(_) => COMMAND_INVALID,
            ConnectionError::AuthFailure(_) => ACCESS_REFUSED,
            ConnectionError::Forced(_) => CONNECTION_FORCED,
            ConnectionError::NotImplemented(_) => NOT_IMPLEMENTED,
            ConnectionError::Internal(_) => INTERNAL_ERROR,
        }
    }

    /// Whether the peer can no longer be trusted to be in frame sync: after such an error
    /// nothing more is read, the close is sent and the socket shut.
    pub fn is_fatal_framing(&self) -> bool {
        matches!(self, ConnectionError::Protocol(e) if e.loses_frame_sync())
    }

    /// The reply text, RabbitMQ style: `NOT_ALLOWED - vhost x not found`.
    pub fn reply_text(&self) -> String {
        format!("{} - {}", reply_code_name(self.reply_code()), self)
    }
}

/// An error that closes one channel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    #[error("{0}")]
    AccessRefused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ResourceLocked(String),
    #[error("{0}")]
    PreconditionFailed(String),
}

impl ChannelError {
    pub fn reply_code(&self) -> u16 {
        match self {
            ChannelError::AccessRefused(_) => ACCESS_REFUSED,
            ChannelError::NotFound(_) => NOT_FOUND,
            ChannelError::ResourceLocked(_) => RESOURCE_LOCKED,
            ChannelError::PreconditionFailed(_) => PRECONDITION_FAILED,
        }
    }

    pub fn reply_text(&self) -> String {
        format!("{} - {}", reply_code_name(self.reply_code()), self)
    }
}

/// What handling one frame can fail with, tagged with the method that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exception {
    Connection { error: ConnectionError, class_id: u16, method_id: u16 },
    Channel { error: ChannelError, channel: u16, class_id: u16, method_id: u16 },
}

impl From<ConnectionError> for Exception {
    fn from(error: ConnectionError) -> Exception {
        Exception::Connection { error, class_id: 0, method_id: 0 }
    }
}

impl From<ProtocolError> for Exception {
    fn from(error: ProtocolError) -> Exception {
        ConnectionError::Protocol(error).into()
    }
}

/// A failed method, before the connection tags it with the method's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    Channel(ChannelError),
    Connection(ConnectionError),
}

impl From<ChannelError> for Fail {
    fn from(e: ChannelError) -> Fail {
        Fail::Channel(e)
    }
}

impl From<ConnectionError> for Fail {
    fn from(e: ConnectionError) -> Fail {
        Fail::Connection(e)
    }
}

/// The one place broker refusals become AMQP exceptions.
impl From<lepus_broker::BrokerError> for Fail {
    fn from(e: lepus_broker::BrokerError) -> Fail {
        use lepus_broker::BrokerError as B;
        let text = e.to_string();
        match e {
            B::NotFound { .. } | B::Absent { .. } => Fail::Channel(ChannelError::NotFound(text)),
            B::PreconditionFailed(_) => Fail::Channel(ChannelError::PreconditionFailed(text)),
            B::AccessRefused(_) => Fail::Channel(ChannelError::AccessRefused(text)),
            B::ResourceLocked(_) => Fail::Channel(ChannelError::ResourceLocked(text)),
            B::CommandInvalid(_) => Fail::Connection(ConnectionError::CommandInvalid(text)),
            B::NotAllowed(_) => Fail::Connection(ConnectionError::NotAllowed(text)),
            B::NotImplemented(_) => Fail::Connection(ConnectionError::NotImplemented(text)),
            B::Storage(_) | B::Internal(_) => Fail::Connection(ConnectionError::Internal(text)),
        }
    }
}

impl Fail {
    pub fn tag(self, channel: u16, class_id: u16, method_id: u16) -> Exception {
        match self {
            Fail::Channel(error) => Exception::Channel { error, channel, class_id, method_id },
            Fail::Connection(error) => Exception::Connection { error, class_id, method_id },
        }
    }
}

pub fn precondition(text: impl Into<String>) -> Fail {
    Fail::Channel(ChannelError::PreconditionFailed(text.into()))
}
