//! What the standard OpenTelemetry variables ask of switchboard's traces.
//! They are the SDK's own, so operators set switchboard up as they set up
//! every other service beside it; they are read here, once, so that a bad
//! value stops start-up with a message that names the variable, rather
//! than being ignored by a library that falls back in silence.
//!
//! The exporter reads the endpoint, headers and timeout itself
//! (`OTEL_EXPORTER_OTLP_*`), the SDK the sampler
//! (`OTEL_TRACES_SAMPLER`, `_ARG`) and the resource
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); what is checked
//! here is whether to export at all, the protocol, the sampler's name and
//! argument, and the batch processor's `OTEL_BSP_*`, which switchboard's
//! own exporter actor applies ([`super::export`]).

use std::time::Duration;

/// Why the `OTEL_*` variables cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?}: {why}")]
pub struct TraceSettingsError {
    variable: &'static str,
    value: String,
    why: &'static str,
}

/// How spans are batched on their way out (the `OTEL_BSP_*` variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Spans waiting for export at most; past it, new spans are dropped.
    pub max_queue: usize,
    /// How long a span waits for a batch to fill before it is sent anyway.
    pub schedule_delay: Duration,
    /// Spans in one export at most.
    pub max_batch: usize,
    /// How long one export may take before its spans count as dropped.
    pub export_timeout: Duration,
}

impl Default for Batching {
    /// The specification's defaults.
    fn default() -> Self {
        Self {
            max_queue: 2048,
            schedule_delay: Duration::from_millis(5000),
            max_batch: 512,
            export_timeout: Duration::from_millis(30000),
        }
    }
}

/// Traces are exported: where to is the exporter's business.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// The endpoint, as the operator wrote it (for the start-up line).
    pub endpoint: String,
    pub batching: Batching,
}

const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

impl TraceSettings {
    /// The settings in the environment; `None` when nothing is to be
    /// exported: no endpoint, `OTEL_TRACES_EXPORTER=none` or
    /// `OTEL_SDK_DISABLED=true`.
    pub fn from_env() -> Result<Option<Self>, TraceSettingsError> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
    }

    /// [`Self::from_env`] over any source of variables.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TraceSettingsError> {
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter = var("OTEL_TRACES_EXPORTER");
        match exporter.as_deref() {
            None | Some("otlp" | "none") => {}
            Some(other) => {
                return Err(refused(
                    "OTEL_TRACES_EXPORTER",
                    other,
                    "switchboard exports traces over `otlp` only (or `none`)",
                ))
            }
        }
        let Some(endpoint) = endpoint.filter(|_| !disabled && exporter.as_deref() != Some("none"))
        else {
            return Ok(None);
        };
        for variable in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(variable).filter(|p| p != "http/protobuf") {
                return Err(refused(
                    variable,
                    &protocol,
                    "switchboard exports over `http/protobuf` only",
                ));
            }
        }
        check_sampler(&var)?;
        Ok(Some(Self {
            endpoint,
            batching: batching(&var)?,
        }))
    }
}

fn refused(variable: &'static str, value: &str, why: &'static str) -> TraceSettingsError {
    TraceSettingsError {
        variable,
        value: value.to_owned(),
        why,
    }
}

fn check_sampler(var: &impl Fn(&str) -> Option<String>) -> Result<(), TraceSettingsError> {
    if let Some(sampler) = var("OTEL_TRACES_SAMPLER") {
        if !SAMPLERS.contains(&sampler.as_str()) {
            return Err(refused(
                "OTEL_TRACES_SAMPLER",
                &sampler,
                "not a sampler switchboard knows: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
            ));
        }
        if sampler.ends_with("traceidratio") {
            if let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") {
                if !arg
                    .parse::<f64>()
                    .is_ok_and(|ratio| (0.0..=1.0).contains(&ratio))
                {
                    return Err(refused(
                        "OTEL_TRACES_SAMPLER_ARG",
                        &arg,
                        "the ratio of traces sampled: a number from 0 to 1",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn batching(var: &impl Fn(&str) -> Option<String>) -> Result<Batching, TraceSettingsError> {
    let number = |variable: &'static str, default: u64| -> Result<u64, TraceSettingsError> {
        var(variable).map_or(Ok(default), |value| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| refused(variable, &value, "a whole number above 0"))
        })
    };
    let defaults = Batching::default();
    let as_count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let max_queue = as_count(number(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        defaults.max_queue as u64,
    )?);
    let max_batch = as_count(number(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        defaults.max_batch as u64,
    )?);
    if max_batch > max_queue {
        return Err(refused(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            &max_batch.to_string(),
            "larger than OTEL_BSP_MAX_QUEUE_SIZE",
        ));
    }
    Ok(Batching {
        max_queue,
        max_batch,
        schedule_delay: Duration::from_millis(number(
            "OTEL_BSP_SCHEDULE_DELAY",
            defaults.schedule_delay.as_millis() as u64,
        )?),
        export_timeout: Duration::from_millis(number(
            "OTEL_BSP_EXPORT_TIMEOUT",
            defaults.export_timeout.as_millis() as u64,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, TraceSettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceSettings::from_vars(|name| vars.get(name).cloned())
    }

    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");

    #[test]
    fn nothing_is_exported_without_an_endpoint_or_when_turned_off() {
        assert!(settings(&[]).unwrap().is_none());
        assert!(settings(&[ENDPOINT, ("OTEL_SDK_DISABLED", "true")])
            .unwrap()
            .is_none());
        assert!(settings(&[ENDPOINT, ("OTEL_TRACES_EXPORTER", "none")])
            .unwrap()
            .is_none());
        let on = settings(&[ENDPOINT]).unwrap().unwrap();
        assert_eq!(on.batching, Batching::default());
    }

    #[test]
    fn the_batch_processor_variables_apply() {
        let on = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            on.batching,
            Batching {
                max_queue: 100,
                max_batch: 10,
                schedule_delay: Duration::from_millis(200),
                export_timeout: Duration::from_secs(1),
            }
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (bad, variable) in [
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER"),
            (
                ("OTEL_BSP_MAX_QUEUE_SIZE", "many"),
                "OTEL_BSP_MAX_QUEUE_SIZE",
            ),
            (
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            ),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
        ] {
            let err = settings(&[ENDPOINT, bad]).unwrap_err().to_string();
            assert!(err.starts_with(variable), "{err}");
        }
        let err = settings(&[
            ENDPOINT,
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("OTEL_TRACES_SAMPLER_ARG"),
            "{err}"
        );
    }
}
