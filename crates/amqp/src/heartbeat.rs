//! Heartbeat decisions for one connection, as a pure function of the time passed in.
//!
//! With a negotiated interval of `H` seconds we send a heartbeat frame when we have written
//! nothing for `H/2` (so the peer sees traffic at least twice per interval), and declare the
//! peer dead when nothing at all has arrived for `2H` (any frame counts, as in RabbitMQ).
//! Interval 0 disables both. Times are the broker clock's milliseconds, passed in: the
//! connection reads its injected clock, and tests pass any time they like.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatAction {
    Wait,
    Send,
    PeerDead,
}

#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    interval_ms: u64,
    last_read_ms: u64,
    last_write_ms: u64,
}

impl Heartbeat {
    pub fn new(interval_s: u16, now_ms: u64) -> Heartbeat {
        Heartbeat { interval_ms: u64::from(interval_s) * 1000, last_read_ms: now_ms, last_write_ms: now_ms }
    }

    pub fn interval_s(&self) -> u64 {
        self.interval_ms / 1000
    }

    /// Something arrived from the peer (or we chose not to read: see the connection).
    pub fn on_read(&mut self, now_ms: u64) {
        self.last_read_ms = self.last_read_ms.max(now_ms);
    }

    pub fn on_write(&mut self, now_ms: u64) {
        self.last_write_ms = self.last_write_ms.max(now_ms);
    }

    /// What to do at `now_ms`; `output_idle` says nothing is waiting to be written.
    pub fn poll(&self, now_ms: u64, output_idle: bool) -> HeartbeatAction {
        if self.interval_ms == 0 {
            return HeartbeatAction::Wait;
        }
        if now_ms.saturating_sub(self.last_read_ms) > self.interval_ms * 2 {
            return HeartbeatAction::PeerDead;
        }
        if output_idle && now_ms.saturating_sub(self.last_write_ms) >= self.interval_ms / 2 {
            return HeartbeatAction::Send;
        }
        HeartbeatAction::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeartbeatAction::*;

    fn at(t0: u64, ms: u64) -> u64 {
        t0 + ms
    }

    #[test]
    fn zero_interval_never_acts() {
        let t0 = 1_700_000_000_000;
        let hb = Heartbeat::new(0, t0);
        for ms in [0, 1_000, 3_600_000] {
            assert_eq!(hb.poll(at(t0, ms), true), Wait);
        }
    }

    #[test]
    fn sends_after_half_an_idle_interval() {
        let t0 = 1_700_000_000_000;
        let mut hb = Heartbeat::new(10, t0);
        let cases = [(0, Wait), (4_999, Wait), (5_000, Send), (9_000, Send)];
        for (ms, want) in cases {
            hb.on_read(at(t0, ms));
            assert_eq!(hb.poll(at(t0, ms), true), want, "at {ms} ms");
        }
        // Output already pending counts as traffic about to go out.
        assert_eq!(hb.poll(at(t0, 9_000), false), Wait);
        hb.on_write(at(t0, 9_000));
        assert_eq!(hb.poll(at(t0, 9_001), true), Wait);
    }

    #[test]
    fn peer_is_dead_after_two_silent_intervals() {
        let t0 = 1_700_000_000_000;
        let mut hb = Heartbeat::new(1, t0);
        hb.on_write(at(t0, 1_999));
        assert_eq!(hb.poll(at(t0, 2_000), true), Wait);
        assert_eq!(hb.poll(at(t0, 2_001), true), PeerDead);
        hb.on_read(at(t0, 2_001));
        assert_eq!(hb.poll(at(t0, 2_002), true), Wait);
    }
}
