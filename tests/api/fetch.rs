//! `POST /fetch` against wiremock upstreams on loopback: concurrency,
//! retries and backoff, Retry-After, the circuit breaker, the cache, the
//! body limit, every refusal (with the upstream never called) and a crash
//! drill with fetches in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard::config::Settings;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{
    assert_problem, eventually, invalid_fields, json_of, slack, spawn_app_with, Backend, TestApp,
};

async fn fetch_app(upstream: &MockServer, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let host = upstream.address().to_string();
    spawn_app_with(Backend::Sqlite, |s| {
        s.fetch.allow_hosts = vec![host];
        s.fetch.timeout = Duration::from_millis(1000);
        tweak(s);
    })
    .await
    .unwrap()
}

async fn fetch(app: &TestApp, urls: &[String]) -> Vec<Value> {
    let response = app.post_json("/fetch", &json!({ "urls": urls })).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn fetch_one(app: &TestApp, url: String) -> Value {
    fetch(app, &[url]).await.remove(0)
}

async fn calls(upstream: &MockServer) -> usize {
    upstream.received_requests().await.unwrap_or_default().len()
}

/// Answers with a template and notes when each request arrived.
struct Recorder {
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
    template: ResponseTemplate,
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.arrivals
            .lock()
            .unwrap()
            .push((request.url.path().to_owned(), Instant::now()));
        self.template.clone()
    }
}

#[actix_web::test]
async fn ten_slow_urls_take_about_as_long_as_one() {
    let upstream = MockServer::start().await;
    Mock::given(path_regex("^/slow/\\d+$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("ok")
                .set_delay(Duration::from_millis(600)),
        )
        .expect(10)
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |_| {}).await;
    let urls: Vec<String> = (0..10)
        .map(|i| format!("{}/slow/{i}", upstream.uri()))
        .collect();
    let started = Instant::now();
    let results = fetch(&app, &urls).await;
    let took = started.elapsed();
    // One after another they would take 6 s.
    assert!(took < Duration::from_secs(2), "{took:?}");
    for (result, url) in results.iter().zip(&urls) {
        assert_eq!(result["url"], url.as_str(), "results keep request order");
        assert_eq!(result["success"], true);
        assert_eq!(result["status"], 200);
        assert_eq!(result["bytes"], 2);
        assert_eq!(result["cached"], false);
        assert_eq!(result["attempts"], 1);
        assert!(result["elapsed_ms"].as_u64().unwrap() >= 600);
        assert!(result["error"].is_null());
    }
}

#[actix_web::test]
async fn transient_statuses_are_retried_until_success() {
    let upstream = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_string("finally"))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |_| {}).await;
    let result = fetch_one(&app, format!("{}/flaky", upstream.uri())).await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["status"], 200);
    assert_eq!(result["attempts"], 3);
    assert_eq!(calls(&upstream).await, 3);
}

#[actix_web::test]
async fn retry_after_is_honoured() {
    let upstream = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(path("/busy"))
        .respond_with(Recorder {
            arrivals: Arc::clone(&arrivals),
            template: ResponseTemplate::new(429).insert_header("retry-after", "1"),
        })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&upstream)
        .await;
    Mock::given(path("/busy"))
        .respond_with(Recorder {
            arrivals: Arc::clone(&arrivals),
            template: ResponseTemplate::new(200),
        })
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |_| {}).await;
    let result = fetch_one(&app, format!("{}/busy", upstream.uri())).await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(result["attempts"], 2);
    let slack = slack(&app.url("/health"), Duration::from_millis(500)).await;
    let arrivals = arrivals.lock().unwrap();
    let waited = arrivals[1].1 - arrivals[0].1;
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(1) + slack,
        "{waited:?}, slack {slack:?}"
    );
}

#[actix_web::test]
async fn other_4xx_are_not_retried_and_500_stops_at_the_cap() {
    let upstream = MockServer::start().await;
    Mock::given(path("/missing"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(path("/broken"))
        .respond_with(ResponseTemplate::new(500))
        .expect(4)
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| s.fetch.max_attempts = 4).await;
    let results = fetch(
        &app,
        &[
            format!("{}/missing", upstream.uri()),
            format!("{}/broken", upstream.uri()),
        ],
    )
    .await;
    assert_eq!(results[0]["success"], false);
    assert_eq!(results[0]["status"], 404);
    assert_eq!(results[0]["attempts"], 1);
    assert!(
        results[0]["error"].is_null(),
        "the upstream answered: {}",
        results[0]
    );
    assert_eq!(results[1]["status"], 500);
    assert_eq!(results[1]["attempts"], 4);
    assert_eq!(
        results[1]["error"],
        "upstream answered 500 after 4 attempts"
    );
}

#[actix_web::test]
async fn timeouts_are_retried() {
    let upstream = MockServer::start().await;
    Mock::given(path("/stuck"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(800)))
        .expect(3)
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| s.fetch.timeout = Duration::from_millis(150)).await;
    let result = fetch_one(&app, format!("{}/stuck", upstream.uri())).await;
    assert_eq!(result["success"], false);
    assert!(result["status"].is_null());
    assert_eq!(result["attempts"], 3);
    assert_eq!(result["error"], "timeout after 3 attempts");
}

#[actix_web::test]
async fn backoff_grows_within_its_bounds() {
    let upstream = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("GET"))
        .respond_with(Recorder {
            arrivals: Arc::clone(&arrivals),
            template: ResponseTemplate::new(503),
        })
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| {
        s.fetch.max_attempts = 4;
        s.fetch.max_urls = 24;
        s.fetch.breaker_threshold = 10_000;
    })
    .await;
    let urls: Vec<String> = (0..24)
        .map(|i| format!("{}/down/{i}", upstream.uri()))
        .collect();
    let results = fetch(&app, &urls).await;
    assert!(results.iter().all(|r| r["attempts"] == 4));
    // What an attempt may take beyond its wait on this machine now.
    let slack = slack(&app.url("/health"), Duration::from_millis(60)).await;

    let arrivals = arrivals.lock().unwrap();
    let mut gaps = [Vec::new(), Vec::new(), Vec::new()];
    for url in &urls {
        let route = url.trim_start_matches(&upstream.uri()).to_owned();
        let times: Vec<Instant> = arrivals
            .iter()
            .filter(|(p, _)| *p == route)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(times.len(), 4);
        for (k, gap) in gaps.iter_mut().enumerate() {
            gap.push((times[k + 1] - times[k]).as_secs_f64() * 1000.0);
        }
    }
    // Full jitter: each wait is anywhere from 0 to its ceiling (100, 200,
    // 400 ms), so the waits grow on average, never past their ceiling.
    for (k, ceiling) in [100.0, 200.0, 400.0].into_iter().enumerate() {
        let worst = gaps[k].iter().cloned().fold(0.0, f64::max);
        assert!(
            worst <= ceiling + slack.as_secs_f64() * 1000.0,
            "wait {k} reached {worst:.0} ms, ceiling {ceiling}, slack {slack:?}"
        );
    }
    let mean = |g: &Vec<f64>| g.iter().sum::<f64>() / g.len() as f64;
    assert!(
        mean(&gaps[0]) < mean(&gaps[1]) && mean(&gaps[1]) < mean(&gaps[2]),
        "{:?}",
        gaps.map(|g| mean(&g))
    );
}

#[actix_web::test]
async fn the_breaker_opens_fails_fast_probes_and_closes() {
    let upstream = MockServer::start().await;
    Mock::given(path("/svc"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| {
        s.fetch.max_attempts = 1;
        s.fetch.breaker_threshold = 3;
        s.fetch.breaker_cooldown = Duration::from_millis(500);
    })
    .await;
    let url = format!("{}/svc", upstream.uri());
    for _ in 0..3 {
        assert_eq!(fetch_one(&app, url.clone()).await["status"], 500);
    }
    let refused = fetch_one(&app, url.clone()).await;
    assert_eq!(refused["error"], "circuit open");
    assert_eq!(refused["attempts"], 0);
    assert!(refused["elapsed_ms"].as_u64().unwrap() < 100, "fails fast");
    assert_eq!(
        calls(&upstream).await,
        3,
        "an open circuit does not reach the upstream"
    );

    upstream.reset().await;
    Mock::given(path("/svc"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&upstream)
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let probe = fetch_one(&app, url.clone()).await;
    assert_eq!(
        probe["success"], true,
        "the probe after the cool-down: {probe}"
    );
    let after = fetch_one(&app, format!("{url}?not-cached")).await;
    assert_eq!(after["success"], true, "closed again");
    assert_eq!(after["cached"], false);
    assert_eq!(calls(&upstream).await, 2);
}

/// The breaker's gauge for the upstream, as `/metrics` shows it.
async fn breaker_gauge(app: &TestApp, upstream: &MockServer) -> Option<f64> {
    let series = format!("circuit_breaker_state{{host=\"{}\"}} ", upstream.address());
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.parse().ok())
}

#[actix_web::test]
async fn an_open_breaker_shows_half_open_after_its_cool_down_with_no_traffic() {
    let upstream = MockServer::start().await;
    Mock::given(path("/svc"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| {
        s.fetch.max_attempts = 1;
        s.fetch.breaker_threshold = 2;
        s.fetch.breaker_cooldown = Duration::from_secs(3);
    })
    .await;
    let url = format!("{}/svc", upstream.uri());
    for _ in 0..2 {
        fetch_one(&app, url.clone()).await;
    }
    assert!(
        eventually(Duration::from_secs(2), || async {
            breaker_gauge(&app, &upstream).await == Some(1.0)
        })
        .await,
        "open after two failures"
    );
    // No fetch from here on: the gauge follows the breaker's clock.
    assert!(
        eventually(Duration::from_secs(6), || async {
            breaker_gauge(&app, &upstream).await == Some(2.0)
        })
        .await,
        "half-open once the cool-down has passed, with no traffic"
    );
    assert_eq!(calls(&upstream).await, 2, "nothing was fetched meanwhile");
}

#[actix_web::test]
async fn a_second_fetch_is_served_from_the_cache() {
    let upstream = MockServer::start().await;
    Mock::given(path("/page"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>cached</html>"))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |_| {}).await;
    let url = format!("{}/page", upstream.uri());
    let first = fetch_one(&app, url.clone()).await;
    assert_eq!(first["cached"], false);
    let second = fetch_one(&app, url).await;
    assert_eq!(second["cached"], true);
    assert_eq!(second["attempts"], 0);
    assert_eq!(second["status"], 200);
    assert_eq!(second["bytes"], first["bytes"]);
}

#[actix_web::test]
async fn refused_urls_never_reach_anyone() {
    let listed = MockServer::start().await;
    let unlisted = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&unlisted)
        .await;
    Mock::given(path("/hop"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/secret", unlisted.uri())),
        )
        .mount(&listed)
        .await;
    let app = fetch_app(&listed, |_| {}).await;
    let listed_port = listed.address().port();
    let unlisted_host = unlisted.address().to_string();
    let cases = [
        (format!("{}/x", unlisted.uri()), "host not allowed"),
        (
            format!("http://localhost:{listed_port}/x"),
            "host not allowed",
        ),
        (
            format!("http://127.0.0.1:{listed_port}@{unlisted_host}/x"),
            "userinfo not allowed",
        ),
        (
            format!("http://user:pw@127.0.0.1:{listed_port}/x"),
            "userinfo not allowed",
        ),
        ("file:///etc/passwd".to_owned(), "scheme not allowed"),
        (
            format!("ftp://127.0.0.1:{listed_port}/x"),
            "scheme not allowed",
        ),
        ("::not a url::".to_owned(), "invalid url"),
        (
            format!("{}/hop", listed.uri()),
            "redirect to host not allowed",
        ),
    ];
    let urls: Vec<String> = cases.iter().map(|(url, _)| url.clone()).collect();
    let results = fetch(&app, &urls).await;
    for (result, (url, why)) in results.iter().zip(&cases) {
        assert_eq!(result["success"], false, "{url}");
        assert_eq!(result["error"], *why, "{url}");
    }
    assert_eq!(
        calls(&unlisted).await,
        0,
        "nothing refused left the machine"
    );
    assert_eq!(
        calls(&listed).await,
        1,
        "only the redirecting hop was called"
    );
}

#[actix_web::test]
async fn bad_fetch_bodies_are_problems() {
    let upstream = MockServer::start().await;
    let app = fetch_app(&upstream, |s| s.fetch.max_urls = 3).await;
    let too_many: Vec<String> = (0..4).map(|i| format!("{}/{i}", upstream.uri())).collect();
    let problem = assert_problem(
        app.post_json("/fetch", &json!({ "urls": too_many })).await,
        422,
    )
    .await;
    assert_eq!(invalid_fields(&problem), ["urls"]);
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("at most 3"));
    let problem = assert_problem(
        app.post_json("/fetch", &json!({"urls": ["http://a/", 5]}))
            .await,
        422,
    )
    .await;
    assert_eq!(invalid_fields(&problem), ["urls[1]"]);
    for body in [
        json!({}),
        json!({"urls": []}),
        json!({"urls": "x"}),
        json!([1]),
    ] {
        assert_problem(app.post_json("/fetch", &body).await, 422).await;
    }
    let response = app
        .client
        .post(app.url("/fetch"))
        .header("content-type", "application/json")
        .body("{\"urls\": [")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400).await;
    assert_eq!(calls(&upstream).await, 0);
}

/// A fetch in flight when the fetcher crashes keeps its own client and
/// finishes with the upstream's answer; the restarted fetcher serves the
/// next request.
#[actix_web::test]
async fn a_fetch_in_flight_when_the_fetcher_crashes_finishes_and_the_fetcher_comes_back() {
    let upstream = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(800)))
        .mount(&upstream)
        .await;
    Mock::given(path("/fast"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |_| {}).await;
    let slow = json!({"urls": [format!("{}/slow", upstream.uri())]});
    let in_flight = async {
        let response = app.post_json("/fetch", &slow).await;
        (Instant::now(), response)
    };
    let crash = async {
        let asked = eventually(Duration::from_secs(5), || async {
            calls(&upstream).await >= 1
        })
        .await;
        assert!(asked, "the slow fetch reached the upstream");
        app.crash("fetcher").await;
        Instant::now()
    };
    let ((answered, response), crashed) = tokio::join!(in_flight, crash);
    assert!(
        crashed < answered,
        "the crash landed while the fetch was in flight"
    );
    assert_eq!(response.status(), 200);
    let results: Vec<Value> = response.json().await.unwrap();
    assert_eq!(results[0]["success"], true, "{results:?}");
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(calls(&upstream).await, 1, "one attempt, not a retry");

    let fast = format!("{}/fast", upstream.uri());
    assert!(
        crate::helpers::eventually(Duration::from_secs(5), || async {
            let response = app.post_json("/fetch", &json!({ "urls": [fast] })).await;
            response.status() == 200
                && response.json::<Vec<Value>>().await.unwrap()[0]["success"] == true
        })
        .await,
        "the fetcher serves again after its restart"
    );
}

#[actix_web::test]
async fn an_oversized_body_is_cut_at_the_limit_without_growing_memory() {
    let upstream = MockServer::start().await;
    Mock::given(path("/huge"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 10 * 1024 * 1024]))
        .mount(&upstream)
        .await;
    Mock::given(path("/small"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 1024]))
        .mount(&upstream)
        .await;
    let db = crate::helpers::TestDatabase::create(Backend::Sqlite)
        .await
        .unwrap();
    let allow = upstream.address().to_string();
    let app = crate::process_app::ProcessApp::start(
        &db.url(),
        &[("SWITCHBOARD_FETCH_ALLOW_HOSTS", &allow)],
    );
    let client = reqwest::Client::new();
    let url = format!("{}/huge", upstream.uri());
    let fetch_huge = || async {
        let results: Vec<Value> = json_of(
            client
                .post(app.url("/fetch"))
                .json(&json!({ "urls": [url.clone()] })),
        )
        .await;
        results.into_iter().next().unwrap()
    };
    // The fetch path warmed up (client, pools, the upstream's connection)
    // on a small body, so that the baseline is taken before any large one.
    let small: Vec<Value> = json_of(
        client
            .post(app.url("/fetch"))
            .json(&json!({ "urls": [format!("{}/small", upstream.uri())] })),
    )
    .await;
    assert_eq!(small[0]["success"], true, "{small:?}");
    let before = app.rss_kib();
    for _ in 0..5 {
        let result = fetch_huge().await;
        assert_eq!(
            (&result["success"], &result["error"]),
            (&json!(false), &json!("body too large"))
        );
    }
    let peak = app.peak_rss_kib().saturating_sub(before);
    assert!(
        peak < 4 * 1024,
        "the server's peak grew by {peak} KiB over five 10 MiB bodies"
    );
}

#[actix_web::test]
async fn identical_urls_in_one_request_are_fetched_once() {
    let upstream = MockServer::start().await;
    Mock::given(path("/same"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(200)))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| s.fetch.max_urls = 20).await;
    let url = format!("{}/same", upstream.uri());
    let results = fetch(&app, &vec![url.clone(); 20]).await;
    assert_eq!(results.len(), 20);
    assert!(results
        .iter()
        .all(|r| r["success"] == true && r["url"] == url.as_str()));
    assert_eq!(
        calls(&upstream).await,
        1,
        "one upstream call for twenty URLs"
    );
}

#[actix_web::test]
async fn concurrent_requests_for_one_url_share_one_upstream_call() {
    let upstream = MockServer::start().await;
    Mock::given(path("/popular"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(400)))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |_| {}).await;
    let url = format!("{}/popular", upstream.uri());
    let results =
        futures_util::future::join_all((0..5).map(|_| fetch_one(&app, url.clone()))).await;
    for result in &results {
        assert_eq!(result["success"], true, "{result}");
        assert_eq!(result["attempts"], 1, "{result}");
    }
    assert_eq!(calls(&upstream).await, 1, "single flight across requests");
}

/// An upstream that takes requests and never answers; it says how long each
/// connection stayed open.
async fn silent_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (closed, closings) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while stream.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                let _ = closed.send(Instant::now());
            });
        }
    });
    (address, closings)
}

#[actix_web::test]
async fn a_client_that_goes_away_cancels_its_fetch_upstream_included() {
    let (upstream, mut closings) = silent_upstream().await;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.fetch.allow_hosts = vec![upstream.to_string()];
        s.fetch.timeout = Duration::from_secs(20);
    })
    .await
    .unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(app.url("/fetch"))
        .json(&json!({"urls": [format!("http://{upstream}/slow")]}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    let left = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), closings.recv())
        .await
        .expect("the upstream connection was closed soon after the client left")
        .unwrap();
    assert!(closed.duration_since(left) < Duration::from_secs(3));
    let in_flight = "http_requests_in_flight 0";
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.get("/metrics")
                .await
                .text()
                .await
                .unwrap()
                .contains(in_flight)
        })
        .await,
        "its place among the requests in flight was given back"
    );
}

/// Redirects `/hop/{n}` to `/hop/{n + 1}`, up to `/hop/{last}`, which answers.
struct Hops {
    last: Option<u32>,
}

impl Respond for Hops {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n: u32 = request
            .url
            .path()
            .trim_start_matches("/hop/")
            .parse()
            .unwrap();
        if Some(n) == self.last {
            return ResponseTemplate::new(200).set_body_string("arrived");
        }
        ResponseTemplate::new(302).insert_header("location", format!("/hop/{}", n + 1))
    }
}

#[actix_web::test]
async fn redirects_within_allowed_hosts_are_followed_up_to_five() {
    let upstream = MockServer::start().await;
    Mock::given(path_regex("^/hop/\\d+$"))
        .respond_with(Hops { last: Some(5) })
        .mount(&upstream)
        .await;
    let endless = MockServer::start().await;
    Mock::given(path_regex("^/hop/\\d+$"))
        .respond_with(Hops { last: None })
        .mount(&endless)
        .await;
    let (short, long) = (
        upstream.address().to_string(),
        endless.address().to_string(),
    );
    let app = spawn_app_with(Backend::Sqlite, |s| s.fetch.allow_hosts = vec![short, long])
        .await
        .unwrap();
    let five = fetch_one(&app, format!("{}/hop/0", upstream.uri())).await;
    assert_eq!(
        (&five["success"], &five["status"], &five["bytes"]),
        (&json!(true), &json!(200), &json!(7))
    );
    assert_eq!(
        calls(&upstream).await,
        6,
        "the first hop and five redirects"
    );

    let six = fetch_one(&app, format!("{}/hop/0", endless.uri())).await;
    assert_eq!(six["success"], false);
    assert_eq!(six["error"], "too many redirects");
    assert_eq!(calls(&endless).await, 6, "no sixth redirect is followed");
}

#[actix_web::test]
async fn at_most_the_host_concurrency_of_attempts_reach_one_host() {
    let upstream = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(path_regex("^/slow/\\d+$"))
        .respond_with(Recorder {
            arrivals: Arc::clone(&arrivals),
            template: ResponseTemplate::new(200).set_delay(Duration::from_millis(500)),
        })
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| s.fetch.host_concurrency = 2).await;
    let urls: Vec<String> = (0..6)
        .map(|i| format!("{}/slow/{i}", upstream.uri()))
        .collect();
    let results = fetch(&app, &urls).await;
    assert!(results.iter().all(|r| r["success"] == true), "{results:?}");
    let mut at: Vec<Instant> = arrivals.lock().unwrap().iter().map(|(_, at)| *at).collect();
    at.sort();
    // The third can only start when one of the first two has answered.
    for i in 2..at.len() {
        let gap = at[i] - at[i - 2];
        assert!(
            gap >= Duration::from_millis(450),
            "arrival {i} came {gap:?} after arrival {}",
            i - 2
        );
    }
}

#[actix_web::test]
async fn retries_stop_within_the_request_deadline() {
    let upstream = MockServer::start().await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(300)))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |s| {
        s.server.request_timeout = Duration::from_secs(1);
        s.fetch.max_attempts = 20;
    })
    .await;
    let result = fetch_one(&app, format!("{}/down", upstream.uri())).await;
    assert_eq!(result["success"], false);
    let error = result["error"].as_str().unwrap();
    assert!(
        error.ends_with("out of time to retry") || error == "timeout",
        "{error}"
    );
    let attempts = result["attempts"].as_u64().unwrap();
    assert!((1..20).contains(&attempts), "{attempts} attempts");
}

#[actix_web::test]
async fn a_retry_after_past_the_cap_ends_the_retries() {
    let upstream = MockServer::start().await;
    Mock::given(path("/later"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "60"))
        .mount(&upstream)
        .await;
    let app = fetch_app(&upstream, |_| {}).await;
    let result = fetch_one(&app, format!("{}/later", upstream.uri())).await;
    assert_eq!(result["success"], false);
    assert_eq!(result["attempts"], 1);
    assert_eq!(
        result["error"],
        "upstream answered 503; asked to retry after 60 s"
    );
    assert_eq!(calls(&upstream).await, 1);
}

#[actix_web::test]
async fn connect_errors_are_retried() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.fetch.allow_hosts = vec![closed.to_string()];
        s.fetch.max_attempts = 3;
    })
    .await
    .unwrap();
    let result = fetch_one(&app, format!("http://{closed}/x")).await;
    assert_eq!(result["success"], false);
    assert_eq!(result["attempts"], 3);
    assert_eq!(result["error"], "connect error after 3 attempts");
}
