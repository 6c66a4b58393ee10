//! The HTTP conventions client libraries assume: HEAD, OPTIONS and 405 with
//! `Allow`; unknown query parameters refused; lookup by email; entity tags
//! for conditional reads and safe concurrent writes; CORS when asked for;
//! compressed answers; and the API's own description, served and
//! committed, rendered by a real browser.

use std::io::Read;
use std::process::Command;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, Backend, TestApp};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Every `GET` operation the description lists answers `HEAD` with the
/// same status and headers, and no body.
#[actix_web::test]
async fn head_answers_on_every_get_route() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let user = app.create_user("Head", "head@example.com").await;
    let description: Value = app.get("/openapi.json").await.json().await.unwrap();
    let described = description["paths"].as_object().unwrap();
    let gets: Vec<&String> = described
        .iter()
        .filter(|(_, operations)| operations.get("get").is_some())
        .map(|(template, _)| template)
        .collect();
    assert!(gets.len() >= 9, "{gets:?}");
    // And the routes the description leaves out: the docs and a drill.
    let undescribed = ["/docs/{file}".to_owned(), "/debug/slow/{ms}".to_owned()];
    for template in gets.into_iter().chain(&undescribed) {
        let path = template
            .replace("{id}", &user["id"].to_string())
            .replace("{name}", "Ada")
            .replace("{ms}", "1")
            .replace("{file}", "index.html");
        let get = app.get(&path).await;
        let head = app.client.head(app.url(&path)).send().await.unwrap();
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert_eq!(
            header(&head, "content-type"),
            header(&get, "content-type"),
            "HEAD {path}"
        );
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
}

#[actix_web::test]
async fn head_options_and_405_say_what_a_route_takes() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for path in ["/health", "/users", "/hello", "/openapi.json"] {
        let response = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
    }
    let response = app.client.put(app.url("/users")).send().await.unwrap();
    assert_eq!(header(&response, "allow"), "GET, HEAD, POST, OPTIONS");
    assert_problem(response, 405).await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/users/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(&response, "allow"),
        "GET, HEAD, PATCH, DELETE, OPTIONS"
    );
}

#[actix_web::test]
async fn unknown_query_parameters_are_a_400_naming_them() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let problem = assert_problem(app.get("/users?emial=a@example.com").await, 400).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"emial\"") && detail.contains("limit, after, email"),
        "{detail}"
    );
    let problem = assert_problem(app.get("/hello?x=1").await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("\"x\""));
    assert_eq!(app.get("/users?limit=5&after=1").await.status(), 200);
}

async fn users_are_found_by_email_regardless_of_case(app: TestApp) {
    let ada = app.create_user("Ada", "Ada@Example.com").await;
    app.create_user("Bob", "bob@example.com").await;
    let found: Vec<Value> = app
        .get("/users?email=ada@EXAMPLE.com")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found, [ada]);
    let none: Vec<Value> = app
        .get("/users?email=carol@example.com")
        .await
        .json()
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_problem(app.get("/users?email=not-an-address").await, 400).await;
}

async fn entity_tags_make_reads_conditional_and_writes_safe(app: TestApp) {
    let user = app.create_user("Tagged", "tagged@example.com").await;
    let path = format!("/users/{}", user["id"]);
    let first = app.get(&path).await;
    let tag = header(&first, "etag");
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    // Not modified, whether the cache or the database answers.
    for _ in 0..2 {
        let again = app
            .client
            .get(app.url(&path))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(header(&again, "etag"), tag);
    }

    // Two clients edit from the same version: one wins, one is told.
    let edits = join_all(["Alice's edit", "Bob's edit"].map(|name| {
        app.client
            .patch(app.url(&path))
            .header("if-match", &tag)
            .json(&json!({ "name": name }))
            .send()
    }))
    .await;
    let mut statuses: Vec<u16> = edits
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 412]);
    let current = header(&app.get(&path).await, "etag");
    assert_ne!(current, tag);
    let stale = app
        .client
        .delete(app.url(&path))
        .header("if-match", &tag)
        .send()
        .await
        .unwrap();
    assert_problem(stale, 412).await;
    // A value that is no list of entity tags is named, not taken for a
    // condition that failed.
    let malformed = app
        .client
        .delete(app.url(&path))
        .header("if-match", current.trim_matches('"'))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(malformed, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("If-Match"));
    // Entity tags may hold commas; the current one is found in the list.
    let deleted = app
        .client
        .delete(app.url(&path))
        .header("if-match", format!("\"a,b\", {current}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
}

on_both_backends!(
    users_are_found_by_email_regardless_of_case,
    entity_tags_make_reads_conditional_and_writes_safe
);

async fn preflight(app: &TestApp) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url("/users"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn cors_is_off_by_default_and_answers_the_origins_listed() {
    let off = spawn_app(Backend::Sqlite).await.unwrap();
    let response = preflight(&off).await;
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let on = spawn_app_with(Backend::Sqlite, |s| {
        s.server.cors_origins = vec!["https://app.example.com".into()];
    })
    .await
    .unwrap();
    let response = preflight(&on).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(header(&response, "access-control-max-age"), "3600");
    let response = on
        .client
        .get(on.url("/users"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    let exposed = header(&response, "access-control-expose-headers");
    for name in [
        "ratelimit-remaining",
        "location",
        "link",
        "x-request-id",
        "etag",
    ] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    let elsewhere = on
        .client
        .get(on.url("/users"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(elsewhere
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[actix_web::test]
async fn answers_worth_compressing_are_compressed_for_clients_that_ask() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for n in 0..50 {
        app.create_user(&format!("User {n}"), &format!("u{n}@example.com"))
            .await;
    }
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let fetch = |path: &'static str, accept: &'static str| {
        raw.get(app.url(path))
            .header("accept-encoding", accept)
            .send()
    };
    let plain = fetch("/users?limit=50", "identity").await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(header(&plain, "vary"), "accept-encoding");
    let plain = plain.bytes().await.unwrap();

    for _ in 0..3 {
        let gzipped = fetch("/users?limit=50", "br;q=1.0, gzip;q=0.8")
            .await
            .unwrap();
        assert_eq!(header(&gzipped, "content-encoding"), "gzip");
        assert_eq!(header(&gzipped, "vary"), "accept-encoding");
        let compressed = gzipped.bytes().await.unwrap();
        assert!(
            compressed.len() * 3 < plain.len(),
            "{} of {} bytes",
            compressed.len(),
            plain.len()
        );
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, plain);
    }

    // Not worth it (under 1 KiB, or over the 256 KiB that would hold the
    // worker), or not wanted.
    for (path, accept) in [
        ("/hello", "gzip"),
        ("/users/1", "gzip"),
        ("/docs/swagger-ui-bundle.js", "gzip"),
        ("/users?limit=50", "gzip;q=0"),
    ] {
        let response = fetch(path, accept).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{path} with {accept}"
        );
        assert_eq!(header(&response, "vary"), "accept-encoding", "{path}");
    }
    let script = fetch("/docs/swagger-ui-bundle.js", "identity")
        .await
        .unwrap();
    assert!(script.bytes().await.unwrap().len() > 256 * 1024);
    // Of the same kind and under the ceiling, compressed.
    let style = fetch("/docs/swagger-ui.css", "gzip").await.unwrap();
    assert_eq!(header(&style, "content-encoding"), "gzip");
}

#[actix_web::test]
async fn the_served_description_is_the_committed_one() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let response = app.get("/openapi.json").await;
    assert_eq!(header(&response, "content-type"), "application/json");
    let served = response.text().await.unwrap();
    let description: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(description["openapi"], "3.1.0");
    let committed =
        std::fs::read_to_string(format!("{REPO}/docs/openapi.json")).unwrap_or_default();
    if std::env::var("SWITCHBOARD_WRITE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(format!("{REPO}/docs/openapi.json"), &served).unwrap();
        return;
    }
    assert!(
        served == committed,
        "docs/openapi.json differs from what the server serves: run \
         SWITCHBOARD_WRITE_OPENAPI=1 cargo test the_served_description and review the change"
    );
}

#[actix_web::test]
async fn the_docs_page_renders_every_operation_in_a_real_browser() {
    if !crate::requires::chromium() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let profile = tempfile::tempdir().unwrap();
    let url = app.url("/docs/");
    let dom = tokio::task::spawn_blocking(move || {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=15000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .output()
            .expect("run chromium")
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    // Every operation the description lists is on the page, under its path.
    let description: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = description["paths"].as_object().unwrap();
    let mut rendered = 0;
    for (path, operations) in paths {
        for operation in operations.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap();
            let tag = operation["tags"][0].as_str().unwrap_or("default");
            let entry = format!("data-path=\"{path}\"><a class=\"nostyle\" href=\"#/{tag}/{id}\">");
            assert!(
                dom.contains(&entry),
                "{id} ({path}) is not on the rendered page"
            );
            rendered += 1;
        }
    }
    assert!(rendered >= 13, "only {rendered} operations described");
    assert!(dom.contains("switchboard"), "the title is rendered");
}
