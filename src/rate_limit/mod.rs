//! Rate limiting around the limiter actors: how a worker's checks reach them
//! in batches, and where allowances can live besides the actors' memory.

pub mod outbox;
pub mod redis;
