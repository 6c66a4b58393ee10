//! switchboard: an actor-based async REST service. Thin actix-web handlers
//! turn each request into a typed message for one of a few supervised actix
//! actors, which own all shared state.
//!
//! # Layout
//!
//! Dependencies point one way, from the HTTP edge down:
//! `routes` → `middleware` → `actors` → `db`, `domain`, `fetch`,
//! `rate_limit`, `metrics`, `traces`.
//!
//! - [`startup`]: start the actors, bind, serve; shut down in order;
//!   [`lifecycle`]: serving, draining or escalating, as the probes say.
//! - [`config`]: every setting declared once, by section, and its layers,
//!   and the task (serve, `migrate`, `healthcheck`); [`telemetry`]: logs;
//!   [`traces`]: OpenTelemetry traces over OTLP;
//!   [`healthcheck`]: the container health check's client.
//! - [`routes`]: thin handlers, one module per resource.
//! - [`middleware`]: the request context (id, access line, request metrics)
//!   and the guards (body limit, load shedding, rate limit, deadline).
//! - [`app_state`]: what handlers share: actor handles and limits.
//! - [`error`]: `ApiError`, the RFC 9457 problem every failure becomes;
//!   [`request_id`]: the id a problem and every log line carry.
//! - [`actors`]: the actors (database, cache, rate limiter, fetcher,
//!   metrics), their supervision, the roster that lists them, and
//!   `ActorRef`, the caller's side. They know no HTTP.
//! - [`db`]: schema, rows, pools, the users queries, writes in batches (one
//!   mechanism, a strategy per backend), migrations; what only PostgreSQL or
//!   only SQLite does in a module of its own.
//! - [`domain`]: validated input types (parse, don't validate).
//! - [`fetch`]: allow-list, circuit breaker, retry policy, one attempt.
//! - [`rate_limit`]: the policy, GCRA in Redis, the response headers.
//! - [`metrics`]: the events and the per-thread recorder that batches them.
//!
//! # The supervision tree
//!
//! ```text
//! roster
//! ├── metrics, fetcher                one each, on an arbiter of its own
//! ├── span_exporter                   while traces are on, on an arbiter of its own
//! ├── db_writer                       SQLite only, on an arbiter of its own
//! └── per HTTP worker, on its thread
//!     ├── db (shard = worker)         its share of the pool
//!     ├── cache (shard)               its share of the keys
//!     └── rate_limiter (shard)        its share of the clients
//! ```
//!
//! Each actor restarts on a panic with fresh state, after a backoff, and is
//! given up past its restart intensity ([`actors::supervision`]).
//!
//! # A request's path
//!
//! `request_context` (id, access line) → `guards` (size, query, in-flight
//! cap, rate limit through the worker's outbox to the client's limiter
//! shard, deadline) → a handler, which asks one actor: `GET /users/{id}`
//! asks the cache, and on a miss its worker's `db` actor, then fills the
//! cache; writes go to the worker's `db` actor, which batches them (SQLite:
//! sends them on to the writer, which batches them), and invalidate the
//! cache; `POST /fetch` asks the fetcher, which reads through the cache.

pub mod actors;
pub mod app_state;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod fetch;
pub mod healthcheck;
pub mod lifecycle;
pub mod metrics;
pub mod middleware;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod traces;
