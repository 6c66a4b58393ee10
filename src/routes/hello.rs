//! `GET /hello` and `GET /hello/{name}`: the smallest route, the baseline for
//! what the guards and middleware cost.

use actix_web::{web, HttpResponse};

/// The same answer every time: built once, not formatted per request.
pub async fn anonymous() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello, Anonymous!")
}

pub async fn named(name: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("Hello, {name}!"))
}
