//! Traces, on the real binary, exported to a real OTLP/HTTP receiver that
//! decodes the official protobuf messages: the caller's trace continued,
//! the server span and its attributes, the actors' and the database's
//! spans under it, a client span per fetch attempt that the upstream sees
//! as its parent, sampling honoured, and a collector that is down costing
//! requests nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{eventually, scrape, slack, Backend, TestDatabase};
use crate::process_app::ProcessApp;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A collector that takes every export.
async fn collector() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// Every span the collector has received, decoded; each export must name
/// the service.
async fn collected(collector: &MockServer) -> Vec<Span> {
    let mut spans = Vec::new();
    for request in collector.received_requests().await.unwrap_or_default() {
        assert_eq!(
            request.headers.get("content-type").unwrap(),
            "application/x-protobuf"
        );
        let export = ExportTraceServiceRequest::decode(&request.body[..]).expect("OTLP protobuf");
        for resource in export.resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            assert_eq!(
                string(&attributes, "service.name").as_deref(),
                Some("switchboard")
            );
            spans.extend(resource.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }
    spans
}

/// Waits (at most ten seconds) until the collector holds spans that
/// `enough` accepts, and returns them all.
async fn collected_until(collector: &MockServer, enough: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = collected(collector).await;
        if enough(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the spans never arrived; got {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        AnyValue::IntValue(n) => Some(*n),
        _ => None,
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn in_trace<'a>(spans: &'a [Span], trace: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| hex(&s.trace_id) == trace).collect()
}

/// The variables that send traces to `collector`, in small batches soon.
fn exporting_to(collector: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.uri()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

fn start(db: &TestDatabase, vars: &[(&'static str, String)]) -> ProcessApp {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ProcessApp::start(&db.url(), &vars)
}

/// A `GET /users/{id}` sent with the caller's `traceparent` is the server
/// span under the caller's, with the HTTP attributes; under it the cache's
/// and the database actor's messages, each showing its mailbox wait; under
/// the database's, the statement as a client span. The access line names
/// the same trace and span.
async fn a_callers_trace_runs_through_the_actors_to_the_statement(db: TestDatabase) {
    let collector = collector().await;
    let app = start(&db, &exporting_to(&collector));
    let client = reqwest::Client::new();
    let created: Value = client
        .post(app.url("/users"))
        .json(&json!({"name": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    let read = client
        .get(app.url(&format!("/users/{id}")))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("user-agent", "trace-test/1")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let spans = collected_until(&collector, |spans| {
        let ours = in_trace(spans, CALLER_TRACE);
        ["GET /users/{id}", "cache Get", "db GetUser", "SELECT users"]
            .iter()
            .all(|name| ours.iter().any(|s| s.name == *name))
    })
    .await;
    let ours: Vec<Span> = in_trace(&spans, CALLER_TRACE)
        .into_iter()
        .cloned()
        .collect();
    let server = named(&ours, "GET /users/{id}");
    assert_eq!(server.len(), 1, "one server span per request");
    let server = server[0];
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(server.kind, SpanKind::Server as i32);
    let attributes = &server.attributes;
    let path = format!("/users/{id}");
    for (key, expected) in [
        ("http.request.method", "GET"),
        ("http.route", "/users/{id}"),
        ("url.path", &path),
        ("client.address", "127.0.0.1"),
        ("user_agent.original", "trace-test/1"),
    ] {
        assert_eq!(string(attributes, key).as_deref(), Some(expected), "{key}");
    }
    assert_eq!(int(attributes, "http.response.status_code"), Some(200));

    for actor in ["cache Get", "db GetUser"] {
        let message = named(&ours, actor)[0];
        assert_eq!(message.parent_span_id, server.span_id, "{actor}");
        let wait = attribute(&message.attributes, "actor.mailbox.wait_ms");
        assert!(
            matches!(wait, Some(AnyValue::DoubleValue(ms)) if *ms >= 0.0),
            "{actor}: {wait:?}"
        );
        let dequeued = message.events.iter().find(|e| e.name == "dequeued");
        let dequeued = dequeued.unwrap_or_else(|| panic!("{actor} marks its dequeue"));
        assert!(message.start_time_unix_nano <= dequeued.time_unix_nano);
        assert!(dequeued.time_unix_nano <= message.end_time_unix_nano);
    }
    let db_message = named(&ours, "db GetUser")[0];
    let statement = named(&ours, "SELECT users")[0];
    assert_eq!(statement.parent_span_id, db_message.span_id);
    assert_eq!(statement.kind, SpanKind::Client as i32);
    let system = match db {
        TestDatabase::Sqlite(_) => "sqlite",
        TestDatabase::Postgres { .. } => "postgresql",
    };
    assert_eq!(
        string(&statement.attributes, "db.system").as_deref(),
        Some(system)
    );
    assert_eq!(
        string(&statement.attributes, "db.operation.name").as_deref(),
        Some("SELECT")
    );

    let line = app.wait_for_log("request", |line| line["route"] == "/users/{id}");
    assert_eq!(line["trace_id"], CALLER_TRACE);
    assert_eq!(line["span_id"], hex(&server.span_id));
    assert!(line.get("otel.kind").is_none(), "{line}");
}

/// Writes that share a batch: its span runs under one of their statements
/// and links every other, so each request's trace leads to it.
async fn a_batch_links_the_requests_it_served(db: TestDatabase) {
    let collector = collector().await;
    let app = start(&db, &exporting_to(&collector));
    let client = reqwest::Client::new();
    let creates = (0..64).map(|i| {
        client
            .post(app.url("/users"))
            .json(&json!({"name": "Batch", "email": format!("batch{i}@example.com")}))
            .send()
    });
    for created in futures_util::future::join_all(creates).await {
        assert_eq!(created.unwrap().status(), 201);
    }
    let spans = collected_until(&collector, |spans| {
        named(spans, "INSERT users").len() >= 64 && !named(spans, "db batch").is_empty()
    })
    .await;
    let statements: HashSet<Vec<u8>> = named(&spans, "INSERT users")
        .iter()
        .map(|s| s.span_id.clone())
        .collect();
    let batch = named(&spans, "db batch")
        .into_iter()
        .max_by_key(|b| b.links.len())
        .unwrap();
    assert!(!batch.links.is_empty(), "{batch:?}");
    assert!(statements.contains(&batch.parent_span_id));
    for link in &batch.links {
        assert!(statements.contains(&link.span_id), "a link to a statement");
    }
    let served = i64::try_from(batch.links.len() + 1).unwrap();
    assert_eq!(
        int(&batch.attributes, "db.operation.batch.size"),
        Some(served)
    );
    drop(app);
}

on_both_backends!(
    databases: a_callers_trace_runs_through_the_actors_to_the_statement,
    a_batch_links_the_requests_it_served
);

/// An unsampled caller (`-00`) is answered and exports nothing; a
/// malformed `traceparent` is answered 200 and starts a trace of its own.
/// Exports carry `OTEL_EXPORTER_OTLP_HEADERS` and the resource names
/// `OTEL_RESOURCE_ATTRIBUTES`.
#[actix_web::test]
async fn sampling_is_the_callers_and_a_malformed_parent_starts_a_new_trace() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let collector = collector().await;
    let mut vars = exporting_to(&collector);
    vars.push(("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k3y".into()));
    vars.push(("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=t1".into()));
    let app = start(&db, &vars);
    let client = reqwest::Client::new();
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let answered = client
        .get(app.url("/hello"))
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let malformed = client
        .get(app.url("/hello"))
        .header("traceparent", "00-not-a-trace-01")
        .header("x-request-id", "malformed-parent")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 200);

    let line = app.wait_for_log("request", |line| line["request_id"] == "malformed-parent");
    let new_trace = line["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(new_trace.len(), 32);
    let spans = collected_until(&collector, |spans| {
        in_trace(spans, &new_trace)
            .iter()
            .any(|s| s.name == "GET /hello")
    })
    .await;
    let server = named(&spans, "GET /hello")
        .into_iter()
        .find(|s| hex(&s.trace_id) == new_trace)
        .unwrap();
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert!(
        in_trace(&spans, unsampled).is_empty(),
        "an unsampled caller's trace is not exported"
    );
    let line = app.wait_for_log("request", |line| line["trace_id"] == unsampled);
    assert_eq!(line["status"], 200);
    // The exports carry the operator's headers and resource attributes.
    let exports = collector.received_requests().await.unwrap();
    assert!(!exports.is_empty(), "the new trace was exported");
    for export in exports {
        assert_eq!(export.headers.get("x-collector-key").unwrap(), "k3y");
        let export = ExportTraceServiceRequest::decode(&export.body[..]).unwrap();
        for resource in export.resource_spans {
            let attributes = resource.resource.unwrap().attributes;
            assert_eq!(
                string(&attributes, "service.instance.id").as_deref(),
                Some("t1")
            );
        }
    }
}

/// Each attempt at an upstream is a client span under the request's
/// trace; the upstream receives `traceparent` naming that span and the
/// request's `X-Request-Id`. Spans still queued at SIGTERM are exported
/// before the process exits 0.
#[actix_web::test]
async fn each_fetch_attempt_is_a_client_span_the_upstream_sees_as_its_parent() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let collector = collector().await;
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&upstream)
        .await;
    let allow = upstream.address().to_string();
    let mut app = start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.uri()),
            // Nothing leaves before shutdown: the flush sends it all.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".into()),
            ("SWITCHBOARD_FETCH_ALLOW_HOSTS", allow),
        ],
    );
    let answer: Value = reqwest::Client::new()
        .post(app.url("/fetch"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("x-request-id", "fetch-trace")
        .json(&json!({"urls": [format!("{}/thing", upstream.uri())]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer[0]["status"], 200, "{answer}");
    let seen = upstream.received_requests().await.unwrap();
    assert_eq!(seen.len(), 2, "one failed attempt, one retry");
    assert!(
        collected(&collector).await.is_empty(),
        "nothing before shutdown"
    );

    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let spans = collected(&collector).await;
    let attempts = named(&spans, "GET");
    assert_eq!(attempts.len(), 2, "a client span per attempt");
    for (request, (span, status)) in seen.iter().zip(attempts.iter().zip([503, 200])) {
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(hex(&span.trace_id), CALLER_TRACE);
        assert_eq!(
            int(&span.attributes, "http.response.status_code"),
            Some(status)
        );
        let parent = request
            .headers
            .get("traceparent")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(
            parent,
            format!("00-{CALLER_TRACE}-{}-01", hex(&span.span_id)),
            "the upstream's parent is the attempt"
        );
        assert_eq!(request.headers.get("x-request-id").unwrap(), "fetch-trace");
    }
    let server = named(&spans, "POST /fetch");
    assert_eq!(server.len(), 1);
    assert_eq!(hex(&server[0].parent_span_id), CALLER_SPAN);
}

/// With the collector down, every request is answered in normal time;
/// the spans that cannot leave are dropped and counted, a warning says so
/// once, and SIGTERM still ends the process with 0 in time.
#[actix_web::test]
async fn with_the_collector_down_requests_go_on_and_dropped_spans_are_counted() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut app = start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16".into()),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8".into()),
        ],
    );
    let client = reqwest::Client::new();
    let normal = slack(&app.url("/health"), Duration::from_millis(500)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let started = Instant::now();
        let answered = client.get(app.url("/hello")).send().await.unwrap();
        assert_eq!(answered.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < normal, "slowest {slowest:?}, bound {normal:?}");
    let metrics = app.url("/metrics");
    assert!(
        eventually(Duration::from_secs(10), || async {
            scrape(&metrics, "otel_spans_dropped_total")
                .await
                .unwrap_or(0.0)
                > 0.0
        })
        .await,
        "dropped spans are counted"
    );
    let warnings = app.wait_for_logs("trace spans dropped: the collector is down or slow, or spans come faster than they can be exported", 1);
    assert_eq!(warnings.len(), 1, "one warning a minute: {warnings:?}");

    let started = Instant::now();
    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A protocol switchboard does not speak stops start-up, naming the
/// variable.
#[actix_web::test]
async fn an_unsupported_protocol_stops_start_up_naming_the_variable() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let output = ProcessApp::command(
        &db.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{stderr}");
}

/// With no endpoint set nothing is exported, yet a request's log lines
/// carry its caller's trace id and a span id of its own, and its upstream
/// receives both, with the request id: logs across services still join.
#[actix_web::test]
async fn without_an_endpoint_the_ids_still_reach_the_logs_and_the_upstream() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let upstream = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&upstream)
        .await;
    let app = ProcessApp::start(
        &db.url(),
        &[(
            "SWITCHBOARD_FETCH_ALLOW_HOSTS",
            &upstream.address().to_string(),
        )],
    );
    let answer = reqwest::Client::new()
        .post(app.url("/fetch"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("x-request-id", "untraced-fetch")
        .json(&json!({"urls": [format!("{}/thing", upstream.uri())]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let line = app.wait_for_log("request", |line| line["request_id"] == "untraced-fetch");
    assert_eq!(line["trace_id"], CALLER_TRACE);
    let span = line["span_id"].as_str().unwrap();
    assert_eq!(span.len(), 16);
    assert_ne!(span, CALLER_SPAN);
    let seen = upstream.received_requests().await.unwrap();
    let parent = seen[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(parent, format!("00-{CALLER_TRACE}-{span}-01"));
    assert_eq!(
        seen[0].headers.get("x-request-id").unwrap(),
        "untraced-fetch"
    );
}

/// An actor that fails while handling a message leaves the failure as an
/// event on that message's span, under the request that sent it.
#[actix_web::test]
async fn a_crash_is_an_event_on_the_span_that_saw_it() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let collector = collector().await;
    let mut vars = exporting_to(&collector);
    vars.push(("SWITCHBOARD_CHAOS", "true".into()));
    let app = start(&db, &vars);
    let crashed = reqwest::Client::new()
        .post(app.url("/debug/crash/fetcher"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert!(crashed.status().is_success(), "{}", crashed.status());
    let spans = collected_until(&collector, |spans| {
        !named(spans, "fetcher Crash").is_empty()
    })
    .await;
    let message = named(&spans, "fetcher Crash")[0];
    assert_eq!(hex(&message.trace_id), CALLER_TRACE);
    let failed = message.events.iter().find(|e| e.name == "actor failed");
    let failed = failed.unwrap_or_else(|| panic!("no failure event: {:?}", message.events));
    assert_eq!(
        string(&failed.attributes, "reason").as_deref(),
        Some("crash drill: the fetcher actor was told to fail")
    );
}
