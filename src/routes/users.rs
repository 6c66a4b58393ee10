//! The users API: create, read (one, or a page), update, delete.

use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::actors::cache::{Cached, Read};
use crate::actors::db::{CreateUser, DbFailure, DeleteUser, GetUser, ListUsers, UpdateUser};
use crate::app_state::{AppState, LocalDb};
use crate::db::DbError;
use crate::domain::{NewUser, UserId, UserPatch};
use crate::error::ApiError;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

pub async fn create(db: LocalDb, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    let user = NewUser::from_json(&body).map_err(ApiError::Validation)?;
    let created = db.writes().call(CreateUser(user)).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", created.id)))
        .json(created))
}

/// Read through the cache: a hit never touches the database; a miss reads
/// the database and fills the cache. If the cache actor is down, or the
/// cache is turned off, reads go to the database alone.
pub async fn get(
    state: web::Data<AppState>,
    db: LocalDb,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id).map_err(ApiError::BadRequest)?;
    let load = || async {
        let user = db.reads().call(GetUser(id)).await.map_err(about(id))?;
        serde_json::to_vec(&user)
            .map(Bytes::from)
            .map_err(|_| ApiError::Internal)
    };
    let fill = |body: &Bytes| {
        Some(Cached {
            status: 200,
            body: body.clone(),
        })
    };
    Ok(
        match state.cache.read_through(cache_key(id), load, fill).await? {
            Read::Hit(cached) => json_body(cached.body, "hit"),
            Read::Loaded(body) => json_body(body, "miss"),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

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
    // One more than asked for says whether another page exists.
    let mut users = db
        .reads()
        .call(ListUsers {
            after,
            limit: limit + 1,
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

pub async fn update(
    state: web::Data<AppState>,
    db: LocalDb,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id).map_err(ApiError::BadRequest)?;
    let patch = UserPatch::from_json(&body).map_err(ApiError::Validation)?;
    let user = db
        .writes()
        .call(UpdateUser { id, patch })
        .await
        .map_err(about(id))?;
    state.cache.invalidate(cache_key(id));
    Ok(HttpResponse::Ok().json(user))
}

pub async fn delete(
    state: web::Data<AppState>,
    db: LocalDb,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId::parse(&id).map_err(ApiError::BadRequest)?;
    db.writes().call(DeleteUser(id)).await.map_err(about(id))?;
    state.cache.invalidate(cache_key(id));
    Ok(HttpResponse::NoContent().finish())
}

fn cache_key(id: UserId) -> String {
    format!("user:{id}")
}

/// A user's JSON, saying whether the cache answered (`X-Cache`).
fn json_body(body: Bytes, cache: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header(("x-cache", cache))
        .body(body)
}

/// Names the user in a not-found problem.
fn about(id: UserId) -> impl FnOnce(DbFailure) -> ApiError {
    move |failure| match failure {
        DbFailure::Query(DbError::NotFound) => ApiError::NotFound(format!("no user with id {id}")),
        other => other.into(),
    }
}
