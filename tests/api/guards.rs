//! The guards in front of every limited route: rate limit (headers, 429,
//! accuracy, isolation, bounded memory, fail-open), load shedding, the
//! request deadline and the body limit.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{
    assert_problem, eventually, scrape, spawn_app_with, Backend, TestApp, TestDatabase,
};
use crate::process_app::ProcessApp;

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn get_as(app: &TestApp, path: &str, client: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn burst_then_429_with_rate_limit_headers() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 5;
    })
    .await
    .unwrap();
    for expected_remaining in (0..5).rev() {
        let response = app.get("/hello").await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-policy"), "\"default\";q=5;w=5");
        assert_eq!(header(&response, "ratelimit-limit"), "5");
        assert_eq!(
            header(&response, "ratelimit-remaining"),
            expected_remaining.to_string()
        );
        let reset: u64 = header(&response, "ratelimit-reset").parse().unwrap();
        assert!((1..=5).contains(&reset));
        assert_eq!(
            header(&response, "ratelimit"),
            format!("\"default\";r={expected_remaining};t={reset}")
        );
    }
    let response = app.get("/users").await;
    assert_eq!(header(&response, "retry-after"), "1");
    assert_eq!(header(&response, "ratelimit-remaining"), "0");
    let problem = assert_problem(response, 429).await;
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("too many requests"));

    for probe in ["/health", "/ready"] {
        let response = app.get(probe).await;
        assert_eq!(response.status(), 200, "{probe} is never limited");
        assert!(response.headers().get("ratelimit").is_none());
    }
}

/// The burst passes at once, then the rate: the count allowed is held to
/// what GCRA grants between the first and the last decision, bounded by
/// when those requests were sent and answered, so a slow client or a busy
/// machine widens the bounds instead of breaking them.
#[actix_web::test]
async fn allowance_is_burst_then_rate() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 20;
        s.rate_limit.burst = 10;
    })
    .await
    .unwrap();
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        let sent = started.elapsed();
        let allowed = app.get("/hello").await.status() == 200;
        answers.push((sent, started.elapsed(), allowed));
    }
    assert!(
        answers[..10].iter().all(|(_, _, allowed)| *allowed),
        "the burst passes at once"
    );
    let (first_sent, first_answered, _) = answers[0];
    let (last_sent, last_answered, _) = answers[answers.len() - 1];
    let earned = |from: Duration, to: Duration| 20.0 * to.saturating_sub(from).as_secs_f64();
    let least = 10.0 + earned(first_answered, last_sent) - 1.0;
    let most = 10.0 + earned(first_sent, last_answered) + 1.0;
    let allowed = answers.iter().filter(|(_, _, allowed)| *allowed).count() as f64;
    assert!(
        (least..=most).contains(&allowed),
        "{allowed} allowed; between {least:.1} and {most:.1} expected"
    );
}

#[actix_web::test]
async fn concurrent_requests_of_one_client_each_spend_one() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 12;
        s.clients.trust_proxy = true;
    })
    .await
    .unwrap();
    // Sent at once, so the worker checks them in batches.
    let responses = join_all((0..16).map(|_| get_as(&app, "/hello", "10.7.7.7"))).await;
    let mut remaining: Vec<u32> = responses
        .iter()
        .filter(|r| r.status() == 200)
        .map(|r| header(r, "ratelimit-remaining").parse().unwrap())
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..12).collect::<Vec<u32>>());
    let limited = responses.iter().filter(|r| r.status() == 429).count();
    assert_eq!(limited, 4);
}

#[actix_web::test]
async fn clients_have_independent_allowances() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 5;
        s.clients.trust_proxy = true;
    })
    .await
    .unwrap();
    // One greedy client first: it must not eat anyone else's allowance.
    for _ in 0..20 {
        get_as(&app, "/hello", "10.9.9.9").await;
    }
    let clients: Vec<String> = (0..32).map(|i| format!("10.0.0.{}", i + 1)).collect();
    let results = join_all(clients.iter().map(|client| async {
        let responses = join_all((0..8).map(|_| get_as(&app, "/hello", client))).await;
        responses.iter().filter(|r| r.status() == 200).count()
    }))
    .await;
    for (client, allowed) in clients.iter().zip(results) {
        assert!(
            (5..=6).contains(&allowed),
            "{client} got {allowed} of its 5"
        );
    }
}

#[actix_web::test]
async fn a_flood_of_distinct_clients_keeps_limiter_memory_bounded() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 100;
        s.rate_limit.burst = 200;
        s.clients.trust_proxy = true;
    })
    .await
    .unwrap();
    let limiter = &app
        .state
        .rate_limiting
        .get()
        .expect("limiter running")
        .shards;
    const CLIENTS: u32 = 200_000;
    const PARALLEL: u32 = 64;
    let mut most_keys = 0;
    let sender = |lane: u32| {
        let app = &app;
        async move {
            let mut n = lane;
            while n < CLIENTS {
                let client = std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string();
                assert_eq!(get_as(app, "/hello", &client).await.status(), 200);
                n += PARALLEL;
            }
        }
    };
    let flood = join_all((0..PARALLEL).map(sender));
    tokio::pin!(flood);
    loop {
        tokio::select! {
            _ = &mut flood => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                most_keys = most_keys.max(limiter.stats().await.keys);
            }
        }
    }
    let stats = limiter.stats().await;
    assert_eq!(stats.allowed, u64::from(CLIENTS));
    assert!(
        most_keys < (CLIENTS / 2) as usize,
        "keys grew to {most_keys}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            limiter.stats().await.keys == 0
        })
        .await,
        "idle keys are evicted"
    );
}

#[actix_web::test]
async fn a_dead_limiter_fails_open() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 1;
    })
    .await
    .unwrap();
    for _ in 0..6 {
        app.crash("rate_limiter").await;
    }
    let ready = app.get("/ready").await;
    let problem = assert_problem(ready, 503).await;
    let limiters: Vec<&Value> = problem["checks"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["actor"] == "rate_limiter")
        .collect();
    assert!(
        !limiters.is_empty() && limiters.iter().all(|a| a["state"] == "given_up"),
        "{problem}"
    );
    for _ in 0..5 {
        let response = app.get("/hello").await;
        assert_eq!(
            response.status(),
            200,
            "requests pass while the limiter is down"
        );
        assert!(response.headers().get("ratelimit").is_none());
    }
}

#[actix_web::test]
async fn past_the_in_flight_cap_requests_are_shed_after_a_pause() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.workers = 1;
        s.server.max_in_flight = 2;
        s.server.max_in_flight_per_client = Some(2);
    })
    .await
    .unwrap();
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(reqwest::get(app.url("/debug/slow/3000"))))
        .collect();
    let busy = eventually(Duration::from_secs(5), || async {
        scrape(&app.url("/metrics"), "http_requests_in_flight ").await == Some(2.0)
    })
    .await;
    assert!(busy, "both slow requests are in flight");
    let asked = Instant::now();
    let response = app.get("/hello").await;
    assert!(
        slow.iter().all(|s| !s.is_finished()),
        "shed, not queued until a slow one finished"
    );
    // Held half a second, so a client retrying at once retries slowly.
    assert!(asked.elapsed() >= Duration::from_millis(500));
    assert_eq!(header(&response, "retry-after"), "1");
    let problem = assert_problem(response, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("capacity"));
    for slow in slow {
        assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        app.get("/hello").await.status(),
        200,
        "served again once the slow ones finish"
    );
}

/// Past the deadline the answer is 504 and the request's work is dropped,
/// not left running: the slow drill logs that it was cut short, long
/// before its 5 s were over.
#[actix_web::test]
async fn past_the_deadline_504_and_the_work_is_cancelled() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = ProcessApp::start(
        &db.url(),
        &[
            ("SWITCHBOARD_CHAOS", "true"),
            ("SWITCHBOARD_REQUEST_TIMEOUT_MS", "300"),
        ],
    );
    let started = Instant::now();
    let response = reqwest::get(app.url("/debug/slow/5000")).await.unwrap();
    let waited = started.elapsed();
    let problem = assert_problem(response, 504).await;
    assert!(problem["detail"].as_str().unwrap().contains("300 ms"));
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let cut = app.wait_for_log("slow drill cut short", |e| e["asked_ms"] == 5000);
    let held = cut["held_ms"].as_u64().unwrap();
    assert!((300..5000).contains(&held), "held {held} ms");
    assert_eq!(cut["request_id"], problem["request_id"], "{cut}");
}

#[actix_web::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.body_limit_bytes = 1024)
        .await
        .unwrap();
    let address = app.address.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Headers only: a server that read the body first would wait forever.
        stream
            .write_all(b"POST /users HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n")
            .unwrap();
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

fn redis_limited(settings: &mut switchboard::config::Settings) {
    settings.rate_limit.backend = switchboard::config::RateLimitBackend::Redis;
    settings.rate_limit.per_second = 1;
    settings.rate_limit.burst = 5;
    settings.clients.trust_proxy = true;
}

#[actix_web::test]
async fn with_redis_every_instance_enforces_one_allowance() {
    if !crate::requires::redis() {
        return;
    }
    let first = spawn_app_with(Backend::Sqlite, redis_limited)
        .await
        .unwrap();
    let second = spawn_app_with(Backend::Sqlite, redis_limited)
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4();
    let [a, b, c, ..] = *id.as_bytes();
    let client = format!("10.{a}.{b}.{c}");
    let mut allowed = 0;
    let mut refused = None;
    for i in 0..10 {
        let app = if i % 2 == 0 { &first } else { &second };
        let response = get_as(app, "/hello", &client).await;
        match response.status().as_u16() {
            200 => {
                assert_eq!(
                    header(&response, "ratelimit-remaining"),
                    (4 - allowed).to_string()
                );
                allowed += 1;
            }
            429 => refused = Some(response),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 5, "one burst across both instances");
    let refused = refused.expect("the sixth request is refused");
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_problem(refused, 429).await;
}

#[actix_web::test]
async fn an_unreachable_redis_fails_open() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        redis_limited(s);
        s.rate_limit.redis_url = "redis://127.0.0.1:1".into();
    })
    .await
    .unwrap();
    for _ in 0..8 {
        let response = get_as(&app, "/hello", "10.200.0.1").await;
        assert_eq!(
            response.status(),
            200,
            "requests pass while the limiter cannot decide"
        );
        assert!(response.headers().get("ratelimit").is_none());
    }
}

#[actix_web::test]
async fn a_silent_redis_costs_one_timeout_then_checks_fail_open_at_once() {
    // A Redis that takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let app = spawn_app_with(Backend::Sqlite, |s| {
        redis_limited(s);
        s.rate_limit.redis_url = format!("redis://{address}");
    })
    .await
    .unwrap();
    let mut took = Vec::new();
    let first = Instant::now();
    for _ in 0..40 {
        let started = Instant::now();
        let response = get_as(&app, "/hello", "10.200.0.2").await;
        took.push(started.elapsed());
        assert_eq!(response.status(), 200, "fail-open");
    }
    // A check that waited for Redis took its whole 250 ms timeout; after
    // each wait, checks pause for a second, however slow the machine is.
    let waited = took
        .iter()
        .filter(|t| **t >= Duration::from_millis(250))
        .count();
    let pauses = first.elapsed().as_secs() as usize;
    assert!(
        waited <= 1 + pauses,
        "only the first check after each pause waits for Redis's timeout: \
         {waited} waited in {pauses} s: {took:?}"
    );
}
