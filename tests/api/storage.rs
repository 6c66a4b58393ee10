//! A database that cannot take writes, tried for real: a read-only SQLite
//! file, a full disk under SQLite (a small tmpfs), and a PostgreSQL server
//! stopped and started under load (a throwaway cluster of the test's own,
//! never the shared server). Each answers 503 with `Retry-After`, never 500;
//! `/ready` says so; nothing acknowledged is lost; writes come back. And a
//! PostgreSQL server that crashes under load keeps every write switchboard
//! acknowledged.
//!
//! These need root (to mount a tmpfs, to make a file immutable, to run
//! PostgreSQL as its own user), as this project's machines and CI run; they
//! skip, saying so, without it unless SWITCHBOARD_REQUIRE_STORAGE_FAULTS=1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, Backend, TestDatabase};
use crate::process_app::ProcessApp;

fn run(command: &mut Command) {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A file root cannot write either, until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn new(path: &Path) -> Self {
        run(Command::new("chattr").arg("+i").arg(path));
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

async fn create(client: &reqwest::Client, app: &ProcessApp, n: usize) -> reqwest::Response {
    client
        .post(app.url("/users"))
        .json(&json!({"name": format!("User {n} {}", "x".repeat(80)), "email": format!("u{n}@example.com")}))
        .send()
        .await
        .unwrap()
}

async fn ready_database(client: &reqwest::Client, app: &ProcessApp) -> (u16, Value) {
    let response = client.get(app.url("/ready")).send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["checks"]["database"].clone())
}

#[actix_web::test]
async fn a_read_only_sqlite_file_answers_503_and_is_not_ready() {
    if !crate::requires::storage_faults() {
        return;
    }
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let file = PathBuf::from(db.url().trim_start_matches("sqlite://"));
    let client = reqwest::Client::new();
    let mut app = ProcessApp::start(&db.url(), &[]);
    let user: Value = create(&client, &app, 1).await.json().await.unwrap();
    app.signal(Signal::SIGTERM);
    assert!(app.wait_exit(Duration::from_secs(10)).success());

    let read_only = Immutable::new(&file);
    let app = ProcessApp::start(&db.url(), &[]);
    let read = client
        .get(app.url(&format!("/users/{}", user["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads go on");
    let write = create(&client, &app, 2).await;
    assert!(write.headers().contains_key("retry-after"));
    let problem = assert_problem(write, 503).await;
    assert_eq!(problem["detail"], "the database cannot take writes now");
    let (status, database) = ready_database(&client, &app).await;
    assert_eq!(
        (status, &database["writable"]),
        (503, &json!(false)),
        "{database}"
    );

    drop(read_only);
    assert!(
        eventually(Duration::from_secs(5), || async {
            create(&client, &app, 3).await.status() == 201
        })
        .await,
        "writes come back once the file can be written"
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            ready_database(&client, &app).await.0 == 200
        })
        .await
    );
}

/// A tmpfs of `size`, mounted until dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()));
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[actix_web::test]
async fn a_full_disk_answers_503_and_loses_no_acknowledged_write() {
    if !crate::requires::storage_faults() {
        return;
    }
    let disk = Tmpfs::mount("2m");
    let url = format!("sqlite://{}", disk.path().join("db.sqlite").display());
    let filler = disk.path().join("filler");
    let client = reqwest::Client::new();
    let app = ProcessApp::start(&url, &[]);
    // Leave the database a few hundred KiB to grow into.
    run(Command::new("fallocate").args(["-l", "1600k"]).arg(&filler));

    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..20_000 {
        let response = create(&client, &app, n).await;
        match response.status().as_u16() {
            201 => acknowledged.push(response.json::<Value>().await.unwrap()),
            _ => {
                refused = Some(response);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 503).await;
    for n in 0..5 {
        let again = create(&client, &app, 100_000 + n).await;
        assert_eq!(again.status(), 503, "never a 500 while the disk is full");
    }
    let (status, database) = ready_database(&client, &app).await;
    assert_eq!(
        (status, &database["writable"]),
        (503, &json!(false)),
        "{database}"
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            create(&client, &app, 200_000).await.status() == 201
        })
        .await,
        "writes come back once there is room"
    );
    assert!(
        acknowledged.len() > 10,
        "{} writes before the disk was full",
        acknowledged.len()
    );
    for user in &acknowledged {
        let read = client
            .get(app.url(&format!("/users/{}", user["id"])))
            .send()
            .await
            .unwrap();
        assert_eq!(
            read.json::<Value>().await.unwrap(),
            *user,
            "acknowledged, so kept"
        );
    }
    drop(app);
}

/// A PostgreSQL cluster of this test's own, on a port of its own.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn bin(tool: &str) -> PathBuf {
        crate::requires::postgres_server_bin()
            .expect("PostgreSQL's server installed")
            .join(tool)
    }

    fn as_postgres(tool: &str) -> Command {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(Self::bin(tool));
        command
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("chown").arg("postgres").arg(dir.path()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { dir, port };
        run(Self::as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(cluster.data()));
        cluster.pg_ctl("start");
        cluster
    }

    /// A cluster, and switchboard on it with nothing between a request and
    /// the database (no cache, no rate limit); `None` when this machine
    /// cannot run one (said so).
    fn serving() -> Option<(Self, ProcessApp)> {
        if !crate::requires::storage_faults() {
            return None;
        }
        let cluster = Self::start();
        let app = ProcessApp::start(
            &cluster.url(),
            &[
                ("SWITCHBOARD_CACHE_MAX_ENTRIES", "0"),
                ("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "0"),
            ],
        );
        Some((cluster, app))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, action: &str) {
        self.control(action, (action == "stop").then_some("fast"));
    }

    /// Stops the server the way a crash would: at once, without a
    /// checkpoint (`-m immediate`); its next start replays the WAL.
    fn crash(&self) {
        self.control("stop", Some("immediate"));
    }

    fn control(&self, action: &str, mode: Option<&str>) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let mut command = Self::as_postgres("pg_ctl");
        command
            .args(["-w", "-D"])
            .arg(self.data())
            .args(["-o", &options])
            // The server writes here, not to this test's pipes (which would
            // keep them open, and `run` waiting, for as long as it runs).
            .arg("-l")
            .arg(self.dir.path().join("server.log"));
        if let Some(mode) = mode {
            command.args(["-m", mode]);
        }
        run(command.arg(action));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Self::as_postgres("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Lanes of creates against an instance, every answer kept, until stopped.
struct CreateLoad {
    answers: Arc<Mutex<Vec<(u16, Value)>>>,
    stop: Arc<AtomicBool>,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

impl CreateLoad {
    fn start(app: &ProcessApp, lanes: usize) -> Self {
        let client = reqwest::Client::new();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let lanes = (0..lanes)
            .map(|lane| {
                let (client, url, answers, stop) = (
                    client.clone(),
                    app.url("/users"),
                    answers.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let email = format!("l{lane}n{n}@example.com");
                        let sent = client
                            .post(&url)
                            .json(&json!({"name": "Load", "email": email}))
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        if let Ok(response) = sent {
                            let status = response.status().as_u16();
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            answers.lock().unwrap().push((status, body));
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Self {
            answers,
            stop,
            lanes,
        }
    }

    /// The answers so far, in the order they came.
    fn answers(&self) -> MutexGuard<'_, Vec<(u16, Value)>> {
        self.answers.lock().unwrap()
    }

    fn acknowledged(&self) -> usize {
        self.answers()
            .iter()
            .filter(|(status, _)| *status == 201)
            .count()
    }

    /// Stops the lanes after the requests they have sent; every answer.
    async fn stop(self) -> Vec<(u16, Value)> {
        self.stop.store(true, Ordering::Relaxed);
        for lane in self.lanes {
            lane.await.unwrap();
        }
        let answers = self.answers.lock().unwrap().clone();
        answers
    }
}

/// PostgreSQL itself crashes under a load of creates (stopped at once,
/// without a checkpoint, its WAL replayed when it starts again): every
/// write switchboard acknowledged before the crash is there after it.
#[actix_web::test]
async fn acknowledged_writes_survive_a_crash_of_postgres_itself() {
    use diesel::sql_types::BigInt;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }

    let Some((cluster, app)) = Cluster::serving() else {
        return;
    };
    let load = CreateLoad::start(&app, 16);
    let busy = eventually(Duration::from_secs(20), || async {
        load.acknowledged() >= 300
    })
    .await;
    assert!(busy, "writes were acknowledged before the crash");
    // While the lanes go on writing: the last acknowledgements come
    // moments before the server dies.
    cluster.crash();
    let answers = load.stop().await;
    cluster.pg_ctl("start");

    let mut conn = AsyncPgConnection::establish(&cluster.url()).await.unwrap();
    let stored: std::collections::HashSet<i64> = diesel::sql_query("SELECT id FROM users")
        .load::<Id>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect();
    let acknowledged: Vec<i64> = answers
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, user)| user["id"].as_i64().expect("an id"))
        .collect();
    let lost: Vec<&i64> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    eprintln!(
        "postgres crash under load: {} writes acknowledged, all kept",
        acknowledged.len()
    );
}

#[actix_web::test]
async fn postgres_stopped_and_started_under_load_answers_503_and_loses_nothing() {
    let Some((cluster, app)) = Cluster::serving() else {
        return;
    };
    let client = reqwest::Client::new();
    let load = CreateLoad::start(&app, 32);
    let busy = eventually(Duration::from_secs(20), || async {
        load.acknowledged() >= 100
    })
    .await;
    assert!(busy, "writes were acknowledged before the stop");
    cluster.pg_ctl("stop");
    // Not ready, but alive: an orchestrator takes the instance out of
    // rotation and does not restart it for the database's sake.
    assert!(
        eventually(Duration::from_secs(10), || async {
            ready_database(&client, &app).await.0 == 503
        })
        .await
    );
    let health = client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not ask the database");
    let stopped_at = load.answers().len();
    let refused = eventually(Duration::from_secs(20), || async {
        load.answers()[stopped_at..]
            .iter()
            .filter(|(status, _)| *status == 503)
            .count()
            >= 20
    })
    .await;
    assert!(refused, "writes meet the outage");
    let while_down = load.answers().len();
    cluster.pg_ctl("start");
    let restarted = Instant::now();
    let recovered = eventually(Duration::from_secs(15), || async {
        load.answers()[while_down..]
            .iter()
            .filter(|(status, _)| *status == 201)
            .count()
            > 20
    })
    .await;
    let answers = load.stop().await;
    assert!(
        recovered,
        "writes came back within {:?}",
        restarted.elapsed()
    );

    let count = |wanted: u16| {
        answers
            .iter()
            .filter(|(status, _)| *status == wanted)
            .count()
    };
    let unexpected: Vec<&(u16, Value)> = answers
        .iter()
        .filter(|(status, _)| !matches!(status, 201 | 503))
        .collect();
    assert!(
        unexpected.is_empty(),
        "only 201 and 503: {} others, the first {:?}",
        unexpected.len(),
        unexpected.first()
    );
    assert!(count(503) > 0, "the outage was seen");
    for (_, user) in answers.iter().filter(|(status, _)| *status == 201) {
        let read = client
            .get(app.url(&format!("/users/{}", user["id"])))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "acknowledged, so kept: {user}");
    }
    eprintln!(
        "postgres restart under load: {} created, {} answered 503",
        count(201),
        count(503)
    );
}

/// A write waiting in its PostgreSQL session when the server ends that
/// session (an administrator's `pg_terminate_backend`, a failover) is a
/// 503 with `Retry-After`: it may not have been written, and the client
/// may retry; the next write is served on a fresh connection.
#[actix_web::test]
async fn a_write_whose_postgres_session_ends_is_a_503() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

    let Some(app) = crate::helpers::spawn_app(Backend::Postgres).await else {
        return;
    };
    let TestDatabase::Postgres { name } = app.database() else {
        unreachable!()
    };
    let mut locker = app.database().lock_users().await;
    let mut admin = AsyncPgConnection::establish(crate::helpers::POSTGRES_ADMIN_URL)
        .await
        .unwrap();
    let waiting = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{name}' AND wait_event_type = 'Lock'"
    );
    let end_it = async {
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiting = loop {
            let pids = crate::pipeline::sql_pids(&mut admin, &waiting).await;
            if !pids.is_empty() {
                break pids;
            }
            assert!(Instant::now() < deadline, "the write waits for the lock");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for pid in &waiting {
            admin
                .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
                .await
                .unwrap();
        }
        locker.batch_execute("ROLLBACK").await.unwrap();
        waiting
    };
    let body = json!({"name": "Cut off", "email": "cut@example.com"});
    let (response, ended) = tokio::join!(app.post_json("/users", &body), end_it);
    assert!(!ended.is_empty());
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503).await;
    let again = json!({"name": "Again", "email": "again@example.com"});
    assert_eq!(app.post_json("/users", &again).await.status(), 201);
}
