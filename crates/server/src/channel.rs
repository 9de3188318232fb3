//! Per-channel state kept by a connection.

/// Whether a channel is usable or waiting for the client's `channel.close-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelPhase {
    Open,
    /// We sent `channel.close`; everything but close/close-ok is dropped.
    Closing,
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub phase: ChannelPhase,
    /// `channel.flow`: when false, no deliveries go to this channel's consumers.
    pub flow_active: bool,
}

impl Channel {
    pub fn new() -> Channel {
        Channel { phase: ChannelPhase::Open, flow_active: true }
    }
}
