//! `GET /hello` and `GET /hello/{name}`: the smallest route, the baseline for
//! what the guards and middleware cost.

use actix_web::{web, HttpResponse};

pub async fn anonymous() -> HttpResponse {
    greet("Anonymous")
}

pub async fn named(name: web::Path<String>) -> HttpResponse {
    greet(&name)
}

fn greet(name: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("Hello, {name}!"))
}
