//! The group commit.
//!
//! Queue logs buffer their appends, acks and deletions in memory under their own small lock
//! and register themselves here when they go from clean to dirty. One commit — normally on
//! the store thread started by [`Store::spawn_committer`] — closes the current *generation*,
//! writes every dirty log's buffers with `pwrite`, `fdatasync`s the files it wrote (and the
//! directories whose entries changed), and then publishes the closed generation as durable.
//! While one commit syncs, the next batch gathers: batching needs no timer.
//!
//! An append is stamped with the generation current when it was buffered (read while its
//! log's buffer lock is held, after the log registered as dirty), so "durable generation ≥
//! stamp" means its bytes are on disk. Publisher confirms and `tx.commit-ok` wait for that.
//!
//! A write or sync error fails that commit only: the store is marked *failing*, waiters are
//! woken (the broker nacks what is not durable yet, and what is published while the store
//! is failing), and consumers keep being served from memory. The changes the commit took go
//! back to their logs, to be written again at the same places by the next commit, which the
//! store thread tries every `retry_interval_ms`, or at once after [`Store::retry_now`] (the
//! broker paces its retries that way, on its own clock, with `retry_interval_ms` 0). Once
//! one succeeds, the store is healthy again: everything stamped up to its generation is on
//! disk, including what the failed commits held. A record half-written before the error is
//! overwritten by the retry; one cut by a crash during the fault is a torn tail recovery
//! truncates (nothing after it was written).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::backend::{Backend, FileRef};
use crate::log::{LogShared, Pending, Written};
use crate::open_files::OpenFiles;

/// Woken after every commit (a connection waiting for its confirms to become durable).
pub trait Waker: Send + Sync {
    fn wake(&self);
}

/// A waker that sends on a channel ([`Store::wait_until`]).
struct ChannelWaker(std::sync::mpsc::Sender<()>);

impl Waker for ChannelWaker {
    fn wake(&self) {
        let _ = self.0.send(());
    }
}

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// A queue starts a new segment file once its current one reaches this size.
    pub segment_size: u32,
    /// Memory pressure: while queues hold more message bytes in memory than this, they page
    /// out messages they do not log (transient ones) through scratch logs; 0 = always.
    pub transient_paging_bytes: u64,
    /// Segment and ack files kept open at most (an LRU of handles; the least recently used
    /// one closes when another opens).
    pub open_files_max: usize,
    /// After a failed commit, the store thread tries again after this long (real time); 0:
    /// only when asked ([`Store::retry_now`]), as the broker does on its own clock.
    pub retry_interval_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            segment_size: 8 * 1024 * 1024,
            transient_paging_bytes: 1024 * 1024 * 1024,
            open_files_max: 256,
            retry_interval_ms: 1000,
        }
    }
}

/// Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub backend: Arc<dyn Backend>,
    pub root: PathBuf,
    pub options: StoreOptions,
    /// The generation new appends are stamped with.
    generation: AtomicU64,
    /// Every append stamped with a generation up to this one is on disk.
    durable: AtomicU64,
    /// The last commit failed (its changes wait to be written again).
    failed: AtomicBool,
    /// Ask the store thread to retry a failed commit now.
    retry_now: AtomicBool,
    stopping: AtomicBool,
    next_scratch_id: AtomicU64,
    /// Message bytes queues hold in memory (they report changes).
    resident_bytes: AtomicU64,
    /// The node's memory use is above the paging fraction of its watermark (set by the
    /// broker's memory sampler).
    node_memory_pressure: AtomicBool,
    dirty: Mutex<Vec<Arc<LogShared>>>,
    work: Condvar,
    waiters: Mutex<Vec<Arc<dyn Waker>>>,
    /// Serialises commits (the committer thread and tests calling [`Store::commit`]); holds
    /// the directories a failed commit left to sync.
    committing: Mutex<Vec<PathBuf>>,
    open_files: OpenFiles,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.inner.root).field("durable", &self.durable()).finish()
    }
}

/// The store thread; stops (after a last commit) when dropped.
pub struct Committer {
    store: Store,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        {
            // Under the lock, so the thread cannot miss it between its check and its wait.
            let _dirty = self.store.inner.dirty.lock();
            self.store.inner.stopping.store(true, Ordering::Release);
        }
        self.store.inner.work.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.store.failed() {
            self.store.write_clean_marker();
        }
    }
}

/// Written when the broker stops cleanly (everything committed), removed at start: its
/// absence at start means a crash, after which every recovered message may have been
/// delivered already.
const CLEAN_MARKER: &str = "clean-shutdown";

impl Store {
    pub fn new(backend: Arc<dyn Backend>, root: &Path, options: StoreOptions) -> Store {
        Store {
            inner: Arc::new(Inner {
                backend,
                root: root.to_owned(),
                options,
                generation: AtomicU64::new(1),
                durable: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                retry_now: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                next_scratch_id: AtomicU64::new(1),
                resident_bytes: AtomicU64::new(0),
                node_memory_pressure: AtomicBool::new(false),
                dirty: Mutex::new(Vec::new()),
                work: Condvar::new(),
                waiters: Mutex::new(Vec::new()),
                committing: Mutex::new(Vec::new()),
                open_files: OpenFiles::new(options.open_files_max),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    pub(crate) fn open_files(&self) -> &OpenFiles {
        &self.inner.open_files
    }

    /// Segment and ack files the store holds open now (at most `open_files_max` idle ones).
    pub fn open_files_count(&self) -> usize {
        self.inner.open_files.len()
    }

    /// Whether the previous run stopped cleanly; consumes the marker (a crash from now on
    /// leaves none). Call once at start, before serving.
    pub fn take_clean_marker(&self) -> std::io::Result<bool> {
        let path = self.inner.root.join(CLEAN_MARKER);
        let backend = &self.inner.backend;
        let clean = backend.list(&self.inner.root)?.iter().any(|n| n == CLEAN_MARKER);
        if clean {
            backend.remove_file(&path)?;
            backend.sync_dir(&self.inner.root)?;
        }
        Ok(clean)
    }

    fn write_clean_marker(&self) {
        let path = self.inner.root.join(CLEAN_MARKER);
        let backend = &self.inner.backend;
        let written =
            backend.open(&path, true).and_then(|f| f.sync_data()).and_then(|()| backend.sync_dir(&self.inner.root));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not mark a clean shutdown; the next start treats recovered messages as possibly delivered");
        }
    }

    /// Removes the log directories of queues the metadata does not know (left by a crash
    /// between a queue's deletion and the removal of its directory); returns how many.
    pub fn remove_orphan_logs(&self, known_queue_ids: &std::collections::HashSet<u64>) -> std::io::Result<usize> {
        let dir = self.queues_dir();
        let mut removed = 0;
        for name in self.inner.backend.list_dirs(&dir)? {
            // Only names Lepus gives queue logs: 16 hex digits.
            let ours = name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit());
            let orphan = ours && u64::from_str_radix(&name, 16).is_ok_and(|id| !known_queue_ids.contains(&id));
            if orphan {
                tracing::warn!(path = %dir.join(&name).display(), "removing the message log of a deleted queue");
                self.inner.backend.remove_dir_all(&dir.join(&name))?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.inner.backend.sync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Queues report message bytes they start or stop holding in memory.
    pub fn add_resident_bytes(&self, bytes: u64) {
        self.inner.resident_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sub_resident_bytes(&self, bytes: u64) {
        let _ = self
            .inner
            .resident_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
    }

    /// Whether transient messages should page out: queues hold more in memory than
    /// `transient_paging_bytes` (always, with a threshold of 0), or the node is under memory
    /// pressure.
    pub fn memory_pressure(&self) -> bool {
        let threshold = self.inner.options.transient_paging_bytes;
        threshold == 0 || self.inner.resident_bytes.load(Ordering::Relaxed) > threshold || self.node_memory_pressure()
    }

    /// Whether the node's memory use is above the paging fraction of its watermark: queues
    /// then keep only the heads of their ready lists in memory.
    #[inline]
    pub fn node_memory_pressure(&self) -> bool {
        self.inner.node_memory_pressure.load(Ordering::Relaxed)
    }

    /// Set by the node's memory sampler.
    pub fn set_node_memory_pressure(&self, on: bool) {
        self.inner.node_memory_pressure.store(on, Ordering::Relaxed);
    }

    /// Where scratch logs (paged-out transient messages) live.
    pub fn scratch_dir(&self) -> PathBuf {
        self.inner.root.join("scratch")
    }

    pub(crate) fn next_scratch_id(&self) -> u64 {
        self.inner.next_scratch_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes every scratch log (transient messages do not survive a restart). Call at start.
    pub fn remove_scratch(&self) -> std::io::Result<()> {
        self.inner.backend.remove_dir_all(&self.scratch_dir())
    }

    /// Where queue logs live.
    pub fn queues_dir(&self) -> PathBuf {
        self.inner.root.join("queues")
    }

    /// Starts the store thread.
    pub fn spawn_committer(&self) -> std::io::Result<Committer> {
        let store = self.clone();
        let thread = std::thread::Builder::new().name("lepus-store".into()).spawn(move || store.run())?;
        Ok(Committer { store: self.clone(), thread: Some(thread) })
    }

    fn run(&self) {
        let mut last_try = false;
        loop {
            {
                let mut dirty = self.inner.dirty.lock();
                let retry_at = Instant::now() + Duration::from_millis(self.inner.options.retry_interval_ms);
                loop {
                    let stopping = self.inner.stopping.load(Ordering::Acquire);
                    if dirty.is_empty() {
                        if stopping {
                            return;
                        }
                        self.inner.work.wait(&mut dirty);
                        continue;
                    }
                    if !self.failed() || self.inner.retry_now.swap(false, Ordering::AcqRel) {
                        break;
                    }
                    // Failing: retry after a pause; when stopping, once more and no longer.
                    if stopping {
                        if last_try {
                            return;
                        }
                        last_try = true;
                        break;
                    }
                    if self.inner.options.retry_interval_ms == 0 {
                        self.inner.work.wait(&mut dirty);
                    } else if self.inner.work.wait_until(&mut dirty, retry_at).timed_out() {
                        break;
                    }
                }
            }
            self.commit();
        }
    }

    /// Asks the store thread to retry a failed commit now rather than after its pause.
    pub fn retry_now(&self) {
        let _dirty = self.inner.dirty.lock();
        self.inner.retry_now.store(true, Ordering::Release);
        self.inner.work.notify_all();
    }

    /// The generation an append buffered now is stamped with.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// The generation a change buffered now would be stamped with (for tests).
    pub fn generation_for_tests(&self) -> u64 {
        self.generation()
    }

    /// Every append stamped up to this generation is durable.
    pub fn durable(&self) -> u64 {
        self.inner.durable.load(Ordering::Acquire)
    }

    pub fn is_durable(&self, stamp: u64) -> bool {
        stamp <= self.durable()
    }

    /// True while the store is failing: the last commit failed, and nothing becomes durable
    /// until one succeeds.
    pub fn failed(&self) -> bool {
        self.inner.failed.load(Ordering::Acquire)
    }

    /// Registers a log with unwritten changes (called with the log's buffer lock held).
    pub(crate) fn mark_dirty(&self, log: Arc<LogShared>) {
        self.inner.dirty.lock().push(log);
        self.inner.work.notify_one();
    }

    /// Wakes `waker` after the next commit.
    pub fn wake_after_commit(&self, waker: Arc<dyn Waker>) {
        self.inner.waiters.lock().push(waker);
    }

    /// Blocks the calling thread until `done` holds, checked now and after each commit, waiting
    /// at most `timeout` for each commit; false if none came in time. For tests and tools:
    /// nothing in the broker blocks on the store.
    pub fn wait_until(&self, done: impl Fn(&Store) -> bool, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let waker: Arc<dyn Waker> = Arc::new(ChannelWaker(tx));
        loop {
            self.wake_after_commit(waker.clone());
            if done(self) {
                return true;
            }
            if rx.recv_timeout(timeout).is_err() {
                return false;
            }
        }
    }

    /// Writes and syncs everything buffered so far; returns the durable generation. The
    /// store thread calls this in a loop; tests call it to decide when a commit happens.
    pub fn commit(&self) -> u64 {
        let mut unsynced_dirs = self.inner.committing.lock();
        loop {
            let closing = self.inner.generation.fetch_add(1, Ordering::SeqCst);
            let logs = std::mem::take(&mut *self.inner.dirty.lock());
            let mut batches: Vec<(Arc<LogShared>, Pending, Pending)> = logs
                .into_iter()
                .map(|log| {
                    let (now, late) = log.take_for_commit(self, closing);
                    (log, now, late)
                })
                .collect();
            let mut written = Written::default();
            for dir in unsynced_dirs.drain(..) {
                written.dir(&dir);
            }
            // Changes buffered while this commit ran carry the next generation but may be
            // written now, leaving their log clean: publish that generation too, at once.
            let again = batches.iter().any(|(_, p, _)| p.max_stamp > closing);
            // Releases of moved records (dead letters) only once every append is synced.
            let mut moved = Written::default();
            let result = batches
                .iter_mut()
                .try_for_each(|(log, pending, _)| log.write(self, pending, &mut written))
                .and_then(|()| self.sync(&written.files, &written.dirs))
                .and_then(|()| {
                    batches
                        .iter_mut()
                        .filter(|(_, _, late)| late.has_changes())
                        .try_for_each(|(log, _, late)| log.write(self, late, &mut moved))
                })
                .and_then(|()| self.sync(&moved.files, &moved.dirs));
            written.after_sync.append(&mut moved.after_sync);
            match result {
                Ok(()) => {
                    if self.inner.failed.swap(false, Ordering::AcqRel) {
                        tracing::info!("message store writes succeed again; persistent messages are confirmed");
                    }
                    self.inner.durable.store(closing, Ordering::Release);
                    // Wake waiters now, not after the loop: under steady load it may go round
                    // for a long time, each pass publishing a new generation.
                    self.wake_waiters();
                    for path in &written.after_sync {
                        if let Err(e) = self.inner.backend.remove_file(path) {
                            tracing::warn!(path = %path.display(), error = %e, "could not remove an ack file; the next start does");
                        }
                    }
                }
                Err(e) => {
                    if !self.inner.failed.swap(true, Ordering::AcqRel) {
                        tracing::error!(error = %e, "message store commit failed; persistent messages are nacked until a retry succeeds");
                    } else {
                        tracing::debug!(error = %e, "message store retry failed");
                    }
                    *unsynced_dirs = written.dirs;
                    for dir in &moved.dirs {
                        if !unsynced_dirs.contains(dir) {
                            unsynced_dirs.push(dir.clone());
                        }
                    }
                    for (log, pending, late) in batches {
                        log.restore_pending(self, LogShared::rejoin(pending, late));
                    }
                    break;
                }
            }
            if !again {
                break;
            }
        }
        self.wake_waiters();
        self.durable()
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.inner.waiters.lock());
        for w in waiters {
            w.wake();
        }
    }

    fn sync(&self, files: &[(PathBuf, FileRef)], dirs: &[PathBuf]) -> crate::Result<()> {
        for (path, file) in files {
            file.sync_data().map_err(|e| crate::StoreError::io(path, e))?;
        }
        for dir in dirs {
            self.inner.backend.sync_dir(dir).map_err(|e| crate::StoreError::io(dir, e))?;
        }
        Ok(())
    }
}
