//! Circuit breaker and reconnect backoff: pure state machines, the clock
//! is passed in (tested without sleeping).

use std::time::{Duration, Instant};

/// Breaker settings (`[upstreams.<name>.breaker]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed calls (unreachable, timeout, malformed answer)
    /// that open the breaker; 0 = never open.
    pub failures: u32,
    /// How long an open breaker refuses calls before letting one probe
    /// through.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            open_ms: 1000,
        }
    }
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; counts consecutive failures.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Instant },
    /// One probe call is allowed; its outcome closes or reopens.
    HalfOpen { probing: bool },
}

/// A consecutive-failure circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// Times the breaker went open (a counter).
    pub opened: u64,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg,
            state: BreakerState::Closed { failures: 0 },
            opened: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may start now; a half-open breaker lets exactly one
    /// through (the probe) until its outcome is recorded.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true } => false,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
        }
    }

    pub fn success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    pub fn failure(&mut self, now: Instant) {
        let open = match self.state {
            BreakerState::Closed { failures } => {
                let f = failures + 1;
                if self.cfg.failures == 0 || f < self.cfg.failures {
                    self.state = BreakerState::Closed { failures: f };
                    false
                } else {
                    true
                }
            }
            BreakerState::HalfOpen { .. } => true,
            // A call admitted before the breaker opened failed too late
            // to matter.
            BreakerState::Open { .. } => false,
        };
        if open {
            self.state = BreakerState::Open {
                until: now + Duration::from_millis(self.cfg.open_ms),
            };
            self.opened += 1;
        }
    }

    /// A call admitted as a probe ended without an outcome for the
    /// upstream (e.g. cancelled): let another probe through.
    pub fn probe_abandoned(&mut self) {
        if let BreakerState::HalfOpen { probing: true } = self.state {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    /// "closed", "open" or "half_open" (DESCRIBE, counters).
    pub fn name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Exponential reconnect backoff: after a failed connect the next attempt
/// waits `initial`, doubling up to `max`; a successful connect resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    not_before: Option<Instant>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            not_before: None,
        }
    }

    /// Whether a connect may be attempted now.
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// When the next attempt is allowed, if waiting.
    pub fn waiting_until(&self, now: Instant) -> Option<Instant> {
        self.not_before.filter(|t| *t > now)
    }

    pub fn failed(&mut self, now: Instant) {
        self.not_before = Some(now + self.current);
        self.current = (self.current * 2).min(self.max);
    }

    pub fn succeeded(&mut self) {
        self.current = self.initial;
        self.not_before = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failures: 3,
            open_ms: 100,
        });
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        // A success in between resets the count.
        b.success();
        for _ in 0..2 {
            b.failure(t0);
        }
        assert_eq!(b.name(), "closed");
        b.failure(t0);
        assert_eq!(b.name(), "open");
        assert_eq!(b.opened, 1);
        assert!(!b.allow(t0 + ms(99)));
        // After open_ms: exactly one probe.
        assert!(b.allow(t0 + ms(100)));
        assert!(!b.allow(t0 + ms(101)));
        // The probe fails: open again for open_ms from then.
        b.failure(t0 + ms(110));
        assert_eq!(b.opened, 2);
        assert!(!b.allow(t0 + ms(209)));
        assert!(b.allow(t0 + ms(210)));
        b.success();
        assert!(b.allow(t0 + ms(211)));
        assert!(b.allow(t0 + ms(211)));
    }

    #[test]
    fn abandoned_probe_lets_another_through() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failures: 1,
            open_ms: 10,
        });
        b.failure(t0);
        assert!(b.allow(t0 + ms(10)));
        assert!(!b.allow(t0 + ms(10)));
        b.probe_abandoned();
        assert!(b.allow(t0 + ms(10)));
    }

    #[test]
    fn zero_threshold_never_opens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failures: 0,
            open_ms: 10,
        });
        for _ in 0..100 {
            b.failure(t0);
        }
        assert!(b.allow(t0));
        assert_eq!(b.opened, 0);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::new(ms(10), ms(35));
        assert!(b.ready(t0));
        b.failed(t0);
        assert!(!b.ready(t0 + ms(9)));
        assert!(b.ready(t0 + ms(10)));
        b.failed(t0);
        assert_eq!(b.waiting_until(t0), Some(t0 + ms(20)));
        b.failed(t0);
        assert_eq!(b.waiting_until(t0), Some(t0 + ms(35)));
        b.failed(t0);
        assert_eq!(b.waiting_until(t0), Some(t0 + ms(35)));
        b.succeeded();
        assert!(b.ready(t0));
        b.failed(t0);
        assert_eq!(b.waiting_until(t0), Some(t0 + ms(10)));
    }
}
