//! Who an actor instance is: its kind and its shard. Every log line, `/ready`
//! entry and fault drill names instances this way, so one instance's crash is
//! told apart from its siblings'.

use std::fmt;

/// The actors switchboard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// A worker's database actor (one per HTTP worker).
    Db,
    /// SQLite's one writer.
    DbWriter,
    Cache,
    /// Listens for other instances' writes (PostgreSQL only).
    Invalidator,
    /// A worker's rate limiter shard (one per HTTP worker).
    RateLimiter,
    Fetcher,
    Metrics,
    /// Exports trace spans (only while traces are on).
    SpanExporter,
}

impl ActorKind {
    /// The name logs, metrics and `/ready` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Db => "db",
            Self::DbWriter => "db_writer",
            Self::Cache => "cache",
            Self::Invalidator => "invalidator",
            Self::RateLimiter => "rate_limiter",
            Self::Fetcher => "fetcher",
            Self::Metrics => "metrics",
            Self::SpanExporter => "span_exporter",
        }
    }

    /// The fault drill that crashes it (`POST /debug/crash/{drill}`): every
    /// database actor answers to `db`.
    pub fn drill(self) -> &'static str {
        match self {
            Self::Db | Self::DbWriter => "db",
            other => other.name(),
        }
    }

    /// Every drill name, for the answer to an unknown one.
    pub const DRILLS: [&'static str; 7] = [
        "db",
        "cache",
        "invalidator",
        "rate_limiter",
        "fetcher",
        "metrics",
        "span_exporter",
    ];
}

/// One actor instance: its kind and, for the per-worker kinds, the worker's
/// index (0 for the kinds that run once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActorId {
    pub kind: ActorKind,
    pub shard: usize,
}

impl ActorId {
    /// An actor that runs once per process.
    pub fn single(kind: ActorKind) -> Self {
        Self { kind, shard: 0 }
    }

    pub fn name(self) -> &'static str {
        self.kind.name()
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
