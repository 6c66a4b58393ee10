//! The one error type that reaches clients, rendered as RFC 9457 problem
//! details (`application/problem+json`).
//!
//! Every failure a handler, an extractor or an actor call can produce maps to
//! one variant here, so status codes and problem types are decided in one
//! place: the actors and the storage below return their own errors, and
//! this is where they become HTTP. 5xx bodies are generic by construction:
//! internals (SQL, panic text) go to the log, never into a response.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::db::DbFailure;
use crate::actors::ActorUnavailable;
use crate::auth::Refusal;
use crate::db::DbError;
use crate::domain::FieldError;
use crate::rate_limit::headers::retry_after_seconds;
use crate::request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// A conditional request's `If-Match` names no current version.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body was compressed (or otherwise encoded); switchboard takes
    /// bodies as they are.
    #[error("request bodies must not be encoded: send them without Content-Encoding")]
    EncodedBody,
    /// The body did not arrive within the body-read timeout.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("invalid fields: {}", field_names(.0))]
    Validation(Vec<FieldError>),
    /// Access control refused the request: 401 (no or bad token) or 403
    /// (a scope it lacks), with `WWW-Authenticate`.
    #[error("{}", .0.description())]
    Refused(Refusal),
    /// The client spent its allowance; `retry_after` says when it comes back.
    #[error("too many requests: retry in {} s", retry_after_seconds(.retry_after))]
    TooManyRequests { retry_after: Duration },
    /// The request ran past its deadline and its work was cancelled.
    #[error("the request took longer than {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The client closed its connection before its answer was ready; the
    /// work was dropped, and this answer reaches no one (it is logged).
    #[error("the client closed the connection")]
    ClientGone,
    /// An actor or the database cannot answer now; the client may retry.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after: Duration,
    },
    /// `/ready` found a check failing; `checks` says which.
    #[error("a readiness check failed")]
    NotReady(serde_json::Value),
    #[error("the server could not complete the request")]
    Internal,
}

/// Every problem `type` switchboard sends, as the OpenAPI description
/// lists them (a test holds [`ApiError::kind`] to it).
pub const PROBLEM_TYPES: [&str; 17] = [
    "/problems/bad-request",
    "/problems/unauthorized",
    "/problems/forbidden",
    "/problems/not-found",
    "/problems/method-not-allowed",
    "/problems/request-timeout",
    "/problems/conflict",
    "/problems/precondition-failed",
    "/problems/payload-too-large",
    "/problems/unsupported-media-type",
    "/problems/validation-error",
    "/problems/too-many-requests",
    "/problems/client-closed-request",
    "/problems/internal-error",
    "/problems/unavailable",
    "/problems/not-ready",
    "/problems/timeout",
];

impl ApiError {
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            retry_after: Duration::from_secs(1),
        }
    }

    /// The problem `type` (a stable slug clients can branch on) and `title`.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadRequest(_) => ("bad-request", "Bad request"),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            Self::Conflict(_) => ("conflict", "Conflict"),
            Self::PreconditionFailed(_) => ("precondition-failed", "Precondition failed"),
            Self::PayloadTooLarge(_) => ("payload-too-large", "Payload too large"),
            Self::UnsupportedMediaType(_) | Self::EncodedBody => {
                ("unsupported-media-type", "Unsupported media type")
            }
            Self::BodyTimeout => ("request-timeout", "Request timeout"),
            Self::Validation(_) => ("validation-error", "Invalid request fields"),
            Self::Unavailable { .. } => ("unavailable", "Service unavailable"),
            Self::NotReady(_) => ("not-ready", "Not ready"),
            Self::Refused(Refusal::Scope(_)) => ("forbidden", "Forbidden"),
            Self::Refused(_) => ("unauthorized", "Unauthorized"),
            Self::TooManyRequests { .. } => ("too-many-requests", "Too many requests"),
            Self::Timeout(_) => ("timeout", "Request timed out"),
            Self::ClientGone => ("client-closed-request", "Client closed request"),
            Self::Internal => ("internal-error", "Internal server error"),
        }
    }
}

/// An RFC 9457 problem, as every error answer carries it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation-error",
    "title": "Invalid request fields",
    "status": 422,
    "detail": "invalid fields: email",
    "request_id": "3f0d5d2e-9a51-4c55-9d4b-0f8f1c1b7c1e",
    "errors": [{"field": "email", "message": "is not a valid email address (Missing separator character '@'.)"}]
}))]
pub struct Problem<'a> {
    /// `/problems/<kind>`, stable: clients may branch on it.
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    /// The request's id, as `X-Request-Id` says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    /// With 422: every field that is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    /// With `/ready`'s 503: each check's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    checks: Option<&'a serde_json::Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) | Self::EncodedBody => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused(Refusal::Scope(_)) => StatusCode::FORBIDDEN,
            Self::Refused(_) => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            // nginx's 499: no standard status says this.
            Self::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (slug, title) = self.kind();
        let errors = match self {
            Self::Validation(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        if let Self::Unavailable { retry_after, .. } | Self::TooManyRequests { retry_after } = self
        {
            response.insert_header((header::RETRY_AFTER, retry_after_seconds(retry_after)));
        }
        if let Self::Refused(refusal) = self {
            response.insert_header((header::WWW_AUTHENTICATE, refusal.challenge()));
        }
        if let Self::EncodedBody = self {
            // RFC 9110, 15.5.16: say which content codings are accepted.
            response.insert_header((header::ACCEPT_ENCODING, "identity"));
        }
        response
            .content_type("application/problem+json")
            .json(Problem {
                kind: format!("/problems/{slug}"),
                title,
                status: self.status_code().as_u16(),
                detail: self.to_string(),
                request_id: request_id::current(),
                errors,
                checks: match self {
                    Self::NotReady(checks) => Some(checks),
                    _ => None,
                },
            })
    }
}

fn field_names(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.field.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::NotFound => Self::NotFound("no such user".into()),
            DbError::EmailTaken => {
                Self::Conflict("a user with this email address already exists".into())
            }
            DbError::Changed => {
                Self::PreconditionFailed("the user changed since the version If-Match names".into())
            }
            DbError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                Self::unavailable("the database is unavailable")
            }
            DbError::ConnectionLost(reason) => {
                tracing::warn!(%reason, "database connection lost");
                Self::unavailable("the connection to the database was lost")
            }
            DbError::Unwritable(reason) => {
                tracing::error!(%reason, "database cannot take writes");
                Self::unavailable("the database cannot take writes now")
            }
            DbError::Rejected(reason) => {
                tracing::warn!(%reason, "database refused a value");
                Self::Validation(vec![FieldError::new(
                    "body",
                    "holds a value the database refused",
                )])
            }
            DbError::Internal(reason) => {
                tracing::error!(%reason, "database error");
                Self::Internal
            }
        }
    }
}

impl From<ActorUnavailable> for ApiError {
    fn from(why: ActorUnavailable) -> Self {
        Self::unavailable(why.to_string())
    }
}

impl From<DbFailure> for ApiError {
    fn from(failure: DbFailure) -> Self {
        match failure {
            DbFailure::Query(err) => err.into(),
            DbFailure::Actor(why) => why.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    use super::*;

    #[test]
    fn every_problem_type_sent_is_one_described() {
        let every_kind = [
            ApiError::BadRequest(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::BodyTimeout,
            ApiError::Conflict(String::new()),
            ApiError::PreconditionFailed(String::new()),
            ApiError::PayloadTooLarge(0),
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::EncodedBody,
            ApiError::Validation(Vec::new()),
            ApiError::TooManyRequests {
                retry_after: Duration::ZERO,
            },
            ApiError::ClientGone,
            ApiError::Internal,
            ApiError::unavailable(""),
            ApiError::NotReady(serde_json::Value::Null),
            ApiError::Timeout(Duration::ZERO),
            ApiError::Refused(Refusal::Missing),
            ApiError::Refused(Refusal::Scope(crate::auth::Scope::Fetch)),
        ];
        let sent: std::collections::BTreeSet<String> = every_kind
            .iter()
            .map(|error| format!("/problems/{}", error.kind().0))
            .collect();
        let described: std::collections::BTreeSet<String> =
            PROBLEM_TYPES.iter().map(|kind| kind.to_string()).collect();
        assert_eq!(sent, described);
    }

    #[test]
    fn a_lost_database_connection_is_503_with_retry_after_and_no_internals() {
        let lost = DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed at 10.0.0.7:5432".to_owned()),
        );
        let err = DbError::from(lost);
        assert!(matches!(err, DbError::ConnectionLost(_)), "{err:?}");
        let response = ApiError::from(err).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let body = response.into_body().try_into_bytes().unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["detail"], "the connection to the database was lost");
        assert!(!String::from_utf8_lossy(&body).contains("10.0.0.7"));
    }
}
