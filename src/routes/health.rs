//! Liveness (`/health`: the process answers; touches no actor) and readiness
//! (`/ready`: the database answers a query and takes a write, and every
//! actor is running).

use actix_web::{web, HttpResponse};
use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::actors::db::{CheckWritable, Ping};
use crate::actors::supervision::ActorState;
use crate::app_state::{AppState, LocalDb};
use crate::error::ApiError;
use crate::lifecycle::Phase;

/// 200 while the process should live; 503 once it escalates (an actor was
/// given up, and it is draining to be replaced).
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.phase() == Phase::Escalating {
        return Err(ApiError::unavailable(
            "an actor was given up; this process is draining to be replaced",
        ));
    }
    Ok(HttpResponse::Ok().json(json!({
        "status": "healthy",
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "uptime_seconds": state.started_at.elapsed().as_secs(),
    })))
}

pub async fn ready(state: web::Data<AppState>, db: LocalDb) -> Result<HttpResponse, ApiError> {
    let lifecycle = match state.lifecycle.phase() {
        Phase::Serving => "serving",
        Phase::Draining => "draining",
        Phase::Escalating => "escalating",
    };
    let (database_up, database) = match db.reads().call(Ping).await {
        Ok(pool) => match db.writes().call(CheckWritable).await {
            Ok(()) => (
                true,
                json!({"status": "up", "writable": true, "pool": pool}),
            ),
            Err(err) => {
                tracing::warn!(%err, "readiness: the database takes no writes");
                (
                    false,
                    json!({"status": "read_only", "writable": false, "pool": pool}),
                )
            }
        },
        Err(err) => {
            tracing::warn!(%err, "readiness: database check failed");
            (false, json!({"status": "down", "writable": false}))
        }
    };
    let actors = match state.roster.get() {
        Some(roster) => roster.statuses().await,
        None => return Err(ApiError::unavailable("switchboard is starting")),
    };
    let actors_up = actors.iter().all(|a| a.state == ActorState::Running);
    let checks = json!({"lifecycle": lifecycle, "database": database, "actors": actors});
    if lifecycle == "serving" && database_up && actors_up {
        Ok(HttpResponse::Ok().json(json!({"status": "ready", "checks": checks})))
    } else {
        Err(ApiError::NotReady(checks))
    }
}
