//! A message moved from one log to another (a dead letter: appended to the target, then
//! released in the source) survives a crash at any point of the commit that writes the move,
//! after a `kill -9` (every write made so far kept) and after a power cut (the synced state
//! plus any prefix of later writes): it is in the target, or still in the source, or both.
//! With a plain release ([`QueueLog::forget`]) some crash point loses it: the commit writes
//! its logs one after another, the source first here.

use std::path::Path;
use std::sync::Arc;

use lepus_store::crash::CrashBackend;
use lepus_store::log::QueueLog;
use lepus_store::record::RecordParts;
use lepus_store::store::{Store, StoreOptions};

const ROOT: &str = "/data";
const SOURCE: u64 = 1;
const TARGET: u64 = 2;
/// The message that moves; [`KEPT`] stays in the source.
const MOVED: u64 = 7;
const KEPT: u64 = 8;
/// More changes than a moving commit makes: the last cut falls after it is done.
const CUTS: u32 = 30;
const POWER_CUT_SEEDS: u64 = 64;

fn parts(id: u64) -> RecordParts<Vec<u8>> {
    let mut data = b"xk".to_vec();
    data.extend_from_slice(&id.to_le_bytes());
    data.resize(40, id as u8);
    RecordParts { timestamp_ms: id, exchange_len: 1, routing_key_len: 1, properties_len: 0, data }
}

fn store(backend: &CrashBackend, one_record_segments: bool) -> Store {
    let segment_size = if one_record_segments { 1 } else { StoreOptions::default().segment_size };
    let options = StoreOptions { segment_size, ..StoreOptions::default() };
    Store::new(Arc::new(backend.clone()), Path::new(ROOT), options)
}

/// How the source releases the moved message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Release {
    Plain,
    Moved,
}

/// Stores [`MOVED`] and [`KEPT`] in the source, then moves [`MOVED`] to the target in a
/// commit cut after `cut` changes; returns the disk as the cut left it. With
/// `one_record_segments` the release deletes the moved message's segment instead of writing
/// an ack entry.
fn move_cut_after(cut: u32, release: Release, one_record_segments: bool) -> CrashBackend {
    let backend = CrashBackend::new();
    let store = store(&backend, one_record_segments);
    let mut source = QueueLog::create(&store, SOURCE);
    let (moved_loc, _) = source.append(&parts(MOVED));
    let (kept_loc, _) = source.append(&parts(KEPT));
    store.commit();
    // The source has other changes in the same commit, registered first: written first.
    source.mark_delivered(kept_loc);
    let mut target = QueueLog::create(&store, TARGET);
    target.append(&parts(MOVED));
    match release {
        Release::Plain => source.forget(moved_loc),
        Release::Moved => source.forget_moved(moved_loc),
    };
    backend.fail_after(cut);
    store.commit();
    backend
}

/// The ids in queue `id`'s log after recovery from `disk`.
fn recovered(disk: &CrashBackend, id: u64) -> Vec<u64> {
    let store = store(disk, false);
    let (_, messages, _) = QueueLog::recover(&store, id, usize::MAX, u64::MAX).expect("recovery");
    messages
        .iter()
        .map(|m| u64::from_le_bytes(m.parts.as_ref().expect("resident").data[2..10].try_into().unwrap()))
        .collect()
}

/// Every crash image of every cut: (what it is, the disk).
fn images(release: Release, one_record_segments: bool) -> Vec<(String, CrashBackend)> {
    let mut images = Vec::new();
    for cut in 0..CUTS {
        let disk = move_cut_after(cut, release, one_record_segments);
        images.push((format!("kill -9 after {cut} changes"), disk.kill()));
        for seed in 0..POWER_CUT_SEEDS {
            images.push((format!("power cut after {cut} changes, seed {seed}"), disk.crash(seed)));
        }
    }
    images
}

/// The crash images in which the moved message is in neither log.
fn losses(release: Release, one_record_segments: bool) -> Vec<String> {
    images(release, one_record_segments)
        .into_iter()
        .filter(|(_, disk)| {
            let (source, target) = (recovered(disk, SOURCE), recovered(disk, TARGET));
            assert!(source.contains(&KEPT), "the message that stays is always recovered");
            !source.contains(&MOVED) && !target.contains(&MOVED)
        })
        .map(|(what, _)| what)
        .collect()
}

#[test]
fn a_moved_release_never_loses_the_message() {
    for one_record_segments in [false, true] {
        let lost = losses(Release::Moved, one_record_segments);
        assert!(lost.is_empty(), "moved message lost (segment deleted: {one_record_segments}): {lost:?}");
    }
}

#[test]
fn a_plain_release_in_the_same_commit_can_lose_it() {
    for one_record_segments in [false, true] {
        let lost = losses(Release::Plain, one_record_segments);
        assert!(
            lost.iter().any(|what| what.starts_with("kill -9")),
            "a plain release written first loses the message at a kill (segment deleted: {one_record_segments})"
        );
    }
}

#[test]
fn a_completed_move_is_in_the_target_only() {
    for release in [Release::Plain, Release::Moved] {
        for one_record_segments in [false, true] {
            let disk = move_cut_after(CUTS, release, one_record_segments).crash(1);
            assert_eq!(recovered(&disk, SOURCE), vec![KEPT], "{release:?}");
            assert_eq!(recovered(&disk, TARGET), vec![MOVED], "{release:?}");
        }
    }
}
