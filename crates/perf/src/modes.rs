//! Modes that measure a broker's fixed costs rather than message throughput: holding idle
//! connections (`--idle-connections`), declaring or deleting many queues (`--declare-queues`)
//! and connection churn (`--churn`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lepus_protocol::ShortStr;
use lepus_protocol::method::{QueueDeclare, QueueDelete};
use tokio::task::JoinSet;

use crate::Args;
use crate::client::{Client, Error, Result};
use crate::stats::Summary;
use crate::uri::AmqpUri;

/// Connection attempts in flight at once while opening idle connections (more would overflow
/// a listen backlog of 128 and wait for SYN retransmits).
const OPEN_CONCURRENCY: usize = 64;

/// The line printed (and flushed) once every idle connection is open, for scripts to wait on.
pub const READY_LINE: &str = "ready:";

/// How long one connection may take to open before the mode gives up (a broker out of file
/// descriptors leaves connections in its accept backlog, unanswered).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(uri: &AmqpUri) -> Result<Client> {
    match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(uri)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no connection.open-ok within {}s", CONNECT_TIMEOUT.as_secs()).into()),
    }
}

async fn close(c: Client) -> Result<()> {
    match tokio::time::timeout(CONNECT_TIMEOUT, c.close()).await {
        Ok(r) => r,
        Err(_) => Err(format!("no connection.close-ok within {}s", CONNECT_TIMEOUT.as_secs()).into()),
    }
}

/// Opens `n` connections, each with channel 1 open, prints `ready: <n> connections open`,
/// holds them `--hold-s` seconds and closes them.
pub async fn idle_connections(args: &Args, uri: &AmqpUri, n: usize) -> Result<Summary> {
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(n);
    let mut opening = JoinSet::new();
    let mut started = 0;
    while clients.len() < n {
        while started < n && opening.len() < OPEN_CONCURRENCY {
            let uri = uri.clone();
            opening.spawn(async move { connect(&uri).await });
            started += 1;
        }
        match opening.join_next().await {
            Some(r) => {
                let c = r?.map_err(|e| format!("opening connection {} of {n}: {e}", clients.len() + 1))?;
                clients.push(c);
            }
            None => break,
        }
    }
    let open_s = t0.elapsed().as_secs_f64();
    // Stdout is line-buffered: the line reaches a pipe at once.
    println!("{READY_LINE} {} connections open in {open_s:.2}s", clients.len());
    tokio::time::sleep(Duration::from_secs(args.hold_s)).await;
    let mut closing = JoinSet::new();
    for c in clients {
        closing.spawn(close(c));
    }
    let mut errors = 0;
    while let Some(r) = closing.join_next().await {
        errors += !matches!(r, Ok(Ok(()))) as u64;
    }
    Ok(Summary {
        scenario: args.scenario.clone(),
        mode: "idle-connections",
        duration_s: open_s,
        connections: n as u64,
        connections_per_s: Some(n as f64 / open_s.max(1e-9)),
        connection_errors: errors,
        ..Default::default()
    })
}

/// Declares (or with `--delete-queues` deletes) queues `<queue-prefix>-0` to `-<n-1>` over a
/// few connections and returns, leaving the declared queues in place.
pub async fn declare_queues(args: &Args, uri: &AmqpUri, n: usize) -> Result<Summary> {
    let t0 = Instant::now();
    let workers = n.clamp(1, 8);
    let mut tasks = JoinSet::new();
    for w in 0..workers {
        let (uri, prefix, durable, delete) = (uri.clone(), args.queue_prefix.clone(), args.durable, args.delete_queues);
        tasks.spawn(async move {
            let mut c = connect(&uri).await?;
            for i in (w..n).step_by(workers) {
                let queue = ShortStr::truncating(&format!("{prefix}-{i}"));
                if delete {
                    c.call(QueueDelete { queue, ..Default::default() }, "queue.delete-ok").await?;
                } else {
                    c.call(QueueDeclare { queue, durable, ..Default::default() }, "queue.declare-ok").await?;
                }
            }
            close(c).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(Summary {
        scenario: args.scenario.clone(),
        mode: if args.delete_queues { "delete-queues" } else { "declare-queues" },
        duration_s: t0.elapsed().as_secs_f64(),
        queues: n,
        ..Default::default()
    })
}

/// `tasks` loops, each opening a connection (handshake and channel open) and closing it, for
/// `-z` seconds.
pub async fn churn(args: &Args, uri: &AmqpUri, tasks: usize) -> Result<Summary> {
    let opened = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.duration_s);
    let mut set = JoinSet::new();
    for _ in 0..tasks.max(1) {
        let (uri, opened, errors) = (uri.clone(), opened.clone(), errors.clone());
        set.spawn(async move {
            let mut first_error: Option<Error> = None;
            while Instant::now() < deadline {
                match connect(&uri).await {
                    Ok(c) => match close(c).await {
                        Ok(()) => {
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert(e);
                        }
                    },
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            first_error
        });
    }
    let progress = (!args.quiet).then(|| {
        let opened = opened.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let now = opened.load(Ordering::Relaxed);
                eprintln!("t={:>3}s  connections {:>7}/s", t0.elapsed().as_secs(), now - last);
                last = now;
            }
        })
    });
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        if let Some(e) = r? {
            first_error.get_or_insert(e);
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (opened, errors) = (opened.load(Ordering::Acquire), errors.load(Ordering::Acquire));
    if let Some(e) = first_error {
        if opened == 0 {
            return Err(e);
        }
        eprintln!("lepus-perf: {errors} connection errors, the first: {e}");
    }
    Ok(Summary {
        scenario: args.scenario.clone(),
        mode: "churn",
        duration_s: elapsed,
        connections: opened,
        connections_per_s: Some(opened as f64 / elapsed),
        connection_errors: errors,
        ..Default::default()
    })
}
