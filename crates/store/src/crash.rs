//! An in-memory [`Backend`] that models what a power cut leaves behind.
//!
//! Every file keeps its *durable* image (what `sync_data` made durable) and the writes since
//! (what the page cache holds). [`CrashBackend::crash`] returns a new backend holding what
//! the disk could contain after a power cut at this instant: the durable image plus an
//! arbitrary prefix of the later writes, the last of them possibly torn part-way. A file
//! whose directory entry was never synced may or may not exist afterwards; a removal that was
//! never synced may be undone. Writes can also be made to fail ([`CrashBackend::fail_io`]),
//! as a full disk does. Choices are drawn from a seeded generator so a failing case replays.
//!
//! This is how "a confirmed message survives a power cut" is tested without pulling plugs
//! (the shape follows redb's crash-consistency backend).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::Mutex;

use crate::backend::{Backend, FileIo, FileRef};

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default, Clone)]
struct Contents {
    /// What a reader sees now.
    live: Vec<u8>,
    /// What survives a power cut for certain.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    unsynced: Vec<Op>,
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(offset, data) => {
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
    }
}

#[derive(Default)]
struct Tree {
    files: BTreeMap<PathBuf, Arc<Mutex<Contents>>>,
    /// Files whose directory entry is durable (their directory was synced since creation).
    named: BTreeSet<PathBuf>,
    /// Removed files whose removal is not yet durable, with their contents.
    removed: BTreeMap<PathBuf, Arc<Mutex<Contents>>>,
    dirs: BTreeSet<PathBuf>,
}

/// Injected failures.
struct Faults {
    /// Every change fails (a full disk, or the power is already gone).
    fail: AtomicBool,
    /// Changes that may still succeed before `fail` is set; negative: no limit.
    budget: AtomicI64,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults { fail: AtomicBool::new(false), budget: AtomicI64::new(-1) }
    }
}

impl Faults {
    /// Accounts for one change: an error once failing, or once the budget is spent.
    fn spend(&self) -> io::Result<()> {
        if self.fail.load(Ordering::Acquire) {
            return Err(disk_full());
        }
        let left = self.budget.load(Ordering::Acquire);
        if left == 0 {
            self.fail.store(true, Ordering::Release);
            return Err(disk_full());
        }
        if left > 0 {
            self.budget.store(left - 1, Ordering::Release);
        }
        Ok(())
    }
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct CrashBackend {
    tree: Arc<Mutex<Tree>>,
    faults: Arc<Faults>,
}

struct MemFile {
    contents: Arc<Mutex<Contents>>,
    faults: Arc<Faults>,
}

fn disk_full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated: no space left on device")
}

impl FileIo for MemFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.spend()?;
        let mut c = self.contents.lock();
        let op = Op::Write(offset, data.to_vec());
        apply(&mut c.live, &op);
        c.unsynced.push(op);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let c = self.contents.lock();
        let start = (offset as usize).min(c.live.len());
        let n = buf.len().min(c.live.len() - start);
        buf[..n].copy_from_slice(&c.live[start..start + n]);
        Ok(n)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.contents.lock().live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.spend()?;
        let mut c = self.contents.lock();
        let op = Op::SetLen(len);
        apply(&mut c.live, &op);
        c.unsynced.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.spend()?;
        let mut c = self.contents.lock();
        c.durable = c.live.clone();
        c.unsynced.clear();
        Ok(())
    }
}

/// A small deterministic generator (xorshift64*), so crash images replay from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

impl CrashBackend {
    pub fn new() -> CrashBackend {
        CrashBackend::default()
    }

    /// Makes every later write and sync fail (as on a full disk), or succeed again.
    pub fn fail_io(&self, fail: bool) {
        self.faults.fail.store(fail, Ordering::Release);
        if !fail {
            self.faults.budget.store(-1, Ordering::Release);
        }
    }

    /// Lets `changes` more writes, syncs, creations and removals succeed, then fails every
    /// one after (the power went mid-way: take [`CrashBackend::crash`] next).
    pub fn fail_after(&self, changes: u32) {
        self.faults.budget.store(changes as i64, Ordering::Release);
    }

    /// What the disk may hold after a power cut now (see the module documentation).
    pub fn crash(&self, seed: u64) -> CrashBackend {
        let mut rng = Rng(seed | 1);
        let tree = self.tree.lock();
        let mut after = Tree { dirs: tree.dirs.clone(), ..Tree::default() };
        let candidates =
            tree.files.iter().map(|(p, c)| (p, c, false)).chain(tree.removed.iter().map(|(p, c)| (p, c, true)));
        for (path, contents, removed) in candidates {
            let named = tree.named.contains(path);
            // A durable name survives unless its removal made it to disk; an unsynced
            // creation or removal may or may not have.
            let survives = match (named, removed) {
                (true, false) => true,
                _ => rng.below(2) == 0,
            };
            if !survives || after.files.contains_key(path) {
                continue;
            }
            let c = contents.lock();
            let mut image = c.durable.clone();
            let kept = rng.below(c.unsynced.len() as u64 + 1) as usize;
            for (i, op) in c.unsynced.iter().take(kept).enumerate() {
                match op {
                    Op::Write(offset, data) if i + 1 == kept && !data.is_empty() => {
                        let torn = rng.below(data.len() as u64 + 1) as usize;
                        apply(&mut image, &Op::Write(*offset, data[..torn].to_vec()));
                    }
                    other => apply(&mut image, other),
                }
            }
            let contents = Contents { live: image.clone(), durable: image, unsynced: Vec::new() };
            after.files.insert(path.clone(), Arc::new(Mutex::new(contents)));
            after.named.insert(path.clone());
        }
        CrashBackend { tree: Arc::new(Mutex::new(after)), faults: Arc::new(Faults::default()) }
    }

    /// What the disk holds after a `kill -9` now (the machine stays up): every write, creation
    /// and removal made so far, synced or not, as the page cache keeps them.
    pub fn kill(&self) -> CrashBackend {
        let tree = self.tree.lock();
        let mut after = Tree { dirs: tree.dirs.clone(), ..Tree::default() };
        for (path, contents) in &tree.files {
            let live = contents.lock().live.clone();
            let contents = Contents { live: live.clone(), durable: live, unsynced: Vec::new() };
            after.files.insert(path.clone(), Arc::new(Mutex::new(contents)));
            after.named.insert(path.clone());
        }
        CrashBackend { tree: Arc::new(Mutex::new(after)), faults: Arc::new(Faults::default()) }
    }

    /// The current contents of a file (tests corrupt files through this).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        self.tree.lock().files.get(path).map(|c| c.lock().live.clone())
    }

    /// Replaces a file's contents, durably (tests corrupt files through this).
    pub fn write_file(&self, path: &Path, data: Vec<u8>) {
        let mut tree = self.tree.lock();
        let contents = Contents { live: data.clone(), durable: data, unsynced: Vec::new() };
        tree.files.insert(path.to_owned(), Arc::new(Mutex::new(contents)));
        tree.named.insert(path.to_owned());
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.tree.lock().files.keys().cloned().collect()
    }
}

impl Backend for CrashBackend {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut tree = self.tree.lock();
        for p in path.ancestors() {
            tree.dirs.insert(p.to_owned());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        let mut tree = self.tree.lock();
        let contents = match tree.files.get(path) {
            Some(c) => c.clone(),
            None if create => {
                self.faults.spend()?;
                let c = Arc::new(Mutex::new(Contents::default()));
                tree.files.insert(path.to_owned(), c.clone());
                tree.removed.remove(path);
                c
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))),
        };
        Ok(Arc::new(MemFile { contents, faults: self.faults.clone() }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let tree = self.tree.lock();
        Ok(tree
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let tree = self.tree.lock();
        let mut names: Vec<String> = tree
            .dirs
            .iter()
            .chain(tree.files.keys().filter_map(|p| p.parent()).map(|p| p.to_path_buf()).collect::<Vec<_>>().iter())
            .filter(|d| d.parent() == Some(dir))
            .filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.faults.spend()?;
        let mut tree = self.tree.lock();
        if let Some(c) = tree.files.remove(path)
            && tree.named.contains(path)
        {
            tree.removed.insert(path.to_owned(), c);
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let under: Vec<PathBuf> = self.tree.lock().files.keys().filter(|p| p.starts_with(path)).cloned().collect();
        for p in under {
            self.remove_file(&p)?;
        }
        self.tree.lock().dirs.retain(|d| !d.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.spend()?;
        let mut tree = self.tree.lock();
        let Some(c) = tree.files.remove(from) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", from.display())));
        };
        tree.files.insert(to.to_owned(), c);
        tree.named.remove(from);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.faults.spend()?;
        let mut tree = self.tree.lock();
        let children: Vec<PathBuf> = tree.files.keys().filter(|p| p.parent() == Some(path)).cloned().collect();
        tree.named.extend(children);
        tree.removed.retain(|p, _| p.parent() != Some(path));
        let gone: Vec<PathBuf> =
            tree.named.iter().filter(|p| p.parent() == Some(path) && !tree.files.contains_key(*p)).cloned().collect();
        for p in gone {
            tree.named.remove(&p);
        }
        Ok(())
    }
}
