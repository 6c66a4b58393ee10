//! The users API: create, read (one, a page, or one by email), update,
//! delete. A user carries its version as an `ETag`: a read that names it in
//! `If-None-Match` is answered 304, and a write that names it in `If-Match`
//! is refused with 412 if the user has changed since.

use actix_web::http::header::{self, ContentType, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::actors::cache::{Cached, Read};
use crate::actors::db::{CreateUser, DbFailure, DeleteUser, GetUser, ListUsers, UpdateUser};
use crate::app_state::{AppState, LocalDb};
use crate::db::DbError;
use crate::domain::User;
use crate::domain::{Expected, NewUser, UserEmail, UserId, UserPatch, Version};
use crate::error::{ApiError, Problem};
use crate::routes::openapi::{NewUserBody, UserPatchBody};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

/// The query parameters of `GET /users`.
pub const LIST_QUERY: &[&str] = &["limit", "after", "email"];

#[utoipa::path(
    post,
    path = "/users",
    operation_id = "createUser",
    tag = "users",
    request_body(content = NewUserBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = User,
            headers(("Location" = String, description = "/users/{id}"), ("ETag" = String))),
        (status = 409, description = "The email address is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, missing, wrongly typed or unknown fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(db: LocalDb, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    let user = NewUser::from_json(&body).map_err(ApiError::Validation)?;
    let created = db.call(CreateUser(user)).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", created.id)))
        .insert_header((header::ETAG, created.version().etag()))
        .json(created))
}

/// Read through the cache: a hit never touches the database; a miss reads
/// the database and fills the cache. If the cache actor is down, or the
/// cache is turned off, reads go to the database alone.
#[utoipa::path(
    get,
    path = "/users/{id}",
    operation_id = "getUser",
    tag = "users",
    params(
        ("id" = i64, Path, minimum = 1, description = "The user's id"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag the client holds: 304 if it is current"),
    ),
    responses(
        (status = 200, description = "The user", body = User,
            headers(("ETag" = String), ("X-Cache" = String, description = "hit or miss"))),
        (status = 304, description = "The user has not changed since the ETag given", headers(("ETag" = String))),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    state: web::Data<AppState>,
    db: LocalDb,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id).map_err(ApiError::BadRequest)?;
    let load = || async {
        let user = db.call(GetUser(id)).await.map_err(about(id))?;
        let body = serde_json::to_vec(&user).map_err(|_| ApiError::Internal)?;
        Ok::<_, ApiError>(Cached {
            status: 200,
            body: Bytes::from(body),
            tag: Some(user.version().etag()),
        })
    };
    let fill = |user: &Cached| Some(user.clone());
    let (user, cache) = match state.cache.read_through(cache_key(id), load, fill).await? {
        Read::Hit(cached) => (cached, "hit"),
        Read::Loaded(loaded) => (loaded, "miss"),
    };
    let tag = user.tag.unwrap_or_default();
    if none_match(req.headers(), &tag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((header::ETAG, tag))
        .insert_header(("x-cache", cache))
        .body(user.body))
}

/// `GET /users`'s query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100, 50 by default.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The last id of the previous page.
    #[param(value_type = Option<i64>, minimum = 1)]
    after: Option<String>,
    /// Only the user with this address (compared regardless of case).
    #[param(value_type = Option<String>, format = Email)]
    email: Option<String>,
}

#[utoipa::path(
    get,
    path = "/users",
    operation_id = "listUsers",
    tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "Users in id order", body = Vec<User>,
            headers(("Link" = String, description = "<...>; rel=\"next\" when more remain"))),
    )
)]
pub async fn list(db: LocalDb, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            })?,
    };
    let after = match query.after.as_deref() {
        None => 0,
        Some(raw) => UserId::parse(raw)
            .map_err(|_| {
                ApiError::BadRequest("after must be a user id (a whole number from 1)".into())
            })?
            .get(),
    };
    let email = match query.email.as_deref() {
        None => None,
        Some(raw) => Some(
            UserEmail::parse(raw).map_err(|why| ApiError::BadRequest(format!("email {why}")))?,
        ),
    };
    // One more than asked for says whether another page exists.
    let mut users = db
        .call(ListUsers {
            after,
            limit: limit + 1,
            email,
        })
        .await?;
    let mut response = HttpResponse::Ok();
    if users.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        users.truncate(users.len() - 1);
        if let Some(last) = users.last() {
            response.insert_header((
                header::LINK,
                format!("</users?limit={limit}&after={}>; rel=\"next\"", last.id),
            ));
        }
    }
    Ok(response.json(users))
}

#[utoipa::path(
    patch,
    path = "/users/{id}",
    operation_id = "updateUser",
    tag = "users",
    params(
        ("id" = i64, Path, minimum = 1, description = "The user's id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*(\*|((W/)?"[!#-~]*")?([ \t]*,[ \t]*((W/)?"[!#-~]*")?)*)[ \t]*$"#, description = "The ETags the change is meant for (or *): 412 if the user changed since, 400 if malformed"),
    ),
    request_body(content = UserPatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed user (an empty object changes nothing)", body = User, headers(("ETag" = String))),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email address is taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The user changed since the ETag If-Match names", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, wrongly typed or unknown fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    state: web::Data<AppState>,
    db: LocalDb,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id).map_err(ApiError::BadRequest)?;
    let expected = expected(req.headers())?;
    let patch = UserPatch::from_json(&body).map_err(ApiError::Validation)?;
    let user = db
        .call(UpdateUser {
            id,
            patch,
            expected,
        })
        .await
        .map_err(about(id))?;
    state.cache.invalidate(cache_key(id));
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, user.version().etag()))
        .json(user))
}

#[utoipa::path(
    delete,
    path = "/users/{id}",
    operation_id = "deleteUser",
    tag = "users",
    params(
        ("id" = i64, Path, minimum = 1, description = "The user's id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*(\*|((W/)?"[!#-~]*")?([ \t]*,[ \t]*((W/)?"[!#-~]*")?)*)[ \t]*$"#, description = "The ETags the deletion is meant for (or *): 412 if the user changed since, 400 if malformed"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The user changed since the ETag If-Match names", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    state: web::Data<AppState>,
    db: LocalDb,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id).map_err(ApiError::BadRequest)?;
    let expected = expected(req.headers())?;
    db.call(DeleteUser { id, expected })
        .await
        .map_err(about(id))?;
    state.cache.invalidate(cache_key(id));
    Ok(HttpResponse::NoContent().finish())
}

fn cache_key(id: UserId) -> String {
    format!("user:{id}")
}

/// The versions a write's `If-Match` names; any version without one. A
/// value that is not `*` or a list of entity tags is refused rather than
/// read as a condition that fails.
fn expected(headers: &HeaderMap) -> Result<Expected, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(Expected::Any);
    };
    let malformed =
        || ApiError::BadRequest("If-Match must be * or a list of entity tags (\"...\")".into());
    let text = value.to_str().map_err(|_| malformed())?;
    if text.trim() == "*" {
        return Ok(Expected::Any);
    }
    let tags = entity_tags(text).ok_or_else(malformed)?;
    // A tag switchboard never made (a weak one among them) names no
    // version: it cannot match.
    Ok(Expected::OneOf(
        tags.into_iter().filter_map(Version::from_etag).collect(),
    ))
}

/// A list of RFC 9110 `entity-tag`s (`"opaque"` or `W/"opaque"`, the
/// opaque part visible ASCII but `"`, commas included), separated by
/// commas and optional whitespace, empty elements ignored (section 5.6.1);
/// `None` if `text` is not one.
fn entity_tags(text: &str) -> Option<Vec<&str>> {
    let is_space = |c: char| c == ' ' || c == '\t';
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| is_space(c) || c == ',');
        if rest.is_empty() {
            return Some(tags);
        }
        let opaque = rest.strip_prefix("W/").unwrap_or(rest).strip_prefix('"')?;
        let length = opaque.find('"')?;
        if !opaque[..length]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        {
            return None;
        }
        let end = rest.len() - opaque.len() + length + 1;
        tags.push(&rest[..end]);
        rest = rest[end..].trim_start_matches(is_space);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
}

/// Whether `If-None-Match` is `*` or lists `tag`, compared weakly; a
/// malformed one lists nothing.
fn none_match(headers: &HeaderMap, tag: &str) -> bool {
    let Some(listed) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    listed.trim() == "*"
        || entity_tags(listed)
            .unwrap_or_default()
            .into_iter()
            .any(|candidate| candidate.trim_start_matches("W/") == tag)
}

/// Names the user in a not-found problem.
fn about(id: UserId) -> impl FnOnce(DbFailure) -> ApiError {
    move |failure| match failure {
        DbFailure::Query(DbError::NotFound) => ApiError::NotFound(format!("no user with id {id}")),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::entity_tags;

    #[test]
    fn entity_tag_lists_are_read_as_rfc_9110_writes_them() {
        assert_eq!(
            entity_tags(r#""a", W/"b,c" ,, ""	"#),
            Some(vec![r#""a""#, r#"W/"b,c""#, r#""""#])
        );
        assert_eq!(entity_tags(" , "), Some(vec![]));
        for malformed in ["a", r#""a"b"#, r#""a"#, r#"w/"a""#, r#""a b""#, "null"] {
            assert_eq!(entity_tags(malformed), None, "{malformed}");
        }
    }
}
