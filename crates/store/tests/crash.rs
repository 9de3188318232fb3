//! Power cuts at arbitrary points, simulated by the crash backend: after any crash, every
//! confirmed message that was not acked is recovered exactly once, in order; nothing is
//! duplicated or invented; acks and delivery marks that were committed hold. I/O errors
//! (ENOSPC, EIO, EMFILE at any call site, injected and later cleared) come and go between
//! the operations: a failed commit is retried by the next one, with the same guarantees.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use lepus_store::crash::CrashBackend;
use lepus_store::fault::{Fault, FaultBackend, Site};
use lepus_store::log::{Loc, QueueLog};
use lepus_store::record::RecordParts;
use lepus_store::store::{Store, StoreOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        body_len: usize,
    },
    /// Ack the n-th (mod count) message still in the queue (as a moved release for half the n).
    Ack(usize),
    Deliver(usize),
    Commit,
    Crash(u64),
    /// The power goes after this many changes of the next commit.
    CrashDuringCommit(u32, u64),
    /// Calls at this site fail from now on, until `Heal`.
    Fault(Site, Fault),
    Heal,
    /// Asserts the store is healthy and everything published so far is durable.
    ExpectRecovered,
}

fn site() -> impl Strategy<Value = Site> {
    prop_oneof![
        Just(Site::Open),
        Just(Site::Write),
        Just(Site::Read),
        Just(Site::Sync),
        Just(Site::SyncDir),
        Just(Site::Remove),
        Just(Site::CreateDir),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![Just(Fault::NoSpace), Just(Fault::Io), Just(Fault::TooManyFiles)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..120).prop_map(|body_len| Op::Publish { body_len }),
        3 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Deliver),
        3 => Just(Op::Commit),
        1 => any::<u64>().prop_map(Op::Crash),
        1 => (0u32..12, any::<u64>()).prop_map(|(n, seed)| Op::CrashDuringCommit(n, seed)),
        1 => (site(), fault()).prop_map(|(site, fault)| Op::Fault(site, fault)),
        1 => Just(Op::Heal),
    ]
}

fn parts(id: u64, body_len: usize) -> RecordParts<Vec<u8>> {
    let mut data = b"xk".to_vec();
    data.extend_from_slice(&id.to_le_bytes());
    data.resize(2 + 8 + body_len, id as u8);
    RecordParts { timestamp_ms: id * 10, exchange_len: 1, routing_key_len: 1, properties_len: 0, data }
}

fn id_of(p: &RecordParts<Vec<u8>>) -> u64 {
    u64::from_le_bytes(p.data[2..10].try_into().unwrap())
}

/// One message as the test tracks it.
#[derive(Debug, Clone)]
struct Msg {
    loc: Loc,
    body_len: usize,
    stamp: u64,
    /// Stamp of the ack, once acked.
    acked: Option<u64>,
    delivered: Option<u64>,
}

struct World {
    backend: CrashBackend,
    faults: FaultBackend,
    store: Store,
    log: QueueLog,
    /// id → message, for messages that may still exist.
    msgs: BTreeMap<u64, Msg>,
    next_id: u64,
}

const ROOT: &str = "/data";

/// (id, location, delivered, record) of each recovered message.
type Found = Vec<(u64, Loc, bool, RecordParts<Vec<u8>>)>;

fn open(backend: CrashBackend) -> (Store, QueueLog, Found) {
    let (store, log, found, _) = open_with_faults(backend);
    (store, log, found)
}

/// Opens the store through a [`FaultBackend`] (no fault injected yet) over `backend`.
fn open_with_faults(backend: CrashBackend) -> (Store, QueueLog, Found, FaultBackend) {
    let faults = FaultBackend::new(Arc::new(backend));
    let options = StoreOptions { segment_size: 300, open_files_max: 3, ..StoreOptions::default() };
    let store = Store::new(Arc::new(faults.clone()), Path::new(ROOT), options);
    // The first three messages come back resident, the rest are read back through the log.
    let (log, recovered, _report) = QueueLog::recover(&store, 1, 3, u64::MAX).expect("recovery never fails on damage");
    let found = recovered
        .into_iter()
        .map(|r| {
            let parts = r.parts.unwrap_or_else(|| log.read(r.loc).expect("paged record reads back"));
            assert_eq!(parts.data.len(), r.size as usize);
            (id_of(&parts), r.loc, r.delivered, parts)
        })
        .collect();
    (store, log, found, faults)
}

fn run(ops: Vec<Op>) {
    let backend = CrashBackend::new();
    let (store, log, found, faults) = open_with_faults(backend.clone());
    assert!(found.is_empty());
    let mut w = World { backend, faults, store, log, msgs: BTreeMap::new(), next_id: 0 };
    for op in ops {
        match op {
            Op::Publish { body_len } => {
                let id = w.next_id;
                w.next_id += 1;
                let (loc, stamp) = w.log.append(&parts(id, body_len));
                w.msgs.insert(id, Msg { loc, body_len, stamp, acked: None, delivered: None });
            }
            Op::Ack(n) | Op::Deliver(n) => {
                let live: Vec<u64> = w.msgs.iter().filter(|(_, m)| m.acked.is_none()).map(|(id, _)| *id).collect();
                if live.is_empty() {
                    continue;
                }
                let m = w.msgs.get_mut(&live[n % live.len()]).unwrap();
                if matches!(op, Op::Ack(_)) {
                    // Some acks are releases of moved messages (dead letters): written in the
                    // commit's second phase, with the same guarantees.
                    let moved = (n / 7) % 2 == 1;
                    m.acked = Some(if moved { w.log.forget_moved(m.loc) } else { w.log.forget(m.loc) });
                } else if m.delivered.is_none() {
                    w.log.mark_delivered(m.loc);
                    m.delivered = Some(w.store.generation_for_tests());
                }
            }
            Op::Commit => {
                w.store.commit();
            }
            Op::Fault(site, fault) => w.faults.inject(site, fault),
            Op::Heal => w.faults.clear(),
            Op::ExpectRecovered => {
                assert!(!w.store.failed(), "a commit after the faults cleared succeeds");
                let durable = w.store.durable();
                assert!(w.msgs.values().all(|m| m.stamp <= durable), "every publish is durable once a commit succeeds");
            }
            Op::Crash(_) | Op::CrashDuringCommit(..) => {
                let seed = match op {
                    Op::CrashDuringCommit(changes, seed) => {
                        w.backend.fail_after(changes);
                        w.store.commit();
                        seed
                    }
                    Op::Crash(seed) => seed,
                    _ => unreachable!(),
                };
                let durable = w.store.durable();
                let after = w.backend.crash(seed);
                let (store, log, found, faults) = open_with_faults(after.clone());
                // Order and uniqueness.
                let ids: Vec<u64> = found.iter().map(|f| f.0).collect();
                assert!(ids.windows(2).all(|p| p[0] < p[1]), "recovered out of order or duplicated: {ids:?}");
                let found_ids: BTreeSet<u64> = ids.iter().copied().collect();
                for (id, loc, delivered, p) in &found {
                    let m = w
                        .msgs
                        .get(id)
                        .unwrap_or_else(|| panic!("recovered message {id} never published or already gone"));
                    assert_eq!(*p, parts(*id, m.body_len), "message {id} recovered with different bytes");
                    assert_eq!(*loc, m.loc);
                    assert!(m.acked.is_none_or(|a| a > durable), "message {id} was acked durably but came back");
                    if m.delivered.is_some_and(|d| d <= durable) {
                        assert!(delivered, "message {id} was delivered durably but came back not redelivered");
                    }
                }
                for (id, m) in &w.msgs {
                    if m.stamp <= durable && m.acked.is_none() {
                        assert!(
                            found_ids.contains(id),
                            "confirmed message {id} lost (durable {durable}, stamp {})",
                            m.stamp
                        );
                    }
                }
                // The survivors are the new truth; recovered messages keep their locations.
                w.msgs = found
                    .iter()
                    .map(|(id, loc, delivered, _)| {
                        let body_len = w.msgs[id].body_len;
                        (*id, Msg { loc: *loc, body_len, stamp: 0, acked: None, delivered: delivered.then_some(0) })
                    })
                    .collect();
                w.backend = after;
                w.faults = faults;
                w.store = store;
                w.log = log;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn confirmed_messages_survive_any_crash(mut ops in proptest::collection::vec(op(), 1..120)) {
        // In the end the faults clear: the next commit makes everything durable.
        ops.extend([Op::Heal, Op::Commit, Op::ExpectRecovered, Op::Crash(1)]);
        run(ops);
    }
}

#[test]
fn fully_acked_segments_are_deleted_while_running() {
    let backend = CrashBackend::new();
    let (store, mut log, _) = open(backend.clone());
    let locs: Vec<Loc> = (0..40).map(|id| log.append(&parts(id, 50)).0).collect();
    store.commit();
    let segments = |b: &CrashBackend| b.paths().iter().filter(|p| p.extension().is_some_and(|e| e == "seg")).count();
    let before = segments(&backend);
    assert!(before > 5, "small segments roll over: {before}");
    for loc in &locs[..30] {
        log.forget(*loc);
    }
    store.commit();
    let after = segments(&backend);
    assert!(after < before - 3, "acked segments are deleted: {before} -> {after}");
    let (_, _, found) = open(backend.crash(7));
    assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), (30..40).collect::<Vec<_>>());
}

#[test]
fn an_ack_file_whose_header_was_lost_counts_again_after_the_next_append() {
    let backend = CrashBackend::new();
    let (store, mut log, _) = open(backend.clone());
    let a = log.append(&parts(0, 10)).0;
    log.append(&parts(1, 10));
    store.commit();
    log.forget(a);
    store.commit();
    // The header of the ack file is lost; its length and entries survive.
    let ack = backend.paths().into_iter().find(|p| p.extension().is_some_and(|e| e == "ack")).expect("ack file");
    let mut bytes = backend.read_file(&ack).expect("ack bytes");
    bytes[..16].fill(0);
    backend.write_file(&ack, bytes);
    let (store, mut log, found) = open(backend.clone());
    assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1], "the unreadable ack does not count");
    log.forget(found[0].1);
    store.commit();
    let (_, _, found) = open(backend);
    assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), [1], "the ack written after the repair counts");
}
