//! A hostile client, tried against the real application: slow bodies,
//! compressed bodies, forged proxy headers, floods of unknown paths, and
//! input that hides what it is. Distinct clients are distinct loopback
//! addresses (127.0.0.2, 127.0.0.3, ...).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{
    assert_problem, invalid_fields, spawn_app_with, Backend, TestApp, TestDatabase,
};
use crate::process_app::ProcessApp;

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// An HTTP client whose requests come from `source`.
fn client_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source)
        .build()
        .unwrap()
}

fn server_address(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A connection from `source` that sends a `POST /users` declaring a
/// 1,000-byte body, and one byte of it.
async fn trickle_from(source: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let head = "POST /users HTTP/1.1\r\nHost: switchboard\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The status line's code of whatever the server answered on `stream`.
async fn status_of(mut stream: TcpStream) -> Option<u16> {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[actix_web::test]
async fn one_client_trickling_bodies_cannot_starve_the_others() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.max_in_flight = 32;
        s.server.body_read_timeout = Duration::from_millis(1500);
    })
    .await
    .unwrap();
    let server = server_address(&app);
    // More trickling bodies than the whole in-flight cap.
    let trickles = join_all((0..40).map(|_| trickle_from(loopback(2), server))).await;
    // The trickling client holds its share of the cap: an eighth of 32.
    let holding = crate::helpers::eventually(Duration::from_secs(5), || async {
        crate::helpers::scrape(&app.url("/metrics"), "http_requests_in_flight ").await == Some(4.0)
    })
    .await;
    assert!(holding, "the trickling client holds its share");

    let other = client_from(loopback(3));
    for _ in 0..20 {
        let response = other.get(app.url("/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200, "another client is served meanwhile");
    }

    let statuses = join_all(trickles.into_iter().map(status_of)).await;
    let timed_out = statuses.iter().filter(|s| **s == Some(408)).count();
    let shed = statuses.iter().filter(|s| **s == Some(503)).count();
    assert_eq!(timed_out + shed, 40, "{statuses:?}");
    assert!(
        (1..=4).contains(&timed_out),
        "the trickler held its share (4 of 32) and no more: {statuses:?}"
    );
    // The slots came back: the trickler is served again.
    let own = client_from(loopback(2));
    assert_eq!(
        own.get(app.url("/hello")).send().await.unwrap().status(),
        200
    );
}

#[actix_web::test]
async fn a_body_that_stalls_is_cut_off_with_408() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.body_read_timeout = Duration::from_millis(500)
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let stream = trickle_from(loopback(4), server_address(&app)).await;
    assert_eq!(status_of(stream).await, Some(408));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off at the body-read timeout, not the request deadline"
    );
    let count = app.get("/users").await.json::<Vec<Value>>().await.unwrap();
    assert!(count.is_empty(), "nothing half-read was stored");
}

/// 56 MiB of zeros, gzip-compressed to about 57 KB.
fn gzip_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..56 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

/// A compressed body is refused on its headers: the answer comes while the
/// body is still being sent, so none of it was read, let alone inflated.
#[actix_web::test]
async fn compressed_bodies_are_refused_before_they_are_read() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = ProcessApp::start(&db.url(), &[("SWITCHBOARD_BODY_LIMIT_BYTES", "65536")]);
    let bomb = gzip_bomb();
    assert!(bomb.len() < 65536, "{} bytes", bomb.len());

    let address = app.url("").trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /users HTTP/1.1\r\nHost: switchboard\r\nContent-Type: application/json\r\n\
         Content-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        bomb.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A kilobyte of the body, and never the rest: a server that read the
    // body before deciding would still be waiting for it.
    stream.write_all(&bomb[..1024]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered while the body was still coming")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 415"), "{answer}");
    assert!(answer.contains("accept-encoding: identity"), "{answer}");

    // Whole bombs, many at once, get the same answer and its reason.
    let client = reqwest::Client::new();
    let sends = (0..20).map(|_| {
        client
            .post(app.url("/users"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
    });
    for response in join_all(sends).await {
        let problem = assert_problem(response.unwrap(), 415).await;
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("Content-Encoding"));
    }
}

#[actix_web::test]
async fn behind_a_proxy_the_client_is_the_entry_the_proxy_wrote() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 2;
        s.clients.trust_proxy = true;
    })
    .await
    .unwrap();
    // The client forges a line of its own; the proxy appends its own line.
    let statuses = join_all((0..3).map(|n| {
        app.client
            .get(app.url("/hello"))
            .header("x-forwarded-for", format!("10.9.9.{n}"))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
    }))
    .await;
    let mut statuses: Vec<u16> = statuses
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 429],
        "one allowance: the proxy's entry"
    );

    // One IPv6 host owns its /64: a fresh address buys no fresh allowance.
    let v6 = join_all(
        ["2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:ffff::3"].map(|ip| {
            app.client
                .get(app.url("/hello"))
                .header("x-forwarded-for", ip)
                .send()
        }),
    )
    .await;
    let limited = v6
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 429)
        .count();
    assert_eq!(limited, 1);
}

#[actix_web::test]
async fn rfc_7239_forwarded_is_read_when_the_proxy_writes_it() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 1;
        s.clients.trust_proxy = true;
        s.clients.forwarded_header = switchboard::config::ForwardedHeader::Forwarded;
    })
    .await
    .unwrap();
    let send = |own: &'static str| {
        app.client
            .get(app.url("/hello"))
            .header("forwarded", own)
            .header("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https")
            .send()
    };
    assert_eq!(send("for=1.1.1.1").await.unwrap().status(), 200);
    assert_eq!(send("for=2.2.2.2").await.unwrap().status(), 429);
    // X-Forwarded-For is not what this proxy writes: it buys nothing, and
    // requests without the proxy's entry count against their peer.
    let forged = |ip: &'static str| {
        app.client
            .get(app.url("/hello"))
            .header("x-forwarded-for", ip)
            .send()
    };
    assert_eq!(forged("3.3.3.3").await.unwrap().status(), 200);
    assert_eq!(forged("4.4.4.4").await.unwrap().status(), 429);
}

#[actix_web::test]
async fn without_trust_a_forged_header_is_ignored() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 1;
    })
    .await
    .unwrap();
    let statuses = join_all((0..2).map(|n| {
        app.client
            .get(app.url("/hello"))
            .header("x-forwarded-for", format!("10.1.1.{n}"))
            .send()
    }))
    .await;
    let limited = statuses
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 429)
        .count();
    assert_eq!(limited, 1, "both count against the peer");
}

#[actix_web::test]
async fn a_flood_of_unknown_paths_is_limited_like_anything_else() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 3;
    })
    .await
    .unwrap();
    for n in 0..3 {
        let response = app.get(&format!("/no/such/{n}")).await;
        assert!(response.headers().contains_key("ratelimit-remaining"));
        assert_problem(response, 404).await;
    }
    let response = app.client.delete(app.url("/nowhere")).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 429).await;
}

#[actix_web::test]
async fn a_huge_path_is_cut_short_in_the_log_and_the_answer() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = ProcessApp::start(&db.url(), &[]);
    let path = format!("/{}", "a".repeat(7000));
    let response = reqwest::Client::new()
        .get(app.url(&path))
        .header("x-request-id", "long-path")
        .header("user-agent", "b".repeat(4000))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 404).await;
    assert!(problem["detail"].as_str().unwrap().len() < 300, "{problem}");
    let line = app.wait_for_log("request", |e| e["request_id"] == "long-path");
    assert!(line["path"].as_str().unwrap().len() <= 200, "{line}");
    assert!(line["user_agent"].as_str().unwrap().len() <= 200, "{line}");
}

async fn hidden_characters_and_display_names_are_422(app: TestApp) {
    let cases = [
        (
            json!({"name": "Mallory", "email": "Anyone <victim@example.com>"}),
            "email",
        ),
        (
            json!({"name": "admin\u{202E}nimda", "email": "m1@example.com"}),
            "name",
        ),
        (
            json!({"name": "nul\u{0}byte", "email": "m2@example.com"}),
            "name",
        ),
        (
            json!({"name": "Mallory", "email": "m3\u{0}@example.com"}),
            "email",
        ),
        (
            json!({"name": "Mallory", "email": "m4\u{2066}@example.com"}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.post_json("/users", &body).await, 422).await;
        assert_eq!(invalid_fields(&problem), [field], "{body}");
    }
    let users = app.get("/users").await.json::<Vec<Value>>().await.unwrap();
    assert!(users.is_empty(), "nothing was stored: {users:?}");
    // And the database keeps working for everyone else.
    app.create_user("Alice", "alice@example.com").await;
}

on_both_backends!(hidden_characters_and_display_names_are_422);

/// Sessions opened to `app`'s PostgreSQL database since `since`.
async fn sessions_opened_since(app: &TestApp, since: &str) -> i64 {
    use diesel::sql_types::{BigInt, Text};
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        opened: i64,
    }
    let TestDatabase::Postgres { name } = app.database() else {
        unreachable!("a PostgreSQL test")
    };
    let mut admin = AsyncPgConnection::establish(crate::helpers::POSTGRES_ADMIN_URL)
        .await
        .unwrap();
    let counted: Count = diesel::sql_query(
        "SELECT count(*) AS opened FROM pg_stat_activity \
         WHERE datname = $1 AND backend_start > $2::timestamptz",
    )
    .bind::<Text, _>(name)
    .bind::<Text, _>(since)
    .get_result(&mut admin)
    .await
    .unwrap();
    counted.opened
}

/// Values only PostgreSQL refuses, never switchboard's validation: a
/// constraint an operator added (422, naming the body, the database's words
/// kept to the log) and an email already taken (409). The connections that
/// carried them go on serving: no session is opened to replace one.
#[actix_web::test]
async fn database_refusals_on_postgres_retire_no_connection() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

    let Some(app) = crate::helpers::spawn_app(Backend::Postgres).await else {
        return;
    };
    let mut owner = AsyncPgConnection::establish(&app.database().url())
        .await
        .unwrap();
    owner
        .batch_execute(
            "ALTER TABLE users ADD CONSTRAINT no_reserved_names CHECK (name <> 'Reserved')",
        )
        .await
        .unwrap();
    app.create_user("First", "first@example.com").await;
    let since = chrono::Utc::now().to_rfc3339();
    for n in 0..10 {
        let reserved = json!({"name": "Reserved", "email": format!("r{n}@example.com")});
        let problem = assert_problem(app.post_json("/users", &reserved).await, 422).await;
        assert_eq!(invalid_fields(&problem), ["body"], "{problem}");
        assert!(
            !problem.to_string().contains("no_reserved_names"),
            "{problem}"
        );
        let taken = json!({"name": format!("Again {n}"), "email": "first@example.com"});
        assert_problem(app.post_json("/users", &taken).await, 409).await;
    }
    app.create_user("Second", "second@example.com").await;
    assert_eq!(
        sessions_opened_since(&app, &since).await,
        0,
        "no session was opened to replace a retired one"
    );
}
