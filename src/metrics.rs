//! The recording side of metrics: the [`Event`]s every part of switchboard
//! reports, and the buffer each recorder keeps them in until it sends them
//! to [`crate::actors::metrics::MetricsActor`] in one batch.
//!
//! A buffer belongs to one recorder (an HTTP worker, or an actor), so
//! filling it needs no lock and sending it costs one message per batch. A
//! disabled handle (`SWITCHBOARD_METRICS=false`) records nothing at all.

use std::time::Duration;

use crate::actors::metrics::{MetricsActor, Record};
use crate::actors::ActorRef;

/// How often recorders send what they collected.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// A buffer this full is sent at once.
const FLUSH_AT: usize = 512;

/// What the rate limiter did with a request: the `decision` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited,
    /// The limiter could not be asked, and the request was let through.
    FailOpen,
}

impl RateDecision {
    pub const ALL: [Self; 3] = [Self::Allowed, Self::Limited, Self::FailOpen];

    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::FailOpen => "fail_open",
        }
    }
}

/// One thing that happened, in the words of the metric it feeds.
#[derive(Debug, Clone)]
pub enum Event {
    Request {
        method: &'static str,
        /// The matched route template, or `unmatched`.
        route: &'static str,
        status: u16,
        seconds: f64,
    },
    InFlight {
        worker: usize,
        count: i64,
    },
    RateLimit(RateDecision),
    Cache {
        hit: bool,
    },
    CacheSize {
        entries: u64,
    },
    CacheEvictions(u64),
    /// One database actor's pool (there is one actor per HTTP worker).
    Pool {
        shard: usize,
        active: usize,
        idle: usize,
        max: usize,
    },
    Query {
        op: &'static str,
        seconds: f64,
    },
    Upstream {
        host: String,
        outcome: &'static str,
        seconds: f64,
    },
    Retry {
        host: String,
    },
    /// 0 closed, 1 open, 2 half-open.
    Breaker {
        host: String,
        state: u8,
    },
    Restart {
        actor: &'static str,
    },
    Messages {
        actor: &'static str,
        count: u64,
    },
}

/// Where a recorder sends its batches; empty when metrics are turned off.
#[derive(Clone, Default)]
pub struct MetricsHandle(Option<ActorRef<MetricsActor>>);

impl MetricsHandle {
    pub fn new(actor: ActorRef<MetricsActor>) -> Self {
        Self(Some(actor))
    }

    pub fn disabled() -> Self {
        Self(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Sends a batch without waiting; dropped if the actor cannot take it.
    pub fn send(&self, events: Vec<Event>) {
        if let (Some(actor), false) = (&self.0, events.is_empty()) {
            actor.tell(Record(events));
        }
    }
}

/// Events collected by one recorder since its last flush.
#[derive(Default)]
pub struct MetricsBuffer {
    events: Vec<Event>,
    handle: MetricsHandle,
}

impl MetricsBuffer {
    pub fn new(handle: MetricsHandle) -> Self {
        Self {
            events: Vec::new(),
            handle,
        }
    }

    /// Send later batches here; what is pending is kept.
    pub fn send_to(&mut self, handle: MetricsHandle) {
        self.handle = handle;
    }

    pub fn push(&mut self, event: Event) {
        if self.handle.is_enabled() {
            self.events.push(event);
            if self.events.len() >= FLUSH_AT {
                self.flush();
            }
        }
    }

    pub fn flush(&mut self) {
        if !self.events.is_empty() {
            self.handle.send(std::mem::take(&mut self.events));
        }
    }
}
