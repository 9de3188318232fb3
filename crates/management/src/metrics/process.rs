//! What the metrics say about the process beyond the alarms' readings: open and allowed file
//! descriptors.

/// File descriptors open now (`/proc/self/fd`), 0 where it cannot be read.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// The most file descriptors the process may open (its soft `RLIMIT_NOFILE`).
pub fn max_fds() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}
