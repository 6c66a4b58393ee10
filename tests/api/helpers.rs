//! Spawning the application for a test, in-process (`spawn_app`) or as the
//! real binary (`ProcessApp`), each with a database of its own.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{json, Value};
use switchboard::config::{DatabaseUrl, Settings};
use switchboard::startup::Application;

pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates each `async fn name(backend: Backend)` once per backend.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $test() {
                    super::$test(crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $test() {
                    super::$test(crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A database that exists for one test and is dropped after it.
pub enum TestDatabase {
    Sqlite(tempfile::TempDir),
    Postgres { name: String },
}

impl TestDatabase {
    /// A fresh database, or `None` (after saying so) when PostgreSQL is
    /// wanted but not running and not required.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::Sqlite(tempfile::tempdir().expect("temp dir"))),
            Backend::Postgres => {
                let mut admin = match AsyncPgConnection::establish(POSTGRES_ADMIN_URL).await {
                    Ok(conn) => conn,
                    Err(err)
                        if std::env::var("SWITCHBOARD_REQUIRE_POSTGRES").as_deref() == Ok("1") =>
                    {
                        panic!("PostgreSQL is required but {POSTGRES_ADMIN_URL} does not answer: {err}")
                    }
                    Err(err) => {
                        eprintln!("skipping: no PostgreSQL at {POSTGRES_ADMIN_URL} ({err})");
                        return None;
                    }
                };
                let name = format!("switchboard_test_{}", uuid::Uuid::new_v4().simple());
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                Some(Self::Postgres { name })
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => {
                format!("sqlite://{}", dir.path().join("switchboard.db").display())
            }
            Self::Postgres { name } => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Self::Postgres { name } = self else {
            return;
        };
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        // Drop runs outside any async context we could await in: use a
        // runtime of its own on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                if let Ok(mut admin) = AsyncPgConnection::establish(POSTGRES_ADMIN_URL).await {
                    let _ = admin.batch_execute(&sql).await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// The application running in this test's actix system.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The actors' handles, for figures no route shows.
    pub state: actix_web::web::Data<switchboard::app_state::AppState>,
    /// Held so the database outlives the app and is dropped after the test.
    _db: TestDatabase,
}

/// Settings for a test: a free port, two workers, the fault drills on.
pub fn test_settings(db: &TestDatabase) -> Settings {
    Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: DatabaseUrl::parse(&db.url()).unwrap(),
        workers: 2,
        chaos: true,
        // Generous: tests that exercise the limiter set their own.
        rate_limit_per_second: 100_000,
        rate_limit_burst: 100_000,
        ..Settings::default()
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    // TEST_LOG=debug (any RUST_LOG filter) shows the app's logs in tests.
    if let Ok(filter) = std::env::var("TEST_LOG") {
        switchboard::telemetry::init(switchboard::config::LogFormat::Pretty, &filter);
    }
    let db = TestDatabase::create(backend).await?;
    let mut settings = test_settings(&db);
    tweak(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped());
    Some(TestApp {
        address,
        client: reqwest::Client::new(),
        state,
        _db: db,
    })
}

impl TestApp {
    /// The app's own database.
    pub fn database(&self) -> &TestDatabase {
        &self._db
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    /// Runs the crash drill on an actor, asserting the 202.
    pub async fn crash(&self, actor: &str) {
        let response = self
            .client
            .post(self.url(&format!("/debug/crash/{actor}")))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 202, "crash drill on {actor}");
    }

    /// Creates a user and returns its JSON, asserting the 201.
    pub async fn create_user(&self, name: &str, email: &str) -> Value {
        let response = self
            .post_json("/users", &json!({"name": name, "email": email}))
            .await;
        assert_eq!(response.status(), 201, "creating {email}");
        response.json().await.expect("user JSON")
    }
}

/// Sends a request and reads its JSON body.
pub async fn json_of<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON body")
}

/// Asserts a problem+json answer with this status and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers().get("x-request-id").cloned();
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("/problems/")),
        "{body}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    assert_eq!(
        body["request_id"].as_str(),
        request_id.as_ref().and_then(|v| v.to_str().ok()),
        "problem names the request id"
    );
    body
}

/// The fields a 422 problem lists.
pub fn invalid_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .expect("errors list")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The real `switchboard` binary, logging JSON lines that tests can read.
pub struct ProcessApp {
    pub child: Child,
    pub address: String,
    logs: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ProcessApp {
    /// Starts the binary with these variables (on a free port) and waits
    /// until it logs that it is listening.
    pub fn start(database_url: &str, vars: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .env("SWITCHBOARD_BIND", "127.0.0.1:0")
            .env("DATABASE_URL", database_url)
            .env("SWITCHBOARD_LOG_FORMAT", "json")
            .env("SWITCHBOARD_WORKERS", "2")
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchboard");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (listening, address) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&logs);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["message"] == "listening" {
                    let _ =
                        listening.send(event["address"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(event);
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(60))
            .expect("switchboard logs that it is listening");
        Self {
            child,
            address: format!("http://{address}"),
            logs,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Log events so far whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["message"] == message)
            .cloned()
            .collect()
    }

    /// Waits (at most five seconds) for a log event with this message that
    /// `matches`, and returns it.
    pub fn wait_for_log(&self, message: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_logged(message, |events| events.into_iter().find(|e| matches(e)))
    }

    /// Waits (at most five seconds) until `count` log events with this
    /// message have arrived, and returns them all.
    pub fn wait_for_logs(&self, message: &str, count: usize) -> Vec<Value> {
        self.wait_for_logged(message, |events| (events.len() >= count).then_some(events))
    }

    /// Polls the events with this message until `found` picks something.
    fn wait_for_logged<T>(&self, message: &str, found: impl Fn(Vec<Value>) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(picked) = found(self.logged(message)) {
                return picked;
            }
            assert!(Instant::now() < deadline, "no {message:?} log line arrived");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).expect("signal switchboard");
    }

    /// Waits for the process to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Its stdout is closed now: let the reader take the last lines.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchboard did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProcessApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
