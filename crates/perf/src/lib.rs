//! `lepus-perf` (library): a load generator in the spirit of RabbitMQ's PerfTest, usable against any
//! AMQP 0-9-1 broker. Producers write many messages per syscall (most client libraries write
//! one frame per syscall and cannot load a fast broker); every message carries its producer,
//! a sequence number and a send timestamp, so consumers measure end-to-end latency and the
//! run ends with a count of lost, duplicated and reordered messages.
//!
//! # Layout
//! - `uri`: `amqp://` URIs. `client`: handshake and set-up calls on the Lepus codec.
//! - `load`: the producer and consumer loops. `stats`: counters, verification, summary.
//! - `sink`: a discarding endpoint (`--sink PORT`) to measure the tool's own ceiling.
//! - `ceiling`: the loopback byte rate with no broker (`--loopback-ceiling`), one hop and
//!   through a plain relay, the bound for large messages; with `-r`, the latency floor of that
//!   relay at a fixed rate, the bound for S9.
//! - `topic`: topic runs' keys, patterns and expected routes (verification of topic runs).
//! - `modes`: fixed costs rather than throughput: `--idle-connections`, `--declare-queues`,
//!   `--churn`.
//! - `retry`: the retry loop's queues and consumer (`--retry-loop K`: reject → dead-letter →
//!   delay queue with a TTL → back, acked after K passes).
//! - `delayed`: `--delayed N`, messages through an `x-delayed-message` exchange: publish rate,
//!   lateness and firing order.
//!
//! # Expiring messages
//! `--expire-every 2 --expiration-ms 1` gives every second message an `expiration`: the
//! others (the survivors) are verified as usual and make the receive rate; the summary counts
//! the expiring ones delivered and those that never were (`expired`).
//!
//! # Backlogs
//! `-y 0 -C N --no-cleanup` publishes N messages per producer with no consumer and leaves the
//! queues in place; `-x 0 --no-purge [--expect N]` then drains them: the run ends when N
//! messages arrived, or once consumers were idle for a second after receiving something (10 s
//! with `--expect`; `--drain-timeout-s` when nothing arrives at all; `-z` caps the drain), and
//! the receive rate is taken over the time spent consuming.

pub mod ceiling;
pub mod client;
pub mod delayed;
pub mod load;
pub mod modes;
pub mod retry;
pub mod sink;
pub mod stats;
pub mod topic;
pub mod uri;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use clap::Parser;

use crate::client::{Client, Result};
use crate::load::{Plan, Routing};
pub use crate::stats::Summary;
use crate::stats::{Counters, SeqSet};
use crate::uri::AmqpUri;

#[derive(Parser, Debug, Clone)]
#[command(name = "lepus-perf", version, about = "AMQP 0-9-1 load generator with verification")]
pub struct Args {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    pub uri: String,
    /// Name of the scenario, for the summary.
    #[arg(long, default_value = "custom")]
    pub scenario: String,
    /// Producers; 0 = drain-only: consume what the queues already hold (see `--expect`).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers; 0 = publish only, leaving a backlog (with `--no-cleanup`, in place).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Queues, named `<queue-prefix>-<i>`; producer i publishes to queue i % queues, consumer j
    /// consumes queue j % queues (fanout/topic: exchanges decide).
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    #[arg(long, default_value = "lepus-perf")]
    pub queue_prefix: String,
    /// Message body size in bytes (at least 16 for verification and latency).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// How long producers run, in seconds.
    #[arg(short = 'z', long, default_value_t = 10)]
    pub duration_s: u64,
    /// Stop each producer after this many messages.
    #[arg(short = 'C', long)]
    pub pmessages: Option<u64>,
    /// Messages per second per producer; 0 = as fast as possible.
    #[arg(short = 'r', long, default_value_t = 0)]
    pub rate: u64,
    /// Publisher confirms with this many unconfirmed messages in flight; 0 = no confirms.
    #[arg(short = 'c', long, default_value_t = 0)]
    pub confirm: u64,
    /// Persistent messages (delivery mode 2).
    #[arg(long)]
    pub persistent: bool,
    /// A `headers` property with this many string entries on every message (as Celery, Spring
    /// AMQP and most frameworks send), e.g. `--headers 8`.
    #[arg(long, default_value_t = 0)]
    pub headers: usize,
    /// Durable queues.
    #[arg(long)]
    pub durable: bool,
    /// A queue argument for the declared queues, `KEY=VALUE` (repeatable; an integer value is
    /// sent as a long, anything else as a string), e.g. `--queue-arg x-max-priority=10`.
    #[arg(long = "queue-arg", value_name = "KEY=VALUE")]
    pub queue_args: Vec<String>,
    /// Publish with priorities 0 to N-1 in turn (for priority queues); 0 = no priority.
    #[arg(long, default_value_t = 0)]
    pub priority_levels: u8,
    /// Consume with no-ack.
    #[arg(short = 'a', long)]
    pub auto_ack: bool,
    /// Acknowledge with multiple=true every N messages.
    #[arg(long, default_value_t = 1)]
    pub multi_ack_every: u64,
    /// basic.qos prefetch count per consumer; 0 = unlimited.
    #[arg(short = 'q', long, default_value_t = 0)]
    pub prefetch: u16,
    /// direct (the default exchange), fanout or topic.
    #[arg(short = 't', long, default_value = "direct")]
    pub exchange_type: String,
    /// Wildcard bindings in total for topic runs.
    #[arg(long, default_value_t = 100)]
    pub topic_bindings: usize,
    /// Messages per write.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Worker threads of the tool's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds to wait for consumers to catch up after producers stop.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_s: u64,
    /// Leave queues and exchanges in place.
    #[arg(long)]
    pub no_cleanup: bool,
    /// Don't purge the queues when declaring them (to drain a backlog left by an earlier run).
    #[arg(long)]
    pub no_purge: bool,
    /// Drain-only runs (`-x 0`): end once this many messages arrived in total.
    #[arg(long)]
    pub expect: Option<u64>,
    /// Instead of generating load, open this many connections (each with a channel open), print
    /// a line starting with `ready:`, hold them `--hold-s` seconds and close them.
    #[arg(long)]
    pub idle_connections: Option<usize>,
    /// How long `--idle-connections` holds its connections, in seconds.
    #[arg(long, default_value_t = 10)]
    pub hold_s: u64,
    /// Instead of generating load, declare queues `<queue-prefix>-0` to `-<N-1>` and exit,
    /// leaving them in place.
    #[arg(long)]
    pub declare_queues: Option<usize>,
    /// With `--declare-queues N`: delete those queues instead.
    #[arg(long, requires = "declare_queues")]
    pub delete_queues: bool,
    /// Instead of generating load, run this many tasks that open a connection (handshake and
    /// channel open) and close it, in a loop, for `-z` seconds; reports connections/s.
    #[arg(long)]
    pub churn: Option<usize>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Instead of generating load, measure the loopback byte rate with no broker: one hop, and
    /// two hops through a plain relay (the ceiling for any broker), writing `--batch` × `-s`
    /// bytes at a time, `-z` seconds each. With `-r`: the latency floor instead, `-s`-byte
    /// messages at that rate through the relay (p50/p99/p99.9). `--uri` is not used.
    #[arg(long)]
    pub loopback_ceiling: bool,
    /// Instead of generating load, serve a discarding AMQP endpoint on this port.
    #[arg(long)]
    pub sink: Option<u16>,
    /// A retry loop (`retry`): consumers reject each message (requeue=false) to a delay queue
    /// that dead-letters it back after `--retry-delay-ms`, and ack it on its delivery after
    /// this many passes (read from its `x-death` count).
    #[arg(long, conflicts_with_all = ["auto_ack", "expire_every", "delayed"])]
    pub retry_loop: Option<u32>,
    /// The delay queue's `x-message-ttl` in a retry loop.
    #[arg(long, default_value_t = 10)]
    pub retry_delay_ms: u64,
    /// Messages in a retry loop at once, at most (publishers wait for completions).
    #[arg(long, default_value_t = 20_000)]
    pub retry_window: u64,
    /// Every N-th message (sequence numbers N, 2N, ...) gets an `expiration` of
    /// `--expiration-ms`; verification expects only the others. 0 = none.
    #[arg(long, default_value_t = 0, conflicts_with = "priority_levels")]
    pub expire_every: u64,
    /// The `expiration` property of the messages `--expire-every` picks, in ms.
    #[arg(long, default_value_t = 1)]
    pub expiration_ms: u64,
    /// Instead of the usual load, N persistent messages through an `x-delayed-message`
    /// exchange (`delayed`) with random `x-delay` up to `--max-delay-s`, each carrying its
    /// due time: publish rate, lateness, firing order. `-y 0` publishes only, `-x 0` consumes
    /// only (what an earlier run left).
    #[arg(long)]
    pub delayed: Option<u64>,
    /// The longest `x-delay` of `--delayed`, in seconds.
    #[arg(long, default_value_t = 60)]
    pub max_delay_s: u64,
    /// `--delayed`: a delivery is out of order when a message due more than this much later
    /// was delivered before it.
    #[arg(long, default_value_t = 10)]
    pub order_tolerance_ms: u64,
}

/// Runs one load scenario (or one of the `modes`) to completion and returns its summary (also
/// printed, and written as JSON with `--json`).
pub async fn run(args: Args) -> Result<Summary> {
    let uri = AmqpUri::parse(&args.uri)?;
    let summary = if args.loopback_ceiling {
        let a = args.clone();
        tokio::task::spawn_blocking(move || ceiling::measure(&a)).await.map_err(|e| e.to_string())??
    } else if let Some(n) = args.idle_connections {
        modes::idle_connections(&args, &uri, n).await?
    } else if let Some(n) = args.declare_queues {
        modes::declare_queues(&args, &uri, n).await?
    } else if let Some(tasks) = args.churn {
        modes::churn(&args, &uri, tasks).await?
    } else if let Some(n) = args.delayed {
        delayed::run(&args, &uri, n).await?
    } else {
        run_load(&args, &uri).await?
    };
    println!("{}", summary.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(summary)
}

async fn run_load(args: &Args, uri: &AmqpUri) -> Result<Summary> {
    let (args, uri) = (args.clone(), uri.clone());
    if args.producers == 0 && args.consumers == 0 {
        return Err("nothing to do with -x 0 and -y 0".into());
    }
    let drain_only = args.producers == 0;
    let routing = match args.exchange_type.as_str() {
        "direct" => Routing::Direct,
        "fanout" => Routing::Fanout,
        "topic" => Routing::Topic,
        other => return Err(format!("unknown exchange type {other:?}").into()),
    };
    let plan = Arc::new(Plan::new(&args, routing));
    let mut setup = Client::connect(&uri).await?;
    plan.declare(&mut setup).await?;

    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let mut consumers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.consumers.max(1));
    for j in 0..args.consumers {
        let (uri, plan, counters, ready) = (uri.clone(), plan.clone(), counters.clone(), ready_tx.clone());
        consumers.push(tokio::spawn(async move { load::consume(j, uri, plan, counters, start, ready).await }));
    }
    for _ in 0..args.consumers {
        ready_rx.recv().await.ok_or("a consumer failed to start")??;
    }
    let consume_start_ns = start.elapsed().as_nanos() as u64;
    let mut producers = Vec::new();
    for i in 0..args.producers {
        let (uri, plan, counters) = (uri.clone(), plan.clone(), counters.clone());
        producers.push(tokio::spawn(async move { load::produce(i as u16, uri, plan, counters, start).await }));
    }

    let progress = (!args.quiet).then(|| tokio::spawn(load::progress(counters.clone(), start)));
    let publish_start = Instant::now();
    if drain_only {
        wait_drained(&args, &counters, publish_start).await;
    }
    let deadline = publish_start + Duration::from_secs(args.duration_s);
    while !drain_only && Instant::now() < deadline && !producers.iter().all(|p| p.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counters.stop_producers.store(true, Ordering::Release);
    let window = publish_start.elapsed().as_secs_f64();
    let mut at_stop = AtStop {
        window_s: window,
        received: counters.received.load(Ordering::Acquire),
        published: counters.published.load(Ordering::Acquire),
        passes: counters.passes.load(Ordering::Acquire),
    };
    let mut producer_reports = Vec::new();
    for p in producers {
        producer_reports.push(p.await??);
    }

    // Drain: wait for consumers to receive everything routed, or to go idle.
    let expected = plan.expected_total(&producer_reports);
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_timeout_s);
    let mut last = (counters.received.load(Ordering::Acquire), Instant::now());
    while !drain_only && args.consumers > 0 && Instant::now() < drain_deadline {
        let got = counters.received.load(Ordering::Acquire);
        if got >= expected {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    counters.stop_consumers.store(true, Ordering::Release);
    let mut consumer_reports = Vec::new();
    for c in consumers {
        consumer_reports.push(c.await??);
    }
    if let Some(p) = progress {
        p.abort();
    }
    if args.consumers > 0 && args.producers > 0 {
        counters.remaining.store(plan.remaining(&mut setup).await.unwrap_or(0), Ordering::Release);
    }
    if !args.no_cleanup {
        plan.cleanup(&mut setup).await?;
    }
    let _ = setup.close().await;

    if drain_only {
        // Consuming time: from basic.consume-ok to the last delivery.
        let last = counters.last_receive_ns.load(Ordering::Acquire);
        at_stop.window_s = last.saturating_sub(consume_start_ns).max(1) as f64 / 1e9;
        at_stop.received = counters.received.load(Ordering::Acquire);
    }
    Ok(summarize(&args, &plan, &counters, &producer_reports, consumer_reports, at_stop))
}

/// Counts taken when producers stopped (drain-only runs: when consuming ended), the rates' base.
struct AtStop {
    window_s: f64,
    received: u64,
    published: u64,
    passes: u64,
}

/// Drain-only runs: waits until `--expect` messages arrived, or consumers went idle after
/// receiving something, or nothing arrived within `--drain-timeout-s`, or `-z` passed.
async fn wait_drained(args: &Args, counters: &Counters, begin: Instant) {
    let deadline = begin + Duration::from_secs(args.duration_s);
    let idle_limit = Duration::from_secs(if args.expect.is_some() { args.drain_timeout_s } else { 1 });
    let nothing_limit = Duration::from_secs(args.drain_timeout_s);
    let mut last = (0, Instant::now());
    while Instant::now() < deadline {
        let got = counters.received.load(Ordering::Acquire);
        if args.expect.is_some_and(|e| got >= e) {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        }
        let idle = if got > 0 { last.1.elapsed() > idle_limit } else { begin.elapsed() > nothing_limit };
        if idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn summarize(
    args: &Args,
    plan: &Plan,
    counters: &Counters,
    producers: &[stats::ProducerReport],
    consumers: Vec<stats::ConsumerReport>,
    at_stop: AtStop,
) -> Summary {
    let AtStop { window_s, received: received_at_stop, published: published_at_stop, passes: passes_at_stop } = at_stop;
    let mut latency = stats::latency_histogram();
    let (mut duplicated, mut reordered, mut redelivered) = (0, 0, 0);
    // Union the sequence sets of each (queue, producer) across that queue's consumers.
    let mut per_queue: std::collections::HashMap<(usize, u16), SeqSet> = std::collections::HashMap::new();
    for c in consumers {
        let _ = latency.add(&c.latency_ns);
        duplicated += c.duplicates;
        reordered += c.reordered;
        redelivered += c.redelivered;
        for (producer, set) in c.seen {
            duplicated += per_queue.entry((c.queue, producer)).or_default().union_with(&set);
        }
    }
    let drain_only = args.producers == 0;
    let verifiable = !drain_only && args.consumers > 0 && args.size >= load::STAMP_LEN;
    let received = counters.received.load(Ordering::Acquire);
    let distinct = if args.size >= load::STAMP_LEN { per_queue.values().map(SeqSet::len).sum() } else { received };
    let mut misrouted = 0;
    let lost = if drain_only {
        args.expect.map(|e| e.saturating_sub(distinct))
    } else {
        verifiable.then(|| {
            let mut missing = 0;
            for p in producers {
                match &plan.routes {
                    Some(routes) => {
                        let (m, wrong) = routes.verify(p.id, p.sent, |q| per_queue.get(&(q, p.id)));
                        missing += m;
                        misrouted += wrong;
                    }
                    None => {
                        for q in plan.queues_of(p.id as usize) {
                            let expected = plan.survivors(p.sent).saturating_sub(p.nacked);
                            let got = per_queue.get(&(q, p.id)).map_or(0, |s| s.count_upto(p.sent));
                            missing += expected.saturating_sub(got);
                        }
                    }
                }
            }
            // What is still queued was not delivered in time; only the rest is lost.
            missing.saturating_sub(counters.remaining.load(Ordering::Acquire))
        })
    };
    // Drain-only runs read stamps taken by another process's clock: no latency.
    let timed = !drain_only && !latency.is_empty();
    let [p50, p99, p999, max] = stats::latency_percentiles_us(&latency).map(|us| timed.then_some(us));
    let fanout = plan.fanout();
    let expiring_published =
        (args.expire_every > 0).then(|| producers.iter().map(|p| p.sent - plan.survivors(p.sent)).sum::<u64>());
    let expiring_received = counters.expiring_received.load(Ordering::Acquire);
    let loop_passes = args.retry_loop.map(|_| counters.passes.load(Ordering::Acquire));
    Summary {
        scenario: args.scenario.clone(),
        mode: if drain_only { "drain" } else { "load" },
        duration_s: window_s,
        message_size: args.size,
        producers: args.producers,
        consumers: args.consumers,
        queues: args.queues,
        published: counters.published.load(Ordering::Acquire),
        publish_rate: if drain_only { 0.0 } else { published_at_stop as f64 / window_s },
        confirmed: counters.confirmed.load(Ordering::Acquire),
        nacked: counters.nacked.load(Ordering::Acquire),
        returned: counters.returned.load(Ordering::Acquire),
        received,
        receive_rate: received_at_stop as f64 / window_s,
        backlog_at_stop: if drain_only {
            args.expect.map_or(0, |e| e as i64 - received as i64)
        } else if args.consumers > 0 {
            (plan.survivors(published_at_stop) as f64 * fanout).round() as i64 - received_at_stop as i64
        } else {
            published_at_stop as i64
        },
        deliveries_per_publish: fanout,
        megabytes_per_s: received_at_stop as f64 * args.size as f64 / window_s / 1e6,
        latency_us_p50: p50,
        latency_us_p99: p99,
        latency_us_p999: p999,
        latency_us_max: max,
        lost,
        misrouted,
        remaining_in_queues: counters.remaining.load(Ordering::Acquire),
        duplicated,
        reordered,
        redelivered,
        expiring_published,
        expiring_received: expiring_published.map(|_| expiring_received),
        expired: expiring_published.map(|n| n.saturating_sub(expiring_received)),
        loop_passes,
        loop_pass_rate: loop_passes.map(|_| passes_at_stop as f64 / window_s),
        ..Default::default()
    }
}
