//! The benchmark suite's second yardstick (`benches/suite.py`): the users
//! API as an actix-web user would write it by hand on PostgreSQL, with
//! `tokio-postgres` and a `deadpool-postgres` pool, every statement prepared
//! once per connection (`prepare_cached`), one statement per request: each
//! create its own `INSERT`, each patch its own `UPDATE` (`... AND
//! updated_at = $6` under `If-Match`), each delete its own `DELETE`.
//! Where `benches/baseline.rs` shows what switchboard's design costs on its
//! own queries, this shows how it stands against the usual way to write
//! the service. Input is checked by switchboard's own domain types, so both
//! refuse and answer alike.
//!
//! It reads switchboard's settings (`DATABASE_URL`, which must be
//! PostgreSQL, `SWITCHBOARD_BIND`, `SWITCHBOARD_WORKERS`,
//! `SWITCHBOARD_DB_POOL_SIZE`) and expects the schema switchboard migrated.

mod common;
mod etags;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::{NaiveDateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Deserialize;
use serde_json::Value;
use switchboard::config::{DatabaseUrl, Settings};
use switchboard::domain::{NewUser, User, UserId, UserPatch};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

const COLUMNS: &str = "id, name, email, created_at, updated_at";

fn main() -> std::io::Result<()> {
    let settings = Settings::load().map_err(|e| std::io::Error::other(e.to_string()))?;
    let DatabaseUrl::Postgres(url) = &settings.database.url else {
        return Err(std::io::Error::other("DATABASE_URL must be PostgreSQL"));
    };
    let config: tokio_postgres::Config = url.parse().map_err(std::io::Error::other)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(settings.database.pool_size())
        .build()
        .map_err(std::io::Error::other)?;
    let started = web::Data::new(std::time::Instant::now());
    actix_web::rt::System::new().block_on(
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
        .run(),
    )
}

/// Runs one prepared statement on a pooled connection: its rows, or the
/// answer that a failure gets.
async fn query(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, HttpResponse> {
    let client = pool
        .get()
        .await
        .map_err(|e| HttpResponse::ServiceUnavailable().body(e.to_string()))?;
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| HttpResponse::InternalServerError().body(e.to_string()))?;
    client.query(&statement, params).await.map_err(|e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            HttpResponse::Conflict().finish()
        } else {
            HttpResponse::InternalServerError().body(e.to_string())
        }
    })
}

fn user(row: &Row) -> User {
    let at = |column: &str| row.get::<_, NaiveDateTime>(column).and_utc();
    User {
        id: row.get("id"),
        name: row.get("name"),
        email: row.get("email"),
        created_at: at("created_at"),
        updated_at: at("updated_at"),
    }
}

/// The first row as a user with its `ETag`, or 404.
fn one(rows: Result<Vec<Row>, HttpResponse>, ok: actix_web::http::StatusCode) -> HttpResponse {
    match rows {
        Ok(rows) => match rows.first() {
            Some(row) => etags::user_answer(ok, &user(row)),
            None => HttpResponse::NotFound().finish(),
        },
        Err(answer) => answer,
    }
}

async fn get(pool: web::Data<Pool>, id: web::Path<String>) -> HttpResponse {
    let Ok(id) = UserId::parse(&id) else {
        return HttpResponse::BadRequest().finish();
    };
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    one(
        query(&pool, &sql, &[&id.get()]).await,
        actix_web::http::StatusCode::OK,
    )
}

#[derive(Deserialize)]
struct Page {
    limit: i64,
}

async fn list(pool: web::Data<Pool>, page: web::Query<Page>) -> HttpResponse {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
    match query(&pool, &sql, &[&0_i64, &(page.limit + 1)]).await {
        Ok(rows) => HttpResponse::Ok().json(rows.iter().map(user).collect::<Vec<_>>()),
        Err(answer) => answer,
    }
}

async fn create(pool: web::Data<Pool>, body: web::Json<Value>) -> HttpResponse {
    let new = match NewUser::from_json(&body) {
        Ok(new) => new,
        Err(errors) => return HttpResponse::UnprocessableEntity().json(errors),
    };
    let sql = format!(
        "INSERT INTO users (name, email, email_key, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) RETURNING {COLUMNS}"
    );
    let (name, email, key, at) = (
        new.name.as_str(),
        new.email.as_str(),
        new.email.key(),
        Utc::now().naive_utc(),
    );
    one(
        query(&pool, &sql, &[&name, &email, &key, &at]).await,
        actix_web::http::StatusCode::CREATED,
    )
}

/// One `UPDATE` a patch; with `If-Match`, one that also names the version
/// (`updated_at`), and when it matches no row, a read of whether the user
/// is there (412) or not (404).
async fn update(
    pool: web::Data<Pool>,
    id: web::Path<String>,
    body: web::Json<Value>,
    request: HttpRequest,
) -> HttpResponse {
    let (Ok(id), Ok(patch)) = (UserId::parse(&id), UserPatch::from_json(&body)) else {
        return HttpResponse::BadRequest().finish();
    };
    const SET: &str = "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), \
         email_key = COALESCE($4, email_key), updated_at = $5";
    let name = patch.name.as_ref().map(|n| n.as_str());
    let email = patch.email.as_ref().map(|e| e.as_str());
    let key = patch.email.as_ref().map(|e| e.key());
    let (id, now) = (id.get(), Utc::now().naive_utc());
    let Some(version) = etags::if_match(&request).map(|v| v.0.naive_utc()) else {
        let sql = format!("{SET} WHERE id = $1 RETURNING {COLUMNS}");
        let rows = query(&pool, &sql, &[&id, &name, &email, &key, &now]).await;
        return one(rows, actix_web::http::StatusCode::OK);
    };
    let sql = format!("{SET} WHERE id = $1 AND updated_at = $6 RETURNING {COLUMNS}");
    let rows = query(&pool, &sql, &[&id, &name, &email, &key, &now, &version]).await;
    if rows.as_ref().is_ok_and(Vec::is_empty) {
        let exists = query(&pool, "SELECT 1 FROM users WHERE id = $1", &[&id]).await;
        if exists.is_ok_and(|rows| !rows.is_empty()) {
            return HttpResponse::PreconditionFailed().finish();
        }
    }
    one(rows, actix_web::http::StatusCode::OK)
}

/// One `DELETE` per request: 204, or 404 when there was no such user.
async fn delete(pool: web::Data<Pool>, id: web::Path<String>) -> HttpResponse {
    let Ok(id) = UserId::parse(&id) else {
        return HttpResponse::BadRequest().finish();
    };
    match query(
        &pool,
        "DELETE FROM users WHERE id = $1 RETURNING id",
        &[&id.get()],
    )
    .await
    {
        Ok(rows) if rows.is_empty() => HttpResponse::NotFound().finish(),
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(answer) => answer,
    }
}
