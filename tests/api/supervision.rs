//! Supervision seen from outside: a crashed actor comes back, its callers get
//! fast 503s meanwhile, and past the restart intensity it is given up and the
//! instance reports not ready.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_problem, slack, spawn_app, Backend, TestApp, TestDatabase};

/// Every shard of the database actor, as `/ready` lists them.
async fn db_shards(app: &TestApp) -> Vec<Value> {
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    ready["checks"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["actor"] == "db")
        .cloned()
        .collect()
}

async fn crashed_db_actor_restarts_and_serves_again(app: TestApp) {
    let user = app.create_user("Before", "before@example.com").await;
    let path = format!("/users/{}", user["id"]);
    app.crash("db").await;
    app.restarted("db", 1).await;
    assert_eq!(app.get(&path).await.status(), 200, "reads are served again");
    // On SQLite the writer, crashed too, comes back on its own backoff.
    if matches!(app.database(), TestDatabase::Sqlite(_)) {
        app.restarted("db_writer", 1).await;
    }
    let after = json!({"name": "After", "email": "after@example.com"});
    assert_eq!(app.post_json("/users", &after).await.status(), 201);
    assert_eq!(app.get("/ready").await.status(), 200);
}

/// While an actor backs off before its restart, its callers get a 503 at
/// once, never a wait for the call timeout. The fifth restart in a window
/// waits 1.6 s: the request is sent, and the actor seen still backing off
/// after its answer, well inside it.
async fn callers_get_a_fast_503_while_an_actor_backs_off(app: TestApp) {
    let user = app.create_user("Before", "before@example.com").await;
    for restarts in 1..=5 {
        app.crash("db").await;
        if restarts < 5 {
            app.restarted("db", restarts).await;
        }
    }
    let response = app.get(&format!("/users/{}", user["id"])).await;
    let shards = db_shards(&app).await;
    assert!(
        shards
            .iter()
            .all(|a| a["state"] == "restarting" && a["restarts"] == 5),
        "still backing off after the answer: {shards:?}"
    );
    assert!(response.headers().contains_key("retry-after"));
    let problem = assert_problem(response, 503).await;
    assert!(
        !problem["detail"].as_str().unwrap().contains("panic"),
        "{problem}"
    );
}

async fn crashing_past_the_intensity_gives_up(app: TestApp) {
    for _ in 0..6 {
        app.crash("db").await;
    }
    let response = app.get("/ready").await;
    let problem = assert_problem(response, 503).await;
    let db = problem["checks"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "db")
        .cloned()
        .unwrap();
    assert_eq!(db["state"], "given_up", "{problem}");
    assert_eq!(db["restarts"], 6);

    // A caller that waited for the given-up actor would wait for the whole
    // call timeout; the fast answer takes what a trivial request takes.
    let fast = slack(&app.url("/hello"), Duration::from_secs(1)).await;
    let started = Instant::now();
    let problem = assert_problem(app.get("/users/1").await, 503).await;
    assert!(
        started.elapsed() < fast,
        "a given-up actor answers fast: {:?}",
        started.elapsed()
    );
    assert!(problem["detail"].as_str().unwrap().contains("db actor"));
    let problem = assert_problem(app.get("/health").await, 503).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("given up"),
        "a given-up actor escalates: liveness fails so the process is replaced: {problem}"
    );
}

on_both_backends!(
    crashed_db_actor_restarts_and_serves_again,
    callers_get_a_fast_503_while_an_actor_backs_off,
    crashing_past_the_intensity_gives_up
);

#[actix_web::test]
async fn crash_drill_refuses_unknown_actors() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let response = app
        .client
        .post(app.url("/debug/crash/nobody"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404).await;
}
