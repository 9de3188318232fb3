//! The connection-rate limit (`connection_rate_max`): at most that many sockets accepted per
//! second, across the AMQP listeners, so an accept flood cannot take the cores from established
//! clients. A token bucket on the broker's clock holding one second's worth: a burst up to the
//! rate is accepted at once, then one socket per `1/rate` s. While it is empty the accept loop
//! waits and new sockets wait in the kernel's listen backlog; the first wait of each second is
//! logged. 0 turns it off (RabbitMQ has no such limit).

use std::time::Duration;

use lepus_broker::ClockRef;

/// The longest real-time pause between two readings of the clock while waiting for a token,
/// so a clock moved by a test, or one that jumps, is seen soon.
const WAIT_STEP_MAX_MS: u64 = 100;

/// A bucket of thousandths of a token: `rate` tokens a second, at most `rate` held.
#[derive(Debug)]
pub(crate) struct AcceptRate {
    rate_per_s: u64,
    clock: ClockRef,
    milli_tokens: u64,
    refilled_at_ms: u64,
    /// When the last "limit reached" line was logged.
    logged_at_ms: Option<u64>,
}

impl AcceptRate {
    /// `None` when `rate_per_s` is 0 (no limit).
    pub(crate) fn new(rate_per_s: u32, clock: ClockRef) -> Option<AcceptRate> {
        let rate_per_s = u64::from(rate_per_s);
        if rate_per_s == 0 {
            return None;
        }
        let refilled_at_ms = clock.now_ms();
        Some(AcceptRate { rate_per_s, clock, milli_tokens: rate_per_s * 1000, refilled_at_ms, logged_at_ms: None })
    }

    /// Takes a token if there is one; otherwise how many ms until the next.
    fn try_take(&mut self) -> Result<(), u64> {
        let now_ms = self.clock.now_ms();
        let elapsed_ms = now_ms.saturating_sub(self.refilled_at_ms);
        let capacity = self.rate_per_s * 1000;
        self.milli_tokens = self.milli_tokens.saturating_add(elapsed_ms.saturating_mul(self.rate_per_s)).min(capacity);
        self.refilled_at_ms = now_ms;
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return Ok(());
        }
        let missing = 1000 - self.milli_tokens;
        Err(missing.div_ceil(self.rate_per_s).max(1))
    }

    /// Returns when a socket may be accepted, having taken its token.
    pub(crate) async fn admit(&mut self) {
        loop {
            let wait_ms = match self.try_take() {
                Ok(()) => return,
                Err(wait_ms) => wait_ms,
            };
            self.log_limited();
            tokio::time::sleep(Duration::from_millis(wait_ms.min(WAIT_STEP_MAX_MS))).await;
        }
    }

    fn log_limited(&mut self) {
        let now_ms = self.clock.now_ms();
        if self.logged_at_ms.is_some_and(|at| now_ms.saturating_sub(at) < 1000) {
            return;
        }
        self.logged_at_ms = Some(now_ms);
        tracing::warn!(
            connection_rate_max = self.rate_per_s,
            "connection rate limit reached (connection_rate_max): new connections wait in the listen backlog"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lepus_broker::ManualClock;

    use super::*;

    #[test]
    fn a_burst_of_one_seconds_worth_then_one_token_per_interval() {
        let clock = Arc::new(ManualClock::new(1_000));
        let mut rate = AcceptRate::new(4, clock.clone()).expect("a limit");
        for _ in 0..4 {
            assert_eq!(rate.try_take(), Ok(()));
        }
        assert_eq!(rate.try_take(), Err(250), "the next token in a quarter of a second");
        clock.advance(249);
        assert_eq!(rate.try_take(), Err(1));
        clock.advance(1);
        assert_eq!(rate.try_take(), Ok(()));
        clock.advance(60_000);
        for _ in 0..4 {
            assert_eq!(rate.try_take(), Ok(()), "an idle minute refills one second's worth, no more");
        }
        assert!(rate.try_take().is_err());
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(AcceptRate::new(0, Arc::new(ManualClock::new(0))).is_none());
    }
}
