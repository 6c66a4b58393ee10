//! `POST /fetch {"urls": [...]}`: fetch many upstream URLs concurrently; one
//! result per URL, in order. One URL's failure never fails the others, and
//! identical URLs are fetched once.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::actors::fetcher::FetchMany;
use crate::app_state::AppState;
use crate::domain::FetchUrls;
use crate::error::{ApiError, Problem};
use crate::fetch::FetchResult;
use crate::middleware::disconnect::client_gone;
use crate::request_id;
use crate::routes::openapi::FetchBody;

#[utoipa::path(
    post,
    path = "/fetch",
    operation_id = "fetch",
    tag = "fetch",
    request_body(content = FetchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per URL, in order", body = Vec<FetchResult>),
        (status = 422, description = "No urls, not an array, a non-string item, none or too many", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn fetch(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let urls = FetchUrls::from_json(&body, state.fetch_max_urls).map_err(ApiError::Validation)?;
    let flights = state
        .fetcher
        .call(FetchMany(urls, request_id::origin()))
        .await?;
    // Awaited here, in this request's task, and dropped (the upstream
    // requests with them) if the client goes away first.
    tokio::select! {
        results = flights.land() => Ok(HttpResponse::Ok().json(results)),
        () = client_gone(&req) => Err(ApiError::ClientGone),
    }
}
