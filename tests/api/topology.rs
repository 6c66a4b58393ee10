//! Three instances on one PostgreSQL database and one Redis, behind a real
//! HAProxy configured by `deploy/haproxy.cfg` (health-checking `/ready`):
//! one client's rate limit holds exactly across the three; a write through
//! one is read fresh through the others once its invalidation arrives (the
//! delay is measured under load); a rolling restart under a steady load
//! fails no request; `kill -9` of one instance fails only what was in
//! flight on it; no acknowledged write is lost.
//!
//! Skips, saying so, without `haproxy`, PostgreSQL or Redis, unless
//! `SWITCHBOARD_REQUIRE_HAPROXY`, `_POSTGRES` or `_REDIS` is 1 (CI sets them
//! all and installs HAProxy).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::helpers::{slack, Backend, TestDatabase};
use crate::process_app::ProcessApp;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three instances and the HAProxy in front of them.
struct Topology {
    db_url: String,
    ports: [u16; 3],
    settings: Vec<(&'static str, String)>,
    instances: [Option<ProcessApp>; 3],
    haproxy: Child,
    /// HAProxy's log lines so far.
    proxy_log: Arc<Mutex<Vec<String>>>,
    front: String,
}

impl Topology {
    async fn start(db: &TestDatabase, settings: &[(&'static str, &str)]) -> Self {
        let ports = [free_port(), free_port(), free_port()];
        let mut topology = Self {
            db_url: db.url(),
            ports,
            settings: settings
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect(),
            instances: [None, None, None],
            haproxy: Command::new("true").spawn().unwrap(),
            proxy_log: Arc::default(),
            front: String::new(),
        };
        for i in 0..3 {
            topology.start_instance(i);
        }
        let front = free_port();
        topology.haproxy = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(format!("{REPO}/deploy/haproxy.cfg"))
            .env("HAPROXY_BIND", format!("127.0.0.1:{front}"))
            .env("SWITCHBOARD_A", format!("127.0.0.1:{}", ports[0]))
            .env("SWITCHBOARD_B", format!("127.0.0.1:{}", ports[1]))
            .env("SWITCHBOARD_C", format!("127.0.0.1:{}", ports[2]))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let stdout = topology.haproxy.stdout.take().expect("stdout");
        let lines = Arc::clone(&topology.proxy_log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        topology.front = format!("http://127.0.0.1:{front}");
        topology.until_all_up().await;
        topology
    }

    fn start_instance(&mut self, i: usize) {
        let bind = format!("127.0.0.1:{}", self.ports[i]);
        let mut vars: Vec<(&str, &str)> = vec![
            ("SWITCHBOARD_BIND", bind.as_str()),
            ("SWITCHBOARD_TRUST_PROXY", "true"),
            ("SWITCHBOARD_RATE_LIMIT_BACKEND", "redis"),
            ("SWITCHBOARD_SHUTDOWN_DELAY_MS", "1500"),
        ];
        vars.extend(self.settings.iter().map(|(k, v)| (*k, v.as_str())));
        self.instances[i] = Some(ProcessApp::start(&self.db_url, &vars));
    }

    fn instance(&self, i: usize) -> &ProcessApp {
        self.instances[i].as_ref().expect("running")
    }

    /// Waits until HAProxy sends requests to every instance.
    async fn until_all_up(&self) {
        let client = reqwest::Client::new();
        let mut seen = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while seen.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "HAProxy never balanced over all three"
            );
            // Each instance answers /ready with its own database pool; the
            // access logs tell which one answered instead.
            if let Ok(response) = client.get(format!("{}/hello", self.front)).send().await {
                if response.status() == 200 {
                    let id = response.headers()["x-request-id"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    for i in 0..3 {
                        if self
                            .instance(i)
                            .logged("request")
                            .iter()
                            .any(|e| e["request_id"] == id.as_str())
                        {
                            seen.insert(i);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, wait for the drain, start again on the same port, and wait
    /// until HAProxy sends it requests again.
    async fn restart(&mut self, i: usize) {
        let mut stopping = self.instances[i].take().unwrap();
        stopping.signal(Signal::SIGTERM);
        assert!(stopping.wait_exit(Duration::from_secs(30)).success());
        self.start_instance(i);
        self.until_all_up().await;
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}

/// A client from its own loopback address.
fn client_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A request that comes without an id gets one at HAProxy: its answer
/// carries it, HAProxy's log line shows it, and so does the access line of
/// the instance that served it.
#[actix_web::test]
async fn haproxy_and_switchboard_log_the_same_request_id() {
    if !(crate::requires::haproxy() && crate::requires::redis()) {
        return;
    }
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let topology = Topology::start(&db, &[]).await;
    let response = reqwest::get(format!("{}/hello/joined", topology.front))
        .await
        .unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .map(|id| id.to_str().unwrap().to_owned());
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    let id = id.expect("an X-Request-Id");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "made by HAProxy: {id}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let proxy_line = loop {
        let lines = topology.proxy_log.lock().unwrap().clone();
        if let Some(line) = lines.into_iter().find(|l| l.contains("/hello/joined")) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy logged no line for the request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(proxy_line.contains(&format!("{{{id}}}")), "{proxy_line}");
    let served_by = (0..3)
        .filter(|&i| {
            topology
                .instance(i)
                .logged("request")
                .iter()
                .any(|e| e["request_id"] == id.as_str())
        })
        .count();
    assert_eq!(served_by, 1, "one instance logged {id}");
}

#[actix_web::test]
async fn one_clients_rate_limit_is_exact_across_three_instances() {
    if !(crate::requires::haproxy() && crate::requires::redis()) {
        return;
    }
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let topology = Topology::start(
        &db,
        &[
            ("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "1"),
            ("SWITCHBOARD_RATE_LIMIT_BURST", "10"),
        ],
    )
    .await;
    // A client of its own: its key in the shared Redis is fresh.
    let id = uuid::Uuid::new_v4();
    let [a, b, ..] = *id.as_bytes();
    let client = client_from(IpAddr::from([127, 1, a, b.max(1)]));
    let mut statuses = Vec::new();
    let started = Instant::now();
    let mut first_answered = None;
    let mut last_sent = Duration::ZERO;
    for _ in 0..20 {
        last_sent = started.elapsed();
        let response = client
            .get(format!("{}/hello", topology.front))
            .send()
            .await
            .unwrap();
        first_answered.get_or_insert(started.elapsed());
        // A 200 without `RateLimit` failed open: Redis did not answer in
        // time (a busy machine), so no decision of the shared limiter.
        let decided = response.headers().contains_key("ratelimit");
        statuses.push((response.status().as_u16(), decided));
    }
    let last_answered = started.elapsed();
    // The burst, and one more for each second that passed between the
    // first decision and the last (bounded by when those requests were
    // sent and answered: a busy machine widens the bounds, not the count).
    let least = 10
        + last_sent
            .saturating_sub(first_answered.unwrap())
            .as_secs_f64()
            .floor() as usize;
    let most = 10 + last_answered.as_secs_f64().ceil() as usize;
    let allowed = statuses.iter().filter(|s| **s == (200, true)).count();
    let failed_open = statuses.iter().filter(|s| **s == (200, false)).count();
    assert!(
        (least.saturating_sub(failed_open)..=most).contains(&allowed),
        "{allowed} allowed ({failed_open} more failed open), {least} to {most} expected, \
         however the three share it: {statuses:?}"
    );
    assert!(statuses[..10].iter().all(|s| s.0 == 200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| s.0 == 200 || *s == (429, true)),
        "{statuses:?}"
    );
}

/// What a steady load through the balancer saw.
#[derive(Default)]
struct Seen {
    answered: usize,
    failed: Vec<String>,
    acknowledged: Vec<Value>,
}

/// `lanes` loops of creates and reads through `front` until `stop`, each
/// from a client address of its own.
fn steady_load(
    front: &str,
    lanes: u8,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..lanes)
        .map(|lane| {
            let (front, stop, seen) = (front.to_owned(), stop.clone(), seen.clone());
            let client = client_from(IpAddr::from([127, 0, 9, lane + 1]));
            tokio::spawn(async move {
                let mut n = 0;
                let mut last = None;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = match (n % 4, &last) {
                        (0, Some(id)) => client.get(format!("{front}/users/{id}")).send().await,
                        _ => {
                            let email = format!("lane{lane}-{n}@example.com");
                            let body = json!({"name": "Load", "email": email});
                            client
                                .post(format!("{front}/users"))
                                .json(&body)
                                .send()
                                .await
                        }
                    };
                    let outcome = match sent {
                        Ok(response) if response.status() == 201 => {
                            let user: Value = response.json().await.unwrap();
                            last = Some(user["id"].clone());
                            Ok(Some(user))
                        }
                        Ok(response) if response.status() == 200 => Ok(None),
                        Ok(response) => Err(format!("status {}", response.status())),
                        Err(err) => Err(err.to_string()),
                    };
                    let mut seen = seen.lock().unwrap();
                    seen.answered += 1;
                    match outcome {
                        Ok(created) => seen.acknowledged.extend(created),
                        Err(failure) => seen.failed.push(failure),
                    }
                }
            })
        })
        .collect()
}

async fn stop_load(stop: &AtomicBool, lanes: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for lane in lanes {
        lane.await.unwrap();
    }
}

#[actix_web::test]
async fn three_instances_behind_haproxy_restart_and_fail_without_losing_anything() {
    if !(crate::requires::haproxy() && crate::requires::redis()) {
        return;
    }
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let mut topology = Topology::start(&db, &[("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "0")]).await;
    let client = reqwest::Client::new();

    // Invalidation, under a steady load through the balancer: written
    // through A, read through B and C directly.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let lanes = steady_load(&topology.front, 8, &stop, &seen);
    let created: Value = client
        .post(topology.instance(0).url("/users"))
        .json(&json!({"name": "Version 0", "email": "spread@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/users/{}", created["id"]);
    // Well under the caches' TTL, and wider on a slow machine.
    let stale_for = slack(&topology.instance(1).url("/hello"), Duration::from_secs(2)).await;
    let mut delays = Vec::new();
    for version in 1..=50 {
        for reader in [1, 2] {
            client
                .get(topology.instance(reader).url(&path))
                .send()
                .await
                .unwrap();
        }
        let name = format!("Version {version}");
        let renamed = client
            .patch(topology.instance(0).url(&path))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(renamed.status(), 200);
        let written = Instant::now();
        for reader in [1, 2] {
            let url = topology.instance(reader).url(&path);
            loop {
                let seen: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                if seen["name"] == name.as_str() {
                    break;
                }
                assert!(written.elapsed() < stale_for, "stale for {stale_for:?}");
            }
            delays.push(written.elapsed());
            let again: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            assert_eq!(again["name"], name.as_str(), "never stale once heard");
        }
    }
    delays.sort();
    let quantile = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    eprintln!(
        "invalidation delay under load ({} reads): p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        quantile(0.5),
        quantile(0.99),
        delays[delays.len() - 1]
    );

    // A rolling restart of all three under that load: nothing fails.
    for i in 0..3 {
        topology.restart(i).await;
    }
    let (answered, failed) = {
        let seen = seen.lock().unwrap();
        (seen.answered, seen.failed.clone())
    };
    assert!(
        failed.is_empty(),
        "a rolling restart failed {} of {answered}: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    eprintln!("rolling restart under load: {answered} requests, 0 failed");

    // kill -9 of one instance: only what was in flight on it fails.
    let before = seen.lock().unwrap().answered;
    topology.instance(1).signal(Signal::SIGKILL);
    // Until the other two have carried a good deal of load past the kill.
    let carried = crate::helpers::eventually(Duration::from_secs(30), || async {
        seen.lock().unwrap().answered - before > 300
    })
    .await;
    assert!(carried, "the others took the load");
    stop_load(&stop, lanes).await;
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    let after_kill = seen.answered - before;
    assert!(
        seen.failed.len() <= 8,
        "at most one request in flight per lane (8) on the killed instance: {:?}",
        seen.failed
    );
    eprintln!(
        "kill -9 under load: {after_kill} requests after the kill, {} failed",
        seen.failed.len()
    );
    assert!(after_kill > 100, "the others took the load: {after_kill}");

    // Every acknowledged write is there.
    for user in &seen.acknowledged {
        let url = format!("{}/users/{}", topology.front, user["id"]);
        let read = client.get(&url).send().await.unwrap();
        assert_eq!(read.status(), 200, "acknowledged, so kept: {user}");
    }
}
