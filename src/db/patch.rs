//! A user's patch as PostgreSQL runs it: one SQL text whatever the patch
//! holds, so the server keeps it prepared on each connection. diesel marks
//! every `UPDATE` built with its DSL unsafe to cache (its `SET` list varies
//! with the fields given), and PostgreSQL would parse and plan each `PATCH`
//! anew. Here a field the patch leaves out keeps its value through
//! `COALESCE`, and the text varies only with whether the update is
//! conditional, which diesel's statement cache keys by SQL.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamp};
use diesel::QueryResult;

use super::models::UserChanges;

/// `UPDATE users ... WHERE id = $id [AND updated_at = ANY($versions)]
/// RETURNING` the user's columns, as [`super::models::UserRow`] reads them.
pub struct PatchUser<'a> {
    pub id: i64,
    pub changes: &'a UserChanges<'a>,
    /// The versions a conditional update expects; `None` for any.
    pub versions: Option<&'a [NaiveDateTime]>,
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
        out.push_sql(" RETURNING id, name, email, created_at, updated_at");
        Ok(())
    }
}

/// Cached by its SQL text (two texts in all), not by type.
impl QueryId for PatchUser<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for PatchUser<'_> {
    type SqlType = (BigInt, Text, Text, Timestamp, Timestamp);
}
