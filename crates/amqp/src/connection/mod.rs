//! One AMQP connection: protocol header, the handshake (start/start-ok, tune/tune-ok, open),
//! heartbeats, channels, and both directions of `connection.close`.
//!
//! A connection is one tokio task that owns its socket halves, its channels and one output
//! buffer. It `select!`s over: bytes to read, bytes to write, the heartbeat timer and broker
//! shutdown. Every complete frame in the read buffer is handled before the next read, and
//! every reply is appended to the output buffer, so many replies leave in one `write`. Reading
//! stops while the output buffer is over `outbound_buffer_max` (a client that does not read
//! cannot make us buffer without bound), and reads and writes are polled together, so a
//! client that writes without reading cannot deadlock us.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use lepus_protocol::constants::*;
use lepus_protocol::frame::{write_heartbeat, write_method};
use lepus_protocol::method::*;
use lepus_protocol::publish_view::parse_publish;
use lepus_protocol::{FieldTable, Frame, FrameType, LongStr, Method, ProtocolError, ShortStr, parse_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use lepus_broker::alarms::Alarms;
use lepus_broker::channel_stats::ChannelStat;
use lepus_broker::connections::{Admission, Closer, ConnectionInfo, ConnectionRef, Negotiated, Refusal};
use lepus_broker::io_stats::IoTotals;
use lepus_broker::permissions::{Permission, Resource};
use lepus_broker::stats::{Counters, Stat};
use lepus_broker::{ConsumerId, Outbound, Outlet, OutletRef, VHost, Wake};
use tokio::sync::Notify;

use crate::auth::{External, MECHANISMS, MECHANISMS_WITH_EXTERNAL};
use crate::channel::{Channel, ChannelPhase};
use crate::context::Context as Shared;
use crate::error::{ConnectionError, Exception, Fail};
use crate::handshake_pool::HandshakePermit;
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::transport::Transport;

mod deliver;
mod get;
mod model;
mod outbox;
mod publish;
mod release;
mod timeout;
mod unwritten;

pub(crate) use timeout::{ChannelTimer, Watch};

const READ_BUFFER_INITIAL: usize = 64 * 1024;

/// A frame at least this large waiting to be completed makes the read buffer grow to hold
/// [`READ_BUFFER_FRAMES`] such frames (up to [`READ_BUFFER_LARGE_MAX`]): then a partial frame
/// is moved to the front of the buffer once per pass through it, not once per read, and each
/// read takes several frames. Connections that only send small frames keep the small buffer,
/// and a grown buffer goes back to [`READ_BUFFER_INITIAL`] at the first tick (250 ms) with no
/// large frame pending and nothing buffered. Measured on S4 (64 KiB bodies), A/B medians of
/// 3: +7% messages/s, -15% broker CPU per message.
const LARGE_FRAME_MIN: usize = 16 * 1024;
const READ_BUFFER_FRAMES: usize = 8;
const READ_BUFFER_LARGE_MAX: usize = 1024 * 1024;

/// Deliveries are encoded only while less than this is waiting to be written. Beyond it,
/// messages stay in their queues (where flow control sees them) instead of piling up as
/// encoded bytes: 100 consumer connections must not hold 100 × `outbound_buffer_max`.
const ENCODE_AHEAD_MAX: usize = 256 * 1024;

/// While flow control pauses a publisher, or its output is backed up past
/// `outbound_buffer_max`, a connection keeps reading, without processing, up to this many bytes:
/// enough to notice the client closing the socket and to see its heartbeats (liveness), bounded
/// like everything else.
const PAUSED_READ_MAX: usize = 128 * 1024;

/// Wakes a task through its `Notify`: a connection when queues push deliveries onto its
/// outlet, the timer driver when a timer is due before the one it sleeps for.
pub struct NotifyWake(pub Arc<Notify>);

impl Wake for NotifyWake {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// Wakes a connection task after a store commit it waits for. Registered with the store at
/// most once at a time: the store forgets it when it wakes it.
struct StoreWake {
    notify: Arc<Notify>,
    registered: std::sync::atomic::AtomicBool,
}

impl lepus_broker::durability::CommitWaker for StoreWake {
    fn wake(&self) {
        self.registered.store(false, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Where deliveries to one of this connection's consumers go.
#[derive(Debug, Clone)]
struct ConsumerRoute {
    channel: u16,
    tag: ShortStr,
    /// False once cancelled: deliveries still in the outlet for it are requeued.
    live: bool,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 8-byte protocol header.
    Header,
    StartOk,
    TuneOk,
    Open,
    Running,
    /// We sent `connection.close`; only `close`/`close-ok` matter now.
    Closing,
    /// Done: flush what is buffered, then shut the socket.
    Closed,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Header => "header",
            Phase::StartOk => "starting",
            Phase::TuneOk => "tuning",
            Phase::Open => "opening",
            Phase::Running => "running",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        }
    }
}

/// The name of a mechanism `authenticate` accepted (one of those offered).
fn mechanism_name(mechanism: &[u8]) -> &'static str {
    match mechanism {
        b"AMQPLAIN" => "AMQPLAIN",
        b"EXTERNAL" => "EXTERNAL",
        _ => "PLAIN",
    }
}

/// Runs a connection to completion. Never panics on client input; logs how it ended.
pub async fn serve(transport: impl Transport, peer: SocketAddr, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    serve_admitted(transport, peer, shared, stop, None).await;
}

/// [`serve`], holding `handshake_permit` (a place in the listener's pool of connections not
/// yet open) until the connection is open or gone.
pub async fn serve_admitted(
    transport: impl Transport,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    handshake_permit: Option<HandshakePermit>,
) {
    let deadline_ms = shared.broker.clock().now_ms().saturating_add(shared.limits.handshake_timeout_ms);
    let start = Start { handshake_deadline_ms: deadline_ms, handshake_permit, external: None, tls: None };
    serve_started(transport, peer, shared, stop, start).await;
}

/// How a connection starts: what came before its first AMQP byte (accept, a TLS handshake).
pub(crate) struct Start {
    /// When the handshake must be over (`connection.open`), counted from the accept, on the
    /// broker's clock.
    pub handshake_deadline_ms: u64,
    pub handshake_permit: Option<HandshakePermit>,
    /// What SASL EXTERNAL logs in as, where it is offered.
    pub external: External,
    /// The TLS session, on a TLS listener.
    pub tls: Option<lepus_broker::connections::TlsSession>,
}

pub(crate) async fn serve_started(
    transport: impl Transport,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    start: Start,
) {
    let id = shared.broker.connections().next_id();
    let (rd, wr) = transport.split();
    tracing::debug!(connection = id, %peer, "accepted connection");
    let mut conn = Connection::new(id, peer, shared);
    conn.handshake_permit = start.handshake_permit;
    conn.header_deadline_ms = Some(conn.now_ms().saturating_add(conn.shared.limits.protocol_header_timeout_ms));
    conn.external = start.external;
    conn.tls = start.tls;
    conn.run(rd, wr, stop, start.handshake_deadline_ms).await;
}

struct Connection {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    phase: Phase,
    /// Encoded output not yet written (the tail: everything after the sealed chunks).
    out: BytesMut,
    /// Output sealed ahead of `out`: large message bodies by reference (see [`outbox`]).
    sealed: outbox::Sealed,
    /// The SASL mechanism it logged in with and its TLS session, for the registry (which
    /// also shows the tuning below).
    auth_mechanism: &'static str,
    tls: Option<lepus_broker::connections::TlsSession>,
    /// Negotiated limits (server defaults until `tune-ok`).
    frame_max: u32,
    channel_max: u16,
    /// Looked up for every frame; keys are channel numbers (≤ `channel_max`), so a fixed-seed
    /// fast hash is enough (SipHash showed up at ~3% of an S1 profile).
    channels: std::collections::HashMap<u16, Channel, foldhash::fast::FixedState>,
    user: String,
    vhost: String,
    /// What the user may do in the vhost, taken again when the broker's permissions change.
    access: lepus_broker::permissions::Access,
    /// The exchange a publish was last allowed to (write permission) at `access`'s version.
    write_allowed: Option<Vec<u8>>,
    /// The user has the `impersonator` tag: `user_id` may name another user.
    impersonator: bool,
    /// Capabilities the client announced in `start-ok`.
    client_capabilities: FieldTable,
    /// Everything the client said about itself in `start-ok`, for the registry.
    client_properties: FieldTable,
    /// This connection in the broker's registry (and its counters), once it is open.
    info: Option<ConnectionRef>,
    /// Its place in the listener's pool of connections not yet open, released at open.
    handshake_permit: Option<HandshakePermit>,
    /// When the protocol header must have arrived (`protocol_header_timeout_ms`), on the
    /// broker's clock.
    header_deadline_ms: Option<u64>,
    /// What SASL EXTERNAL logs in as, where it is offered (TLS with client certificates).
    external: External,
    /// Nothing is written or read before then (a refused login's answer waits).
    hold_until: Option<Instant>,
    /// Where queues push deliveries for this connection's consumers.
    outlet: OutletRef,
    /// The channel and tag of each of this connection's consumers, by broker id; `live` false
    /// once cancelled, until what the queue had assigned to it is requeued.
    consumer_routes: std::collections::HashMap<ConsumerId, ConsumerRoute, foldhash::fast::FixedState>,
    notify: Arc<Notify>,
    /// Reused buffer for draining the outlet.
    drained: Vec<Outbound>,
    /// Bytes and socket calls in and out, published to the registry after each call.
    io: IoTotals,
    /// What was taken from the outlet and not yet encoded, in order: encoding stops while
    /// the output is backed up (see [`Connection::drain_outlet`]).
    backlog: Vec<Outbound>,
    /// No-ack deliveries encoded and not yet written.
    unwritten: unwritten::Unwritten,
    /// Channels with publisher confirms to flush at the end of this input batch.
    confirms_due: Vec<u16>,
    /// Channels whose counts or gauges changed since they were last published to their
    /// registry records (see [`Connection::publish_channel_stats`]).
    channels_due: Vec<u16>,
    /// A queue this input batch published into that is over its flow-control watermark.
    congested: Option<lepus_broker::QueueRef>,
    /// Flow control: while set, we do not read from the socket (the queue wakes us).
    throttle: Option<lepus_broker::QueueRef>,
    /// The node's resource alarms, read before each message's content is taken in and told
    /// of every read's size (they sample memory every few MB the node takes in).
    alarms: Arc<Alarms>,
    /// A resource alarm stopped input at message content: nothing more is processed until
    /// every alarm has cleared (the alarms wake us).
    alarm_blocked: bool,
    /// `connection.blocked` was sent; `connection.unblocked` is owed.
    blocked_sent: bool,
    /// Publishes into the vhost (with this connection's route cache), once it is open; also
    /// the connection's way to its vhost.
    publisher: Option<lepus_broker::Publisher>,
    /// When our `connection.close` must have been answered, on the broker's clock.
    closing_deadline_ms: Option<u64>,
    /// Set when input can no longer be trusted (framing lost): read nothing more.
    stop_reading: bool,
    /// A large frame was pending since the last tick: the read buffer keeps its grown size.
    large_frames: bool,
    heartbeat: Heartbeat,
    store_waker: Arc<StoreWake>,
    /// Channels whose consumer-timeout timer fired (see [`timeout`]).
    due_channels: Arc<timeout::DueChannels>,
    /// Channels that got an acked delivery in this drain while their timeout watch was idle.
    watch_pending: Vec<u16>,
    /// Consumers and bindings still to release, a step per turn (see [`release`]).
    release: release::Release,
    /// A `basic.get` waiting for its queue's requeue to come back (see [`get`]): input waits
    /// unprocessed behind it.
    held_get: Option<get::HeldGet>,
}

impl Connection {
    fn new(id: u64, peer: SocketAddr, shared: Arc<Shared>) -> Connection {
        let now_ms = shared.broker.clock().now_ms();
        let notify = Arc::new(Notify::new());
        let outlet = Arc::new(Outlet::new(Box::new(NotifyWake(notify.clone()))));
        Connection {
            store_waker: Arc::new(StoreWake {
                notify: notify.clone(),
                registered: std::sync::atomic::AtomicBool::new(false),
            }),
            outlet,
            due_channels: Arc::new(timeout::DueChannels::new(notify.clone())),
            watch_pending: Vec::new(),
            release: release::Release::default(),
            held_get: None,
            consumer_routes: Default::default(),
            notify,
            drained: Vec::new(),
            io: IoTotals::default(),
            backlog: Vec::new(),
            unwritten: Default::default(),
            confirms_due: Vec::new(),
            channels_due: Vec::new(),
            congested: None,
            throttle: None,
            alarms: shared.broker.alarms().clone(),
            alarm_blocked: false,
            blocked_sent: false,
            publisher: None,
            id,
            peer,
            auth_mechanism: "",
            tls: None,
            frame_max: FRAME_MIN_SIZE,
            channel_max: shared.limits.channel_max,
            shared,
            phase: Phase::Header,
            out: BytesMut::with_capacity(16 * 1024),
            sealed: outbox::Sealed::default(),
            channels: std::collections::HashMap::default(),
            user: String::new(),
            vhost: String::new(),
            access: lepus_broker::permissions::Access::new("", "", None, 0),
            write_allowed: None,
            impersonator: false,
            client_capabilities: FieldTable::new(),
            client_properties: FieldTable::new(),
            info: None,
            handshake_permit: None,
            header_deadline_ms: None,
            external: None,
            hold_until: None,
            closing_deadline_ms: None,
            stop_reading: false,
            large_frames: false,
            heartbeat: Heartbeat::new(0, now_ms),
        }
    }

    async fn run(
        &mut self,
        mut rd: impl AsyncRead + Unpin,
        mut wr: impl AsyncWrite + Unpin,
        mut stop: watch::Receiver<bool>,
        handshake_deadline_ms: u64,
    ) {
        let mut inbuf = BytesMut::with_capacity(READ_BUFFER_INITIAL);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = *stop.borrow();
        let notify = self.notify.clone();
        let mut unprocessed = false;
        // The client closed its side while we still held unprocessed input: the frames it
        // sent before closing are still handled (in order), then the connection ends.
        let mut eof = false;
        let end: &'static str = loop {
            // What the last turn counted per channel goes to the registry once per turn.
            self.publish_channel_stats();
            if let Some(until) = self.hold_until.take() {
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    _ = crate::stopped(&mut stop), if !stopping => {}
                }
            }
            // A large release goes a step per turn of this loop (a branch of the select below),
            // the task yielding between steps; input waits unprocessed until it is done, but
            // is still read (the peer's heartbeats prove it alive), output is still written
            // and the tick still sends heartbeats.
            let releasing = self.release.is_pending();
            if self.phase == Phase::Closed && self.out_is_empty() {
                break "closed";
            }
            // Input waits unprocessed while publishing is throttled or output is backed up (it
            // could only add to the output); it is still read, up to a bound, so that a slow
            // consumer's heartbeats and acks prove it alive.
            let paused = releasing
                || self.get_is_held()
                || self.throttle.is_some()
                || self.alarm_blocked
                || self.out_len() >= self.shared.limits.outbound_buffer_max;
            if !paused && unprocessed {
                // Flow control, an alarm or the output released us: handle what arrived while
                // paused.
                self.on_input(&mut inbuf);
                unprocessed = self.input_waits();
            }
            if eof && !unprocessed {
                break "client closed the TCP connection";
            }
            if self.has_backlog() && self.out_len() < self.encode_limit() {
                // The output drained: encode more of what was held back.
                self.drain_outlet();
            }
            let read_ok =
                !eof && !self.stop_reading && self.phase != Phase::Closed && (!paused || inbuf.len() < PAUSED_READ_MAX);
            tokio::select! {
                () = tokio::task::yield_now(), if releasing => self.release_step(),
                r = rd.read_buf(&mut inbuf), if read_ok => match r {
                    Ok(0) if unprocessed => eof = true,
                    Ok(0) => break "client closed the TCP connection",
                    Ok(n) if paused => {
                        self.count_io(|io| io.read(n));
                        self.alarms.took_in(n);
                        self.heartbeat.on_read(self.now_ms());
                        unprocessed = true;
                    }
                    Ok(n) => {
                        self.count_io(|io| io.read(n));
                        self.alarms.took_in(n);
                        self.heartbeat.on_read(self.now_ms());
                        self.on_input(&mut inbuf);
                        // An alarm stopped input at message content, a large release began
                        // or a get waits for its queue: the rest waits.
                        unprocessed = self.input_waits();
                        if inbuf.capacity() - inbuf.len() < 4096 {
                            inbuf.reserve(READ_BUFFER_INITIAL);
                        }
                    }
                    Err(_) => break "read error",
                },
                _ = notify.notified(), if self.out_len() < self.encode_limit() => {
                    self.check_close_request();
                    self.drain_outlet();
                    self.retry_held_get();
                    self.check_timeouts();
                    self.check_throttle();
                    self.check_alarms();
                    if self.waits_for_store() {
                        self.on_store_progress();
                        self.await_durability();
                    }
                }
                w = self.sealed.write_to(&mut wr, &self.out), if !self.out_is_empty() => match w {
                    Ok(0) | Err(_) => break "write error",
                    Ok(n) => {
                        self.count_io(|io| io.wrote(n));
                        let now = self.now_ms();
                        if self.out_len() >= self.shared.limits.outbound_buffer_max {
                            // Backed-up output moving proves the peer alive as much as a frame
                            // from it would: its TCP stack took what ours could not hold.
                            self.heartbeat.on_read(now);
                        }
                        self.sealed.consume(&mut self.out, n);
                        self.unwritten.on_written(n);
                        self.heartbeat.on_write(now);
                    }
                },
                _ = tick.tick() => {
                    if !std::mem::take(&mut self.large_frames)
                        && inbuf.is_empty()
                        && inbuf.capacity() > READ_BUFFER_INITIAL
                    {
                        inbuf = BytesMut::with_capacity(READ_BUFFER_INITIAL);
                    }
                    self.check_throttle();
                    self.check_alarms();
                    // Also here: wake-ups are not read while output is backed up.
                    self.check_close_request();
                    self.retry_held_get();
                    self.check_timeouts();
                    if let Some(reason) = self.on_tick(handshake_deadline_ms) {
                        break reason;
                    }
                }
                _ = crate::stopped(&mut stop), if !stopping => {
                    stopping = true;
                    self.on_shutdown();
                }
            }
        };
        let _ = wr.shutdown().await;
        self.release_connection();
        self.finish_release().await;
        if self.alarm_blocked {
            self.alarms.forget(&self.outlet);
        }
        self.outlet.close();
        self.drain_outlet();
        // The publisher's cached route holds queues: they go with the connection.
        if let Some(publisher) = self.publisher.take() {
            publisher.vhost().remove_exclusive_queues(self.id);
        }
        if self.info.take().is_some() {
            self.shared.broker.connections().deregister(self.id);
        }
        let clean = end == "closed";
        if self.phase == Phase::Header {
            // A TCP connect without a protocol header: health checks and port probes.
            tracing::debug!(connection = self.id, peer = %self.peer, reason = end, "connection ended before the protocol header");
        } else if self.phase == Phase::Closed && clean {
            tracing::info!(connection = self.id, peer = %self.peer, user = ?self.user, vhost = ?self.vhost, "connection closed");
        } else {
            tracing::warn!(connection = self.id, peer = %self.peer, phase = self.phase.name(), reason = end, "connection ended");
        }
    }

    /// Counts a socket call in the connection's totals and publishes them once it is
    /// registered (relaxed stores: this task is their only writer).
    #[inline]
    fn count_io(&mut self, count: impl FnOnce(&mut IoTotals)) {
        count(&mut self.io);
        if let Some(info) = &self.info {
            info.io.publish(&self.io);
        }
    }

    /// Now on the broker's clock (injected: tests move it).
    fn now_ms(&self) -> u64 {
        self.shared.broker.clock().now_ms()
    }

    /// Deliveries are encoded only while less than this waits to be written.
    fn encode_limit(&self) -> usize {
        ENCODE_AHEAD_MAX.min(self.shared.limits.outbound_buffer_max)
    }

    /// Bytes encoded and not yet written.
    fn out_len(&self) -> usize {
        self.sealed.len() + self.out.len()
    }

    fn out_is_empty(&self) -> bool {
        self.sealed.is_empty() && self.out.is_empty()
    }

    /// Periodic checks: handshake and close timeouts, heartbeats. `Some` ends the connection.
    fn on_tick(&mut self, handshake_deadline_ms: u64) -> Option<&'static str> {
        let now = self.now_ms();
        let handshaking = matches!(self.phase, Phase::Header | Phase::StartOk | Phase::TuneOk | Phase::Open);
        if handshaking && now >= handshake_deadline_ms {
            return Some("handshake timeout");
        }
        if self.phase == Phase::Header && self.header_deadline_ms.is_some_and(|at| now >= at) {
            return Some("no protocol header in time");
        }
        if let Some(deadline) = self.closing_deadline_ms
            && now >= deadline
        {
            return Some("no connection.close-ok in time");
        }
        if self.throttle.is_some() || self.alarm_blocked {
            // We chose not to read while flow control or an alarm pauses this publisher: its
            // silence is ours, not a missed heartbeat.
            self.heartbeat.on_read(now);
        }
        if self.phase == Phase::Running {
            match self.heartbeat.poll(now, self.out_is_empty()) {
                HeartbeatAction::Wait => {}
                HeartbeatAction::Send => write_heartbeat(&mut self.out),
                HeartbeatAction::PeerDead => {
                    tracing::warn!(connection = self.id, peer = %self.peer, timeout_s = self.heartbeat.interval_s(), "missed heartbeats from client, closing");
                    return Some("missed heartbeats");
                }
            }
        }
        None
    }

    /// Closes the connection with 320 if the broker asked (management, vhost deletion).
    fn check_close_request(&mut self) {
        let Some(reason) = self.info.as_ref().and_then(|i| i.closer.take_request()) else { return };
        if self.phase == Phase::Running {
            tracing::info!(connection = self.id, peer = %self.peer, reason = %reason.escape_debug(), "closing connection on request");
            self.send_connection_close(&ConnectionError::Forced(reason), 0, 0);
        }
    }

    fn on_shutdown(&mut self) {
        match self.phase {
            Phase::Running => {
                let error = ConnectionError::Forced("broker forced connection closure with reason 'shutdown'".into());
                self.send_connection_close(&error, 0, 0);
            }
            Phase::Closing | Phase::Closed => {}
            _ => self.phase = Phase::Closed,
        }
    }

    /// Handles every complete frame in `inbuf`.
    fn on_input(&mut self, inbuf: &mut BytesMut) {
        if self.phase == Phase::Header {
            if inbuf.len() < PROTOCOL_HEADER.len() {
                return;
            }
            let header = inbuf.split_to(PROTOCOL_HEADER.len());
            if !self.on_protocol_header(&header) {
                return;
            }
        }
        while !self.stop_reading && self.phase != Phase::Closed && !self.release.is_pending() && !self.get_is_held() {
            if self.alarms.any() && self.phase == Phase::Running && self.block_for_alarm(inbuf) {
                break;
            }
            // RabbitMQ lets frames exceed frame_max by the 8 bytes of frame overhead, since
            // several clients get the limit off by that much; so do we.
            let limit = self.frame_max.saturating_add(FRAME_OVERHEAD as u32);
            if self.phase == Phase::Running
                && let Some(view) = parse_publish(inbuf, limit)
                && self.publish_view(&view)
            {
                let taken = view.len;
                inbuf.advance(taken);
                continue;
            }
            match parse_frame(inbuf, limit) {
                Ok(Some(frame)) => {
                    if let Err(e) = self.on_frame(frame) {
                        self.on_exception(e);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.on_exception(e.into());
                    break;
                }
            }
        }
        if let Some(publisher) = &mut self.publisher {
            // Before the confirms: a client that saw its confirm sees its exchange's count.
            publisher.flush_stats();
        }
        self.flush_confirms();
        self.apply_flow_control();
        if self.phase == Phase::Running && !self.stop_reading {
            self.large_frames |= grow_for_large_frames(inbuf, self.frame_max as usize + FRAME_OVERHEAD);
        }
    }

    /// Input stops here until an alarm clears, a large release ends or a held get is answered.
    fn input_waits(&self) -> bool {
        self.alarm_blocked || self.release.is_pending() || self.get_is_held()
    }

    /// Flow control: after a batch that published into a congested queue, stop reading until
    /// the queue is relieved. A connection that also consumes is never paused, so its own
    /// acks can always reach the queues.
    fn apply_flow_control(&mut self) {
        let Some(queue) = self.congested.take() else { return };
        let consumes = self.channels.values().any(|ch| !ch.consumers.is_empty());
        if !consumes && queue.wait_for_relief(&self.outlet) {
            tracing::debug!(connection = self.id, queue = %queue.name.to_string().escape_debug(), "publisher paused by flow control");
            self.throttle = Some(queue);
        }
    }

    /// Resource alarms: message content at the head of `inbuf` while an alarm is set stops
    /// input there (true), and the client is told `connection.blocked` once. Acks and other
    /// methods before it were handled, so consumers on this connection keep draining.
    fn block_for_alarm(&mut self, inbuf: &[u8]) -> bool {
        if self.alarm_blocked {
            return true;
        }
        if !starts_with_content(inbuf) || !self.alarms.wait_for_clear(&self.outlet) {
            return false;
        }
        self.alarm_blocked = true;
        self.show_alarm_blocked(true);
        let reason = self.alarms.blocked_reason();
        tracing::info!(connection = self.id, peer = %self.peer, reason, "publisher blocked by a resource alarm");
        if self.client_capabilities.get("connection.blocked").and_then(|v| v.as_bool()) == Some(true) {
            self.send(0, ConnectionBlocked { reason: ShortStr::truncating(&reason) });
            self.blocked_sent = true;
        }
        true
    }

    /// Resumes input once every alarm has cleared.
    fn check_alarms(&mut self) {
        if !self.alarm_blocked || self.alarms.any() {
            return;
        }
        self.alarm_blocked = false;
        self.show_alarm_blocked(false);
        tracing::info!(connection = self.id, peer = %self.peer, "publisher unblocked: resource alarms cleared");
        if std::mem::take(&mut self.blocked_sent) && self.phase == Phase::Running {
            self.send(0, ConnectionUnblocked {});
        }
    }

    /// The registry's `blocked` state, written on these transitions only.
    fn show_alarm_blocked(&self, on: bool) {
        if let Some(info) = &self.info {
            info.alarm_blocked.store(on, Ordering::Relaxed);
        }
    }

    fn check_throttle(&mut self) {
        if self.throttle.as_ref().is_some_and(|q| q.is_relieved()) {
            self.throttle = None;
        }
    }

    /// Accepts `AMQP 0 0 9 1` (and 0-9's `AMQP 1 1 0 9`, as RabbitMQ does); anything else gets
    /// our header back and the socket closed.
    fn on_protocol_header(&mut self, header: &[u8]) -> bool {
        if header == PROTOCOL_HEADER || header == b"AMQP\x01\x01\x00\x09" {
            self.send_start();
            self.phase = Phase::StartOk;
            return true;
        }
        tracing::warn!(connection = self.id, peer = %self.peer, header = ?Bytes::copy_from_slice(header), "bad protocol header, replying with ours");
        self.out.extend_from_slice(&PROTOCOL_HEADER);
        self.phase = Phase::Closed;
        self.stop_reading = true;
        false
    }

    fn send(&mut self, channel: u16, method: impl Into<Method>) {
        write_method(&mut self.out, channel, &method.into());
    }

    fn send_start(&mut self) {
        let capabilities = FieldTable::new()
            .with("publisher_confirms", true)
            .with("exchange_exchange_bindings", true)
            .with("basic.nack", true)
            .with("consumer_cancel_notify", true)
            .with("connection.blocked", true)
            .with("consumer_priorities", true)
            .with("authentication_failure_close", true)
            .with("per_consumer_qos", true)
            .with("direct_reply_to", true);
        let properties = FieldTable::new()
            .with("capabilities", capabilities)
            .with("product", "Lepus")
            .with("version", env!("CARGO_PKG_VERSION"))
            .with("platform", "Rust")
            .with("cluster_name", "lepus")
            .with("copyright", "The Lepus authors")
            .with("information", "Licensed under the Apache License 2.0");
        let mechanisms = if self.external.is_some() { MECHANISMS_WITH_EXTERNAL } else { MECHANISMS };
        self.send(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: properties,
                mechanisms: LongStr::from(mechanisms),
                locales: LongStr::from("en_US"),
            },
        );
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Exception> {
        let channel = frame.channel;
        match frame.frame_type {
            FrameType::Heartbeat if channel == 0 && frame.payload.is_empty() => Ok(()),
            FrameType::Heartbeat if channel == 0 => {
                let trailing = ProtocolError::TrailingBytes("heartbeat frame", frame.payload.len());
                Err(ConnectionError::Protocol(trailing).into())
            }
            FrameType::Heartbeat => Err(unexpected_frame(&frame).into()),
            FrameType::Method => {
                let ids = method_ids(&frame.payload);
                let method = Method::decode(frame.payload).map_err(|e| Exception::Connection {
                    error: e.into(),
                    class_id: ids.0,
                    method_id: ids.1,
                })?;
                if channel == 0 { self.on_connection_method(method) } else { self.on_channel_method(channel, method) }
            }
            FrameType::Header | FrameType::Body if channel == 0 => Err(unexpected_frame(&frame).into()),
            FrameType::Header | FrameType::Body => self.on_content_frame(frame),
        }
    }

    fn on_connection_method(&mut self, method: Method) -> Result<(), Exception> {
        let (class_id, method_id) = method.ids();
        let tag = |error: ConnectionError| Exception::Connection { error, class_id, method_id };
        match (self.phase, method) {
            (Phase::StartOk, Method::ConnectionStartOk(m)) => self.on_start_ok(m).map_err(tag),
            (Phase::TuneOk, Method::ConnectionTuneOk(m)) => self.on_tune_ok(m).map_err(tag),
            (Phase::Open, Method::ConnectionOpen(m)) => self.on_open(m).map_err(tag),
            (Phase::Running, Method::ConnectionClose(m)) => {
                tracing::debug!(connection = self.id, code = m.reply_code, text = %m.reply_text.to_string().escape_debug(), "client closed connection");
                // The client discards what we send after its close: what is not written yet
                // was never its.
                self.release_connection();
                self.reply_after_release(release::Reply::ConnectionCloseOk);
                Ok(())
            }
            (Phase::Closing, Method::ConnectionClose(_)) => {
                self.send(0, ConnectionCloseOk {});
                self.phase = Phase::Closed;
                Ok(())
            }
            (Phase::Closing, Method::ConnectionCloseOk(_)) => {
                self.phase = Phase::Closed;
                Ok(())
            }
            (Phase::Closing, _) => Ok(()),
            (Phase::Running, Method::ConnectionUpdateSecret(m)) => {
                // Internal users have no expiring credentials: accept and acknowledge.
                tracing::debug!(connection = self.id, reason = %m.reason.to_string().escape_debug(), "update-secret");
                self.send(0, ConnectionUpdateSecretOk {});
                Ok(())
            }
            (phase, method) => {
                Err(tag(ConnectionError::UnexpectedMethod { method: method.name(), state: phase.name() }))
            }
        }
    }

    fn on_start_ok(&mut self, m: ConnectionStartOk) -> Result<(), ConnectionError> {
        if let Some(lepus_protocol::FieldValue::Table(caps)) = m.client_properties.get("capabilities") {
            self.client_capabilities = caps.clone();
        }
        self.client_properties = m.client_properties;
        let refusal = || {
            let text = format!(
                "Login was refused using authentication mechanism {}. For details see the broker logfile.",
                m.mechanism
            );
            ConnectionError::AuthFailure(text)
        };
        let (source, now_ms) = (self.peer.ip(), self.shared.broker.clock().now_ms());
        if !self.shared.login_guard.allows(source, now_ms) {
            tracing::warn!(connection = self.id, peer = %self.peer, "login refused unchecked: too many failed logins from this address in the last minute");
            return Err(refusal());
        }
        let users = self.shared.broker.users();
        let result =
            crate::auth::authenticate(&users, m.mechanism.as_bytes(), &m.response.0, self.peer.ip(), &self.external);
        self.impersonator = result
            .as_ref()
            .ok()
            .and_then(|name| users.get(name))
            .is_some_and(|u| u.tags.iter().any(|t| t == "impersonator"));
        drop(users);
        match result {
            Ok(name) => {
                self.user = name;
                self.auth_mechanism = mechanism_name(m.mechanism.as_bytes());
                self.phase = Phase::TuneOk;
                let c = &self.shared.limits;
                let tune =
                    ConnectionTune { channel_max: c.channel_max, frame_max: c.frame_max, heartbeat: c.heartbeat_s };
                self.send(0, tune);
                Ok(())
            }
            Err(crate::auth::AuthError::UnknownMechanism(mech)) => {
                Err(ConnectionError::CommandInvalid(format!("unknown authentication mechanism '{mech}'")))
            }
            Err(e) => {
                tracing::warn!(connection = self.id, peer = %self.peer, mechanism = %m.mechanism.to_string().escape_debug(), "login refused: {e}");
                if self.shared.login_guard.failed(source, now_ms) {
                    let limit = self.shared.limits.login_failures_per_minute;
                    tracing::warn!(peer = %self.peer, limit, "failed-login limit reached (login_failures_per_minute): this address's logins are refused for the rest of the minute");
                }
                Err(refusal())
            }
        }
    }

    fn on_tune_ok(&mut self, m: ConnectionTuneOk) -> Result<(), ConnectionError> {
        let c = &self.shared.limits;
        negotiated("frame_max", m.frame_max as u64, FRAME_MIN_SIZE as u64, c.frame_max as u64)?;
        negotiated("channel_max", m.channel_max as u64, 1, c.channel_max as u64)?;
        self.frame_max = m.frame_max;
        self.channel_max = m.channel_max;
        self.heartbeat = Heartbeat::new(m.heartbeat, self.now_ms());
        self.phase = Phase::Open;
        Ok(())
    }

    fn on_open(&mut self, m: ConnectionOpen) -> Result<(), ConnectionError> {
        let vhost = m.virtual_host.to_string();
        let Some(vhost_ref) = self.shared.broker.vhost(&vhost) else {
            return Err(ConnectionError::NotAllowed(format!("vhost {vhost} not found")));
        };
        self.vhost = vhost;
        self.access = self.shared.broker.access(&self.user, &self.vhost);
        if !self.access.may_enter() {
            tracing::warn!(connection = self.id, peer = %self.peer, user = ?self.user, vhost = ?self.vhost, "connection refused: the user has no permissions in the vhost");
            return Err(ConnectionError::NotAllowed(format!(
                "access to vhost '{}' refused for user '{}'",
                self.vhost, self.user
            )));
        }
        self.register(vhost_ref.limits().max_connections)?;
        self.publisher = Some(self.shared.broker.publisher(vhost_ref));
        self.send(0, ConnectionOpenOk { known_hosts: ShortStr::default() });
        self.handshake_permit = None;
        self.phase = Phase::Running;
        self.heartbeat.on_read(self.now_ms());
        tracing::info!(connection = self.id, peer = %self.peer, user = ?self.user, vhost = ?self.vhost, "connection opened");
        Ok(())
    }

    /// Enters the connection in the broker's registry, if the node (`connection_max`), its
    /// vhost and its user are under their connection limits; else 530 with RabbitMQ's text.
    fn register(&mut self, vhost_max: Option<u32>) -> Result<(), ConnectionError> {
        let broker = &self.shared.broker;
        let admission = Admission {
            node_max: self.shared.limits.connection_max,
            vhost_max,
            user_max: broker.user_limits(&self.user).max_connections,
        };
        let info = ConnectionInfo {
            id: self.id,
            peer: self.peer,
            protocol: "AMQP 0-9-1",
            user: self.user.clone(),
            vhost: self.vhost.clone(),
            client_properties: std::mem::take(&mut self.client_properties),
            connected_at_ms: broker.clock().now_ms(),
            channels: Default::default(),
            channel_list: Default::default(),
            stats: Counters::default(),
            quorum_stats: Counters::default(),
            sizes: Default::default(),
            io: Default::default(),
            closer: Closer::new(Box::new(NotifyWake(self.notify.clone()))),
            alarm_blocked: Default::default(),
            negotiated: Negotiated {
                auth_mechanism: self.auth_mechanism,
                channel_max: self.channel_max,
                frame_max: self.frame_max,
                heartbeat_s: u16::try_from(self.heartbeat.interval_s()).unwrap_or(u16::MAX),
                tls: self.tls.take(),
            },
        };
        let refusal = match broker.connections().admit(info, admission) {
            Ok(info) => {
                info.io.publish(&self.io);
                self.info = Some(info);
                return Ok(());
            }
            Err(refusal) => refusal,
        };
        let (limit, text) = match refusal {
            Refusal::Node(max) => {
                ("connection_max", format!("connection refused: node connection limit ({max}) is reached"))
            }
            Refusal::Vhost(max) => (
                "vhost max-connections",
                format!(
                    "access to vhost '{}' refused for user '{}': connection limit ({max}) is reached",
                    self.vhost, self.user
                ),
            ),
            Refusal::User(max) => (
                "user max-connections",
                format!("Connection refused for user '{}': user connection limit ({max}) is reached", self.user),
            ),
        };
        tracing::warn!(connection = self.id, peer = %self.peer, user = ?self.user, vhost = ?self.vhost, limit, "connection refused: {}", text.escape_debug());
        Err(ConnectionError::NotAllowed(text))
    }

    /// The user's [`Access`](lepus_broker::permissions::Access) in the vhost, taken again if
    /// permissions changed since it was taken.
    pub(super) fn access(&mut self) -> &lepus_broker::permissions::Access {
        let version = self.shared.broker.permissions_version();
        if self.access.version() != version {
            self.access = self.shared.broker.access(&self.user, &self.vhost);
            self.write_allowed = None;
        }
        &self.access
    }

    /// A user's `max-channels` (RabbitMQ 3.11): counted over all the user's connections.
    fn check_user_channels(&self) -> Result<(), ConnectionError> {
        let Some(max) = self.shared.broker.user_limits(&self.user).max_channels else { return Ok(()) };
        if self.shared.broker.connections().user_channels(&self.user) < u64::from(max) {
            return Ok(());
        }
        tracing::warn!(connection = self.id, peer = %self.peer, user = ?self.user, limit = max, "channel refused: user max-channels reached");
        Err(ConnectionError::NotAllowed(format!(
            "number of channels opened for user '{}' has reached the maximum allowed user limit of ({max})",
            self.user
        )))
    }

    /// Publishes the counts and gauges of the channels that changed since the last call to
    /// their registry records (once per turn of the connection's loop: per input batch or
    /// outlet drain, not per message).
    fn publish_channel_stats(&mut self) {
        if self.channels_due.is_empty() {
            return;
        }
        for channel in self.channels_due.drain(..) {
            if let Some(ch) = self.channels.get_mut(&channel) {
                ch.publish_stats();
            }
        }
    }

    /// Notes that `channel`'s gauges changed (consumers, qos, modes, settles): they are
    /// published with its counts at the end of this turn.
    fn touch_channel(&mut self, channel: u16) {
        if let Some(ch) = self.channels.get_mut(&channel)
            && ch.tally.touch()
        {
            self.channels_due.push(channel);
        }
    }

    /// Counts `n` of `stat` on `channel` (published at the end of this turn).
    fn count_channel(&mut self, channel: u16, stat: ChannelStat, n: u64) {
        if let Some(ch) = self.channels.get_mut(&channel)
            && ch.tally.count(stat, n)
        {
            self.channels_due.push(channel);
        }
    }

    /// Adds to this connection's counters (nothing before it is open).
    #[inline]
    fn count(&self, stat: Stat, n: u64) {
        if let Some(info) = &self.info {
            info.stats.add(stat, n);
        }
    }

    /// Adds to this connection's counters what concerns `queue`, and to its quorum counters
    /// too for a quorum queue.
    #[inline]
    fn count_at(&self, queue: Option<&lepus_broker::Queue>, stat: Stat, n: u64) {
        if let Some(info) = &self.info {
            info.stats.add(stat, n);
            if queue.is_some_and(|q| q.queue_type == lepus_broker::args::QueueType::Quorum) {
                info.quorum_stats.add(stat, n);
            }
        }
    }

    fn on_channel_method(&mut self, channel: u16, method: Method) -> Result<(), Exception> {
        let (class_id, method_id) = method.ids();
        let tag = |error: ConnectionError| Exception::Connection { error, class_id, method_id };
        match self.phase {
            Phase::Running => {}
            Phase::Closing => return Ok(()),
            phase => {
                let text = format!("method frame on channel {channel} in connection state {}", phase.name());
                return Err(tag(ConnectionError::UnexpectedFrame(text)));
            }
        }
        if let Method::ChannelOpen(_) = method {
            if channel > self.channel_max {
                return Err(tag(ConnectionError::ChannelOutOfRange { channel, channel_max: self.channel_max }));
            }
            if self.channels.contains_key(&channel) {
                return Err(tag(ConnectionError::ChannelAlreadyOpen(channel)));
            }
            self.check_user_channels().map_err(tag)?;
            let record = match &self.info {
                Some(info) => {
                    self.shared.broker.connections().channel_opened();
                    info.open_channel(channel)
                }
                None => Arc::new(lepus_broker::channel_stats::ChannelStats::new(channel)),
            };
            self.channels.insert(channel, Channel::new(record));
            self.send(channel, ChannelOpenOk { channel_id: LongStr::default() });
            return Ok(());
        }
        let Some(ch) = self.channels.get(&channel) else {
            return Err(tag(ConnectionError::ChannelNotOpen(channel)));
        };
        if ch.phase == ChannelPhase::Closing {
            // After our channel.close, only close / close-ok mean anything (AMQP 0-9-1 §4.2.4).
            match method {
                Method::ChannelCloseOk(_) => self.release_channel(channel),
                Method::ChannelClose(_) => self.send(channel, ChannelCloseOk {}),
                _ => {}
            }
            return Ok(());
        }
        if ch.assembling.is_some() {
            let text = "expected content header for class 60, got non content header frame instead";
            return Err(tag(ConnectionError::UnexpectedFrame(text.into())));
        }
        match method {
            Method::ChannelClose(_) => {
                // The client discards what we send on the channel after its close: no-ack
                // deliveries not written yet go back (nothing more is assigned to it first).
                ch.gate.paused.store(true, Ordering::Release);
                self.requeue_unwritten(Some(channel));
                self.release_channel(channel);
                self.reply_after_release(release::Reply::Method(channel, ChannelCloseOk {}.into()));
                Ok(())
            }
            Method::ChannelCloseOk(_) | Method::ChannelFlowOk(_) => Ok(()),
            // RabbitMQ 3.x refuses a client's request to stop deliveries (a connection
            // error); 4.x dropped it. Clients' own suites rely on the 540.
            Method::ChannelFlow(m) if !m.active => Err(tag(ConnectionError::NotImplemented("active=false".into()))),
            Method::ChannelFlow(m) => {
                self.set_flow(channel, m.active);
                self.send(channel, ChannelFlowOk { active: m.active });
                Ok(())
            }
            m => self.on_model_method(channel, m).map_err(|f| f.tag(channel, class_id, method_id)),
        }
    }

    /// Methods of the exchange, queue, basic, confirm and tx classes on an open channel.
    fn on_model_method(&mut self, channel: u16, method: Method) -> Result<(), Fail> {
        match method {
            Method::ExchangeDeclare(m) => self.exchange_declare(channel, m),
            Method::ExchangeDelete(m) => self.exchange_delete(channel, m),
            Method::ExchangeBind(m) => self.exchange_bind(channel, m),
            Method::ExchangeUnbind(m) => self.exchange_unbind(channel, m),
            Method::QueueDeclare(m) => self.queue_declare(channel, m),
            Method::QueueBind(m) => self.queue_bind(channel, m),
            Method::QueueUnbind(m) => self.queue_unbind(channel, m),
            Method::QueuePurge(m) => self.queue_purge(channel, m),
            Method::QueueDelete(m) => self.queue_delete(channel, m),
            Method::BasicQos(m) => self.basic_qos(channel, m),
            Method::BasicConsume(m) => self.basic_consume(channel, m),
            Method::BasicCancel(m) => self.basic_cancel(channel, m),
            Method::BasicPublish(m) => self.basic_publish(channel, m),
            Method::BasicGet(m) => self.basic_get(channel, m),
            Method::BasicAck(m) => self.settle(channel, m.delivery_tag, m.multiple, crate::channel::Settle::Ack),
            Method::BasicNack(m) => self.settle(channel, m.delivery_tag, m.multiple, settle_kind(m.requeue)),
            Method::BasicReject(m) => self.settle(channel, m.delivery_tag, false, settle_kind(m.requeue)),
            Method::BasicRecover(m) => {
                self.basic_recover(channel, m.requeue)?;
                self.send(channel, BasicRecoverOk {});
                Ok(())
            }
            Method::BasicRecoverAsync(m) => self.basic_recover(channel, m.requeue),
            Method::ConfirmSelect(m) => self.confirm_select(channel, m),
            Method::TxSelect(_) => self.tx_select(channel),
            Method::TxCommit(_) => self.tx_commit(channel),
            Method::TxRollback(_) => self.tx_rollback(channel),
            m => Err(ConnectionError::CommandInvalid(format!("unimplemented method {}", m.name())).into()),
        }
    }

    fn on_content_frame(&mut self, frame: Frame) -> Result<(), Exception> {
        let channel = frame.channel;
        match self.channels.get(&channel) {
            Some(ch) if ch.phase == ChannelPhase::Closing => Ok(()),
            Some(ch) if ch.assembling.is_some() => self.on_content(channel, frame),
            Some(_) => {
                Err(ConnectionError::UnexpectedFrame("expected method frame, got non method frame instead".into())
                    .into())
            }
            None if self.phase == Phase::Closing => Ok(()),
            None => Err(ConnectionError::ChannelNotOpen(channel).into()),
        }
    }

    fn on_exception(&mut self, e: Exception) {
        match e {
            Exception::Channel { error, channel, class_id, method_id } => {
                tracing::warn!(
                    connection = self.id,
                    channel,
                    code = error.reply_code(),
                    "channel error: {}",
                    error.to_string().escape_debug()
                );
                if self.channels.contains_key(&channel) {
                    self.release_channel_resources(channel);
                    if let Some(ch) = self.channels.get_mut(&channel) {
                        ch.phase = ChannelPhase::Closing;
                    }
                }
                let close = ChannelClose {
                    reply_code: error.reply_code(),
                    reply_text: ShortStr::truncating(&error.reply_text()),
                    class_id,
                    method_id,
                };
                self.send(channel, close);
            }
            Exception::Connection { error, class_id, method_id } => self.fail(error, class_id, method_id),
        }
    }

    /// Closes the connection because of `error`.
    fn fail(&mut self, error: ConnectionError, class_id: u16, method_id: u16) {
        if self.phase == Phase::Closing || self.phase == Phase::Closed {
            return;
        }
        tracing::warn!(connection = self.id, peer = %self.peer, phase = self.phase.name(), code = error.reply_code(), "closing connection: {}", error.to_string().escape_debug());
        if let ConnectionError::AuthFailure(_) = error {
            // The refusal waits: a password guesser gets one answer per delay per socket (and
            // the sockets before `connection.open` are a bounded pool).
            let delay_ms = self.shared.limits.login_failure_delay_ms;
            if delay_ms > 0 {
                self.hold_until = Some(Instant::now() + Duration::from_millis(delay_ms));
            }
            // RabbitMQ sends the close only to clients that announce
            // authentication_failure_close; the others just see the socket close.
            let announced = self.client_capabilities.get("authentication_failure_close").and_then(|v| v.as_bool());
            if announced != Some(true) {
                self.phase = Phase::Closed;
                self.stop_reading = true;
                return;
            }
        }
        if error.is_fatal_framing() {
            self.stop_reading = true;
        }
        self.send_connection_close(&error, class_id, method_id);
        if let (Some(until), Some(deadline_ms)) = (self.hold_until, self.closing_deadline_ms.as_mut()) {
            // The close-ok wait starts once the held answer is out.
            *deadline_ms += until.saturating_duration_since(Instant::now()).as_millis() as u64;
        }
        if self.stop_reading {
            self.phase = Phase::Closed;
        }
    }

    fn send_connection_close(&mut self, error: &ConnectionError, class_id: u16, method_id: u16) {
        self.release_all_channels();
        let close = ConnectionClose {
            reply_code: error.reply_code(),
            reply_text: ShortStr::truncating(&error.reply_text()),
            class_id,
            method_id,
        };
        self.send(0, close);
        self.phase = Phase::Closing;
        self.closing_deadline_ms = Some(self.now_ms().saturating_add(self.shared.limits.close_timeout_ms));
    }

    /// Releases a channel's consumers and unacked deliveries, and forgets it.
    fn release_channel(&mut self, channel: u16) {
        self.release_channel_resources(channel);
        self.channels.remove(&channel);
        if let Some(info) = &self.info {
            info.close_channel(channel);
        }
    }

    /// Requeues the no-ack deliveries (of `channel`, or all) not yet written to the socket.
    fn requeue_unwritten(&mut self, channel: Option<u16>) {
        let requeued = self.unwritten.requeue(channel);
        if requeued > 0 {
            tracing::info!(connection = self.id, peer = %self.peer, channel, requeued, "no-ack deliveries never written to the socket requeued");
        }
    }

    /// The connection is ending (the client closed it, or it is gone): nothing more is
    /// assigned to its consumers or encoded for them, what was not written goes back to the
    /// queues (while the consumers are still attached, so it keeps its place ahead of later
    /// messages), and every channel is released.
    fn release_connection(&mut self) {
        self.quiesce();
        self.requeue_unwritten(None);
        self.release_all_channels();
    }

    fn quiesce(&mut self) {
        // Nothing more goes to any channel while each is released in turn: a queue whose
        // single active consumer was on one of them hands over to a consumer elsewhere, not
        // to one on a channel about to close.
        for ch in self.channels.values() {
            ch.gate.paused.store(true, Ordering::Release);
        }
        for route in self.consumer_routes.values_mut() {
            route.live = false;
        }
    }

    fn release_all_channels(&mut self) {
        self.quiesce();
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.release_channel(id);
        }
    }
}

/// If the task ends without its orderly end (a panic, an abort), queues stop assigning to the
/// connection and the registry forgets it. The orderly end in `run` has done both already.
impl Drop for Connection {
    fn drop(&mut self) {
        self.outlet.close();
        if self.info.take().is_some() {
            self.shared.broker.connections().deregister(self.id);
        }
    }
}

/// Room for several large frames when one (no larger than `frame_limit`, which the parser
/// enforces) is waiting to be completed (see [`LARGE_FRAME_MIN`]). True if one was.
fn grow_for_large_frames(inbuf: &mut BytesMut, frame_limit: usize) -> bool {
    let Some(size) = inbuf.get(3..7) else { return false };
    let frame_len = (u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize).saturating_add(FRAME_OVERHEAD);
    if !(LARGE_FRAME_MIN..=frame_limit).contains(&frame_len) || frame_len <= inbuf.len() {
        return false;
    }
    let want = frame_len.saturating_mul(READ_BUFFER_FRAMES).min(READ_BUFFER_LARGE_MAX).max(frame_len);
    if inbuf.capacity() < want {
        inbuf.reserve(want - inbuf.len());
    }
    true
}

fn settle_kind(requeue: bool) -> crate::channel::Settle {
    if requeue { crate::channel::Settle::Requeue } else { crate::channel::Settle::Discard }
}

/// RabbitMQ's tune-ok rule: a client value must be at least `min` (unless 0) and, when the
/// server has a limit, neither 0 (unlimited) nor above it.
fn negotiated(field: &str, client: u64, min: u64, server: u64) -> Result<(), ConnectionError> {
    if client != 0 && client < min {
        return Err(ConnectionError::NotAllowed(format!(
            "negotiated {field} = {client} is lower than the minimum allowed value ({min})"
        )));
    }
    if server != 0 && (client == 0 || client > server) {
        return Err(ConnectionError::NotAllowed(format!(
            "negotiated {field} = {client} is higher than the maximum allowed value ({server})"
        )));
    }
    Ok(())
}

/// RabbitMQ's text for a frame type that is not allowed where it arrived.
fn unexpected_frame(frame: &Frame) -> ConnectionError {
    let octet = match frame.frame_type {
        FrameType::Method => FRAME_METHOD,
        FrameType::Header => FRAME_HEADER,
        FrameType::Body => FRAME_BODY,
        FrameType::Heartbeat => FRAME_HEARTBEAT,
    };
    ConnectionError::UnexpectedFrame(format!("type {octet} on channel {}", frame.channel))
}

/// The class and method ids at the start of a method payload, for error replies.
fn method_ids(payload: &[u8]) -> (u16, u16) {
    match payload {
        [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
        _ => (0, 0),
    }
}

/// Whether `inbuf` starts with message content: a `basic.publish` method frame, or a content
/// header or body frame (of a publish already begun). What a resource alarm holds back.
fn starts_with_content(inbuf: &[u8]) -> bool {
    const BASIC_PUBLISH: [u8; 4] = [0, 60, 0, 40];
    match inbuf.first() {
        Some(&FRAME_HEADER | &FRAME_BODY) => true,
        Some(&FRAME_METHOD) => inbuf.get(FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + 4) == Some(&BASIC_PUBLISH[..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_a_publish_method_or_a_header_or_body_frame() {
        let mut publish = vec![FRAME_METHOD, 0, 1, 0, 0, 0, 20, 0, 60, 0, 40];
        assert!(starts_with_content(&publish));
        publish[10] = 80; // basic.ack
        assert!(!starts_with_content(&publish));
        assert!(starts_with_content(&[FRAME_HEADER, 0, 1]));
        assert!(starts_with_content(&[FRAME_BODY]));
        assert!(!starts_with_content(&[FRAME_HEARTBEAT, 0, 0]));
        assert!(!starts_with_content(&[FRAME_METHOD, 0, 1, 0, 0]), "too short to tell: not held");
        assert!(!starts_with_content(&[]));
    }

    /// The first bytes of a body frame on channel 1 whose payload is `payload` bytes long.
    fn partial_frame(payload: u32, present: usize) -> BytesMut {
        let mut b = BytesMut::with_capacity(READ_BUFFER_INITIAL);
        b.extend_from_slice(&[3, 0, 1]);
        b.extend_from_slice(&payload.to_be_bytes());
        b.resize(present.max(7), 0);
        b
    }

    #[test]
    fn a_pending_large_frame_grows_the_buffer_to_several_frames() {
        let limit = 131_072 + FRAME_OVERHEAD;
        let mut b = partial_frame(65_536, 1_000);
        assert!(grow_for_large_frames(&mut b, limit));
        assert!(b.capacity() >= (65_536 + FRAME_OVERHEAD) * READ_BUFFER_FRAMES);
        assert!(b.capacity() <= READ_BUFFER_LARGE_MAX * 2, "bounded: {}", b.capacity());
        assert_eq!(b.len(), 1_000, "growing keeps the bytes");
        assert_eq!(&b[3..7], &65_536u32.to_be_bytes());
    }

    #[test]
    fn growth_is_capped_and_never_below_one_frame() {
        let limit = 1_048_576 + FRAME_OVERHEAD;
        let mut b = partial_frame(1_048_576, 10);
        assert!(grow_for_large_frames(&mut b, limit));
        assert!(b.capacity() >= 1_048_576 + FRAME_OVERHEAD);
        assert!(b.capacity() < 2 * READ_BUFFER_LARGE_MAX + 2 * FRAME_OVERHEAD);
    }

    #[test]
    fn small_complete_oversized_or_unknown_frames_leave_the_buffer_alone() {
        let limit = 131_072 + FRAME_OVERHEAD;
        for (payload, present) in [
            (1_000, 10),          // small frame
            (65_536, 65_536 + 8), // large but complete: the parser takes it
            (1 << 30, 100),       // over the limit: the parser refuses it
        ] {
            let mut b = partial_frame(payload, present);
            let capacity = b.capacity();
            assert!(!grow_for_large_frames(&mut b, limit), "payload {payload}");
            assert_eq!(b.capacity(), capacity, "payload {payload}");
        }
        let mut short = BytesMut::from(&[3u8, 0, 1, 0][..]);
        assert!(!grow_for_large_frames(&mut short, limit), "no size yet");
    }
}
