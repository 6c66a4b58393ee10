//! The real binary: acknowledged writes kept when switchboard is killed (a
//! crash of PostgreSQL itself is in `storage.rs`), graceful shutdown on SIGTERM,
//! start-up refusal of bad settings, and the log lines operators rely on.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::helpers::{eventually, json_of, Backend, TestDatabase};
use crate::process_app::ProcessApp;

async fn acknowledged_writes_survive_switchboard_killed(db: TestDatabase) {
    let client = reqwest::Client::new();
    let app = ProcessApp::start(&db.url(), &[]);
    let mut acknowledged = Vec::new();
    for i in 0..25 {
        let response = client
            .post(app.url("/users"))
            .json(&json!({"name": format!("Durable {i}"), "email": format!("d{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        acknowledged.push(response.json::<Value>().await.unwrap());
    }
    let first = acknowledged[0]["id"].clone();
    let patched: Value = json_of(
        client
            .patch(app.url(&format!("/users/{first}")))
            .json(&json!({"name": "Renamed"})),
    )
    .await;
    acknowledged[0] = patched;
    let deleted = acknowledged.pop().unwrap();
    let response = client
        .delete(app.url(&format!("/users/{}", deleted["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    app.signal(Signal::SIGKILL);
    drop(app);

    let app = ProcessApp::start(&db.url(), &[]);
    for user in &acknowledged {
        let read: Value = json_of(client.get(app.url(&format!("/users/{}", user["id"])))).await;
        assert_eq!(&read, user);
    }
    let response = client
        .get(app.url(&format!("/users/{}", deleted["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "an acknowledged delete stays deleted"
    );
}

/// A user one client created, as last acknowledged; the name of a patch
/// of it that was sent and not answered (it may or may not have been
/// applied when the process died); and how far a delete of it went.
struct Written {
    user: Value,
    unanswered: Option<String>,
    deleted: Deletion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deletion {
    NotSent,
    /// Sent and not answered: the user may or may not be gone.
    Unanswered,
    Acknowledged,
}

/// Many clients creating, patching and deleting users at once: their writes
/// go in batches (SQLite's group commit; PostgreSQL's multi-row inserts,
/// updates and deletes), and a kill in the middle of them loses none that
/// was acknowledged.
async fn acknowledged_batched_writes_survive_switchboard_killed(db: TestDatabase) {
    const CLIENTS: usize = 32;
    // SQLite: one transaction for any writes; PostgreSQL: a statement for
    // each kind.
    let shapes: &[&str] = match db {
        TestDatabase::Sqlite(_) => &["AnyWrite"],
        TestDatabase::Postgres { .. } => &["Insert", "Update", "Delete"],
    };
    let unlimited = [
        ("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "0"),
        ("RUST_LOG", "info,switchboard::db=debug"),
    ];
    let app = ProcessApp::start(&db.url(), &unlimited);
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Written>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (base, written) = (app.url(""), written.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in 0.. {
                    let body =
                        json!({"name": "Batched", "email": format!("b{client}-{n}@example.com")});
                    let Ok(response) = http.post(format!("{base}/users")).json(&body).send().await
                    else {
                        break;
                    };
                    if response.status() != 201 {
                        break;
                    }
                    let Ok(user) = response.json::<Value>().await else {
                        break;
                    };
                    let id = user["id"].clone();
                    let name = format!("Patched {client}-{n}");
                    let index = {
                        let mut written = written.lock().unwrap();
                        let unanswered = Some(name.clone());
                        written.push(Written {
                            user,
                            unanswered,
                            deleted: Deletion::NotSent,
                        });
                        written.len() - 1
                    };
                    let patched = http
                        .patch(format!("{base}/users/{id}"))
                        .json(&json!({"name": name}))
                        .send()
                        .await;
                    let Ok(patched) = patched else { break };
                    if patched.status() != 200 {
                        break;
                    }
                    let Ok(patched) = patched.json::<Value>().await else {
                        break;
                    };
                    written.lock().unwrap()[index] = Written {
                        user: patched,
                        unanswered: None,
                        deleted: Deletion::NotSent,
                    };
                    if n % 2 == 1 {
                        continue;
                    }
                    written.lock().unwrap()[index].deleted = Deletion::Unanswered;
                    let deleted = http.delete(format!("{base}/users/{id}")).send().await;
                    match deleted {
                        Ok(deleted) if deleted.status() == 204 => {
                            written.lock().unwrap()[index].deleted = Deletion::Acknowledged;
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    let in_batches = |shape: &str| {
        app.logged("a batch")
            .iter()
            .filter(|e| e["queries"].as_u64() > Some(1) && e["shape"] == shape)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            written.lock().unwrap().len() >= 500
                && shapes.iter().all(|shape| in_batches(shape) >= 5)
        })
        .await,
        "writes went in batches"
    );

    app.signal(Signal::SIGKILL);
    drop(app);
    for client in clients {
        client.await.unwrap();
    }

    let written = std::mem::take(&mut *written.lock().unwrap());
    let app = ProcessApp::start(&db.url(), &unlimited);
    let client = reqwest::Client::new();
    for Written {
        user,
        unanswered,
        deleted,
    } in &written
    {
        let response = client
            .get(app.url(&format!("/users/{}", user["id"])))
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            assert_ne!(
                *deleted,
                Deletion::NotSent,
                "{user} is gone, and no delete was sent"
            );
            continue;
        }
        assert_ne!(
            *deleted,
            Deletion::Acknowledged,
            "{user} was deleted, and is back"
        );
        let read: Value = response.json().await.unwrap();
        let patched_unanswered = unanswered
            .as_ref()
            .is_some_and(|name| read["name"] == *name);
        assert!(
            read == *user || patched_unanswered,
            "{read} is neither {user} nor patched to {unanswered:?}"
        );
    }
}

/// Requests in flight on the server, as its `/metrics` says.
async fn in_flight(app: &ProcessApp) -> f64 {
    crate::helpers::scrape(&app.url("/metrics"), "http_requests_in_flight ")
        .await
        .unwrap_or(0.0)
}

/// SIGTERM: the request in flight is finished, new connections are
/// refused, the actors stop in order (the workers' first, then the others,
/// the last started first, the metrics last) and the process exits 0.
async fn sigterm_drains_requests_in_flight_then_exits_zero(db: TestDatabase) {
    let mut app = ProcessApp::start(&db.url(), &[("SWITCHBOARD_CHAOS", "true")]);
    let slow = tokio::spawn(reqwest::get(app.url("/debug/slow/5000")));
    assert!(
        eventually(Duration::from_secs(5), || async {
            in_flight(&app).await >= 1.0
        })
        .await,
        "the slow request is in flight"
    );
    app.signal(Signal::SIGTERM);
    app.wait_for_log(
        "shutting down: readiness is 503, draining requests in flight",
        |_| true,
    );
    let refused = eventually(Duration::from_secs(2), || async {
        reqwest::get(app.url("/hello")).await.is_err()
    })
    .await;
    assert!(refused, "new connections are refused while draining");
    assert!(
        !slow.is_finished(),
        "the slow request was still in flight then"
    );

    let response = slow.await.unwrap().expect("the slow request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["slept_ms"], 5000);
    let status = app.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let stopped: Vec<String> = app
        .logged("actor stopped")
        .iter()
        .map(|e| e["actor"].as_str().unwrap_or_default().to_owned())
        .collect();
    let (workers, others) = stopped.split_at(6);
    let mut workers = workers.to_vec();
    workers.sort();
    assert_eq!(
        workers,
        ["cache", "cache", "db", "db", "rate_limiter", "rate_limiter"],
        "{stopped:?}"
    );
    let others_in_order: &[&str] = match db {
        TestDatabase::Sqlite(_) => &["db_writer", "fetcher", "metrics"],
        TestDatabase::Postgres { .. } => &["invalidator", "fetcher", "metrics"],
    };
    assert_eq!(others, others_in_order, "{stopped:?}");
    assert_eq!(app.logged("switchboard stopped").len(), 1);
}

on_both_backends!(
    databases: acknowledged_writes_survive_switchboard_killed,
    acknowledged_batched_writes_survive_switchboard_killed,
    sigterm_drains_requests_in_flight_then_exits_zero
);

/// SIGINT stops it as SIGTERM does, and the shutdown timeout cuts off a
/// request that would outlast it: the process exits 0 on time.
#[actix_web::test]
async fn sigint_stops_it_and_the_shutdown_timeout_cuts_off_a_longer_request() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let mut app = ProcessApp::start(
        &db.url(),
        &[
            ("SWITCHBOARD_CHAOS", "true"),
            ("SWITCHBOARD_SHUTDOWN_TIMEOUT_SECONDS", "1"),
        ],
    );
    let slow = tokio::spawn(reqwest::get(app.url("/debug/slow/30000")));
    assert!(
        eventually(Duration::from_secs(5), || async {
            in_flight(&app).await >= 1.0
        })
        .await,
        "the slow request is in flight"
    );
    let signalled = Instant::now();
    app.signal(Signal::SIGINT);
    let status = app.wait_exit(Duration::from_secs(15));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}, not after the request's 30 s"
    );
    assert!(
        slow.await.unwrap().is_err(),
        "the cut-off request gets no answer"
    );
    assert_eq!(app.logged("switchboard stopped").len(), 1);
}

#[actix_web::test]
async fn an_actor_given_up_escalates_and_the_process_exits_non_zero() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let mut app = ProcessApp::start(
        &db.url(),
        &[
            ("SWITCHBOARD_CHAOS", "true"),
            ("SWITCHBOARD_SHUTDOWN_DELAY_MS", "1500"),
        ],
    );
    let client = reqwest::Client::new();
    // More than five restarts within a minute: the cache is given up.
    for _ in 0..6 {
        let drill = client.post(app.url("/debug/crash/cache")).send().await;
        assert_eq!(drill.unwrap().status(), 202);
    }
    let escalating = app.wait_for_log("escalating: an actor was given up; draining, then exiting non-zero so that a fresh process replaces this one", |e| e["actor"] == "cache");
    assert_eq!(escalating["level"], "ERROR");
    // Draining: liveness and readiness say so while requests are served.
    let health = client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let ready = client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        client.get(app.url("/hello")).send().await.unwrap().status(),
        200
    );

    let status = app.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(70),
        "exits non-zero to be replaced: {status:?}"
    );
    assert_eq!(
        app.logged("switchboard stopped").len(),
        1,
        "it drained and stopped in order"
    );
}

#[test]
fn passwords_never_reach_help_errors_or_logs() {
    let secret = "s3cret-pw";
    let help = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--help")
        .env(
            "DATABASE_URL",
            format!("postgres://app:{secret}@127.0.0.1:1/x"),
        )
        .env(
            "SWITCHBOARD_REDIS_URL",
            format!("redis://:{secret}@127.0.0.1:1"),
        )
        .output()
        .expect("run switchboard --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("DATABASE_URL") && !help.contains(secret),
        "{help}"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("DATABASE_URL", format!("mysql://app:{secret}@db/x"))
        .output()
        .expect("run switchboard");
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("DATABASE_URL") && stderr.contains("app:***@db"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "{stderr}");

    let unreachable = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env(
            "DATABASE_URL",
            format!("postgres://app:{secret}@127.0.0.1:1/x"),
        )
        .env("SWITCHBOARD_BIND", "127.0.0.1:0")
        .output()
        .expect("run switchboard");
    assert!(!unreachable.status.success());
    let said =
        String::from_utf8_lossy(&unreachable.stdout) + String::from_utf8_lossy(&unreachable.stderr);
    assert!(said.contains("cannot connect to PostgreSQL"), "{said}");
    assert!(!said.contains(secret), "{said}");
}

/// Runs the binary to its exit; fails (after killing it) if it is still
/// running after `within`, as a server that started despite a bad setting
/// would be.
fn run_to_exit(mut command: Command, within: Duration) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchboard");
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchboard was still running {within:?} after start: it did not refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Variables, flags, and what the refusal says.
type Refusal<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

#[test]
fn bad_settings_stop_start_up_with_exit_code_2_naming_the_setting_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let misspelt = dir.path().join("misspelt.toml");
    std::fs::write(&misspelt, "wrokers = 3\n").unwrap();
    let misspelt = misspelt.to_str().unwrap();
    let database = format!("sqlite://{}", dir.path().join("never.db").display());
    let cases: [Refusal; 7] = [
        (
            &[("SWITCHBOARD_WORKERS", "many")],
            &[],
            r#"invalid setting SWITCHBOARD_WORKERS (environment): "many" is not a whole number"#,
        ),
        (
            &[],
            &["--workers", "x"],
            r#"invalid setting SWITCHBOARD_WORKERS (flag --workers): "x" is not a whole number"#,
        ),
        (
            &[("SWITCHBOARD_BIND", "not-an-address")],
            &[],
            r#"invalid setting SWITCHBOARD_BIND (environment): "not-an-address" is not an address"#,
        ),
        (
            &[("SWITCHBOARD_LOG_FORMAT", "xml")],
            &[],
            "SWITCHBOARD_LOG_FORMAT (environment)",
        ),
        (
            &[("DATABASE_URL", "mysql://db/x")],
            &[],
            "DATABASE_URL (environment)",
        ),
        (
            &[("SWITCHBOARD_RATE_LIMIT_BACKEND", "memcached")],
            &[],
            "SWITCHBOARD_RATE_LIMIT_BACKEND (environment)",
        ),
        (
            &[("SWITCHBOARD_CONFIG", misspelt)],
            &[],
            r#"unknown setting "wrokers""#,
        ),
    ];
    for (vars, args, said) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .env("SWITCHBOARD_BIND", "127.0.0.1:0")
            .env("DATABASE_URL", &database)
            .envs(vars.iter().copied())
            .args(args);
        let (code, stderr) = run_to_exit(command, Duration::from_secs(20));
        assert_eq!(code, Some(2), "{vars:?} {args:?}: {stderr}");
        assert!(
            stderr.contains(said),
            "{vars:?} {args:?} should say {said:?}: {stderr}"
        );
    }
    assert!(
        !dir.path().join("never.db").exists(),
        "no database was created"
    );
}

/// The workers a process reports when it starts listening.
fn workers_of(command: Command) -> u64 {
    let app = ProcessApp::spawn(command);
    app.wait_for_log("listening", |_| true)["workers"]
        .as_u64()
        .expect("workers in the listening line")
}

#[test]
fn settings_layer_toml_below_environment_below_flags() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("layers.db").display());
    let toml = db.path().join("switchboard.toml");
    std::fs::write(&toml, "workers = 5\n").unwrap();
    let layered = |workers_env: Option<&str>, args: &[&str]| {
        let mut command =
            ProcessApp::command(&url, &[("SWITCHBOARD_CONFIG", toml.to_str().unwrap())]);
        command.env_remove("SWITCHBOARD_WORKERS").args(args);
        if let Some(workers) = workers_env {
            command.env("SWITCHBOARD_WORKERS", workers);
        }
        workers_of(command)
    };
    assert_eq!(layered(None, &[]), 5, "the file over the default");
    assert_eq!(layered(Some("4"), &[]), 4, "the environment over the file");
    assert_eq!(
        layered(Some("4"), &["--workers", "3"]),
        3,
        "a flag over both"
    );
}

#[actix_web::test]
async fn zero_per_second_turns_rate_limiting_off() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = ProcessApp::start(
        &db.url(),
        &[
            ("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "0"),
            ("SWITCHBOARD_RATE_LIMIT_BURST", "1"),
        ],
    );
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let response = client.get(app.url("/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("ratelimit-policy").is_none());
    }
}

#[actix_web::test]
async fn operators_see_structured_lines_for_requests_and_restarts() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = ProcessApp::start(&db.url(), &[("SWITCHBOARD_CHAOS", "true")]);
    app.wait_for_log("actor started", |e| {
        e["actor"] == "db" && e["restarts"] == 0
    });

    let client = reqwest::Client::new();
    let response = client
        .get(app.url("/users/77"))
        .header("x-request-id", "log-check-1")
        .header("user-agent", "ops-check/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body_length = response.bytes().await.unwrap().len();
    assert_eq!(
        client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = client
        .post(app.url("/debug/crash/db"))
        .header("x-request-id", "drill-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    app.wait_for_log("actor started", |e| {
        e["actor"] == "db" && e["restarts"] == 1
    });

    let request = app
        .logged("request")
        .into_iter()
        .find(|e| e["request_id"] == "log-check-1")
        .expect("a request line");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["route"], "/users/{id}");
    assert_eq!(request["path"], "/users/77");
    assert_eq!(request["status"], 404);
    assert_eq!(request["client"], "127.0.0.1");
    assert_eq!(request["user_agent"], "ops-check/1.0");
    assert_eq!(request["bytes"], body_length);
    let latency = request["latency_ms"].as_f64().unwrap();
    assert_eq!(latency, (latency * 1000.0).round() / 1000.0, "to the µs");
    assert!(
        app.logged("request")
            .iter()
            .all(|e| e["route"] != "/health"),
        "probes are logged at DEBUG, not INFO"
    );

    // The drill crashes every database actor: each worker's (two workers)
    // and SQLite's writer, each on its own thread, so their lines come in
    // any order. Each names its instance and the request that caused it.
    let failed = app.wait_for_logs("actor failed", 3);
    let mut crashed: Vec<(&str, u64)> = failed
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["shard"].as_u64().unwrap()))
        .collect();
    crashed.sort();
    assert_eq!(crashed, [("db", 0), ("db", 1), ("db_writer", 0)]);
    for failure in &failed {
        assert!(failure["reason"].as_str().unwrap().contains("crash drill"));
        assert_eq!(failure["request_id"], "drill-1", "{failure}");
    }
    let restarting = app.logged("actor restarting");
    assert!(restarting[0]["actor"].as_str().unwrap().starts_with("db"));
    assert!(restarting[0]["shard"].is_u64());
    assert_eq!(restarting[0]["restarts"], 1);
    assert!(restarting[0]["delay_ms"].as_u64().unwrap() > 0);
}

#[actix_web::test]
async fn a_500s_cause_is_logged_under_its_request_id() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = ProcessApp::start(&db.url(), &[]);
    // A fault no client can cause: the table is gone.
    let path = db.url().trim_start_matches("sqlite://").to_owned();
    let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(&path).unwrap();
    diesel::connection::SimpleConnection::batch_execute(&mut conn, "DROP TABLE users").unwrap();

    let response = reqwest::Client::new()
        .post(app.url("/users"))
        .header("x-request-id", "fault-1")
        .json(&json!({"name": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(!body.contains("users"), "no internals in the body: {body}");
    let cause = app.wait_for_log("database error", |e| e["request_id"] == "fault-1");
    assert_eq!(cause["level"], "ERROR");
    assert!(
        cause["reason"].as_str().unwrap().contains("no such table"),
        "{cause}"
    );
    app.wait_for_log("request", |e| {
        e["request_id"] == "fault-1" && e["status"] == 500
    });
}

/// A PostgreSQL that returns from a commit before flushing it (here, set
/// so for the test's database) can lose acknowledged writes in a crash of
/// its own: switchboard serves, and says so at start-up; a flushing one
/// gets no such line.
#[actix_web::test]
async fn a_postgres_that_commits_without_flushing_is_warned_of_at_start_up() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    const WARNING: &str = "PostgreSQL commits without flushing: a write switchboard acknowledged is lost if the database server crashes; set synchronous_commit = on for its role or database";

    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let TestDatabase::Postgres { name } = &db else {
        unreachable!()
    };
    let flushing = ProcessApp::start(&db.url(), &[]);
    assert!(flushing.logged(WARNING).is_empty());
    drop(flushing);

    let mut admin = AsyncPgConnection::establish(crate::helpers::POSTGRES_ADMIN_URL)
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    let app = ProcessApp::start(&db.url(), &[]);
    let warned = app.logged(WARNING);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0]["level"], "WARN");
    assert_eq!(warned[0]["synchronous_commit"], "off");
    let ready = reqwest::get(app.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200, "it serves");
}

#[test]
fn pretty_logs_carry_no_colour_codes_into_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("SWITCHBOARD_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", dir.path().join("db.sqlite"))
        .env("SWITCHBOARD_LOG_FORMAT", "pretty")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start switchboard");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let listening = line.contains("listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains("listening")), "{seen:?}");
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "no ANSI escape codes when stdout is not a terminal: {seen:?}"
    );
}

/// With its limiter failing (a Redis that is not there), every request is
/// let through, and each worker warns at most once a second, whatever the
/// traffic: a broken dependency must not flood the log.
#[actix_web::test]
async fn a_failing_limiter_lets_requests_through_and_warns_at_most_once_a_second() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let nothing = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = ProcessApp::start(
        &db.url(),
        &[
            ("SWITCHBOARD_RATE_LIMIT_BACKEND", "redis"),
            ("SWITCHBOARD_REDIS_URL", &format!("redis://{nothing}")),
            ("SWITCHBOARD_RATE_LIMIT_BURST", "1"),
        ],
    );
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let statuses =
            futures_util::future::join_all((0..10).map(|_| client.get(app.url("/hello")).send()))
                .await;
        for status in statuses {
            assert_eq!(status.unwrap().status(), 200, "let through");
        }
        sent += 10;
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    let warnings = app.logged("rate limiter unavailable: letting requests through");
    assert!(!warnings.is_empty(), "the failure is logged");
    assert!(
        warnings.len() <= 2 * (seconds + 1),
        "{} warnings for {sent} requests in {seconds} s from 2 workers",
        warnings.len()
    );
}
