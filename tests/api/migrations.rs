//! The schema on the real binary: instances started together migrate once,
//! `switchboard migrate` and `--check`, a server told not to migrate, a
//! database a newer build migrated, and `switchboard healthcheck`.

use std::process::{Command, Output};
use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::helpers::{Backend, TestDatabase};
use crate::process_app::ProcessApp;

/// This build's migrations, as the database records them.
const POSTGRES_VERSIONS: [&str; 3] = ["20261125000000", "20261202000000", "20261202000001"];
const SQLITE_VERSIONS: [&str; 2] = ["20261125000000", "20261202000000"];

fn versions(db: &TestDatabase) -> &'static [&'static str] {
    match db {
        TestDatabase::Sqlite(_) => &SQLITE_VERSIONS,
        TestDatabase::Postgres { .. } => &POSTGRES_VERSIONS,
    }
}

/// `switchboard` with these arguments on `db`, run to its end.
fn run(db: &TestDatabase, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied())
        .output()
        .expect("run switchboard")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = BigInt)]
    times: i64,
}

async fn postgres(db: &TestDatabase) -> AsyncPgConnection {
    AsyncPgConnection::establish(&db.url()).await.unwrap()
}

/// Three replicas created at the same instant on an empty database, as a
/// rollout starts them: all three come up, each migration is applied once,
/// and none logs an error.
#[actix_web::test]
async fn instances_started_together_on_an_empty_database_migrate_once() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let commands = (0..3)
        .map(|_| ProcessApp::command(&db.url(), &[]))
        .collect();
    let apps = ProcessApp::spawn_together(commands);
    let http = reqwest::Client::new();
    for app in &apps {
        let health = http.get(app.url("/ready")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let errors = app.logged_at_level("ERROR");
        assert!(errors.is_empty(), "{errors:?}");
    }
    let mut conn = postgres(&db).await;
    let counted: Vec<Counted> = diesel::sql_query(
        "SELECT version, count(*) AS times FROM __diesel_schema_migrations \
         GROUP BY version ORDER BY version",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let recorded: Vec<(&str, i64)> = counted
        .iter()
        .map(|c| (c.version.as_str(), c.times))
        .collect();
    let expected: Vec<(&str, i64)> = POSTGRES_VERSIONS.iter().map(|v| (*v, 1)).collect();
    assert_eq!(recorded, expected);
    let migrated: usize = apps
        .iter()
        .map(|app| {
            let lines = app.logged("database migrated");
            lines.iter().filter(|l| l["applied"] != "[]").count()
        })
        .sum();
    assert_eq!(migrated, 1, "one instance applied the migrations");
}

on_both_backends!(databases:
    migrate_applies_what_is_pending_once_and_check_says_so,
    told_not_to_migrate_a_server_refuses_a_database_behind_and_leaves_it_untouched,
);

/// `switchboard migrate --check` names what is pending (exit 1);
/// `switchboard migrate` applies it and prints each version, and a second
/// run finds nothing to do; then `--check` exits 0.
async fn migrate_applies_what_is_pending_once_and_check_says_so(db: TestDatabase) {
    let versions = versions(&db);
    let check = run(&db, &["migrate", "--check"], &[]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert_eq!(
        stdout(&check).trim(),
        format!("pending: {}", versions.join(" "))
    );

    let first = run(&db, &["migrate"], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let applied: Vec<String> = versions.iter().map(|v| format!("applied {v}")).collect();
    assert_eq!(stdout(&first).trim(), applied.join("\n"));

    let again = run(&db, &["migrate"], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), "no migration pending");
    let check = run(&db, &["migrate", "--check"], &[]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
}

/// With `SWITCHBOARD_MIGRATE=false` on an empty database the server exits 2
/// naming the pending migrations and `switchboard migrate`, and creates
/// nothing: not a table, not a SQLite file.
async fn told_not_to_migrate_a_server_refuses_a_database_behind_and_leaves_it_untouched(
    db: TestDatabase,
) {
    let refused = run(
        &db,
        &[],
        &[
            ("SWITCHBOARD_MIGRATE", "false"),
            ("SWITCHBOARD_BIND", "127.0.0.1:0"),
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let said = stderr(&refused);
    assert!(said.contains("switchboard migrate"), "{said}");
    for version in versions(&db) {
        assert!(said.contains(version), "{said}");
    }
    match &db {
        TestDatabase::Sqlite(dir) => {
            let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(files.is_empty(), "{files:?}");
        }
        TestDatabase::Postgres { .. } => {
            let mut conn = postgres(&db).await;
            let tables: Vec<Counted> = diesel::sql_query(
                "SELECT 'tables' AS version, count(*) AS times FROM pg_tables \
                 WHERE schemaname = 'public'",
            )
            .load(&mut conn)
            .await
            .unwrap();
            assert_eq!(tables[0].times, 0, "no table was created");
        }
    }
    // Once migrated, the same server starts.
    assert_eq!(run(&db, &["migrate"], &[]).status.code(), Some(0));
    let app = ProcessApp::start(&db.url(), &[("SWITCHBOARD_MIGRATE", "false")]);
    let ready = reqwest::get(app.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// A database that a newer build migrated (a migration this build does not
/// know) is served, with a warning naming what this build does not know.
#[actix_web::test]
async fn a_database_a_newer_build_migrated_is_served_with_a_warning() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    assert_eq!(run(&db, &["migrate"], &[]).status.code(), Some(0));
    let mut conn = postgres(&db).await;
    conn.batch_execute(
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('29990101000000')",
    )
    .await
    .unwrap();
    let app = ProcessApp::start(&db.url(), &[]);
    let ready = reqwest::get(app.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let warned = app.wait_for_log(
        "the database has migrations this build does not know: a newer build migrated it; serving, as every migration stays compatible with the release before it",
        |_| true,
    );
    assert_eq!(warned["unknown"], "[\"29990101000000\"]", "{warned}");
}

/// `switchboard healthcheck` exits 0 when `/health` at the listener answers
/// 200, and 1 when nothing answers there.
#[actix_web::test]
async fn healthcheck_says_whether_the_listener_is_healthy() {
    let Some(db) = TestDatabase::create(Backend::Sqlite).await else {
        return;
    };
    let app = ProcessApp::start(&db.url(), &[]);
    let bind = app.address.trim_start_matches("http://").to_owned();
    let healthy = run(&db, &["healthcheck"], &[("SWITCHBOARD_BIND", &bind)]);
    assert_eq!(healthy.status.code(), Some(0), "{}", stderr(&healthy));
    drop(app);
    std::thread::sleep(Duration::from_millis(100));
    let gone = run(&db, &["healthcheck"], &[("SWITCHBOARD_BIND", &bind)]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("unhealthy"), "{}", stderr(&gone));
}
