//! A point read of the users table, as PostgreSQL's database actors queue
//! it ([`super::batch`], [`super::postgres::Lookups`]): a user by id, or by
//! email address. Each answers the user it found, or none.

use super::conn::Checkout;
use super::{users, DbError};
use crate::domain::{User, UserEmail, UserId};

#[derive(Debug)]
pub enum Read {
    Id(UserId),
    Email(UserEmail),
}

impl Read {
    /// Runs it as one statement on a connection `conns` lends.
    pub async fn alone(&self, conns: &impl Checkout) -> Result<Option<User>, DbError> {
        match self {
            Self::Id(id) => match users::get(conns, *id).await {
                Err(DbError::NotFound) => Ok(None),
                found => found.map(Some),
            },
            Self::Email(email) => Ok(users::list(conns, 0, 1, Some(email)).await?.pop()),
        }
    }
}
