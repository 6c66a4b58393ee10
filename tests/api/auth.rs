//! Access control on the real binary: every refusal a token can earn, each
//! scope allowed and refused, keys rotated without a restart, limits per
//! subject, protected mode, the admin listener, and secrets and tokens kept
//! out of `--help` and the logs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, Backend, TestDatabase};
use crate::process_app::ProcessApp;

/// The HS256 secret the tests sign with (it is only ever in a temp file).
const SECRET: &str = "switchboard-test-secret-of-at-least-32-bytes";
const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "switchboard";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass every rule: `scope` as given.
fn claims(sub: &str, scope: &str) -> Value {
    json!({"sub": sub, "scope": scope, "exp": now() + 300, "iss": ISSUER, "aud": AUDIENCE})
}

/// Keys the tests sign with.
enum Signer {
    Secret(&'static str),
    Rsa(&'static str),
    Ec,
    Ed,
}

fn sign(signer: Signer, claims: &Value) -> String {
    let (algorithm, kid, key) = match signer {
        Signer::Secret(secret) => (
            Algorithm::HS256,
            None,
            EncodingKey::from_secret(secret.as_bytes()),
        ),
        Signer::Rsa(kid) => (
            Algorithm::RS256,
            Some(kid),
            EncodingKey::from_rsa_der(&std::fs::read(fixture(&format!("{kid}.der"))).unwrap()),
        ),
        Signer::Ec => (
            Algorithm::ES256,
            Some("ec-1"),
            EncodingKey::from_ec_der(&std::fs::read(fixture("ec-1.der")).unwrap()),
        ),
        Signer::Ed => (
            Algorithm::EdDSA,
            Some("ed-1"),
            EncodingKey::from_ed_der(&std::fs::read(fixture("ed-1.der")).unwrap()),
        ),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(Signer::Secret(SECRET), claims)
}

/// A token with a header and a signature made by hand.
fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string()),
        b64.encode(signature)
    )
}

/// The binary with a secret file and a JWKS file (both in `keys`), the
/// issuer and audience checked.
struct Secured {
    app: ProcessApp,
    keys: tempfile::TempDir,
    _db: TestDatabase,
}

impl Secured {
    async fn start(vars: &[(&str, &str)]) -> Self {
        let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
        let keys = tempfile::tempdir().unwrap();
        let secret = keys.path().join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let jwks = keys.path().join("jwks.json");
        std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
        let (secret, jwks) = (secret.display().to_string(), jwks.display().to_string());
        let mut all = vec![
            ("SWITCHBOARD_AUTH_JWT_SECRET_FILE", secret.as_str()),
            ("SWITCHBOARD_AUTH_JWKS_FILE", jwks.as_str()),
            ("SWITCHBOARD_AUTH_ISSUER", ISSUER),
            ("SWITCHBOARD_AUTH_AUDIENCE", AUDIENCE),
        ];
        all.extend_from_slice(vars);
        let app = ProcessApp::start(&db.url(), &all);
        Self { app, keys, _db: db }
    }

    fn jwks(&self) -> PathBuf {
        self.keys.path().join("jwks.json")
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new().request(method, self.app.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The status of `method` on `path` with `token` (and a JSON body).
    async fn status(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> u16 {
        let request = self.request(method, path, Some(token));
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        request.send().await.unwrap().status().as_u16()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap()
    }

    /// Every log line so far, as written.
    fn log_text(&self) -> String {
        let lines: Vec<String> = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
            .iter()
            .flat_map(|level| self.app.logged_at_level(level))
            .map(|event| event.to_string())
            .collect();
        lines.join("\n")
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Asserts a 401 `invalid_token` whose description says `why`.
async fn assert_invalid(response: reqwest::Response, why: &str) {
    let challenge = header(&response, "www-authenticate");
    assert!(
        challenge.starts_with(r#"Bearer realm="switchboard", error="invalid_token""#)
            && challenge.contains(why),
        "{why}: {challenge}"
    );
    let problem = assert_problem(response, 401).await;
    assert!(
        problem["detail"].as_str().unwrap().contains(why),
        "{problem}"
    );
}

#[actix_web::test]
async fn every_bad_token_is_a_401_that_says_why() {
    let s = Secured::start(&[]).await;
    let users = "/users";

    let none = s.get(users, None).await;
    assert_eq!(
        header(&none, "www-authenticate"),
        r#"Bearer realm="switchboard""#
    );
    assert_problem(none, 401).await;

    let cases: Vec<(String, &str)> = vec![
        ("not-a-jwt$".into(), "malformed"),
        ("a.b.c".into(), "header is malformed"),
        (
            sign(
                Signer::Secret("another-secret-that-is-32-bytes-long!"),
                &claims("ada", "users:read"),
            ),
            "signature does not verify",
        ),
        (
            hs256(
                &json!({"sub": "ada", "scope": "users:read", "exp": now() - 120, "iss": ISSUER, "aud": AUDIENCE}),
            ),
            "expired",
        ),
        (
            hs256(
                &json!({"sub": "ada", "scope": "users:read", "exp": now() + 300, "nbf": now() + 300, "iss": ISSUER, "aud": AUDIENCE}),
            ),
            "not valid yet",
        ),
        (
            hs256(&json!({"sub": "ada", "scope": "users:read", "iss": ISSUER, "aud": AUDIENCE})),
            "no expiry",
        ),
        (
            hs256(
                &json!({"scope": "users:read", "exp": now() + 300, "iss": ISSUER, "aud": AUDIENCE}),
            ),
            "no subject",
        ),
        (
            hs256(
                &json!({"sub": "ada", "scope": "users:read", "exp": now() + 300, "iss": "https://evil.test", "aud": AUDIENCE}),
            ),
            "issuer",
        ),
        (
            hs256(
                &json!({"sub": "ada", "scope": "users:read", "exp": now() + 300, "iss": ISSUER, "aud": "someone-else"}),
            ),
            "audience",
        ),
        (
            forged(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims("ada", "users:read"),
                b"",
            ),
            "header is malformed",
        ),
        (
            forged(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-9"}),
                &claims("ada", "users:read"),
                b"x",
            ),
            "kid) is unknown",
        ),
    ];
    for (token, why) in &cases {
        assert_invalid(s.get(users, Some(token)).await, why).await;
    }

    // Algorithm confusion: an HS256 token keyed with rsa-1's public key,
    // naming rsa-1. The key allows RS256 only.
    let public_pem = std::fs::read(fixture("rsa-1.pub.pem")).unwrap();
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("rsa-1".into());
    let token = encode(
        &confused,
        &claims("ada", "users:read"),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_invalid(
        s.get(users, Some(&token)).await,
        "algorithm is not the one its key allows",
    )
    .await;

    // Another scheme, and a token in the query string.
    let basic = s
        .request(reqwest::Method::GET, users, None)
        .basic_auth("ada", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_invalid(basic, "scheme must be Bearer").await;
    let good = hs256(&claims("ada", "users:read"));
    let in_query = s.get(&format!("/users?access_token={good}"), None).await;
    assert_invalid(in_query, "query string").await;

    // A 20 KB header is refused with a 4xx, never a 5xx.
    let huge = format!("Bearer {}", "a".repeat(20 * 1024));
    let response = s
        .request(reqwest::Method::GET, users, None)
        .header("authorization", huge)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());

    // Counted by reason (the scrape needs the admin scope here).
    let admin = hs256(&claims("ops", "admin"));
    let counted = eventually(Duration::from_secs(5), || async {
        let text = s.get("/metrics", Some(&admin)).await.text().await.unwrap();
        ["missing", "invalid", "expired"].iter().all(|reason| {
            text.lines().any(|line| {
                line.starts_with(&format!("auth_failures_total{{reason=\"{reason}\"}}"))
                    && !line.ends_with(" 0")
            })
        })
    })
    .await;
    assert!(counted, "auth_failures_total counts each reason");
}

#[actix_web::test]
async fn each_scope_allows_what_it_names_and_nothing_else() {
    let s = Secured::start(&[("SWITCHBOARD_FETCH_ALLOW_HOSTS", "127.0.0.1:9")]).await;
    let reader = hs256(&claims("reader", "users:read"));
    let writer = hs256(
        &json!({"sub": "writer", "scp": ["users:write", "users:read"], "exp": now() + 300, "iss": ISSUER, "aud": AUDIENCE}),
    );
    let fetcher = hs256(&claims("fetcher", "fetch"));
    let body = json!({"name": "Ada", "email": "ada@example.com"});

    let refused = s
        .request(reqwest::Method::POST, "/users", Some(&reader))
        .json(&body)
        .send()
        .await
        .unwrap();
    let challenge = header(&refused, "www-authenticate");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains(r#"scope="users:write""#),
        "{challenge}"
    );
    assert_problem(refused, 403).await;

    let created = s
        .request(reqwest::Method::POST, "/users", Some(&writer))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/users/{id}");

    assert_eq!(s.get(&path, Some(&reader)).await.status(), 200);
    assert_eq!(s.get("/users", Some(&reader)).await.status(), 200);
    assert_eq!(
        s.status(reqwest::Method::HEAD, &path, &reader, None).await,
        200
    );
    assert_eq!(s.get(&path, Some(&fetcher)).await.status(), 403);
    let patch = json!({"name": "Ada L."});
    assert_eq!(
        s.status(reqwest::Method::PATCH, &path, &reader, Some(&patch))
            .await,
        403
    );
    assert_eq!(
        s.status(reqwest::Method::PATCH, &path, &writer, Some(&patch))
            .await,
        200
    );
    assert_eq!(
        s.status(reqwest::Method::DELETE, &path, &reader, None)
            .await,
        403
    );

    let urls = json!({"urls": ["http://127.0.0.1:9/"]});
    assert_eq!(
        s.status(reqwest::Method::POST, "/fetch", &reader, Some(&urls))
            .await,
        403
    );
    assert_eq!(
        s.status(reqwest::Method::POST, "/fetch", &fetcher, Some(&urls))
            .await,
        200
    );

    // Keys of every kind the JWKS holds, and the scheme in any case.
    for signer in [Signer::Rsa("rsa-1"), Signer::Ec, Signer::Ed] {
        let token = sign(signer, &claims("reader", "users:read"));
        assert_eq!(s.get(&path, Some(&token)).await.status(), 200);
    }
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let response = s
            .request(reqwest::Method::GET, &path, None)
            .header("authorization", format!("{scheme} {reader}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    assert_eq!(
        s.status(reqwest::Method::DELETE, &path, &writer, None)
            .await,
        204
    );

    // Open with no token: the probes, the description and the docs.
    for open in ["/health", "/ready", "/openapi.json", "/docs/"] {
        assert_eq!(s.get(open, None).await.status(), 200, "{open}");
    }
    assert_eq!(s.get("/metrics", None).await.status(), 401);
    assert_eq!(s.get("/metrics", Some(&reader)).await.status(), 403);

    // The access line names the subject; no line holds a token.
    let line = s.app.wait_for_log("request", |e| {
        e["route"] == "/users/{id}" && e["status"] == 204
    });
    assert_eq!(line["subject"], "writer", "{line}");
    let logs = s.log_text();
    for token in [&reader, &writer, &fetcher] {
        assert!(!logs.contains(token.as_str()), "a token was logged");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token's signature was logged");
    }
    assert!(!logs.contains(SECRET), "the secret was logged");

    // The description declares the scheme and each operation's scope.
    let description: Value = s.get("/openapi.json", None).await.json().await.unwrap();
    assert_eq!(
        description["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        description["paths"]["/users"]["post"]["security"],
        json!([{"bearer": ["users:write"]}])
    );
    assert_eq!(
        description["paths"]["/users/{id}"]["get"]["security"],
        json!([{"bearer": ["users:read"]}])
    );
    assert!(description["paths"]["/fetch"]["post"]["responses"]["403"].is_object());
    assert!(description["paths"]["/health"]["get"]
        .get("security")
        .is_none());
}

#[actix_web::test]
async fn keys_rotate_on_file_change_and_on_sighup_without_a_restart() {
    let s = Secured::start(&[]).await;
    let old = sign(Signer::Rsa("rsa-1"), &claims("ada", "users:read"));
    let new = sign(Signer::Rsa("rsa-2"), &claims("ada", "users:read"));
    // Each request on a connection of its own: every worker verifies, and
    // keeps, the old token.
    for _ in 0..4 {
        assert_eq!(s.get("/users", Some(&old)).await.status(), 200);
    }
    assert_eq!(s.get("/users", Some(&new)).await.status(), 401);

    // The file is replaced: the new kid is accepted, the old one refused.
    std::fs::copy(fixture("jwks-rotated.json"), s.jwks()).unwrap();
    let rotated = eventually(Duration::from_secs(10), || async {
        s.get("/users", Some(&new)).await.status() == 200
    })
    .await;
    assert!(rotated, "the rotated key was never accepted");
    for _ in 0..4 {
        assert_invalid(s.get("/users", Some(&old)).await, "kid) is unknown").await;
    }

    // A broken file keeps the keys in use, and says why.
    std::fs::write(s.jwks(), "{ not json").unwrap();
    s.app.wait_for_log(
        "the key files cannot be used: keeping the keys in use",
        |e| {
            e["why"]
                .as_str()
                .unwrap_or_default()
                .contains("not a JWKS document")
        },
    );
    assert_eq!(s.get("/users", Some(&new)).await.status(), 200);

    // SIGHUP reloads (and does not end the process).
    std::fs::copy(fixture("jwks.json"), s.jwks()).unwrap();
    s.app.signal(nix::sys::signal::Signal::SIGHUP);
    let back = eventually(Duration::from_secs(10), || async {
        s.get("/users", Some(&old)).await.status() == 200
    })
    .await;
    assert!(back, "the first key was never accepted again");
    s.app.signal(nix::sys::signal::Signal::SIGHUP);
    s.app
        .wait_for_log("SIGHUP: the key files are unchanged", |_| true);
    assert_eq!(s.get("/health", None).await.status(), 200);
}

/// A token every worker has verified, and kept, is refused once it
/// expires, as it was the first time.
#[actix_web::test]
async fn a_verified_token_is_refused_once_it_expires() {
    let s = Secured::start(&[("SWITCHBOARD_AUTH_LEEWAY_SECONDS", "0")]).await;
    let expires = now() + 3;
    let token = hs256(
        &json!({"sub": "ada", "scope": "users:read", "exp": expires, "iss": ISSUER, "aud": AUDIENCE}),
    );
    for _ in 0..4 {
        assert_eq!(s.get("/users", Some(&token)).await.status(), 200);
    }
    let refused = eventually(Duration::from_secs(10), || async {
        s.get("/users", Some(&token)).await.status() == 401
    })
    .await;
    assert!(refused, "the token was still accepted at {}", now());
    assert!(now() > expires, "refused only once expired");
    for _ in 0..4 {
        let response = s.get("/users", Some(&token)).await;
        assert!(header(&response, "www-authenticate").contains("the token has expired"));
    }
}

#[actix_web::test]
async fn an_authenticated_request_spends_its_subjects_allowance() {
    let s = Secured::start(&[
        ("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "1"),
        ("SWITCHBOARD_RATE_LIMIT_BURST", "3"),
    ])
    .await;
    let ada = hs256(&claims("ada", "users:read"));
    let bob = hs256(&claims("bob", "users:read"));
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let (here, there) = (from("127.0.0.1"), from("127.0.0.2"));
    let get = |client: &reqwest::Client, token: &str| {
        client.get(s.app.url("/users")).bearer_auth(token).send()
    };
    for _ in 0..3 {
        assert_eq!(get(&here, &ada).await.unwrap().status(), 200);
    }
    // Ada's allowance is spent, from any address.
    assert_eq!(get(&here, &ada).await.unwrap().status(), 429);
    assert_eq!(get(&there, &ada).await.unwrap().status(), 429);
    // Bob, behind the same address, has his own.
    let bobs = get(&here, &bob).await.unwrap();
    assert_eq!(bobs.status(), 200);
    assert_eq!(header(&bobs, "ratelimit-remaining"), "2");
}

#[actix_web::test]
async fn protected_mode_refuses_a_public_listener_without_keys() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("DATABASE_URL", db.url())
        .env("SWITCHBOARD_BIND", "0.0.0.0:0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for named in [
        "SWITCHBOARD_AUTH",
        "SWITCHBOARD_AUTH_JWKS_FILE",
        "SWITCHBOARD_AUTH=none",
    ] {
        assert!(stderr.contains(named), "{stderr}");
    }

    // Told that a proxy authenticates, it serves.
    let app = ProcessApp::start(
        &db.url(),
        &[
            ("SWITCHBOARD_BIND", "0.0.0.0:0"),
            ("SWITCHBOARD_AUTH", "none"),
        ],
    );
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let users = reqwest::get(format!("http://127.0.0.1:{port}/users"))
        .await
        .unwrap();
    assert_eq!(users.status(), 200);
}

#[actix_web::test]
async fn the_admin_listener_serves_what_operators_read_and_the_public_one_does_not() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let app = ProcessApp::start(
        &db.url(),
        &[
            ("SWITCHBOARD_ADMIN_BIND", "127.0.0.1:0"),
            ("SWITCHBOARD_CHAOS", "true"),
        ],
    );
    let listening = app.wait_for_log("listening", |_| true);
    let admin = format!(
        "http://{}",
        listening["admin"].as_str().expect("admin address")
    );
    let public = |path: &str| reqwest::get(app.url(path));
    let on_admin = |path: &str| reqwest::get(format!("{admin}{path}"));

    for path in ["/metrics", "/stats"] {
        assert_problem(public(path).await.unwrap(), 404).await;
        assert_eq!(on_admin(path).await.unwrap().status(), 200, "{path}");
    }
    let drill = reqwest::Client::new()
        .post(app.url("/debug/crash/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(drill.status(), 404);
    for path in ["/health", "/ready"] {
        assert_eq!(public(path).await.unwrap().status(), 200, "{path}");
        assert_eq!(on_admin(path).await.unwrap().status(), 200, "{path}");
    }
    assert_eq!(public("/users").await.unwrap().status(), 200);
    assert_problem(on_admin("/users").await.unwrap(), 404).await;
}

#[test]
fn help_shows_no_secret() {
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--help")
        .env("SWITCHBOARD_AUTH_JWT_SECRET_FILE", &secret)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("SWITCHBOARD_AUTH_JWT_SECRET_FILE"), "{help}");
    assert!(!help.contains(SECRET));
}

#[actix_web::test]
async fn a_short_secret_stops_start_up_without_showing_it() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("secret");
    std::fs::write(&secret, "too-short-secret").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("DATABASE_URL", db.url())
        .env("SWITCHBOARD_AUTH_JWT_SECRET_FILE", &secret)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("at least 32 bytes"), "{said}");
    assert!(!said.contains("too-short-secret"), "{said}");
}
