//! Typed decode errors of the codec, and the AMQP reply code each one maps to.

use thiserror::Error;

use crate::constants::{FRAME_ERROR, NOT_IMPLEMENTED};

/// Everything that can be wrong with bytes a peer sent.
///
/// The connection layer maps each variant once, through [`ProtocolError::reply_code`], to
/// the connection-level exception RabbitMQ raises for it; every one of them closes the
/// connection (AMQP 0-9-1 §4.2.3: framing errors are connection errors).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("frame size {size} exceeds frame_max {frame_max}")]
    FrameTooLarge { size: u64, frame_max: u32 },
    #[error("frame end octet was {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("{0} ends before its last field")]
    Truncated(&'static str),
    #[error("{0} has {1} unexpected trailing bytes")]
    TrailingBytes(&'static str, usize),
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    #[error("unknown field value type {0:#04x}")]
    UnknownFieldType(u8),
    #[error("field table nested deeper than {0} levels")]
    TableTooDeep(usize),
    #[error("field tables hold more than {0} values")]
    TableTooManyValues(usize),
    #[error("a nested field value overruns its enclosing table or array")]
    TableOverrun,
    #[error("content header for class {0}, expected 60 (basic)")]
    UnknownContentClass(u16),
    #[error("content header property flags {0:#06x} use reserved or continuation bits")]
    BadPropertyFlags(u16),
}

impl ProtocolError {
    /// The AMQP reply code for the `connection.close` this error causes. RabbitMQ answers
    /// every undecodable frame or method with 501 FRAME_ERROR ("cannot decode"); an unknown
    /// method, which RabbitMQ answers by dropping the socket, gets 540 NOT_IMPLEMENTED.
    pub fn reply_code(&self) -> u16 {
        match self {
            ProtocolError::UnknownMethod { .. } => NOT_IMPLEMENTED,
            _ => FRAME_ERROR,
        }
    }

    /// Whether the byte stream itself is broken (we no longer know where frames start), as
    /// opposed to one well-framed frame with bad content.
    pub fn loses_frame_sync(&self) -> bool {
        matches!(
            self,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::BadFrameEnd(_) | ProtocolError::UnknownFrameType(_)
        )
    }
}

pub type Result<T> = std::result::Result<T, ProtocolError>;
