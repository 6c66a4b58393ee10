//! Spawning the application in-process for a test (`spawn_app`), each with
//! a database of its own, and the assertions tests share. The real binary
//! is in `process_app.rs`.

use std::future::Future;
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

/// Instantiates each `async fn name(app: TestApp)` once per backend, each
/// on an application of its own; with `databases:`, each
/// `async fn name(db: TestDatabase)` on a database of its own. On
/// PostgreSQL they skip, saying so, when no server answers and none is
/// required (see [`TestDatabase::create`]).
macro_rules! on_both_backends {
    (databases: $($test:ident),* $(,)?) => {
        on_both_backends!(@each crate::helpers::with_database; $($test),*);
    };
    ($($test:ident),* $(,)?) => {
        on_both_backends!(@each crate::helpers::with_app; $($test),*);
    };
    (@each $with:path; $($test:ident),*) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $test() {
                    $with(crate::helpers::Backend::Sqlite, super::$test).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $test() {
                    $with(crate::helpers::Backend::Postgres, super::$test).await
                }
            )*
        }
    };
}

/// Runs `test` on an application on `backend`, if that backend is there.
pub async fn with_app<F: Future<Output = ()>>(backend: Backend, test: impl FnOnce(TestApp) -> F) {
    if let Some(app) = spawn_app(backend).await {
        test(app).await
    }
}

/// Runs `test` on a database of `backend`, if that backend is there.
pub async fn with_database<F: Future<Output = ()>>(
    backend: Backend,
    test: impl FnOnce(TestDatabase) -> F,
) {
    if let Some(db) = TestDatabase::create(backend).await {
        test(db).await
    }
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
                    Err(err) => {
                        crate::requires::present(
                            false,
                            "SWITCHBOARD_REQUIRE_POSTGRES",
                            &format!("no PostgreSQL at {POSTGRES_ADMIN_URL} ({err})"),
                        );
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

impl TestDatabase {
    /// Runs `sql` on the database behind switchboard's back: on
    /// PostgreSQL with triggers off for the session, so no instance hears
    /// of the change.
    pub async fn execute_unnoticed(&self, sql: &str) {
        match self {
            Self::Sqlite(_) => {
                use diesel::connection::SimpleConnection;
                use diesel::Connection;
                let path = self.url().trim_start_matches("sqlite://").to_owned();
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).expect("open SQLite");
                    conn.batch_execute(&sql).expect("run SQL");
                })
                .await
                .unwrap();
            }
            Self::Postgres { .. } => {
                let mut conn = AsyncPgConnection::establish(&self.url())
                    .await
                    .expect("connect");
                conn.batch_execute(&format!("SET session_replication_role = replica; {sql}"))
                    .await
                    .expect("run SQL");
            }
        }
    }

    /// A PostgreSQL session holding every row of `users` locked (in an
    /// open transaction) until it runs `ROLLBACK` or is dropped: whatever
    /// touches a user meanwhile waits, in flight.
    pub async fn lock_users(&self) -> AsyncPgConnection {
        let mut locker = AsyncPgConnection::establish(&self.url())
            .await
            .expect("connect");
        locker
            .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock users");
        locker
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
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.workers = 2;
    settings.server.chaos = true;
    settings.database.url = DatabaseUrl::parse(&db.url()).unwrap();
    // Generous: tests that exercise the limiter set their own.
    settings.rate_limit.per_second = 100_000;
    settings.rate_limit.burst = 100_000;
    settings
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
        switchboard::telemetry::init(switchboard::config::LogFormat::Pretty, &filter, None);
    }
    let db = TestDatabase::create(backend).await?;
    Some(spawn_app_on(db, tweak).await)
}

/// The application on a database made for it.
pub async fn spawn_app_on(db: TestDatabase, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&db);
    tweak(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        // Idle connections are dropped before the server's keep-alive (5 s)
        // would close them: a request never goes out on a connection the
        // server is closing at that moment (on a busy machine, a POST sent
        // so fails instead of being answered).
        client: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client"),
        state,
        _db: db,
    }
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

    /// Waits until every shard of `actor` runs again after at least
    /// `restarts` restarts, as `/ready` reports it.
    pub async fn restarted(&self, actor: &str, restarts: u64) {
        let back = eventually(Duration::from_secs(10), || async {
            let ready: Value = self.get("/ready").await.json().await.unwrap_or_default();
            let shards: Vec<&Value> = ready["checks"]["actors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["actor"] == actor)
                .collect();
            !shards.is_empty()
                && shards
                    .iter()
                    .all(|a| a["state"] == "running" && a["restarts"].as_u64() >= Some(restarts))
        })
        .await;
        assert!(back, "{actor} did not run again after {restarts} restarts");
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
    let path = response.url().path().to_owned();
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
    assert_eq!(body["type"], problem_type(status, &path), "{body}");
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

/// The one problem type each status is sent with (the README's table).
fn problem_type(status: u16, path: &str) -> &'static str {
    match status {
        400 => "/problems/bad-request",
        401 => "/problems/unauthorized",
        403 => "/problems/forbidden",
        404 => "/problems/not-found",
        405 => "/problems/method-not-allowed",
        408 => "/problems/request-timeout",
        409 => "/problems/conflict",
        412 => "/problems/precondition-failed",
        413 => "/problems/payload-too-large",
        415 => "/problems/unsupported-media-type",
        422 => "/problems/validation-error",
        429 => "/problems/too-many-requests",
        500 => "/problems/internal-error",
        503 if path == "/ready" => "/problems/not-ready",
        503 => "/problems/unavailable",
        504 => "/problems/timeout",
        other => panic!("no problem type is sent with {other}"),
    }
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

/// The value of the first series of a `/metrics` page whose line starts
/// with `line_start`.
pub async fn scrape(metrics_url: &str, line_start: &str) -> Option<f64> {
    let text = reqwest::get(metrics_url).await.ok()?.text().await.ok()?;
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
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

/// Room for this machine's pace in a time bound: twenty times the slowest
/// of ten trivial round trips to `url` now, and at least `floor`. On a
/// loaded machine the bound grows with it, where a fixed margin would fail.
pub async fn slack(url: &str, floor: Duration) -> Duration {
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        client.get(url).send().await.expect("a trivial request");
        slowest = slowest.max(started.elapsed());
    }
    (slowest * 20).max(floor)
}
