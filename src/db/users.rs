//! The users queries, written once in diesel's DSL and run on either backend
//! through `on_conn!`, and the two readiness probes. Each is one statement,
//! so each is atomic on its own.
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

use std::future::Future;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::conn::{on_conn, Checkout, DbConn, Lease, QueryCost};
use super::models::{NewUserRow, UserChanges, UserRow};
use super::schema::users;
use super::DbError;
use crate::domain::{NewUser, User, UserId, UserPatch};

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
            .values(&row)
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

/// Up to `limit` users with ids above `after`, in id order.
pub async fn list(conns: &impl Checkout, after: i64, limit: i64) -> Result<Vec<User>, DbError> {
    read(conns, QueryCost::Page, async |conn| {
        list_on(conn, after, limit).await
    })
    .await
}

async fn list_on(conn: DbConn<'_>, after: i64, limit: i64) -> Result<Vec<User>, DbError> {
    let rows: Vec<UserRow> = on_conn!(conn, conn => {
        users::table
            .filter(users::id.gt(after))
            .order(users::id.asc())
            .limit(limit)
            .select(UserRow::as_select())
            .load(conn)
            .await
    })?;
    Ok(rows.into_iter().map(User::from).collect())
}

pub async fn update(conns: &impl Checkout, id: UserId, patch: &UserPatch) -> Result<User, DbError> {
    run(conns.get(QueryCost::Row), async |conn| {
        update_on(conn, id, patch).await
    })
    .await
}

/// Applies a patch; an empty patch changes nothing (not even `updated_at`).
pub async fn update_on(conn: DbConn<'_>, id: UserId, patch: &UserPatch) -> Result<User, DbError> {
    if patch.is_empty() {
        return get_on(conn, id).await;
    }
    let changes = UserChanges::new(patch);
    let row: UserRow = on_conn!(conn, conn => {
        diesel::update(users::table.find(id.get()))
            .set(&changes)
            .returning(UserRow::as_returning())
            .get_result(conn)
            .await
    })?;
    Ok(row.into())
}

pub async fn delete(conns: &impl Checkout, id: UserId) -> Result<(), DbError> {
    run(conns.get(QueryCost::Row), async |conn| {
        delete_on(conn, id).await
    })
    .await
}

pub async fn delete_on(conn: DbConn<'_>, id: UserId) -> Result<(), DbError> {
    let deleted = on_conn!(conn, conn => {
        diesel::delete(users::table.find(id.get())).execute(conn).await
    })?;
    match deleted {
        0 => Err(DbError::NotFound),
        _ => Ok(()),
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
