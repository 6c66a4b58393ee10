//! Rate limiting's building blocks, apart from the actors that hold the
//! allowances: who the client is ([`client`]) and whose allowance a request spends
//! ([`key`]), the policy and its decisions
//! ([`policy`]), GCRA in a shared Redis ([`redis`]), and the response
//! headers that tell a client where it stands ([`headers`]). The limiter actors
//! ([`crate::actors::rate_limiter`]) and the guards
//! ([`crate::middleware::guards`]) build on them.

pub mod client;
pub mod headers;
pub mod key;
pub mod policy;
pub mod redis;

pub use key::RateKey;
pub use policy::{Decision, RatePolicy};
