//! Logging: one `tracing` subscriber for the whole process, human-readable
//! or JSON lines for log shippers, filtered as `RUST_LOG` says.
//!
//! Every request runs in a span that carries its id (see
//! [`crate::middleware::request_context`]), and messages to actors carry the
//! caller's span, so every line written while serving a request, by a
//! handler, an error's cause or an actor, names the request. The pretty
//! format prints the span before the line; the JSON format puts the span's
//! fields beside the line's own, at the top level (`request_id`, `method`,
//! `client`...), so a log shipper can search by them without knowing about
//! spans. Colour is used only when stdout is a terminal: escape codes in a
//! file or a pipe are noise.
//!
//! A panic anywhere (an actor's handler, a request's future) becomes one
//! structured error line instead of the default hook's free text on stderr,
//! so operators find it with the same query as every other failure.

use std::fmt;
use std::io::IsTerminal;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber and panic hook. Call once, before anything
/// logs; a second call (as in tests that build several apps) is a no-op.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
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

/// One JSON object per line: time, level, target, the fields of every span
/// the line was written in (outermost first), then the line's own fields
/// (`message` among them).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        line.insert("timestamp".into(), now.into());
        let metadata = event.metadata();
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            let extensions = span.extensions();
            let fields = extensions
                .get::<FormattedFields<N>>()
                .and_then(|fields| serde_json::from_str::<Map<String, Value>>(fields).ok());
            line.extend(fields.into_iter().flatten());
        }
        event.record(&mut JsonVisitor(&mut line));
        let mut text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        text.push('\n');
        writer.write_str(&text)
    }
}

/// Puts an event's fields into a JSON object, numbers as numbers.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
