//! `GET /hello` and `GET /hello/{name}`: the smallest route, the baseline for
//! what the guards and middleware cost.

use actix_web::{web, HttpResponse};

/// The same answer every time: built once, not formatted per request.
#[utoipa::path(
    get,
    path = "/hello",
    operation_id = "hello",
    tag = "hello",
    responses((status = 200, description = "Hello, Anonymous!", body = String, content_type = "text/plain"))
)]
pub async fn anonymous() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello, Anonymous!")
}

#[utoipa::path(
    get,
    path = "/hello/{name}",
    operation_id = "helloName",
    tag = "hello",
    params(("name" = String, Path, description = "Who to greet")),
    responses((status = 200, description = "Hello, {name}!", body = String, content_type = "text/plain"))
)]
pub async fn named(name: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("Hello, {name}!"))
}
