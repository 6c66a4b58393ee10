//! Where per-client allowances can live besides the limiter actor's memory.

pub mod redis;
