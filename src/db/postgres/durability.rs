//! Whether PostgreSQL has a commit on disk before it says so. switchboard
//! answers a write once its commit returns; with `synchronous_commit = off`
//! the commit returns before its WAL is flushed, and a crash of the
//! database server (not of switchboard) loses the last writes it
//! acknowledged. An operator may choose that for speed, so switchboard
//! serves, but says so at start-up, for the role and database it runs as.

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    synchronous_commit: String,
}

/// Warns when this role's sessions on this database commit without
/// waiting for the flush. Failing to ask is not an error: start-up has
/// already reached the database, and readiness reports it from here on.
pub async fn warn_if_commits_are_not_flushed(url: &str) {
    let setting = async {
        let mut conn = AsyncPgConnection::establish(url).await.ok()?;
        let setting: Setting = diesel::sql_query("SHOW synchronous_commit")
            .get_result(&mut conn)
            .await
            .ok()?;
        Some(setting.synchronous_commit)
    };
    if let Some(setting) = setting.await.filter(|s| s == "off") {
        tracing::warn!(
            synchronous_commit = %setting,
            "PostgreSQL commits without flushing: a write switchboard acknowledged is lost if the database server crashes; set synchronous_commit = on for its role or database"
        );
    }
}
