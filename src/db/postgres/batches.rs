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
//! Conditional writes (`If-Match`) and empty patches have no batch shape
//! and run alone: a row that a conditional write left untouched needs its
//! own answer (gone, 404, or changed, 412), which the batch statements do
//! not tell apart, and an empty patch writes nothing.

use std::collections::HashMap;
use std::rc::Rc;

use diesel_async::RunQueryDsl;

use super::pipeline::Pipeline;
use super::statements::{DeleteUsers, InsertUsers, InsertedRow, PatchUsers};
use crate::db::batch::{Batching, Together};
use crate::db::conn::{run, Checkout, QueryCost};
use crate::db::models::{NewUserRow, UserChanges, UserRow};
use crate::db::write::{Write, Written};
use crate::db::DbError;
use crate::domain::{Expected, NewUser, User, UserId, UserPatch};

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
    const MAX_BATCH: usize = 256;
    type Shape = Statement;

    fn shape(write: &Write) -> Option<Statement> {
        if write.is_conditional() {
            return None;
        }
        match write {
            Write::Create(_) => Some(Statement::Insert),
            Write::Patch { patch, .. } => (!patch.is_empty()).then_some(Statement::Update),
            Write::Delete { .. } => Some(Statement::Delete),
        }
    }

    async fn together(&self, statement: &Statement, batch: &[Write]) -> Together {
        let answered = match statement {
            Statement::Insert => create_many(&self.0, batch).await,
            Statement::Update => update_many(&self.0, batch).await,
            Statement::Delete => delete_many(&self.0, batch).await,
        };
        match answered {
            Ok(answers) => Together::Answered(answers),
            Err(err @ (DbError::ConnectionLost(_) | DbError::Unavailable(_))) => {
                Together::Failed(err)
            }
            Err(err) => Together::Refused(err),
        }
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
/// [`DbError::NotFound`].
async fn update_many(pipeline: &Pipeline, batch: &[Write]) -> Result<Vec<Written>, DbError> {
    let patches: Vec<(UserId, &UserPatch)> = batch.iter().filter_map(Write::patched).collect();
    let changes: Vec<UserChanges> = patches.iter().map(|(_, p)| UserChanges::new(p)).collect();
    let ids = patches.iter().map(|(id, _)| id.get()).collect();
    let at = changes
        .iter()
        .map(|c| c.updated_at)
        .max()
        .unwrap_or_default();
    let update = PatchUsers::new(ids, &changes, at);
    let updated: Vec<UserRow> = run(pipeline.get(QueryCost::Page), async |share| {
        Ok(update.load(&mut share.client()).await?)
    })
    .await?;
    Ok(answer_by_id(updated, patches.iter().map(|(id, _)| *id)))
}

/// Deletes the batch's users, each at most once, in one statement
/// ([`DeleteUsers`]): for each, in order, the user as it was, or
/// [`DbError::NotFound`].
async fn delete_many(pipeline: &Pipeline, batch: &[Write]) -> Result<Vec<Written>, DbError> {
    let ids: Vec<UserId> = batch.iter().filter_map(Write::user).collect();
    let delete = DeleteUsers::new(ids.iter().map(|id| id.get()).collect());
    let deleted: Vec<UserRow> = run(pipeline.get(QueryCost::Page), async |share| {
        Ok(delete.load(&mut share.client()).await?)
    })
    .await?;
    Ok(answer_by_id(deleted, ids.into_iter()))
}

/// For each of `ids`, in order, the row returned for it, or `NotFound`.
fn answer_by_id(rows: Vec<UserRow>, ids: impl Iterator<Item = UserId>) -> Vec<Written> {
    let mut by_id: HashMap<i64, UserRow> = rows.into_iter().map(|r| (r.id, r)).collect();
    ids.map(|id| {
        by_id
            .remove(&id.get())
            .map(User::from)
            .ok_or(DbError::NotFound)
    })
    .collect()
}

impl Write {
    fn created(&self) -> Option<&NewUser> {
        match self {
            Self::Create(user) => Some(user),
            _ => None,
        }
    }

    fn patched(&self) -> Option<(UserId, &UserPatch)> {
        match self {
            Self::Patch {
                id,
                patch,
                expected: Expected::Any,
            } => Some((*id, patch)),
            _ => None,
        }
    }
}
