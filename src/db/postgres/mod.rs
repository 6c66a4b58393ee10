//! What only PostgreSQL does: a worker's connections shared by its queries
//! in flight ([`pipeline`]), the writes written by hand so that the server
//! keeps them prepared ([`statements`]), batches of writes and of point
//! reads as one statement each ([`batches`], [`lookups`]), and whether commits reach the disk before
//! they return ([`durability`]). Everything here takes PostgreSQL's own
//! types, so no SQLite path can reach it.

pub mod batches;
pub mod durability;
pub mod lookups;
mod pipeline;
pub mod statements;

pub use batches::Statements;
pub use lookups::Lookups;
pub use pipeline::{PgShare, Pipeline};
