//! The benchmark suite's yardstick for the rate limiter (`benches/suite.py`):
//! `GET /hello` on bare actix-web behind `actix-governor`, a per-key token
//! bucket held in shared memory, keyed as switchboard keys a client behind a
//! trusted proxy (the last `X-Forwarded-For` entry, else the peer address).
//! Its rate and burst are switchboard's (`SWITCHBOARD_RATE_LIMIT_PER_SECOND`,
//! `SWITCHBOARD_RATE_LIMIT_BURST`), and it answers with the rate-limit
//! headers as switchboard does, so the two do the same work per request.

mod common;

use std::net::IpAddr;

use actix_governor::{Governor, GovernorConfigBuilder, KeyExtractor, SimpleKeyExtractionError};
use actix_web::dev::ServiceRequest;
use actix_web::{web, App, HttpServer};
use switchboard::config::Settings;

/// The client address a trusted proxy appended, or the peer's own.
#[derive(Clone)]
struct ClientAddress;

impl KeyExtractor for ClientAddress {
    type Key = IpAddr;
    type KeyExtractionError = SimpleKeyExtractionError<&'static str>;

    fn extract(&self, req: &ServiceRequest) -> Result<IpAddr, Self::KeyExtractionError> {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|line| line.to_str().ok())
            .flat_map(|line| line.split(','))
            .last()
            .and_then(|entry| entry.trim().parse().ok());
        forwarded
            .or_else(|| req.peer_addr().map(|peer| peer.ip()))
            .ok_or_else(|| SimpleKeyExtractionError::new("no client address"))
    }
}

fn main() -> std::io::Result<()> {
    let settings = Settings::load().map_err(|e| std::io::Error::other(e.to_string()))?;
    let limits = GovernorConfigBuilder::default()
        .requests_per_second(settings.rate_limit.per_second.into())
        .burst_size(settings.rate_limit.burst)
        .key_extractor(ClientAddress)
        .use_headers()
        .finish()
        .ok_or_else(|| std::io::Error::other("rate and burst must not be zero"))?;
    let started = web::Data::new(std::time::Instant::now());
    actix_web::rt::System::new().block_on(
        HttpServer::new(move || {
            App::new()
                .app_data(started.clone())
                .route("/health", web::get().to(common::health))
                .service(
                    web::resource("/hello")
                        .wrap(Governor::new(&limits))
                        .route(web::get().to(common::hello)),
                )
        })
        .workers(settings.server.workers)
        .bind(settings.server.bind)?
        .run(),
    )
}
