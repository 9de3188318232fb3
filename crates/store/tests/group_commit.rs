//! The group commit under concurrency: appends racing the store thread all become durable
//! without any further append to trigger another commit, and a waiter is woken once they do.
//! (Whether a given run hits the race where an append lands in a commit already under way
//! depends on scheduling; `crates/server/tests/persistence.rs` hit it reliably before the
//! commit learnt to publish the next generation when that happens.)

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use lepus_store::crash::CrashBackend;
use lepus_store::log::QueueLog;
use lepus_store::record::RecordParts;
use lepus_store::store::{Store, StoreOptions, Waker};

struct ChannelWaker(mpsc::Sender<()>);

impl Waker for ChannelWaker {
    fn wake(&self) {
        let _ = self.0.send(());
    }
}

/// Upper bound on waiting for a commit that must come; hitting it is a hang (a bug).
const HANG_GUARD: Duration = Duration::from_secs(20);

#[test]
fn every_append_racing_the_committer_becomes_durable() {
    let store = Store::new(
        Arc::new(CrashBackend::new()),
        Path::new("/data"),
        StoreOptions { segment_size: 4096, ..StoreOptions::default() },
    );
    let _committer = store.spawn_committer().expect("store thread");
    let mut logs: Vec<QueueLog> = (0..3).map(|id| QueueLog::create(&store, id)).collect();
    let (tx, rx) = mpsc::channel();
    let waker: Arc<dyn Waker> = Arc::new(ChannelWaker(tx));
    for round in 0..2_000u64 {
        let parts =
            RecordParts { timestamp_ms: round, exchange_len: 0, routing_key_len: 1, properties_len: 0, data: [b'q'] };
        let stamp = logs.iter_mut().map(|log| log.append(&parts).1).max().unwrap_or(0);
        // As a connection does: ask to be woken, then look, then wait for the wake.
        while !store.is_durable(stamp) {
            store.wake_after_commit(waker.clone());
            if store.is_durable(stamp) {
                break;
            }
            rx.recv_timeout(HANG_GUARD).unwrap_or_else(|_| panic!("round {round}: stamp {stamp} never became durable"));
        }
        assert!(!store.failed());
    }
    assert_eq!(logs.iter().map(|l| l.live_records()).sum::<u64>(), 6_000);
}

/// Liveness under steady load elsewhere: waiters are woken after every published generation,
/// not only when the commit loop runs out of work (which, under load, may be never).
#[test]
fn a_waiter_is_woken_while_other_logs_keep_the_committer_busy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let store = Store::new(
        Arc::new(CrashBackend::new()),
        Path::new("/data"),
        StoreOptions { segment_size: 1 << 20, ..StoreOptions::default() },
    );
    let _committer = store.spawn_committer().expect("store thread");
    let stop = Arc::new(AtomicBool::new(false));
    // Steady load on two other logs, bounded in count, stopping as soon as the waiter is done.
    let load: Vec<_> = (10..12)
        .map(|id| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut log = QueueLog::create(&store, id);
                let parts = RecordParts {
                    timestamp_ms: 0,
                    exchange_len: 0,
                    routing_key_len: 1,
                    properties_len: 0,
                    data: [b'x'],
                };
                for _ in 0..2_000_000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    log.append(&parts);
                }
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    let waker: Arc<dyn Waker> = Arc::new(ChannelWaker(tx));
    let mut log = QueueLog::create(&store, 1);
    for round in 0..200 {
        let parts =
            RecordParts { timestamp_ms: round, exchange_len: 0, routing_key_len: 1, properties_len: 0, data: [b'q'] };
        let stamp = log.append(&parts).1;
        while !store.is_durable(stamp) {
            store.wake_after_commit(waker.clone());
            if store.is_durable(stamp) {
                break;
            }
            if rx.recv_timeout(HANG_GUARD).is_err() {
                stop.store(true, Ordering::Release);
                panic!("round {round}: not woken although other logs keep committing");
            }
        }
    }
    stop.store(true, Ordering::Release);
    for t in load {
        t.join().expect("load thread");
    }
}
