//! The users writes PostgreSQL runs as hand-written SQL rather than
//! diesel's DSL, so that each keeps one SQL text whatever it carries and
//! the server keeps it prepared on each connection (diesel's statement
//! cache keys such a query by its text). What they return is read as
//! [`UserRow`], whose columns they list through diesel, not by hand.
//!
//! [`PatchUser`]: diesel marks every `UPDATE` built with its DSL unsafe to
//! cache (its `SET` list varies with the fields given). Here a field the
//! patch leaves out keeps its value through `COALESCE`, and the text varies
//! only with whether the update is conditional.
//!
//! [`InsertUsers`], [`PatchUsers`], [`DeleteUsers`]: a batch of writes as
//! one statement ([`super::batches`]). A `VALUES` list would be a new text
//! for every batch size; the rows go as one array per column through
//! `unnest`, one text for any size. `ON CONFLICT DO NOTHING` skips a row
//! whose email is taken (before, or by an earlier row of the batch) instead
//! of failing the whole batch; an `UPDATE` has no such clause, so an email
//! conflict fails a batch of patches as a whole. A patch or delete may
//! expect a version (`If-Match`); the statement says which of its users
//! exist, so that one left untouched is told apart from one that is gone.

use chrono::NaiveDateTime;
use diesel::dsl::AsSelect;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamp};
use diesel::SelectableHelper;

use crate::db::models::{NewUserRow, UserChanges, UserRow};

/// The SQL types of a [`UserRow`], in its order.
type UserColumns = (BigInt, Text, Text, Timestamp, Timestamp);

/// `RETURNING` a [`UserRow`]'s columns of `users`.
fn push_returning<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    columns: &'b AsSelect<UserRow, Pg>,
) -> QueryResult<()> {
    out.push_sql(" RETURNING ");
    columns.walk_ast(out.reborrow())
}

/// What [`InsertUsers`] returns for each row it inserted.
#[derive(Debug, Queryable)]
pub struct InsertedRow {
    pub user: UserRow,
    /// Tells which of the batch's creates the row is.
    pub email_key: String,
}

/// Each statement is cached by its SQL text, not by its type (the text is
/// fixed for any batch size; a patch has two, with and without `If-Match`).
macro_rules! cached_by_text {
    ($($statement:ty => $sql_type:ty;)*) => {$(
        impl QueryId for $statement {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }

        impl Query for $statement {
            type SqlType = $sql_type;
        }
    )*};
}

cached_by_text! {
    PatchUser<'_> => UserColumns;
    InsertUsers<'_> => (UserColumns, Text);
    PatchUsers<'_> => (BigInt, Nullable<UserColumns>);
    DeleteUsers => (BigInt, Nullable<UserColumns>);
}

/// `UPDATE users ... WHERE id = $id [AND updated_at = ANY($versions)]
/// RETURNING` the user.
pub struct PatchUser<'a> {
    pub id: i64,
    pub changes: &'a UserChanges<'a>,
    /// The versions a conditional update expects; `None` for any.
    pub versions: Option<&'a [NaiveDateTime]>,
    pub columns: AsSelect<UserRow, Pg>,
}

impl QueryFragment<Pg> for PatchUser<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE users SET name = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.changes.name)?;
        out.push_sql(", name), email = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.changes.email)?;
        out.push_sql(", email), email_key = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.changes.email_key)?;
        out.push_sql(", email_key), updated_at = ");
        out.push_bind_param::<Timestamp, _>(&self.changes.updated_at)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.id)?;
        if let Some(versions) = &self.versions {
            out.push_sql(" AND updated_at = ANY(");
            out.push_bind_param::<Array<Timestamp>, _>(versions)?;
            out.push_sql(")");
        }
        push_returning(&mut out, &self.columns)
    }
}

/// `INSERT INTO users ... ON CONFLICT DO NOTHING RETURNING` the user and
/// its email key, for the rows it inserted.
pub struct InsertUsers<'a> {
    names: Vec<&'a str>,
    emails: Vec<&'a str>,
    email_keys: Vec<&'a str>,
    created_at: Vec<NaiveDateTime>,
    columns: AsSelect<UserRow, Pg>,
}

impl<'a> InsertUsers<'a> {
    pub fn new(rows: &'a [NewUserRow<'a>]) -> Self {
        Self {
            names: rows.iter().map(|row| row.name).collect(),
            emails: rows.iter().map(|row| row.email).collect(),
            email_keys: rows.iter().map(|row| row.email_key.as_str()).collect(),
            created_at: rows.iter().map(|row| row.created_at).collect(),
            columns: UserRow::as_select(),
        }
    }
}

impl QueryFragment<Pg> for InsertUsers<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO users (name, email, email_key, created_at, updated_at) \
             SELECT name, email, email_key, at, at FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.emails)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.email_keys)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamp>, _>(&self.created_at)?;
        out.push_sql(") AS batch (name, email, email_key, at) ON CONFLICT DO NOTHING");
        push_returning(&mut out, &self.columns)?;
        out.push_sql(", users.email_key");
        Ok(())
    }
}

/// What [`PatchUsers`] and [`DeleteUsers`] return for each user of the
/// batch that exists: the user as written, or nothing if the write's
/// condition kept it untouched. A user the batch named that does not exist
/// has no row.
#[derive(Debug, Queryable)]
pub struct Found {
    pub id: i64,
    pub written: Option<UserRow>,
}

/// The start of a statement over the users with these ids: they are
/// locked, in id order, first. Two batches in flight (one per worker)
/// touching the same users would otherwise lock them in the order each met
/// them, and deadlock until PostgreSQL's deadlock_timeout aborted one.
fn push_lock_in_id_order<'b>(out: &mut AstPass<'_, 'b, Pg>, ids: &'b Vec<i64>) -> QueryResult<()> {
    out.push_sql("WITH locked AS (SELECT id FROM users WHERE id = ANY(");
    out.push_bind_param::<Array<BigInt>, _>(ids)?;
    out.push_sql(") ORDER BY id FOR UPDATE), written AS (");
    Ok(())
}

/// The end of such a statement: what the write returned, and for each
/// locked user that it left untouched, nothing.
fn push_found<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    columns: &'b AsSelect<UserRow, Pg>,
) -> QueryResult<()> {
    push_returning(out, columns)?;
    out.push_sql(
        ") SELECT locked.id, written.* FROM locked LEFT JOIN written ON written.id = locked.id",
    );
    Ok(())
}

/// `UPDATE users ... FROM unnest(...)`: each row of the batch patches the
/// user with its id (at most one per user), if the user is at the version
/// the row expects (if any); a field it leaves out keeps its value. Returns
/// [`Found`] for each user of the batch that exists.
pub struct PatchUsers<'a> {
    ids: Vec<i64>,
    names: Vec<Option<&'a str>>,
    emails: Vec<Option<&'a str>>,
    email_keys: Vec<Option<&'a str>>,
    versions: Vec<Option<NaiveDateTime>>,
    updated_at: NaiveDateTime,
    columns: AsSelect<UserRow, Pg>,
}

impl<'a> PatchUsers<'a> {
    /// `patches`: each user's id, its changes and the version it expects.
    pub fn new(
        patches: &'a [(i64, UserChanges<'a>, Option<NaiveDateTime>)],
        updated_at: NaiveDateTime,
    ) -> Self {
        Self {
            ids: patches.iter().map(|(id, _, _)| *id).collect(),
            names: patches.iter().map(|(_, c, _)| c.name).collect(),
            emails: patches.iter().map(|(_, c, _)| c.email).collect(),
            email_keys: patches
                .iter()
                .map(|(_, c, _)| c.email_key.as_deref())
                .collect(),
            versions: patches.iter().map(|(_, _, version)| *version).collect(),
            updated_at,
            columns: UserRow::as_select(),
        }
    }
}

impl QueryFragment<Pg> for PatchUsers<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        push_lock_in_id_order(&mut out, &self.ids)?;
        out.push_sql(
            "UPDATE users SET name = COALESCE(b.name, users.name), \
             email = COALESCE(b.email, users.email), \
             email_key = COALESCE(b.email_key, users.email_key), updated_at = ",
        );
        out.push_bind_param::<Timestamp, _>(&self.updated_at)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.emails)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.email_keys)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamp>>, _>(&self.versions)?;
        out.push_sql(
            ") AS b (id, name, email, email_key, version), locked \
             WHERE users.id = b.id AND users.id = locked.id \
             AND (b.version IS NULL OR users.updated_at = b.version)",
        );
        push_found(&mut out, &self.columns)
    }
}

/// `DELETE FROM users` the users with these ids (at most one each), each
/// if it is at the version its row expects (if any). Like [`PatchUsers`],
/// it locks its users in id order first, so that two batches in flight (or
/// a batch of deletes and one of patches) over the same users cannot
/// deadlock, and returns [`Found`] for each user of the batch that exists.
pub struct DeleteUsers {
    ids: Vec<i64>,
    versions: Vec<Option<NaiveDateTime>>,
    columns: AsSelect<UserRow, Pg>,
}

impl DeleteUsers {
    /// `deletes`: each user's id and the version it expects.
    pub fn new(deletes: &[(i64, Option<NaiveDateTime>)]) -> Self {
        Self {
            ids: deletes.iter().map(|(id, _)| *id).collect(),
            versions: deletes.iter().map(|(_, version)| *version).collect(),
            columns: UserRow::as_select(),
        }
    }
}

impl QueryFragment<Pg> for DeleteUsers {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        push_lock_in_id_order(&mut out, &self.ids)?;
        out.push_sql("DELETE FROM users USING locked, unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamp>>, _>(&self.versions)?;
        out.push_sql(
            ") AS b (id, version) WHERE users.id = locked.id AND users.id = b.id \
             AND (b.version IS NULL OR users.updated_at = b.version)",
        );
        push_found(&mut out, &self.columns)
    }
}
