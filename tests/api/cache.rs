//! Reading users through the cache: hits skip the database, writes
//! invalidate before they are acknowledged, and a crashed cache comes back
//! empty while reads keep succeeding.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};

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
    assert_eq!(read(&app, &path).await, ("hit".into(), patched));

    assert_eq!(app.delete(&path).await.status(), 204);
    assert_eq!(
        app.get(&path).await.status(),
        404,
        "a deleted user is not served from the cache"
    );
}

async fn no_stale_read_after_an_acknowledged_write(app: TestApp) {
    let user = app.create_user("Version 0", "versions@example.com").await;
    let path = format!("/users/{}", user["id"]);
    for version in 1..=30 {
        let name = format!("Version {version}");
        let body = json!({"name": name});
        // Readers race the write, filling the cache with whatever they read.
        let readers = join_all((0..4).map(|_| app.get(&path)));
        let (write, _) = tokio::join!(app.patch_json(&path, &body), readers);
        assert_eq!(write.status(), 200);
        for _ in 0..3 {
            let (_, seen) = read(&app, &path).await;
            assert_eq!(seen["name"], name, "read after the write was acknowledged");
        }
    }
}

async fn a_crashed_cache_comes_back_empty(app: TestApp) {
    let user = app.create_user("Survivor", "survivor@example.com").await;
    let path = format!("/users/{}", user["id"]);
    read(&app, &path).await;
    assert_eq!(read(&app, &path).await.0, "hit");

    app.crash("cache").await;
    // Served from the database while the cache restarts, then cached anew.
    assert_eq!(read(&app, &path).await, ("miss".into(), user.clone()));
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
            read(&app, &path).await.0 == "hit"
        })
        .await
    );
}

on_both_backends!(
    second_read_is_a_hit_and_writes_invalidate,
    no_stale_read_after_an_acknowledged_write,
    a_crashed_cache_comes_back_empty,
);

#[actix_web::test]
async fn zero_entries_turns_the_cache_off() {
    let app = crate::helpers::spawn_app_with(Backend::Sqlite, |s| s.cache_max_entries = 0)
        .await
        .unwrap();
    let user = app.create_user("Uncached", "uncached@example.com").await;
    let path = format!("/users/{}", user["id"]);
    for _ in 0..3 {
        assert_eq!(read(&app, &path).await, ("miss".into(), user.clone()));
    }
}
