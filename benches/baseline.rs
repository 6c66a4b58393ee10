//! The benchmark suite's yardstick (`benches/suite.py`): the users API as a
//! bare actix-web program. No actors, no cache, no rate limiter, no metrics,
//! no middleware: each handler awaits switchboard's own queries
//! (`switchboard::db::users`) on a plain deadpool + diesel-async pool shared
//! by the workers. It reads switchboard's own settings (`DATABASE_URL`,
//! `SWITCHBOARD_BIND`, `SWITCHBOARD_WORKERS`, `SWITCHBOARD_DB_POOL_SIZE`), so
//! both run the same SQL with the same pool and threads, and the distance
//! between them is what switchboard's design costs or saves.
//!
//! `target/release/deps/baseline-*` (the suite builds and finds it).

mod common;
mod etags;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::Value;
use switchboard::config::Settings;
use switchboard::db::{migrate, users, DbError, DbPool, PageCache, PoolSpec};
use switchboard::domain::{Expected, NewUser, User, UserId, UserPatch};

fn main() -> std::io::Result<()> {
    let settings = Settings::load().map_err(|e| std::io::Error::other(e.to_string()))?;
    actix_web::rt::System::new().block_on(async move {
        migrate(&settings.database.url)
            .await
            .map_err(std::io::Error::other)?;
        let pool = PoolSpec {
            url: settings.database.url.clone(),
            size: settings.database.pool_size(),
            page_cache: PageCache::Default,
        }
        .build();
        let started = web::Data::new(std::time::Instant::now());
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(pool.clone()))
                .app_data(started.clone())
                .route("/hello", web::get().to(common::hello))
                .route("/health", web::get().to(common::health))
                .route("/users", web::get().to(list))
                .route("/users", web::post().to(create))
                .route("/users/{id}", web::get().to(get))
                .route("/users/{id}", web::patch().to(update))
                .route("/users/{id}", web::delete().to(delete))
        })
        .workers(settings.server.workers)
        .bind(settings.server.bind)?
        .run()
        .await
    })
}

async fn get(pool: web::Data<DbPool>, id: web::Path<String>) -> HttpResponse {
    match UserId::parse(&id) {
        Ok(id) => answer(StatusCode::OK, users::get(pool.get_ref(), id).await),
        Err(reason) => HttpResponse::BadRequest().body(reason),
    }
}

#[derive(Deserialize)]
struct Page {
    limit: i64,
}

async fn list(pool: web::Data<DbPool>, page: web::Query<Page>) -> HttpResponse {
    match users::list(pool.get_ref(), 0, page.limit + 1, None).await {
        Ok(page) => HttpResponse::Ok().json(page),
        Err(err) => failure(err),
    }
}

async fn create(pool: web::Data<DbPool>, body: web::Json<Value>) -> HttpResponse {
    match NewUser::from_json(&body) {
        Ok(user) => answer(
            StatusCode::CREATED,
            users::create(pool.get_ref(), &user).await,
        ),
        Err(errors) => HttpResponse::UnprocessableEntity().json(errors),
    }
}

async fn update(
    pool: web::Data<DbPool>,
    id: web::Path<String>,
    body: web::Json<Value>,
    request: HttpRequest,
) -> HttpResponse {
    let expected = etags::if_match(&request).map_or(Expected::Any, |v| Expected::OneOf(vec![v]));
    match (UserId::parse(&id), UserPatch::from_json(&body)) {
        (Ok(id), Ok(patch)) => answer(
            StatusCode::OK,
            users::update(pool.get_ref(), id, &patch, &expected).await,
        ),
        _ => HttpResponse::BadRequest().finish(),
    }
}

async fn delete(pool: web::Data<DbPool>, id: web::Path<String>) -> HttpResponse {
    match UserId::parse(&id) {
        Ok(id) => match users::delete(pool.get_ref(), id, &Expected::Any).await {
            Ok(_) => HttpResponse::NoContent().finish(),
            Err(err) => failure(err),
        },
        Err(reason) => HttpResponse::BadRequest().body(reason),
    }
}

/// A user with its `ETag`, or what its failure gets.
fn answer(status: StatusCode, result: Result<User, DbError>) -> HttpResponse {
    match result {
        Ok(user) => etags::user_answer(status, &user),
        Err(err) => failure(err),
    }
}

fn failure(err: DbError) -> HttpResponse {
    match err {
        DbError::NotFound => HttpResponse::NotFound().finish(),
        DbError::EmailTaken => HttpResponse::Conflict().finish(),
        DbError::Changed => HttpResponse::PreconditionFailed().finish(),
        err => HttpResponse::InternalServerError().body(err.to_string()),
    }
}
