//! Rows as diesel reads and writes them, and their conversion to the domain's
//! [`User`]. Times are stored as UTC without a zone on both backends.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;

use super::schema::users;
use crate::domain::{NewUser, User, UserPatch};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            email: row.email,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
        }
    }
}

/// A new user's row. Inserted as a tuple of `column = value`
/// ([`users::create_on`](super::users::create_on)), not through
/// `#[derive(Insertable)]`: the derive offers every value as one that could
/// be `DEFAULT`, and diesel never keeps such an `INSERT` as a prepared
/// statement, so PostgreSQL would parse and plan every create anew.
#[derive(Debug)]
pub struct NewUserRow<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub email_key: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl<'a> NewUserRow<'a> {
    pub fn new(user: &'a NewUser) -> Self {
        let now = now();
        Self {
            name: user.name.as_str(),
            email: user.email.as_str(),
            email_key: user.email.key(),
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Debug, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub email_key: Option<String>,
    pub updated_at: NaiveDateTime,
}

impl<'a> UserChanges<'a> {
    pub fn new(patch: &'a UserPatch) -> Self {
        Self {
            name: patch.name.as_ref().map(|n| n.as_str()),
            email: patch.email.as_ref().map(|e| e.as_str()),
            email_key: patch.email.as_ref().map(|e| e.key()),
            updated_at: now(),
        }
    }
}

/// Now, at the microsecond precision both backends store, so what a write
/// answers equals what a later read returns.
fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}
