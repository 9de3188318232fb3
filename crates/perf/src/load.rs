//! The load itself: what to declare, the producer loop (pre-encoded frames, batched writes,
//! a confirm window, optional fixed rate) and the consumer loop (verification, latency,
//! multi-acks).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use lepus_protocol::frame::{write_body, write_content_header, write_method};
use lepus_protocol::method::*;
use lepus_protocol::{BasicProperties, FieldTable, FieldValue, Frame, FrameType, Method, ShortStr};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};

use crate::Args;
use crate::client::{Client, FrameReader, Result, WriteHalf};
use crate::retry;
use crate::stats::{ConsumerReport, Counters, ProducerReport};
use crate::topic::{self, Routes};
use crate::uri::AmqpUri;

/// Producer id (2 bytes) + sequence number (6 bytes) + send time in ns (8 bytes).
pub const STAMP_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The default exchange, routing key = queue name.
    Direct,
    Fanout,
    Topic,
}

/// Names and routing of a run.
pub struct Plan {
    pub routing: Routing,
    pub args: Args,
    queues: Vec<String>,
    exchange: String,
    /// Topic runs: (queue index, binding pattern).
    topic_bindings: Vec<(usize, String)>,
    /// Topic runs: the queues each key reaches.
    pub routes: Option<Routes>,
}

fn s(text: &str) -> ShortStr {
    ShortStr::truncating(text)
}

impl Plan {
    pub fn new(args: &Args, routing: Routing) -> Plan {
        let queues = (0..args.queues.max(1)).map(|i| format!("{}-{i}", args.queue_prefix)).collect();
        let exchange = match routing {
            Routing::Direct => String::new(),
            Routing::Fanout => format!("{}-fanout", args.queue_prefix),
            Routing::Topic => format!("{}-topic", args.queue_prefix),
        };
        let topic_bindings = match routing {
            Routing::Topic => {
                (0..args.topic_bindings.max(1)).map(|n| (n % args.queues.max(1), topic::pattern(n))).collect()
            }
            _ => Vec::new(),
        };
        let routes = (routing == Routing::Topic).then(|| Routes::new(args.queues.max(1), &topic_bindings));
        Plan { routing, args: args.clone(), queues, exchange, topic_bindings, routes }
    }

    pub async fn declare(&self, c: &mut Client) -> Result<()> {
        if self.routing != Routing::Direct {
            let kind = if self.routing == Routing::Fanout { "fanout" } else { "topic" };
            let declare = ExchangeDeclare {
                exchange: s(&self.exchange),
                kind: s(kind),
                durable: self.args.durable,
                ..Default::default()
            };
            c.call(declare, "exchange.declare-ok").await?;
        }
        let arguments = queue_arguments(&self.args.queue_args)?;
        for q in &self.queues {
            let mut arguments = arguments.clone();
            if self.args.retry_loop.is_some() {
                retry::declare_delay_queue(c, q, &self.args).await?;
                retry::add_work_queue_arguments(&mut arguments, q);
            }
            let declare = QueueDeclare { queue: s(q), durable: self.args.durable, arguments, ..Default::default() };
            c.call(declare, "queue.declare-ok").await?;
            if !self.args.no_purge {
                c.call(QueuePurge { queue: s(q), ..Default::default() }, "queue.purge-ok").await?;
            }
            if self.routing == Routing::Fanout {
                let bind = QueueBind { queue: s(q), exchange: s(&self.exchange), ..Default::default() };
                c.call(bind, "queue.bind-ok").await?;
            }
        }
        for (q, pattern) in &self.topic_bindings {
            let bind = QueueBind {
                queue: s(&self.queues[*q]),
                exchange: s(&self.exchange),
                routing_key: s(pattern),
                ..Default::default()
            };
            c.call(bind, "queue.bind-ok").await?;
        }
        Ok(())
    }

    /// Ready messages left in the run's queues (after consumers closed, their unacked
    /// messages are back in the queues too).
    pub async fn remaining(&self, c: &mut Client) -> Result<u64> {
        let mut n = 0;
        for q in self.all_queues() {
            let declare = QueueDeclare { queue: s(&q), passive: true, ..Default::default() };
            if let Method::QueueDeclareOk(ok) = c.call(declare, "queue.declare-ok").await? {
                n += ok.message_count as u64;
            }
        }
        Ok(n)
    }

    pub async fn cleanup(&self, c: &mut Client) -> Result<()> {
        for q in self.all_queues() {
            c.call(QueueDelete { queue: s(&q), ..Default::default() }, "queue.delete-ok").await?;
        }
        if self.routing != Routing::Direct {
            c.call(ExchangeDelete { exchange: s(&self.exchange), ..Default::default() }, "exchange.delete-ok").await?;
        }
        Ok(())
    }

    /// The run's queues and, in a retry loop, their delay queues.
    fn all_queues(&self) -> Vec<String> {
        let delay = self.args.retry_loop.is_some().then(|| self.queues.iter().map(|q| retry::delay_queue(q)));
        self.queues.iter().cloned().chain(delay.into_iter().flatten()).collect()
    }

    /// The name of queue `i`.
    pub fn queue(&self, i: usize) -> &str {
        &self.queues[i % self.queues.len()]
    }

    /// Queues that receive every message of producer `p` (topic runs: see [`Plan::routes`]).
    pub fn queues_of(&self, p: usize) -> Vec<usize> {
        match self.routing {
            Routing::Direct => vec![p % self.queues.len()],
            Routing::Fanout => (0..self.queues.len()).collect(),
            Routing::Topic => Vec::new(),
        }
    }

    /// Deliveries per publish: 1 for direct, the queue count for fanout, the mean over the
    /// keys for topic.
    pub fn fanout(&self) -> f64 {
        match (&self.routes, self.routing) {
            (Some(routes), _) => routes.mean_fanout(),
            (None, Routing::Fanout) => self.queues.len() as f64,
            (None, _) => 1.0,
        }
    }

    /// Deliveries due for what the producers sent (nacked messages excluded; for topic runs a
    /// nack's key is not known, so each counts as a mean fan-out; with `--expire-every`, only
    /// the messages without an expiration).
    pub fn expected_total(&self, producers: &[ProducerReport]) -> u64 {
        let sent: u64 = producers.iter().map(|p| self.survivors(p.sent) - p.nacked.min(self.survivors(p.sent))).sum();
        match (&self.routes, self.routing) {
            (Some(routes), _) => producers
                .iter()
                .map(|p| {
                    routes.deliveries(p.id, p.sent).saturating_sub((p.nacked as f64 * routes.mean_fanout()) as u64)
                })
                .sum(),
            (None, Routing::Fanout) => sent * self.queues.len() as u64,
            (None, _) => sent,
        }
    }

    /// Whether message `seq` of a producer carries an expiration (`--expire-every`).
    pub fn expires(&self, seq: u64) -> bool {
        self.args.expire_every > 0 && seq.is_multiple_of(self.args.expire_every)
    }

    /// How many of sequence numbers `1..=sent` carry no expiration.
    pub fn survivors(&self, sent: u64) -> u64 {
        sent - sent.checked_div(self.args.expire_every).unwrap_or(0)
    }

    /// The pre-encoded `basic.publish` frames producer `p` chooses from.
    fn publish_frames(&self, p: usize) -> Vec<Vec<u8>> {
        let keys: Vec<String> = match self.routing {
            Routing::Direct => vec![self.queues[p % self.queues.len()].clone()],
            Routing::Fanout => vec![String::new()],
            Routing::Topic => (0..topic::KEYS).map(topic::key).collect(),
        };
        keys.iter()
            .map(|k| {
                let mut out = BytesMut::new();
                let m = BasicPublish { exchange: s(&self.exchange), routing_key: s(k), ..Default::default() };
                write_method(&mut out, 1, &m.into());
                out.to_vec()
            })
            .collect()
    }
}

/// Publisher-confirm bookkeeping: which delivery tags are settled.
#[derive(Default)]
pub(crate) struct Tracker {
    /// Every tag below this is settled.
    settled_below: AtomicU64,
    nacked: AtomicU64,
    notify: Notify,
}

impl Tracker {
    pub(crate) fn new() -> Arc<Tracker> {
        Arc::new(Tracker { settled_below: AtomicU64::new(1), ..Default::default() })
    }

    /// How many more of `n` messages a confirm window of `window` takes after `sent`; waits a
    /// little for a confirm (and answers 0) when it is full. Unlimited with no window.
    pub(crate) async fn room(&self, sent: u64, window: u64, n: u64) -> u64 {
        if window == 0 {
            return n;
        }
        let outstanding = sent.saturating_sub(self.settled_below.load(Ordering::Acquire).saturating_sub(1));
        if outstanding >= window {
            let _ = tokio::time::timeout(Duration::from_millis(10), self.notify.notified()).await;
            return 0;
        }
        n.min(window - outstanding)
    }

    /// Waits until every one of `sent` messages is confirmed, or `timeout` passed.
    pub(crate) async fn settle(&self, sent: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.settled_below.load(Ordering::Acquire) <= sent && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(10), self.notify.notified()).await;
        }
    }

    pub(crate) fn nacked(&self) -> u64 {
        self.nacked.load(Ordering::Acquire)
    }
}

/// Reads confirms and returns for a producer until EOF.
pub(crate) async fn confirm_reader(mut reader: FrameReader, tracker: Arc<Tracker>, counters: Arc<Counters>) {
    let mut base = 1u64;
    let mut marks: VecDeque<bool> = VecDeque::new();
    let mark = |tag: u64, marks: &mut VecDeque<bool>, base: u64| {
        if tag >= base {
            let i = (tag - base) as usize;
            if marks.len() <= i {
                marks.resize(i + 1, false);
            }
            marks[i] = true;
        }
    };
    while let Ok(Some(frame)) = reader.next().await {
        if frame.frame_type != FrameType::Method {
            continue;
        }
        let (tag, multiple, nack) = match Method::decode(frame.payload) {
            Ok(Method::BasicAck(a)) => (a.delivery_tag, a.multiple, false),
            Ok(Method::BasicNack(n)) => (n.delivery_tag, n.multiple, true),
            Ok(Method::BasicReturn(_)) => {
                counters.returned.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Method::ConnectionCloseOk(_)) => break,
            Ok(Method::ConnectionClose(c)) => {
                eprintln!("lepus-perf: producer connection closed: {} {}", c.reply_code, c.reply_text);
                break;
            }
            _ => continue,
        };
        let first = if multiple { base } else { tag };
        let n = tag.saturating_sub(first) + 1;
        for t in first..=tag {
            mark(t, &mut marks, base);
        }
        if nack {
            tracker.nacked.fetch_add(n, Ordering::Relaxed);
            counters.nacked.fetch_add(n, Ordering::Relaxed);
        } else {
            counters.confirmed.fetch_add(n, Ordering::Relaxed);
        }
        while marks.front() == Some(&true) {
            marks.pop_front();
            base += 1;
        }
        tracker.settled_below.store(base, Ordering::Release);
        tracker.notify.notify_one();
    }
    tracker.settled_below.store(u64::MAX, Ordering::Release);
    tracker.notify.notify_one();
}

pub(crate) fn stamp(body: &mut [u8], producer: u16, seq: u64, now_ns: u64) {
    if body.len() >= STAMP_LEN {
        body[..2].copy_from_slice(&producer.to_be_bytes());
        body[2..8].copy_from_slice(&seq.to_be_bytes()[2..]);
        body[8..16].copy_from_slice(&now_ns.to_be_bytes());
    }
}

pub async fn produce(
    id: u16,
    uri: AmqpUri,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    start: Instant,
) -> Result<ProducerReport> {
    let args = &plan.args;
    let mut c = Client::connect(&uri).await?;
    if args.confirm > 0 {
        c.call(ConfirmSelect { no_wait: false }, "confirm.select-ok").await?;
    }
    let frame_max = c.frame_max;
    let Client { reader, mut writer, .. } = c;
    let methods = plan.publish_frames(id as usize);
    let headers = (args.headers > 0).then(|| {
        let mut table = FieldTable::new();
        for i in 0..args.headers {
            let key = ShortStr::try_from(format!("header-{i}").as_str()).unwrap_or_default();
            table.insert(key, FieldValue::from(format!("value of header {i}").as_str()));
        }
        table
    });
    let props =
        BasicProperties { delivery_mode: Some(if args.persistent { 2 } else { 1 }), headers, ..Default::default() };
    let headers = content_headers(args, &props);
    let mut body = vec![0u8; args.size];
    let tracker = Tracker::new();
    let reader_task = tokio::spawn(confirm_reader(reader, tracker.clone(), counters.clone()));
    let mut out = BytesMut::with_capacity(args.batch * (args.size + 64));
    let (mut sent, rate_start) = (0u64, Instant::now());
    loop {
        if counters.stop_producers.load(Ordering::Acquire) || args.pmessages.is_some_and(|m| sent >= m) {
            break;
        }
        let mut n = args.batch.max(1) as u64;
        if let Some(max) = args.pmessages {
            n = n.min(max - sent);
        }
        n = tracker.room(sent, args.confirm, n).await;
        if args.retry_loop.is_some() {
            n = retry::room(&counters, args.retry_window, n).await;
        }
        if n == 0 {
            continue;
        }
        if args.rate > 0 {
            let due = (rate_start.elapsed().as_secs_f64() * args.rate as f64) as u64;
            if due <= sent {
                let next = Duration::from_secs_f64((sent + 1) as f64 / args.rate as f64);
                tokio::time::sleep_until((rate_start + next).into()).await;
                continue;
            }
            n = n.min(due - sent);
        }
        out.clear();
        for _ in 0..n {
            sent += 1;
            let method = if methods.len() > 1 { &methods[topic::key_index(id, sent)] } else { &methods[0] };
            out.put_slice(method);
            out.put_slice(&headers[(sent % headers.len() as u64) as usize]);
            stamp(&mut body, id, sent, start.elapsed().as_nanos() as u64);
            write_body(&mut out, 1, &body, frame_max);
        }
        writer.write_all(&out).await?;
        counters.published.fetch_add(n, Ordering::Relaxed);
    }
    if args.confirm > 0 {
        tracker.settle(sent, Duration::from_secs(args.drain_timeout_s)).await;
    }
    let mut close = BytesMut::new();
    write_method(&mut close, 0, &ConnectionClose { reply_code: 200, ..Default::default() }.into());
    let _ = writer.write_all(&close).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader_task).await;
    Ok(ProducerReport { id, sent, nacked: tracker.nacked() })
}

/// The content headers a producer uses in turn: one per priority level, or with
/// `--expire-every N` N of them, the first with an expiration (so message `seq` has one when
/// `seq % N == 0`), or just one.
fn content_headers(args: &Args, props: &BasicProperties) -> Vec<BytesMut> {
    let variants: Vec<BasicProperties> = if args.priority_levels > 0 {
        (0..args.priority_levels).map(|p| BasicProperties { priority: Some(p), ..props.clone() }).collect()
    } else if args.expire_every > 0 {
        let expiring = BasicProperties { expiration: Some(s(&args.expiration_ms.to_string())), ..props.clone() };
        std::iter::once(expiring).chain((1..args.expire_every).map(|_| props.clone())).collect()
    } else {
        vec![props.clone()]
    };
    variants
        .iter()
        .map(|props| {
            let mut header = BytesMut::new();
            write_content_header(&mut header, 1, args.size as u64, &props.to_raw());
            header
        })
        .collect()
}

/// A connection consuming `queue` (with `args`' prefetch and ack mode); reports to `ready`
/// whether it got there.
pub(crate) async fn open_consumer(
    uri: &AmqpUri,
    args: &Args,
    queue: &str,
    ready: mpsc::Sender<Result<()>>,
) -> Result<Client> {
    let setup = async {
        let mut c = Client::connect(uri).await?;
        if !args.auto_ack && args.prefetch > 0 {
            c.call(BasicQos { prefetch_count: args.prefetch, ..Default::default() }, "basic.qos-ok").await?;
        }
        let consume =
            BasicConsume { queue: s(queue), no_ack: args.auto_ack, arguments: FieldTable::new(), ..Default::default() };
        c.call(consume, "basic.consume-ok").await?;
        Ok::<Client, crate::client::Error>(c)
    };
    match setup.await {
        Ok(c) => {
            let _ = ready.send(Ok(())).await;
            Ok(c)
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string().into())).await;
            Err(e)
        }
    }
}

/// After a consumer has handled what it read: whether to go on (false when told to stop or at
/// EOF), having waited up to 100 ms for more bytes.
pub(crate) async fn keep_reading(reader: &mut FrameReader, counters: &Counters) -> Result<bool> {
    if counters.stop_consumers.load(Ordering::Acquire) {
        return Ok(false);
    }
    match tokio::time::timeout(Duration::from_millis(100), reader.fill()).await {
        Ok(more) => more,
        Err(_) => Ok(true),
    }
}

/// Sends what `out` holds and a `connection.close`, ignoring errors (the end of a run).
pub(crate) async fn close_connection(writer: &mut WriteHalf, out: &mut BytesMut) {
    write_method(out, 0, &ConnectionClose { reply_code: 200, ..Default::default() }.into());
    let _ = writer.write_all(out).await;
}

/// Per-consumer delivery parsing state.
#[derive(Default)]
pub(crate) struct Incoming {
    pub tag: u64,
    pub redelivered: bool,
    pub remaining: u64,
    /// The body's first `STAMP_LEN` bytes.
    pub stamp: Vec<u8>,
}

pub async fn consume(
    j: usize,
    uri: AmqpUri,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    start: Instant,
    ready: mpsc::Sender<Result<()>>,
) -> Result<ConsumerReport> {
    let args = &plan.args;
    let queue = j % plan.queues.len();
    let c = open_consumer(&uri, args, &plan.queues[queue], ready).await?;
    if args.retry_loop.is_some() {
        return retry::consume(j, c, &plan, &counters, start).await;
    }
    let Client { mut reader, mut writer, .. } = c;
    let mut report = ConsumerReport::new(queue);
    let every = match args.prefetch {
        0 => args.multi_ack_every.max(1),
        p => args.multi_ack_every.clamp(1, p as u64),
    };
    let mut incoming = Incoming { stamp: Vec::with_capacity(STAMP_LEN), ..Default::default() };
    let mut last_seq: HashMap<u16, u64> = HashMap::new();
    let (mut unacked, mut acks) = (0u64, BytesMut::new());
    loop {
        let mut got = false;
        while let Some(frame) = reader.try_next()? {
            if on_frame(frame, &mut incoming)? {
                complete(&incoming, &plan, &mut report, &mut last_seq, &counters, start);
                unacked += !args.auto_ack as u64;
                got = true;
            }
        }
        if got {
            counters.last_receive_ns.fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        if unacked >= every {
            write_method(&mut acks, 1, &BasicAck { delivery_tag: incoming.tag, multiple: true }.into());
            writer.write_all(&acks).await?;
            acks.clear();
            unacked = 0;
        }
        if counters.stop_consumers.load(Ordering::Acquire) {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), reader.fill()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(e)) => return Err(e),
            Err(_) if unacked > 0 => {
                write_method(&mut acks, 1, &BasicAck { delivery_tag: incoming.tag, multiple: true }.into());
                writer.write_all(&acks).await?;
                acks.clear();
                unacked = 0;
            }
            Err(_) => {}
        }
    }
    // Settle what was received, so a backlog left in place (`--no-cleanup`) holds only the rest.
    let mut close = BytesMut::new();
    if unacked > 0 {
        write_method(&mut close, 1, &BasicAck { delivery_tag: incoming.tag, multiple: true }.into());
    }
    write_method(&mut close, 0, &ConnectionClose { reply_code: 200, ..Default::default() }.into());
    let _ = writer.write_all(&close).await;
    Ok(report)
}

/// Feeds one frame into the delivery being parsed; true when a message is complete.
pub(crate) fn on_frame(frame: Frame, m: &mut Incoming) -> Result<bool> {
    match frame.frame_type {
        FrameType::Method => {
            if let Some(d) = deliver_of(frame.payload)? {
                m.tag = d.delivery_tag;
                m.redelivered = d.redelivered;
            }
            Ok(false)
        }
        FrameType::Header => {
            m.remaining = lepus_protocol::content::peek_body_size(&frame.payload).unwrap_or(0);
            m.stamp.clear();
            Ok(m.remaining == 0)
        }
        FrameType::Body => Ok(m.on_body(&frame.payload)),
        FrameType::Heartbeat => Ok(false),
    }
}

impl Incoming {
    /// A body frame: keeps the stamp's bytes; true when the body is complete.
    pub(crate) fn on_body(&mut self, payload: &[u8]) -> bool {
        let want = STAMP_LEN.saturating_sub(self.stamp.len()).min(payload.len());
        self.stamp.extend_from_slice(&payload[..want]);
        self.remaining = self.remaining.saturating_sub(payload.len() as u64);
        self.remaining == 0
    }
}

/// A method frame on a consumer's connection: the delivery it starts, if it is one; an error
/// if the broker closed the channel or connection.
pub(crate) fn deliver_of(payload: bytes::Bytes) -> Result<Option<BasicDeliver>> {
    match Method::decode(payload)? {
        Method::BasicDeliver(d) => Ok(Some(d)),
        Method::ConnectionClose(c) => Err(format!("connection closed: {} {}", c.reply_code, c.reply_text).into()),
        Method::ChannelClose(c) => Err(format!("channel closed: {} {}", c.reply_code, c.reply_text).into()),
        _ => Ok(None),
    }
}

/// A body's stamp: (producer, sequence number, the time field); `None` for short bodies.
pub(crate) fn read_stamp(stamp: &[u8]) -> Option<(u16, u64, u64)> {
    if stamp.len() < STAMP_LEN {
        return None;
    }
    let producer = u16::from_be_bytes([stamp[0], stamp[1]]);
    let mut seq_bytes = [0u8; 8];
    seq_bytes[2..].copy_from_slice(&stamp[2..8]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&stamp[8..16]);
    Some((producer, u64::from_be_bytes(seq_bytes), u64::from_be_bytes(ts)))
}

fn complete(
    m: &Incoming,
    plan: &Plan,
    report: &mut ConsumerReport,
    last_seq: &mut HashMap<u16, u64>,
    counters: &Counters,
    start: Instant,
) {
    let stamp = read_stamp(&m.stamp);
    if stamp.is_some_and(|(_, seq, _)| plan.expires(seq)) {
        // Delivered before it expired: counted apart, not verified.
        counters.expiring_received.fetch_add(1, Ordering::Relaxed);
        return;
    }
    report.received += 1;
    counters.received.fetch_add(1, Ordering::Relaxed);
    report.redelivered += m.redelivered as u64;
    let Some((producer, seq, sent_ns)) = stamp else { return };
    let now_ns = start.elapsed().as_nanos() as u64;
    let _ = report.latency_ns.record(now_ns.saturating_sub(sent_ns).max(1));
    if report.seen.entry(producer).or_default().insert(seq) && !m.redelivered {
        report.duplicates += 1;
    }
    if !m.redelivered {
        let last = last_seq.entry(producer).or_insert(0);
        if seq < *last {
            report.reordered += 1;
        }
        *last = (*last).max(seq);
    }
}

/// Prints a progress line every second.
pub async fn progress(counters: Arc<Counters>, start: Instant) {
    let mut last = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = (
            counters.published.load(Ordering::Relaxed),
            counters.confirmed.load(Ordering::Relaxed),
            counters.received.load(Ordering::Relaxed),
        );
        eprintln!(
            "t={:>3}s  published {:>9}/s  confirmed {:>9}/s  received {:>9}/s",
            start.elapsed().as_secs(),
            now.0 - last.0,
            now.1 - last.1,
            now.2 - last.2
        );
        last = now;
    }
}

/// `--queue-arg KEY=VALUE` options as a field table: integers as longs, the rest as strings.
fn queue_arguments(pairs: &[String]) -> Result<FieldTable> {
    let mut table = FieldTable::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("--queue-arg {pair}: expected KEY=VALUE"))?;
        let key = ShortStr::try_from(key).map_err(|_| format!("--queue-arg {pair}: key too long"))?;
        let value = match value.parse::<i64>() {
            Ok(n) => FieldValue::I64(n),
            Err(_) => FieldValue::from(value),
        };
        table.insert(key, value);
    }
    Ok(table)
}
