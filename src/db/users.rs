//! The users queries, written once in diesel's DSL and run on either backend
//! through `on_conn!` (but a patch and batches of creates, patches and
//! deletes on PostgreSQL, which are written by hand so that the server
//! keeps them prepared: see [`super::pg_writes`]), and the two readiness
//! probes. Each is one statement, so each is atomic on its own.
//!
//! The writes come twice: on a connection ([`create_on`], [`update_on`],
//! [`delete_on`]), which SQLite's writer uses to run a batch of them in one
//! transaction (see [`super::group_commit`]), and on a [`Checkout`]
//! (a database actor's connections, or the baseline's plain pool), which
//! lends a connection for that one statement.
//!
//! A query on a [`Checkout`] whose connection lets it down (the server
//! ended the session, say on a restart) retires that connection
//! ([`Lease::retire`]). A read is then sent once more, on another
//! connection: reading twice changes nothing, so the client need not see
//! the loss. A write is not, as it may have been applied before the
//! connection broke; its client gets 503 and decides.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::conn::{on_conn, Checkout, DbConn, Lease, QueryCost};
use super::models::{NewUserRow, UserChanges, UserRow};
use super::pg_writes::{DeleteUsers, InsertUsers, PatchUser, PatchUsers};
use super::schema::users;
use super::DbError;
use crate::domain::{Expected, NewUser, User, UserEmail, UserId, UserPatch};

/// Runs `query` on the connection `checkout` gives, and retires the
/// connection if the query failed in a way that spoils it.
async fn run<T, L: Lease>(
    checkout: impl Future<Output = Result<L, DbError>>,
    query: impl AsyncFnOnce(DbConn<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut conn = checkout.await?;
    let result = query(conn.conn()).await;
    if result.as_ref().is_err_and(DbError::spoils_connection) {
        conn.retire();
    }
    result
}

/// [`run`], and once more, on a new connection where the pool allows it,
/// if the connection let the read down.
async fn read<T>(
    conns: &impl Checkout,
    cost: QueryCost,
    query: impl AsyncFn(DbConn<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    match run(conns.get(cost), &query).await {
        Err(err) if err.spoils_connection() => {
            tracing::warn!(%err, "a read failed; sending it once more on another connection");
            run(conns.get_new(cost), &query).await
        }
        answered => answered,
    }
}

pub async fn create(conns: &impl Checkout, user: &NewUser) -> Result<User, DbError> {
    run(conns.get(QueryCost::Row), async |conn| {
        create_on(conn, user).await
    })
    .await
}

pub async fn create_on(conn: DbConn<'_>, user: &NewUser) -> Result<User, DbError> {
    let row = NewUserRow::new(user);
    let created: UserRow = on_conn!(conn, conn => {
        diesel::insert_into(users::table)
            .values((
                users::name.eq(row.name),
                users::email.eq(row.email),
                users::email_key.eq(&row.email_key),
                users::created_at.eq(row.created_at),
                users::updated_at.eq(row.updated_at),
            ))
            .returning(UserRow::as_returning())
            .get_result(conn)
            .await
    })?;
    Ok(created.into())
}

/// Creates several users in one statement on PostgreSQL ([`InsertUsers`]):
/// for each of `new`, in order, its user, or [`DbError::EmailTaken`] if its
/// email was taken already or by an earlier one of `new`. The statement
/// commits on its own; if it fails, it fails as a whole.
pub async fn create_many(
    conns: &impl Checkout,
    new: &[&NewUser],
) -> Result<Vec<Result<User, DbError>>, DbError> {
    let rows: Vec<NewUserRow> = new.iter().map(|user| NewUserRow::new(user)).collect();
    let insert = InsertUsers::new(&rows);
    let created: Vec<(i64, String, String, NaiveDateTime, NaiveDateTime, String)> =
        run(conns.get(QueryCost::Page), async |conn| match conn {
            DbConn::Postgres(mut shared) => Ok(insert.load(&mut shared).await?),
            DbConn::Sqlite(_) => Err(on_postgres_only()),
        })
        .await?;
    let mut by_key: HashMap<String, User> = created
        .into_iter()
        .map(|(id, name, email, created_at, updated_at, key)| {
            let row = UserRow {
                id,
                name,
                email,
                created_at,
                updated_at,
            };
            (key, row.into())
        })
        .collect();
    Ok(rows
        .iter()
        .map(|row| by_key.remove(&row.email_key).ok_or(DbError::EmailTaken))
        .collect())
}

/// Applies several unconditional, non-empty patches, to distinct users, in
/// one statement on PostgreSQL ([`PatchUsers`]): for each, in order, the
/// patched user, or [`DbError::NotFound`]. The statement commits on its
/// own; if it fails (an email taken), it fails as a whole.
pub async fn update_many(
    conns: &impl Checkout,
    patches: &[(UserId, &UserPatch)],
) -> Result<Vec<Result<User, DbError>>, DbError> {
    let changes: Vec<UserChanges> = patches.iter().map(|(_, p)| UserChanges::new(p)).collect();
    let ids = patches.iter().map(|(id, _)| id.get()).collect();
    let at = changes
        .iter()
        .map(|c| c.updated_at)
        .max()
        .unwrap_or_default();
    let update = PatchUsers::new(ids, &changes, at);
    let updated: Vec<UserRow> = run(conns.get(QueryCost::Page), async |conn| match conn {
        DbConn::Postgres(mut shared) => Ok(update.load(&mut shared).await?),
        DbConn::Sqlite(_) => Err(on_postgres_only()),
    })
    .await?;
    let mut by_id: HashMap<i64, User> = updated.into_iter().map(|r| (r.id, r.into())).collect();
    Ok(patches
        .iter()
        .map(|(id, _)| by_id.remove(&id.get()).ok_or(DbError::NotFound))
        .collect())
}

/// Deletes the users with these ids (each at most once), on PostgreSQL in
/// one statement: for each, in order, nothing, or `NotFound` if there was
/// no such user.
pub async fn delete_many(
    conns: &impl Checkout,
    ids: &[UserId],
) -> Result<Vec<Result<(), DbError>>, DbError> {
    let delete = DeleteUsers {
        ids: ids.iter().map(|id| id.get()).collect(),
    };
    let deleted: Vec<i64> = run(conns.get(QueryCost::Page), async |conn| match conn {
        DbConn::Postgres(mut shared) => Ok(delete.load(&mut shared).await?),
        DbConn::Sqlite(_) => Err(on_postgres_only()),
    })
    .await?;
    let mut deleted: HashSet<i64> = deleted.into_iter().collect();
    Ok(ids
        .iter()
        .map(|id| {
            deleted
                .remove(&id.get())
                .then_some(())
                .ok_or(DbError::NotFound)
        })
        .collect())
}

/// What a batch of writes answers on SQLite, whose writer batches its own.
fn on_postgres_only() -> DbError {
    DbError::Internal("writes are batched this way on PostgreSQL only".into())
}

pub async fn get(conns: &impl Checkout, id: UserId) -> Result<User, DbError> {
    read(conns, QueryCost::Row, async |conn| get_on(conn, id).await).await
}

async fn get_on(conn: DbConn<'_>, id: UserId) -> Result<User, DbError> {
    let row: UserRow = on_conn!(conn, conn => {
        users::table
            .find(id.get())
            .select(UserRow::as_select())
            .first(conn)
            .await
    })?;
    Ok(row.into())
}

/// Up to `limit` users with ids above `after`, in id order; only the one
/// with this email address, if one is given.
pub async fn list(
    conns: &impl Checkout,
    after: i64,
    limit: i64,
    email: Option<&UserEmail>,
) -> Result<Vec<User>, DbError> {
    read(conns, QueryCost::Page, async |conn| {
        list_on(conn, after, limit, email).await
    })
    .await
}

async fn list_on(
    conn: DbConn<'_>,
    after: i64,
    limit: i64,
    email: Option<&UserEmail>,
) -> Result<Vec<User>, DbError> {
    let key = email.map(UserEmail::key);
    let rows: Vec<UserRow> = on_conn!(conn, conn => {
        let page = users::table
            .filter(users::id.gt(after))
            .order(users::id.asc())
            .limit(limit)
            .select(UserRow::as_select());
        match &key {
            None => page.load(conn).await,
            Some(key) => page.filter(users::email_key.eq(key)).load(conn).await,
        }
    })?;
    Ok(rows.into_iter().map(User::from).collect())
}

pub async fn update(
    conns: &impl Checkout,
    id: UserId,
    patch: &UserPatch,
    expected: &Expected,
) -> Result<User, DbError> {
    run(conns.get(QueryCost::Row), async |conn| {
        update_on(conn, id, patch, expected).await
    })
    .await
}

/// Applies a patch, if the user is at one of the `expected` versions; an
/// empty patch changes nothing (not even `updated_at`).
pub async fn update_on(
    mut conn: DbConn<'_>,
    id: UserId,
    patch: &UserPatch,
    expected: &Expected,
) -> Result<User, DbError> {
    if patch.is_empty() {
        let user = get_on(conn, id).await?;
        return unchanged_since(user, expected);
    }
    let changes = UserChanges::new(patch);
    let versions = expected_versions(expected);
    let updated: Option<UserRow> = match conn.reborrow() {
        // One SQL text, kept prepared (see `pg_writes`).
        DbConn::Postgres(mut shared) => PatchUser {
            id: id.get(),
            changes: &changes,
            versions: versions.as_deref(),
        }
        .get_result(&mut shared)
        .await
        .optional(),
        DbConn::Sqlite(conn) => {
            let target = users::table.find(id.get());
            match &versions {
                None => diesel::update(target)
                    .set(&changes)
                    .returning(UserRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional(),
                Some(versions) => diesel::update(target.filter(users::updated_at.eq_any(versions)))
                    .set(&changes)
                    .returning(UserRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional(),
            }
        }
    }?;
    match updated {
        Some(row) => Ok(row.into()),
        None => Err(why_untouched(conn, id, &versions).await),
    }
}

pub async fn delete(conns: &impl Checkout, id: UserId, expected: &Expected) -> Result<(), DbError> {
    run(conns.get(QueryCost::Row), async |conn| {
        delete_on(conn, id, expected).await
    })
    .await
}

/// Deletes the user, if it is at one of the `expected` versions.
pub async fn delete_on(
    mut conn: DbConn<'_>,
    id: UserId,
    expected: &Expected,
) -> Result<(), DbError> {
    let versions = expected_versions(expected);
    let deleted = on_conn!(conn.reborrow(), conn => {
        let target = users::table.find(id.get());
        match &versions {
            None => diesel::delete(target).execute(conn).await,
            Some(versions) => {
                diesel::delete(target.filter(users::updated_at.eq_any(versions)))
                    .execute(conn)
                    .await
            }
        }
    })?;
    match deleted {
        0 => Err(why_untouched(conn, id, &versions).await),
        _ => Ok(()),
    }
}

/// The stored form of the versions a conditional write expects; `None`
/// for an unconditional one.
fn expected_versions(expected: &Expected) -> Option<Vec<chrono::NaiveDateTime>> {
    match expected {
        Expected::Any => None,
        Expected::OneOf(versions) => Some(versions.iter().map(|v| v.0.naive_utc()).collect()),
    }
}

/// Why a write touched no row: no such user, or (if it was conditional)
/// one that changed since.
async fn why_untouched(
    conn: DbConn<'_>,
    id: UserId,
    versions: &Option<Vec<chrono::NaiveDateTime>>,
) -> DbError {
    match (get_on(conn, id).await, versions) {
        (Ok(_), Some(_)) => DbError::Changed,
        (Ok(_), None) | (Err(DbError::NotFound), _) => DbError::NotFound,
        (Err(err), _) => err,
    }
}

fn unchanged_since(user: User, expected: &Expected) -> Result<User, DbError> {
    match expected {
        Expected::OneOf(versions) if !versions.contains(&user.version()) => Err(DbError::Changed),
        _ => Ok(user),
    }
}

/// Rewrites the write probe's one row: whether the database takes writes
/// now, for readiness.
pub async fn probe_write(conns: &impl Checkout) -> Result<(), DbError> {
    run(conns.get(QueryCost::Row), async |conn| {
        let probe = "INSERT INTO write_probe (id, written_at) VALUES (1, CURRENT_TIMESTAMP) \
                     ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at";
        on_conn!(conn, conn => diesel::sql_query(probe).execute(conn).await)?;
        Ok(())
    })
    .await
}

/// A round trip to the database, for readiness.
pub async fn ping(conns: &impl Checkout) -> Result<(), DbError> {
    run(conns.get(QueryCost::Row), async |conn| {
        on_conn!(conn, conn => diesel::sql_query("SELECT 1").execute(conn).await)?;
        Ok(())
    })
    .await
}
