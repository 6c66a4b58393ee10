//! Settings: one typed struct of sections, layered as defaults < TOML file
//! (`--config`) < environment variables < command-line flags.
//!
//! Every setting is declared once, in the `settings!` table below
//! ([`declare`]); the struct, the defaults, `--help`, the TOML reader, the
//! log of effective settings and the README's table come from it. clap
//! reads flags and variables; the TOML file fills what neither gave.
//! Values are parsed here ([`kinds`]), not by clap, so that a bad value
//! names the setting's variable and where it came from, and start-up stops
//! before anything is bound or opened.

mod builders;
mod declare;
pub mod kinds;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use declare::{settings, Declared};
use kinds::{
    Address, Boolean, Choice, Choices, FilePath, Hosts, Kind, Millis, Number, Optional, Origins,
    Positive, PrefixLength, Seconds, Text,
};

pub use crate::db::DatabaseUrl;
use crate::rate_limit::client::ClientPolicy;
pub use crate::rate_limit::client::ForwardedHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// How an instance hears other instances' writes, to keep its cache
/// coherent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheInvalidation {
    /// PostgreSQL's `LISTEN/NOTIFY`, fed by a trigger on `users`.
    Postgres,
    /// Not at all: one instance alone (SQLite).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitBackend {
    /// Each instance limits its own clients, in its rate limiter actors.
    Memory,
    /// Instances share one allowance per client in Redis.
    Redis,
}

/// `SWITCHBOARD_AUTH`: what to do with no key configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `none`: serve any listener without checking tokens, because a proxy
    /// in front authenticates.
    ByProxy,
}

impl Choices for AuthMode {
    const CHOICES: &'static [(&'static str, Self)] = &[("none", Self::ByProxy)];
}

impl Choices for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("pretty", Self::Pretty), ("json", Self::Json)];
}

impl Choices for CacheInvalidation {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("postgres", Self::Postgres), ("none", Self::None)];
}

impl Choices for RateLimitBackend {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("memory", Self::Memory), ("redis", Self::Redis)];
}

impl Choices for ForwardedHeader {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("x-forwarded-for", Self::XForwardedFor),
        ("forwarded", Self::Forwarded),
    ];
}

/// `postgres://…` or a SQLite file path.
struct DatabaseUrlKind;

impl Kind<DatabaseUrl> for DatabaseUrlKind {
    fn parse(&self, raw: &str) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse(raw)
    }
    fn show(&self, value: &DatabaseUrl) -> String {
        match value {
            DatabaseUrl::Postgres(url) => url.clone(),
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

fn redis_url(raw: &str) -> Result<(), String> {
    if raw.starts_with("redis://") || raw.starts_with("rediss://") {
        Ok(())
    } else {
        Err("is not a redis:// URL".into())
    }
}

fn log_filter(raw: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(raw)
        .map(drop)
        .map_err(|e| format!("is not a log filter: {e}"))
}

fn any_text(raw: &str) -> Result<(), String> {
    if raw.trim().is_empty() {
        Err("is empty".into())
    } else {
        Ok(())
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

// A declarative table: one entry per setting, each a few lines.
settings! {
    /// Listening and serving requests.
    [server] ServerSettings {
        /// listen address
        bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), Address,
            env "SWITCHBOARD_BIND", flag "bind";
        /// HTTP worker threads
        workers: usize = cores(), Positive,
            env "SWITCHBOARD_WORKERS", flag "workers", shown "number of cores";
        /// requests in flight before 503
        max_in_flight: usize = 1024, Positive,
            env "SWITCHBOARD_MAX_IN_FLIGHT", flag "max-in-flight";
        /// requests one client may have in flight before 503
        max_in_flight_per_client: Option<usize> = None, Optional(Positive),
            env "SWITCHBOARD_MAX_IN_FLIGHT_PER_CLIENT", flag "max-in-flight-per-client",
            shown "an eighth of max_in_flight";
        /// per-request deadline (504); also every actor call's timeout
        request_timeout: Duration = Duration::from_secs(30), Millis(false),
            env "SWITCHBOARD_REQUEST_TIMEOUT_MS", flag "request-timeout-ms", key "request_timeout_ms";
        /// request body limit (413)
        body_limit_bytes: usize = 64 * 1024, Positive,
            env "SWITCHBOARD_BODY_LIMIT_BYTES", flag "body-limit-bytes";
        /// a request body must arrive in full within this (408)
        body_read_timeout: Duration = Duration::from_secs(5), Millis(false),
            env "SWITCHBOARD_BODY_READ_TIMEOUT_MS", flag "body-read-timeout-ms", key "body_read_timeout_ms";
        /// comma-separated origins browsers may call from (preflights cached
        /// an hour; the rate-limit fields, `Location`, `Link`, `ETag` and
        /// `X-Request-Id` exposed)
        cors_origins: Vec<String> = Vec::new(), Origins,
            env "SWITCHBOARD_CORS_ORIGINS", flag "cors-origins", shown "empty: CORS off";
        /// mount the `/debug` fault drills
        chaos: bool = false, Boolean,
            env "SWITCHBOARD_CHAOS", flag "chaos";
        /// a second listener for `/metrics`, `/stats` and `/debug/*` (then
        /// 404 on `bind`); `/health` and `/ready` answer on both
        admin_bind: Option<SocketAddr> = None, Optional(Address),
            env "SWITCHBOARD_ADMIN_BIND", flag "admin-bind", shown "unset: one listener";
    }

    /// Who may call the API: bearer tokens.
    [auth] AuthSettings {
        /// a file holding an HS256 secret (at least 32 bytes) that tokens
        /// are signed with
        jwt_secret_file: Option<PathBuf> = None, Optional(FilePath),
            env "SWITCHBOARD_AUTH_JWT_SECRET_FILE", flag "auth-jwt-secret-file", shown "none";
        /// a JWKS file of public keys (RS256, ES256, EdDSA, …) chosen by
        /// the token's `kid`; re-read on SIGHUP and when it changes
        jwks_file: Option<PathBuf> = None, Optional(FilePath),
            env "SWITCHBOARD_AUTH_JWKS_FILE", flag "auth-jwks-file", shown "none";
        /// when set, a token's `iss` must be this
        issuer: Option<String> = None, Optional(Text(any_text)),
            env "SWITCHBOARD_AUTH_ISSUER", flag "auth-issuer", shown "none";
        /// when set, a token's `aud` must name this
        audience: Option<String> = None, Optional(Text(any_text)),
            env "SWITCHBOARD_AUTH_AUDIENCE", flag "auth-audience", shown "none";
        /// clock skew allowed on `exp` and `nbf`, in seconds
        leeway_seconds: u64 = 30, Number,
            env "SWITCHBOARD_AUTH_LEEWAY_SECONDS", flag "auth-leeway-seconds";
        /// `none`: no key, yet serve a listener that is not loopback (a
        /// proxy in front authenticates)
        mode: Option<AuthMode> = None, Optional(Choice),
            env "SWITCHBOARD_AUTH", flag "auth", shown "unset: keys, or loopback only";
    }

    /// The users' database.
    [database] DatabaseSettings {
        /// `postgres://…` or a SQLite file path
        url: DatabaseUrl = DatabaseUrl::Sqlite(PathBuf::from("data/switchboard.db")), DatabaseUrlKind,
            env "DATABASE_URL", flag "database-url", secret true;
        /// connections in the pool, split evenly between the workers (at
        /// least one each); on SQLite these read, and SQLite's writer has
        /// one more
        pool_size: Option<usize> = None, Optional(Positive),
            env "SWITCHBOARD_DB_POOL_SIZE", flag "db-pool-size", shown "16 on PostgreSQL, 8 on SQLite";
        /// apply pending migrations at start-up (under a lock, so instances
        /// starting together migrate once); `false`: refuse to start (exit 2)
        /// while any is pending, and leave migrating to `switchboard migrate`
        migrate: bool = true, Boolean,
            env "SWITCHBOARD_MIGRATE", flag "migrate";
    }

    /// Who a request counts against.
    [clients] ClientSettings {
        /// take the client from the header trusted proxies write
        trust_proxy: bool = false, Boolean,
            env "SWITCHBOARD_TRUST_PROXY", flag "trust-proxy";
        /// proxies in front, each appending the client it saw
        trusted_hops: usize = 1, Positive,
            env "SWITCHBOARD_TRUSTED_HOPS", flag "trusted-hops";
        /// `x-forwarded-for` or `forwarded` (RFC 7239)
        forwarded_header: ForwardedHeader = ForwardedHeader::XForwardedFor, Choice,
            env "SWITCHBOARD_FORWARDED_HEADER", flag "forwarded-header";
        /// an IPv6 client is keyed by this prefix length
        ipv6_prefix: u8 = 64, PrefixLength,
            env "SWITCHBOARD_CLIENT_IPV6_PREFIX", flag "client-ipv6-prefix";
    }

    /// The per-client rate limit.
    [rate_limit] RateLimitSettings {
        /// per-client rate; `0` turns limiting off
        per_second: u32 = 100, Number,
            env "SWITCHBOARD_RATE_LIMIT_PER_SECOND", flag "rate-limit-per-second";
        /// per-client burst
        burst: u32 = 200, Positive,
            env "SWITCHBOARD_RATE_LIMIT_BURST", flag "rate-limit-burst";
        /// `memory` (per instance) or `redis` (one allowance across every
        /// instance sharing the Redis)
        backend: RateLimitBackend = RateLimitBackend::Memory, Choice,
            env "SWITCHBOARD_RATE_LIMIT_BACKEND", flag "rate-limit-backend";
        /// Redis for the `redis` backend
        redis_url: String = "redis://127.0.0.1:6379".into(), Text(redis_url),
            env "SWITCHBOARD_REDIS_URL", flag "redis-url", secret true;
    }

    /// The response cache.
    [cache] CacheSettings {
        /// cache entries, shared out among the workers' shards; `0` turns the cache off
        max_entries: u64 = 10_000, Number,
            env "SWITCHBOARD_CACHE_MAX_ENTRIES", flag "cache-max-entries";
        /// cache bytes, shared out among the workers' shards
        max_bytes: u64 = 64 * 1024 * 1024, Number,
            env "SWITCHBOARD_CACHE_MAX_BYTES", flag "cache-max-bytes", shown "67108864 (64 MiB)";
        /// cache entry lifetime, in seconds
        ttl: Duration = Duration::from_secs(300), Seconds,
            env "SWITCHBOARD_CACHE_TTL_SECONDS", flag "cache-ttl-seconds", key "ttl_seconds";
        /// how other instances' writes reach this cache: `postgres` or `none`
        invalidation: Option<CacheInvalidation> = None, Optional(Choice),
            env "SWITCHBOARD_CACHE_INVALIDATION", flag "cache-invalidation",
            shown "postgres on PostgreSQL, none on SQLite";
    }

    /// Outbound fetching for `POST /fetch`.
    [fetch] FetchSettings {
        /// comma-separated `host` or `host:port` that `/fetch` may reach (a
        /// TOML array works too)
        allow_hosts: Vec<String> = Vec::new(), Hosts,
            env "SWITCHBOARD_FETCH_ALLOW_HOSTS", flag "fetch-allow-hosts", shown "empty: nothing";
        /// URLs per `/fetch`
        max_urls: usize = 20, Positive,
            env "SWITCHBOARD_FETCH_MAX_URLS", flag "fetch-max-urls";
        /// per-attempt upstream timeout, in milliseconds
        timeout: Duration = Duration::from_secs(10), Millis(false),
            env "SWITCHBOARD_FETCH_TIMEOUT_MS", flag "fetch-timeout-ms", key "timeout_ms";
        /// attempts per URL
        max_attempts: u32 = 3, Positive,
            env "SWITCHBOARD_FETCH_MAX_ATTEMPTS", flag "fetch-max-attempts";
        /// upstream body limit
        max_body_bytes: usize = 1024 * 1024, Positive,
            env "SWITCHBOARD_FETCH_MAX_BODY_BYTES", flag "fetch-max-body-bytes", shown "1048576 (1 MiB)";
        /// attempts in flight to one upstream host; more wait
        host_concurrency: usize = 32, Positive,
            env "SWITCHBOARD_FETCH_HOST_CONCURRENCY", flag "fetch-host-concurrency";
        /// consecutive failed attempts that open a host's circuit
        breaker_threshold: u32 = 5, Positive,
            env "SWITCHBOARD_FETCH_BREAKER_THRESHOLD", flag "fetch-breaker-threshold";
        /// open-circuit time before one probe, in milliseconds
        breaker_cooldown: Duration = Duration::from_secs(5), Millis(false),
            env "SWITCHBOARD_FETCH_BREAKER_COOLDOWN_MS", flag "fetch-breaker-cooldown-ms",
            key "breaker_cooldown_ms";
    }

    /// Stopping on SIGTERM or SIGINT.
    [shutdown] ShutdownSettings {
        /// time between `/ready` turning 503 and the listener closing, in
        /// milliseconds
        delay: Duration = Duration::from_secs(5), Millis(true),
            env "SWITCHBOARD_SHUTDOWN_DELAY_MS", flag "shutdown-delay-ms", key "delay_ms";
        /// drain time, in seconds
        timeout: Duration = Duration::from_secs(30), Seconds,
            env "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECONDS", flag "shutdown-timeout-seconds",
            key "timeout_seconds";
    }

    /// Logs.
    [log] LogSettings {
        /// `pretty` or `json` (one JSON object a line)
        format: LogFormat = LogFormat::Pretty, Choice,
            env "SWITCHBOARD_LOG_FORMAT", flag "log-format";
        /// log levels
        filter: String = "info".into(), Text(log_filter),
            env "RUST_LOG", flag "log-filter";
    }

    /// Metrics.
    [metrics] MetricsSettings {
        /// record metrics (`false`: `/metrics` shows only the process)
        enabled: bool = true, Boolean,
            env "SWITCHBOARD_METRICS", flag "metrics";
    }
}

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Serve (no subcommand).
    Serve,
    /// `switchboard migrate [--check]`: apply pending migrations, or with
    /// `check` only say whether any are pending.
    Migrate { check: bool },
    /// `switchboard healthcheck`: ask the listener's `/health`.
    Healthcheck,
}

/// The settings and the task of one run of the binary.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub settings: Settings,
    pub task: Task,
}

impl Invocation {
    /// Reads the process's arguments, environment and (if named) TOML file.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = command()
            .try_get_matches_from(args)
            .map_err(ConfigError::Cli)?;
        // The settings are global: given before or after a subcommand,
        // they are in its matches.
        let (task, matches) = match matches.subcommand() {
            Some(("migrate", sub)) => (
                Task::Migrate {
                    check: sub.get_flag("check"),
                },
                sub.clone(),
            ),
            Some(("healthcheck", sub)) => (Task::Healthcheck, sub.clone()),
            _ => (Task::Serve, matches),
        };
        let file = match matches.get_one::<String>("config") {
            Some(path) => read_toml(path)?,
            None => BTreeMap::new(),
        };
        let sources = Sources { matches, file };
        let settings = Settings::from_sources(&sources)?;
        settings.check(&sources)?;
        if task == Task::Serve {
            settings.check_exposure(&sources)?;
        }
        Ok(Self { settings, task })
    }
}

impl Settings {
    /// Reads the process's arguments, environment and (if named) TOML file.
    pub fn load() -> Result<Self, ConfigError> {
        Invocation::load().map(|invocation| invocation.settings)
    }

    pub fn load_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Invocation::load_from(args).map(|invocation| invocation.settings)
    }

    /// What one setting allows only with another.
    fn check(&self, sources: &Sources) -> Result<(), ConfigError> {
        let sqlite = matches!(self.database.url, DatabaseUrl::Sqlite(_));
        if sqlite && self.cache.invalidation == Some(CacheInvalidation::Postgres) {
            let declared = CacheSettings::DECLARED
                .iter()
                .find(|d| d.key == "invalidation")
                .expect("declared above");
            return Err(sources.invalid(declared, "needs a PostgreSQL DATABASE_URL".into()));
        }
        Ok(())
    }

    /// Protected mode: with no key, only a loopback listener is served,
    /// unless `SWITCHBOARD_AUTH=none` says a proxy in front authenticates.
    fn check_exposure(&self, sources: &Sources) -> Result<(), ConfigError> {
        fn declared(section: &'static [Declared], key: &str) -> &'static Declared {
            section
                .iter()
                .find(|d| d.key == key)
                .expect("declared above")
        }
        match (self.auth_keys().any(), self.auth.mode) {
            (true, Some(AuthMode::ByProxy)) => Err(sources.invalid(
                declared(AuthSettings::DECLARED, "mode"),
                "turns token checks off, but a key file is set: unset one of them".into(),
            )),
            (false, None) if !self.server.bind.ip().is_loopback() => Err(sources.invalid(
                declared(ServerSettings::DECLARED, "bind"),
                "is not a loopback address, and no key is configured (protected mode, \
                 SWITCHBOARD_AUTH): set SWITCHBOARD_AUTH_JWT_SECRET_FILE or \
                 SWITCHBOARD_AUTH_JWKS_FILE, or SWITCHBOARD_AUTH=none if a proxy in front \
                 authenticates"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Every setting and its value, secrets redacted: for the start-up log.
    pub fn effective(&self) -> String {
        let shown = self.shown().into_iter().map(|(declared, value)| {
            let value = if declared.secret {
                redacted(&value)
            } else {
                value
            };
            format!("{}={value}", declared.name())
        });
        shown.collect::<Vec<_>>().join(" ")
    }

    /// The README's table of settings, as the declarations say it.
    pub fn markdown_table() -> String {
        let mut table = String::from(
            "| TOML key | flag | variable | meaning | default |\n| --- | --- | --- | --- | --- |\n",
        );
        for d in Self::declared() {
            table.push_str(&format!(
                "| `[{}] {}` | `--{}` | `{}` | {} | {} |\n",
                d.section,
                d.key,
                d.flag,
                d.env,
                d.help.trim(),
                (d.default)()
            ));
        }
        table
    }
}

impl DatabaseSettings {
    /// Connections in the pool: the configured size, or the backend's
    /// default (SQLite serialises writers, so a few connections suffice).
    /// On SQLite these read; its writer has a connection of its own.
    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or(match self.url {
            DatabaseUrl::Postgres(_) => 16,
            DatabaseUrl::Sqlite(_) => 8,
        })
    }
}

impl ServerSettings {
    /// How many requests one client may have in flight.
    pub fn max_in_flight_per_client(&self) -> usize {
        self.max_in_flight_per_client
            .unwrap_or((self.max_in_flight / 8).max(1))
    }
}

impl ClientSettings {
    /// Who a request counts against.
    pub fn policy(&self) -> ClientPolicy {
        ClientPolicy {
            trusted_hops: if self.trust_proxy {
                self.trusted_hops
            } else {
                0
            },
            header: self.forwarded_header,
            ipv6_prefix: self.ipv6_prefix,
        }
    }
}

impl Settings {
    /// How this instance hears other instances' writes: as configured, or
    /// PostgreSQL's channel on PostgreSQL (SQLite serves one instance).
    pub fn cache_invalidation(&self) -> CacheInvalidation {
        self.cache.invalidation.unwrap_or(match self.database.url {
            DatabaseUrl::Postgres(_) => CacheInvalidation::Postgres,
            DatabaseUrl::Sqlite(_) => CacheInvalidation::None,
        })
    }
}

/// A URL with its password (in the user information, or a `password`
/// query parameter) replaced by `***`.
pub fn redacted(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let authority_end = url[start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| start + i);
        if let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) {
            if let Some(colon) = url[start..at].find(':').map(|i| start + i) {
                shown = format!("{}***{}", &url[..=colon], &url[at..]);
            }
        }
    }
    match shown.find("password=") {
        Some(i) => {
            let value = i + "password=".len();
            let end = shown[value..].find('&').map_or(shown.len(), |e| value + e);
            format!("{}***{}", &shown[..value], &shown[end..])
        }
        None => shown,
    }
}

fn command() -> Command {
    let config = Arg::new("config")
        .long("config")
        .env("SWITCHBOARD_CONFIG")
        .value_name("FILE")
        .global(true)
        .help("TOML file of settings (sections and keys as in the README)");
    let migrate = Command::new("migrate")
        .about("Apply pending migrations (under the same lock as start-up), print them, exit")
        .arg(
            Arg::new("check")
                .long("check")
                .action(ArgAction::SetTrue)
                .help("Apply nothing: exit 0 if none is pending, 1 (naming them) if some are"),
        );
    let healthcheck = Command::new("healthcheck")
        .about("Ask the listener's /health: exit 0 if it answers 200, else 1 (for a container's health check)");
    Settings::declared().fold(
        Command::new("switchboard")
            .version(env!("CARGO_PKG_VERSION"))
            .about("An actor-based REST service: users API and outbound fetch API")
            .after_help(
                "Traces: set OTEL_EXPORTER_OTLP_ENDPOINT to export them over OTLP/HTTP; the standard \
                 OTEL_* variables configure them (docs/OPERATIONS.md, \"Traces\").",
            )
            .arg(config)
            .subcommand(migrate)
            .subcommand(healthcheck),
        |cmd, d| {
            cmd.arg(
                Arg::new(d.env)
                    .long(d.flag)
                    .env(d.env)
                    .hide_env_values(d.secret)
                    .help(d.plain_help())
                    .global(true)
                    .action(ArgAction::Set),
            )
        },
    )
}

/// A start-up configuration problem; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Cli(clap::Error),
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid setting {env} ({origin}): {value:?} {reason}")]
    Invalid {
        env: &'static str,
        origin: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// clap's own `--help` and `--version` are not failures.
    pub fn is_informational(&self) -> bool {
        matches!(self, Self::Cli(e) if !e.use_stderr())
    }
}

/// A TOML file's values, by the variable of the setting each sets: in
/// sections (`[cache] max_entries = 10`), or flat as earlier versions
/// wrote them (`cache_max_entries = 10`).
fn read_toml(path: &str) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        let is_section = Settings::declared().any(|d| d.section == key);
        let entries = match value {
            toml::Value::Table(entries) if is_section => entries
                .into_iter()
                .map(|(k, v)| (Some(key.clone()), k, v))
                .collect(),
            value => vec![(None, key, value)],
        };
        for (section, key, value) in entries {
            let declared = Settings::declared().find(|d| match &section {
                Some(section) => d.section == section && d.key == key,
                None => d.flat_key() == key,
            });
            let Some(declared) = declared else {
                let name = section.map_or(key.clone(), |s| format!("[{s}] {key}"));
                return Err(file_error(format!("unknown setting {name:?}")));
            };
            values.insert(declared.env, toml_text(value));
        }
    }
    Ok(values)
}

/// A TOML value as the text a variable would hold: an array as a
/// comma-separated list.
fn toml_text(value: toml::Value) -> String {
    match value {
        toml::Value::String(s) => s,
        toml::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Where settings' values come from: flags and variables (through clap),
/// and the TOML file below them.
pub struct Sources {
    matches: ArgMatches,
    file: BTreeMap<&'static str, String>,
}

impl Sources {
    /// The winning raw value of a setting and a description of where it
    /// came from.
    fn raw(&self, declared: &Declared) -> Option<(String, String)> {
        if let Some(value) = self.matches.get_one::<String>(declared.env) {
            let origin = match self.matches.value_source(declared.env) {
                Some(ValueSource::CommandLine) => format!("flag --{}", declared.flag),
                _ => "environment".to_owned(),
            };
            return Some((value.clone(), origin));
        }
        self.file.get(declared.env).map(|value| {
            let origin = format!("config file key [{}] {}", declared.section, declared.key);
            (value.clone(), origin)
        })
    }

    /// Parses one setting, or keeps `default` when no source sets it.
    fn get<T>(
        &self,
        declared: &Declared,
        default: T,
        kind: &impl Kind<T>,
    ) -> Result<T, ConfigError> {
        match self.raw(declared) {
            None => Ok(default),
            Some((value, _)) => kind
                .parse(value.trim())
                .map_err(|reason| self.invalid(declared, reason)),
        }
    }

    /// The error for a setting's value, naming where it came from.
    fn invalid(&self, declared: &Declared, reason: String) -> ConfigError {
        let (value, origin) = self.raw(declared).unwrap_or_default();
        ConfigError::Invalid {
            env: declared.env,
            origin,
            value: if declared.secret {
                redacted(&value)
            } else {
                value
            },
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Settings, ConfigError> {
        Settings::load_from(std::iter::once("switchboard").chain(args.iter().copied()))
    }

    fn toml_file(dir: &tempfile::TempDir, text: &str) -> String {
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn flags_override_defaults() {
        let s = load(&["--workers", "3", "--database-url", "postgres://u@h/db"]).unwrap();
        assert_eq!(s.server.workers, 3);
        assert_eq!(
            s.database.url,
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(s.database.pool_size(), 16);
        assert_eq!(s.cache_invalidation(), CacheInvalidation::Postgres);
    }

    #[test]
    fn subcommands_take_the_settings_before_or_after_them() {
        let args = [
            "switchboard",
            "--workers",
            "3",
            "migrate",
            "--check",
            "--db-pool-size",
            "4",
        ];
        let invocation = Invocation::load_from(args).unwrap();
        assert_eq!(invocation.task, Task::Migrate { check: true });
        assert_eq!(invocation.settings.server.workers, 3);
        assert_eq!(invocation.settings.database.pool_size(), 4);
        let serve = Invocation::load_from(["switchboard"]).unwrap();
        assert_eq!(serve.task, Task::Serve);
        let health = Invocation::load_from(["switchboard", "healthcheck"]).unwrap();
        assert_eq!(health.task, Task::Healthcheck);
    }

    #[test]
    fn toml_sections_sit_below_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = toml_file(
            &dir,
            "[server]\nworkers = 5\nmax_in_flight = 7\n\
             [fetch]\nallow_hosts = [\"a.example\", \"b.example:81\"]\ntimeout_ms = 250\n",
        );
        let s = load(&["--config", &path, "--workers", "2"]).unwrap();
        assert_eq!(s.server.workers, 2);
        assert_eq!(s.server.max_in_flight, 7);
        assert_eq!(s.fetch.allow_hosts, vec!["a.example", "b.example:81"]);
        assert_eq!(s.fetch.timeout, Duration::from_millis(250));
    }

    #[test]
    fn flat_toml_keys_of_earlier_versions_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = toml_file(
            &dir,
            "cache_ttl_seconds = 9\ndb_pool_size = 3\nmetrics = false\n",
        );
        let s = load(&["--config", &path]).unwrap();
        assert_eq!(s.cache.ttl, Duration::from_secs(9));
        assert_eq!(s.database.pool_size(), 3);
        assert!(!s.metrics.enabled);
    }

    #[test]
    fn bad_value_names_the_setting_and_where_it_came_from() {
        let err = load(&["--max-in-flight", "lots"]).unwrap_err().to_string();
        assert!(err.contains("SWITCHBOARD_MAX_IN_FLIGHT"), "{err}");
        assert!(err.contains("--max-in-flight"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = toml_file(&dir, "[cache]\nmax_entries = -1\n");
        let err = load(&["--config", &path]).unwrap_err().to_string();
        assert!(err.contains("SWITCHBOARD_CACHE_MAX_ENTRIES"), "{err}");
        assert!(err.contains("[cache] max_entries"), "{err}");
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (text, named) in [
            ("wrokers = 5\n", "wrokers"),
            ("[server]\nwrokers = 5\n", "[server] wrokers"),
            ("[cache]\nworkers = 5\n", "[cache] workers"),
        ] {
            let path = toml_file(&dir, text);
            let err = load(&["--config", &path]).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn unknown_choices_are_refused() {
        let err = load(&["--rate-limit-backend", "memcached"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SWITCHBOARD_RATE_LIMIT_BACKEND"), "{err}");
        assert!(err.contains("memory, redis"), "{err}");
        assert!(load(&["--rate-limit-backend", "Redis"]).is_ok());
    }

    #[test]
    fn postgres_invalidation_needs_postgres() {
        let err = load(&["--cache-invalidation", "postgres"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SWITCHBOARD_CACHE_INVALIDATION"), "{err}");
        assert!(err.contains("needs a PostgreSQL DATABASE_URL"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redacted("redis://:s3cret@cache/0"), "redis://:***@cache/0");
        assert_eq!(
            redacted("postgresql://db/x?user=app&password=s3cret&sslmode=require"),
            "postgresql://db/x?user=app&password=***&sslmode=require"
        );
        assert_eq!(redacted("postgres://app@db/x"), "postgres://app@db/x");
        let err = load(&["--redis-url", "http://u:s3cret@h"])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret") && err.contains("***"), "{err}");
    }

    #[test]
    fn the_effective_settings_name_every_setting_and_hide_passwords() {
        let s = load(&[
            "--database-url",
            "postgres://app:s3cret@db/x",
            "--redis-url",
            "redis://:hunter2@cache/0",
        ])
        .unwrap();
        let effective = s.effective();
        assert!(
            !effective.contains("s3cret") && !effective.contains("hunter2"),
            "{effective}"
        );
        assert!(
            effective.contains("database.url=postgres://app:***@db/x"),
            "{effective}"
        );
        for declared in Settings::declared() {
            assert!(
                effective.contains(&format!("{}=", declared.name())),
                "{effective}"
            );
        }
    }

    #[test]
    fn help_lists_every_setting_and_no_secret_value() {
        let help = command().render_long_help().to_string();
        for declared in Settings::declared() {
            assert!(help.contains(&format!("--{}", declared.flag)), "{help}");
            assert!(help.contains(declared.env), "{help}");
        }
        // A secret's value, from the environment, is never shown.
        let command = command();
        for declared in Settings::declared() {
            let arg = command.get_arguments().find(|a| a.get_id() == declared.env);
            let hidden = arg.is_some_and(clap::Arg::is_hide_env_values_set);
            assert_eq!(hidden, declared.secret, "{}", declared.env);
        }
    }

    #[test]
    fn names_are_declared_once() {
        let names: [fn(&Declared) -> String; 4] = [
            |d| d.env.to_owned(),
            |d| d.flag.to_owned(),
            Declared::name,
            Declared::flat_key,
        ];
        for name in names {
            let mut seen = std::collections::HashSet::new();
            for declared in Settings::declared() {
                let name = name(declared);
                assert!(seen.insert(name.clone()), "{name} is declared twice");
            }
        }
    }

    /// The README's table of settings is the one the declarations make.
    #[test]
    fn the_readme_table_is_the_declared_one() {
        let readme = include_str!("../../README.md");
        let table = Settings::markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's settings table differs from the declarations; it should read:\n{table}"
        );
    }
}
