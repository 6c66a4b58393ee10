//! The users queries, written once in diesel's DSL and run on either backend
//! through `on_conn!`. Each is one statement, so each is atomic on its own.
//!
//! The writes come twice: on a connection ([`create_on`], [`update_on`],
//! [`delete_on`]), which SQLite's writer uses to run a batch of them in one
//! transaction (see [`crate::actors::group_commit`]), and on a [`Checkout`]
//! (a database actor's connections, or the baseline's plain pool), which
//! gives a connection for that one statement.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::{NewUserRow, UserChanges, UserRow};
use super::pool::{on_conn, Checkout, QueryCost};
use super::schema::users;
use super::{DbConn, DbError};
use crate::domain::{NewUser, User, UserId, UserPatch};

pub async fn create(conns: &impl Checkout, user: &NewUser) -> Result<User, DbError> {
    create_on(conns.get(QueryCost::Row).await?.conn(), user).await
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
    get_on(conns.get(QueryCost::Row).await?.conn(), id).await
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
    let rows: Vec<UserRow> = on_conn!(conns.get(QueryCost::Page).await?.conn(), conn => {
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
    update_on(conns.get(QueryCost::Row).await?.conn(), id, patch).await
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
    delete_on(conns.get(QueryCost::Row).await?.conn(), id).await
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

/// A round trip to the database, for readiness.
pub async fn ping(conns: &impl Checkout) -> Result<(), DbError> {
    on_conn!(conns.get(QueryCost::Row).await?.conn(), conn => diesel::sql_query("SELECT 1").execute(conn).await)?;
    Ok(())
}
