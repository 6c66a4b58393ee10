//! A write to the users table, as the database actors queue it: a create, a
//! patch or a delete. Each, when it succeeds, answers the user it wrote: as
//! created, as patched, or as it was when deleted, so that every write has
//! one answer type and one queue serves them all ([`super::batch`]).

use super::conn::{Checkout, DbConn};
use super::{users, DbError};
use crate::domain::{Expected, NewUser, User, UserId, UserPatch};

#[derive(Debug)]
pub enum Write {
    Create(NewUser),
    /// Changes a user, if it is at a version the client expects.
    Patch {
        id: UserId,
        patch: UserPatch,
        expected: Expected,
    },
    /// Deletes a user, if it is at a version the client expects.
    Delete {
        id: UserId,
        expected: Expected,
    },
}

/// What a write answers: the user it wrote, or why it wrote nothing.
pub type Written = Result<User, DbError>;

impl Write {
    /// The existing user it changes; `None` for a create.
    pub fn user(&self) -> Option<UserId> {
        match self {
            Self::Create(_) => None,
            Self::Patch { id, .. } | Self::Delete { id, .. } => Some(*id),
        }
    }

    /// Runs it as one statement, its own transaction, on a connection
    /// `conns` lends.
    pub async fn alone(&self, conns: &impl Checkout) -> Written {
        match self {
            Self::Create(user) => users::create(conns, user).await,
            Self::Patch {
                id,
                patch,
                expected,
            } => users::update(conns, *id, patch, expected).await,
            Self::Delete { id, expected } => users::delete(conns, *id, expected).await,
        }
    }

    /// Runs it on `conn`, inside whatever transaction is open there.
    pub async fn on(&self, conn: DbConn<'_>) -> Written {
        match self {
            Self::Create(user) => users::create_on(conn, user).await,
            Self::Patch {
                id,
                patch,
                expected,
            } => users::update_on(conn, *id, patch, expected).await,
            Self::Delete { id, expected } => users::delete_on(conn, *id, expected).await,
        }
    }
}
