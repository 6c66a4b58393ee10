//! `CacheActor`: owns the response cache, an LRU map (mini-moka's unsync
//! `Cache`, so no locks) with a TTL per entry, bounded by entries and bytes.
//!
//! Both bounds come from one weigher: every entry weighs at least
//! `max_bytes / max_entries`, so the byte bound also caps the entry count.
//!
//! The TTL is kept here, not by mini-moka: its unsync cache (0.10.3) frees
//! no weight when it drops an expired entry (it subtracts from the freed
//! total instead of adding), so once a full cache's entries had expired it
//! counted itself full forever and refused every new fill; reads stopped
//! hitting. Each entry carries its expiry: a read past it drops the entry,
//! and a sweep drops the rest, both through `invalidate`, which counts right.
//!
//! One actor's thread would cost every hit two thread switches (a cache
//! thread of its own sleeps between lookups, and each hit wakes it), so each
//! HTTP worker runs a shard of the cache on its own thread, and
//! [`CacheHandle`] routes each key to one shard by a hash of the key: a key
//! lives in exactly one place, each shard holds its share of the bounds, and
//! a hit on the worker's own shard never leaves its thread.
//!
//! Read-through without stale fills: a miss hands out a [`FillToken`] (the
//! invalidation epoch at that moment) and a [`Put`] is dropped if its key was
//! invalidated after the token was taken. So a reader that fetched a user from
//! the database just before a concurrent write committed can never put the old
//! value back after that write's invalidation: once a write is acknowledged,
//! nobody reads the old value from the cache. Callers do not run this
//! protocol themselves: [`CacheHandle::read_through`] does, for the users
//! API and the fetcher alike.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::{AsyncContext, Context, Handler, Message, MessageResponse};
use bytes::Bytes;
use mini_moka::unsync::Cache;
use serde::Serialize;

use super::sharding::ShardPicker;
use super::supervision::{run_guarded, supervised_actor, Supervise, Supervision};
use super::{ActorRef, ActorUnavailable};
use crate::metrics::{Event, Recorder};

/// How long an invalidation is remembered: longer than any read-through
/// (a database call plus the put) can take, which every call timeout bounds.
const TOMBSTONE_FLOOR: Duration = Duration::from_secs(60);
/// How often expired entries are swept out (at most; sooner for short TTLs).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The most invalidations remembered one by one. A burst past it (a bulk
/// `UPDATE` or `DELETE` by hand notifies once per row, and deletes at full
/// speed invalidate tens of thousands of keys a second) would otherwise
/// hold a tombstone per row for a minute: instead, they are all forgotten
/// and every fill read before then is refused, which costs misses, never a
/// stale entry.
const MAX_TOMBSTONES: usize = 65_536;

/// One shard's share of the cache's settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// `0` turns caching off: every lookup misses, every fill is dropped.
    pub max_entries: u64,
    /// Whether it starts paused, waiting for its instance to hear other
    /// instances' writes ([`Resume`]).
    pub start_paused: bool,
    pub max_bytes: u64,
    pub ttl: Duration,
    /// The longest a read-through can take (the actor call timeout).
    pub fill_window: Duration,
}

/// Proof of when a miss was seen; a fill carrying it is refused if the key
/// was invalidated since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillToken(u64);

/// A cached response: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub status: u16,
    pub body: Bytes,
    /// The value's entity tag, if it has one.
    pub tag: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Lookup {
    Hit(Cached),
    Miss(FillToken),
    /// The cache is paused: neither answered nor filled.
    Paused,
}

#[derive(Debug, Clone, Copy, Default, Serialize, MessageResponse)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
    pub evictions: u64,
}

/// A cached value and the moment it expires.
struct Entry {
    value: Cached,
    expires_at: Instant,
}

pub struct CacheActor {
    config: CacheConfig,
    entries: Cache<String, Entry>,
    /// Bumped on every invalidation; fill tokens are epochs.
    epoch: u64,
    /// Recently invalidated keys and the epoch and time they were invalidated.
    tombstones: HashMap<String, (u64, Instant)>,
    /// Tokens older than this are refused outright: their tombstones may be
    /// gone (purged, or lost in a restart).
    oldest_valid: u64,
    stats: CacheStats,
    /// It cannot hear other instances' writes: it serves nothing. Kept
    /// across restarts: the channel did not change when the cache failed.
    paused: bool,
    metrics: Recorder,
    supervision: Supervision,
}

impl CacheActor {
    pub fn new(config: CacheConfig, supervision: Supervision) -> Self {
        Self {
            paused: config.start_paused,
            config,
            entries: build_cache(&config),
            epoch: 0,
            tombstones: HashMap::new(),
            oldest_valid: 0,
            stats: CacheStats::default(),
            metrics: supervision.metrics().clone(),
            supervision,
        }
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            ..self.stats
        }
    }

    /// Drops every entry; tokens handed out before must not fill it again.
    fn clear(&mut self) {
        self.entries = build_cache(&self.config);
        self.tombstones.clear();
        self.epoch += 1;
        self.oldest_valid = self.epoch;
    }

    fn purge_tombstones(&mut self) {
        let keep_for = self.config.fill_window.max(TOMBSTONE_FLOOR);
        let mut newest_purged = self.oldest_valid;
        self.tombstones.retain(|_, (epoch, at)| {
            let keep = at.elapsed() < keep_for;
            if !keep {
                newest_purged = newest_purged.max(*epoch);
            }
            keep
        });
        self.oldest_valid = newest_purged;
    }

    fn sweep_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.expires_at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.entries.invalidate(&key);
        }
    }
}

fn build_cache(config: &CacheConfig) -> Cache<String, Entry> {
    let floor = config.max_bytes.div_ceil(config.max_entries.max(1));
    Cache::builder()
        .max_capacity(config.max_bytes)
        .weigher(move |key: &String, entry: &Entry| {
            let size = (key.len() + entry.value.body.len()) as u64;
            u32::try_from(size.max(floor)).unwrap_or(u32::MAX)
        })
        .build()
}

impl Supervise for CacheActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// A restarted cache is empty: every read goes to the database again.
    fn reset(&mut self) {
        self.stats = CacheStats::default();
        self.clear();
    }

    fn on_start(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TOMBSTONE_FLOOR, |act, _| act.purge_tombstones());
        ctx.run_interval(self.config.ttl.min(SWEEP_EVERY), |act, _| {
            act.sweep_expired()
        });
    }

    fn report(&mut self) {
        let entries = self.entries.entry_count();
        let shard = self.supervision.id().shard;
        self.metrics.record(Event::CacheSize { shard, entries });
    }
}

supervised_actor!(CacheActor; Get, Put, Invalidate, Stats, Pause, Resume);

/// Look a key up; a miss comes with the token a later [`Put`] must carry.
#[derive(Debug, Message)]
#[rtype(result = "Result<Lookup, ActorUnavailable>")]
pub struct Get(pub String);

/// Store a value read through after a miss. Sent without waiting.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Put {
    pub key: String,
    pub value: Cached,
    pub token: FillToken,
}

/// Drop a key (see [`CacheHandle::invalidate`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Invalidate(pub String);

#[derive(Debug, Message)]
#[rtype(result = "CacheStats")]
pub struct Stats;

/// This instance no longer hears other instances' writes: serve nothing
/// until [`Resume`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Pause;

/// This instance hears other instances' writes again: forget everything
/// cached before (some of it may have changed meanwhile) and serve again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Resume;

impl Handler<Pause> for CacheActor {
    type Result = ();

    fn handle(&mut self, _: Pause, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            act.paused = true;
            act.clear();
        })
    }
}

impl Handler<Resume> for CacheActor {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            act.clear();
            act.paused = false;
        })
    }
}

impl Handler<Get> for CacheActor {
    type Result = Result<Lookup, ActorUnavailable>;

    fn handle(&mut self, Get(key): Get, ctx: &mut Context<Self>) -> Self::Result {
        run_guarded(self, ctx, |act, _| {
            if act.paused {
                act.stats.misses += 1;
                act.metrics.record(Event::Cache { hit: false });
                return Ok(Lookup::Paused);
            }
            let now = Instant::now();
            let fresh = match act.entries.get(&key) {
                Some(entry) if entry.expires_at > now => Some(entry.value.clone()),
                Some(_) => {
                    act.entries.invalidate(&key);
                    None
                }
                None => None,
            };
            Ok(match fresh {
                Some(value) => {
                    act.stats.hits += 1;
                    act.metrics.record(Event::Cache { hit: true });
                    Lookup::Hit(value)
                }
                None => {
                    act.stats.misses += 1;
                    act.metrics.record(Event::Cache { hit: false });
                    Lookup::Miss(FillToken(act.epoch))
                }
            })
        })
    }
}

impl Handler<Put> for CacheActor {
    type Result = ();

    fn handle(&mut self, put: Put, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            let FillToken(seen) = put.token;
            let stale = act.config.max_entries == 0
                || act.paused
                || seen < act.oldest_valid
                || act
                    .tombstones
                    .get(&put.key)
                    .is_some_and(|(invalidated, _)| *invalidated > seen);
            // A key filled since this fill's miss, and not invalidated
            // since, holds what this fill read or newer: concurrent misses
            // of one key fill it once.
            if stale || act.entries.contains_key(&put.key) {
                return;
            }
            let before = act.entries.entry_count();
            let entry = Entry {
                value: put.value,
                expires_at: Instant::now() + act.config.ttl,
            };
            act.entries.insert(put.key, entry);
            let expected = before + 1;
            let evicted = expected.saturating_sub(act.entries.entry_count());
            if evicted > 0 {
                act.stats.evictions += evicted;
                act.metrics.record(Event::CacheEvictions(evicted));
            }
        })
    }
}

impl Handler<Invalidate> for CacheActor {
    type Result = ();

    fn handle(&mut self, Invalidate(key): Invalidate, ctx: &mut Context<Self>) {
        run_guarded(self, ctx, |act, _| {
            act.epoch += 1;
            act.entries.invalidate(&key);
            if act.tombstones.len() < MAX_TOMBSTONES {
                act.tombstones.insert(key, (act.epoch, Instant::now()));
            } else {
                // Dropped, not cleared: its room goes back too.
                act.tombstones = HashMap::new();
                act.oldest_valid = act.epoch;
            }
        })
    }
}

impl Handler<Stats> for CacheActor {
    type Result = CacheStats;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        self.stats()
    }
}

/// What a read through the cache found.
#[derive(Debug)]
pub enum Read<T> {
    /// The cache had it.
    Hit(Cached),
    /// The cache did not (or could not be asked): loaded from the source.
    Loaded(T),
}

/// The callers' side of the cache: read-through with fill tokens, and
/// invalidation, each key at its shard. With no room for entries
/// (`SWITCHBOARD_CACHE_MAX_ENTRIES=0`) it never calls a shard, so reads and
/// writes pay nothing for it; nor before the workers have started theirs.
#[derive(Clone)]
pub struct CacheHandle {
    shards: Arc<OnceLock<CacheShards>>,
    enabled: bool,
}

struct CacheShards {
    shards: Vec<ActorRef<CacheActor>>,
    picker: ShardPicker,
}

impl CacheHandle {
    /// A handle whose shards are not started yet ([`Self::set_shards`]).
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            shards: Arc::default(),
            enabled: config.max_entries > 0,
        }
    }

    /// The workers' shards, in worker order; set once.
    pub fn set_shards(&self, shards: Vec<ActorRef<CacheActor>>) {
        let picker = ShardPicker::default();
        let _ = self.shards.set(CacheShards { shards, picker });
    }

    /// The shard that holds `key`, if the cache is on and started.
    fn shard_of(&self, key: &str) -> Option<&ActorRef<CacheActor>> {
        let CacheShards { shards, picker } = self.shards.get().filter(|_| self.enabled)?;
        shards.get(picker.index(key, shards.len()))
    }

    fn every_shard(&self) -> &[ActorRef<CacheActor>] {
        self.shards.get().map_or(&[], |s| &s.shards)
    }

    /// The cached value of `key`, or else what `load` loads, which fills
    /// the cache when `fill` says what of it to keep. A fill is refused if
    /// `key` was invalidated since the miss, so no value older than an
    /// acknowledged write is put back. If the cache cannot be asked, `load`
    /// answers alone.
    pub async fn read_through<T, E, Fut>(
        &self,
        key: String,
        load: impl FnOnce() -> Fut,
        fill: impl FnOnce(&T) -> Option<Cached>,
    ) -> Result<Read<T>, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let shard = self.shard_of(&key);
        let token = match shard {
            Some(shard) => match shard.call(Get(key.clone())).await {
                Ok(Lookup::Hit(cached)) => return Ok(Read::Hit(cached)),
                Ok(Lookup::Miss(token)) => Some(token),
                Ok(Lookup::Paused) | Err(_) => None,
            },
            None => None,
        };
        let loaded = load().await?;
        if let (Some(shard), Some(token), Some(value)) = (shard, token, fill(&loaded)) {
            shard.tell(Put { key, value, token });
        }
        Ok(Read::Loaded(loaded))
    }

    /// Drops `key` before the write that changed it is acknowledged. The
    /// invalidation is queued in the actor's mailbox without waiting for its
    /// answer ([`ActorRef::post`]): the mailbox is first in, first out, so
    /// every lookup asked after the acknowledgement is queued behind it and
    /// finds the key gone. A cache actor that is restarting keeps its
    /// mailbox; one given up or ended holds no copy to drop.
    pub fn invalidate(&self, key: String) {
        if let Some(shard) = self.shard_of(&key) {
            shard.post(Invalidate(key));
        }
    }

    /// This instance stopped hearing other instances' writes: every shard
    /// stops serving ([`Pause`]).
    pub fn pause(&self) {
        for shard in self.every_shard() {
            shard.post(Pause);
        }
    }

    /// It hears them again: every shard forgets and serves ([`Resume`]).
    pub fn resume(&self) {
        for shard in self.every_shard() {
            shard.post(Resume);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(body: &'static [u8]) -> Cached {
        Cached {
            status: 200,
            body: Bytes::from_static(body),
            tag: None,
        }
    }

    fn supervision() -> Supervision {
        Supervision::unwatched(super::super::ActorId::single(
            super::super::ActorKind::Cache,
        ))
    }

    fn config(max_entries: u64, max_bytes: u64) -> CacheConfig {
        CacheConfig {
            max_entries,
            max_bytes,
            ttl: Duration::from_secs(60),
            fill_window: Duration::from_secs(1),
            start_paused: false,
        }
    }

    /// A cache of 100 entries in 1 MiB.
    fn started() -> actix::Addr<CacheActor> {
        actix::Supervisor::start(|_| CacheActor::new(config(100, 1 << 20), supervision()))
    }

    /// The fill token of a lookup of "k" that must miss.
    async fn miss(cache: &actix::Addr<CacheActor>) -> FillToken {
        let Lookup::Miss(token) = cache.send(Get("k".into())).await.unwrap().unwrap() else {
            panic!("\"k\" was expected to miss")
        };
        token
    }

    #[actix::test]
    async fn fills_hit_and_a_fill_after_invalidation_is_refused() {
        let cache = started();
        let token = miss(&cache).await;
        cache.send(Invalidate("k".into())).await.unwrap();
        cache.do_send(Put {
            key: "k".into(),
            value: cached(b"old"),
            token,
        });
        assert!(matches!(
            cache.send(Get("k".into())).await.unwrap().unwrap(),
            Lookup::Miss(_)
        ));

        let token = miss(&cache).await;
        cache.do_send(Put {
            key: "k".into(),
            value: cached(b"new"),
            token,
        });
        let Lookup::Hit(value) = cache.send(Get("k".into())).await.unwrap().unwrap() else {
            panic!("fresh fill was refused")
        };
        assert_eq!(value, cached(b"new"));
    }

    /// Concurrent misses of one key fill it once: the first fill stays,
    /// the later ones of the same misses are dropped.
    #[actix::test]
    async fn concurrent_misses_fill_once() {
        let cache = started();
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let token = miss(&cache).await;
            tokens.push(token);
        }
        for (token, body) in tokens.into_iter().zip([&b"first"[..], b"second"]) {
            cache.do_send(Put {
                key: "k".into(),
                value: cached(body),
                token,
            });
        }
        let Lookup::Hit(value) = cache.send(Get("k".into())).await.unwrap().unwrap() else {
            panic!("not filled")
        };
        assert_eq!(value, cached(b"first"));
    }

    /// How many invalidations the cache remembers one by one.
    #[derive(Message)]
    #[rtype(result = "usize")]
    struct Tombstones;

    impl Handler<Tombstones> for CacheActor {
        type Result = usize;

        fn handle(&mut self, _: Tombstones, _: &mut Context<Self>) -> usize {
            self.tombstones.len()
        }
    }

    /// Past its bound on remembered invalidations, the cache forgets them
    /// all and refuses every fill read before then: still no stale entry,
    /// and memory that a burst of writes cannot grow.
    #[actix::test]
    async fn a_burst_of_invalidations_is_remembered_in_bounded_memory() {
        let cache = started();
        let before = miss(&cache).await;
        // The key's own invalidation is the one past the bound.
        for i in 0..MAX_TOMBSTONES {
            cache.do_send(Invalidate(format!("burst{i}")));
        }
        cache.send(Invalidate("k".into())).await.unwrap();
        let remembered = cache.send(Tombstones).await.unwrap();
        assert!(remembered <= MAX_TOMBSTONES, "{remembered}");
        cache.do_send(Put {
            key: "k".into(),
            value: cached(b"old"),
            token: before,
        });
        assert_eq!(
            read_through(&cache, &["k"]).await,
            [false],
            "the stale fill was refused"
        );
        assert_eq!(
            read_through(&cache, &["k"]).await,
            [true],
            "a fresh one is kept"
        );
    }

    #[actix::test]
    async fn a_paused_cache_serves_and_keeps_nothing_and_resumes_empty() {
        let cache = started();
        assert_eq!(read_through(&cache, &["k"]).await, [false]);
        assert_eq!(read_through(&cache, &["k"]).await, [true]);
        cache.send(Pause).await.unwrap();
        let Lookup::Paused = cache.send(Get("k".into())).await.unwrap().unwrap() else {
            panic!("a paused cache answered")
        };
        cache.send(Resume).await.unwrap();
        assert_eq!(read_through(&cache, &["k"]).await, [false], "cleared");
        assert_eq!(read_through(&cache, &["k"]).await, [true], "serving again");
    }

    #[actix::test]
    async fn no_entries_means_no_cache() {
        let cache =
            actix::Supervisor::start(|_| CacheActor::new(config(0, 1 << 20), supervision()));
        for _ in 0..2 {
            let token = miss(&cache).await;
            cache.do_send(Put {
                key: "k".into(),
                value: cached(b"v"),
                token,
            });
        }
        assert_eq!(cache.send(Stats).await.unwrap().entries, 0);
    }

    /// Reads then fills each key; says which of them the cache answered.
    async fn read_through(cache: &actix::Addr<CacheActor>, keys: &[&str]) -> Vec<bool> {
        let mut hits = Vec::new();
        for key in keys {
            match cache.send(Get((*key).into())).await.unwrap().unwrap() {
                Lookup::Hit(_) => hits.push(true),
                Lookup::Paused => hits.push(false),
                Lookup::Miss(token) => {
                    hits.push(false);
                    cache.do_send(Put {
                        key: (*key).into(),
                        value: cached(b"v"),
                        token,
                    });
                }
            }
        }
        hits
    }

    #[actix::test]
    async fn a_full_cache_whose_entries_expired_takes_new_ones() {
        let cache = actix::Supervisor::start(|_| {
            let config = CacheConfig {
                ttl: Duration::from_millis(200),
                ..config(2, 1 << 20)
            };
            CacheActor::new(config, supervision())
        });
        read_through(&cache, &["a", "b"]).await;
        assert_eq!(read_through(&cache, &["a", "b"]).await, [true, true]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(read_through(&cache, &["a", "b"]).await, [false, false]);
        // The expired entries' room is free again: the new fills are kept.
        assert_eq!(read_through(&cache, &["a", "b"]).await, [true, true]);
    }

    #[actix::test]
    async fn entry_bound_holds_through_the_weigher() {
        let cache =
            actix::Supervisor::start(|_| CacheActor::new(config(10, 1 << 20), supervision()));
        for i in 0..100 {
            let Lookup::Miss(token) = cache.send(Get(format!("k{i}"))).await.unwrap().unwrap()
            else {
                panic!()
            };
            cache.do_send(Put {
                key: format!("k{i}"),
                value: cached(b"v"),
                token,
            });
        }
        let stats = cache.send(Stats).await.unwrap();
        assert!(stats.entries <= 10, "{stats:?}");
        assert!(stats.evictions >= 90, "{stats:?}");
    }
}
