//! Access control at the edge: which resources need a token and which
//! scope, checked before any actor sees the request.
//!
//! Behind the guards ([`super::guards`]) the verdict is taken before the
//! rate limiter is asked, because an authenticated request spends its
//! subject's allowance, but a refusal is answered after it: a client
//! trying tokens spends its address's allowance like any other. The one
//! resource outside the guards that needs a token (`/metrics` on a
//! listener that also serves the API) is refused at once
//! ([`super::guards::authorized_at_once`]).
//!
//! A refusal is counted in `auth_failures_total{reason}` and answered 401
//! or 403 with `WWW-Authenticate`. A verified subject is recorded on the
//! request's span, so the access line and every line of the request name
//! it; the token itself is never logged.

use actix_web::dev::ServiceRequest;
use actix_web::http::Method;
use actix_web::ResponseError;

use crate::auth::verify::bearer;
use crate::auth::{Access, Authenticator, Principal, Refusal};
use crate::error::ApiError;
use crate::metrics::{Event, Recorder};

use super::listener;

/// Who the request comes from, if its resource needs to know; `Ok(None)`
/// when nothing is asked of it (access control off, an open resource, the
/// admin listener, an `OPTIONS` request).
pub fn authorize(
    req: &ServiceRequest,
    auth: Option<&Authenticator>,
) -> Result<Option<Principal>, Refusal> {
    let (Some(auth), Some(access)) = (auth, req.app_data::<Access>()) else {
        return Ok(None);
    };
    if req.method() == Method::OPTIONS || listener::on_admin(req) {
        return Ok(None);
    }
    if sent_in_query(req.query_string()) {
        return Err(Refusal::Invalid(
            "a token in the query string is not accepted: send it in the Authorization header",
        ));
    }
    let token = bearer(req.headers())?.ok_or(Refusal::Missing)?;
    let principal = auth.verify(token)?;
    if let Some(scope) = access.scope(req.method()) {
        if !principal.scopes.grants(scope) {
            return Err(Refusal::Scope(scope));
        }
    }
    tracing::Span::current().record("subject", &*principal.subject);
    Ok(Some(principal))
}

/// RFC 6750 §2.3's `access_token` query parameter.
fn sent_in_query(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair.split_once('=').map_or(pair, |(name, _)| name) == "access_token")
}

/// The refusal's answer, counted.
pub fn refused(refusal: Refusal, metrics: &Recorder) -> actix_web::HttpResponse {
    metrics.record(Event::AuthFailure(refusal.reason()));
    ApiError::Refused(refusal).error_response()
}
