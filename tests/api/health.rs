//! Liveness, readiness, hello, request ids and unknown routes.

use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, Backend, TestApp, TestDatabase};

async fn health_says_healthy_with_a_timestamp_and_uptime(app: TestApp) {
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(body["uptime_seconds"].is_u64());
}

async fn ready_reports_database_and_every_actor(app: TestApp) {
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["lifecycle"], "serving");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["database"]["writable"], true);
    // Two workers: a database actor, a cache shard and a limiter shard each; SQLite's
    // one writer, or PostgreSQL's invalidator; one of each other kind.
    let mut expected: Vec<(&str, u64)> = vec![
        ("cache", 0),
        ("cache", 1),
        ("db", 0),
        ("db", 1),
        ("fetcher", 0),
        ("metrics", 0),
        ("rate_limiter", 0),
        ("rate_limiter", 1),
    ];
    match app.database() {
        TestDatabase::Sqlite(_) => expected.push(("db_writer", 0)),
        TestDatabase::Postgres { .. } => expected.push(("invalidator", 0)),
    }
    expected.sort();
    let actors = body["checks"]["actors"].as_array().unwrap();
    let mut listed: Vec<(&str, u64)> = actors
        .iter()
        .map(|a| (a["actor"].as_str().unwrap(), a["shard"].as_u64().unwrap()))
        .collect();
    listed.sort();
    assert_eq!(listed, expected, "{body}");
    for actor in actors {
        assert_eq!(actor["state"], "running", "{actor}");
        assert_eq!(actor["restarts"], 0, "{actor}");
    }
}

on_both_backends!(
    health_says_healthy_with_a_timestamp_and_uptime,
    ready_reports_database_and_every_actor
);

#[actix_web::test]
async fn hello_greets_by_name_or_anonymous() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let response = app.get("/hello").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello, Anonymous!");
    let response = app.get("/hello/Zo%C3%AB").await;
    assert_eq!(response.text().await.unwrap(), "Hello, Zoë!");
}

#[actix_web::test]
async fn request_id_is_echoed_or_made_up() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let response = app
        .client
        .get(app.url("/hello"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");

    let first = app.get("/health").await.headers()["x-request-id"].clone();
    let second = app.get("/health").await.headers()["x-request-id"].clone();
    assert_ne!(first, second);
    for made_up in [&first, &second] {
        let id = uuid::Uuid::parse_str(made_up.to_str().unwrap()).expect("a UUID");
        assert_eq!(id.get_version_num(), 4, "{made_up:?}");
    }

    // Not echoed: a value with spaces is replaced by a fresh id.
    let response = app
        .client
        .get(app.url("/hello"))
        .header("x-request-id", "has spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "has spaces");

    // Up to 128 characters are echoed; one more is replaced.
    for (length, echoed) in [(128, true), (129, false)] {
        let id = "r".repeat(length);
        let response = app
            .client
            .get(app.url("/hello"))
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["x-request-id"] == id.as_str(),
            echoed,
            "{length}"
        );
    }
}

/// A client that leaves before its answer is counted as 499 (nginx's
/// "client closed request"), and its fetch is dropped with it.
#[actix_web::test]
async fn a_client_that_leaves_is_counted_as_499() {
    use wiremock::{matchers::path, Mock, MockServer, ResponseTemplate};
    let upstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(5)))
        .mount(&upstream)
        .await;
    let host = upstream.address().to_string();
    let app = spawn_app_with(Backend::Sqlite, move |s| s.fetch.allow_hosts = vec![host])
        .await
        .unwrap();
    let gone = app
        .client
        .post(app.url("/fetch"))
        .json(&serde_json::json!({"urls": [format!("{}/slow", upstream.uri())]}))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.unwrap_err().is_timeout());
    let counted = r#"http_requests_total{method="POST",route="/fetch",status="499"}"#;
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
            crate::helpers::scrape(&app.url("/metrics"), counted).await == Some(1.0)
        })
        .await,
        "the request is counted as 499"
    );
}

/// `/debug/slow/{ms}` holds at most a minute: a longer ask is a 400 that
/// says the cap.
#[actix_web::test]
async fn the_slow_drill_is_capped_at_a_minute() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let problem = assert_problem(app.get("/debug/slow/60001").await, 400).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("60000"),
        "{problem}"
    );
    assert_eq!(app.get("/debug/slow/0").await.status(), 200);
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let problem = assert_problem(app.get("/no/such/route").await, 404).await;
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("/no/such/route"));
    let response = app.client.put(app.url("/users")).send().await.unwrap();
    assert_problem(response, 405).await;
}

#[actix_web::test]
async fn crash_drill_is_absent_without_chaos() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.chaos = false)
        .await
        .unwrap();
    let response = app
        .client
        .post(app.url("/debug/crash/db"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404).await;
    assert_eq!(app.get("/ready").await.status(), 200);
}
