//! The connection pool: deadpool over diesel-async, on PostgreSQL
//! (`AsyncPgConnection`) or SQLite (`SyncConnectionWrapper<SqliteConnection>`,
//! bundled libsqlite3). diesel-async has no multi-backend connection, so the
//! pool and its lent connection are enums over the two.
//!
//! A [`PoolSpec`] says what to build; whoever owns a pool (a database
//! actor) keeps it, so that it can build a fresh pool after a failure.
//!
//! A connection is handed out as it is ("fast" recycling): deadpool's default
//! ("verified") sends `SELECT 1` before every checkout, a second round trip
//! for every query. A connection that died since its last use fails its next
//! query and is then retired; a read is sent once more, on another
//! connection, and a write is answered 503 ([`super::users`]).
//!
//! SQLite connections are set up for a server: WAL so readers never block the
//! writer, `synchronous=FULL` so an acknowledged write survives a crash, and a
//! busy timeout so a writer that finds the file locked (by another process,
//! or while a connection switches to WAL) waits instead of failing with
//! "database is locked". Within the process only SQLite's writer actor
//! writes (see [`crate::actors::db`]).
//!
//! Each SQLite connection keeps pages in a cache of its own, and the workers'
//! read connections all read the same pages, so a worker's reader keeps a
//! small one ([`PageCache::Small`]): the rest are read from the system's page
//! cache, which every connection shares, rather than held once per
//! connection.

use deadpool::managed::Manager;
use deadpool::Runtime;
use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use super::conn::{
    Checkout, DbConn, Lease, PoolStatus, QueryCost, SqliteAsyncConnection, CHECKOUT_TIMEOUT,
};
use super::DbError;
use crate::db::DatabaseUrl;

/// busy_timeout comes first: even switching to WAL takes a lock, and
/// connections opened together must wait for it rather than fail.
const SQLITE_SETUP: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// How much of the database each SQLite connection of a pool keeps in its
/// own page cache. PostgreSQL's connections ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCache {
    /// SQLite's default, 2 MiB: for the writer, whose batches dirty pages
    /// that stay cached until they commit, and for a pool that does
    /// everything.
    Default,
    /// 256 KiB (64 pages): enough for the tables' and indexes' inner pages,
    /// for a worker's read-only connections.
    Small,
}

impl PageCache {
    /// SQLite's `cache_size`: negative is KiB.
    fn pragma(self) -> &'static str {
        match self {
            Self::Default => "PRAGMA cache_size = -2000;",
            Self::Small => "PRAGMA cache_size = -256;",
        }
    }
}

/// What a pool is built from.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub url: DatabaseUrl,
    /// Connections at most.
    pub size: usize,
    pub page_cache: PageCache,
}

#[derive(Clone)]
pub enum DbPool {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteAsyncConnection>),
}

impl PoolSpec {
    /// Builds the pool; no connection is opened until one is needed.
    pub fn build(&self) -> DbPool {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.recycling_method = RecyclingMethod::Fast;
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
                DbPool::Postgres(self.pool_of(manager))
            }
            DatabaseUrl::Sqlite(path) => {
                let cache = self.page_cache;
                let mut config = ManagerConfig::<SqliteAsyncConnection>::default();
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(move |url| {
                    let url = url.to_owned();
                    Box::pin(async move {
                        let mut conn = SqliteAsyncConnection::establish(&url).await?;
                        for setup in [SQLITE_SETUP, cache.pragma()] {
                            conn.batch_execute(setup)
                                .await
                                .map_err(ConnectionError::CouldntSetupConfiguration)?;
                        }
                        Ok(conn)
                    })
                });
                let manager =
                    AsyncDieselConnectionManager::<SqliteAsyncConnection>::new_with_config(
                        path.to_string_lossy(),
                        config,
                    );
                DbPool::Sqlite(self.pool_of(manager))
            }
        }
    }

    fn pool_of<M: Manager>(&self, manager: M) -> deadpool::managed::Pool<M> {
        deadpool::managed::Pool::builder(manager)
            .max_size(self.size)
            .wait_timeout(Some(CHECKOUT_TIMEOUT))
            .create_timeout(Some(CHECKOUT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .expect("deadpool's build fails only for timeouts without a runtime")
    }
}

/// A connection checked out of a [`DbPool`] for one query. It lives in the
/// query's future: boxing the larger PostgreSQL variant would cost an
/// allocation per query to save nothing.
#[allow(clippy::large_enum_variant)]
pub enum PooledConn {
    Postgres(Object<AsyncPgConnection>),
    Sqlite(Object<SqliteAsyncConnection>),
}

impl Lease for PooledConn {
    fn conn(&mut self) -> DbConn<'_> {
        match self {
            Self::Postgres(object) => DbConn::Postgres(object),
            Self::Sqlite(object) => object.conn(),
        }
    }

    /// Closes the connection now, rather than give it back to deadpool,
    /// which would hand it out again if its end had not been noticed yet.
    fn retire(self) {
        match self {
            Self::Postgres(object) => drop(Object::take(object)),
            Self::Sqlite(object) => object.retire(),
        }
    }
}

impl Lease for Object<SqliteAsyncConnection> {
    fn conn(&mut self) -> DbConn<'_> {
        DbConn::Sqlite(self)
    }

    fn retire(self) {
        drop(Object::take(self));
    }
}

/// SQLite's writer checks its connection out of its own pool.
impl Checkout for Pool<SqliteAsyncConnection> {
    type Lease = Object<SqliteAsyncConnection>;

    async fn get(&self, _: QueryCost) -> Result<Self::Lease, DbError> {
        Ok(Pool::get(self).await?)
    }
}

impl PoolStatus {
    pub fn of<M: Manager>(pool: &deadpool::managed::Pool<M>) -> Self {
        let status = pool.status();
        Self {
            max_size: status.max_size,
            size: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }
}

impl DbPool {
    pub fn status(&self) -> PoolStatus {
        match self {
            Self::Postgres(pool) => PoolStatus::of(pool),
            Self::Sqlite(pool) => PoolStatus::of(pool),
        }
    }

    /// Closes the pool: idle connections are dropped now, busy ones when
    /// they are returned, and later checkouts fail.
    pub fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close(),
            Self::Sqlite(pool) => pool.close(),
        }
    }
}

impl Checkout for DbPool {
    type Lease = PooledConn;

    /// Checks a connection out, waiting at most [`CHECKOUT_TIMEOUT`].
    async fn get(&self, _: QueryCost) -> Result<PooledConn, DbError> {
        Ok(match self {
            Self::Postgres(pool) => PooledConn::Postgres(pool.get().await?),
            Self::Sqlite(pool) => PooledConn::Sqlite(Pool::get(pool).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use diesel::dsl::sql;
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    use super::*;
    use crate::db::migrate;

    /// The cache size a connection of a fresh pool over `path` reports.
    async fn cache_size(path: std::path::PathBuf, page_cache: PageCache) -> i64 {
        let url = DatabaseUrl::Sqlite(path);
        migrate(&url).await.unwrap();
        let spec = PoolSpec {
            url,
            size: 1,
            page_cache,
        };
        let DbPool::Sqlite(pool) = spec.build() else {
            unreachable!("a SQLite url builds a SQLite pool")
        };
        let mut conn = pool.get().await.unwrap();
        diesel::select(sql::<BigInt>(
            "(SELECT cache_size FROM pragma_cache_size())",
        ))
        .get_result(&mut *conn)
        .await
        .unwrap()
    }

    #[actix_web::test]
    async fn readers_keep_a_small_page_cache_and_the_writer_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        assert_eq!(cache_size(path.clone(), PageCache::Small).await, -256);
        assert_eq!(cache_size(path, PageCache::Default).await, -2000);
    }

    /// Every connection a pool opens, of either page cache, is in WAL mode
    /// and waits for the WAL to reach the disk at every commit
    /// (`synchronous` 2 is FULL).
    #[actix_web::test]
    async fn every_sqlite_connection_flushes_each_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("users.db"));
        for page_cache in [PageCache::Default, PageCache::Small] {
            let spec = PoolSpec {
                url: url.clone(),
                size: 3,
                page_cache,
            };
            let DbPool::Sqlite(pool) = spec.build() else {
                unreachable!("a SQLite url builds a SQLite pool")
            };
            // Three held at once: three connections, each set up anew.
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(pool.get().await.unwrap());
            }
            assert_eq!(pool.status().size, 3);
            for conn in &mut held {
                let synchronous: i64 = diesel::select(sql::<BigInt>(
                    "(SELECT synchronous FROM pragma_synchronous())",
                ))
                .get_result(&mut **conn)
                .await
                .unwrap();
                assert_eq!(synchronous, 2, "{page_cache:?}");
                let journal: String = diesel::select(sql::<diesel::sql_types::Text>(
                    "(SELECT journal_mode FROM pragma_journal_mode())",
                ))
                .get_result(&mut **conn)
                .await
                .unwrap();
                assert_eq!(journal, "wal", "{page_cache:?}");
            }
        }
    }
}
