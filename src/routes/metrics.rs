//! `GET /metrics` (Prometheus text exposition, never limited or counted) and
//! `GET /stats` (the same figures as JSON, for people).

use actix_web::{web, HttpResponse};

use crate::actors::metrics::{Gather, Summarize};
use crate::app_state::AppState;
use crate::error::ApiError;

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.metrics.call(Gather).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let summary = state.metrics.call(Summarize).await?;
    Ok(HttpResponse::Ok().json(summary))
}
