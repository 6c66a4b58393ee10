//! Liveness (`/health`: the process answers; touches no actor) and readiness
//! (`/ready`: the database answers a query and takes a write, and every
//! actor is running).

use actix_web::{web, HttpResponse};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::actors::db::{CheckWritable, Ping};
use crate::actors::supervision::ActorState;
use crate::app_state::{AppState, LocalDb};
use crate::error::{ApiError, Problem};

use crate::lifecycle::Phase;

/// `GET /health`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "healthy")]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub timestamp: String,
    pub uptime_seconds: u64,
}

/// `GET /ready`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Each check's state: the lifecycle, the database, every actor.
    #[schema(value_type = Object)]
    pub checks: serde_json::Value,
}

/// 200 while the process should live; 503 once it escalates (an actor was
/// given up, and it is draining to be replaced).
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "operations",
    responses(
        (status = 200, description = "Alive", body = Health),
        (status = 503, description = "Escalating: the process drains to be replaced", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.phase() == Phase::Escalating {
        return Err(ApiError::unavailable(
            "an actor was given up; this process is draining to be replaced",
        ));
    }
    Ok(HttpResponse::Ok().json(Health {
        status: "healthy",
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        uptime_seconds: state.started_at.elapsed().as_secs(),
    }))
}

#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the database answers and takes writes, every actor runs", body = Ready),
        (status = 503, description = "Not ready: `checks` says which check fails", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(state: web::Data<AppState>, db: LocalDb) -> Result<HttpResponse, ApiError> {
    let lifecycle = match state.lifecycle.phase() {
        Phase::Serving => "serving",
        Phase::Draining => "draining",
        Phase::Escalating => "escalating",
    };
    let (database_up, database) = match db.call(Ping).await {
        Ok(pool) => match db.call(CheckWritable).await {
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
        Ok(HttpResponse::Ok().json(Ready {
            status: "ready",
            checks,
        }))
    } else {
        Err(ApiError::NotReady(checks))
    }
}
