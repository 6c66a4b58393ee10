//! HTTP routes, one module per resource. Handlers are thin: extract, build a
//! message, send it to an actor, map the reply to a response.

pub mod debug;
pub mod fetch;
pub mod health;
pub mod hello;
pub mod metrics;
pub mod users;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use std::io;

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse, Resource, ResponseError};

use crate::error::ApiError;
use crate::middleware::guards;
use crate::middleware::request_context::{loggable, RouteLabel, UNMATCHED};

/// Registers every route; the fault drills only when `chaos` is on.
pub fn configure(cfg: &mut web::ServiceConfig, chaos: bool) {
    cfg.service(open("/health").get(health::health))
        .service(open("/ready").get(health::ready))
        .service(open("/metrics").get(metrics::metrics))
        .service(guarded("/stats").get(metrics::stats))
        .service(guarded("/hello").get(hello::anonymous))
        .service(guarded("/hello/{name}").get(hello::named))
        .service(guarded("/users").get(users::list).post(users::create))
        .service(guarded("/fetch").post(fetch::fetch))
        .service(
            guarded("/users/{id}")
                .get(users::get)
                .patch(users::update)
                .delete(users::delete),
        );
    if chaos {
        cfg.service(guarded("/debug/crash/{actor}").post(debug::crash))
            .service(guarded("/debug/slow/{ms}").get(debug::slow));
    }
    // Last, so that it matches only what nothing else does.
    cfg.service(unmatched());
}

/// A resource outside the guards (probes and scrapes must always answer),
/// labelled with its path template for logs and metrics; other methods are
/// answered 405 problem+json.
fn open(path: &'static str) -> Resource {
    web::resource(path)
        .app_data(RouteLabel(path))
        .default_service(web::to(method_not_allowed))
}

/// A resource behind the guards: body limit, load shedding, rate limit and
/// deadline.
fn guarded(
    path: &'static str,
) -> Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    open(path).wrap(from_fn(guards::guards))
}

/// Every path no route matches, behind the guards like every route: a flood
/// of 404s is limited like anything else. One route label for all of them,
/// so no client can grow the label set.
fn unmatched() -> Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource("/{path:.*}")
        .app_data(RouteLabel(UNMATCHED))
        .default_service(web::to(no_route))
        .wrap(from_fn(guards::guards))
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    let path = loggable(req.path());
    ApiError::NotFound(format!("no route for {} {path}", req.method())).error_response()
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    ApiError::MethodNotAllowed(req.method().to_string()).error_response()
}

/// How body, query and path extraction failures reach the client.
pub fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge(limit),
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "the body must be JSON (Content-Type: application/json)".into(),
        ),
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
        JsonPayloadError::Payload(PayloadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
            ApiError::BodyTimeout
        }
        other => ApiError::BadRequest(format!("cannot read the request body: {other}")),
    }
    .into()
}

pub fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

pub fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {err}")).into()
}
