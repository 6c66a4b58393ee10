//! The dashboards and alerts, proven on a real Prometheus: switchboard runs,
//! Prometheus scrapes it every second, traffic exercises every panel (reads,
//! writes, 4xx, 429, fetches that succeed and fail, crash drills), then every
//! panel query of every dashboard must return data, every alert rule must
//! evaluate cleanly, and the restart-storm alert must be pending or firing.
//! Skips, saying so, without a `prometheus` binary, unless
//! SWITCHBOARD_REQUIRE_PROMETHEUS=1 (set by CI, which installs it).

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

fn prometheus_installed() -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert_ne!(
            std::env::var("SWITCHBOARD_REQUIRE_PROMETHEUS").as_deref(),
            Ok("1"),
            "Prometheus is required but not installed"
        );
        eprintln!("skipping: no prometheus binary (apt-get install prometheus)");
    }
    found
}

fn start_prometheus(target: &str) -> Prometheus {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {REPO}/grafana/prometheus/alerts.yml\n\
             scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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

/// Traffic that gives every panel something to show.
async fn drive_traffic(app: &TestApp, ok: &MockServer, failing: &MockServer, round: usize) {
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
    let urls =
        json!({"urls": [format!("{}/ok/{round}", ok.uri()), format!("{}/fail", failing.uri())]});
    assert_eq!(app.post_json("/fetch", &urls).await.status(), 200);
    app.get("/stats").await;
}

#[actix_web::test]
async fn every_panel_and_alert_works_on_a_real_prometheus() {
    if !prometheus_installed() {
        return;
    }
    let ok = MockServer::start().await;
    Mock::given(path("/fail"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&ok)
        .await;
    let failing = MockServer::start().await;
    Mock::given(path("/fail"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fine"))
        .mount(&ok)
        .await;
    let hosts = vec![ok.address().to_string(), failing.address().to_string()];
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.fetch_allow_hosts = hosts;
        s.fetch_max_attempts = 2;
        s.fetch_breaker_threshold = 4;
        s.rate_limit_per_second = 200;
        s.rate_limit_burst = 50;
        s.trust_proxy = true;
    })
    .await
    .unwrap();
    let prometheus = start_prometheus(app.address.trim_start_matches("http://"));
    let client = reqwest::Client::new();

    // Restarts must happen after the first scrape for increase() to see them.
    let first_scrape = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    while query(&client, &prometheus, "up == 1")
        .await
        .is_none_or(|r| r.is_empty())
    {
        assert!(
            Instant::now() < first_scrape,
            "Prometheus never scraped switchboard"
        );
        drive_traffic(&app, &ok, &failing, round).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    let crashes_from = round;
    while started.elapsed() < Duration::from_secs(8) {
        drive_traffic(&app, &ok, &failing, round).await;
        if (round - crashes_from) % 2 == 1 && round - crashes_from < 9 {
            app.crash("cache").await;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    if Command::new("promtool").arg("--version").output().is_ok() {
        let exposition = app.get("/metrics").await.text().await.unwrap();
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
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

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REPO}/grafana/dashboards/switchboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            exprs.push((
                panel["title"].as_str().unwrap().to_owned(),
                expr.replace("$instance", ".*")
                    .replace("$__rate_interval", "30s"),
            ));
        }
    }
    assert!(exprs.len() >= 20, "{} panel queries", exprs.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut empty: Vec<String> = Vec::new();
    loop {
        empty.clear();
        for (title, expr) in &exprs {
            if query(&client, &prometheus, expr)
                .await
                .is_none_or(|r| r.is_empty())
            {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        drive_traffic(&app, &ok, &failing, round).await;
        round += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    let rules: Value = json_of(client.get(format!("{}/api/v1/rules", prometheus.url))).await;
    let rules: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules.len(), 7);
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
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
