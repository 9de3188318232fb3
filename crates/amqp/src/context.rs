//! What every AMQP connection shares: the broker service, the limits this listener offers and
//! enforces, and the direct reply-to addresses of consuming channels.

use std::collections::HashMap;

use lepus_broker::{BrokerRef, ConsumerId, OutletRef};
use lepus_protocol::ShortStr;
use parking_lot::Mutex;

use lepus_broker::login_guard::LoginGuard;

/// The protocol limits of a listener (from the server's configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted and offered in `connection.tune`, header included.
    pub frame_max: u32,
    /// Highest channel number offered in `connection.tune`.
    pub channel_max: u16,
    /// Heartbeat interval offered in `connection.tune`; 0 disables.
    pub heartbeat_s: u16,
    /// Time a client has from accept to `connection.open`.
    pub handshake_timeout_ms: u64,
    /// Time a client has from accept (plain TCP) or the end of the TLS handshake to its
    /// 8-byte protocol header.
    pub protocol_header_timeout_ms: u64,
    /// Open (authenticated) connections the node accepts; `connection.open` beyond them gets
    /// 530 NOT_ALLOWED.
    pub connection_max: usize,
    /// How long a refused login waits before its answer (and the socket's close).
    pub login_failure_delay_ms: u64,
    /// Failed logins a source address may have per minute before its logins are refused
    /// unchecked for the rest of that minute; 0: no limit.
    pub login_failures_per_minute: u32,
    /// Time we wait for `connection.close-ok` after sending `connection.close`.
    pub close_timeout_ms: u64,
    /// Largest message body accepted.
    pub message_size_max: u64,
    /// Bytes of unsent output a connection may buffer before we stop reading from it.
    pub outbound_buffer_max: usize,
    /// Consumer timeout: how long a delivery may stay unacknowledged before its channel is
    /// closed (a queue's `x-consumer-timeout` overrides it); 0 disables.
    pub consumer_timeout_ms: u64,
    /// Consumers one channel may have; 0: no limit.
    pub consumer_max_per_channel: usize,
}

/// Where a direct reply-to address delivers.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTarget {
    pub outlet: OutletRef,
    pub consumer: ConsumerId,
}

/// Shared by the connections of one broker.
#[derive(Debug)]
pub struct Context {
    pub broker: BrokerRef,
    pub limits: Limits,
    /// Direct reply-to addresses (`amq.rabbitmq.reply-to.…`) of consuming channels.
    pub(crate) reply_to: Mutex<HashMap<ShortStr, ReplyTarget>>,
    /// Failed logins by source address.
    pub(crate) login_guard: LoginGuard,
}

impl Context {
    pub fn new(broker: BrokerRef, limits: Limits) -> Context {
        let login_guard = LoginGuard::new(limits.login_failures_per_minute, 60_000);
        Context { broker, limits, reply_to: Mutex::default(), login_guard }
    }
}
