//! A vhost over the crash-simulating store: persistent messages in durable queues are logged
//! and survive a power cut once committed; transient ones and non-durable queues are not
//! logged; a failing disk stops durability while it fails (the store reports failure, so
//! publishers get nacks) while the queue keeps serving what it holds, and once the disk
//! recovers the next commit makes everything durable, retried on the broker's clock; a
//! paged-out message that cannot be read back now stays in its place until it can, and one
//! that expires meanwhile is dead-lettered once it can; the memory-pressure sweep pages
//! queues out a step at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use lepus_broker::alarms::{AlarmLimits, MEMORY_PAGING_RATIO_DEFAULT, ResourceProbe, SAMPLE_INTERVAL_MS};
use lepus_broker::durability::{Durability, Durable};
use lepus_broker::page_sweep::SWEEP_STEP_MAX;
use lepus_broker::persist::Persistence;
use lepus_broker::queue::{Enqueued, READ_RETRY_MS, RESIDENT_MIN_MESSAGES};
use lepus_broker::users::Users;
use lepus_broker::vhost::QueueDeclare;
use lepus_broker::{Broker, BrokerParts, ManualClock, Message, MessageRef, VHost};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, FieldValue, ShortStr};
use lepus_store::backend::Backend;
use lepus_store::crash::CrashBackend;
use lepus_store::fault::{Fault, FaultBackend, Site};
use lepus_store::meta::MetaStore;
use lepus_store::store::{Store, StoreOptions};

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("lepus-broker-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

fn message(body: &str, delivery_mode: u8) -> MessageRef {
    let props = BasicProperties { delivery_mode: Some(delivery_mode), ..Default::default() };
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, body.len() as u64, &props.to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("header");
    Arc::new(Message::new(b"", b"q", &header, body))
}

fn open(backend: &CrashBackend, meta_path: &Path) -> (Store, VHost) {
    // Transient messages page out as soon as a queue passes its window (as under pressure).
    open_with(backend, meta_path, StoreOptions { transient_paging_bytes: 0, ..StoreOptions::default() })
}

fn open_with(backend: &CrashBackend, meta_path: &Path, options: StoreOptions) -> (Store, VHost) {
    open_on(Arc::new(backend.clone()), meta_path, options)
}

fn open_on(backend: Arc<dyn Backend>, meta_path: &Path, options: StoreOptions) -> (Store, VHost) {
    let (store, _, vhost) = open_parts(backend, meta_path, options);
    (store, vhost)
}

fn open_parts(backend: Arc<dyn Backend>, meta_path: &Path, options: StoreOptions) -> (Store, Arc<Persistence>, VHost) {
    let store = Store::new(backend, Path::new("/data"), options);
    let meta = MetaStore::open(meta_path).expect("meta");
    let snapshot = meta.load().expect("load");
    let persistence = Arc::new(Persistence::open(store.clone(), meta).expect("persistence"));
    let (vhost, _report) = VHost::restore("/", persistence.clone(), &snapshot, true).expect("restore");
    (store, persistence, vhost)
}

fn declare(vhost: &VHost, name: &'static str, durable: bool) -> lepus_broker::QueueRef {
    let d = QueueDeclare { name: ShortStr::from_static(name), durable, ..Default::default() };
    vhost.declare_queue(&d, 1).expect("declare").0
}

fn bodies(queue: &lepus_broker::QueueRef) -> Vec<String> {
    std::iter::from_fn(|| queue.get(None).message())
        .map(|(e, _)| String::from_utf8_lossy(e.message.body()).into_owned())
        .collect()
}

#[test]
fn committed_persistent_messages_survive_a_power_cut() {
    let tmp = temp_dir("power-cut");
    let backend = CrashBackend::new();
    let (store, vhost) = open(&backend, &tmp.0.join("meta.redb"));
    let durable = declare(&vhost, "durable", true);
    let transient = declare(&vhost, "transient", false);
    let durability = Durability::new(Some(store.clone()));
    let (_, stamp) = durable.publish_stamped(message("p1", 2), 0);
    assert!(stamp.is_pending(), "a persistent message in a durable queue is logged");
    assert_eq!(durable.publish_stamped(message("t1", 1), 0).1, Durable::NOW, "transient messages are not logged");
    assert_eq!(transient.publish_stamped(message("p2", 2), 0).1, Durable::NOW, "non-durable queues log nothing");
    assert!(!durability.is_durable(stamp));
    store.commit();
    assert!(durability.is_durable(stamp));
    let (_, unconfirmed) = durable.publish_stamped(message("p3", 2), 0);
    assert!(unconfirmed.is_pending() && !durability.is_durable(unconfirmed), "not committed yet");
    drop((vhost, store));
    // The metadata is real (redb commits durably); the message store loses what was not synced.
    let (_, vhost) = open(&backend.crash(42), &tmp.0.join("meta.redb"));
    let durable = vhost.queue(&ShortStr::from_static("durable"), 1).expect("durable queue restored");
    let got = bodies(&durable);
    assert!(got == ["p1"] || got == ["p1", "p3"], "committed message back, nothing invented: {got:?}");
    assert!(vhost.queue(&ShortStr::from_static("transient"), 1).is_err(), "non-durable queue gone");
}

#[test]
fn a_failing_disk_nacks_while_it_fails_then_recovers_without_losing_anything() {
    let tmp = temp_dir("disk-full");
    let backend = CrashBackend::new();
    let (store, vhost) = open(&backend, &tmp.0.join("meta.redb"));
    let q = declare(&vhost, "q", true);
    assert_eq!(q.publish_stamped(message("before", 2), 0).0, Enqueued::Yes);
    store.commit();
    backend.fail_io(true);
    let (outcome, during) = q.publish_stamped(message("during", 2), 0);
    assert_eq!(outcome, Enqueued::Yes);
    store.commit();
    assert!(store.failed(), "the failure is reported (the server nacks what waits on it)");
    let durability = Durability::new(Some(store.clone()));
    assert!(during.is_pending() && !durability.is_durable(during), "not confirmed while the disk fails");
    assert!(durability.failed() && durability.progress().failed);
    store.commit();
    assert!(store.failed(), "a retry while the disk still fails fails too");

    backend.fail_io(false);
    let (_, after) = q.publish_stamped(message("after", 2), 0);
    store.commit();
    assert!(!store.failed() && !durability.progress().failed, "recovered without a restart");
    assert!(durability.is_durable(during) && durability.is_durable(after), "the retry wrote what had failed");
    drop((q, vhost, store));
    let (_, vhost) = open(&backend.crash(5), &tmp.0.join("meta.redb"));
    let q = vhost.queue(&ShortStr::from_static("q"), 1).expect("restored");
    assert_eq!(bodies(&q), ["before", "during", "after"], "each message exactly once, in order");
}

/// Publishes twice the resident window plus 100 persistent messages `m0`, `m1`, … and
/// commits, so part of them live only on disk; returns how many.
fn publish_paged_backlog(store: &Store, q: &lepus_broker::QueueRef) -> usize {
    let n = lepus_broker::queue::RESIDENT_MAX_MESSAGES * 2 + 100;
    for i in 0..n {
        q.publish_stamped(message(&format!("m{i}"), 2), 0);
        if i % 1000 == 999 {
            store.commit();
        }
    }
    store.commit();
    assert!(q.paged_count() > 0, "part of the backlog lives only on disk");
    n
}

#[test]
fn a_paged_out_message_that_cannot_be_read_now_stays_in_place_until_it_can() {
    let tmp = temp_dir("unreadable");
    let faults = FaultBackend::new(Arc::new(CrashBackend::new()));
    let options = StoreOptions { transient_paging_bytes: 0, ..StoreOptions::default() };
    let (store, vhost) = open_on(Arc::new(faults.clone()), &tmp.0.join("meta.redb"), options);
    let q = declare(&vhost, "backlog", true);
    let n = publish_paged_backlog(&store, &q);
    faults.inject(Site::Read, Fault::TooManyFiles);
    let mut got = bodies(&q);
    let served = got.len();
    assert!(served < n, "reading stops at the first message that cannot be read");
    assert_eq!(q.message_count() as usize, n - served, "the unreadable messages are kept");
    faults.clear();
    got.extend(bodies(&q));
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == format!("m{i}")), "every message, in order, none lost");
}

#[test]
fn a_backlog_beyond_the_window_is_paged_out_and_served_in_order() {
    let tmp = temp_dir("paging");
    let backend = CrashBackend::new();
    let (store, vhost) = open(&backend, &tmp.0.join("meta.redb"));
    let q = declare(&vhost, "backlog", true);
    let n = publish_paged_backlog(&store, &q);
    assert!(q.message_count() as usize == n);
    // Reopen: recovery loads a window and leaves the rest on disk.
    drop((q, vhost, store));
    let (_store, vhost) = open(&backend, &tmp.0.join("meta.redb"));
    let q = vhost.queue(&ShortStr::from_static("backlog"), 1).expect("restored");
    assert_eq!(q.paged_count() as usize, n - lepus_broker::queue::RESIDENT_MAX_MESSAGES);
    // The tail is on disk: its body bytes are the paged-out bytes the API shows.
    let tail_bytes: usize = (lepus_broker::queue::RESIDENT_MAX_MESSAGES..n).map(|i| format!("m{i}").len()).sum();
    assert_eq!(q.inspect_counts().paged_out_bytes, tail_bytes as u64);
    // Every one is persistent, resident or paged out (RabbitMQ's `messages_persistent`).
    let all_bytes: usize = (0..n).map(|i| format!("m{i}").len()).sum();
    assert_eq!((q.inspect_counts().persistent as usize, q.inspect_counts().persistent_bytes), (n, all_bytes as u64));
    let got = bodies(&q);
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == format!("m{i}")), "every message, in order");
    assert_eq!(q.inspect_counts().paged_out_bytes, 0);
    assert_eq!(q.inspect_counts().persistent, 0);
}

#[test]
fn transient_backlogs_page_out_through_a_scratch_log() {
    let tmp = temp_dir("scratch");
    let backend = CrashBackend::new();
    let (store, vhost) = open(&backend, &tmp.0.join("meta.redb"));
    let transient_queue = declare(&vhost, "transient-backlog", false);
    let durable_queue = declare(&vhost, "mixed-backlog", true);
    let n = lepus_broker::queue::RESIDENT_MAX_MESSAGES * 2 + 100;
    for i in 0..n {
        transient_queue.publish_stamped(message(&format!("t{i}"), 1), 0);
        // Transient and persistent messages interleaved in a durable queue.
        durable_queue.publish_stamped(message(&format!("d{i}"), (i % 2 + 1) as u8), 0);
        if i % 1000 == 999 {
            store.commit();
        }
    }
    store.commit();
    assert!(transient_queue.paged_count() > 0, "transient messages page out too");
    assert!(durable_queue.paged_count() > 0);
    // Half of the durable queue's are persistent, wherever they are; a transient queue has none.
    assert_eq!(durable_queue.inspect_counts().persistent as usize, n / 2);
    assert_eq!(transient_queue.inspect_counts().persistent, 0);
    let scratch_files = |b: &CrashBackend| b.paths().iter().filter(|p| p.starts_with("/data/scratch")).count();
    assert!(scratch_files(&backend) > 0, "through scratch segments");
    let got = bodies(&transient_queue);
    assert!(got.len() == n && got.iter().enumerate().all(|(i, b)| *b == format!("t{i}")), "all, in order");
    let got = bodies(&durable_queue);
    assert!(got.len() == n && got.iter().enumerate().all(|(i, b)| *b == format!("d{i}")), "all, in order");
    store.commit();
    assert_eq!(scratch_files(&backend), 4, "drained scratch logs keep only their current segment and its ack file");
    // Scratch logs do not survive a restart.
    store.remove_scratch().expect("remove scratch");
    assert_eq!(scratch_files(&backend), 0);
}

#[test]
fn without_memory_pressure_transient_messages_stay_in_memory() {
    let tmp = temp_dir("no-pressure");
    let backend = CrashBackend::new();
    let (store, vhost) = open_with(&backend, &tmp.0.join("meta.redb"), StoreOptions::default());
    let q = declare(&vhost, "in-memory", false);
    for i in 0..lepus_broker::queue::RESIDENT_MAX_MESSAGES * 2 {
        q.publish_stamped(message(&format!("t{i}"), 1), 0);
    }
    store.commit();
    q.publish_stamped(message("last", 1), 0);
    assert_eq!(q.paged_count(), 0, "no copies written while memory is plentiful");
    assert!(backend.paths().is_empty(), "nothing on disk");
}

/// Memory in use as a test sets it; no disk reading.
#[derive(Debug)]
struct FakeMemory(Arc<AtomicU64>);

impl ResourceProbe for FakeMemory {
    fn memory_used_bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn disk_free_bytes(&self) -> Option<u64> {
        None
    }
}

struct NoWake;

impl lepus_broker::Wake for NoWake {
    fn wake(&self) {}
}

#[test]
fn above_the_paging_fraction_of_the_watermark_queued_transient_messages_page_out_and_come_back_in_order() {
    let tmp = temp_dir("memory-paging");
    let backend = CrashBackend::new();
    let (store, persistence, vhost) =
        open_parts(Arc::new(backend.clone()), &tmp.0.join("meta.redb"), StoreOptions::default());
    let clock = Arc::new(ManualClock::new(0));
    let broker = broker_on(vhost, persistence, clock.clone());
    let memory = Arc::new(AtomicU64::new(400));
    let limits = AlarmLimits { memory_limit_bytes: 1000, disk_free_limit_bytes: 0 };
    broker.watch_resources(Box::new(FakeMemory(memory.clone())), limits);
    broker.page_under_memory_pressure(MEMORY_PAGING_RATIO_DEFAULT);
    let sample = || {
        clock.advance(SAMPLE_INTERVAL_MS);
        // The sample, then the sweep it starts.
        while broker.timers().fire_due() > 0 {}
    };
    let q = declare(&broker.vhost("/").expect("vhost"), "transient", false);
    let n = 2_000;
    for i in 0..n {
        q.publish_stamped(message(&format!("t{i}"), 1), 0);
    }
    store.commit();
    sample();
    assert_eq!(q.paged_count(), 0, "within the window and below the paging fraction: all in memory");

    memory.store(501, Ordering::Relaxed);
    sample(); // the queue, idle, is swept: its messages are copied to its scratch log
    assert!(broker.alarms().paging() && !broker.alarms().any(), "paging, ahead of the alarm");
    store.commit();
    sample(); // their copies are written: they page out
    assert_eq!(q.paged_count() as usize, n - RESIDENT_MIN_MESSAGES, "only the head stays in memory");
    assert!(backend.paths().iter().any(|p| p.starts_with("/data/scratch")), "on disk");

    memory.store(100, Ordering::Relaxed);
    sample();
    assert!(!broker.alarms().paging());
    let got = bodies(&q);
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == format!("t{i}")), "every message intact, in order");
}

/// How the message of [`dead_letter_move_cut_after`] dies.
#[derive(Clone, Copy, Debug)]
enum Death {
    Expired,
    Rejected,
}

/// What follows the death in [`dead_letter_move_cut_after`].
#[derive(Clone, Copy, Debug)]
enum Then {
    /// The store's next commit.
    Commit,
    /// `queue.delete` of `work` (whose log is removed at the next start once its deletion is
    /// stored), with no commit of the store's own before it.
    DeleteSource,
}

/// A broker over the crash backend with two durable queues: `work` (dead-lettering into
/// `dead` through the default exchange) holding `dies` (persistent, expiring after 10 ms)
/// and `stays`, both committed. Then `work` gets another publish (so its log is written
/// first in the next commit), `dies` dies (`death`), and what follows (`then`: the next
/// commit, or `work` deleted) has its store writes cut after `cut` changes. Returns the disk
/// as the cut left it.
fn dead_letter_move_cut_after(meta_path: &Path, cut: u32, death: Death, then: Then) -> CrashBackend {
    use lepus_protocol::{FieldTable, FieldValue};
    let backend = CrashBackend::new();
    let (store, persistence, vhost) = open_parts(Arc::new(backend.clone()), meta_path, StoreOptions::default());
    let clock = Arc::new(ManualClock::new(1_000));
    let broker = broker_on(vhost, persistence, clock.clone());
    let vhost = broker.vhost("/").expect("vhost");
    declare(&vhost, "dead", true);
    let args = FieldTable::new()
        .with("x-dead-letter-exchange", FieldValue::LongStr("".into()))
        .with("x-dead-letter-routing-key", FieldValue::LongStr("dead".into()));
    let d = QueueDeclare { name: ShortStr::from_static("work"), durable: true, arguments: args, ..Default::default() };
    let work = vhost.declare_queue(&d, 1).expect("declare").0;
    let props =
        BasicProperties { delivery_mode: Some(2), expiration: Some(ShortStr::from_static("10")), ..Default::default() };
    let mut payload = BytesMut::new();
    ContentHeader::encode_payload(&mut payload, 4, &props.to_raw());
    let header = ContentHeader::decode(payload.freeze()).expect("header");
    work.publish_stamped(Arc::new(Message::new(b"", b"work", &header, "dies")), 1_000);
    work.publish_stamped(message("stays", 2), 1_000);
    store.commit();
    work.publish_stamped(message("later", 2), 1_000);
    match death {
        Death::Expired => {
            clock.advance(10);
            while broker.timers().fire_due() > 0 {}
        }
        Death::Rejected => {
            let (entry, _) = work.get(None).message().expect("the head");
            work.discard(None, &[(entry.seq, entry.message)]);
        }
    }
    assert_eq!(bodies(&vhost.queue(&ShortStr::from_static("dead"), 1).expect("dead")), ["dies"], "{death:?}");
    backend.fail_after(cut);
    match then {
        Then::Commit => drop(store.commit()),
        // Refused (541) if the store fails before the dead letter is durable in `dead`.
        Then::DeleteSource => drop(vhost.delete_queue(&ShortStr::from_static("work"), false, false, 1)),
    }
    drop((broker, vhost, work, store));
    backend
}

#[test]
fn a_dead_letter_survives_a_crash_at_any_point_of_its_move() {
    let tmp = temp_dir("dead-letter-move");
    for death in [Death::Expired, Death::Rejected] {
        for cut in 0..30 {
            let meta_path = tmp.0.join(format!("meta-{death:?}-{cut}.redb"));
            let disk = dead_letter_move_cut_after(&meta_path, cut, death, Then::Commit);
            let images = std::iter::once(("kill -9".to_owned(), disk.kill()))
                .chain((0..8).map(|seed| (format!("power cut, seed {seed}"), disk.crash(seed))));
            for (what, image) in images {
                let (_, vhost) = open(&image, &meta_path);
                let queue = |name: &'static str| bodies(&vhost.queue(&ShortStr::from_static(name), 1).expect(name));
                let (work, dead) = (queue("work"), queue("dead"));
                assert!(work.contains(&"stays".to_owned()), "{death:?}, {what} after {cut} changes: {work:?}");
                assert!(
                    work.contains(&"dies".to_owned()) || dead.contains(&"dies".to_owned()),
                    "{death:?}, {what} after {cut} changes: the dead letter is lost (work {work:?}, dead {dead:?})"
                );
            }
        }
    }
}

/// A dead letter moved out of a queue deleted right after (before the store's own commit):
/// the deletion waits for the dead letter to be durable in its target, so a crash at any
/// point leaves it there, or the queue (and the message in one of the two) if the deletion
/// was refused because the store failed first.
#[test]
fn a_dead_letter_survives_its_source_deleted_right_after_and_a_crash_at_any_point() {
    let tmp = temp_dir("dead-letter-then-delete");
    for death in [Death::Expired, Death::Rejected] {
        for cut in 0..30 {
            let meta_path = tmp.0.join(format!("meta-{death:?}-{cut}.redb"));
            let disk = dead_letter_move_cut_after(&meta_path, cut, death, Then::DeleteSource);
            let images = std::iter::once(("kill -9".to_owned(), disk.kill()))
                .chain((0..8).map(|seed| (format!("power cut, seed {seed}"), disk.crash(seed))));
            for (what, image) in images {
                let (_, vhost) = open(&image, &meta_path);
                let dead = bodies(&vhost.queue(&ShortStr::from_static("dead"), 1).expect("dead"));
                let work = vhost.queue(&ShortStr::from_static("work"), 1).ok().map(|q| bodies(&q));
                let kept =
                    dead.contains(&"dies".to_owned()) || work.as_ref().is_some_and(|w| w.contains(&"dies".to_owned()));
                assert!(
                    kept,
                    "{death:?}, {what} after {cut} changes: the dead letter is lost (work {work:?}, dead {dead:?})"
                );
            }
        }
    }
}

/// A broker holding `vhost`, on `clock`.
fn broker_on(vhost: VHost, persistence: Arc<Persistence>, clock: Arc<ManualClock>) -> Arc<Broker> {
    Arc::new(Broker::new(BrokerParts {
        vhosts: vec![vhost],
        users: Users::new(Vec::new()),
        access_control: Default::default(),
        clock,
        persistence: Some(persistence),
        timer_wake: Box::new(NoWake),
    }))
}

#[test]
fn the_paging_sweep_pages_every_queue_out_a_step_at_a_time() {
    let tmp = temp_dir("paging-sweep");
    let (store, persistence, vhost) =
        open_parts(Arc::new(CrashBackend::new()), &tmp.0.join("meta.redb"), StoreOptions::default());
    let clock = Arc::new(ManualClock::new(0));
    let broker = broker_on(vhost, persistence, clock.clone());
    let memory = Arc::new(AtomicU64::new(501));
    let limits = AlarmLimits { memory_limit_bytes: 1000, disk_free_limit_bytes: 0 };
    broker.page_under_memory_pressure(MEMORY_PAGING_RATIO_DEFAULT);
    let vhost = broker.vhost("/").expect("vhost");
    let queues: Vec<_> = (0..3 * SWEEP_STEP_MAX + 1)
        .map(|i| {
            let d = QueueDeclare {
                name: ShortStr::try_from(format!("q{i}").as_str()).expect("name"),
                ..Default::default()
            };
            vhost.declare_queue(&d, 1).expect("declare").0
        })
        .collect();
    let per_queue = RESIDENT_MIN_MESSAGES + 10;
    for q in &queues {
        for i in 0..per_queue {
            q.publish_stamped(message(&format!("t{i}"), 1), 0);
        }
    }
    // The sample (at start) pages nothing itself: it starts the sweep.
    broker.watch_resources(Box::new(FakeMemory(memory.clone())), limits);
    assert!(broker.alarms().paging());
    assert_eq!(broker.paging_sweep_remaining(), queues.len());
    let mut firings = 0;
    while broker.paging_sweep_remaining() > 0 {
        let before = broker.paging_sweep_remaining();
        assert!(broker.timers().fire_due() > 0, "the sweep's next step is due at once");
        assert!(before - broker.paging_sweep_remaining() <= SWEEP_STEP_MAX, "a step pages at most {SWEEP_STEP_MAX}");
        firings += 1;
    }
    assert!(firings >= 4, "{} queues take several steps", queues.len());
    // Their scratch copies written, the next sweep pages every queue out.
    store.commit();
    clock.advance(SAMPLE_INTERVAL_MS);
    while broker.timers().fire_due() > 0 {}
    assert!(
        queues.iter().all(|q| q.paged_count() as usize == per_queue - RESIDENT_MIN_MESSAGES),
        "every queue paged out"
    );
    memory.store(100, Ordering::Relaxed);
    clock.advance(SAMPLE_INTERVAL_MS);
    while broker.timers().fire_due() > 0 {}
    for q in &queues {
        let got = bodies(q);
        assert!(
            got.len() == per_queue && got.iter().enumerate().all(|(i, b)| *b == format!("t{i}")),
            "intact, in order"
        );
    }
}

/// Turns a hang into a failure; never measures speed.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// A broker on a manual clock over a store whose backend injects faults.
struct FaultyBroker {
    _tmp: TempDir,
    faults: FaultBackend,
    store: Store,
    clock: Arc<ManualClock>,
    broker: Arc<Broker>,
}

fn faulty_broker(name: &str, options: StoreOptions) -> FaultyBroker {
    let tmp = temp_dir(name);
    let faults = FaultBackend::new(Arc::new(CrashBackend::new()));
    let (store, persistence, vhost) = open_parts(Arc::new(faults.clone()), &tmp.0.join("meta.redb"), options);
    let clock = Arc::new(ManualClock::new(0));
    let broker = broker_on(vhost, persistence, clock.clone());
    FaultyBroker { _tmp: tmp, faults, store, clock, broker }
}

#[test]
fn a_failed_commit_is_retried_after_the_retry_interval_on_the_broker_clock() {
    // As the server opens it: retries only when the broker asks.
    let options = StoreOptions { retry_interval_ms: 0, ..StoreOptions::default() };
    let FaultyBroker { _tmp, faults, store, clock, broker } = faulty_broker("retry-clock", options);
    broker.retry_store_every(1000);
    let committer = store.spawn_committer().expect("store thread");
    let q = declare(&broker.vhost("/").expect("vhost"), "q", true);
    let durability = Durability::new(Some(store.clone()));
    faults.inject(Site::Write, Fault::Io);
    let (_, during) = q.publish_stamped(message("during", 2), 0);
    assert!(store.wait_until(Store::failed, HANG_GUARD));
    faults.clear();
    clock.advance(999);
    broker.timers().fire_due();
    // Nothing else retries (the store thread waits to be asked), so this holds.
    assert!(store.failed() && !durability.is_durable(during), "no retry before the interval has passed");
    clock.advance(1);
    broker.timers().fire_due();
    assert!(store.wait_until(|s| !s.failed(), HANG_GUARD));
    assert!(durability.is_durable(during), "the retry made it durable");
    drop(committer);
}

#[test]
fn a_message_expiring_while_its_paged_out_record_cannot_be_read_is_dead_lettered_once_it_can() {
    let options = StoreOptions { transient_paging_bytes: 0, ..StoreOptions::default() };
    let FaultyBroker { _tmp, faults, store, clock, broker } = faulty_broker("expire-unreadable", options);
    let vhost = broker.vhost("/").expect("vhost");
    let dlq = declare(&vhost, "dlq", false);
    let args = FieldTable::new()
        .with("x-message-ttl", FieldValue::I32(1000))
        .with("x-dead-letter-exchange", "")
        .with("x-dead-letter-routing-key", "dlq");
    let d =
        QueueDeclare { name: ShortStr::from_static("backlog"), durable: true, arguments: args, ..Default::default() };
    let q = vhost.declare_queue(&d, 1).expect("declare").0;
    let n = publish_paged_backlog(&store, &q);
    faults.inject(Site::Read, Fault::TooManyFiles);
    clock.advance(1000);
    while broker.timers().fire_due() > 0 {}
    let early = dlq.message_count() as usize;
    assert!(early < n, "expiry stops at the first message that cannot be read");
    assert_eq!(q.message_count() as usize, n - early, "the others are kept, none lost");
    // The read is retried on the broker's clock: once it succeeds, the rest expire.
    faults.clear();
    clock.advance(READ_RETRY_MS);
    while broker.timers().fire_due() > 0 {}
    assert_eq!(q.message_count(), 0);
    let got = bodies(&dlq);
    assert_eq!(got.len(), n, "every message dead-lettered once");
    assert!(got.iter().enumerate().all(|(i, b)| *b == format!("m{i}")), "in order");
}

#[test]
fn a_head_dropped_by_max_length_while_its_paged_out_record_cannot_be_read_is_dead_lettered_once_it_can() {
    let options = StoreOptions { transient_paging_bytes: 0, ..StoreOptions::default() };
    let FaultyBroker { _tmp, faults, store, clock, broker } = faulty_broker("maxlen-unreadable", options);
    let vhost = broker.vhost("/").expect("vhost");
    let dlq = declare(&vhost, "dlq", false);
    let n = lepus_broker::queue::RESIDENT_MAX_MESSAGES * 2 + 100;
    let args = FieldTable::new()
        .with("x-max-length", FieldValue::I64(n as i64))
        .with("x-dead-letter-exchange", "")
        .with("x-dead-letter-routing-key", "dlq");
    let d =
        QueueDeclare { name: ShortStr::from_static("backlog"), durable: true, arguments: args, ..Default::default() };
    let q = vhost.declare_queue(&d, 1).expect("declare").0;
    assert_eq!(publish_paged_backlog(&store, &q), n, "at its limit, nothing dropped yet");
    // Enough more to drop every resident head and reach the paged-out ones.
    let extra = lepus_broker::queue::RESIDENT_MAX_MESSAGES + 100;
    faults.inject(Site::Read, Fault::TooManyFiles);
    for i in n..n + extra {
        q.publish_stamped(message(&format!("m{i}"), 2), 0);
    }
    store.commit();
    let early = dlq.message_count() as usize;
    assert!(early < extra, "dropping stops at the first head that cannot be read");
    assert_eq!(q.message_count() as usize + early, n + extra, "over its limit meanwhile, nothing lost");
    // The read is retried on the broker's clock: once it succeeds, the drops go on.
    faults.clear();
    clock.advance(READ_RETRY_MS);
    while broker.timers().fire_due() > 0 {}
    assert_eq!(q.message_count() as usize, n, "within its limit again");
    let (first, _) = dlq.get(None).message().expect("a dead letter");
    let headers = first.message.properties().expect("properties").headers.unwrap_or_default();
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else { panic!("no x-death: {headers:?}") };
    let death = deaths[0].as_table().expect("table");
    assert_eq!(death.get("reason").and_then(FieldValue::as_str), Some("maxlen"));
    assert_eq!(death.get("queue").and_then(FieldValue::as_str), Some("backlog"));
    let mut got = vec![String::from_utf8_lossy(first.message.body()).into_owned()];
    got.extend(bodies(&dlq));
    assert_eq!(got.len(), extra, "every dropped head dead-lettered once");
    assert!(got.iter().enumerate().all(|(i, b)| *b == format!("m{i}")), "in order");
    assert!(bodies(&q).iter().enumerate().all(|(i, b)| *b == format!("m{}", extra + i)), "the rest kept, in order");
}
