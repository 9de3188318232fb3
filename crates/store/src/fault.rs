//! A [`Backend`] wrapper that injects I/O errors — no space (ENOSPC), an I/O error (EIO), out
//! of descriptors (EMFILE) — at chosen call sites until they are cleared, for tests of
//! recovery from disk faults. A failing write first writes half of its data, as a write cut
//! short by a full disk does.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::backend::{Backend, FileIo, FileRef};

/// Where an error is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Opening a file (creating it or not).
    Open,
    Write,
    Read,
    /// `fdatasync` of a file.
    Sync,
    /// Syncing a directory's entries.
    SyncDir,
    /// Removing a file or a directory tree.
    Remove,
    CreateDir,
}

/// The error injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ENOSPC.
    NoSpace,
    /// EIO.
    Io,
    /// EMFILE.
    TooManyFiles,
}

impl Fault {
    pub fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Fault::NoSpace => 28,
            Fault::Io => 5,
            Fault::TooManyFiles => 24,
        })
    }
}

#[derive(Default)]
struct Faults {
    /// Fast path: nothing injected.
    armed: AtomicBool,
    at: Mutex<HashMap<Site, Fault>>,
    /// Errors returned so far.
    injected: AtomicU64,
}

impl Faults {
    fn check(&self, site: Site) -> io::Result<()> {
        if !self.armed.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.at.lock().get(&site) {
            Some(fault) => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                Err(fault.error())
            }
            None => Ok(()),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    faults: Arc<Faults>,
}

impl FaultBackend {
    pub fn new(inner: Arc<dyn Backend>) -> FaultBackend {
        FaultBackend { inner, faults: Arc::default() }
    }

    /// Every call at `site` fails with `fault` from now on, until [`FaultBackend::clear`].
    pub fn inject(&self, site: Site, fault: Fault) {
        self.faults.at.lock().insert(site, fault);
        self.faults.armed.store(true, Ordering::Release);
    }

    /// Removes every injected fault: the cause is gone.
    pub fn clear(&self) {
        self.faults.at.lock().clear();
        self.faults.armed.store(false, Ordering::Release);
    }

    /// How many errors were injected so far.
    pub fn injected(&self) -> u64 {
        self.faults.injected.load(Ordering::Relaxed)
    }
}

struct FaultFile {
    inner: FileRef,
    faults: Arc<Faults>,
}

impl FileIo for FaultFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Err(e) = self.faults.check(Site::Write) {
            self.inner.write_at(offset, &data[..data.len() / 2])?;
            return Err(e);
        }
        self.inner.write_at(offset, data)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.faults.check(Site::Read)?;
        self.inner.read_at(offset, buf)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check(Site::Write)?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check(Site::Sync)?;
        self.inner.sync_data()
    }
}

impl Backend for FaultBackend {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.faults.check(Site::CreateDir)?;
        self.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        self.faults.check(Site::Open)?;
        let inner = self.inner.open(path, create)?;
        Ok(Arc::new(FaultFile { inner, faults: self.faults.clone() }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.faults.check(Site::Remove)?;
        self.inner.remove_file(path)
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dirs(dir)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.faults.check(Site::Remove)?;
        self.inner.remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.check(Site::Write)?;
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.faults.check(Site::SyncDir)?;
        self.inner.sync_dir(path)
    }
}
