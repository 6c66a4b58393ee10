//! The actors that own switchboard's state, one module each; the supervision
//! they all run under; the roster that lists them; and [`ActorRef`], the
//! caller's side. Nothing here knows HTTP: a call that cannot be answered is
//! an [`ActorUnavailable`], which the HTTP edge renders.

pub mod actor_ref;
pub mod cache;
pub mod db;
pub mod fetcher;
pub mod identity;
pub mod invalidator;
pub mod metrics;
pub mod rate_limiter;
pub mod roster;
pub mod sharding;
pub mod span_exporter;
pub mod supervision;

pub use actor_ref::{ActorRef, ActorUnavailable};
pub use identity::{ActorId, ActorKind};
