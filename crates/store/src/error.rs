//! Storage errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data directory {0} is in use by another broker")]
    Locked(PathBuf),
    #[error("metadata store: {0}")]
    Meta(String),
    /// An I/O error in the metadata store: it reopens before its next use.
    #[error("metadata store I/O error: {0}")]
    MetaIo(String),
    #[error("corrupt metadata record in table {table}: {detail}")]
    CorruptMeta { table: &'static str, detail: String },
    #[error("{path} was written by format version {found}; this build reads up to {supported}")]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io { path: path.into(), source }
    }
}
