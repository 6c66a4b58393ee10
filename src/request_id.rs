//! The request id: taken from the client's `X-Request-Id` when it sent a
//! sane one (so a trace can follow a request across services), else made up.
//! It is kept in a task-local for the request's lifetime, so a problem body
//! built anywhere below (an extractor, a handler, the 404 fallback) carries
//! it without threading it through every signature.
//!
//! Made-up ids come from a per-thread generator: request ids need to be
//! unique, not unguessable, and a system call per request for randomness
//! would be a measurable share of a small request. The id lives as the
//! header value it is sent as.

use std::future::Future;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::SpanContext;

use crate::traces::propagation::Origin;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent request id that is echoed rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
    /// The request's place in its trace (see [`crate::traces`]).
    static TRACE: SpanContext;
}

/// The client's request id if it is one we can safely echo, else a new one.
pub fn of_request(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID_HEADER)
        .filter(|value| {
            let bytes = value.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_LEN
                && bytes.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(new_id)
}

/// A fresh random (version 4) UUID, from this thread's generator.
fn new_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid.hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// Runs `request` with `id` as its request id, and `trace` as its ids in
/// its trace.
pub async fn scope<F: Future>(id: HeaderValue, trace: SpanContext, request: F) -> F::Output {
    REQUEST_ID.scope(id, TRACE.scope(trace, request)).await
}

/// The request id and trace ids of the request being handled on this
/// task, as its outbound calls pass them on.
pub fn origin() -> Origin {
    Origin {
        request_id: REQUEST_ID.try_with(HeaderValue::clone).ok(),
        trace: TRACE.try_with(SpanContext::clone).ok(),
    }
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID
        .try_with(|id| id.to_str().map(str::to_owned).ok())
        .ok()
        .flatten()
}
