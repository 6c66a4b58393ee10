//! Validated domain types: parse, don't validate. Once a request's input has
//! become a [`UserName`], [`UserEmail`], [`UserId`] or [`FetchUrls`], the
//! type carries the proof, so no handler, actor or query checks it again.

mod fetch_urls;
mod text;
mod user;
mod user_email;
mod user_id;
mod user_input;
mod user_name;
mod version;

pub use fetch_urls::FetchUrls;
pub use user::User;
pub use user_email::UserEmail;
pub use user_id::UserId;
pub use user_input::{NewUser, UserPatch};
pub use user_name::UserName;
pub use version::{Expected, Version};

use serde::Serialize;

/// One invalid field of a request body, as listed in a 422 problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
