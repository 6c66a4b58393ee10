//! What every yardstick program of `benches/suite.py` answers alike, as
//! switchboard answers it: `GET /hello` and `GET /health` (the suite waits
//! on the latter to know a server is up).

use std::time::Instant;

use actix_web::{web, HttpResponse};
use chrono::{SecondsFormat, Utc};
use serde_json::json;

pub async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello, Anonymous!")
}

/// Needs the time the program started as app data.
pub async fn health(started: web::Data<Instant>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "healthy",
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "uptime_seconds": started.elapsed().as_secs(),
    }))
}
