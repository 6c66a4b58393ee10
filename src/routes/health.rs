//! Liveness (`/health`: the process answers; touches no actor) and readiness
//! (`/ready`: the database answers a query and every actor is running).

use actix_web::{web, HttpResponse};
use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::actors::db::Ping;
use crate::actors::supervision::ActorState;
use crate::app_state::{AppState, LocalDb};
use crate::error::ApiError;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "healthy",
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "uptime_seconds": state.started_at.elapsed().as_secs(),
    }))
}

pub async fn ready(state: web::Data<AppState>, db: LocalDb) -> Result<HttpResponse, ApiError> {
    let (database_up, database) = match db.reads().call(Ping).await {
        Ok(pool) => (true, json!({"status": "up", "pool": pool})),
        Err(err) => {
            tracing::warn!(%err, "readiness: database check failed");
            (false, json!({"status": "down"}))
        }
    };
    let actors = match state.roster.get() {
        Some(roster) => roster.statuses().await,
        None => return Err(ApiError::unavailable("switchboard is starting")),
    };
    let actors_up = actors.iter().all(|a| a.state == ActorState::Running);
    let checks = json!({"database": database, "actors": actors});
    if database_up && actors_up {
        Ok(HttpResponse::Ok().json(json!({"status": "ready", "checks": checks})))
    } else {
        Err(ApiError::NotReady(checks))
    }
}
