//! `--delayed N`: N messages through an `x-delayed-message` exchange (`x-delayed-type`
//! direct, durable, bound to the durable queue `<queue-prefix>-0`), each with a random
//! `x-delay` in `0..--max-delay-s` seconds and its due time (the wall clock at publish plus
//! the delay, in µs since the epoch) stamped where other runs stamp the send time.
//!
//! One producer publishes (persistent with `--persistent`, confirms with `-c`) and prints
//! `published: ...` once every message is confirmed, so a script can read the broker's memory
//! with everything pending; one consumer (acking each batch it reads) measures, per delivery,
//! the lateness (delivery time minus due time) and whether it came out of order: a delivery is
//! an order violation when a message due more than `--order-tolerance-ms` later was delivered
//! before it (the tolerance absorbs the publish path's latency: the broker starts a delay when
//! the message arrives, the tool when it is written). `-y 0` only publishes and leaves
//! everything in place; `-x 0` only consumes what an earlier run left (after a broker restart,
//! say), expecting N. The consumer stops when all N arrived, or `--max-delay-s` plus
//! `--drain-timeout-s` after publishing ended (or after it started, consuming only).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use lepus_protocol::frame::{write_body, write_content_header, write_method};
use lepus_protocol::method::*;
use lepus_protocol::{BasicProperties, FieldTable, FieldValue, ShortStr};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::Args;
use crate::client::{Client, Result};
use crate::load::{
    Incoming, STAMP_LEN, Tracker, close_connection, confirm_reader, keep_reading, on_frame, open_consumer, read_stamp,
    stamp,
};
use crate::stats::{self, Counters, SeqSet, Summary};
use crate::uri::AmqpUri;

/// What `--delayed` adds to a summary (flattened into its JSON).
#[derive(Debug, Default, Clone, Serialize)]
pub struct DelayedFigures {
    /// Messages not yet delivered when publishing ended (all N without a consumer).
    /// (The summary's `received` counts distinct messages, `duplicated` the rest.)
    pub pending_at_publish_end: Option<u64>,
    /// When publishing ended (every message confirmed), ms since the epoch.
    pub publish_end_epoch_ms: Option<u64>,
    /// Delivery time minus due time, over the deliveries.
    pub lateness_ms_p50: Option<f64>,
    pub lateness_ms_p99: Option<f64>,
    pub lateness_ms_max: Option<f64>,
    /// Deliveries more than 1 ms before their due time by the tool's clock (a broker's timer
    /// in whole milliseconds may fire up to 1 ms before a due time in µs); lateness 0.
    pub early: u64,
    /// Deliveries after one due more than `order_tolerance_ms` later.
    pub order_violations: u64,
    pub order_tolerance_ms: u64,
    /// The largest (due time of a message delivered earlier) minus (due time of this one).
    pub max_inversion_ms: f64,
    pub first_delivery_epoch_ms: Option<u64>,
    pub last_delivery_epoch_ms: Option<u64>,
    /// The latest due time among the deliveries.
    pub last_due_epoch_ms: Option<u64>,
}

impl DelayedFigures {
    pub fn text(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        format!(
            "\n  delayed: pending at publish end {}, lateness ms p50 {} p99 {} max {}, early {}, \
             order violations {} (tolerance {} ms, largest inversion {:.1} ms)",
            self.pending_at_publish_end.map_or_else(|| "-".into(), |n| n.to_string()),
            ms(self.lateness_ms_p50),
            ms(self.lateness_ms_p99),
            ms(self.lateness_ms_max),
            self.early,
            self.order_violations,
            self.order_tolerance_ms,
            self.max_inversion_ms
        )
    }
}

/// How early a delivery may come without counting as early: the broker's timers work in
/// whole milliseconds, the stamped due time in µs.
const EARLY_SLACK_US: u64 = 1_000;

fn s(text: &str) -> ShortStr {
    ShortStr::truncating(text)
}

fn now_epoch_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The run's exchange and queue.
struct Names {
    exchange: String,
    queue: String,
}

impl Names {
    fn new(args: &Args) -> Names {
        Names { exchange: format!("{}-delayed", args.queue_prefix), queue: format!("{}-0", args.queue_prefix) }
    }

    async fn declare(&self, c: &mut Client, args: &Args) -> Result<()> {
        let declare = ExchangeDeclare {
            exchange: s(&self.exchange),
            kind: s("x-delayed-message"),
            durable: true,
            arguments: FieldTable::new().with("x-delayed-type", "direct"),
            ..Default::default()
        };
        c.call(declare, "exchange.declare-ok").await?;
        c.call(QueueDeclare { queue: s(&self.queue), durable: true, ..Default::default() }, "queue.declare-ok").await?;
        if !args.no_purge {
            c.call(QueuePurge { queue: s(&self.queue), ..Default::default() }, "queue.purge-ok").await?;
        }
        let bind = QueueBind {
            queue: s(&self.queue),
            exchange: s(&self.exchange),
            routing_key: s(&self.queue),
            ..Default::default()
        };
        c.call(bind, "queue.bind-ok").await?;
        Ok(())
    }

    async fn delete(&self, c: &mut Client) -> Result<()> {
        c.call(QueueDelete { queue: s(&self.queue), ..Default::default() }, "queue.delete-ok").await?;
        c.call(ExchangeDelete { exchange: s(&self.exchange), ..Default::default() }, "exchange.delete-ok").await?;
        Ok(())
    }
}

/// Runs `--delayed n`; see the module's documentation.
pub async fn run(args: &Args, uri: &AmqpUri, n: u64) -> Result<Summary> {
    let names = Arc::new(Names::new(args));
    let mut setup = Client::connect(uri).await?;
    names.declare(&mut setup, args).await?;
    let counters = Arc::new(Counters::default());
    let t0 = Instant::now();
    let consumer = if args.consumers > 0 {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1);
        let (a, u, q, c) = (args.clone(), uri.clone(), names.queue.clone(), counters.clone());
        let task = tokio::spawn(async move { consume(a, u, q, c, ready_tx).await });
        ready_rx.recv().await.ok_or("the consumer failed to start")??;
        Some(task)
    } else {
        None
    };
    let mut figures = DelayedFigures { order_tolerance_ms: args.order_tolerance_ms, ..Default::default() };
    let (mut sent, mut nacked, mut publish_s) = (0, 0, 0.0);
    if args.producers > 0 {
        (sent, nacked) = publish(args, uri, &names, n, &counters).await?;
        publish_s = t0.elapsed().as_secs_f64();
        figures.pending_at_publish_end = Some(n.saturating_sub(counters.received.load(Ordering::Acquire)));
        figures.publish_end_epoch_ms = Some(now_epoch_us() / 1000);
        // Line-buffered stdout: a script waiting on this line sees it at once.
        println!("published: {sent} messages in {publish_s:.2}s");
    }
    let expected = n.saturating_sub(nacked);
    let mut report = None;
    if let Some(task) = consumer {
        let deadline = Instant::now() + Duration::from_secs(args.max_delay_s + args.drain_timeout_s);
        while counters.received.load(Ordering::Acquire) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        counters.stop_consumers.store(true, Ordering::Release);
        report = Some(task.await??);
    }
    if !args.no_cleanup && args.consumers > 0 {
        names.delete(&mut setup).await?;
    }
    let _ = setup.close().await;
    let received = counters.received.load(Ordering::Acquire);
    let (mut lost, mut duplicated) = (None, 0);
    if let Some(r) = report {
        r.fill(&mut figures);
        lost = Some(expected.saturating_sub(r.seen.len()));
        duplicated = r.duplicates;
    }
    Ok(Summary {
        scenario: args.scenario.clone(),
        mode: "delayed",
        duration_s: t0.elapsed().as_secs_f64(),
        message_size: args.size.max(STAMP_LEN),
        producers: args.producers.min(1),
        consumers: args.consumers.min(1),
        queues: 1,
        published: sent,
        publish_rate: if publish_s > 0.0 { sent as f64 / publish_s } else { 0.0 },
        confirmed: counters.confirmed.load(Ordering::Acquire),
        nacked,
        received,
        lost,
        duplicated,
        delayed: Some(figures),
        ..Default::default()
    })
}

/// Publishes `n` messages with random delays; returns (sent, nacked) once all are settled.
async fn publish(args: &Args, uri: &AmqpUri, names: &Names, n: u64, counters: &Arc<Counters>) -> Result<(u64, u64)> {
    let mut c = Client::connect(uri).await?;
    if args.confirm > 0 {
        c.call(ConfirmSelect { no_wait: false }, "confirm.select-ok").await?;
    }
    let frame_max = c.frame_max;
    let Client { reader, mut writer, .. } = c;
    let tracker = Tracker::new();
    let reader_task = tokio::spawn(confirm_reader(reader, tracker.clone(), counters.clone()));
    let mut method = BytesMut::new();
    let publish = BasicPublish { exchange: s(&names.exchange), routing_key: s(&names.queue), ..Default::default() };
    write_method(&mut method, 1, &publish.into());
    let size = args.size.max(STAMP_LEN);
    let mut body = vec![0u8; size];
    let max_delay_ms = (args.max_delay_s * 1000).max(1);
    let mut rng = fastrand::Rng::new();
    let mut out = BytesMut::with_capacity(args.batch * (size + 128));
    let mut sent = 0u64;
    while sent < n {
        let batch = tracker.room(sent, args.confirm, (args.batch.max(1) as u64).min(n - sent)).await;
        out.clear();
        for _ in 0..batch {
            sent += 1;
            let delay_ms = rng.u64(0..max_delay_ms);
            let props = BasicProperties {
                delivery_mode: Some(if args.persistent { 2 } else { 1 }),
                headers: Some(FieldTable::new().with("x-delay", FieldValue::I64(delay_ms as i64))),
                ..Default::default()
            };
            out.put_slice(&method);
            write_content_header(&mut out, 1, size as u64, &props.to_raw());
            stamp(&mut body, 0, sent, now_epoch_us() + delay_ms * 1000);
            write_body(&mut out, 1, &body, frame_max);
        }
        writer.write_all(&out).await?;
        counters.published.fetch_add(batch, Ordering::Relaxed);
    }
    if args.confirm > 0 {
        tracker.settle(sent, Duration::from_secs(args.drain_timeout_s.max(60))).await;
    }
    let mut close = BytesMut::new();
    write_method(&mut close, 0, &ConnectionClose { reply_code: 200, ..Default::default() }.into());
    let _ = writer.write_all(&close).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader_task).await;
    Ok((sent, tracker.nacked()))
}

/// What the consumer saw.
struct Firing {
    seen: SeqSet,
    duplicates: u64,
    lateness_ns: Histogram<u64>,
    early: u64,
    violations: u64,
    tolerance_us: u64,
    max_due_us: u64,
    max_inversion_us: u64,
    first_us: Option<u64>,
    last_us: u64,
}

impl Firing {
    fn new(tolerance_ms: u64) -> Firing {
        Firing {
            seen: SeqSet::default(),
            duplicates: 0,
            lateness_ns: stats::latency_histogram(),
            early: 0,
            violations: 0,
            tolerance_us: tolerance_ms * 1000,
            max_due_us: 0,
            max_inversion_us: 0,
            first_us: None,
            last_us: 0,
        }
    }

    /// One delivery of message `seq`, due at `due_us`, delivered at `now_us`; false for a
    /// duplicate, which is only counted (its timing would blur the first delivery's).
    fn record(&mut self, seq: u64, due_us: u64, now_us: u64) -> bool {
        if self.seen.insert(seq) {
            self.duplicates += 1;
            return false;
        }
        self.early += (now_us + EARLY_SLACK_US < due_us) as u64;
        self.lateness_ns.saturating_record(now_us.saturating_sub(due_us).saturating_mul(1000).max(1));
        let inversion = self.max_due_us.saturating_sub(due_us);
        self.violations += (inversion > self.tolerance_us) as u64;
        self.max_inversion_us = self.max_inversion_us.max(inversion);
        self.max_due_us = self.max_due_us.max(due_us);
        self.first_us.get_or_insert(now_us);
        self.last_us = now_us;
        true
    }

    fn fill(&self, f: &mut DelayedFigures) {
        if !self.lateness_ns.is_empty() {
            let [p50, p99, _, max] = stats::latency_percentiles_us(&self.lateness_ns);
            (f.lateness_ms_p50, f.lateness_ms_p99, f.lateness_ms_max) =
                (Some(p50 / 1e3), Some(p99 / 1e3), Some(max / 1e3));
            f.first_delivery_epoch_ms = self.first_us.map(|us| us / 1000);
            f.last_delivery_epoch_ms = Some(self.last_us / 1000);
            f.last_due_epoch_ms = Some(self.max_due_us / 1000);
        }
        f.early = self.early;
        f.order_violations = self.violations;
        f.max_inversion_ms = self.max_inversion_us as f64 / 1e3;
    }
}

/// Consumes `queue`, acking each batch read, until told to stop.
async fn consume(
    args: Args,
    uri: AmqpUri,
    queue: String,
    counters: Arc<Counters>,
    ready: tokio::sync::mpsc::Sender<Result<()>>,
) -> Result<Firing> {
    let Client { mut reader, mut writer, .. } = open_consumer(&uri, &args, &queue, ready).await?;
    let mut firing = Firing::new(args.order_tolerance_ms);
    let mut incoming = Incoming { stamp: Vec::with_capacity(STAMP_LEN), ..Default::default() };
    let mut out = BytesMut::new();
    loop {
        let mut last_tag = None;
        while let Some(frame) = reader.try_next()? {
            if on_frame(frame, &mut incoming)? {
                // Distinct messages: the run ends when all N arrived, duplicates or not.
                let stamp = read_stamp(&incoming.stamp);
                let first = stamp.is_none_or(|(_, seq, due_us)| firing.record(seq, due_us, now_epoch_us()));
                counters.received.fetch_add(first as u64, Ordering::Relaxed);
                last_tag = Some(incoming.tag);
            }
        }
        if let Some(tag) = last_tag.filter(|_| !args.auto_ack) {
            write_method(&mut out, 1, &BasicAck { delivery_tag: tag, multiple: true }.into());
            writer.write_all(&out).await?;
            out.clear();
        }
        if !keep_reading(&mut reader, &counters).await? {
            break;
        }
    }
    close_connection(&mut writer, &mut out).await;
    Ok(firing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_violation_is_a_delivery_after_one_due_later_beyond_the_tolerance() {
        let mut f = Firing::new(10);
        assert!(f.record(1, 1_000_000, 1_002_000));
        f.record(2, 1_050_000, 1_050_500);
        f.record(3, 1_045_000, 1_051_000); // 5 ms inversion: within the tolerance
        f.record(4, 1_020_000, 1_052_000); // 30 ms inversion: a violation
        assert!(!f.record(1, 1_000_000, 1_053_000)); // a duplicate: counted, not timed
        f.record(5, 1_100_000, 1_099_500); // within the timer's millisecond
        f.record(6, 1_100_000, 1_098_000); // early
        let mut figures = DelayedFigures::default();
        f.fill(&mut figures);
        assert_eq!((figures.order_violations, figures.early, f.duplicates), (1, 1, 1));
        assert_eq!(figures.max_inversion_ms, 30.0);
        assert_eq!(f.seen.len(), 6);
        assert_eq!(figures.first_delivery_epoch_ms, Some(1_002));
        assert_eq!(figures.last_due_epoch_ms, Some(1_100));
    }
}
