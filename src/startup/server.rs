//! The HTTP server: the listeners (the public one, and the admin one when
//! it is set), and the app each worker serves (its actors first, then the
//! middleware and the routes).

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};

use crate::config::Settings;
use crate::middleware::listener::{self, AdminListener};
use crate::middleware::request_context::request_context;
use crate::middleware::{compress, disconnect};
use crate::routes;
use crate::routes::openapi::Description;

use super::workers::{Worker, WorkerSpec};
use super::StartupError;

pub(super) fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { address, source };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

thread_local! {
    /// This worker thread's actors and guard state, while its applications
    /// are built. actix-web builds a worker's application once per
    /// listener: the admin listener's build must serve with the same ones,
    /// not start its own. The last build takes them out: what a thread
    /// keeps is dropped after its runtime is gone, where dropping an
    /// actor's handle panics (and the process aborts) instead of stopping
    /// it; the applications drop them inside the runtime.
    static WORKER: RefCell<Option<(Worker, usize)>> = const { RefCell::new(None) };
}

/// This worker's state for one of its `builds` applications.
fn worker_for_build(spec: &WorkerSpec, builds: usize) -> Worker {
    WORKER.with_borrow_mut(|held| {
        let (worker, left) = held.get_or_insert_with(|| (spec.start_worker(), builds));
        *left -= 1;
        let worker = worker.clone();
        if *left == 0 {
            *held = None;
        }
        worker
    })
}

/// The listeners: the public one, and the admin one if it is set.
pub(super) struct Listeners {
    pub public: TcpListener,
    pub admin: Option<(TcpListener, SocketAddr)>,
}

/// The HTTP server: each worker starts its actors, then serves the routes.
pub(super) fn serve(
    listeners: Listeners,
    settings: &Settings,
    spec: WorkerSpec,
) -> std::io::Result<Server> {
    let (body_limit, chaos) = (settings.server.body_limit_bytes, settings.server.chaos);
    let origins = settings.server.cors_origins.clone();
    let description = web::Data::new(Description::new(
        settings.fetch.max_urls,
        settings.auth_keys().any(),
    ));
    let admin = AdminListener(listeners.admin.as_ref().map(|(_, address)| *address));
    let builds = 1 + usize::from(admin.0.is_some());
    let server = HttpServer::new(move || {
        let Worker {
            db,
            guards,
            metrics,
        } = worker_for_build(&spec, builds);
        App::new()
            .app_data(admin)
            .app_data(spec.state.clone())
            .app_data(description.clone())
            .app_data(web::Data::new(db))
            .app_data(guards)
            .app_data(metrics)
            .app_data(
                web::JsonConfig::default()
                    .limit(body_limit)
                    .error_handler(routes::json_error),
            )
            .app_data(web::PayloadConfig::default().limit(body_limit))
            .app_data(web::QueryConfig::default().error_handler(routes::query_error))
            .app_data(web::PathConfig::default().error_handler(routes::path_error))
            .configure(|cfg| routes::configure(cfg, chaos))
            .wrap(Condition::new(admin.0.is_some(), from_fn(listener::mark)))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(request_context))
            .wrap(from_fn(compress::compress))
    })
    .on_connect(disconnect::remember_connection)
    .workers(settings.server.workers)
    // Signals are handled in `run_until_stopped`: actix-server's own
    // handler would also stop the actix system, and with it the actors'
    // arbiters, before they are shut down in order.
    .disable_signals()
    .shutdown_timeout(settings.shutdown.timeout.as_secs())
    .listen(listeners.public)?;
    let server = match listeners.admin {
        Some((admin, _)) => server.listen(admin)?,
        None => server,
    };
    Ok(server.run())
}

/// CORS for browsers on `origins`: the methods and request headers the API
/// takes, the response headers a client reads, preflights cached an hour.
fn cors(origins: &[String]) -> Cors {
    let exposed = [
        "location",
        "link",
        "etag",
        "retry-after",
        "x-request-id",
        "x-cache",
        "ratelimit-policy",
        "ratelimit",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "www-authenticate",
    ];
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "if-match",
            "if-none-match",
            "x-request-id",
        ])
        .expose_headers(exposed)
        .max_age(3600)
}
