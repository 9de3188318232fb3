//! The store's budget of open files: segment and ack files are opened on demand and kept in
//! an LRU of at most `store_open_files_max` handles; opening one more closes the least
//! recently used. A backlog of any number of segments therefore holds a bounded number of
//! descriptors, and the rest of the process's descriptors stay for sockets.
//!
//! A handle still in use elsewhere (a commit syncing it, a reader) stays open until that use
//! ends: the budget bounds idle handles, and a commit holds at most two per log it writes.

use std::io;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use lru::LruCache;
use parking_lot::Mutex;

use crate::backend::{Backend, FileRef};

pub(crate) struct OpenFiles {
    handles: Mutex<LruCache<PathBuf, FileRef>>,
}

/// Whether an error means the process (or the system) is out of descriptors.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

impl OpenFiles {
    pub fn new(max: usize) -> OpenFiles {
        OpenFiles { handles: Mutex::new(LruCache::new(NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN))) }
    }

    /// The open handle of `path`, opening it if needed; true when it was opened now. Out of
    /// descriptors, every idle handle is closed and the open is tried once more.
    pub fn open(&self, backend: &dyn Backend, path: &Path, create: bool) -> io::Result<(FileRef, bool)> {
        if let Some(file) = self.handles.lock().get(path) {
            return Ok((file.clone(), false));
        }
        let file = match backend.open(path, create) {
            Err(e) if out_of_descriptors(&e) => {
                tracing::warn!(path = %path.display(), error = %e, "out of file descriptors: closing the store's idle files");
                self.close_all();
                backend.open(path, create)?
            }
            other => other?,
        };
        self.handles.lock().put(path.to_owned(), file.clone());
        Ok((file, true))
    }

    /// Closes `path`'s handle (the file is being removed).
    pub fn close(&self, path: &Path) {
        self.handles.lock().pop(path);
    }

    /// Closes every handle of a file under `dir`.
    pub fn close_under(&self, dir: &Path) {
        let mut handles = self.handles.lock();
        let under: Vec<PathBuf> = handles.iter().map(|(p, _)| p).filter(|p| p.starts_with(dir)).cloned().collect();
        for path in under {
            handles.pop(&path);
        }
    }

    pub fn close_all(&self) {
        self.handles.lock().clear();
    }

    /// Handles open now (for tests).
    pub fn len(&self) -> usize {
        self.handles.lock().len()
    }
}
