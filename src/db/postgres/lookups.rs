//! PostgreSQL's way to run a batch of point reads ([`crate::db::batch`]):
//! one statement per batch, `SELECT ... WHERE id = ANY($1)` (or the email
//! key), which the server keeps prepared like any other. Each read is
//! answered with its row or none, as it would have been alone.
//!
//! The same user asked for by several reads of a batch is one element of
//! the array and one row (single flight). The statement is its own
//! snapshot, taken after every read in the batch was sent, so each read
//! sees every write acknowledged before it was sent.

use std::collections::HashMap;
use std::rc::Rc;

use super::pipeline::Pipeline;
use crate::db::batch::{Answer, Batching, Together};
use crate::db::read::Read;
use crate::db::users::{self, UserKeys};
use crate::db::DbError;
use crate::domain::{User, UserId};

/// Runs a worker's batches of reads on its pipelined connections.
#[derive(Clone)]
pub struct Lookups(pub Rc<Pipeline>);

/// What a batch of reads looks users up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKey {
    Id,
    Email,
}

impl Batching for Lookups {
    type Query = Read;
    type Output = Option<User>;
    const MAX_BATCH: usize = 256;
    type Shape = LookupKey;

    fn shape(read: &Read) -> Option<LookupKey> {
        Some(match read {
            Read::Id(_) => LookupKey::Id,
            Read::Email(_) => LookupKey::Email,
        })
    }

    fn orders(_: &Read) -> Option<UserId> {
        None
    }

    async fn together(&self, key: &LookupKey, batch: &[Read]) -> Together<Self> {
        Together::of_statement(find(&self.0, *key, batch).await)
    }

    async fn alone(&self, read: &Read) -> Answer<Self> {
        read.alone(&*self.0).await
    }
}

/// What a read looks for, and what a user found answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Sought {
    Id(i64),
    EmailKey(String),
}

impl Sought {
    fn of_read(read: &Read) -> Self {
        match read {
            Read::Id(id) => Self::Id(id.get()),
            Read::Email(email) => Self::EmailKey(email.key()),
        }
    }

    fn of_user(user: &User, key: LookupKey) -> Self {
        match key {
            LookupKey::Id => Self::Id(user.id),
            LookupKey::Email => Self::EmailKey(user.email.to_lowercase()),
        }
    }
}

/// For each read of the batch, in order, the user it finds, from one
/// statement that looks each distinct user up once.
async fn find(
    pipeline: &Pipeline,
    key: LookupKey,
    batch: &[Read],
) -> Result<Vec<Answer<Lookups>>, DbError> {
    let sought: Vec<Sought> = batch.iter().map(Sought::of_read).collect();
    let mut distinct = sought.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let (mut ids, mut emails) = (Vec::new(), Vec::new());
    for sought in distinct {
        match sought {
            Sought::Id(id) => ids.push(id),
            Sought::EmailKey(key) => emails.push(key),
        }
    }
    let keys = match key {
        LookupKey::Id => UserKeys::Ids(&ids),
        LookupKey::Email => UserKeys::Emails(&emails),
    };
    let users = users::get_many(pipeline, keys).await?;
    let found: HashMap<Sought, User> = users
        .into_iter()
        .map(|user| (Sought::of_user(&user, key), user))
        .collect();
    Ok(sought.iter().map(|s| Ok(found.get(s).cloned())).collect())
}
