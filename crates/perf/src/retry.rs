//! The retry loop (`--retry-loop K`), the shape applications build retries on: each work
//! queue `<q>` dead-letters what its consumers reject into `<q>-delay`, whose `x-message-ttl`
//! (`--retry-delay-ms`) dead-letters it back to `<q>`, both through the default exchange.
//! Consumers reject (requeue=false) a delivery until its `x-death` count for `(<q>, rejected)`
//! reaches K, then ack it: every message makes K passes through the delay queue. A completion
//! is what a load run counts as received (and verifies); each rejection is a pass. Publishers
//! keep at most `--retry-window` messages in the loop.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lepus_protocol::content::ContentHeader;
use lepus_protocol::frame::write_method;
use lepus_protocol::method::*;
use lepus_protocol::{FieldTable, FieldValue, Frame, FrameType, ShortStr};
use tokio::io::AsyncWriteExt;

use crate::Args;
use crate::client::{Client, Result};
use crate::load::{Incoming, Plan, close_connection, keep_reading, on_frame as on_frame_of_load, read_stamp};
use crate::stats::{ConsumerReport, Counters};

/// The delay queue of work queue `queue`.
pub fn delay_queue(queue: &str) -> String {
    format!("{queue}-delay")
}

fn s(text: &str) -> ShortStr {
    ShortStr::truncating(text)
}

/// A work queue's arguments: rejected messages go to its delay queue.
pub fn add_work_queue_arguments(arguments: &mut FieldTable, queue: &str) {
    arguments.insert(s("x-dead-letter-exchange"), FieldValue::from(""));
    arguments.insert(s("x-dead-letter-routing-key"), FieldValue::from(delay_queue(queue).as_str()));
}

/// Declares (and unless `--no-purge` purges) the delay queue of `queue`: expired messages go
/// back to `queue`.
pub async fn declare_delay_queue(c: &mut Client, queue: &str, args: &Args) -> Result<()> {
    let delay = delay_queue(queue);
    let ttl_ms = i64::try_from(args.retry_delay_ms).map_err(|_| "--retry-delay-ms too large")?;
    let arguments = FieldTable::new()
        .with("x-message-ttl", ttl_ms)
        .with("x-dead-letter-exchange", "")
        .with("x-dead-letter-routing-key", FieldValue::from(queue));
    let declare = QueueDeclare { queue: s(&delay), durable: args.durable, arguments, ..Default::default() };
    c.call(declare, "queue.declare-ok").await?;
    if !args.no_purge {
        c.call(QueuePurge { queue: s(&delay), ..Default::default() }, "queue.purge-ok").await?;
    }
    Ok(())
}

/// How many more of `n` messages a producer may publish with at most `window` in the loop
/// (published, not yet completed); waits a little for a completion (and answers 0) when full.
pub async fn room(counters: &Counters, window: u64, n: u64) -> u64 {
    let in_loop = counters.published.load(Ordering::Acquire).saturating_sub(counters.received.load(Ordering::Acquire));
    if in_loop >= window {
        let _ = tokio::time::timeout(Duration::from_millis(10), counters.completed.notified()).await;
        return 0;
    }
    n.min(window - in_loop)
}

/// The delivery being parsed, and its `x-death` count for (the work queue, rejected): the
/// passes it has made.
#[derive(Default)]
struct Delivery {
    incoming: Incoming,
    passes: i64,
}

/// A retry-loop consumer of work queue `j % queues` on `client` (consuming it already):
/// rejects each delivery until it has made `--retry-loop` passes, then acks it and counts it
/// as received.
pub async fn consume(
    j: usize,
    client: Client,
    plan: &Plan,
    counters: &Counters,
    start: Instant,
) -> Result<ConsumerReport> {
    let args = &plan.args;
    let queue = plan.queue(j).to_string();
    let passes = i64::from(args.retry_loop.unwrap_or(0));
    let Client { mut reader, mut writer, .. } = client;
    let mut report = ConsumerReport::new(j % args.queues.max(1));
    let (mut d, mut out) = (Delivery::default(), BytesMut::new());
    loop {
        let mut completed = false;
        while let Some(frame) = reader.try_next()? {
            if !on_frame(frame, &mut d, &queue)? {
                continue;
            }
            let tag = d.incoming.tag;
            if d.passes >= passes {
                write_method(&mut out, 1, &BasicAck { delivery_tag: tag, multiple: false }.into());
                complete(&d.incoming, &mut report, counters, start);
                completed = true;
            } else {
                write_method(&mut out, 1, &BasicReject { delivery_tag: tag, requeue: false }.into());
                counters.passes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
        }
        if completed {
            counters.last_receive_ns.fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            counters.completed.notify_waiters();
        }
        if !keep_reading(&mut reader, counters).await? {
            break;
        }
    }
    close_connection(&mut writer, &mut out).await;
    Ok(report)
}

/// Feeds one frame into the delivery being parsed; true when it is complete.
fn on_frame(frame: Frame, d: &mut Delivery, queue: &str) -> Result<bool> {
    if frame.frame_type != FrameType::Header {
        return on_frame_of_load(frame, &mut d.incoming);
    }
    let header = ContentHeader::decode(frame.payload)?;
    d.passes = rejections(header.properties()?.headers.as_ref(), queue);
    d.incoming.remaining = header.body_size;
    d.incoming.stamp.clear();
    Ok(d.incoming.remaining == 0)
}

/// The `count` of the `x-death` entry for (`queue`, rejected) in `headers`; 0 without one.
pub fn rejections(headers: Option<&FieldTable>, queue: &str) -> i64 {
    let Some(FieldValue::Array(deaths)) = headers.and_then(|h| h.get("x-death")) else { return 0 };
    deaths
        .iter()
        .filter_map(FieldValue::as_table)
        .find(|death| {
            death.get("queue").and_then(FieldValue::as_str) == Some(queue)
                && death.get("reason").and_then(FieldValue::as_str) == Some("rejected")
        })
        .and_then(|death| death.get("count")?.as_i64())
        .unwrap_or(0)
}

/// A message that made its passes: counted, checked for duplicates, its loop time recorded.
fn complete(d: &Incoming, report: &mut ConsumerReport, counters: &Counters, start: Instant) {
    report.received += 1;
    counters.received.fetch_add(1, Ordering::Relaxed);
    let Some((producer, seq, sent_ns)) = read_stamp(&d.stamp) else { return };
    let now_ns = start.elapsed().as_nanos() as u64;
    let _ = report.latency_ns.record(now_ns.saturating_sub(sent_ns).max(1));
    if report.seen.entry(producer).or_default().insert(seq) {
        report.duplicates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(queue: &str, reason: &str, count: i64) -> FieldValue {
        FieldValue::Table(
            FieldTable::new()
                .with("count", count)
                .with("reason", reason)
                .with("queue", FieldValue::from(queue))
                .with("exchange", ""),
        )
    }

    #[test]
    fn passes_are_the_work_queue_s_rejected_count() {
        let deaths = FieldValue::Array(vec![death("q-delay", "expired", 3), death("q", "rejected", 2)]);
        let headers = FieldTable::new().with("x-death", deaths);
        assert_eq!(rejections(Some(&headers), "q"), 2);
        assert_eq!(rejections(Some(&headers), "other"), 0);
        assert_eq!(rejections(None, "q"), 0);
    }
}
