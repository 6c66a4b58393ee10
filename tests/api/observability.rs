//! The dashboards and alerts, proven on a real Prometheus: switchboard runs,
//! Prometheus scrapes it (and itself, as another job) every second, traffic
//! exercises every panel (reads, writes, 4xx, 429, fetches), and every panel
//! query of the dashboard must return data for switchboard's job alone:
//! first with no fault injected, then again with faults (fetches that fail,
//! crash drills, a request shed), when the restart annotation must show and
//! the restart-storm alert must be pending or firing. Every alert rule must
//! evaluate cleanly, what it compares must be in switchboard's series, and
//! it must fire in a case of `alerts_test.yml` (which CI runs). Skips, saying so, without `prometheus` and `promtool`,
//! unless SWITCHBOARD_REQUIRE_PROMETHEUS=1 (set by CI, which installs them).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{json_of, spawn_app_with, Backend, TestApp};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

struct Prometheus {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping switchboard (job `switchboard`) and itself (job
/// `prometheus`, whose process metrics must not leak into the dashboard).
fn start_prometheus(target: &str) -> Prometheus {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {REPO}/grafana/prometheus/alerts.yml\n\
             scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: [\"{target}\"]\n\
             \x20 - job_name: prometheus\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _data: data,
    }
}

async fn query(
    client: &reqwest::Client,
    prometheus: &Prometheus,
    expr: &str,
) -> Option<Vec<Value>> {
    let response = client
        .get(format!("{}/api/v1/query", prometheus.url))
        .query(&[("query", expr)])
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"].as_array().cloned()
}

/// Traffic that gives every panel something to show; with `failing`, fetches
/// from an upstream that fails too.
async fn drive_traffic(app: &TestApp, ok: &MockServer, failing: Option<&MockServer>, round: usize) {
    let user = app
        .post_json(
            "/users",
            &json!({"name": format!("Load {round}"), "email": format!("load{round}@example.com")}),
        )
        .await;
    assert_eq!(user.status(), 201);
    let id = user.json::<Value>().await.unwrap()["id"].clone();
    for _ in 0..3 {
        app.get(&format!("/users/{id}")).await;
    }
    app.patch_json(&format!("/users/{id}"), &json!({"name": "Renamed"}))
        .await;
    app.get("/users?limit=5").await;
    app.get("/users/999999").await;
    app.post_json("/users", &json!({"name": ""})).await;
    for _ in 0..60 {
        app.client
            .get(app.url("/hello"))
            .header("x-forwarded-for", "10.66.66.66")
            .send()
            .await
            .unwrap();
    }
    let mut urls = vec![format!("{}/ok/{round}", ok.uri())];
    urls.extend(failing.map(|failing| format!("{}/fail", failing.uri())));
    let fetch = app.post_json("/fetch", &json!({ "urls": urls })).await;
    assert_eq!(fetch.status(), 200);
    app.get("/stats").await;
}

/// Every panel query of the dashboard, its variables filled in for
/// switchboard's job and every instance, by panel title; and the
/// annotation queries.
fn dashboard_queries() -> (Vec<(String, String)>, Vec<String>) {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REPO}/grafana/dashboards/switchboard.json")).unwrap(),
    )
    .unwrap();
    let fill = |expr: &str| {
        expr.replace("$job", "switchboard")
            .replace("$instance", ".*")
            .replace("$__rate_interval", "30s")
    };
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_owned();
            panels.push((title, fill(target["expr"].as_str().unwrap())));
        }
    }
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["expr"].as_str().map(fill))
        .collect();
    (panels, annotations)
}

/// Waits, driving traffic, until every query returns data; the queries
/// that still return none after 30 s.
async fn until_every_query_answers(
    client: &reqwest::Client,
    prometheus: &Prometheus,
    queries: &[(String, String)],
    mut traffic: impl AsyncFnMut(),
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut empty = Vec::new();
        for (title, expr) in queries {
            if query(client, prometheus, expr)
                .await
                .is_none_or(|r| r.is_empty())
            {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            return empty;
        }
        traffic().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every alerting rule as Prometheus evaluates it.
async fn alert_rules(client: &reqwest::Client, prometheus: &Prometheus) -> Vec<Value> {
    let rules: Value = json_of(client.get(format!("{}/api/v1/rules", prometheus.url))).await;
    rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

/// An alert's expression without its threshold: the series it compares.
fn compared(query: &str) -> String {
    let cut = [" > ", " == "]
        .iter()
        .filter_map(|op| query.rfind(op))
        .max()
        .unwrap_or_else(|| panic!("no threshold in {query}"));
    query[..cut].to_owned()
}

/// Whether the promtool tests hold a case where `alert` fires (its
/// `exp_alerts` lists an alert, not `[]`).
fn fires_in(tests: &str, alert: &str) -> bool {
    tests.split("alertname: ").skip(1).any(|case| {
        let mut lines = case.lines();
        lines.next().is_some_and(|l| l.trim() == alert)
            && lines.next().is_some_and(|l| l.trim() == "exp_alerts:")
            && lines
                .next()
                .is_some_and(|l| l.trim_start().starts_with("- exp_labels"))
    })
}

/// The exposition passes `promtool check metrics`.
async fn assert_promtool_accepts(app: &TestApp) {
    use std::io::Write;
    let exposition = app.get("/metrics").await.text().await.unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[actix_web::test]
async fn every_panel_and_alert_works_on_a_real_prometheus() {
    if !crate::requires::prometheus() {
        return;
    }
    let ok = MockServer::start().await;
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fine"))
        .mount(&ok)
        .await;
    let failing = MockServer::start().await;
    Mock::given(path("/fail"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    let hosts = vec![ok.address().to_string(), failing.address().to_string()];
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.fetch.allow_hosts = hosts;
        s.fetch.max_attempts = 2;
        s.fetch.breaker_threshold = 4;
        s.rate_limit.per_second = 200;
        s.rate_limit.burst = 50;
        s.clients.trust_proxy = true;
        // A client's share of the cap is an eighth: one request.
        s.server.max_in_flight = 8;
    })
    .await
    .unwrap();
    let prometheus = start_prometheus(app.address.trim_start_matches("http://"));
    let client = reqwest::Client::new();
    let (panels, annotations) = dashboard_queries();
    assert!(panels.len() >= 20, "{} panel queries", panels.len());

    // No fault injected: every panel shows data, zeros included.
    let mut round = 0;
    let empty = until_every_query_answers(&client, &prometheus, &panels, async || {
        drive_traffic(&app, &ok, None, round).await;
        round += 1;
    })
    .await;
    assert!(
        empty.is_empty(),
        "panels without data with no fault injected:\n{}",
        empty.join("\n")
    );
    // Only switchboard's series, though Prometheus exports the same
    // process metrics.
    for metric in ["process_resident_memory_bytes", "process_open_fds"] {
        let expr = format!("{metric}{{job=~\"switchboard\",instance=~\".*\"}}");
        let series = query(&client, &prometheus, &expr).await.unwrap();
        assert_eq!(series.len(), 1, "{expr}: {series:?}");
    }
    assert_promtool_accepts(&app).await;

    // Faults: fetches that fail, and crash drills (restarts must come after
    // the first scrapes for increase() to see them).
    // A client holding its share of the in-flight cap: its second request
    // at once is shed (503).
    let hold = || {
        app.client
            .get(app.url("/debug/slow/800"))
            .header("x-forwarded-for", "10.77.77.77")
            .send()
    };
    let (first, second) = tokio::join!(hold(), hold());
    let mut held = [first.unwrap().status(), second.unwrap().status()];
    held.sort();
    assert_eq!(held, [200, 503]);
    let started = Instant::now();
    let mut crashes = 0;
    while started.elapsed() < Duration::from_secs(8) {
        drive_traffic(&app, &ok, Some(&failing), round).await;
        if round % 2 == 1 && crashes < 4 {
            app.crash("cache").await;
            crashes += 1;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let annotated: Vec<(String, String)> = annotations
        .into_iter()
        .map(|expr| ("annotation".to_owned(), expr))
        .collect();
    let rules = alert_rules(&client, &prometheus).await;
    assert_eq!(rules.len(), 9);
    // What each alert compares exists in switchboard's own series.
    let compared: Vec<(String, String)> = rules
        .iter()
        .map(|rule| {
            let name = rule["name"].as_str().unwrap();
            (
                format!("alert {name}"),
                compared(rule["query"].as_str().unwrap()),
            )
        })
        .collect();
    let every_query = [panels, annotated, compared].concat();
    let empty = until_every_query_answers(&client, &prometheus, &every_query, async || {
        drive_traffic(&app, &ok, Some(&failing), round).await;
        round += 1;
    })
    .await;
    assert!(
        empty.is_empty(),
        "queries without data with faults injected:\n{}",
        empty.join("\n")
    );

    let rules = alert_rules(&client, &prometheus).await;
    let tests =
        std::fs::read_to_string(format!("{REPO}/grafana/prometheus/alerts_test.yml")).unwrap();
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        let name = rule["name"].as_str().unwrap();
        assert!(
            fires_in(&tests, name),
            "{name} has no case in alerts_test.yml where it fires"
        );
    }
    let storm = rules
        .iter()
        .find(|r| r["name"] == "SwitchboardActorRestartStorm")
        .unwrap();
    assert!(
        matches!(storm["state"].as_str(), Some("pending" | "firing")),
        "restart storm after repeated crash drills: {storm}"
    );
}
