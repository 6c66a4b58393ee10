//! switchboard's integration tests: one binary (it links once), the real
//! application on a random port, a real SQLite file or a freshly created
//! PostgreSQL database per test. Tests listed in `on_both_backends!` run on
//! both; PostgreSQL ones skip, saying so, when no server answers on
//! 127.0.0.1:5432, unless SWITCHBOARD_REQUIRE_POSTGRES=1.

#[macro_use]
mod helpers;
mod process_app;
mod requires;

mod auth;
mod batches;
mod cache;
mod coherence;
mod concurrency;
mod conventions;
mod deploy;
mod fetch;
mod guards;
mod health;
mod hostile;
mod lookups;
mod metrics;
mod migrations;
mod observability;
mod pg;
mod pipeline;
mod prepared;
mod process;
mod storage;
mod supervision;
mod topology;
mod traces;
mod users;
mod validation;
