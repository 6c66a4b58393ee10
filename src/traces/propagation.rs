//! W3C Trace Context on the wire: the caller's `traceparent` and
//! `tracestate` read on the way in, and written on every outbound fetch.
//!
//! A malformed header is ignored (the request starts a trace of its own):
//! a client's broken tracing must never fail its request. When traces are
//! off, a request still gets ids of its own, its caller's trace id when it
//! sent one, so its log lines and its upstreams' can be joined; only no
//! span is recorded.

use actix_web::http::header::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The caller's trace context, if it sent a well-formed one.
pub fn incoming(headers: &HeaderMap) -> Context {
    let well_formed = headers
        .get(TRACEPARENT)
        .and_then(|parent| parent.to_str().ok())
        .is_some_and(well_formed);
    if !well_formed {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Is `parent` a `traceparent` as W3C Trace Context writes it: a version
/// other than `ff`, then ids and flags of exactly their lengths, in
/// lowercase hex (the propagator alone takes shorter ids)? A later
/// version may carry more fields after these.
fn well_formed(parent: &str) -> bool {
    let mut parts = parent.split('-');
    let lengths = [2, 32, 16, 2];
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let fields_ok = lengths
        .iter()
        .all(|len| parts.next().is_some_and(|part| hex(part, *len)));
    let version = &parent[..parent.len().min(2)];
    fields_ok && version != "ff" && (version != "00" || parts.next().is_none())
}

/// A request's ids when no span records it: the caller's trace (its id,
/// sampling and state) continued under a span id of the request's own, or
/// a new trace.
pub fn unrecorded(parent: &Context) -> SpanContext {
    let span = fastrand::u64(1..);
    let parent = parent.span();
    let parent = parent.span_context();
    if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            SpanId::from(span),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        SpanContext::new(
            TraceId::from(fastrand::u128(1..)),
            SpanId::from(span),
            TraceFlags::default(),
            false,
            Default::default(),
        )
    }
}

/// The `traceparent` (and `tracestate`, when there is one) that makes
/// `context` the parent of what receives them.
pub fn outbound(context: &SpanContext) -> (String, Option<String>) {
    let parent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    let state = context.trace_state().header();
    (parent, (!state.is_empty()).then_some(state))
}

/// What a request passes on to the upstreams it fetches: its request id
/// and its place in its trace.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<HeaderValue>,
    pub trace: Option<SpanContext>,
}

/// The headers an upstream receives from an attempt made in `attempt`
/// (its span, while traces are on) for a request from `origin`:
/// `X-Request-Id`, and `traceparent` (with `tracestate`) naming the
/// attempt's span as the parent, or the request's own ids when no span
/// records the attempt.
pub fn upstream_headers(attempt: &Span, origin: &Origin) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(id) = &origin.request_id {
        if let Ok(id) = reqwest::header::HeaderValue::from_bytes(id.as_bytes()) {
            headers.insert("x-request-id", id);
        }
    }
    let recorded = attempt.context().span().span_context().clone();
    let parent = Some(recorded)
        .filter(SpanContext::is_valid)
        .or_else(|| origin.trace.clone());
    if let Some(parent) = parent {
        let (parent, state) = outbound(&parent);
        for (name, value) in [(TRACEPARENT, Some(parent)), (TRACESTATE, state)] {
            if let Some(Ok(value)) = value.map(reqwest::header::HeaderValue::try_from) {
                headers.insert(name, value);
            }
        }
    }
    headers
}

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(parent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(TRACEPARENT),
            HeaderValue::from_str(parent).unwrap(),
        );
        headers
    }

    #[test]
    fn a_callers_trace_is_continued_under_a_span_of_its_own() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ours = unrecorded(&incoming(&headers(parent)));
        assert_eq!(
            ours.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(ours.span_id().to_string(), "00f067aa0ba902b7");
        let (sent, state) = outbound(&ours);
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"), "{sent}");
        assert_eq!(state, None);
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "nonsense",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let ours = unrecorded(&incoming(&headers(bad)));
            assert!(ours.is_valid(), "{bad}");
            assert!(!ours.is_sampled(), "{bad}");
            assert_ne!(
                ours.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
        }
    }
}
