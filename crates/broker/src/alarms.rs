//! Resource alarms: memory and disk, as RabbitMQ 3.x raises them.
//!
//! A [`ResourceProbe`] (the server's reads `/proc` and `statvfs`; tests inject their own) is
//! sampled on the broker's timer service every [`SAMPLE_INTERVAL_MS`]. The memory alarm is set
//! while the memory in use is above its limit, the disk alarm while the free space on the data
//! directory's filesystem is below its limit. While any alarm is set, a connection that sends
//! message content stops there: it is told `connection.blocked` (when its client announced the
//! capability) and its publishes wait, unread, until every alarm has cleared; then it is woken
//! through its outlet and told `connection.unblocked`. Everything else (acks, consuming, other
//! methods) goes on, so consumers keep draining the queues.
//!
//! Paging: ahead of the memory alarm, while the memory in use is above a fraction of its limit
//! (RabbitMQ's `vm_memory_high_watermark_paging_ratio`, 0.5 by default; above 1.0, never), the
//! [`Pager`] is told at every sample: the broker then has its queues keep only the heads of
//! their ready lists in memory and page the rest out, transient messages too.
//!
//! Between two timer samples, the node's connections count the bytes they read: every
//! [`INPUT_SAMPLE_BYTES`] taken in, node-wide, the connection that crosses the mark reads the
//! probe too, so publishers faster than a watermark per second are blocked within a few MB of
//! it, not a second's worth of input past it (the pager is told only when paging starts there;
//! its sweeps stay on the timer).
//!
//! The state connections read on every publish is one atomic byte; a sample takes a lock.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::outlet::OutletRef;
use crate::timer::{TimerId, TimerService, TimerTarget};

/// How often the probe is read, in the broker's time.
pub const SAMPLE_INTERVAL_MS: u64 = 1_000;

/// Bytes the node's connections take in, together, between two input-driven samples.
pub const INPUT_SAMPLE_BYTES: u64 = 4 << 20;

/// RabbitMQ 3.x's default memory watermark: this fraction of the RAM (or cgroup limit).
pub const MEMORY_HIGH_WATERMARK_DEFAULT: f64 = 0.4;

/// RabbitMQ 3.x's default `vm_memory_high_watermark_paging_ratio`: queues page out above this
/// fraction of the memory limit.
pub const MEMORY_PAGING_RATIO_DEFAULT: f64 = 0.5;

/// RabbitMQ's default `disk_free_limit`: 50 MB.
pub const DISK_FREE_LIMIT_DEFAULT_BYTES: u64 = 50_000_000;

/// A resource an alarm watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    Disk,
}

impl Resource {
    const ALL: [Resource; 2] = [Resource::Disk, Resource::Memory];

    fn bit(self) -> u8 {
        match self {
            Resource::Memory => 1,
            Resource::Disk => 2,
        }
    }

    /// RabbitMQ's name for it in `connection.blocked` and logs.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Disk => "disk",
        }
    }

    /// RabbitMQ's name for it in `/api/health/checks/alarms`.
    pub fn alarm_name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Disk => "disk space",
        }
    }
}

/// Where the alarms read the resources they watch.
pub trait ResourceProbe: Send + Sync + Debug {
    /// Bytes of memory the process holds (its resident set).
    fn memory_used_bytes(&self) -> u64;
    /// Free bytes on the data directory's filesystem; `None` where there is none or it cannot
    /// be read (no disk alarm then).
    fn disk_free_bytes(&self) -> Option<u64>;
}

/// What pages messages out while memory is above the paging fraction of its limit.
pub trait Pager: Send + Sync {
    /// Called at every sample while memory is above the paging fraction (`true`, so that
    /// queues that took nothing since page out too) and once when it falls below (`false`).
    fn memory_pressure(&self, on: bool);
}

/// The limits the alarms compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmLimits {
    /// The memory alarm is set above this.
    pub memory_limit_bytes: u64,
    /// The disk alarm is set below this much free space.
    pub disk_free_limit_bytes: u64,
}

impl Default for AlarmLimits {
    fn default() -> Self {
        AlarmLimits { memory_limit_bytes: u64::MAX, disk_free_limit_bytes: DISK_FREE_LIMIT_DEFAULT_BYTES }
    }
}

/// The last reading, for the management API and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub memory_used_bytes: u64,
    pub disk_free_bytes: Option<u64>,
}

struct Monitor {
    probe: Option<Box<dyn ResourceProbe>>,
    limits: AlarmLimits,
    reading: Reading,
    timer: Option<(TimerId, Arc<TimerService>)>,
    /// Paging starts above this fraction of the memory limit (none above 1.0).
    paging_ratio: f64,
    pager: Option<Weak<dyn Pager>>,
}

impl Default for Monitor {
    fn default() -> Monitor {
        Monitor {
            probe: None,
            limits: AlarmLimits::default(),
            reading: Reading::default(),
            timer: None,
            paging_ratio: MEMORY_PAGING_RATIO_DEFAULT,
            pager: None,
        }
    }
}

impl Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("limits", &self.limits)
            .field("reading", &self.reading)
            .field("paging_ratio", &self.paging_ratio)
            .finish_non_exhaustive()
    }
}

/// The node's resource alarms.
#[derive(Debug, Default)]
pub struct Alarms {
    /// One bit per [`Resource`] whose alarm is set.
    active: AtomicU8,
    monitor: Mutex<Monitor>,
    /// Connections blocked by an alarm, woken when the last one clears.
    blocked: Mutex<Vec<OutletRef>>,
    /// Memory is above the paging fraction of its limit.
    paging: AtomicBool,
    /// Bytes read by every connection since the start; a sample each [`INPUT_SAMPLE_BYTES`].
    input_bytes: AtomicU64,
}

impl Alarms {
    /// Whether any alarm is set: what a publishing connection checks.
    #[inline]
    pub fn any(&self) -> bool {
        self.active.load(Ordering::Relaxed) != 0
    }

    /// The alarms set now, in RabbitMQ's order (disk, memory).
    pub fn active(&self) -> Vec<Resource> {
        let bits = self.active.load(Ordering::Acquire);
        Resource::ALL.into_iter().filter(|r| bits & r.bit() != 0).collect()
    }

    /// `connection.blocked`'s reason, as RabbitMQ 3.10 words it: "low on memory", "low on
    /// disk", "low on disk & memory".
    pub fn blocked_reason(&self) -> String {
        let names: Vec<&str> = self.active().into_iter().map(Resource::name).collect();
        format!("low on {}", names.join(" & "))
    }

    /// Whether memory is above the paging fraction of its limit.
    pub fn paging(&self) -> bool {
        self.paging.load(Ordering::Relaxed)
    }

    /// Who pages messages out, and above which fraction of the memory limit (above 1.0:
    /// never); takes effect at the next sample.
    pub fn page_with(&self, pager: Weak<dyn Pager>, paging_ratio: f64) {
        let mut monitor = self.monitor.lock();
        monitor.pager = Some(pager);
        monitor.paging_ratio = paging_ratio;
    }

    pub fn limits(&self) -> AlarmLimits {
        self.monitor.lock().limits
    }

    pub fn reading(&self) -> Reading {
        self.monitor.lock().reading
    }

    /// Starts watching: reads `probe` now and then every [`SAMPLE_INTERVAL_MS`] on `timers`.
    pub fn start(self: &Arc<Self>, probe: Box<dyn ResourceProbe>, limits: AlarmLimits, timers: &Arc<TimerService>) {
        let target: std::sync::Weak<dyn TimerTarget> = Arc::downgrade(self) as _;
        let deadline_ms = timers.clock().now_ms().saturating_add(SAMPLE_INTERVAL_MS);
        let id = timers.schedule(target, deadline_ms);
        {
            let mut monitor = self.monitor.lock();
            monitor.probe = Some(probe);
            monitor.limits = limits;
            monitor.timer = Some((id, timers.clone()));
        }
        self.sample();
    }

    /// Changes the limits (as `rabbitmqctl set_vm_memory_high_watermark` and
    /// `set_disk_free_limit` do) and samples at once.
    pub fn set_limits(&self, limits: AlarmLimits) {
        self.monitor.lock().limits = limits;
        tracing::info!(
            memory_limit_bytes = limits.memory_limit_bytes,
            disk_free_limit_bytes = limits.disk_free_limit_bytes,
            "resource limits changed"
        );
        self.sample();
    }

    /// Reads the probe and sets or clears each alarm.
    pub fn sample(&self) {
        let Some(sampled) = self.read_probe(self.monitor.lock()) else { return };
        self.apply(sampled, Pressure::EverySample);
    }

    /// Counts `bytes` a connection read; the read that crosses a multiple of
    /// [`INPUT_SAMPLE_BYTES`] samples the probe (skipped if a sample is under way).
    #[inline]
    pub fn took_in(&self, bytes: usize) {
        let bytes = bytes as u64;
        let before = self.input_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before / INPUT_SAMPLE_BYTES != before.wrapping_add(bytes) / INPUT_SAMPLE_BYTES {
            self.sample_on_input();
        }
    }

    #[cold]
    fn sample_on_input(&self) {
        let Some(monitor) = self.monitor.try_lock() else { return };
        let Some(sampled) = self.read_probe(monitor) else { return };
        self.apply(sampled, Pressure::OnChange);
    }

    fn read_probe(&self, mut monitor: parking_lot::MutexGuard<'_, Monitor>) -> Option<Sampled> {
        let probe = monitor.probe.as_ref()?;
        let reading =
            Reading { memory_used_bytes: probe.memory_used_bytes(), disk_free_bytes: probe.disk_free_bytes() };
        monitor.reading = reading;
        Some(Sampled {
            reading,
            limits: monitor.limits,
            paging_limit: paging_limit_bytes(monitor.limits.memory_limit_bytes, monitor.paging_ratio),
            pager: monitor.pager.clone(),
        })
    }

    fn apply(&self, sampled: Sampled, pressure: Pressure) {
        let Sampled { reading, limits, paging_limit, pager } = sampled;
        let memory = reading.memory_used_bytes > limits.memory_limit_bytes;
        let disk = reading.disk_free_bytes.is_some_and(|free| free < limits.disk_free_limit_bytes);
        self.set(Resource::Memory, memory, reading.memory_used_bytes, limits.memory_limit_bytes);
        self.set(Resource::Disk, disk, reading.disk_free_bytes.unwrap_or(0), limits.disk_free_limit_bytes);
        let paging = paging_limit.is_some_and(|limit| reading.memory_used_bytes > limit);
        self.set_paging(paging, reading.memory_used_bytes, pager, pressure);
    }

    /// Records whether memory is above the paging fraction and tells the pager: at every
    /// timer sample while it is (at an input sample, only when paging starts), once when it
    /// falls below.
    fn set_paging(&self, on: bool, used: u64, pager: Option<Weak<dyn Pager>>, pressure: Pressure) {
        let before = self.paging.swap(on, Ordering::Relaxed);
        if pressure == Pressure::OnChange && on == before {
            return;
        }
        if on != before {
            if on {
                tracing::warn!(
                    memory_used_bytes = used,
                    "memory above the paging fraction of its watermark: queues page messages out"
                );
            } else {
                tracing::info!(memory_used_bytes = used, "memory below the paging fraction of its watermark");
            }
        }
        if let Some(pager) = pager.and_then(|p| p.upgrade())
            && (on || before)
        {
            pager.memory_pressure(on);
        }
    }

    fn set(&self, resource: Resource, on: bool, value: u64, limit: u64) {
        let bit = resource.bit();
        let before = if on {
            self.active.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.active.fetch_and(!bit, Ordering::AcqRel)
        };
        if (before & bit != 0) == on {
            return;
        }
        let name = resource.name();
        if on {
            tracing::warn!(
                resource = name,
                value,
                limit,
                "{name} resource limit alarm set: publishers are blocked until it clears"
            );
            return;
        }
        tracing::info!(resource = name, value, limit, "{name} resource limit alarm cleared");
        if !self.any() {
            for outlet in std::mem::take(&mut *self.blocked.lock()) {
                outlet.wake();
            }
        }
    }

    /// Registers a blocked connection to be woken when every alarm has cleared. False if none
    /// is set now (nothing to wait for).
    pub fn wait_for_clear(&self, outlet: &OutletRef) -> bool {
        let mut blocked = self.blocked.lock();
        // Checked under the lock that clearing takes to wake: no wake-up is lost.
        if !self.any() {
            return false;
        }
        if !blocked.iter().any(|o| Arc::ptr_eq(o, outlet)) {
            blocked.push(outlet.clone());
        }
        true
    }

    /// Forgets a connection that ends while blocked.
    pub fn forget(&self, outlet: &OutletRef) {
        self.blocked.lock().retain(|o| !Arc::ptr_eq(o, outlet));
    }
}

/// One reading of the probe with what it is compared against.
struct Sampled {
    reading: Reading,
    limits: AlarmLimits,
    paging_limit: Option<u64>,
    pager: Option<Weak<dyn Pager>>,
}

/// When the pager hears of memory pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pressure {
    /// At every sample while above the paging fraction (the timer's samples).
    EverySample,
    /// Only when crossing the paging fraction (samples driven by input).
    OnChange,
}

/// The memory use above which queues page out: `ratio` of `limit` (none above 1.0, or with no
/// limit).
fn paging_limit_bytes(limit: u64, ratio: f64) -> Option<u64> {
    if ratio > 1.0 || limit == u64::MAX {
        return None;
    }
    Some((limit as f64 * ratio) as u64)
}

impl TimerTarget for Alarms {
    fn on_timer(&self, id: TimerId, now_ms: u64) {
        self.sample();
        let monitor = self.monitor.lock();
        if let Some((own, timers)) = monitor.timer.as_ref()
            && *own == id
        {
            timers.reschedule(id, now_ms.saturating_add(SAMPLE_INTERVAL_MS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlet::{Outlet, Wake};
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug, Default)]
    struct FakeProbe {
        memory: Arc<AtomicU64>,
        disk: Arc<AtomicU64>,
    }

    impl ResourceProbe for FakeProbe {
        fn memory_used_bytes(&self) -> u64 {
            self.memory.load(Ordering::Relaxed)
        }
        fn disk_free_bytes(&self) -> Option<u64> {
            Some(self.disk.load(Ordering::Relaxed))
        }
    }

    #[derive(Default)]
    struct CountWake(Arc<AtomicUsize>);

    impl Wake for CountWake {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn alarms(memory: u64, disk: u64, limits: AlarmLimits) -> (Arc<Alarms>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let probe = FakeProbe::default();
        probe.memory.store(memory, Ordering::Relaxed);
        probe.disk.store(disk, Ordering::Relaxed);
        let (m, d) = (probe.memory.clone(), probe.disk.clone());
        let alarms = Arc::new(Alarms::default());
        {
            let mut monitor = alarms.monitor.lock();
            monitor.probe = Some(Box::new(probe));
            monitor.limits = limits;
        }
        alarms.sample();
        (alarms, m, d)
    }

    const LIMITS: AlarmLimits = AlarmLimits { memory_limit_bytes: 1000, disk_free_limit_bytes: 100 };

    #[test]
    fn memory_above_its_limit_sets_the_memory_alarm_and_below_clears_it() {
        let (alarms, memory, _) = alarms(1001, 500, LIMITS);
        assert_eq!(alarms.active(), vec![Resource::Memory]);
        assert_eq!(alarms.blocked_reason(), "low on memory");
        memory.store(1000, Ordering::Relaxed);
        alarms.sample();
        assert!(!alarms.any());
    }

    #[test]
    fn both_alarms_give_rabbitmqs_joined_reason() {
        let (alarms, _, _) = alarms(2000, 99, LIMITS);
        assert_eq!(alarms.active(), vec![Resource::Disk, Resource::Memory]);
        assert_eq!(alarms.blocked_reason(), "low on disk & memory");
    }

    #[test]
    fn blocked_connections_are_woken_once_when_the_last_alarm_clears() {
        let (alarms, memory, disk) = alarms(2000, 99, LIMITS);
        let woken = Arc::new(AtomicUsize::new(0));
        let outlet: OutletRef = Arc::new(Outlet::new(Box::new(CountWake(woken.clone()))));
        assert!(alarms.wait_for_clear(&outlet));
        assert!(alarms.wait_for_clear(&outlet), "registering twice keeps one entry");
        memory.store(0, Ordering::Relaxed);
        alarms.sample();
        assert_eq!(woken.load(Ordering::Relaxed), 0, "the disk alarm is still set");
        disk.store(1000, Ordering::Relaxed);
        alarms.sample();
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        assert!(!alarms.wait_for_clear(&outlet), "nothing to wait for");
    }

    #[test]
    fn raising_the_limit_clears_the_alarm_at_once() {
        let (alarms, _, _) = alarms(2000, 500, LIMITS);
        assert!(alarms.any());
        alarms.set_limits(AlarmLimits { memory_limit_bytes: 4000, ..LIMITS });
        assert!(!alarms.any());
    }

    #[derive(Default)]
    struct RecordPager(Mutex<Vec<bool>>);

    impl Pager for RecordPager {
        fn memory_pressure(&self, on: bool) {
            self.0.lock().push(on);
        }
    }

    #[test]
    fn the_pager_is_told_at_every_sample_above_half_the_limit_and_once_below() {
        let (alarms, memory, _) = alarms(400, 500, LIMITS);
        let pager = Arc::new(RecordPager::default());
        alarms.page_with(Arc::downgrade(&pager) as Weak<dyn Pager>, MEMORY_PAGING_RATIO_DEFAULT);
        alarms.sample();
        assert!(!alarms.paging());
        memory.store(501, Ordering::Relaxed);
        alarms.sample();
        alarms.sample();
        assert!(alarms.paging() && !alarms.any(), "paging, ahead of the alarm");
        memory.store(500, Ordering::Relaxed);
        alarms.sample();
        alarms.sample();
        assert_eq!(*pager.0.lock(), [true, true, false]);
    }

    #[test]
    fn input_crossing_each_sample_mark_reads_the_probe_between_timer_samples() {
        let (alarms, memory, _) = alarms(400, 500, LIMITS);
        memory.store(2000, Ordering::Relaxed);
        alarms.took_in(INPUT_SAMPLE_BYTES as usize - 1);
        assert!(!alarms.any(), "below the first mark: not read");
        alarms.took_in(1);
        assert_eq!(alarms.active(), vec![Resource::Memory], "the read crossing the mark samples");
        assert_eq!(alarms.reading().memory_used_bytes, 2000);
        memory.store(0, Ordering::Relaxed);
        alarms.took_in(INPUT_SAMPLE_BYTES as usize / 2);
        assert!(alarms.any(), "no mark crossed");
        alarms.took_in(INPUT_SAMPLE_BYTES as usize);
        assert!(!alarms.any(), "the next mark samples again and clears it");
    }

    #[test]
    fn input_samples_tell_the_pager_only_when_paging_starts() {
        let (alarms, memory, _) = alarms(400, 500, LIMITS);
        let pager = Arc::new(RecordPager::default());
        alarms.page_with(Arc::downgrade(&pager) as Weak<dyn Pager>, MEMORY_PAGING_RATIO_DEFAULT);
        memory.store(501, Ordering::Relaxed);
        for _ in 0..3 {
            alarms.took_in(INPUT_SAMPLE_BYTES as usize);
        }
        assert!(alarms.paging());
        assert_eq!(*pager.0.lock(), [true], "the sweeps stay on the timer");
        alarms.sample();
        assert_eq!(*pager.0.lock(), [true, true]);
        memory.store(0, Ordering::Relaxed);
        alarms.took_in(INPUT_SAMPLE_BYTES as usize);
        assert_eq!(*pager.0.lock(), [true, true, false], "told once when it falls below");
    }

    #[test]
    fn a_paging_ratio_above_one_never_pages() {
        let (alarms, _, _) = alarms(2000, 500, LIMITS);
        let pager = Arc::new(RecordPager::default());
        alarms.page_with(Arc::downgrade(&pager) as Weak<dyn Pager>, 1.1);
        alarms.sample();
        alarms.sample();
        assert!(alarms.any() && !alarms.paging());
        assert!(!pager.0.lock().contains(&true), "never told to page");
    }

    #[test]
    fn without_a_probe_no_alarm_is_ever_set() {
        let alarms = Alarms::default();
        alarms.sample();
        alarms.set_limits(AlarmLimits { memory_limit_bytes: 0, disk_free_limit_bytes: u64::MAX });
        assert!(!alarms.any());
    }
}
