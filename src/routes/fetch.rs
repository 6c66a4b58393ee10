//! `POST /fetch {"urls": [...]}`: fetch many upstream URLs concurrently; one
//! result per URL, in order. One URL's failure never fails the others.

use actix_web::{web, HttpResponse};
use serde_json::Value;

use crate::actors::fetcher::FetchMany;
use crate::app_state::AppState;
use crate::domain::FetchUrls;
use crate::error::ApiError;

pub async fn fetch(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let urls = FetchUrls::from_json(&body, state.fetch_max_urls).map_err(ApiError::Validation)?;
    let results = state.fetcher.call(FetchMany(urls)).await?;
    Ok(HttpResponse::Ok().json(results))
}
