//! Concurrent writers: the pool and the unique index, not the actor's
//! mailbox, decide what happens. On SQLite these writes are committed in
//! batches by its one writer, so a conflict or a success shares a
//! transaction with others and must be answered for itself.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::TestApp;

async fn hundred_concurrent_creates_all_succeed(app: TestApp) {
    let bodies: Vec<Value> = (0..100)
        .map(|i| json!({"name": format!("User {i}"), "email": format!("user{i}@example.com")}))
        .collect();
    let responses = join_all(bodies.iter().map(|body| app.post_json("/users", body))).await;
    let mut ids = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 201);
        let user: Value = response.json().await.unwrap();
        ids.push(user["id"].as_i64().unwrap());
    }
    for id in &ids {
        let response = app.get(&format!("/users/{id}")).await;
        assert_eq!(response.status(), 200, "user {id} is readable");
    }
    let listed: Vec<Value> = app.get("/users?limit=100").await.json().await.unwrap();
    assert_eq!(listed.len(), 100);
}

async fn one_email_thirty_times_has_one_winner(app: TestApp) {
    let bodies: Vec<Value> = (0..30)
        .map(|i| {
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            json!({"name": format!("Racer {i}"), "email": email})
        })
        .collect();
    let responses = join_all(bodies.iter().map(|body| app.post_json("/users", body))).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        29,
        "{statuses:?}"
    );
    let listed: Vec<Value> = app.get("/users").await.json().await.unwrap();
    assert_eq!(listed.len(), 1);
}

on_both_backends!(
    hundred_concurrent_creates_all_succeed,
    one_email_thirty_times_has_one_winner
);
