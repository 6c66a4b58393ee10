//! The API's OpenAPI 3.1 description, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types' schemas, served at
//! `GET /openapi.json`; and the interactive documentation at `GET /docs`,
//! Swagger UI bundled in the binary (nothing is fetched from elsewhere, at
//! build or run time).
//!
//! What every route shares is added here once ([`Conventions`]) rather than
//! on each handler: `X-Request-Id` on every answer, and on every route
//! behind the guards the rate-limit fields, and the refusals the guards
//! answer (400, 408, 413, 415, 429, 503, 504).

use std::borrow::Cow;
use std::sync::Arc;

use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse, ResponseError};
use serde_json::{json, Value};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_swagger_ui::Config;

use super::health::{Health, Ready};
use super::{fetch, health, hello, metrics, users};
use crate::actors::metrics::{Latency, RouteStats, StatsSummary};
use crate::auth::Scope;
use crate::domain::{FieldError, User, UserEmail};
use crate::error::{ApiError, Problem, PROBLEM_TYPES};
use crate::fetch::FetchResult;

/// Rust's `White_Space`, which trimming removes.
const SPACE: &str = r"\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Control and bidirectional-formatting characters, which no stored text
/// may hold (`domain::text`).
const HIDDEN: &str = r"\x00-\x1F\x7F-\x9F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069";

/// A name as a request gives it: once trimmed, 1 to 100 characters, none
/// hidden. Exact, so a generated name is accepted if and only if it matches.
pub struct NameText;

impl PartialSchema for NameText {
    fn schema() -> RefOr<Schema> {
        let pattern = format!(
            "^[{SPACE}]*[^{SPACE}{HIDDEN}](?:[^{HIDDEN}]{{0,98}}[^{SPACE}{HIDDEN}])?[{SPACE}]*$"
        );
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .description(Some(
                "1 to 100 characters once trimmed; no control or bidirectional-formatting characters",
            ))
            .examples([json!("Ada Lovelace")])
            .into()
    }
}

impl ToSchema for NameText {
    fn name() -> Cow<'static, str> {
        "UserName".into()
    }
}

/// An email address as a request gives it.
pub struct EmailText;

impl PartialSchema for EmailText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .max_length(Some(UserEmail::MAX_BYTES))
            .description(Some(
                "A bare address (no display name) with a domain name, at most 254 bytes; \
                 unique regardless of case",
            ))
            .examples([json!("Ada@Example.com")])
            .into()
    }
}

impl ToSchema for EmailText {
    fn name() -> Cow<'static, str> {
        "UserEmail".into()
    }
}

/// `POST /users`'s body.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Ada Lovelace", "email": "Ada@Example.com"}))]
pub struct NewUserBody {
    pub name: NameText,
    pub email: EmailText,
}

/// `PATCH /users/{id}`'s body: any of the fields; absent means unchanged.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Ada King"}))]
pub struct UserPatchBody {
    #[schema(required = false)]
    pub name: NameText,
    #[schema(required = false)]
    pub email: EmailText,
}

/// `POST /fetch`'s body.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"urls": ["https://api.example.com/a"]}))]
pub struct FetchBody {
    /// 1 to `SWITCHBOARD_FETCH_MAX_URLS` URLs; each is fetched only if its
    /// host is allowed, and answered on its own either way.
    #[schema(min_items = 1)]
    pub urls: Vec<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard",
        description = "A users API and an outbound fetch API. Every error is an RFC 9457 problem (application/problem+json).",
    ),
    paths(
        health::health,
        health::ready,
        metrics::metrics,
        metrics::stats,
        hello::anonymous,
        hello::named,
        users::list,
        users::create,
        users::get,
        users::update,
        users::delete,
        fetch::fetch,
        document,
    ),
    components(schemas(
        User, Problem, FieldError, FetchResult, StatsSummary, RouteStats, Latency,
        NewUserBody, UserPatchBody, FetchBody, NameText, EmailText, Health, Ready,
    )),
    modifiers(&Conventions),
    tags(
        (name = "users", description = "Create, read, list, update and delete users"),
        (name = "fetch", description = "Fetch upstream URLs, concurrently, through the cache"),
        (name = "hello", description = "The smallest route"),
        (name = "operations", description = "Probes, metrics and this description"),
    )
)]
pub struct ApiDoc;

/// What every route shares, added to each operation.
struct Conventions;

/// Routes outside the guards: no rate limit, no refusals of the guards.
const OPEN: [&str; 3] = ["/health", "/ready", "/metrics"];

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

/// The refusals of the guards in front of every route but the open ones.
const GUARD_REFUSALS: [(&str, &str); 4] = [
    (
        "400",
        "A query parameter the route does not take, or a malformed one",
    ),
    (
        "429",
        "The client spent its allowance (Retry-After says when it is back)",
    ),
    (
        "503",
        "At capacity, or an actor or the database is unavailable (Retry-After)",
    ),
    ("504", "The request ran past its deadline"),
];

/// The refusals of a request body.
const BODY_REFUSALS: [(&str, &str); 4] = [
    ("400", "Malformed JSON"),
    ("408", "The body did not arrive in time"),
    ("413", "The body is over the limit"),
    (
        "415",
        "The body is not JSON, or is encoded (Content-Encoding)",
    ),
];

/// The rate-limit counts every limited answer carries.
const RATE_LIMIT_COUNTS: [(&str, &str); 3] = [
    ("RateLimit-Limit", "Requests the client may make at once"),
    ("RateLimit-Remaining", "Requests the client has left"),
    (
        "RateLimit-Reset",
        "Seconds until the allowance is full again",
    ),
];

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let guarded = !OPEN.contains(&path.as_str());
            for (method, operation) in operations(item) {
                let responses = &mut operation.responses.responses;
                let takes_body = matches!(method, HttpMethod::Post | HttpMethod::Patch);
                let refusals = GUARD_REFUSALS
                    .iter()
                    .filter(|_| guarded)
                    .chain(BODY_REFUSALS.iter().filter(|_| guarded && takes_body));
                for (status, why) in refusals {
                    responses
                        .entry((*status).into())
                        .or_insert_with(|| problem(why));
                }
                for (status, response) in responses.iter_mut() {
                    if let RefOr::T(response) = response {
                        add_headers(response, status, guarded);
                    }
                }
            }
        }
    }
}

/// The headers an answer with `status` carries: the request id always; the
/// rate-limit fields on a guarded route's answers (but a 503 or 504, which
/// come before or without a decision); `Retry-After` on 429 and 503.
fn add_headers(response: &mut Response, status: &str, guarded: bool) {
    let text = || HeaderBuilder::new().schema(String::schema()).build();
    let number = |description: &str| {
        HeaderBuilder::new()
            .schema(u64::schema())
            .description(Some(description))
            .build()
    };
    response.headers.insert("X-Request-Id".into(), text());
    if guarded && status != "503" && status != "504" {
        for name in ["RateLimit-Policy", "RateLimit"] {
            response.headers.insert(name.into(), text());
        }
        for (name, description) in RATE_LIMIT_COUNTS {
            response.headers.insert(name.into(), number(description));
        }
    }
    if status == "429" || status == "503" {
        let wait = number("Seconds to wait before retrying");
        response.headers.insert("Retry-After".into(), wait);
    }
}

/// Every operation of a path, with its method.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (HttpMethod, &mut utoipa::openapi::path::Operation)> {
    [
        (HttpMethod::Get, item.get.as_mut()),
        (HttpMethod::Post, item.post.as_mut()),
        (HttpMethod::Patch, item.patch.as_mut()),
        (HttpMethod::Delete, item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation?)))
}

/// The description as served: the generated one with what depends on the
/// settings, rendered once at start-up.
#[derive(Clone)]
pub struct Description(Arc<str>);

impl Description {
    /// `bearer`: access control is on.
    pub fn new(fetch_max_urls: usize, bearer: bool) -> Self {
        let mut document =
            serde_json::to_value(ApiDoc::openapi()).expect("the description serializes");
        document["components"]["schemas"]["FetchBody"]["properties"]["urls"]["maxItems"] =
            json!(fetch_max_urls);
        document["components"]["schemas"]["Problem"]["properties"]["type"]["enum"] =
            json!(PROBLEM_TYPES);
        link_created_users(&mut document);
        if bearer {
            require_tokens(&mut document);
        }
        let text = serde_json::to_string_pretty(&document).expect("the description serializes");
        Self(text.into())
    }
}

/// With access control on: the bearer scheme, the scope each protected
/// operation needs ([`super::PROTECTED`]), and its 401 and 403 answers.
fn require_tokens(document: &mut Value) {
    document["components"]["securitySchemes"] = json!({"bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT signed by a configured key, with `exp` and `sub`; its `scope` (space-separated) or `scp` (array) grants `users:read`, `users:write`, `fetch` or `admin`",
    }});
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths {
        let (Some(access), Some(operations)) = (super::access(path), item.as_object_mut()) else {
            continue;
        };
        for (method, operation) in operations {
            let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            let scopes: Vec<&str> = access.scope(&method).map(Scope::name).into_iter().collect();
            operation["security"] = json!([{"bearer": scopes}]);
            let request_id = operation["responses"]
                .as_object()
                .and_then(|responses| {
                    responses
                        .values()
                        .find_map(|response| response["headers"].get("X-Request-Id"))
                })
                .cloned();
            for (status, description) in [
                (
                    "401",
                    "No token, or one that does not verify (`WWW-Authenticate` says why)",
                ),
                ("403", "The token lacks the scope this operation needs"),
            ] {
                let mut headers = json!({"WWW-Authenticate": {
                    "description": "The bearer challenge (RFC 6750), with `error` and `error_description` when a token was sent",
                    "schema": {"type": "string"},
                }});
                if let Some(request_id) = &request_id {
                    headers["X-Request-Id"] = request_id.clone();
                }
                operation["responses"][status] = json!({
                    "description": description,
                    "headers": headers,
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                });
            }
        }
    }
}

/// A created user links to reading, changing and deleting it, so clients
/// (and stateful testers) can follow them. Written as JSON: utoipa 5's
/// `Link` serializes its fields in snake case (`operation_id`), which no
/// OpenAPI reader understands.
fn link_created_users(document: &mut Value) {
    let links = [
        ("GetUser", "getUser"),
        ("UpdateUser", "updateUser"),
        ("DeleteUser", "deleteUser"),
    ]
    .map(|(name, operation)| {
        let link = json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}});
        (name.to_owned(), link)
    });
    document["paths"]["/users"]["post"]["responses"]["201"]["links"] =
        Value::Object(links.into_iter().collect());
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "This description (OpenAPI 3.1)", content_type = "application/json"))
)]
pub async fn document(description: web::Data<Description>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(description.0.to_string())
}

/// `/docs/{file}`: Swagger UI's files, from the binary.
async fn docs_file(
    file: web::Path<String>,
    config: web::Data<Arc<Config<'static>>>,
) -> HttpResponse {
    match utoipa_swagger_ui::serve(&file, Arc::clone(&config)) {
        Ok(Some(file)) => HttpResponse::Ok()
            .content_type(file.content_type)
            .body(file.bytes.into_owned()),
        Ok(None) => ApiError::NotFound("no such file of the documentation".into()).error_response(),
        Err(err) => {
            tracing::error!(%err, "cannot serve the documentation");
            ApiError::Internal.error_response()
        }
    }
}

/// `/docs` is the folder `/docs/` (the page's files are relative to it).
async fn docs_folder() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// The documentation's two resources, behind the guards like every route.
pub fn docs(cfg: &mut web::ServiceConfig) {
    let config = Arc::new(Config::from("/openapi.json"));
    cfg.service(super::Endpoint::new("/docs").get(docs_folder).guarded())
        .service(
            super::Endpoint::new("/docs/{file:.*}")
                .get(docs_file)
                .data(web::Data::new(config))
                .guarded(),
        );
}
