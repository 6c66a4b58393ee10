//! The users queries on either backend, written once in diesel's DSL and
//! run through `on_conn!` (a patch on PostgreSQL is hand-written, so that
//! the server keeps it prepared: [`super::postgres::statements`]), and the
//! two readiness probes. Each is one statement, atomic on its own.
//!
//! The writes come twice: on a connection ([`create_on`], [`update_on`],
//! [`delete_on`]), inside whatever transaction is open there (SQLite's
//! batches, [`super::sqlite`]), and on a [`Checkout`], which lends a
//! connection for that one statement.
//!
//! A query whose connection lets it down (the server ended the session,
//! say on a restart) retires that connection ([`run`]). A read is then sent
//! once more, on another connection: reading twice changes nothing, so the
//! client need not see the loss. A write is not, as it may have been
//! applied before the connection broke; its caller gets the error.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::conn::{on_conn, run, Checkout, DbConn, Lease, QueryCost};
use super::models::{NewUserRow, UserChanges, UserRow};
use super::postgres::statements::PatchUser;
use super::schema::users;
use super::DbError;
use crate::domain::{Expected, NewUser, User, UserEmail, UserId, UserPatch};

/// [`run`], and once more, on a new connection where the pool allows it,
/// if the connection let the read down.
async fn read<T>(
    conns: &impl Checkout,
    cost: QueryCost,
    query: impl AsyncFn(DbConn<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    match run(conns.get(cost), async |lease| query(lease.conn()).await).await {
        Err(err) if err.spoils_connection() => {
            tracing::warn!(%err, "a read failed; sending it once more on another connection");
            run(conns.get_new(cost), async |lease| query(lease.conn()).await).await
        }
        answered => answered,
    }
}

pub async fn create(conns: &impl Checkout, user: &NewUser) -> Result<User, DbError> {
    run(conns.get(QueryCost::Row), async |lease| {
        create_on(lease.conn(), user).await
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

/// What a batch of point reads ([`super::postgres::Lookups`]) looks
/// users up by.
pub enum UserKeys<'a> {
    Ids(&'a [i64]),
    /// Email keys ([`UserEmail::key`]).
    Emails(&'a [String]),
}

/// The users with these keys, in no order.
pub async fn get_many(conns: &impl Checkout, keys: UserKeys<'_>) -> Result<Vec<User>, DbError> {
    read(conns, QueryCost::Page, async |conn| {
        let rows: Vec<UserRow> = on_conn!(conn, conn => {
            let all = users::table.select(UserRow::as_select());
            match keys {
                UserKeys::Ids(ids) => all.filter(users::id.eq_any(ids)).load(conn).await,
                UserKeys::Emails(keys) => all.filter(users::email_key.eq_any(keys)).load(conn).await,
            }
        })?;
        Ok(rows.into_iter().map(User::from).collect())
    })
    .await
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
    run(conns.get(QueryCost::Row), async |lease| {
        update_on(lease.conn(), id, patch, expected).await
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
        // One SQL text, kept prepared (see `postgres::statements`).
        DbConn::Postgres(mut shared) => PatchUser {
            id: id.get(),
            changes: &changes,
            versions: versions.as_deref(),
            columns: UserRow::as_select(),
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

pub async fn delete(
    conns: &impl Checkout,
    id: UserId,
    expected: &Expected,
) -> Result<User, DbError> {
    run(conns.get(QueryCost::Row), async |lease| {
        delete_on(lease.conn(), id, expected).await
    })
    .await
}

/// Deletes the user, if it is at one of the `expected` versions; answers
/// the user as it was.
pub async fn delete_on(
    mut conn: DbConn<'_>,
    id: UserId,
    expected: &Expected,
) -> Result<User, DbError> {
    let versions = expected_versions(expected);
    let deleted: Option<UserRow> = on_conn!(conn.reborrow(), conn => {
        let target = users::table.find(id.get());
        match &versions {
            None => diesel::delete(target)
                .returning(UserRow::as_returning())
                .get_result(conn)
                .await
                .optional(),
            Some(versions) => diesel::delete(target.filter(users::updated_at.eq_any(versions)))
                .returning(UserRow::as_returning())
                .get_result(conn)
                .await
                .optional(),
        }
    })?;
    match deleted {
        Some(row) => Ok(row.into()),
        None => Err(why_untouched(conn, id, &versions).await),
    }
}

/// The stored form of the versions a conditional write expects; `None`
/// for an unconditional one.
fn expected_versions(expected: &Expected) -> Option<Vec<NaiveDateTime>> {
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
    versions: &Option<Vec<NaiveDateTime>>,
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
    run(conns.get(QueryCost::Row), async |lease| {
        let conn = lease.conn();
        let probe = "INSERT INTO write_probe (id, written_at) VALUES (1, CURRENT_TIMESTAMP) \
                     ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at";
        on_conn!(conn, conn => diesel::sql_query(probe).execute(conn).await)?;
        Ok(())
    })
    .await
}

/// A round trip to the database, for readiness.
pub async fn ping(conns: &impl Checkout) -> Result<(), DbError> {
    run(conns.get(QueryCost::Row), async |lease| {
        let conn = lease.conn();
        on_conn!(conn, conn => diesel::sql_query("SELECT 1").execute(conn).await)?;
        Ok(())
    })
    .await
}
