//! The `switchboard` binary: read settings, start logging, build, run.

use std::process::ExitCode;

use switchboard::config::{ConfigError, Settings};
use switchboard::startup::Application;
use switchboard::telemetry;

fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(ConfigError::Cli(err)) => err.exit(),
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format, &settings.log_filter);
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
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(%err, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}
