//! A durable queue's message log: append-only segment files plus one ack file per segment.
//!
//! [`QueueLog`] lives inside the queue's state and is used under the queue's lock: it hands
//! out each record's location ([`Loc`]) at append time, counts records and acks per segment,
//! and decides when a segment can go (every record in it acked, and it is no longer the one
//! being appended to). The bytes themselves are buffered in the shared [`LogShared`] and
//! written by the group commit ([`crate::store`]).
//!
//! Recovery ([`QueueLog::recover`]) reads every segment in order, verifies each record's CRC,
//! applies the ack files, and returns the messages still in the queue. Appends after a
//! restart always go to a fresh segment, so an offset is never reused and an ack entry can
//! never refer to a different record than the one it was written for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::backend::FileRef;
use crate::error::{Result, StoreError};
use crate::record::{
    self, ACK_HEADER_LEN, ACK_MAGIC, AckEntry, AckMeaning, DELIVERED_BIT, Header, RecordParts, SEGMENT_HEADER_LEN,
    SEGMENT_MAGIC,
};
use crate::store::Store;

/// Where a record is: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub segment: u32,
    pub offset: u32,
}

/// A message found by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub loc: Loc,
    /// The record, or `None` once `resident_max` messages or `resident_max_bytes` bytes were
    /// loaded (read it back with [`QueueLog::read`] when needed).
    pub parts: Option<RecordParts<Vec<u8>>>,
    /// Bytes of the message (exchange, routing key, properties and body).
    pub size: u32,
    /// Bytes of its body alone.
    pub body_len: u32,
    /// When it was published (the record's stamp).
    pub timestamp_ms: u64,
    /// It had been delivered to a consumer before the restart (its redelivered flag is set).
    pub delivered: bool,
    /// How often it had come back to its queue (the highest return count written; 0 if none).
    pub returns: u32,
}

/// What recovery found wrong, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: u32,
    pub records: u64,
    /// Records already acked (not returned).
    pub acked: u64,
    /// Torn or corrupt records skipped: (segment, offset, what).
    pub damaged: Vec<(u32, u32, String)>,
    /// Segment files moved aside as unreadable.
    pub quarantined: Vec<PathBuf>,
    /// Segments whose ack file was missing or unreadable (their records all come back).
    pub missing_acks: Vec<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SegmentCount {
    records: u32,
    gone: u32,
}

/// Appends to one segment, contiguous.
struct Chunk {
    segment: u32,
    offset: u32,
    bytes: Vec<u8>,
}

/// The release of a record whose message moved to other queues (a dead letter): written only
/// once every append of its commit is synced ([`QueueLog::forget_moved`]).
#[derive(Debug, Clone, Copy)]
struct Moved {
    segment: u32,
    /// The acked offset, or `None`: the segment goes (this release was its last record).
    offset: Option<u32>,
    /// The generation it was stamped with: every append it depends on has a stamp up to this.
    stamp: u64,
}

#[derive(Default)]
pub(crate) struct Pending {
    chunks: Vec<Chunk>,
    /// (segment, entry): an acked offset, one with [`DELIVERED_BIT`] set, or a return count.
    acks: Vec<(u32, AckEntry)>,
    deletes: Vec<u32>,
    /// Releases of moved records, in order.
    moved: Vec<Moved>,
    destroy: bool,
    /// Registered with the store for the next commit.
    dirty: bool,
    /// The highest generation stamped on a change buffered here.
    pub(crate) max_stamp: u64,
}

impl Pending {
    /// Whether there is anything to write.
    pub(crate) fn has_changes(&self) -> bool {
        self.destroy || !self.chunks.is_empty() || !self.acks.is_empty() || !self.deletes.is_empty()
    }
}

/// What the commit knows of a log's files; the handles themselves are in the store's
/// budget of open files ([`crate::open_files`]).
#[derive(Default)]
struct Io {
    dir_created: bool,
    /// Segments whose file this run created (header written, directory entry to sync).
    created: HashSet<u32>,
    /// Where the next entry goes in each ack file written this run.
    ack_len: HashMap<u32, u64>,
}

/// Files a commit wrote, to be synced before the generation is published.
#[derive(Default)]
pub(crate) struct Written {
    pub files: Vec<(PathBuf, FileRef)>,
    pub dirs: Vec<PathBuf>,
    /// Files to remove once the syncs are done.
    pub after_sync: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
}

impl Written {
    fn file(&mut self, path: PathBuf, file: &FileRef) {
        if self.seen.insert(path.clone()) {
            self.files.push((path, file.clone()));
        }
    }

    pub(crate) fn dir(&mut self, path: &Path) {
        if !self.dirs.iter().any(|d| d == path) {
            self.dirs.push(path.to_owned());
        }
    }
}

/// The part of a log the store thread works on.
pub struct LogShared {
    queue_id: u64,
    dir: PathBuf,
    /// False for a scratch log (paged-out transient messages): never synced, removed at start.
    durable: bool,
    /// Everything before this location (segment << 32 | offset) has been written (`pwrite`),
    /// so it can be read back; durability is the generation's business.
    written: AtomicU64,
    pending: Mutex<Pending>,
    io: Mutex<Io>,
}

fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:010}.seg"))
}

fn ack_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:010}.ack"))
}

/// The directory of queue `id`'s log.
pub fn queue_dir(store: &Store, queue_id: u64) -> PathBuf {
    store.queues_dir().join(format!("{queue_id:016x}"))
}

impl LogShared {
    /// Takes the changes buffered so far for the commit closing generation `closing`: what it
    /// writes at once, and the releases of moved records it writes only after syncing that
    /// (see [`QueueLog::forget_moved`]). A moved release stamped after `closing` may depend
    /// on an append this commit does not hold: it stays buffered, with the deletion of its
    /// segment, for the next round (its stamp makes the commit go round again).
    pub(crate) fn take_for_commit(self: &Arc<Self>, store: &Store, closing: u64) -> (Pending, Pending) {
        let mut p = self.pending.lock();
        p.dirty = false;
        let mut now = std::mem::take(&mut *p);
        if now.moved.is_empty() {
            return (now, Pending::default());
        }
        let (ready, held): (Vec<Moved>, Vec<Moved>) = now.moved.drain(..).partition(|m| m.stamp <= closing);
        // A segment with a moved record goes only with the moved releases (a deletion releases
        // every record in it), and not at all while one of them waits.
        let waits = |segment: u32| held.iter().any(|m| m.segment == segment);
        let with_moves = |segment: u32| ready.iter().any(|m| m.segment == segment);
        let mut late = Pending::default();
        let mut kept = Vec::new();
        for segment in std::mem::take(&mut now.deletes) {
            if waits(segment) {
                p.deletes.push(segment);
            } else if with_moves(segment) {
                late.deletes.push(segment);
            } else {
                kept.push(segment);
            }
        }
        now.deletes = kept;
        for m in &ready {
            match m.offset {
                Some(offset) => late.acks.push((m.segment, AckEntry::plain(offset))),
                None => late.deletes.push(m.segment),
            }
        }
        late.moved = ready;
        if !held.is_empty() {
            p.max_stamp = held.iter().map(|m| m.stamp).max().unwrap_or(0);
            p.moved = held;
            p.dirty = true;
            store.mark_dirty(self.clone());
        }
        (now, late)
    }

    /// Puts the releases a failed commit took for after its syncs back with the rest of what
    /// it took, still as moved releases, for [`LogShared::restore_pending`].
    pub(crate) fn rejoin(mut failed: Pending, late: Pending) -> Pending {
        // Deletions that were not releases themselves go back as deletions: the next commit
        // holds them back again, with the moved releases of their segments.
        let released = |segment: u32| late.moved.iter().any(|m| m.segment == segment && m.offset.is_none());
        failed.deletes.extend(late.deletes.iter().copied().filter(|&s| !released(s)));
        failed.moved.extend(late.moved);
        failed
    }

    /// A commit that took `failed` could not make it durable: its changes go back in front
    /// of those buffered since, for the next commit to write again at the same places
    /// (rewriting a record or a header is idempotent; an ack entry written twice counts
    /// once). The files are reopened, so headers are rewritten and ack files re-measured.
    pub(crate) fn restore_pending(self: &Arc<Self>, store: &Store, failed: Pending) {
        {
            let mut io = self.io.lock();
            io.created.clear();
            io.ack_len.clear();
        }
        store.open_files().close_under(&self.dir);
        let mut p = self.pending.lock();
        let newer = std::mem::take(&mut *p);
        let mut merged = failed;
        merged.max_stamp = merged.max_stamp.max(newer.max_stamp);
        if newer.destroy {
            merged = Pending { destroy: true, max_stamp: merged.max_stamp, ..Pending::default() };
        } else {
            merged.chunks.extend(newer.chunks);
            merged.acks.extend(newer.acks);
            merged.deletes.extend(newer.deletes);
            merged.moved.extend(newer.moved);
        }
        merged.dirty = newer.dirty;
        *p = merged;
        if !p.dirty {
            p.dirty = true;
            store.mark_dirty(self.clone());
        }
    }

    /// Writes changes taken with [`LogShared::take_pending`] (called by the commit), in
    /// order, stopping at the first error: what was written stays contiguous.
    pub(crate) fn write(&self, store: &Store, pending: &mut Pending, written: &mut Written) -> Result<()> {
        let backend = store.backend();
        let mut io = self.io.lock();
        let err = |path: &Path, e: io::Error| StoreError::io(path, e);
        if pending.destroy {
            store.open_files().close_under(&self.dir);
            if io.dir_created {
                backend.remove_dir_all(&self.dir).map_err(|e| err(&self.dir, e))?;
                if self.durable {
                    written.dir(&store.queues_dir());
                }
            }
            return Ok(());
        }
        if !io.dir_created && !pending.chunks.is_empty() {
            backend.create_dir_all(&self.dir).map_err(|e| err(&self.dir, e))?;
            io.dir_created = true;
            if self.durable {
                written.dir(&store.queues_dir());
                written.dir(store.root());
            }
        }
        for chunk in &pending.chunks {
            let path = segment_path(&self.dir, chunk.segment);
            let (file, _) = store.open_files().open(backend.as_ref(), &path, true).map_err(|e| err(&path, e))?;
            if !io.created.contains(&chunk.segment) {
                file.write_at(0, &record::segment_header(self.queue_id, chunk.segment)).map_err(|e| err(&path, e))?;
                if self.durable {
                    written.dir(&self.dir);
                }
                io.created.insert(chunk.segment);
            }
            file.write_at(chunk.offset as u64, &chunk.bytes).map_err(|e| err(&path, e))?;
            if self.durable {
                written.file(path, &file);
            }
            let end =
                (chunk.segment as u64) << 32 | (chunk.offset as u64 + chunk.bytes.len() as u64).min(u32::MAX as u64);
            self.written.fetch_max(end, Ordering::AcqRel);
        }
        self.write_acks(store, &mut io, pending, written)?;
        for &segment in &pending.deletes {
            io.created.remove(&segment);
            io.ack_len.remove(&segment);
            // The segment goes first; its ack file only once that removal is durable (after
            // the commit's directory sync). Were the ack file to go first, a crash could leave
            // the segment without its acks, and acked messages would come back. An ack file
            // left alone is removed by the next recovery.
            let path = segment_path(&self.dir, segment);
            store.open_files().close(&path);
            store.open_files().close(&ack_path(&self.dir, segment));
            backend.remove_file(&path).map_err(|e| err(&path, e))?;
            if self.durable {
                written.dir(&self.dir);
            }
            written.after_sync.push(ack_path(&self.dir, segment));
        }
        Ok(())
    }

    /// Appends the buffered ack entries to their segments' ack files.
    fn write_acks(&self, store: &Store, io: &mut Io, pending: &mut Pending, written: &mut Written) -> Result<()> {
        let err = |path: &Path, e: io::Error| StoreError::io(path, e);
        let deleted: HashSet<u32> = pending.deletes.iter().copied().collect();
        let acks = &mut pending.acks;
        acks.sort_by_key(|&(segment, _)| segment);
        let mut entries = Vec::new();
        let mut i = 0;
        while i < acks.len() {
            let segment = acks[i].0;
            entries.clear();
            while i < acks.len() && acks[i].0 == segment {
                acks[i].1.encode(&mut entries);
                i += 1;
            }
            if deleted.contains(&segment) {
                continue;
            }
            let path = ack_path(&self.dir, segment);
            let (file, opened) =
                store.open_files().open(store.backend().as_ref(), &path, true).map_err(|e| err(&path, e))?;
            let len = match io.ack_len.get(&segment) {
                Some(&len) if !opened => len,
                _ => self.prepare_ack_file(&file, &path, written)?,
            };
            file.write_at(len, &entries).map_err(|e| err(&path, e))?;
            io.ack_len.insert(segment, len + entries.len() as u64);
            if self.durable {
                written.file(path, &file);
            }
        }
        Ok(())
    }

    /// Checks (or writes) an ack file's header; returns where its next entry goes.
    fn prepare_ack_file(&self, file: &FileRef, path: &Path, written: &mut Written) -> Result<u64> {
        let err = |e: io::Error| StoreError::io(path, e);
        let len = file.len().map_err(err)?;
        if len < ACK_HEADER_LEN as u64 {
            file.write_at(0, &record::ack_header()).map_err(err)?;
            if self.durable {
                written.dir(&self.dir);
            }
            return Ok(ACK_HEADER_LEN as u64);
        }
        // A header lost in a crash while the file's length survived would make recovery
        // ignore every entry: write it again.
        let mut header = [0u8; ACK_HEADER_LEN as usize];
        file.read_at(0, &mut header).map_err(err)?;
        if record::check_header(&header, &ACK_MAGIC) != Header::Valid {
            file.write_at(0, &record::ack_header()).map_err(err)?;
        }
        // Whole entries only: a torn entry from before a crash is overwritten.
        Ok(len - (len - ACK_HEADER_LEN as u64) % record::ACK_ENTRY_LEN as u64)
    }

    /// Reads the record at `loc` back from disk (it must have been written).
    pub fn read(&self, store: &Store, loc: Loc) -> Result<RecordParts<Vec<u8>>> {
        let path = segment_path(&self.dir, loc.segment);
        let err = |e: io::Error| StoreError::io(&path, e);
        let (file, _) = store.open_files().open(store.backend().as_ref(), &path, false).map_err(err)?;
        let mut prefix = [0u8; record::RECORD_PREFIX_LEN];
        file.read_at(loc.offset as u64, &mut prefix).map_err(err)?;
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let mut buf = vec![0u8; record::RECORD_PREFIX_LEN + len];
        let n = file.read_at(loc.offset as u64, &mut buf).map_err(err)?;
        let corrupt = |what: String| StoreError::io(&path, io::Error::new(io::ErrorKind::InvalidData, what));
        let (parts, _) = record::decode(&buf[..n])
            .map_err(|e| corrupt(format!("record at offset {} unreadable: {e:?}", loc.offset)))?;
        Ok(RecordParts {
            timestamp_ms: parts.timestamp_ms,
            exchange_len: parts.exchange_len,
            routing_key_len: parts.routing_key_len,
            properties_len: parts.properties_len,
            data: parts.data.to_vec(),
        })
    }
}

/// One durable queue's log, owned by the queue (see the module documentation).
pub struct QueueLog {
    store: Store,
    shared: Arc<LogShared>,
    current: u32,
    tail: u32,
    counts: BTreeMap<u32, SegmentCount>,
}

impl std::fmt::Debug for QueueLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLog").field("queue_id", &self.shared.queue_id).field("current", &self.current).finish()
    }
}

impl QueueLog {
    /// A new, empty log for queue `queue_id` (its directory is created by the first commit).
    pub fn create(store: &Store, queue_id: u64) -> QueueLog {
        QueueLog::starting_at(store, queue_id, 0, BTreeMap::new(), true)
    }

    /// A scratch log for paging out transient messages: written by the same commits, never
    /// synced, and removed at the next start ([`Store::remove_scratch`]).
    pub fn create_scratch(store: &Store) -> QueueLog {
        let id = store.next_scratch_id();
        let mut log = QueueLog::starting_at(store, id, 0, BTreeMap::new(), true);
        if let Some(shared) = Arc::get_mut(&mut log.shared) {
            shared.durable = false;
            shared.dir = store.scratch_dir().join(format!("{id:016x}"));
        }
        log
    }

    fn starting_at(
        store: &Store,
        queue_id: u64,
        segment: u32,
        counts: BTreeMap<u32, SegmentCount>,
        fresh: bool,
    ) -> QueueLog {
        let shared = Arc::new(LogShared {
            queue_id,
            dir: queue_dir(store, queue_id),
            durable: true,
            // Recovered segments are all before the first new one.
            written: AtomicU64::new((segment as u64) << 32),
            pending: Mutex::new(Pending::default()),
            io: Mutex::new(Io { dir_created: !fresh, ..Io::default() }),
        });
        QueueLog { store: store.clone(), shared, current: segment, tail: SEGMENT_HEADER_LEN, counts }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the record at `loc` has been written, so [`QueueLog::read`] can read it back.
    pub fn is_written(&self, loc: Loc) -> bool {
        ((loc.segment as u64) << 32 | loc.offset as u64) < self.shared.written.load(Ordering::Acquire)
    }

    /// Reads a written record back (a paged-out message).
    pub fn read(&self, loc: Loc) -> Result<RecordParts<Vec<u8>>> {
        self.shared.read(&self.store, loc)
    }

    /// Records still in the log (appended or recovered, not yet acked).
    pub fn live_records(&self) -> u64 {
        self.counts.values().map(|c| (c.records - c.gone) as u64).sum()
    }

    /// Buffers a record; returns where it is and the generation that makes it durable.
    pub fn append<D: AsRef<[u8]>>(&mut self, parts: &RecordParts<D>) -> (Loc, u64) {
        let len = parts.encoded_len();
        if self.tail >= self.store.inner.options.segment_size && self.counts.contains_key(&self.current) {
            let sealed = self.current;
            self.current += 1;
            self.tail = SEGMENT_HEADER_LEN;
            if self.counts.get(&sealed).is_some_and(|c| c.gone == c.records) {
                self.counts.remove(&sealed);
                self.with_pending(|p| p.deletes.push(sealed));
            }
        }
        let loc = Loc { segment: self.current, offset: self.tail };
        self.tail = self.tail.saturating_add(len as u32);
        self.counts.entry(loc.segment).or_default().records += 1;
        let stamp = self.with_pending(|p| match p.chunks.last_mut() {
            Some(c) if c.segment == loc.segment && c.offset as usize + c.bytes.len() == loc.offset as usize => {
                parts.encode(&mut c.bytes)
            }
            _ => {
                let mut bytes = Vec::with_capacity(len.max(4096));
                parts.encode(&mut bytes);
                p.chunks.push(Chunk { segment: loc.segment, offset: loc.offset, bytes });
            }
        });
        (loc, stamp)
    }

    /// The record at `loc` left the queue (acked, or dropped): it will not be recovered.
    /// Returns the generation that makes that durable.
    pub fn forget(&mut self, loc: Loc) -> u64 {
        let delete = self.count_gone(loc);
        self.with_pending(|p| {
            if delete {
                p.deletes.push(loc.segment);
            } else {
                p.acks.push((loc.segment, AckEntry::plain(loc.offset)));
            }
        })
    }

    /// [`QueueLog::forget`] for a record whose message was moved to other queues (a dead
    /// letter appended to them just before): the release is written only after the commit
    /// that writes it has synced every append (its first phase), so a crash keeps the
    /// message in the target queues or here, possibly both, never neither. Costs that commit
    /// a second round of syncs; commits without moved releases are unchanged.
    pub fn forget_moved(&mut self, loc: Loc) -> u64 {
        let delete = self.count_gone(loc);
        let mut p = self.shared.pending.lock();
        if !p.dirty {
            p.dirty = true;
            self.store.mark_dirty(self.shared.clone());
        }
        // Read after registering, as `with_pending`: a commit that closes this stamp holds it.
        let stamp = self.store.generation();
        p.max_stamp = p.max_stamp.max(stamp);
        p.moved.push(Moved { segment: loc.segment, offset: (!delete).then_some(loc.offset), stamp });
        stamp
    }

    /// Counts the record at `loc` as gone; true if its segment can go with it.
    fn count_gone(&mut self, loc: Loc) -> bool {
        let delete = match self.counts.get_mut(&loc.segment) {
            Some(c) => {
                c.gone += 1;
                c.gone >= c.records && loc.segment != self.current
            }
            None => false,
        };
        if delete {
            self.counts.remove(&loc.segment);
        }
        delete
    }

    /// The record at `loc` was handed to a consumer: after a restart it comes back with the
    /// redelivered flag set.
    pub fn mark_delivered(&mut self, loc: Loc) {
        self.with_pending(|p| p.acks.push((loc.segment, AckEntry::plain(loc.offset | DELIVERED_BIT))));
    }

    /// The record at `loc` came back to its queue for the `returns`th time (a quorum-typed
    /// queue's `x-delivery-count`): after a restart it comes back with that count (at most
    /// `u16::MAX`).
    pub fn mark_returned(&mut self, loc: Loc, returns: u32) {
        let returns = u16::try_from(returns).unwrap_or(u16::MAX);
        self.with_pending(|p| p.acks.push((loc.segment, AckEntry::returns(loc.offset, returns))));
    }

    /// The queue was deleted: its directory goes with the next commit.
    pub fn destroy(self) {
        self.with_pending(|p| {
            *p = Pending { destroy: true, dirty: p.dirty, ..Pending::default() };
        });
    }

    /// Runs `f` on the buffered changes, registers the log for the next commit, and returns
    /// the generation the change is stamped with.
    fn with_pending(&self, f: impl FnOnce(&mut Pending)) -> u64 {
        let mut p = self.shared.pending.lock();
        f(&mut p);
        if !p.dirty {
            p.dirty = true;
            self.store.mark_dirty(self.shared.clone());
        }
        let stamp = self.store.generation();
        p.max_stamp = p.max_stamp.max(stamp);
        stamp
    }

    /// Reads queue `queue_id`'s log back after a restart: the messages still in it, in
    /// order, and what was found damaged. Never fails on damaged data (it is reported and
    /// skipped); fails only when the files cannot be read at all.
    pub fn recover(
        store: &Store,
        queue_id: u64,
        resident_max: usize,
        resident_max_bytes: u64,
    ) -> Result<(QueueLog, Vec<Recovered>, RecoveryReport)> {
        let mut resident_bytes = 0u64;
        let dir = queue_dir(store, queue_id);
        let backend = store.backend().clone();
        let names = backend.list(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let numbered = |suffix: &str| -> Vec<u32> {
            names.iter().filter_map(|n| n.strip_suffix(suffix)).filter_map(|s| s.parse().ok()).collect()
        };
        let mut segments = numbered(".seg");
        segments.sort_unstable();
        // New segments are numbered past every number in use, including ack files whose
        // segment is gone and quarantined segments: an old ack file must never meet a new
        // segment of the same number.
        let highest = [numbered(".seg"), numbered(".ack"), numbered(".seg.corrupt")].into_iter().flatten().max();
        for orphan in numbered(".ack").into_iter().filter(|n| !segments.contains(n)) {
            let path = ack_path(&dir, orphan);
            backend.remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
        let mut report = RecoveryReport::default();
        let mut recovered = Vec::new();
        let mut counts = BTreeMap::new();
        let last = segments.last().copied();
        for &segment in &segments {
            let path = segment_path(&dir, segment);
            let file = backend.open(&path, false).map_err(|e| StoreError::io(&path, e))?;
            let len = file.len().map_err(|e| StoreError::io(&path, e))?;
            let mut buf = vec![0u8; len as usize];
            let n = file.read_at(0, &mut buf).map_err(|e| StoreError::io(&path, e))?;
            buf.truncate(n);
            match record::check_header(&buf, &SEGMENT_MAGIC) {
                Header::Valid => {}
                Header::Newer(found) => {
                    return Err(StoreError::UnsupportedVersion { path, found, supported: record::FORMAT_VERSION });
                }
                Header::Invalid => {
                    // A segment whose header never made it to disk held nothing confirmed.
                    if buf.iter().all(|&b| b == 0) {
                        let _ = backend.remove_file(&path);
                        let _ = backend.remove_file(&ack_path(&dir, segment));
                        continue;
                    }
                    let aside = path.with_extension("seg.corrupt");
                    tracing::error!(path = %path.display(), moved_to = %aside.display(), "segment header unreadable; segment quarantined");
                    backend.rename(&path, &aside).map_err(|e| StoreError::io(&path, e))?;
                    report.quarantined.push(aside);
                    continue;
                }
            }
            report.segments += 1;
            let AckSets { acked, delivered, returns } = read_acks(store, &dir, segment, &mut report)?;
            let mut count = SegmentCount::default();
            let mut offset = SEGMENT_HEADER_LEN as usize;
            let mut end_of_data = offset;
            // Whether what follows the last good record looks like a torn write (a record cut
            // short by the end of the file, or nothing but zeros) rather than damage in the
            // middle of data, which is left in place.
            let mut torn_tail = true;
            while offset < buf.len() {
                match record::decode(&buf[offset..]) {
                    Ok((parts, used)) => {
                        let loc = Loc { segment, offset: offset as u32 };
                        count.records += 1;
                        report.records += 1;
                        if acked.contains(&loc.offset) {
                            count.gone += 1;
                            report.acked += 1;
                        } else {
                            let size = parts.data.len() as u64;
                            let resident =
                                recovered.len() < resident_max && resident_bytes + size <= resident_max_bytes;
                            if resident {
                                resident_bytes += size;
                            }
                            recovered.push(Recovered {
                                loc,
                                parts: resident.then(|| RecordParts {
                                    timestamp_ms: parts.timestamp_ms,
                                    exchange_len: parts.exchange_len,
                                    routing_key_len: parts.routing_key_len,
                                    properties_len: parts.properties_len,
                                    data: parts.data.to_vec(),
                                }),
                                size: parts.data.len() as u32,
                                body_len: parts.data.len().saturating_sub(
                                    parts.exchange_len as usize
                                        + parts.routing_key_len as usize
                                        + parts.properties_len as usize,
                                ) as u32,
                                timestamp_ms: parts.timestamp_ms,
                                delivered: delivered.contains(&loc.offset),
                                returns: returns.get(&loc.offset).copied().map_or(0, u32::from),
                            });
                        }
                        offset += used;
                        end_of_data = offset;
                    }
                    Err(record::RecordError::Empty) => break,
                    Err(record::RecordError::BadChecksum) => {
                        // The length is plausible (the record fits in the file): skip it.
                        let len = u32::from_le_bytes([buf[offset], buf[offset + 1], buf[offset + 2], buf[offset + 3]]);
                        report.damaged.push((segment, offset as u32, "checksum mismatch".into()));
                        offset += record::RECORD_PREFIX_LEN + len as usize;
                    }
                    Err(e) => {
                        report.damaged.push((segment, offset as u32, format!("{e:?}")));
                        torn_tail = e == record::RecordError::Short || buf[offset..].iter().all(|&b| b == 0);
                        break;
                    }
                }
            }
            if Some(segment) == last && end_of_data < buf.len() && torn_tail {
                // A torn tail: nothing after the last good record was confirmed.
                file.set_len(end_of_data as u64).map_err(|e| StoreError::io(&path, e))?;
                let _ = file.sync_data();
            }
            counts.insert(segment, count);
        }
        for (segment, offset, what) in &report.damaged {
            tracing::warn!(queue_id, segment, offset, what, "damaged message record skipped during recovery");
        }
        let next = highest.map_or(0, |s| s + 1);
        let mut log = QueueLog::starting_at(store, queue_id, next, BTreeMap::new(), segments.is_empty());
        // Segments with nothing left go now; the rest stay until their records are acked.
        for (segment, count) in counts {
            if count.gone >= count.records {
                log.with_pending(|p| p.deletes.push(segment));
            } else {
                log.counts.insert(segment, count);
            }
        }
        Ok((log, recovered, report))
    }
}

/// What a segment's ack file says: the acked offsets, the delivered ones and the return
/// counts (the highest per offset: entries come in any order).
#[derive(Default)]
struct AckSets {
    acked: HashSet<u32>,
    delivered: HashSet<u32>,
    returns: HashMap<u32, u16>,
}

/// Reads a segment's ack file.
fn read_acks(store: &Store, dir: &Path, segment: u32, report: &mut RecoveryReport) -> Result<AckSets> {
    let path = ack_path(dir, segment);
    let mut sets = AckSets::default();
    let file = match store.backend().open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(sets),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let len = file.len().map_err(|e| StoreError::io(&path, e))?;
    let mut buf = vec![0u8; len as usize];
    let n = file.read_at(0, &mut buf).map_err(|e| StoreError::io(&path, e))?;
    buf.truncate(n);
    match record::check_header(&buf, &ACK_MAGIC) {
        Header::Valid => {}
        Header::Newer(found) => {
            return Err(StoreError::UnsupportedVersion { path, found, supported: record::FORMAT_VERSION });
        }
        Header::Invalid => {
            if !buf.iter().all(|&b| b == 0) {
                tracing::error!(path = %path.display(), "ack file header unreadable; its segment's messages come back");
                report.missing_acks.push(segment);
            }
            return Ok(sets);
        }
    }
    // (A header torn short of its full length holds no entries.)
    let entries = buf.get(ACK_HEADER_LEN as usize..).unwrap_or_default();
    for entry in entries.chunks_exact(record::ACK_ENTRY_LEN) {
        // A torn entry (a crash while it was appended) is skipped: that ack or mark is lost,
        // which only means a redelivery.
        match record::decode_ack_meaning(entry) {
            None => {}
            Some(AckMeaning::Gone(offset)) => {
                sets.acked.insert(offset);
            }
            Some(AckMeaning::Delivered(offset)) => {
                sets.delivered.insert(offset);
            }
            Some(AckMeaning::Returned(offset, returns)) => {
                sets.delivered.insert(offset);
                let most = sets.returns.entry(offset).or_insert(0);
                *most = (*most).max(returns);
            }
        }
    }
    Ok(sets)
}
