//! The actors that own switchboard's state, one module each, and the
//! supervision they all run under. Handlers reach them through [`ActorRef`].

pub mod actor_ref;
pub mod cache;
pub mod db;
pub mod fetcher;
pub mod group_commit;
pub mod metrics;
pub mod rate_limiter;
pub mod supervision;

pub use actor_ref::ActorRef;
