//! What only SQLite does: its writer's batches, one transaction each
//! ([`transactions`]). The connections' set-up (WAL, `synchronous=FULL`,
//! a busy timeout) is the pool's ([`super::pool`]).

pub mod transactions;

pub use transactions::Transactions;
