//! Bad input: every way a client can get a request wrong gets a 4xx
//! problem+json that names the problem, and nothing is stored.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, invalid_fields, spawn_app_with, Backend, TestApp};

async fn post_raw(
    app: &crate::helpers::TestApp,
    content_type: &str,
    body: &'static str,
) -> reqwest::Response {
    app.client
        .post(app.url("/users"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn malformed_and_non_json_bodies(app: TestApp) {
    for body in ["{\"name\": \"Ada\"", "", "not json", "{\"name\": \"a\",}"] {
        let problem = assert_problem(post_raw(&app, "application/json", body).await, 400).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("JSON"),
            "{body:?}: {problem}"
        );
    }
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let body = "{\"name\": \"Ada\", \"email\": \"ada@example.com\"}";
        let problem = assert_problem(post_raw(&app, content_type, body).await, 415).await;
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("application/json"));
    }
    let response = app
        .client
        .post(app.url("/users"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415).await;
    let all: Vec<Value> = app.get("/users").await.json().await.unwrap();
    assert!(all.is_empty());
}

async fn json_that_is_not_an_object(app: TestApp) {
    for body in [json!([1, 2]), json!("Ada"), json!(42), json!(null)] {
        let problem = assert_problem(app.post_json("/users", &body).await, 422).await;
        assert_eq!(invalid_fields(&problem), ["body"], "{body}");
    }
}

async fn missing_and_wrongly_typed_fields(app: TestApp) {
    let cases = [
        (json!({}), vec!["name", "email"]),
        (json!({"name": "Ada"}), vec!["email"]),
        (json!({"email": "ada@example.com"}), vec!["name"]),
        (json!({"name": 1, "email": true}), vec!["name", "email"]),
        (
            json!({"name": ["Ada"], "email": {"x": 1}}),
            vec!["name", "email"],
        ),
        (
            json!({"name": null, "email": "ada@example.com"}),
            vec!["name"],
        ),
        (
            json!({"name": "Ada", "email": "ada@example.com", "admin": true}),
            vec!["admin"],
        ),
    ];
    for (body, fields) in cases {
        let problem = assert_problem(app.post_json("/users", &body).await, 422).await;
        assert_eq!(invalid_fields(&problem), fields, "{body}");
        for field in &fields {
            assert!(problem["detail"].as_str().unwrap().contains(field));
        }
    }
}

async fn invalid_names(app: TestApp) {
    let long = "a".repeat(101);
    for (name, says) in [
        ("", "empty"),
        ("   \t ", "blank"),
        (long.as_str(), "100"),
        ("Ada\u{0000}", "control"),
        ("Ada\nLovelace", "control"),
        ("\u{001b}[31mred", "control"),
    ] {
        let response = app
            .post_json("/users", &json!({"name": name, "email": "ada@example.com"}))
            .await;
        let problem = assert_problem(response, 422).await;
        assert_eq!(invalid_fields(&problem), ["name"], "{name:?}");
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{name:?}: {message}");
    }
}

async fn invalid_emails(app: TestApp) {
    let long = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long.len(), 255);
    for email in [
        "",
        "plainaddress",
        "@example.com",
        "ada@",
        "ada@@example.com",
        "ada example@x.com",
        long.as_str(),
    ] {
        let response = app
            .post_json("/users", &json!({"name": "Ada", "email": email}))
            .await;
        let problem = assert_problem(response, 422).await;
        assert_eq!(invalid_fields(&problem), ["email"], "{email:?}");
    }
    let all: Vec<Value> = app.get("/users").await.json().await.unwrap();
    assert!(all.is_empty());
}

async fn bad_ids_are_400(app: TestApp) {
    for id in ["abc", "1.5", "99999999999999999999999", "0", "-3", "%20"] {
        let path = format!("/users/{id}");
        let problem = assert_problem(app.get(&path).await, 400).await;
        assert!(problem["detail"].as_str().unwrap().contains("id"), "{id}");
        assert_problem(app.delete(&path).await, 400).await;
        assert_problem(app.patch_json(&path, &json!({"name": "x"})).await, 400).await;
    }
}

on_both_backends!(
    malformed_and_non_json_bodies,
    json_that_is_not_an_object,
    missing_and_wrongly_typed_fields,
    invalid_names,
    invalid_emails,
    bad_ids_are_400,
);

#[actix_web::test]
async fn body_over_the_limit_is_413() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.server.body_limit_bytes = 1024)
        .await
        .unwrap();
    let name = "a".repeat(2000);
    let response = app
        .post_json("/users", &json!({"name": name, "email": "big@example.com"}))
        .await;
    let problem = assert_problem(response, 413).await;
    assert!(problem["detail"].as_str().unwrap().contains("1024"));

    // Also when the client does not say the length up front.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|_| Ok(vec![b' '; 100])).collect();
    let response = app
        .client
        .post(app.url("/users"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_problem(response, 413).await;
    let all: Vec<Value> = app.get("/users").await.json().await.unwrap();
    assert!(all.is_empty());
}
