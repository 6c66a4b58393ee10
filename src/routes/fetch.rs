//! `POST /fetch {"urls": [...]}`: fetch many upstream URLs concurrently; one
//! result per URL, in order. One URL's failure never fails the others.

use actix_web::{web, HttpResponse};
use serde_json::Value;

use crate::actors::fetcher::FetchMany;
use crate::app_state::AppState;
use crate::domain::FieldError;
use crate::error::ApiError;

pub async fn fetch(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let urls = parse_urls(&body, state.fetch_max_urls).map_err(ApiError::Validation)?;
    let results = state
        .fetcher
        .ask(FetchMany(urls))
        .await?
        .map_err(|why| ApiError::unavailable(why.to_string()))?;
    Ok(HttpResponse::Ok().json(results))
}

/// `{"urls": [string, ...]}` with 1 to `max` URLs, or every field's problem.
fn parse_urls(body: &Value, max: usize) -> Result<Vec<String>, Vec<FieldError>> {
    let object = body
        .as_object()
        .ok_or_else(|| vec![FieldError::new("body", "must be a JSON object")])?;
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|key| key.as_str() != "urls")
        .map(|key| FieldError::new(key, "is not a known field (expected urls)"))
        .collect();
    let urls = match object.get("urls") {
        None => {
            errors.push(FieldError::new("urls", "is required"));
            Vec::new()
        }
        Some(Value::Array(items)) if items.is_empty() => {
            errors.push(FieldError::new("urls", "must list at least one URL"));
            Vec::new()
        }
        Some(Value::Array(items)) if items.len() > max => {
            errors.push(FieldError::new(
                "urls",
                format!("must list at most {max} URLs"),
            ));
            Vec::new()
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item.as_str() {
                Some(url) => Some(url.to_owned()),
                None => {
                    errors.push(FieldError::new(&format!("urls[{i}]"), "must be a string"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errors.push(FieldError::new("urls", "must be an array of URLs"));
            Vec::new()
        }
    };
    if errors.is_empty() {
        Ok(urls)
    } else {
        Err(errors)
    }
}
