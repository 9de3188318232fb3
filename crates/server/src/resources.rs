//! What the broker's resource alarms (`lepus_broker::alarms`) read on this machine: the
//! process's resident memory (`/proc/self/statm`, RabbitMQ's `rss` strategy), the RAM or the
//! cgroup's memory limit the watermark is a fraction of, and the free space on the data
//! directory's filesystem (`statvfs`).

use std::path::{Path, PathBuf};

use lepus_broker::alarms::{AlarmLimits, ResourceProbe};

use crate::config::Config;

/// Reads memory and disk for the alarms.
#[derive(Debug)]
pub struct SystemProbe {
    data_dir: Option<PathBuf>,
}

impl SystemProbe {
    pub fn new(data_dir: Option<PathBuf>) -> SystemProbe {
        SystemProbe { data_dir }
    }
}

impl ResourceProbe for SystemProbe {
    fn memory_used_bytes(&self) -> u64 {
        resident_bytes()
    }

    fn disk_free_bytes(&self) -> Option<u64> {
        disk_free_bytes(self.data_dir.as_deref()?)
    }
}

/// The process's resident set, 0 where it cannot be read.
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    pages.saturating_mul(rustix::param::page_size() as u64)
}

/// Bytes an unprivileged process may still write on `dir`'s filesystem.
pub fn disk_free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The memory the watermark is a fraction of: the RAM, or the cgroup's limit when lower.
pub fn available_memory_bytes() -> u64 {
    let ram = ram_bytes().unwrap_or(u64::MAX);
    cgroup_limit_bytes().map_or(ram, |limit| limit.min(ram))
}

/// The limits the configuration asks for: an absolute watermark wins over the fraction.
pub fn alarm_limits(config: &Config) -> AlarmLimits {
    let memory_limit_bytes = match config.memory_high_watermark_bytes {
        Some(bytes) => bytes,
        None => {
            let available = available_memory_bytes();
            (available as f64 * config.memory_high_watermark) as u64
        }
    };
    AlarmLimits { memory_limit_bytes, disk_free_limit_bytes: config.disk_free_limit_bytes }
}

fn ram_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_total_bytes(&meminfo)
}

fn meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The lowest memory limit on this process's cgroup and its parents (cgroup v2 `memory.max`,
/// or v1's `memory.limit_in_bytes`); `None` when unlimited or unknown.
fn cgroup_limit_bytes() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut lowest: Option<u64> = None;
    for (root, path, file) in cgroup_limit_files(&cgroups) {
        let mut dir = Path::new(root).join(path.trim_start_matches('/'));
        loop {
            if let Some(limit) = std::fs::read_to_string(dir.join(file)).ok().and_then(|s| parse_limit(&s)) {
                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
            }
            if dir.as_path() == Path::new(root) || !dir.pop() {
                break;
            }
        }
    }
    lowest
}

/// Where the memory limits of the cgroups in `/proc/self/cgroup` are: (mount, path, file).
fn cgroup_limit_files(cgroups: &str) -> Vec<(&'static str, &str, &'static str)> {
    let mut files = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.is_empty() {
            files.push(("/sys/fs/cgroup", path, "memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes"));
        }
    }
    files
}

/// A limit file's value; "max" (v2) and v1's near-`i64::MAX` "unlimited" are no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(meminfo_total_bytes(meminfo), Some(24_576_000 * 1024));
        assert_eq!(meminfo_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn cgroup_lines_name_v2_and_v1_memory_limit_files() {
        let v2 = "0::/system.slice/lepus.service\n";
        assert_eq!(cgroup_limit_files(v2), vec![("/sys/fs/cgroup", "/system.slice/lepus.service", "memory.max")]);
        let v1 = "12:cpu,cpuacct:/x\n9:memory:/docker/abc\n";
        assert_eq!(cgroup_limit_files(v1), vec![("/sys/fs/cgroup/memory", "/docker/abc", "memory.limit_in_bytes")]);
    }

    #[test]
    fn unlimited_cgroups_have_no_limit() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
    }

    #[test]
    fn an_absolute_watermark_wins_over_the_fraction() {
        let config = Config { memory_high_watermark_bytes: Some(1 << 30), ..Config::default() };
        assert_eq!(alarm_limits(&config).memory_limit_bytes, 1 << 30);
        let fraction = Config { memory_high_watermark: 0.5, ..Config::default() };
        let expected = (available_memory_bytes() as f64 * 0.5) as u64;
        assert_eq!(alarm_limits(&fraction).memory_limit_bytes, expected);
        assert_eq!(alarm_limits(&fraction).disk_free_limit_bytes, 50_000_000);
    }

    #[test]
    fn this_machine_reads_memory_and_disk() {
        assert!(resident_bytes() > 0);
        assert!(available_memory_bytes() > 0);
        assert!(disk_free_bytes(Path::new(".")).is_some());
    }
}
