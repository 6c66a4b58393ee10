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
//! Fields named `otel.*` are left out: they name a span in its trace
//! ([`crate::traces`]), not a line in the logs.
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
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::traces::TraceSettings;

/// Installs the global subscriber and panic hook, and the trace exporter's
/// layer when `traces` says where to export. Call once, before anything
/// logs; a second call (as in tests that build several apps) is a no-op.
pub fn init(format: LogFormat, filter: &str, traces: Option<TraceSettings>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // `RUST_LOG` filters everything unless traces need spans it leaves out.
    let installed = match crate::traces::layer(traces) {
        None => tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(format))
            .try_init(),
        Some(traces) => tracing_subscriber::registry()
            .with(log_layer(format).with_filter(filter))
            .with(traces)
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

/// The log lines, in `format`.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let logs = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Pretty => logs.fmt_fields(LogFields).boxed(),
        LogFormat::Json => logs
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .boxed(),
    }
}

/// Fields named `otel.*` name a span in its trace (its name, its kind):
/// not what a log line needs.
fn for_logs(field: &Field) -> bool {
    !field.name().starts_with("otel.")
}

/// The human-readable fields, `otel.*` left out.
struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = DefaultVisitor::new(writer, true);
        fields.record(&mut ForLogs(&mut visitor));
        visitor.finish()
    }
}

/// Hands a visitor the fields a log line shows.
struct ForLogs<'a, V>(&'a mut V);

impl<V: Visit> Visit for ForLogs<'_, V> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if for_logs(field) {
            self.0.record_f64(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if for_logs(field) {
            self.0.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if for_logs(field) {
            self.0.record_u64(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if for_logs(field) {
            self.0.record_bool(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if for_logs(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if for_logs(field) {
            self.0.record_debug(field, value);
        }
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
            let fields = fields.into_iter().flatten();
            line.extend(fields.filter(|(name, _)| !name.starts_with("otel.")));
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
