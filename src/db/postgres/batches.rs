//! PostgreSQL's way to run a batch of writes ([`super::super::batch`]): one
//! statement per batch, so a batch holds writes of one kind, creates,
//! patches or deletes ([`super::statements`]). The statement commits by
//! itself (no transaction spans it), so an answer given after it returned
//! is committed.
//!
//! Each write is answered as it would have been alone: a create its row,
//! or `EmailTaken` if its email was taken before or by an earlier create of
//! the batch; a patch or a delete its user, or `NotFound`. A statement that
//! fails as a whole (a value the database refuses, two patches giving users
//! one email) is refused, and its writes run alone; one whose connection
//! was lost or could not be had may or may not have committed.
//!
//! A patch or delete that expects a version (`If-Match`) joins the batch
//! too, its version beside its id: the statement writes its user only at
//! that version, and says which users exist, so a write left untouched is
//! answered `Changed` and one whose user is gone `NotFound`. A write that
//! accepts any of several versions, and an empty patch (which writes
//! nothing), run alone.

use std::collections::HashMap;
use std::rc::Rc;

use chrono::NaiveDateTime;
use diesel_async::RunQueryDsl;

use super::pipeline::Pipeline;
use super::statements::{DeleteUsers, Found, InsertUsers, InsertedRow, PatchUsers};
use crate::db::batch::{Batching, Together};
use crate::db::conn::{run, Checkout, QueryCost};
use crate::db::models::{NewUserRow, UserChanges, UserRow};
use crate::db::write::{Write, Written};
use crate::db::DbError;
use crate::domain::{Expected, NewUser, User, UserId};

/// Runs a worker's batches on its pipelined connections.
#[derive(Clone)]
pub struct Statements(pub Rc<Pipeline>);

/// The statement a write can share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    Insert,
    Update,
    Delete,
}

impl Batching for Statements {
    type Query = Write;
    type Output = User;
    const MAX_BATCH: usize = 256;
    type Shape = Statement;

    fn orders(write: &Write) -> Option<UserId> {
        write.user()
    }

    fn shape(write: &Write) -> Option<Statement> {
        match write {
            Write::Create(_) => Some(Statement::Insert),
            Write::Patch {
                patch, expected, ..
            } => {
                (!patch.is_empty() && one_version(expected).is_some()).then_some(Statement::Update)
            }
            Write::Delete { expected, .. } => one_version(expected).map(|_| Statement::Delete),
        }
    }

    async fn together(&self, statement: &Statement, batch: &[Write]) -> Together<Self> {
        let answered = match statement {
            Statement::Insert => create_many(&self.0, batch).await,
            Statement::Update => update_many(&self.0, batch).await,
            Statement::Delete => delete_many(&self.0, batch).await,
        };
        Together::of_statement(answered)
    }

    async fn alone(&self, write: &Write) -> Written {
        write.alone(&*self.0).await
    }
}

/// Creates the batch's users in one statement ([`InsertUsers`]): for each,
/// in order, its user, or [`DbError::EmailTaken`].
async fn create_many(pipeline: &Pipeline, batch: &[Write]) -> Result<Vec<Written>, DbError> {
    let new: Vec<&NewUser> = batch.iter().filter_map(Write::created).collect();
    let rows: Vec<NewUserRow> = new.iter().map(|user| NewUserRow::new(user)).collect();
    let created: Vec<InsertedRow> = run(pipeline.get(QueryCost::Page), async |share| {
        Ok(InsertUsers::new(&rows).load(&mut share.client()).await?)
    })
    .await?;
    let mut by_key: HashMap<String, UserRow> = created
        .into_iter()
        .map(|row| (row.email_key, row.user))
        .collect();
    Ok(rows
        .iter()
        .map(|row| {
            let created = by_key.remove(&row.email_key);
            created.map(User::from).ok_or(DbError::EmailTaken)
        })
        .collect())
}

/// Applies the batch's patches, to distinct users, in one statement
/// ([`PatchUsers`]): for each, in order, the patched user, or
/// [`DbError::Changed`] or [`DbError::NotFound`].
async fn update_many(pipeline: &Pipeline, batch: &[Write]) -> Result<Vec<Written>, DbError> {
    let patches: Vec<_> = batch
        .iter()
        .filter_map(|write| match write {
            Write::Patch {
                id,
                patch,
                expected,
            } => Some((id.get(), UserChanges::new(patch), one_version(expected)?)),
            _ => None,
        })
        .collect();
    let at = patches
        .iter()
        .map(|(_, c, _)| c.updated_at)
        .max()
        .unwrap_or_default();
    let update = PatchUsers::new(&patches, at);
    let found: Vec<Found> = run(pipeline.get(QueryCost::Page), async |share| {
        Ok(update.load(&mut share.client()).await?)
    })
    .await?;
    Ok(answer(found, batch))
}

/// Deletes the batch's users, each at most once, in one statement
/// ([`DeleteUsers`]): for each, in order, the user as it was, or
/// [`DbError::Changed`] or [`DbError::NotFound`].
async fn delete_many(pipeline: &Pipeline, batch: &[Write]) -> Result<Vec<Written>, DbError> {
    let deletes: Vec<_> = batch
        .iter()
        .filter_map(|write| match write {
            Write::Delete { id, expected } => Some((id.get(), one_version(expected)?)),
            _ => None,
        })
        .collect();
    let delete = DeleteUsers::new(&deletes);
    let found: Vec<Found> = run(pipeline.get(QueryCost::Page), async |share| {
        Ok(delete.load(&mut share.client()).await?)
    })
    .await?;
    Ok(answer(found, batch))
}

/// For each write of the batch, in order: the user it wrote; `Changed` if
/// its user exists but was left untouched (only a conditional write can
/// be); `NotFound` if there is no such user.
fn answer(found: Vec<Found>, batch: &[Write]) -> Vec<Written> {
    let mut by_id: HashMap<i64, Option<UserRow>> =
        found.into_iter().map(|f| (f.id, f.written)).collect();
    batch
        .iter()
        .filter_map(Write::user)
        .map(|id| match by_id.remove(&id.get()) {
            Some(Some(row)) => Ok(User::from(row)),
            Some(None) => Err(DbError::Changed),
            None => Err(DbError::NotFound),
        })
        .collect()
}

/// The one version a write expects, as stored: `Some(None)` for any
/// version, `Some(Some(v))` for exactly `v`, `None` for a choice of
/// several (which no batch statement takes).
fn one_version(expected: &Expected) -> Option<Option<NaiveDateTime>> {
    match expected {
        Expected::Any => Some(None),
        Expected::OneOf(versions) => match versions.as_slice() {
            [version] => Some(Some(version.0.naive_utc())),
            _ => None,
        },
    }
}

impl Write {
    fn created(&self) -> Option<&NewUser> {
        match self {
            Self::Create(user) => Some(user),
            _ => None,
        }
    }
}
