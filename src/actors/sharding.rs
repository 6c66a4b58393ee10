//! Which shard of a per-worker actor holds a key (a client's allowance, a
//! cached response): one hash, seeded per process, so a key always maps to
//! the same shard, and a client choosing its keys can at worst pick their
//! shard, which buys it nothing.

use std::hash::{BuildHasher, Hash};

#[derive(Default)]
pub struct ShardPicker(foldhash::fast::RandomState);

impl ShardPicker {
    /// The index, below `shards`, of the shard that holds `key`.
    pub fn index(&self, key: &(impl Hash + ?Sized), shards: usize) -> usize {
        let index = self.0.hash_one(key) % shards.max(1) as u64;
        usize::try_from(index).unwrap_or(0)
    }
}
