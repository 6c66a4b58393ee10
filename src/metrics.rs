//! The recording side of metrics: the [`Event`]s every part of switchboard
//! reports, and the [`Recorder`] each thread collects them in until it sends
//! them, in one [`Record`] message, to whoever owns the registry
//! ([`crate::actors::metrics::MetricsActor`]).
//!
//! There is one recorder per thread, shared by everything that runs there
//! (an HTTP worker's middleware and its actors, or an actor on a thread of
//! its own, and the futures they spawn), so recording is a push onto a
//! thread-local vector: no lock, no await, and a cross-thread message per
//! batch rather than per event. The batch goes out on a timer, when it grows
//! large, and when the thread's last holder lets go. A recorder whose sink
//! is disabled (`SWITCHBOARD_METRICS=false`) keeps nothing.
//!
//! A batch the owner cannot take (it is down, restarting, or its mailbox is
//! full) is dropped rather than waited for; the recorder counts the drops
//! and sends the count with its next batch that goes through
//! (`metrics_batches_dropped_total`), and warns at most once a second, so
//! that undercounting is never silent.
//!
//! This module knows nothing of actors: the sink is an actix `Recipient`, so
//! the registry's owner can be anything that handles [`Record`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Message, Recipient};

/// How often a recorder sends what it collected.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// A batch this large is sent at once.
const FLUSH_AT: usize = 512;
/// The least time between two warnings of one thread's dropped batches.
const WARN_EVERY: Duration = Duration::from_secs(1);

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
    /// A request refused by access control: the `reason` label (see
    /// [`crate::auth::Refusal::reason`]).
    AuthFailure(&'static str),
    Cache {
        hit: bool,
    },
    /// One cache shard's entries (the gauge adds every shard's up).
    CacheSize {
        shard: usize,
        entries: u64,
    },
    CacheEvictions(u64),
    /// Whether this instance hears other instances' writes.
    Invalidations {
        listening: bool,
    },
    /// An invalidation heard from the channel.
    InvalidationHeard,
    /// One database actor's pool (one per HTTP worker, and SQLite's writer).
    Pool {
        actor: &'static str,
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
        shard: usize,
    },
    Messages {
        actor: &'static str,
        shard: usize,
        count: u64,
    },
    /// An actor's state now: `running`, `backing_off` or `given_up`.
    ActorState {
        actor: &'static str,
        shard: usize,
        state: &'static str,
    },
    /// Batches this thread could not hand over since its last one that
    /// went through.
    BatchesDropped(u64),
    /// Trace spans dropped on their way to the collector.
    SpansDropped(u64),
}

/// A batch of events from one thread.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub Vec<Event>);

/// Where batches go; nowhere when metrics are turned off.
#[derive(Clone, Default)]
pub struct MetricsSink(Option<Recipient<Record>>);

impl MetricsSink {
    pub fn new(recipient: Recipient<Record>) -> Self {
        Self(Some(recipient))
    }

    pub fn disabled() -> Self {
        Self(None)
    }

    fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Sends a batch without waiting; `false` if the owner could not take
    /// it, and it was dropped.
    fn send(&self, events: Vec<Event>) -> bool {
        self.0
            .as_ref()
            .is_none_or(|recipient| recipient.try_send(Record(events)).is_ok())
    }
}

/// One thread's events since its last batch; cloning shares it.
#[derive(Clone)]
pub struct Recorder(Rc<Batch>);

struct Batch {
    events: RefCell<Vec<Event>>,
    sink: RefCell<MetricsSink>,
    /// Batches dropped since the last one that went through.
    dropped: Cell<u64>,
    /// When dropped batches were last warned about.
    warned: Cell<Option<Instant>>,
}

impl Recorder {
    /// This thread's recorder, and the task that sends its batches every
    /// [`FLUSH_EVERY`] for as long as anyone holds it. Call once per
    /// thread, inside its actix runtime.
    pub fn start(sink: MetricsSink) -> Self {
        let recorder = Self(Rc::new(Batch::new(sink)));
        let batch = Rc::downgrade(&recorder.0);
        actix_rt::spawn(async move {
            let mut ticks = actix_rt::time::interval(FLUSH_EVERY);
            loop {
                ticks.tick().await;
                let Some(batch) = batch.upgrade() else { break };
                batch.flush();
            }
        });
        recorder
    }

    /// A recorder that keeps nothing (and needs no runtime).
    pub fn disabled() -> Self {
        Self(Rc::new(Batch::new(MetricsSink::disabled())))
    }

    /// Sends later batches to `sink` (the registry's owner records its own
    /// events, and knows its address only once it has started).
    pub fn connect(&self, sink: MetricsSink) {
        *self.0.sink.borrow_mut() = sink;
    }

    pub fn record(&self, event: Event) {
        if !self.0.sink.borrow().is_enabled() {
            return;
        }
        let full = {
            let mut events = self.0.events.borrow_mut();
            events.push(event);
            events.len() >= FLUSH_AT
        };
        if full {
            self.0.flush();
        }
    }
}

impl Batch {
    fn new(sink: MetricsSink) -> Self {
        Self {
            events: RefCell::new(Vec::new()),
            sink: RefCell::new(sink),
            dropped: Cell::new(0),
            warned: Cell::new(None),
        }
    }

    fn flush(&self) {
        let mut events = std::mem::take(&mut *self.events.borrow_mut());
        let dropped = self.dropped.get();
        if dropped > 0 {
            events.push(Event::BatchesDropped(dropped));
        }
        if events.is_empty() {
            return;
        }
        if self.sink.borrow().send(events) {
            self.dropped.set(0);
        } else {
            self.dropped.set(dropped + 1);
            self.warn_dropped();
        }
    }

    fn warn_dropped(&self) {
        let now = Instant::now();
        if self.warned.get().is_some_and(|at| now - at < WARN_EVERY) {
            return;
        }
        self.warned.set(Some(now));
        tracing::warn!(
            dropped = self.dropped.get(),
            "metrics batches dropped: the metrics actor cannot take them (down, restarting or overloaded); metrics undercount"
        );
    }
}

impl Drop for Batch {
    /// The thread's last events go out with its last holder.
    fn drop(&mut self) {
        self.flush();
    }
}
