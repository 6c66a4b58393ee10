//! Where the process is in its life, as the probes report it: serving,
//! draining after a shutdown signal (readiness turns 503 at once, so load
//! balancers stop sending, while requests are still served), or escalating
//! after an actor was given up (liveness turns 503 too: the process drains
//! and exits non-zero so that its supervisor starts a fresh one).
//!
//! The signals that start a shutdown are heard here too ([`shutdown_signal`]).
//!
//! It is one number that only moves forward, written by the shutdown
//! sequence and read by the probes, so it is an atomic rather than an
//! actor: a probe must answer even when every actor is stuck.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining,
    Escalating,
}

#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Serving,
            1 => Phase::Draining,
            _ => Phase::Escalating,
        }
    }

    /// Moves to `phase`, never back.
    pub fn enter(&self, phase: Phase) {
        let value = match phase {
            Phase::Serving => 0,
            Phase::Draining => 1,
            Phase::Escalating => 2,
        };
        self.0.fetch_max(value, Ordering::AcqRel);
    }
}

/// Waits for SIGTERM or SIGINT and names it.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for shutdown signals");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}
