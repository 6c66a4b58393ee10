//! Logging: one `tracing` subscriber for the whole process, human-readable or
//! JSON lines for log shippers, filtered as `RUST_LOG` says.
//!
//! A panic anywhere (an actor's handler, a request's future) becomes one
//! structured error line instead of the default hook's free text on stderr,
//! so operators find it with the same query as every other failure.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber and panic hook. Call once, before anything
/// logs; a second call (as in tests that build several apps) is a no-op.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if installed.is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(
                panic.message = %panic_message(info.payload()),
                panic.location = %location,
                "panic"
            );
        }));
    }
}

/// The text a panic carried, if it was a string.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
