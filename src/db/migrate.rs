//! The schema: migrations embedded in the binary, one set per backend,
//! applied at start-up or by `switchboard migrate`, and read without
//! touching the database when the server must not migrate.
//!
//! Several instances started at once on an empty or older database must
//! migrate it once. On PostgreSQL the migrating session holds an advisory
//! lock ([`LOCK_KEY`]) until it is done: the others wait for it, then find
//! nothing pending. On SQLite the whole run is one `BEGIN IMMEDIATE`
//! transaction (each migration a savepoint in it): the file's write lock
//! serialises the runs, the busy timeout making the others wait for it.
//!
//! diesel's migration harness is synchronous, and diesel-async's wrapper
//! panics under actix's single-threaded runtime, so migrations run on a
//! thread of their own.

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::backend::Backend;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::DatabaseUrl;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The PostgreSQL advisory lock a migration run holds ("SWMIGRAT").
pub const LOCK_KEY: i64 = 0x5357_4d49_4752_4154;

/// How long a SQLite run waits for another process's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(60);

type PgSync = AsyncConnectionWrapper<AsyncPgConnection>;

/// Where the database's schema stands against this build's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaStatus {
    /// This build's migrations the database has not applied, in order.
    pub pending: Vec<String>,
    /// Migrations the database has applied that this build does not know
    /// (a newer build ran first).
    pub unknown: Vec<String>,
}

/// Creates (SQLite: with its folder) and migrates the database; answers the
/// versions it applied, in order.
pub async fn migrate(url: &DatabaseUrl) -> Result<Vec<String>, String> {
    on_own_thread(url, run_migrations).await
}

/// Where the schema stands, without creating or changing anything.
pub async fn schema_status(url: &DatabaseUrl) -> Result<SchemaStatus, String> {
    on_own_thread(url, read_status).await
}

async fn on_own_thread<T: Send + 'static>(
    url: &DatabaseUrl,
    work: fn(&DatabaseUrl) -> Result<T, String>,
) -> Result<T, String> {
    let url = url.clone();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("migrations".into())
        .spawn(move || {
            let _ = done.send(work(&url));
        })
        .map_err(|e| e.to_string())?;
    result
        .await
        .unwrap_or_else(|_| Err("the migration thread panicked".into()))
}

fn run_migrations(url: &DatabaseUrl) -> Result<Vec<String>, String> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| format!("migrations failed: {e}");
    let applied = match url {
        DatabaseUrl::Postgres(url) => {
            let mut conn = connect_postgres(url)?;
            conn.batch_execute(&format!("SELECT pg_advisory_lock({LOCK_KEY})"))
                .map_err(|e| format!("cannot take the migration lock: {e}"))?;
            let applied: Result<Vec<String>, String> = conn
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(failed);
            // Ending the session releases it too; an error here changes nothing.
            let _ = conn.batch_execute(&format!("SELECT pg_advisory_unlock({LOCK_KEY})"));
            applied?
        }
        DatabaseUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut conn = connect_sqlite(path)?;
            conn.immediate_transaction(|conn| {
                let applied = conn.run_pending_migrations(SQLITE_MIGRATIONS);
                let applied = applied
                    .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>());
                Ok::<_, diesel::result::Error>(applied)
            })
            .map_err(|e| format!("migrations failed: {e}"))?
            .map_err(failed)?
        }
    };
    let applied: Vec<String> = applied;
    tracing::info!(applied = ?applied, backend = url.backend_name(), "database migrated");
    Ok(applied)
}

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

fn read_status(url: &DatabaseUrl) -> Result<SchemaStatus, String> {
    let read = |e: diesel::result::Error| format!("cannot read the applied migrations: {e}");
    let (known, applied) = match url {
        DatabaseUrl::Postgres(url) => {
            let mut conn = connect_postgres(url)?;
            let table: Vec<AppliedVersion> =
                diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
                    .load(&mut conn)
                    .or_else(|e| missing_table_is_empty(e, read))?;
            (versions::<Pg>(&POSTGRES_MIGRATIONS), table)
        }
        DatabaseUrl::Sqlite(path) if !path.exists() => {
            (versions::<Sqlite>(&SQLITE_MIGRATIONS), Vec::new())
        }
        DatabaseUrl::Sqlite(path) => {
            let mut conn = connect_sqlite(path)?;
            let table: Vec<AppliedVersion> =
                diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
                    .load(&mut conn)
                    .or_else(|e| missing_table_is_empty(e, read))?;
            (versions::<Sqlite>(&SQLITE_MIGRATIONS), table)
        }
    };
    let applied: BTreeSet<String> = applied.into_iter().map(|row| row.version).collect();
    Ok(SchemaStatus {
        pending: known
            .iter()
            .filter(|v| !applied.contains(*v))
            .cloned()
            .collect(),
        unknown: applied.into_iter().filter(|v| !known.contains(v)).collect(),
    })
}

/// A database that never ran a migration has no table of them: nothing is
/// applied.
fn missing_table_is_empty(
    err: diesel::result::Error,
    read: impl Fn(diesel::result::Error) -> String,
) -> Result<Vec<AppliedVersion>, String> {
    let missing = err.to_string().contains("__diesel_schema_migrations");
    if missing {
        Ok(Vec::new())
    } else {
        Err(read(err))
    }
}

/// This build's migration versions, in order.
fn versions<DB: Backend>(migrations: &EmbeddedMigrations) -> Vec<String> {
    let all =
        MigrationSource::<DB>::migrations(migrations).expect("embedded migrations are readable");
    all.iter().map(|m| m.name().version().to_string()).collect()
}

fn connect_postgres(url: &str) -> Result<PgSync, String> {
    <PgSync as Connection>::establish(url).map_err(|e| format!("cannot connect to PostgreSQL: {e}"))
}

fn connect_sqlite(path: &std::path::Path) -> Result<SqliteConnection, String> {
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())
        .map_err(|e| format!("cannot open SQLite file {}: {e}", path.display()))?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}",
        SQLITE_BUSY_TIMEOUT.as_millis()
    ))
    .map_err(|e| format!("cannot set up SQLite file {}: {e}", path.display()))?;
    Ok(conn)
}
