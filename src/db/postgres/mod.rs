//! What only PostgreSQL does: a worker's connections shared by its queries
//! in flight ([`pipeline`]), the writes written by hand so that the server
//! keeps them prepared ([`statements`]), and batches of writes as one
//! statement each ([`batches`]). Everything here takes PostgreSQL's own
//! types, so no SQLite path can reach it.

pub mod batches;
mod pipeline;
pub mod statements;

pub use batches::Statements;
pub use pipeline::{PgShare, Pipeline};
