//! Supervision seen from outside: a crashed actor comes back, its callers get
//! fast 503s meanwhile, and past the restart intensity it is given up and the
//! instance reports not ready.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, spawn_app, Backend, TestApp};

async fn db_actor(app: &TestApp) -> Value {
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    ready["checks"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "db")
        .cloned()
        .unwrap()
}

async fn crashed_db_actor_restarts_and_serves_again(app: TestApp) {
    let user = app.create_user("Before", "before@example.com").await;
    app.crash("db").await;

    let restarted = db_actor(&app).await;
    assert_eq!(restarted["restarts"], 1, "{restarted}");

    // During the backoff callers get a fast 503, never a hang.
    let started = Instant::now();
    let response = app.get(&format!("/users/{}", user["id"])).await;
    if response.status() == 503 {
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(response.headers().contains_key("retry-after"));
        let problem = assert_problem(response, 503).await;
        assert!(!problem["detail"].as_str().unwrap().contains("panic"));
    } else {
        assert_eq!(response.status(), 200);
    }

    let path = format!("/users/{}", user["id"]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get(&path).await.status() == 200
        })
        .await,
        "the db actor serves again after its restart"
    );
    // On SQLite the writer, crashed too, comes back on its own backoff.
    let after = json!({"name": "After", "email": "after@example.com"});
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.post_json("/users", &after).await.status() == 201
        })
        .await,
        "writes are served again after the restart"
    );
    assert_eq!(app.get("/ready").await.status(), 200);
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

    let started = Instant::now();
    let problem = assert_problem(app.get("/users/1").await, 503).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a given-up actor answers fast"
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
