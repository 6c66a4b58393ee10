//! `/metrics` and `/stats` as a scraper and a person see them.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{eventually, spawn_app, spawn_app_with, Backend, TestApp};

/// The value of one sample line of the exposition, if present.
async fn sample(app: &TestApp, line_start: &str) -> Option<f64> {
    crate::helpers::scrape(&app.url("/metrics"), line_start).await
}

const HELLO_200: &str = r#"http_requests_total{method="GET",route="/hello",status="200"}"#;

#[actix_web::test]
async fn requests_are_counted_by_route_template_not_path() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let user = app.create_user("Counted", "counted@example.com").await;
    for _ in 0..3 {
        app.get(&format!("/users/{}", user["id"])).await;
        app.get("/hello").await;
    }
    for path in ["/a", "/b/c", "/users/1/x"] {
        app.get(path).await;
    }
    for _ in 0..5 {
        app.get("/metrics").await;
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            sample(&app, HELLO_200).await == Some(3.0)
        })
        .await,
        "three /hello requests counted"
    );
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/users/{id}",status="200"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 3"#));
    assert!(
        !text.contains("route=\"/metrics\""),
        "scrapes are not counted"
    );
    assert!(!text.contains("/b/c"), "raw paths never become labels");
    for name in [
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        "cache_requests_total",
        "db_query_duration_seconds_bucket",
        "db_pool_connections",
        "rate_limit_decisions_total",
        "actor_messages_total",
        "build_info{version=",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

#[actix_web::test]
async fn the_pool_gauge_adds_up_every_database_actors_pool() {
    // Two workers, each with half of the 8 connections, and SQLite's writer
    // with one more.
    let app = spawn_app_with(Backend::Sqlite, |s| s.database.pool_size = Some(8))
        .await
        .unwrap();
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    let mut db_actors: Vec<&str> = ready["checks"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["actor"].as_str().filter(|name| name.starts_with("db")))
        .collect();
    db_actors.sort();
    assert_eq!(
        db_actors,
        ["db", "db", "db_writer"],
        "one database actor per worker, and the writer: {ready}"
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            sample(&app, r#"db_pool_connections{state="max"}"#).await == Some(9.0)
        })
        .await,
        "the pool gauge is the sum of the workers' pools and the writer's"
    );
}

#[actix_web::test]
async fn stats_summarise_for_people() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let user = app.create_user("Stats", "stats@example.com").await;
    for _ in 0..4 {
        app.get(&format!("/users/{}", user["id"])).await;
    }
    app.get("/users/424242").await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            let stats: Value = app.get("/stats").await.json().await.unwrap();
            stats["errors_by_status"]["404"] == 1 && stats["cache_hit_ratio"] == 0.6
        })
        .await
    );
    let stats: Value = app.get("/stats").await.json().await.unwrap();
    let route = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/users/{id}" && r["method"] == "GET")
        .cloned()
        .unwrap();
    assert_eq!(route["requests"], 5);
    let latency = &route["latency_ms"];
    for field in ["avg", "min", "max", "p50", "p99"] {
        assert!(latency[field].as_f64().unwrap() > 0.0, "{field}: {route}");
    }
    assert!(latency["min"].as_f64() <= latency["p50"].as_f64());
    assert!(latency["p99"].as_f64() <= latency["max"].as_f64());
    assert_eq!(stats["errors_by_status"]["404"], 1);
    // Three hits of five lookups: the first read and the unknown id missed.
    assert_eq!(stats["cache_hit_ratio"], 0.6, "{stats}");
    assert!(stats["rate_limit_decisions"]["allowed"].as_u64().unwrap() >= 6);
}

#[actix_web::test]
async fn a_crashed_metrics_actor_costs_no_request_and_starts_again_from_zero() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for _ in 0..5 {
        app.get("/hello").await;
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            sample(&app, HELLO_200).await == Some(5.0)
        })
        .await
    );
    app.crash("metrics").await;
    app.restarted("metrics", 1).await;
    for _ in 0..3 {
        assert_eq!(
            app.get("/hello").await.status(),
            200,
            "requests are unaffected"
        );
    }
    // Three, not eight: the five counted before the crash are gone; the
    // restart itself is counted in the new registry.
    let restarts = r#"actor_restarts_total{actor="metrics",shard="0"}"#;
    assert!(
        eventually(Duration::from_secs(5), || async {
            sample(&app, HELLO_200).await == Some(3.0) && sample(&app, restarts).await == Some(1.0)
        })
        .await,
        "counters start again from zero after the restart: {:?} {:?}",
        sample(&app, HELLO_200).await,
        sample(&app, restarts).await
    );
}

/// Requests to an instance with metrics off record nothing, shown against
/// one with metrics on, asked later, whose flush has already recorded the
/// same requests: the silence is not a flush still to come.
#[actix_web::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.metrics.enabled = false)
        .await
        .unwrap();
    let recording = spawn_app(Backend::Sqlite).await.unwrap();
    for _ in 0..3 {
        app.get("/hello").await;
    }
    for _ in 0..3 {
        recording.get("/hello").await;
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            sample(&recording, HELLO_200).await == Some(3.0)
        })
        .await,
        "with metrics on, the requests are recorded"
    );
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("http_requests_total{"), "nothing recorded");
    assert!(text.contains("process_resident_memory_bytes"));
}

#[actix_web::test]
async fn every_known_series_exists_at_zero_from_start_up() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    // Actors report their state every 250 ms; the first report creates
    // their series.
    assert!(
        eventually(Duration::from_secs(3), || async {
            sample(&app, r#"actor_state{actor="db",shard="1",state="running"}"#).await == Some(1.0)
        })
        .await,
        "every actor reports its state"
    );
    let text = app.get("/metrics").await.text().await.unwrap();
    for (actor, shard) in [
        ("cache", 0),
        ("db", 0),
        ("db", 1),
        ("db_writer", 0),
        ("fetcher", 0),
        ("metrics", 0),
        ("rate_limiter", 0),
        ("rate_limiter", 1),
    ] {
        let labels = format!(r#"actor="{actor}",shard="{shard}""#);
        for line in [
            format!("actor_restarts_total{{{labels}}} 0"),
            format!(r#"actor_state{{{labels},state="running"}} 1"#),
            format!(r#"actor_state{{{labels},state="backing_off"}} 0"#),
            format!(r#"actor_state{{{labels},state="given_up"}} 0"#),
        ] {
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
    }
    for line in [
        r#"cache_requests_total{result="hit"} 0"#,
        r#"cache_requests_total{result="miss"} 0"#,
        r#"rate_limit_decisions_total{decision="fail_open"} 0"#,
        r#"db_query_duration_seconds_count{op="create"} 0"#,
        "cache_evictions_total 0",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

#[actix_web::test]
async fn one_drill_counts_once_per_instance_by_actor_and_shard() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    app.crash("db").await;
    let restarted = |actor: &'static str, shard: usize| {
        let app = &app;
        async move {
            let series = format!(r#"actor_restarts_total{{actor="{actor}",shard="{shard}"}}"#);
            sample(app, &series).await
        }
    };
    assert!(
        eventually(Duration::from_secs(3), || async {
            restarted("db", 0).await == Some(1.0)
                && restarted("db", 1).await == Some(1.0)
                && restarted("db_writer", 0).await == Some(1.0)
        })
        .await,
        "each database actor restarted once"
    );
    assert_eq!(restarted("cache", 0).await, Some(0.0));
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    let mut dbs: Vec<(String, u64)> = ready["checks"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["actor"].as_str().unwrap().starts_with("db"))
        .map(|a| {
            (
                a["actor"].as_str().unwrap().to_owned(),
                a["shard"].as_u64().unwrap(),
            )
        })
        .collect();
    dbs.sort();
    assert_eq!(
        dbs,
        [("db".into(), 0), ("db".into(), 1), ("db_writer".into(), 0)],
        "/ready names each instance: {ready}"
    );
}

#[actix_web::test]
async fn request_latency_is_by_status_with_buckets_past_the_deadline() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.request_timeout = Duration::from_secs(30)
    })
    .await
    .unwrap();
    app.get("/hello").await;
    app.get("/users/424242").await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            let ok = r#"http_request_duration_seconds_bucket{method="GET",route="/hello",status="200",le="60"} 1"#;
            let missing = r#"http_request_duration_seconds_count{method="GET",route="/users/{id}",status="404"} 1"#;
            let text = app.get("/metrics").await.text().await.unwrap();
            text.contains(ok) && text.contains(missing)
        })
        .await,
        "each status has its own histogram, reaching twice the 30 s deadline"
    );
}

/// Batches of events the metrics actor cannot take (its mailbox full) are
/// dropped, and counted: once it catches up, `metrics_batches_dropped_total`
/// says how many were lost, so an undercount is never silent.
#[actix_web::test]
async fn dropped_metric_batches_are_counted() {
    use switchboard::metrics::{Event, Record};

    const DROPPED: &str = "metrics_batches_dropped_total";
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    assert_eq!(sample(&app, DROPPED).await, Some(0.0), "exists at 0");
    // A batch that keeps the actor busy for a while (each pool report sums
    // every pool reported so far), and behind it more messages than its
    // mailbox holds: meanwhile each worker's first batch fills the last
    // place, and its next ones find the mailbox full.
    let records = app.state.metrics.recipient::<Record>();
    let pool = |shard| Event::Pool {
        actor: "stall",
        shard,
        active: 0,
        idle: 0,
        max: 0,
    };
    // On a busy machine the workers may not flush while the actor is
    // stalled: the stall is tried again, a few times at most.
    let mut dropped = false;
    for _ in 0..5 {
        records.do_send(Record((0..2_000).map(pool).collect()));
        records.do_send(Record((0..50_000).map(|_| pool(0)).collect()));
        for _ in 0..2_000 {
            app.state.metrics.post(switchboard::actors::metrics::Gather);
        }
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            app.get("/hello").await;
        }
        dropped = eventually(Duration::from_secs(10), || async {
            sample(&app, DROPPED)
                .await
                .is_some_and(|dropped| dropped > 0.0)
        })
        .await;
        if dropped {
            break;
        }
    }
    assert!(dropped, "dropped batches counted");
}
