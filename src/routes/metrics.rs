//! `GET /metrics` (Prometheus text exposition, never limited or counted) and
//! `GET /stats` (the same figures as JSON, for people).

use actix_web::{web, HttpResponse};

use crate::actors::metrics::{Gather, StatsSummary, Summarize};
use crate::app_state::AppState;
use crate::error::{ApiError, Problem};

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        (status = 503, description = "The metrics actor is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.metrics.call(Gather).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

#[utoipa::path(
    get,
    path = "/stats",
    operation_id = "stats",
    tag = "operations",
    responses((status = 200, description = "The figures for people", body = StatsSummary))
)]
pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let summary = state.metrics.call(Summarize).await?;
    Ok(HttpResponse::Ok().json(summary))
}
