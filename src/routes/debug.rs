//! Fault drills, mounted only with `SWITCHBOARD_CHAOS=true`: make an actor's
//! handler panic (to watch supervision bring it back), or hold a request open
//! (to watch draining and load shedding).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::actors::supervision::Crash;
use crate::app_state::AppState;
use crate::error::ApiError;

/// The longest a slow drill request may be held open.
const MAX_SLOW_MS: u64 = 60_000;

pub async fn crash(
    state: web::Data<AppState>,
    actor: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match actor.as_str() {
        "db" => {
            for db in state.db_actors() {
                db.ask(Crash).await?;
            }
        }
        "cache" => state.cache.ask(Crash).await?,
        "fetcher" => state.fetcher.ask(Crash).await?,
        "metrics" => state.metrics.ask(Crash).await?,
        "rate_limiter" => {
            for shard in state.rate_limiter.get().iter().flat_map(|l| l.shards()) {
                shard.ask(Crash).await?;
            }
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "no actor named {other:?} (expected db, cache, fetcher, metrics or rate_limiter)"
            )))
        }
    }
    Ok(HttpResponse::Accepted().json(json!({"actor": actor.as_str(), "crashed": true})))
}

pub async fn slow(ms: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let ms: u64 = ms
        .parse()
        .ok()
        .filter(|ms| *ms <= MAX_SLOW_MS)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("ms must be a whole number up to {MAX_SLOW_MS}"))
        })?;
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    Ok(HttpResponse::Ok().json(json!({"slept_ms": ms})))
}
