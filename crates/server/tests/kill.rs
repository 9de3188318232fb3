//! `kill -9` under load, against the real binary: publishers with confirms and consumers
//! acking run while the broker is killed at a random moment, restarted on the same data
//! directory, and killed again. Checked throughout and at the end:
//! - every confirmed message is delivered (at least once);
//! - a message is delivered twice only with `redelivered=true`;
//! - an ack the broker is known to have stored never comes back. An ack is known stored once
//!   a persistent publish the same connection sent after it was confirmed: the connection
//!   handles its input in order, and the confirm means the commit covering both is done.
//!
//! `LEPUS_KILL_ROUNDS` sets the number of kills (default 3: a CI-sized run), `LEPUS_BIN` the
//! binary (default: this build's `lepus`); `scripts/kill-test` runs it long against a release
//! build. The seed of the random kill points is printed, and `LEPUS_KILL_SEED` replays one.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clients::*;
use lapin::message::DeliveryResult;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

const QUEUE: &str = "kill-test";
const MARKERS: &str = "kill-test-markers";
/// Publishes in flight (awaiting their confirm) per publisher.
const CONFIRM_WINDOW: usize = 64;
/// Acks between two marker publishes.
const ACKS_PER_MARKER: usize = 50;

/// What the clients saw, across every run of the broker.
#[derive(Default)]
struct Ledger {
    confirmed: BTreeSet<u64>,
    /// id → times delivered.
    delivered: HashMap<u64, u32>,
    /// Acks known to be stored (see the module documentation).
    settled_acks: BTreeSet<u64>,
    violations: Vec<String>,
}

struct Broker {
    child: Child,
    url: String,
}

fn binary() -> PathBuf {
    std::env::var_os("LEPUS_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lepus")))
}

/// Starts the broker on an ephemeral port and learns the port from its log.
fn start(dir: &Path) -> Broker {
    let mut child = Command::new(binary())
        .args([
            "--bind-address",
            "127.0.0.1",
            "--port",
            "0",
            "--management-port",
            "0",
            "--prometheus-port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .env("LEPUS_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("broker starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to the end (so the broker never blocks on a full pipe), passing on the port.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("accepting AMQP 0-9-1 connections address=").nth(1) {
                let port = rest.split_whitespace().next().and_then(|a| a.rsplit(':').next()).map(str::to_owned);
                let _ = tx.send(port);
            }
            if line.contains("ERROR") || line.contains("damaged") {
                eprintln!("broker: {line}");
            }
        }
    });
    let port = rx.recv_timeout(common::HANG_GUARD).ok().flatten().expect("broker reports its port");
    Broker { child, url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f") }
}

impl Drop for Broker {
    /// SIGKILL, also when a failing test unwinds: no broker outlives the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(url: &str) -> lapin::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default()).await
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

/// Publishes ids from `next_id` with confirms until the connection fails or `stop` is set.
async fn publish(
    url: String,
    next_id: Arc<AtomicU64>,
    ledger: Arc<Mutex<Ledger>>,
    progress: Arc<Notify>,
    stop: Arc<AtomicBool>,
) {
    let run = async {
        let conn = connect(&url).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.queue_declare(QUEUE.into(), durable(), FieldTable::default()).await?;
        let mut in_flight = std::collections::VecDeque::new();
        while !stop.load(Ordering::Acquire) {
            let id = next_id.fetch_add(1, Ordering::AcqRel);
            let confirm = ch
                .basic_publish("".into(), QUEUE.into(), BasicPublishOptions::default(), &id.to_le_bytes(), persistent())
                .await?;
            in_flight.push_back((id, confirm));
            while in_flight.len() >= CONFIRM_WINDOW || (stop.load(Ordering::Acquire) && !in_flight.is_empty()) {
                let Some((id, confirm)) = in_flight.pop_front() else { break };
                if confirm.await?.is_ack() {
                    ledger.lock().confirmed.insert(id);
                    progress.notify_one();
                }
            }
        }
        lapin::Result::Ok(())
    };
    // Ends with an error when the broker is killed: expected.
    let _ = run.await;
}

/// Consumes and acks, checking every delivery against the ledger; publishes a marker every
/// few acks so they become known stored.
async fn consume(url: String, ledger: Arc<Mutex<Ledger>>, progress: Arc<Notify>, stop: Arc<AtomicBool>) {
    let run = async {
        let conn = connect(&url).await?;
        let ch = conn.create_channel().await?;
        let markers = conn.create_channel().await?;
        markers.confirm_select(ConfirmSelectOptions::default()).await?;
        markers.queue_declare(MARKERS.into(), durable(), FieldTable::default()).await?;
        ch.queue_declare(QUEUE.into(), durable(), FieldTable::default()).await?;
        ch.basic_qos(100, BasicQosOptions::default()).await?;
        let consumer =
            ch.basic_consume(QUEUE.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        consumer.set_delegate(move |d: DeliveryResult| {
            let _ = tx.send(d);
            async {}
        });
        let mut acked_unsettled = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let Some(Ok(Some(d))) = rx.recv().await else { break };
            let id = u64::from_le_bytes(d.data[..8].try_into().unwrap_or_default());
            {
                let mut l = ledger.lock();
                let seen = l.delivered.entry(id).or_default();
                *seen += 1;
                let seen = *seen;
                if seen > 1 && !d.redelivered {
                    l.violations.push(format!("message {id} delivered {seen} times, the last without redelivered"));
                }
                if l.settled_acks.contains(&id) {
                    l.violations.push(format!("message {id} came back after its ack was stored"));
                }
            }
            progress.notify_one();
            d.acker.ack(BasicAckOptions::default()).await?;
            acked_unsettled.push(id);
            if acked_unsettled.len() >= ACKS_PER_MARKER {
                let confirm = markers
                    .basic_publish("".into(), MARKERS.into(), BasicPublishOptions::default(), b"marker", persistent())
                    .await?;
                if confirm.await?.is_ack() {
                    ledger.lock().settled_acks.extend(acked_unsettled.drain(..));
                }
            }
        }
        lapin::Result::Ok(())
    };
    let _ = run.await;
}

/// Ends the consumer task once its broker was killed. lapin does not always end a consumer
/// whose connection died while it waited for a delivery or a confirm (it can wait forever), so
/// the task is aborted rather than awaited: what it recorded in the ledger is all that counts.
async fn stop_consumer(consumer: tokio::task::JoinHandle<()>) {
    consumer.abort();
    let _ = guard("consumer ends", consumer).await;
}

/// xorshift64*: the kill points, reproducible from the printed seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9() {
    let rounds: u32 = std::env::var("LEPUS_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("LEPUS_KILL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    eprintln!("kill test: {rounds} rounds, LEPUS_KILL_SEED={seed}");
    let mut rng = seed;
    let dir = std::env::temp_dir().join(uniq("lepus-kill"));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let next_id = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    for round in 0..rounds {
        let broker = start(&dir);
        let stop = Arc::new(AtomicBool::new(false));
        let publisher =
            tokio::spawn(publish(broker.url.clone(), next_id.clone(), ledger.clone(), progress.clone(), stop.clone()));
        let consumer = tokio::spawn(consume(broker.url.clone(), ledger.clone(), progress.clone(), stop.clone()));
        // Kill after a random number of further confirms, and deliveries in between.
        let (confirmed_before, delivered_before) = {
            let l = ledger.lock();
            (l.confirmed.len(), l.delivered.len())
        };
        let more_confirms = 200 + (next_random(&mut rng) % 2_000) as usize;
        let more_deliveries = (next_random(&mut rng) % 500) as usize;
        let waited = tokio::time::timeout(common::HANG_GUARD, async {
            loop {
                let notified = progress.notified();
                {
                    let l = ledger.lock();
                    if l.confirmed.len() >= confirmed_before + more_confirms
                        && l.delivered.len() >= delivered_before + more_deliveries
                    {
                        break;
                    }
                }
                notified.await;
            }
        })
        .await;
        if waited.is_err() {
            let l = ledger.lock();
            panic!(
                "round {round}: load stalled at {} confirmed (waiting for {}), {} delivered (waiting for {})",
                l.confirmed.len(),
                confirmed_before + more_confirms,
                l.delivered.len(),
                delivered_before + more_deliveries
            );
        }
        drop(broker); // SIGKILL (see `Drop`)
        stop.store(true, Ordering::Release);
        let _ = guard("publisher ends", publisher).await;
        stop_consumer(consumer).await;
        let l = ledger.lock();
        eprintln!("round {round}: killed at {} confirmed, {} delivered", l.confirmed.len(), l.delivered.len());
    }
    // Last run: everything confirmed must come out.
    let broker = start(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(broker.url.clone(), ledger.clone(), progress.clone(), stop.clone()));
    let all_delivered = tokio::time::timeout(common::HANG_GUARD, async {
        loop {
            let notified = progress.notified();
            {
                let l = ledger.lock();
                if l.confirmed.iter().all(|id| l.delivered.contains_key(id)) {
                    break;
                }
            }
            notified.await;
        }
    })
    .await;
    if all_delivered.is_err() {
        let l = ledger.lock();
        let lost: Vec<u64> = l.confirmed.iter().filter(|id| !l.delivered.contains_key(id)).copied().collect();
        panic!("{} confirmed messages were never delivered, e.g. {:?}", lost.len(), &lost[..lost.len().min(20)]);
    }
    stop.store(true, Ordering::Release);
    drop(broker);
    stop_consumer(consumer).await;
    let l = ledger.lock();
    assert!(l.violations.is_empty(), "violations: {:#?}", l.violations);
    assert!(!l.confirmed.is_empty() && !l.settled_acks.is_empty(), "the load ran");
    eprintln!(
        "kill test passed: {} confirmed, {} delivered, {} acks known stored",
        l.confirmed.len(),
        l.delivered.len(),
        l.settled_acks.len()
    );
    drop(l);
    let _ = std::fs::remove_dir_all(&dir);
}
