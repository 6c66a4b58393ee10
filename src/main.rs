//! The `switchboard` binary: read settings, start logging, then serve (build,
//! run), migrate, or check a running instance's health.
//!
//! It allocates with jemalloc, its background thread on. glibc's malloc kept
//! what a burst of load had freed (buffers of hundreds of connections,
//! spread over its per-thread arenas), so a server stayed at its peak RSS
//! long after the load; jemalloc's background thread hands freed pages back
//! to the system within seconds (its dirty-page decay), idle or not.
//! jemalloc also takes the place of `malloc` itself (unprefixed), so the
//! bundled SQLite's own allocations are returned the same way.

use std::process::ExitCode;

use switchboard::config::{ConfigError, Invocation, Settings, Task};
use switchboard::db::migrate::{migrate, schema_status};
use switchboard::startup::{Application, StartupError, Stopped};
use switchboard::traces::TraceSettings;
use switchboard::{healthcheck, telemetry};

/// The exit status after an actor was given up (`EX_SOFTWARE`): the process
/// supervisor should start a fresh process.
const ESCALATED: u8 = 70;
/// The exit status for what the operator must change: a bad setting, or a
/// schema that must be migrated first, a token key that cannot be used.
const MISCONFIGURED: u8 = 2;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Before any thread starts.
    let background_purge = tikv_jemalloc_ctl::background_thread::write(true);
    let Invocation { settings, task } = match Invocation::load() {
        Ok(invocation) => invocation,
        Err(ConfigError::Cli(err)) => err.exit(),
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::from(MISCONFIGURED);
        }
    };
    let traces = match TraceSettings::from_env() {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::from(MISCONFIGURED);
        }
    };
    telemetry::init(settings.log.format, &settings.log.filter, traces);
    if let Err(err) = background_purge {
        tracing::warn!(%err, "no allocator background thread: freed memory is returned only as allocations go on");
    }
    match task {
        Task::Serve => actix_web::rt::System::new().block_on(serve(settings)),
        Task::Migrate { check } => {
            actix_web::rt::System::new().block_on(migrations(settings, check))
        }
        Task::Healthcheck => match healthcheck::check(settings.server.bind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("switchboard: unhealthy: {why}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(%err, "start-up failed");
            eprintln!("switchboard: {err}");
            return match err {
                StartupError::MigrationsPending(_)
                | StartupError::Keys(_)
                | StartupError::Traces(_) => ExitCode::from(MISCONFIGURED),
                _ => ExitCode::FAILURE,
            };
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
}

/// `switchboard migrate`: applies what is pending and prints each version;
/// with `check`, applies nothing and exits 1 if any is pending.
async fn migrations(settings: Settings, check: bool) -> ExitCode {
    let url = &settings.database.url;
    if check {
        return match schema_status(url).await {
            Ok(status) if status.pending.is_empty() => {
                println!("no migration pending");
                ExitCode::SUCCESS
            }
            Ok(status) => {
                println!("pending: {}", status.pending.join(" "));
                ExitCode::FAILURE
            }
            Err(err) => {
                eprintln!("switchboard: {err}");
                ExitCode::from(MISCONFIGURED)
            }
        };
    }
    match migrate(url).await {
        Ok(applied) if applied.is_empty() => {
            println!("no migration pending");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for version in applied {
                println!("applied {version}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("switchboard: {err}");
            ExitCode::FAILURE
        }
    }
}
