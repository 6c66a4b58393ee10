//! Versions as the users yardsticks of `benches/suite.py` answer them, as
//! switchboard does: a user's `ETag`, and the `If-Match` that names one.

use actix_web::http::header::{ETAG, IF_MATCH};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use switchboard::domain::{User, Version};

/// A user, with its version as its `ETag`.
pub fn user_answer(status: StatusCode, user: &User) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((ETAG, user.version().etag()))
        .json(user)
}

/// The version a conditional write's `If-Match` names (the suite sends one
/// tag, or none).
pub fn if_match(request: &HttpRequest) -> Option<Version> {
    let tag = request.headers().get(IF_MATCH)?.to_str().ok()?;
    Version::from_etag(tag)
}
