//! What the metrics say about the process and its machine: resident memory, open and
//! allowed file descriptors, free disk space where the data lives, and the memory and disk
//! limits (alarm thresholds).

use std::path::Path;

/// The process's resident memory (Linux `/proc/self/statm`), 0 where it cannot be read.
pub fn resident_memory_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * 4096
}

/// File descriptors open now (`/proc/self/fd`), 0 where it cannot be read.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// The most file descriptors the process may open (its soft `RLIMIT_NOFILE`).
pub fn max_fds() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}

/// Bytes free for the broker on the file system holding `dir`, 0 where it cannot be read.
pub fn disk_free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map_or(0, |s| s.blocks_available() * s.fragment_size())
}

/// The thresholds of the memory and disk alarms, in bytes, as metrics report them
/// (`rabbitmq_resident_memory_limit_bytes`, `rabbitmq_disk_space_available_limit_bytes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmLimits {
    pub memory_bytes: u64,
    pub disk_free_bytes: u64,
}

/// The node's alarm thresholds. There is no memory or disk alarm monitor yet: both are 0
/// until one exists (then this reads its thresholds).
pub fn alarm_limits() -> AlarmLimits {
    AlarmLimits::default()
}
