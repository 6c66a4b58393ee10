//! Fault drills, mounted only with `SWITCHBOARD_CHAOS=true`: make an actor's
//! handler panic (to watch supervision bring it back), or hold a request open
//! (to watch draining and load shedding).

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::actors::ActorKind;
use crate::app_state::AppState;
use crate::error::ApiError;

/// The longest a slow drill request may be held open.
const MAX_SLOW_MS: u64 = 60_000;

pub async fn crash(
    state: web::Data<AppState>,
    actor: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let roster = state
        .roster
        .get()
        .ok_or_else(|| ApiError::unavailable("switchboard is starting"))?;
    match roster.crash(&actor).await {
        Some(crashed) => crashed?,
        None => {
            return Err(ApiError::NotFound(format!(
                "no actor named {:?} (expected one of {})",
                actor.as_str(),
                ActorKind::DRILLS.join(", ")
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
    let mut hold = Hold {
        asked_ms: ms,
        started: Instant::now(),
        over: false,
    };
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    hold.over = true;
    Ok(HttpResponse::Ok().json(json!({"slept_ms": ms})))
}

/// A slow drill's hold; if it is dropped before it is over (the deadline
/// or the client cut the request short), the log says so, which shows the
/// request's work was stopped rather than left running.
struct Hold {
    asked_ms: u64,
    started: Instant,
    over: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.over {
            let held_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(asked_ms = self.asked_ms, held_ms, "slow drill cut short");
        }
    }
}
