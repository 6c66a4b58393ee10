//! The users queries, written once in diesel's DSL and run on either backend
//! through `with_conn!`. Each is one statement, so each is atomic on its own.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::{NewUserRow, UserChanges, UserRow};
use super::pool::with_conn;
use super::schema::users;
use super::{DbError, DbPool};
use crate::domain::{NewUser, User, UserId, UserPatch};

pub async fn create(pool: &DbPool, user: &NewUser) -> Result<User, DbError> {
    let row = NewUserRow::new(user);
    let created: UserRow = with_conn!(pool, conn => {
        diesel::insert_into(users::table)
            .values(&row)
            .returning(UserRow::as_returning())
            .get_result(conn)
            .await
    })?;
    Ok(created.into())
}

pub async fn get(pool: &DbPool, id: UserId) -> Result<User, DbError> {
    let row: UserRow = with_conn!(pool, conn => {
        users::table
            .find(id.get())
            .select(UserRow::as_select())
            .first(conn)
            .await
    })?;
    Ok(row.into())
}

/// Up to `limit` users with ids above `after`, in id order.
pub async fn list(pool: &DbPool, after: i64, limit: i64) -> Result<Vec<User>, DbError> {
    let rows: Vec<UserRow> = with_conn!(pool, conn => {
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

/// Applies a patch; an empty patch changes nothing (not even `updated_at`).
pub async fn update(pool: &DbPool, id: UserId, patch: &UserPatch) -> Result<User, DbError> {
    if patch.is_empty() {
        return get(pool, id).await;
    }
    let changes = UserChanges::new(patch);
    let row: UserRow = with_conn!(pool, conn => {
        diesel::update(users::table.find(id.get()))
            .set(&changes)
            .returning(UserRow::as_returning())
            .get_result(conn)
            .await
    })?;
    Ok(row.into())
}

pub async fn delete(pool: &DbPool, id: UserId) -> Result<(), DbError> {
    let deleted = with_conn!(pool, conn => {
        diesel::delete(users::table.find(id.get())).execute(conn).await
    })?;
    match deleted {
        0 => Err(DbError::NotFound),
        _ => Ok(()),
    }
}

/// A round trip to the database, for readiness.
pub async fn ping(pool: &DbPool) -> Result<(), DbError> {
    with_conn!(pool, conn => diesel::sql_query("SELECT 1").execute(conn).await)?;
    Ok(())
}
