//! The connection pool: deadpool over diesel-async, on PostgreSQL
//! (`AsyncPgConnection`) or SQLite (`SyncConnectionWrapper<SqliteConnection>`,
//! bundled libsqlite3). diesel-async has no multi-backend connection, so the
//! pool and a borrowed connection ([`DbConn`]) are enums, and `on_conn!` runs
//! the same diesel code on either. The users queries take a [`DbConn`], not
//! the pool, so SQLite's writer can run several of them in one transaction.
//!
//! On PostgreSQL the database actors do not check a connection out per query:
//! they share the pool's connections among the queries in flight
//! ([`super::pipeline`]). On SQLite, and in the benchmark suite's baseline,
//! each query checks one out.
//!
//! A connection is handed out as it is ("fast" recycling): deadpool's default
//! ("verified") sends `SELECT 1` before every checkout, which doubled the
//! database's work per request. A connection that died since its last use
//! fails its next query and is then discarded; a read is sent once more,
//! on another connection, and a write is answered 503 ([`super::users`]).
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
//! cache, which every connection shares. With SQLite's default of 2 MiB each,
//! SQLite's heap in a server grew by 11 MiB under a read load and kept it a
//! minute later (eight readers, the benchmark suite's 1 MiB database); with
//! 256 KiB per reader, by 2.3 MiB.

use std::time::Duration;

use deadpool::Runtime;
use diesel::{Connection, ConnectionError, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::pipeline::PgShare;
use super::DbError;
use crate::config::DatabaseUrl;

pub type SqliteAsyncConnection = SyncConnectionWrapper<SqliteConnection>;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// busy_timeout comes first: even switching to WAL takes a lock, and
/// connections opened together must wait for it rather than fail.
const SQLITE_SETUP: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// How much of the database each SQLite connection of a pool keeps in its
/// own page cache. PostgreSQL's connections ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCache {
    /// SQLite's default, 2 MiB: for the writer, whose batches dirty pages
    /// that stay cached until they commit (256 KiB cost it an eighth of its
    /// inserts per second), and for a pool that does everything.
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

/// How long a caller waits for a free connection before the request is
/// answered 503 instead of queueing forever.
pub(super) const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub enum DbPool {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteAsyncConnection>),
}

/// A connection checked out of a [`DbPool`] or shared by a
/// [`Pipeline`](super::pipeline::Pipeline); it goes back when dropped. It
/// lives for one query, in the query's future: boxing the larger PostgreSQL
/// variant would cost an allocation per query to save nothing.
#[allow(clippy::large_enum_variant)]
pub enum PooledConn {
    Postgres(Object<AsyncPgConnection>),
    /// One of a worker's PostgreSQL connections, which other queries in
    /// flight share.
    Pipelined(PgShare),
    Sqlite(Object<SqliteAsyncConnection>),
}

/// A borrowed connection of either backend: what the users queries run on.
/// A PostgreSQL query needs only a shared reference: diesel-async sends the
/// queries of several futures on one connection without waiting for each
/// answer (pipelining), and [`Pipeline`](super::pipeline::Pipeline) relies
/// on that.
pub enum DbConn<'a> {
    Postgres(&'a AsyncPgConnection),
    Sqlite(&'a mut SqliteAsyncConnection),
}

impl PooledConn {
    /// Lets go of the connection after a query on it failed in a way that
    /// spoils it ([`DbError::spoils_connection`]): it is not handed out
    /// again, as deadpool would if its end had not been noticed yet. One of
    /// the pipeline's takes no new query and is closed once the queries on
    /// it are answered ([`PgShare::retire`]); a pooled one is closed now.
    pub fn retire(self) {
        match self {
            Self::Postgres(object) => drop(Object::take(object)),
            Self::Pipelined(share) => share.retire(),
            Self::Sqlite(object) => drop(Object::take(object)),
        }
    }

    pub fn conn(&mut self) -> DbConn<'_> {
        match self {
            Self::Postgres(object) => DbConn::Postgres(object),
            Self::Pipelined(share) => DbConn::Postgres(share.conn()),
            Self::Sqlite(object) => DbConn::Sqlite(object),
        }
    }
}

/// Runs `$body` with `$conn` bound to the connection of either backend:
/// `&mut &AsyncPgConnection` or `&mut SqliteAsyncConnection`, which diesel's
/// `RunQueryDsl` methods both take.
macro_rules! on_conn {
    ($db_conn:expr, $conn:ident => $body:expr) => {
        match $db_conn {
            $crate::db::pool::DbConn::Postgres(mut shared) => {
                let $conn = &mut shared;
                $body
            }
            $crate::db::pool::DbConn::Sqlite($conn) => $body,
        }
    };
}
pub(crate) use on_conn;

/// Where the users queries get a connection: a [`DbPool`], or a database
/// actor's [`Connections`](super::Connections).
pub trait Checkout {
    fn get(
        &self,
        cost: QueryCost,
    ) -> impl std::future::Future<Output = Result<PooledConn, DbError>>;

    /// A connection for a query sent once more because its connection let
    /// it down: a newly opened one where that is possible, since the others
    /// may have broken at the same time (a database restart ends them all).
    fn get_new(
        &self,
        cost: QueryCost,
    ) -> impl std::future::Future<Output = Result<PooledConn, DbError>> {
        self.get(cost)
    }
}

/// What a query costs the database server, for sharing a connection among
/// queries in flight ([`Pipeline`](super::pipeline::Pipeline)); a pool's
/// connection serves one query whatever it costs.
#[derive(Debug, Clone, Copy)]
pub enum QueryCost {
    /// One row, found by its key.
    Row,
    /// A page of rows.
    Page,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub idle: usize,
    pub waiting: usize,
}

impl DbPool {
    /// Builds a pool; no connection is opened until one is needed.
    pub fn build(url: &DatabaseUrl, size: usize, cache: PageCache) -> Result<Self, String> {
        match url {
            DatabaseUrl::Postgres(url) => {
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.recycling_method = RecyclingMethod::Fast;
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
                Pool::builder(manager)
                    .max_size(size)
                    .wait_timeout(Some(CHECKOUT_TIMEOUT))
                    .create_timeout(Some(CHECKOUT_TIMEOUT))
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map(Self::Postgres)
                    .map_err(|e| e.to_string())
            }
            DatabaseUrl::Sqlite(path) => {
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
                Pool::builder(manager)
                    .max_size(size)
                    .wait_timeout(Some(CHECKOUT_TIMEOUT))
                    .create_timeout(Some(CHECKOUT_TIMEOUT))
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map(Self::Sqlite)
                    .map_err(|e| e.to_string())
            }
        }
    }

    pub fn status(&self) -> PoolStatus {
        let status = match self {
            Self::Postgres(pool) => pool.status(),
            Self::Sqlite(pool) => pool.status(),
        };
        PoolStatus {
            max_size: status.max_size,
            size: status.size,
            idle: status.available,
            waiting: status.waiting,
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
    /// Checks a connection out, waiting at most `CHECKOUT_TIMEOUT` (5 s).
    async fn get(&self, _: QueryCost) -> Result<PooledConn, DbError> {
        Ok(match self {
            Self::Postgres(pool) => PooledConn::Postgres(pool.get().await?),
            Self::Sqlite(pool) => PooledConn::Sqlite(pool.get().await?),
        })
    }
}

/// Creates (SQLite: with its folder) and migrates the database. Runs on a
/// thread of its own: diesel's migration harness is synchronous, and
/// diesel-async's wrapper must not block the async runtime's thread.
pub async fn migrate(url: &DatabaseUrl) -> Result<(), String> {
    let url = url.clone();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("migrations".into())
        .spawn(move || {
            let _ = done.send(run_migrations(&url));
        })
        .map_err(|e| e.to_string())?;
    result
        .await
        .unwrap_or_else(|_| Err("the migration thread panicked".into()))
}

fn run_migrations(url: &DatabaseUrl) -> Result<(), String> {
    let applied = match url {
        DatabaseUrl::Postgres(url) => {
            let mut conn =
                <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(url)
                    .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
            conn.run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|versions| versions.len())
        }
        DatabaseUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                .map_err(|e| format!("cannot open SQLite file {}: {e}", path.display()))?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|versions| versions.len())
        }
    }
    .map_err(|e| format!("migrations failed: {e}"))?;
    tracing::info!(applied, backend = url.backend_name(), "database migrated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use diesel::dsl::sql;
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    use super::*;

    /// The cache size a connection of a fresh pool over `path` reports.
    async fn cache_size(path: std::path::PathBuf, cache: PageCache) -> i64 {
        let url = DatabaseUrl::Sqlite(path);
        migrate(&url).await.unwrap();
        let DbPool::Sqlite(pool) = DbPool::build(&url, 1, cache).unwrap() else {
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
}
