//! The timer service on a manual clock: firing order, deadlines, rescheduling, cancelling,
//! targets that have gone or that change timers while fired, when the driver is woken, the
//! batch bound, and a million timers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use lepus_broker::timer::{FIRE_BATCH, NEVER};
use lepus_broker::{Clock, ManualClock, TimerId, TimerService, TimerTarget, Wake};
use parking_lot::Mutex;

/// Counts wake-ups of the driver.
struct CountWake(Arc<AtomicUsize>);

impl Wake for CountWake {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Records every firing.
#[derive(Default)]
struct Recorder {
    fired: Mutex<Vec<(TimerId, u64)>>,
}

impl TimerTarget for Recorder {
    fn on_timer(&self, id: TimerId, now_ms: u64) {
        self.fired.lock().push((id, now_ms));
    }
}

impl Recorder {
    fn ids(&self) -> Vec<TimerId> {
        self.fired.lock().iter().map(|&(id, _)| id).collect()
    }
}

struct Fixture {
    clock: Arc<ManualClock>,
    timers: Arc<TimerService>,
    wakes: Arc<AtomicUsize>,
    recorder: Arc<Recorder>,
}

fn fixture(start_ms: u64) -> Fixture {
    let clock = Arc::new(ManualClock::new(start_ms));
    let wakes = Arc::new(AtomicUsize::new(0));
    let timers = Arc::new(TimerService::new(clock.clone(), Box::new(CountWake(wakes.clone()))));
    Fixture { clock, timers, wakes, recorder: Arc::default() }
}

impl Fixture {
    /// A timer for the fixture's recorder.
    fn schedule(&self, deadline_ms: u64) -> TimerId {
        self.timers.schedule(weak(&self.recorder), deadline_ms)
    }
}

fn weak<T: TimerTarget + 'static>(target: &Arc<T>) -> Weak<dyn TimerTarget> {
    let weak: Weak<T> = Arc::downgrade(target);
    weak
}

/// Fires until a call takes less than a batch, as the driver does; returns the calls' counts.
fn fire_all(timers: &TimerService) -> Vec<usize> {
    let mut counts = vec![timers.fire_due()];
    while counts.last() == Some(&FIRE_BATCH) {
        counts.push(timers.fire_due());
    }
    counts
}

#[test]
fn fires_in_deadline_order_ties_in_creation_order() {
    let f = fixture(0);
    let ids: Vec<TimerId> = [30, 10, 20, 10, 30].iter().map(|&ms| f.schedule(ms)).collect();
    f.clock.set(100);
    assert_eq!(f.timers.fire_due(), 5);
    assert_eq!(f.recorder.ids(), [ids[1], ids[3], ids[2], ids[0], ids[4]]);
    assert!(f.recorder.fired.lock().iter().all(|&(_, now_ms)| now_ms == 100));
}

#[test]
fn nothing_fires_before_its_deadline_and_a_fired_timer_is_unarmed() {
    let f = fixture(0);
    let id = f.schedule(100);
    assert_eq!(f.timers.next_deadline(), Some(100));
    f.clock.set(99);
    assert_eq!(f.timers.fire_due(), 0);
    assert!(f.recorder.ids().is_empty());
    f.clock.set(100);
    assert_eq!(f.timers.fire_due(), 1);
    assert_eq!(f.recorder.ids(), [id]);
    assert_eq!(f.timers.next_deadline(), None);
    assert_eq!(f.timers.len(), 1);
    f.clock.set(1_000);
    assert_eq!(f.timers.fire_due(), 0);
    assert_eq!(f.recorder.ids(), [id]);
}

#[test]
fn reschedule_moves_a_timer_later_or_earlier_and_rearms_a_fired_one() {
    let f = fixture(0);
    let a = f.schedule(100);
    let b = f.schedule(200);
    assert!(f.timers.reschedule(a, 300));
    f.clock.set(250);
    assert_eq!(f.timers.fire_due(), 1);
    assert_eq!(f.recorder.ids(), [b]);
    assert!(f.timers.reschedule(a, 260));
    assert!(f.timers.reschedule(b, 255));
    assert_eq!(f.timers.next_deadline(), Some(255));
    f.clock.set(259);
    assert_eq!(f.timers.fire_due(), 1);
    assert_eq!(f.recorder.ids(), [b, b]);
    assert!(f.timers.reschedule(a, NEVER));
    assert_eq!(f.timers.next_deadline(), None);
    f.clock.set(10_000);
    assert_eq!(f.timers.fire_due(), 0);
    assert_eq!(f.timers.len(), 2);
}

#[test]
fn cancel_forgets_a_timer() {
    let f = fixture(0);
    let a = f.schedule(100);
    let b = f.schedule(100);
    let unarmed = f.schedule(NEVER);
    assert_eq!(f.timers.len(), 3);
    assert!(f.timers.cancel(a));
    assert!(!f.timers.cancel(a));
    assert!(!f.timers.reschedule(a, 50));
    assert!(f.timers.cancel(unarmed));
    assert_eq!(f.timers.len(), 1);
    f.clock.set(100);
    assert_eq!(f.timers.fire_due(), 1);
    assert_eq!(f.recorder.ids(), [b]);
    assert!(f.timers.cancel(b));
    assert!(f.timers.is_empty());
}

#[test]
fn a_timer_whose_target_has_gone_is_skipped_and_forgotten() {
    let f = fixture(0);
    let gone = Arc::new(Recorder::default());
    let dead = f.timers.schedule(weak(&gone), 10);
    let id = f.schedule(20);
    drop(gone);
    f.clock.set(20);
    assert_eq!(f.timers.fire_due(), 2);
    assert_eq!(f.recorder.ids(), [id]);
    assert_eq!(f.timers.len(), 1);
    assert!(!f.timers.reschedule(dead, 30));
    assert!(!f.timers.cancel(dead));
}

/// Fires three times, ten milliseconds apart, rescheduling itself; cancels itself the third time.
struct Periodic {
    timers: Arc<TimerService>,
    fired_ms: Mutex<Vec<u64>>,
}

impl TimerTarget for Periodic {
    fn on_timer(&self, id: TimerId, now_ms: u64) {
        let mut fired_ms = self.fired_ms.lock();
        fired_ms.push(now_ms);
        if fired_ms.len() < 3 {
            assert!(self.timers.reschedule(id, now_ms + 10));
        } else {
            assert!(self.timers.cancel(id));
        }
    }
}

#[test]
fn a_target_reschedules_and_cancels_its_own_timer_when_fired() {
    let f = fixture(1_000);
    let periodic = Arc::new(Periodic { timers: f.timers.clone(), fired_ms: Mutex::default() });
    f.timers.schedule(weak(&periodic), 1_010);
    for _ in 0..5 {
        f.clock.advance(10);
        f.timers.fire_due();
    }
    assert_eq!(*periodic.fired_ms.lock(), [1_010, 1_020, 1_030]);
    assert!(f.timers.is_empty());
}

/// When fired, schedules a timer for `then`, due at once.
struct Spawner {
    timers: Arc<TimerService>,
    then: Arc<Recorder>,
    spawned: Mutex<Option<TimerId>>,
}

impl TimerTarget for Spawner {
    fn on_timer(&self, _: TimerId, now_ms: u64) {
        *self.spawned.lock() = Some(self.timers.schedule(weak(&self.then), now_ms));
    }
}

#[test]
fn a_target_schedules_another_timer_when_fired() {
    let f = fixture(0);
    let spawner = Arc::new(Spawner { timers: f.timers.clone(), then: f.recorder.clone(), spawned: Mutex::default() });
    f.timers.schedule(weak(&spawner), 5);
    f.clock.set(5);
    assert_eq!(f.timers.fire_due(), 1);
    let spawned = spawner.spawned.lock().expect("spawned a timer");
    assert_eq!(f.timers.next_deadline(), Some(5));
    assert_eq!(f.timers.fire_due(), 1);
    assert_eq!(*f.recorder.fired.lock(), [(spawned, 5)]);
}

#[test]
fn the_driver_is_woken_exactly_when_the_earliest_deadline_moves_earlier() {
    let f = fixture(0);
    let wakes = || f.wakes.load(Ordering::Relaxed);
    let unarmed = f.schedule(NEVER);
    assert_eq!(wakes(), 0);
    let at_100 = f.schedule(100);
    assert_eq!(wakes(), 1, "first deadline");
    let at_200 = f.schedule(200);
    f.schedule(100);
    assert_eq!(wakes(), 1, "later deadline, then a tie");
    let at_50 = f.schedule(50);
    assert_eq!(wakes(), 2, "earlier deadline");
    assert!(f.timers.reschedule(at_50, 300));
    assert!(f.timers.reschedule(at_100, 150));
    assert_eq!(wakes(), 2, "the earliest moved later");
    assert!(f.timers.reschedule(at_200, 10));
    assert_eq!(wakes(), 3, "rescheduled earlier than the earliest");
    assert!(f.timers.cancel(at_200));
    f.clock.set(100);
    assert_eq!(f.timers.fire_due(), 1);
    assert_eq!(wakes(), 3, "cancelling and firing");
    assert!(f.timers.reschedule(unarmed, 120));
    assert_eq!(wakes(), 4, "armed earlier than the earliest (150)");
}

#[test]
fn more_than_a_batch_due_takes_several_calls() {
    let f = fixture(0);
    let due = 2 * FIRE_BATCH + 5;
    for i in 0..due + 10 {
        f.schedule(if i < due { 7 } else { 8 });
    }
    f.clock.set(7);
    assert_eq!(fire_all(&f.timers), [FIRE_BATCH, FIRE_BATCH, 5]);
    assert_eq!(f.recorder.fired.lock().len(), due);
    assert_eq!(f.timers.next_deadline(), Some(8));
}

/// xorshift64*: deterministic pseudo-random numbers.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn a_million_timers_fire_in_deadline_order_none_early() {
    const TIMERS: usize = 1_000_000;
    const SPAN_MS: u64 = 3_600_000;
    const STEP_MS: u64 = SPAN_MS / 16;
    let f = fixture(0);
    let mut random = 0x9e37_79b9_7f4a_7c15;
    let mut deadlines_ms = HashMap::with_capacity(TIMERS);
    for _ in 0..TIMERS {
        let deadline_ms = 1 + next_random(&mut random) % SPAN_MS;
        deadlines_ms.insert(f.schedule(deadline_ms), deadline_ms);
    }
    assert_eq!(f.timers.len(), TIMERS);
    let mut last: Option<(u64, TimerId)> = None;
    let mut fired = 0;
    while fired < TIMERS {
        f.clock.advance(STEP_MS);
        let now_ms = f.clock.now_ms();
        fire_all(&f.timers);
        let mut recorded = f.recorder.fired.lock();
        for &(id, fired_at_ms) in recorded.iter() {
            let deadline_ms = deadlines_ms[&id];
            assert!(deadline_ms <= fired_at_ms && fired_at_ms == now_ms, "{id:?} due at {deadline_ms}");
            assert!(deadline_ms > now_ms - STEP_MS, "{id:?} due at {deadline_ms} fired late at {now_ms}");
            assert!(last.is_none_or(|last| (deadline_ms, id) > last), "{id:?} at {deadline_ms} after {last:?}");
            last = Some((deadline_ms, id));
        }
        fired += recorded.len();
        recorded.clear();
    }
    assert_eq!(fired, TIMERS);
    assert_eq!(f.timers.next_deadline(), None);
}
