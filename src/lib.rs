//! switchboard: an actor-based async REST service. Thin actix-web handlers
//! turn each request into a typed message for one of a few supervised actix
//! actors, which own all shared state. See the README for the tour.

pub mod actors;
pub mod app_state;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod fetch;
pub mod metrics;
pub mod middleware;
pub mod rate_limit;
pub mod routes;
pub mod startup;
pub mod telemetry;
