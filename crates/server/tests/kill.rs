//! `kill -9` under load, against the real binary: publishers with confirms and consumers
//! acking run while the broker is killed at a random moment, restarted on the same data
//! directory, and killed again. Part of the load goes through dead-lettering and TTL:
//! - the main queue (`kill-test`) dead-letters into `kill-test-dead`; its consumer rejects
//!   (`requeue=false`) every [`REJECT_EVERY`]th id, and every [`EXPIRING_EVERY`]th id is
//!   published with a short per-message `expiration`;
//! - every [`TTL_EVERY`]th id goes to `kill-test-ttl` instead, a queue with a short
//!   `x-message-ttl` and no consumer, which dead-letters everything into `kill-test-dead`;
//! - a consumer on the same connection drains and acks `kill-test-dead`.
//!
//! Checked throughout and at the end:
//! - every confirmed message is delivered (at least once): from the main queue, or, for one
//!   that can die (rejected, expiring, or sent to the TTL queue), from the dead-letter queue;
//! - a message is delivered twice from the main queue only with `redelivered=true`;
//! - an ack or reject on the main queue the broker is known to have stored never comes back.
//!   It is known stored once a persistent publish the same connection sent after it was
//!   confirmed: the connection handles its input in order, and the confirm means the commit
//!   covering both is done;
//! - a rejection known stored has its dead letter in the dead-letter queue (the reject and the
//!   move are made in order before the marker, so the commit covering the marker covers both);
//! - only messages that can die arrive in the dead-letter queue; one arrives there again
//!   without `redelivered` (a second dead letter of the same message) only after a kill: the
//!   move is not atomic across a crash (the source's copy can come back and die again);
//! - a dead letter of a rejected message comes back after acks of it were stored only while
//!   fewer acks were stored than it had rejects (each reject can leave one copy). For expiring
//!   messages the clients cannot bound the copies: such returns are counted, and the history
//!   of the first few (each dead-letter delivery: run, `redelivered`, the `x-death` time,
//!   acks stored by then) is printed;
//! - no dead letter is lost: a message moves to the dead-letter queue at least once across a
//!   kill (`crates/broker/src/dead_letter.rs`), so at the end every confirmed message that can
//!   die was delivered from one queue or the other, and every rejected one has its dead letter.
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
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

const QUEUE: &str = "kill-test";
const TTL_QUEUE: &str = "kill-test-ttl";
const DEAD_QUEUE: &str = "kill-test-dead";
const MARKERS: &str = "kill-test-markers";
/// Publishes in flight (awaiting their confirm) per publisher.
const CONFIRM_WINDOW: usize = 64;
/// Acks between two marker publishes.
const ACKS_PER_MARKER: usize = 50;
/// Every `TTL_EVERY`th id goes to the TTL queue.
const TTL_EVERY: u64 = 5;
/// Every `REJECT_EVERY`th id in the main queue is rejected without requeue.
const REJECT_EVERY: u64 = 7;
/// Every `EXPIRING_EVERY`th id in the main queue has a per-message `expiration`.
const EXPIRING_EVERY: u64 = 13;
/// The TTL queue's `x-message-ttl` and the per-message `expiration`.
const TTL_MS: i64 = 50;
const EXPIRATION_MS: &str = "100";

/// How a message goes, decided by its id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// Main queue, acked.
    Acked,
    /// Main queue, rejected without requeue: dead-lettered.
    Rejected,
    /// Main queue with a per-message expiration: acked, or dead-lettered if it expired first.
    Expiring,
    /// The TTL queue: dead-lettered when it expires.
    Ttl,
}

fn fate(id: u64) -> Fate {
    if id % TTL_EVERY == 1 {
        Fate::Ttl
    } else if id.is_multiple_of(REJECT_EVERY) {
        Fate::Rejected
    } else if id.is_multiple_of(EXPIRING_EVERY) {
        Fate::Expiring
    } else {
        Fate::Acked
    }
}

/// What the clients saw, across every run of the broker.
#[derive(Default)]
struct Ledger {
    /// The broker run (0-based) the clients are talking to.
    run: u32,
    confirmed: BTreeSet<u64>,
    /// id → times delivered from the main queue.
    delivered: HashMap<u64, u32>,
    /// id → times delivered from the dead-letter queue.
    dead: HashMap<u64, u32>,
    /// id → the run of its first dead-letter delivery without `redelivered`.
    first_fresh_dead: HashMap<u64, u32>,
    /// Dead letters delivered again without `redelivered` after a kill (a second move).
    dead_again: u64,
    /// Acks and rejects on the main queue known to be stored (see the module documentation).
    settled: BTreeSet<u64>,
    /// Rejects known stored: their dead letters must arrive.
    settled_rejects: BTreeSet<u64>,
    /// id → acks of its dead letters known to be stored.
    settled_dead: HashMap<u64, u32>,
    /// Dead letters of dying messages (TTL, expiring) back after an ack was stored: another
    /// copy, moved again after a kill, can explain them (counted, see `delivered_dead`).
    dead_back_after_ack: u64,
    /// id → its dead-letter deliveries, for messages that can die: (run, redelivered, the
    /// first `x-death` entry's time in seconds, acks of it known stored by then).
    dead_history: HashMap<u64, Vec<(u32, bool, u64, u32)>>,
    /// Ids counted in `dead_back_after_ack`, in order (their histories are printed).
    dead_back_ids: Vec<u64>,
    /// Deliveries received and not yet acked or rejected.
    unsettled_in_flight: u64,
    violations: Vec<String>,
    /// How the clients' connections of the current run ended (expected after a kill; shown
    /// when the load stalls).
    client_errors: Vec<String>,
}

impl Ledger {
    fn delivered_main(&mut self, id: u64, redelivered: bool) {
        let seen = self.delivered.entry(id).or_default();
        *seen += 1;
        let seen = *seen;
        if seen > 1 && !redelivered {
            self.violations.push(format!("message {id} delivered {seen} times, the last without redelivered"));
        }
        if self.settled.contains(&id) {
            self.violations.push(format!("message {id} came back after its ack or reject was stored"));
        }
        if fate(id) == Fate::Ttl {
            self.violations.push(format!("message {id} of the TTL queue delivered from the main queue"));
        }
    }

    fn delivered_dead(&mut self, id: u64, redelivered: bool, death_time_s: u64) {
        *self.dead.entry(id).or_default() += 1;
        let acks_stored = self.settled_dead.get(&id).copied().unwrap_or(0);
        self.dead_history.entry(id).or_default().push((self.run, redelivered, death_time_s, acks_stored));
        if fate(id) == Fate::Acked {
            self.violations.push(format!("message {id}, never dead, arrived in the dead-letter queue"));
        }
        if redelivered {
            self.dead_letter_back(id);
            return;
        }
        let run = self.run;
        match self.first_fresh_dead.get(&id) {
            None => {
                self.first_fresh_dead.insert(id, run);
            }
            Some(&first) if first < run => self.dead_again += 1,
            Some(_) => self.violations.push(format!("message {id} dead-lettered twice without a kill in between")),
        }
    }

    fn seen(&self, id: u64) -> bool {
        self.delivered.contains_key(&id) || self.dead.contains_key(&id)
    }

    /// A dead letter of `id` came back (recovered after a kill). Several copies of it can be
    /// in the dead-letter queue: a move torn by a kill keeps the target's copy and the source's,
    /// which dies again. A rejected message has at most one copy per reject (each of its
    /// deliveries from the main queue); more copies back than that after their acks were
    /// stored is a stored ack lost. An expiring one has no such bound the clients can see.
    fn dead_letter_back(&mut self, id: u64) {
        let acks_stored = self.settled_dead.get(&id).copied().unwrap_or(0);
        if acks_stored == 0 {
            return;
        }
        match fate(id) {
            Fate::Rejected => {
                let rejects = self.delivered.get(&id).copied().unwrap_or(0);
                if acks_stored >= rejects {
                    self.violations.push(format!(
                        "dead letter {id} came back after {acks_stored} acks of it were stored; it was rejected \
                         at most {rejects} times; delivered {} times from the dead-letter queue; run {}",
                        self.dead.get(&id).copied().unwrap_or(0),
                        self.run
                    ));
                }
            }
            Fate::Ttl | Fate::Expiring => {
                self.dead_back_after_ack += 1;
                self.dead_back_ids.push(id);
            }
            Fate::Acked => {}
        }
    }

    /// Whether `id` must have been seen and was not: from the main queue or, for one that can
    /// die, from either queue; a rejected one from both (its dead letter must arrive: a move
    /// is at least once across a kill).
    fn strictly_missing_one(&self, id: u64) -> bool {
        match fate(id) {
            Fate::Acked => !self.delivered.contains_key(&id),
            Fate::Rejected => !self.delivered.contains_key(&id) || !self.dead.contains_key(&id),
            Fate::Expiring | Fate::Ttl => !self.seen(id),
        }
    }

    /// Every message that must have been seen and was not (a scan of the whole ledger).
    fn strictly_missing(&self) -> Vec<u64> {
        let mut missing: Vec<u64> =
            self.confirmed.iter().copied().filter(|&id| self.strictly_missing_one(id)).collect();
        missing.extend(self.settled_rejects.iter().copied().filter(|&id| self.strictly_missing_one(id)));
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// The dead-letter deliveries of the first ids counted in `dead_back_after_ack`.
    fn dead_back_histories(&self) -> Vec<String> {
        self.dead_back_ids
            .iter()
            .take(30)
            .map(|id| {
                let main = self.delivered.get(id).copied().unwrap_or(0);
                format!("{id} ({:?}, {main} from the main queue): {:?}", fate(*id), self.dead_history.get(id))
            })
            .collect()
    }
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

/// Whether the broker process still runs (for a stall's report).
fn broker_running(broker: &mut Broker) -> bool {
    matches!(broker.child.try_wait(), Ok(None))
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

/// The arguments of a queue dead-lettering into [`DEAD_QUEUE`] (through the default exchange).
fn dead_lettering(ttl_ms: Option<i64>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString("".into()));
    args.insert(ShortString::from("x-dead-letter-routing-key"), AMQPValue::LongString(DEAD_QUEUE.into()));
    if let Some(ttl) = ttl_ms {
        args.insert(ShortString::from("x-message-ttl"), AMQPValue::LongLongInt(ttl));
    }
    args
}

/// Declares the three queues of the load.
async fn declare_queues(ch: &Channel) -> lapin::Result<()> {
    ch.queue_declare(DEAD_QUEUE.into(), durable(), FieldTable::default()).await?;
    ch.queue_declare(QUEUE.into(), durable(), dead_lettering(None)).await?;
    ch.queue_declare(TTL_QUEUE.into(), durable(), dead_lettering(Some(TTL_MS))).await?;
    Ok(())
}

/// Where id goes, with what properties.
fn routing(id: u64) -> (&'static str, BasicProperties) {
    match fate(id) {
        Fate::Ttl => (TTL_QUEUE, persistent()),
        Fate::Expiring => (QUEUE, persistent().with_expiration(EXPIRATION_MS.into())),
        Fate::Acked | Fate::Rejected => (QUEUE, persistent()),
    }
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
        declare_queues(&ch).await?;
        let mut in_flight = std::collections::VecDeque::new();
        while !stop.load(Ordering::Acquire) {
            let id = next_id.fetch_add(1, Ordering::AcqRel);
            let (queue, props) = routing(id);
            let confirm = ch
                .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &id.to_le_bytes(), props)
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
    if let Err(e) = run.await {
        ledger.lock().client_errors.push(format!("publisher: {e}"));
    }
}

/// Which queue a delivery came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Main,
    Dead,
}

/// Starts a consumer on `queue` whose deliveries go to `tx`, tagged with `source`.
async fn consume_into(
    ch: &Channel,
    queue: &str,
    source: Source,
    tx: mpsc::UnboundedSender<(Source, DeliveryResult)>,
) -> lapin::Result<()> {
    ch.basic_qos(100, BasicQosOptions::default()).await?;
    let consumer =
        ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    consumer.set_delegate(move |d: DeliveryResult| {
        let _ = tx.send((source, d));
        async {}
    });
    Ok(())
}

/// Consumes the main and the dead-letter queue, checking every delivery against the ledger;
/// acks (or rejects, by the id's fate), and publishes a marker every few settlements so they
/// become known stored.
async fn consume(url: String, ledger: Arc<Mutex<Ledger>>, progress: Arc<Notify>, stop: Arc<AtomicBool>) {
    let run = async {
        let conn = connect(&url).await?;
        let main = conn.create_channel().await?;
        let dead = conn.create_channel().await?;
        let markers = conn.create_channel().await?;
        markers.confirm_select(ConfirmSelectOptions::default()).await?;
        markers.queue_declare(MARKERS.into(), durable(), FieldTable::default()).await?;
        declare_queues(&main).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        consume_into(&main, QUEUE, Source::Main, tx.clone()).await?;
        consume_into(&dead, DEAD_QUEUE, Source::Dead, tx).await?;
        let mut unsettled: Vec<(Source, u64)> = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let Some((source, Ok(Some(d)))) = rx.recv().await else { break };
            let id = u64::from_le_bytes(d.data[..8].try_into().unwrap_or_default());
            {
                let mut l = ledger.lock();
                l.unsettled_in_flight += 1;
                match source {
                    Source::Main => l.delivered_main(id, d.redelivered),
                    Source::Dead => l.delivered_dead(id, d.redelivered, death_time_s(&d.properties)),
                }
            }
            progress.notify_one();
            if source == Source::Main && fate(id) == Fate::Rejected {
                d.acker.reject(BasicRejectOptions { requeue: false }).await?;
            } else {
                d.acker.ack(BasicAckOptions::default()).await?;
            }
            ledger.lock().unsettled_in_flight -= 1;
            progress.notify_one();
            unsettled.push((source, id));
            if unsettled.len() >= ACKS_PER_MARKER {
                let confirm = markers
                    .basic_publish("".into(), MARKERS.into(), BasicPublishOptions::default(), b"marker", persistent())
                    .await?;
                if confirm.await?.is_ack() {
                    settle(&mut ledger.lock(), unsettled.drain(..));
                }
            }
        }
        lapin::Result::Ok(())
    };
    if let Err(e) = run.await {
        ledger.lock().client_errors.push(format!("consumer: {e}"));
    }
}

/// The time (seconds) of a dead letter's latest death, its first `x-death` entry; 0 if none.
fn death_time_s(props: &BasicProperties) -> u64 {
    let Some(headers) = props.headers() else { return 0 };
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else { return 0 };
    match deaths.as_slice().first() {
        Some(AMQPValue::FieldTable(death)) => match death.inner().get("time") {
            Some(AMQPValue::Timestamp(t)) => *t,
            _ => 0,
        },
        _ => 0,
    }
}

/// Records acks and rejects as known stored.
fn settle(l: &mut Ledger, settled: impl Iterator<Item = (Source, u64)>) {
    for (source, id) in settled {
        match source {
            Source::Dead => {
                *l.settled_dead.entry(id).or_default() += 1;
            }
            Source::Main => {
                l.settled.insert(id);
                if fate(id) == Fate::Rejected {
                    l.settled_rejects.insert(id);
                }
            }
        }
    }
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

/// Waits until `done` holds for the ledger; false if the clients made no progress for the
/// hang guard's time (a soak's backlog can take longer than that to drain, but never stops).
async fn wait_for(ledger: &Mutex<Ledger>, progress: &Notify, mut done: impl FnMut(&Ledger) -> bool) -> bool {
    loop {
        let notified = progress.notified();
        if done(&ledger.lock()) {
            return true;
        }
        if tokio::time::timeout(common::HANG_GUARD, notified).await.is_err() {
            return false;
        }
    }
}

/// The ready messages of the three queues, read by passive declares.
async fn ready_counts(url: &str) -> lapin::Result<[u32; 3]> {
    let conn = connect(url).await?;
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let mut counts = [0; 3];
    for (count, queue) in counts.iter_mut().zip([QUEUE, TTL_QUEUE, DEAD_QUEUE]) {
        *count = ch.queue_declare(queue.into(), passive, FieldTable::default()).await?.message_count();
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(counts)
}

/// The last run: waits until every message that must come out has, then until the three
/// queues are empty and nothing is in flight twice in a row (so dying messages have had
/// their chance too). The second look is a poll, never a correctness condition: what is
/// still missing after it can only be a dead letter, counted, not failed on.
async fn drain(url: &str, ledger: &Mutex<Ledger>, progress: &Notify) {
    // A soak's ledger holds millions of ids: scan it whole only when the ids known missing
    // have all come (rejects can become known stored meanwhile), and in between look at those.
    loop {
        let mut missing = ledger.lock().strictly_missing();
        if missing.is_empty() {
            break;
        }
        let came = wait_for(ledger, progress, |l| {
            missing.retain(|&id| l.strictly_missing_one(id));
            missing.is_empty()
        })
        .await;
        if !came {
            panic!(
                "{} confirmed messages were never delivered, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        }
    }
    let (mut quiet, mut last, mut changed) = (0, None, std::time::Instant::now());
    while quiet < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let counts = ready_counts(url).await.expect("passive declares");
        let idle = counts == [0; 3] && ledger.lock().unsettled_in_flight == 0;
        quiet = if idle { quiet + 1 } else { 0 };
        if last != Some(counts) {
            (last, changed) = (Some(counts), std::time::Instant::now());
        }
        assert!(changed.elapsed() < common::HANG_GUARD, "the queues stopped draining at {counts:?} ready");
    }
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
        ledger.lock().run = round;
        let mut broker = start(&dir);
        ledger.lock().client_errors.clear();
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
        let loaded = wait_for(&ledger, &progress, |l| {
            l.confirmed.len() >= confirmed_before + more_confirms
                && l.delivered.len() >= delivered_before + more_deliveries
        })
        .await;
        if !loaded {
            let running = broker_running(&mut broker);
            let l = ledger.lock();
            panic!(
                "round {round}: load stalled at {} confirmed (waiting for {}), {} delivered (waiting for {}), \
                 {} dead-lettered; broker running: {running}, publisher ended: {}, consumer ended: {}, \
                 client errors: {:?}",
                l.confirmed.len(),
                confirmed_before + more_confirms,
                l.delivered.len(),
                delivered_before + more_deliveries,
                l.dead.len(),
                publisher.is_finished(),
                consumer.is_finished(),
                l.client_errors
            );
        }
        drop(broker); // SIGKILL (see `Drop`)
        stop.store(true, Ordering::Release);
        let _ = guard("publisher ends", publisher).await;
        stop_consumer(consumer).await;
        let mut l = ledger.lock();
        l.unsettled_in_flight = 0;
        eprintln!(
            "round {round}: killed at {} confirmed, {} delivered, {} dead-lettered",
            l.confirmed.len(),
            l.delivered.len(),
            l.dead.len()
        );
    }
    // Last run: everything confirmed must come out.
    ledger.lock().run = rounds;
    let broker = start(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(broker.url.clone(), ledger.clone(), progress.clone(), stop.clone()));
    drain(&broker.url, &ledger, &progress).await;
    stop.store(true, Ordering::Release);
    drop(broker);
    stop_consumer(consumer).await;
    let l = ledger.lock();
    assert!(l.violations.is_empty(), "violations: {:#?}", l.violations);
    assert!(!l.confirmed.is_empty() && !l.settled.is_empty() && !l.dead.is_empty(), "the load ran");
    eprintln!(
        "kill test passed: {rounds} kills, {} confirmed, {} delivered, {} dead-lettered ({} moved twice across a kill), \
         {} settlements known stored, {} dead letters of expiring messages back after an ack was stored",
        l.confirmed.len(),
        l.delivered.len(),
        l.dead.len(),
        l.dead_again,
        l.settled.len() + l.settled_dead.values().map(|&n| n as usize).sum::<usize>(),
        l.dead_back_after_ack,
    );
    for history in l.dead_back_histories() {
        eprintln!("  back after an ack was stored: {history}");
    }
    drop(l);
    let _ = std::fs::remove_dir_all(&dir);
}
