//! The store thread under I/O faults, and the budget of open files. A commit that fails
//! (ENOSPC, EIO or EMFILE injected through the backend seam) marks the store failing; the
//! thread retries only after its pause or when asked, and the retry after the fault cleared
//! makes everything durable; stopping while the fault lasts does not hang. A backlog spread
//! over many segments is read back through at most `open_files_max` idle handles.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use lepus_store::crash::CrashBackend;
use lepus_store::fault::{Fault, FaultBackend, Site};
use lepus_store::log::QueueLog;
use lepus_store::record::RecordParts;
use lepus_store::store::{Store, StoreOptions};

/// Upper bound on waiting for a commit that must come; hitting it is a hang (a bug).
const HANG_GUARD: Duration = Duration::from_secs(20);

fn parts(id: u64) -> RecordParts<Vec<u8>> {
    RecordParts { timestamp_ms: id, exchange_len: 0, routing_key_len: 1, properties_len: 0, data: vec![b'q'; 40] }
}

/// Waits, commit by commit, until `done` holds.
fn wait_until(store: &Store, done: impl Fn(&Store) -> bool) {
    assert!(store.wait_until(done, HANG_GUARD), "a commit came");
}

#[test]
fn the_store_thread_retries_when_asked_and_recovers_for_every_fault() {
    for fault in [Fault::NoSpace, Fault::Io, Fault::TooManyFiles] {
        for site in [Site::Open, Site::Write, Site::Sync, Site::SyncDir, Site::CreateDir] {
            let faults = FaultBackend::new(Arc::new(CrashBackend::new()));
            // A pause no test waits for: retries happen when asked.
            let options = StoreOptions { segment_size: 256, retry_interval_ms: 3_600_000, ..StoreOptions::default() };
            let store = Store::new(Arc::new(faults.clone()), Path::new("/data"), options);
            let committer = store.spawn_committer().expect("store thread");
            let mut log = QueueLog::create(&store, 1);
            faults.inject(site, fault);
            let during = (0..20).map(|id| log.append(&parts(id)).1).max().unwrap_or(0);
            wait_until(&store, Store::failed);
            assert!(faults.injected() > 0 && !store.is_durable(during), "{fault:?} at {site:?}: not durable");

            faults.clear();
            store.retry_now();
            wait_until(&store, |s| !s.failed());
            assert!(store.is_durable(during), "{fault:?} at {site:?}: the retry made it durable");

            // Stopping while failing tries once more, then stops.
            faults.inject(Site::Write, fault);
            log.append(&parts(99));
            wait_until(&store, Store::failed);
            let (stopped_tx, stopped) = mpsc::channel();
            std::thread::spawn(move || {
                drop(committer);
                let _ = stopped_tx.send(());
            });
            stopped.recv_timeout(HANG_GUARD).expect("the store thread stops while the fault lasts");
        }
    }
}

#[test]
fn a_backlog_over_many_segments_holds_a_bounded_number_of_open_files() {
    let options = StoreOptions { segment_size: 256, open_files_max: 4, ..StoreOptions::default() };
    let store = Store::new(Arc::new(CrashBackend::new()), Path::new("/data"), options);
    let mut log = QueueLog::create(&store, 1);
    let locs: Vec<_> = (0..200).map(|id| log.append(&parts(id)).0).collect();
    store.commit();
    let segments = locs.last().map_or(0, |l| l.segment) + 1;
    assert!(segments > 20, "{segments} segments");
    assert!(store.open_files_count() <= 4, "{} files open after writing", store.open_files_count());
    for (id, loc) in locs.iter().enumerate() {
        assert_eq!(log.read(*loc).expect("reads back").timestamp_ms, id as u64);
    }
    assert!(store.open_files_count() <= 4, "{} files open after reading", store.open_files_count());
    for loc in &locs[..100] {
        log.forget(*loc);
    }
    store.commit();
    assert!(store.open_files_count() <= 4, "acks through the budget too");
}
