//! The `switchboard` binary: read settings, start logging, build, run.
//!
//! It allocates with jemalloc, its background thread on. glibc's malloc kept
//! what a burst of load had freed (buffers of hundreds of connections,
//! spread over its per-thread arenas), so a server stayed at its peak RSS
//! long after the load; jemalloc's background thread hands freed pages back
//! to the system within seconds (its dirty-page decay), idle or not.
//! jemalloc also takes the place of `malloc` itself (unprefixed), so the
//! bundled SQLite's own allocations are returned the same way.

use std::process::ExitCode;

use switchboard::config::{ConfigError, Settings};
use switchboard::startup::{Application, Stopped};
use switchboard::telemetry;

/// The exit status after an actor was given up (`EX_SOFTWARE`): the process
/// supervisor should start a fresh process.
const ESCALATED: u8 = 70;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Before any thread starts.
    let background_purge = tikv_jemalloc_ctl::background_thread::write(true);
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(ConfigError::Cli(err)) => err.exit(),
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log.format, &settings.log.filter);
    if let Err(err) = background_purge {
        tracing::warn!(%err, "no allocator background thread: freed memory is returned only as allocations go on");
    }
    actix_web::rt::System::new().block_on(async move {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(%err, "start-up failed");
                eprintln!("switchboard: {err}");
                return ExitCode::FAILURE;
            }
        };
        match app.run_until_stopped().await {
            Ok(Stopped::OnSignal) => ExitCode::SUCCESS,
            Ok(Stopped::Escalated(_)) => ExitCode::from(ESCALATED),
            Err(err) => {
                tracing::error!(%err, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}
