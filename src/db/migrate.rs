//! Creating and migrating the database at start-up. The migrations are
//! embedded in the binary, one set per backend.
//!
//! diesel's migration harness is synchronous, and diesel-async's wrapper
//! must not block the async runtime's thread (its harness panics under
//! actix's single-threaded runtime), so migrations run on a thread of their
//! own before anything else touches the database.

use diesel::{Connection, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::db::DatabaseUrl;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Creates (SQLite: with its folder) and migrates the database.
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
