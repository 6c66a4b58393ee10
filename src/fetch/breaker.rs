//! A per-host circuit breaker: after `threshold` consecutive failed attempts
//! the circuit opens and calls fail fast without contacting the host; after
//! the cool-down one probe is let through; its success closes the circuit,
//! its failure opens it again.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            consecutive_failures: 0,
            opened_at: None,
            probe_in_flight: false,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() < self.cooldown => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// May an attempt go to the host now? Half-open admits one probe.
    pub fn admit(&mut self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probe_in_flight => false,
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                true
            }
        }
    }

    /// An admitted attempt was dropped before it ended: it proves nothing,
    /// and a half-open circuit lets the next probe through.
    pub fn abandon(&mut self) {
        self.probe_in_flight = false;
    }

    pub fn record(&mut self, success: bool) {
        self.probe_in_flight = false;
        if success {
            self.consecutive_failures = 0;
            self.opened_at = None;
            return;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let probe_failed = self.opened_at.is_some();
        if probe_failed || self.consecutive_failures >= self.threshold {
            self.opened_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let mut breaker = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..3 {
            assert!(breaker.admit());
            breaker.record(false);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.admit());
        std::thread::sleep(Duration::from_millis(35));
        assert!(breaker.admit(), "one probe after the cool-down");
        assert!(!breaker.admit(), "only one");
        breaker.record(false);
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "a failed probe reopens"
        );
        std::thread::sleep(Duration::from_millis(35));
        assert!(breaker.admit());
        breaker.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_one_through() {
        let mut breaker = Breaker::new(1, Duration::from_millis(10));
        assert!(breaker.admit());
        breaker.record(false);
        std::thread::sleep(Duration::from_millis(15));
        assert!(breaker.admit(), "the probe");
        assert!(!breaker.admit());
        breaker.abandon();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.admit(), "another probe, the first told nothing");
    }
}
