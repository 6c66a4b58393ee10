//! The users API on both backends: every success path and its status codes.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, invalid_fields, TestApp};

async fn create_answers_201_with_location(app: TestApp) {
    let response = app
        .post_json(
            "/users",
            &json!({"name": "  Ada Lovelace ", "email": "Ada@Example.com"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let user: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/users/{}", user["id"]));
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["created_at"], user["updated_at"]);
    assert!(chrono::DateTime::parse_from_rfc3339(user["created_at"].as_str().unwrap()).is_ok());

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, user);
}

async fn get_unknown_user_is_404(app: TestApp) {
    let problem = assert_problem(app.get("/users/4242").await, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("4242"));
}

async fn list_pages_by_id_with_next_links(app: TestApp) {
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            app.create_user(&format!("User {i}"), &format!("u{i}@example.com"))
                .await["id"]
                .clone(),
        );
    }
    let mut seen = Vec::new();
    let mut next = Some("/users?limit=2".to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
        let page: Vec<Value> = response.json().await.unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|u| u["id"].clone()));
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    let all: Vec<Value> = app.get("/users").await.json().await.unwrap();
    assert_eq!(all.len(), 5, "default page holds all five");
    let exact = app.get("/users?limit=5").await;
    assert!(
        exact.headers().get("link").is_none(),
        "no next link when nothing remains"
    );
}

async fn list_refuses_bad_paging(app: TestApp) {
    for query in ["limit=0", "limit=101", "limit=ten", "after=-1", "after=x"] {
        let problem = assert_problem(app.get(&format!("/users?{query}")).await, 400).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(query.split('=').next().unwrap()),
            "{query}: {detail}"
        );
    }
}

async fn patch_changes_given_fields_only(app: TestApp) {
    let user = app.create_user("Grace", "grace@example.com").await;
    let path = format!("/users/{}", user["id"]);

    let response = app
        .patch_json(&path, &json!({"name": "Grace Hopper"}))
        .await;
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["name"], "Grace Hopper");
    assert_eq!(patched["email"], "grace@example.com");
    assert_eq!(patched["created_at"], user["created_at"]);
    assert!(patched["updated_at"].as_str() > user["updated_at"].as_str());

    let patched: Value = app
        .patch_json(&path, &json!({"email": "GRACE@navy.mil"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["email"], "GRACE@navy.mil");

    let unchanged = app.patch_json(&path, &json!({})).await;
    assert_eq!(unchanged.status(), 200);
    assert_eq!(unchanged.json::<Value>().await.unwrap(), patched);

    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, patched);
}

async fn patch_refuses_unknown_taken_and_invalid(app: TestApp) {
    let first = app.create_user("One", "one@example.com").await;
    app.create_user("Two", "two@example.com").await;
    let path = format!("/users/{}", first["id"]);

    assert_problem(
        app.patch_json("/users/999", &json!({"name": "x"})).await,
        404,
    )
    .await;
    let problem = assert_problem(
        app.patch_json(&path, &json!({"email": "TWO@example.com"}))
            .await,
        409,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("email"));
    let problem = assert_problem(
        app.patch_json(&path, &json!({"name": "", "email": 7}))
            .await,
        422,
    )
    .await;
    assert_eq!(invalid_fields(&problem), ["name", "email"]);

    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, first, "refused patches change nothing");
}

async fn delete_answers_204_then_404(app: TestApp) {
    let user = app.create_user("Temp", "temp@example.com").await;
    let path = format!("/users/{}", user["id"]);
    let response = app.delete(&path).await;
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_problem(app.get(&path).await, 404).await;
    assert_problem(app.delete(&path).await, 404).await;

    // The address is free again once its user is gone.
    app.create_user("Temp again", "TEMP@example.com").await;
}

async fn email_taken_in_another_case_is_409(app: TestApp) {
    app.create_user("First", "Same@Example.com").await;
    let response = app
        .post_json(
            "/users",
            &json!({"name": "Second", "email": "same@EXAMPLE.com"}),
        )
        .await;
    let problem = assert_problem(response, 409).await;
    assert_eq!(problem["type"], "/problems/conflict");
    let all: Vec<Value> = app.get("/users").await.json().await.unwrap();
    assert_eq!(all.len(), 1);
}

async fn unicode_names_round_trip(app: TestApp) {
    for name in [
        "Zoë Ångström",
        "李小龍",
        "Ἀριστοτέλης",
        "🦀 Ferris",
        &"é".repeat(100),
    ] {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let user = app.create_user(name, &email).await;
        assert_eq!(user["name"], name);
        let read: Value = app
            .get(&format!("/users/{}", user["id"]))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(read["name"], name);
    }
}

on_both_backends!(
    create_answers_201_with_location,
    get_unknown_user_is_404,
    list_pages_by_id_with_next_links,
    list_refuses_bad_paging,
    patch_changes_given_fields_only,
    patch_refuses_unknown_taken_and_invalid,
    delete_answers_204_then_404,
    email_taken_in_another_case_is_409,
    unicode_names_round_trip,
);
