//! Reading users through the cache: hits skip the database, writes
//! invalidate before they are acknowledged, and a crashed cache comes back
//! empty while reads keep succeeding.

use futures_util::future::join_all;
use serde_json::{json, Value};

use std::time::Duration;

use crate::helpers::{
    eventually, scrape, spawn_app, spawn_app_on, spawn_app_with, Backend, TestApp, TestDatabase,
};

/// A time to live short enough to let an entry expire before each round.
const FLEETING: Duration = Duration::from_millis(100);

async fn read(app: &TestApp, path: &str) -> (String, Value) {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    (cache, response.json().await.unwrap())
}

async fn second_read_is_a_hit_and_writes_invalidate(app: TestApp) {
    let user = app.create_user("Cached", "cached@example.com").await;
    let path = format!("/users/{}", user["id"]);
    assert_eq!(read(&app, &path).await, ("miss".into(), user.clone()));
    assert_eq!(read(&app, &path).await, ("hit".into(), user.clone()));

    let patched: Value = app
        .patch_json(&path, &json!({"name": "Changed"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read(&app, &path).await, ("miss".into(), patched.clone()));
    // On PostgreSQL the write's own notification comes back to this
    // instance's listener and may drop the entry once more, whenever it
    // arrives: every read sees the patch, and the cache fills again.
    let mut cached = false;
    for _ in 0..50 {
        let (cache, read) = read(&app, &path).await;
        assert_eq!(read, patched);
        if cache == "hit" {
            cached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cached, "the patched user is cached again");

    assert_eq!(app.delete(&path).await.status(), 204);
    assert_eq!(
        app.get(&path).await.status(),
        404,
        "a deleted user is not served from the cache"
    );
}

/// Every round races fills against a write: the entry has expired first,
/// so the readers miss, read the database and fill the cache with what
/// they read, old or new. Fill tokens must keep an old read out.
async fn no_stale_read_after_an_acknowledged_write(db: TestDatabase) {
    let app = spawn_app_on(db, |s| s.cache.ttl = FLEETING).await;
    let user = app.create_user("Version 0", "versions@example.com").await;
    let path = format!("/users/{}", user["id"]);
    for version in 1..=30 {
        tokio::time::sleep(2 * FLEETING).await;
        let name = format!("Version {version}");
        let body = json!({"name": name});
        let readers = join_all((0..8).map(|_| app.get(&path)));
        let (write, _) = tokio::join!(app.patch_json(&path, &body), readers);
        assert_eq!(write.status(), 200);
        for _ in 0..3 {
            let (_, seen) = read(&app, &path).await;
            assert_eq!(seen["name"], name, "read after the write was acknowledged");
        }
    }
}

/// A cache emptied by its crash serves what the database holds now, even
/// a change made where no invalidation could reach it.
async fn a_crashed_cache_comes_back_empty(app: TestApp) {
    let user = app.create_user("Survivor", "survivor@example.com").await;
    let path = format!("/users/{}", user["id"]);
    read(&app, &path).await;
    let sql = format!(
        "UPDATE users SET name = 'Changed underneath' WHERE id = {}",
        user["id"]
    );
    app.database().execute_unnoticed(&sql).await;
    assert_eq!(
        read(&app, &path).await,
        ("hit".into(), user.clone()),
        "the old row is cached"
    );

    app.crash("cache").await;
    app.restarted("cache", 1).await;
    let (cache, seen) = read(&app, &path).await;
    assert_eq!(
        (cache.as_str(), &seen["name"]),
        ("miss", &json!("Changed underneath"))
    );
    assert_eq!(read(&app, &path).await.0, "hit");
}

on_both_backends!(
    second_read_is_a_hit_and_writes_invalidate,
    a_crashed_cache_comes_back_empty,
);

mod racing {
    use super::*;

    on_both_backends!(databases: no_stale_read_after_an_acknowledged_write);
}

#[actix_web::test]
async fn zero_entries_turns_the_cache_off() {
    let app = crate::helpers::spawn_app_with(Backend::Sqlite, |s| s.cache.max_entries = 0)
        .await
        .unwrap();
    let user = app.create_user("Uncached", "uncached@example.com").await;
    let path = format!("/users/{}", user["id"]);
    for _ in 0..3 {
        assert_eq!(read(&app, &path).await, ("miss".into(), user.clone()));
    }
}

/// On PostgreSQL, `SWITCHBOARD_CACHE_INVALIDATION=none` (one instance
/// alone) caches without listening: `cache_invalidation_listening` stays 0,
/// and a change written by another client is not heard, while an instance
/// on the channel, changed the same way at the same time, hears it and
/// says 1.
#[actix_web::test]
async fn without_the_channel_postgres_caches_and_hears_nothing() {
    use switchboard::config::CacheInvalidation;
    const LISTENING: &str = "cache_invalidation_listening ";
    let Some(listening) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let alone = spawn_app_with(Backend::Postgres, |s| {
        s.cache.invalidation = Some(CacheInvalidation::None)
    })
    .await
    .unwrap();
    let heard = eventually(Duration::from_secs(5), || async {
        scrape(&listening.url("/metrics"), LISTENING).await == Some(1.0)
    })
    .await;
    assert!(heard, "the instance on the channel listens");

    let mut paths = Vec::new();
    for app in [&listening, &alone] {
        let user = app.create_user("Cached", "cached@example.com").await;
        let path = format!("/users/{}", user["id"]);
        app.get(&path).await;
        assert_eq!(read(app, &path).await.0, "hit");
        paths.push(path);
    }
    // Another client's write, straight to each database (its trigger
    // notifies, as switchboard's own writes do).
    for (app, path) in [&listening, &alone].into_iter().zip(&paths) {
        use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
        let id = path.trim_start_matches("/users/");
        let mut conn = AsyncPgConnection::establish(&app.database().url())
            .await
            .unwrap();
        conn.batch_execute(&format!(
            "UPDATE users SET name = 'Changed' WHERE id = {id}"
        ))
        .await
        .unwrap();
    }
    let changed = eventually(Duration::from_secs(5), || async {
        read(&listening, &paths[0]).await.1["name"] == "Changed"
    })
    .await;
    assert!(changed, "the listening instance heard the change");
    let (cache, seen) = read(&alone, &paths[1]).await;
    assert_eq!((cache.as_str(), &seen["name"]), ("hit", &json!("Cached")));
    assert_eq!(scrape(&alone.url("/metrics"), LISTENING).await, Some(0.0));
}

/// `SWITCHBOARD_CACHE_MAX_BYTES` bounds the cache however many entries
/// `SWITCHBOARD_CACHE_MAX_ENTRIES` allows: read 60 users of some 250 bytes
/// each into a cache of 4 KiB, and at most 4 KiB of them are hits when
/// read again, while the same reads under the default bound all hit.
#[actix_web::test]
async fn the_byte_bound_holds_whatever_the_entry_bound() {
    async fn hits_on_a_second_pass(max_bytes: Option<u64>) -> (usize, usize, TestApp) {
        let app = spawn_app_with(Backend::Sqlite, |s| {
            s.server.workers = 1;
            s.cache.max_entries = 10_000;
            if let Some(max_bytes) = max_bytes {
                s.cache.max_bytes = max_bytes;
            }
        })
        .await
        .unwrap();
        let mut paths = Vec::new();
        for n in 0..60 {
            let name = format!("{n:03}{}", "n".repeat(97));
            let user = app.create_user(&name, &format!("u{n}@example.com")).await;
            paths.push(format!("/users/{}", user["id"]));
        }
        let mut largest = 0;
        for path in &paths {
            let (cache, user) = read(&app, path).await;
            assert_eq!(cache, "miss");
            largest = largest.max(user.to_string().len());
        }
        let mut hits = 0;
        for path in &paths {
            hits += usize::from(read(&app, path).await.0 == "hit");
        }
        (hits, largest, app)
    }
    let (hits, largest, app) = hits_on_a_second_pass(Some(4096)).await;
    assert!(largest > 200, "{largest}");
    assert!(
        hits <= 4096 / largest,
        "{hits} hits of about {largest} bytes each in 4 KiB"
    );
    // Events reach the registry when the cache's batch is flushed, a flush
    // interval at most after they happened.
    let evicted = eventually(Duration::from_secs(5), || async {
        scrape(&app.url("/metrics"), "cache_evictions_total ").await > Some(0.0)
    })
    .await;
    assert!(evicted, "evictions are counted");
    let (hits, _, _) = hits_on_a_second_pass(None).await;
    assert_eq!(hits, 60, "the default bound keeps them all");
}

/// Each worker holds a shard of the cache, a key in exactly one of them:
/// 40 users read twice over both workers are 40 entries in all (none
/// cached twice, every shard counted) and the second reads all hit,
/// whichever worker served them.
#[actix_web::test]
async fn every_key_lives_in_one_shard_and_the_gauge_counts_them_all() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.workers = 2)
        .await
        .unwrap();
    let mut paths = Vec::new();
    for n in 0..40 {
        let user = app
            .create_user(&format!("Sharded {n}"), &format!("s{n}@example.com"))
            .await;
        paths.push(format!("/users/{}", user["id"]));
    }
    for path in &paths {
        assert_eq!(read(&app, path).await.0, "miss");
    }
    // Each read on a connection of its own, so both workers serve them.
    let urls: Vec<String> = paths.iter().map(|path| app.url(path)).collect();
    let hits = join_all(urls.into_iter().map(|url| async move {
        let response = reqwest::Client::new().get(url).send().await.unwrap();
        response.headers()["x-cache"] == "hit"
    }))
    .await;
    assert!(hits.iter().all(|hit| *hit), "{hits:?}");
    let counted = eventually(Duration::from_secs(5), || async {
        scrape(&app.url("/metrics"), "cache_entries ").await == Some(40.0)
    })
    .await;
    assert!(
        counted,
        "cache_entries: {:?}",
        scrape(&app.url("/metrics"), "cache_entries ").await
    );
}
