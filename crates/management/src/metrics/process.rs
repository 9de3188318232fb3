//! What the metrics say about the process beyond the alarms' readings: open and allowed file
//! descriptors, and threads (what `/api/nodes` shows as RabbitMQ's Erlang processes).

/// File descriptors open now (`/proc/self/fd`), 0 where it cannot be read.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// The most file descriptors the process may open (its soft `RLIMIT_NOFILE`).
pub fn max_fds() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The process's threads now (`Threads:` in `/proc/self/status`), 0 where it cannot be read.
pub fn threads() -> u64 {
    proc_number("/proc/self/status", "Threads:")
}

/// The most threads the system allows (`/proc/sys/kernel/threads-max`), 0 where unknown.
pub fn threads_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/threads-max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// The number after `key` on its line of the file at `path`.
fn proc_number(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.trim().parse().ok()).unwrap_or(0)
}
