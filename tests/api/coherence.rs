//! Several instances on one PostgreSQL database keep their caches coherent:
//! a write through one is not read stale through another once the
//! invalidation arrives, and an instance that loses the channel serves
//! nothing from its cache until it has it back (and has cleared the cache).
//! Real processes, one database.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{slack, Backend, TestDatabase, POSTGRES_ADMIN_URL};
use crate::process_app::ProcessApp;

async fn read(client: &reqwest::Client, app: &ProcessApp, path: &str) -> (String, Value) {
    let response = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    (cache, response.json().await.unwrap())
}

async fn rename(client: &reqwest::Client, app: &ProcessApp, path: &str, name: &str) {
    let response = client
        .patch(app.url(path))
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_web::test]
async fn a_write_through_one_instance_reaches_the_others_caches() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let (a, b) = (
        ProcessApp::start(&db.url(), &[]),
        ProcessApp::start(&db.url(), &[]),
    );
    let client = reqwest::Client::new();
    let created = client
        .post(a.url("/users"))
        .json(&json!({"name": "Version 0", "email": "coherent@example.com"}))
        .send()
        .await
        .unwrap();
    let path = format!("/users/{}", created.json::<Value>().await.unwrap()["id"]);
    // Well under the cache's TTL, and wider on a slow machine.
    let stale_for = slack(&b.url("/hello"), Duration::from_secs(2)).await;
    let mut delays = Vec::new();
    for version in 1..=20 {
        // B holds the user in its cache.
        read(&client, &b, &path).await;
        assert_eq!(read(&client, &b, &path).await.0, "hit");
        let name = format!("Version {version}");
        rename(&client, &a, &path, &name).await;
        let written = Instant::now();
        loop {
            let (_, seen) = read(&client, &b, &path).await;
            if seen["name"] == name.as_str() {
                break;
            }
            assert!(
                written.elapsed() < stale_for,
                "B still serves {seen} {stale_for:?} after the write"
            );
        }
        delays.push(written.elapsed());
        for _ in 0..5 {
            let (_, seen) = read(&client, &b, &path).await;
            assert_eq!(seen["name"], name.as_str(), "never stale once heard");
        }
    }
    delays.sort();
    eprintln!(
        "invalidation delay over 20 writes: p50 {:?}, max {:?}",
        delays[10], delays[19]
    );
}

/// Ends every session listening for invalidations on `db`.
async fn cut_the_channel(db: &TestDatabase) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let TestDatabase::Postgres { name } = db else {
        unreachable!("a PostgreSQL test")
    };
    let mut admin = AsyncPgConnection::establish(POSTGRES_ADMIN_URL)
        .await
        .unwrap();
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND application_name = 'switchboard-invalidations'"
    );
    admin.batch_execute(&sql).await.unwrap();
}

#[actix_web::test]
async fn an_instance_that_loses_the_channel_serves_nothing_stale_and_recovers() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let (a, b) = (
        ProcessApp::start(&db.url(), &[]),
        ProcessApp::start(&db.url(), &[]),
    );
    let client = reqwest::Client::new();
    let created = client
        .post(a.url("/users"))
        .json(&json!({"name": "Before", "email": "channel@example.com"}))
        .send()
        .await
        .unwrap();
    let path = format!("/users/{}", created.json::<Value>().await.unwrap()["id"]);
    read(&client, &b, &path).await;
    assert_eq!(read(&client, &b, &path).await.0, "hit");

    cut_the_channel(&db).await;
    let lost = "lost the channel of other instances' writes: the cache is paused, reads go to the database";
    b.wait_for_log(lost, |_| true);
    rename(&client, &a, &path, "During").await;
    let (_, seen) = read(&client, &b, &path).await;
    assert_eq!(
        seen["name"], "During",
        "not stale while the channel is gone"
    );

    // Once at start, and again now.
    b.wait_for_logs(
        "listening for other instances' writes: the cache serves again",
        2,
    );
    let back = Instant::now();
    let mut caching = false;
    while back.elapsed() < Duration::from_secs(3) && !caching {
        let (cache, seen) = read(&client, &b, &path).await;
        assert_eq!(seen["name"], "During");
        caching = cache == "hit";
    }
    assert!(caching, "the cache serves again once the channel is back");
    rename(&client, &a, &path, "After").await;
    let written = Instant::now();
    while read(&client, &b, &path).await.1["name"] != "After" {
        assert!(written.elapsed() < Duration::from_secs(2), "heard again");
    }
}
