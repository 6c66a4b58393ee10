//! Settings: one typed struct, layered as defaults < TOML file (`--config`) <
//! environment variables < command-line flags.
//!
//! Every setting is described once in `SPECS`: its TOML key, its flag and its
//! environment variable. clap reads flags and variables (so `--help` lists
//! both); the TOML file fills what neither gave. Values are parsed here, not by
//! clap, so that a bad value names the setting's variable and where the value
//! came from, and start-up stops before anything is bound or opened.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::rate_limit::client::ClientPolicy;
pub use crate::rate_limit::client::ForwardedHeader;

/// How a database URL is interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    /// A SQLite file path (the `sqlite://` prefix removed).
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let path = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
            .unwrap_or(raw);
        if path.is_empty() {
            return Err("expected postgres://… or a SQLite file path".into());
        }
        if path.contains("://") {
            return Err("only postgres:// URLs or SQLite file paths are supported".into());
        }
        if path == ":memory:" {
            return Err(
                "an in-memory SQLite database would lose every write; give a file path".into(),
            );
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

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

/// Everything switchboard can be told at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database_url: DatabaseUrl,
    /// `None`: the backend's own default ([`Settings::pool_size`]).
    pub db_pool_size: Option<usize>,
    pub workers: usize,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub rate_limit_backend: RateLimitBackend,
    pub redis_url: String,
    pub trust_proxy: bool,
    /// With `trust_proxy`: how many proxies in front write the header.
    pub trusted_hops: usize,
    pub forwarded_header: ForwardedHeader,
    /// The prefix an IPv6 client is keyed by.
    pub client_ipv6_prefix: u8,
    pub max_in_flight: usize,
    /// `None`: an eighth of `max_in_flight`.
    pub max_in_flight_per_client: Option<usize>,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    pub cache_max_entries: u64,
    pub cache_max_bytes: u64,
    pub cache_ttl: Duration,
    pub cache_invalidation: CacheInvalidation,
    pub fetch_allow_hosts: Vec<String>,
    pub fetch_max_urls: usize,
    pub fetch_timeout: Duration,
    pub fetch_max_attempts: u32,
    pub fetch_max_body_bytes: usize,
    /// Attempts in flight to one upstream host at once; more wait their turn.
    pub fetch_host_concurrency: usize,
    /// Consecutive failed attempts at a host that open its circuit.
    pub fetch_breaker_threshold: u32,
    /// How long an open circuit refuses before it lets one probe through.
    pub fetch_breaker_cooldown: Duration,
    pub shutdown_timeout: Duration,
    /// Between readiness turning 503 and the listener closing, on shutdown.
    pub shutdown_delay: Duration,
    /// Origins browsers may call switchboard from; empty: CORS off.
    pub cors_origins: Vec<String>,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub chaos: bool,
    /// Record metrics (`false` turns every recorder off; `/metrics` still answers).
    pub metrics: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DatabaseUrl::Sqlite(PathBuf::from("data/switchboard.db")),
            db_pool_size: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            rate_limit_backend: RateLimitBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            trust_proxy: false,
            trusted_hops: 1,
            forwarded_header: ForwardedHeader::XForwardedFor,
            client_ipv6_prefix: 64,
            max_in_flight: 1024,
            max_in_flight_per_client: None,
            body_read_timeout: Duration::from_millis(5000),
            request_timeout: Duration::from_millis(30_000),
            body_limit_bytes: 64 * 1024,
            cache_max_entries: 10_000,
            cache_max_bytes: 64 * 1024 * 1024,
            cache_ttl: Duration::from_secs(300),
            cache_invalidation: CacheInvalidation::None,
            fetch_allow_hosts: Vec::new(),
            fetch_max_urls: 20,
            fetch_timeout: Duration::from_millis(10_000),
            fetch_max_attempts: 3,
            fetch_max_body_bytes: 1024 * 1024,
            fetch_host_concurrency: 32,
            fetch_breaker_threshold: 5,
            fetch_breaker_cooldown: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::from_millis(5000),
            cors_origins: Vec::new(),
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            chaos: false,
            metrics: true,
        }
    }
}

impl Settings {
    /// Connections in the database pool: the configured size, or the backend's
    /// default (SQLite serialises writers, so a few connections suffice). On
    /// SQLite these read; its writer has a connection of its own.
    pub fn pool_size(&self) -> usize {
        self.db_pool_size.unwrap_or(match self.database_url {
            DatabaseUrl::Postgres(_) => 16,
            DatabaseUrl::Sqlite(_) => 8,
        })
    }

    /// How many requests one client may have in flight.
    pub fn max_in_flight_per_client(&self) -> usize {
        self.max_in_flight_per_client
            .unwrap_or((self.max_in_flight / 8).max(1))
    }

    /// Who a request counts against.
    pub fn client_policy(&self) -> ClientPolicy {
        ClientPolicy {
            trusted_hops: if self.trust_proxy {
                self.trusted_hops
            } else {
                0
            },
            header: self.forwarded_header,
            ipv6_prefix: self.client_ipv6_prefix,
        }
    }

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
        let file = match matches.get_one::<String>("config") {
            Some(path) => read_toml(path)?,
            None => BTreeMap::new(),
        };
        Sources { matches, file }.settings()
    }
}

/// One setting: its TOML key (also the clap id), flag, variable and help.
struct Spec {
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    help: &'static str,
}

const fn spec(
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    help: &'static str,
) -> Spec {
    Spec {
        key,
        flag,
        env,
        help,
    }
}

#[rustfmt::skip]
const SPECS: &[Spec] = &[
    spec("bind", "bind", "SWITCHBOARD_BIND", "Listen address [default: 127.0.0.1:8080]"),
    spec("database_url", "database-url", "DATABASE_URL", "postgres://… or a SQLite file path [default: sqlite://data/switchboard.db]"),
    spec("db_pool_size", "db-pool-size", "SWITCHBOARD_DB_POOL_SIZE", "Connections in the pool; on SQLite they read, and one more writes [default: 16 on PostgreSQL, 8 on SQLite]"),
    spec("workers", "workers", "SWITCHBOARD_WORKERS", "HTTP worker threads [default: number of cores]"),
    spec("rate_limit_per_second", "rate-limit-per-second", "SWITCHBOARD_RATE_LIMIT_PER_SECOND", "Per-client requests per second; 0 turns limiting off [default: 100]"),
    spec("rate_limit_burst", "rate-limit-burst", "SWITCHBOARD_RATE_LIMIT_BURST", "Per-client burst [default: 200]"),
    spec("rate_limit_backend", "rate-limit-backend", "SWITCHBOARD_RATE_LIMIT_BACKEND", "memory or redis [default: memory]"),
    spec("redis_url", "redis-url", "SWITCHBOARD_REDIS_URL", "Redis URL for the redis rate-limit backend [default: redis://127.0.0.1:6379]"),
    spec("trust_proxy", "trust-proxy", "SWITCHBOARD_TRUST_PROXY", "Take the client from the header trusted proxies write [default: false]"),
    spec("trusted_hops", "trusted-hops", "SWITCHBOARD_TRUSTED_HOPS", "With trust_proxy: proxies in front that each append the client they saw [default: 1]"),
    spec("forwarded_header", "forwarded-header", "SWITCHBOARD_FORWARDED_HEADER", "The header those proxies write: x-forwarded-for or forwarded (RFC 7239) [default: x-forwarded-for]"),
    spec("client_ipv6_prefix", "client-ipv6-prefix", "SWITCHBOARD_CLIENT_IPV6_PREFIX", "IPv6 clients are keyed by this prefix length [default: 64]"),
    spec("max_in_flight", "max-in-flight", "SWITCHBOARD_MAX_IN_FLIGHT", "Requests in flight before 503 [default: 1024]"),
    spec("max_in_flight_per_client", "max-in-flight-per-client", "SWITCHBOARD_MAX_IN_FLIGHT_PER_CLIENT", "Requests one client may have in flight before 503 [default: an eighth of max_in_flight]"),
    spec("body_read_timeout_ms", "body-read-timeout-ms", "SWITCHBOARD_BODY_READ_TIMEOUT_MS", "A request body must arrive in full within this, in ms (408) [default: 5000]"),
    spec("request_timeout_ms", "request-timeout-ms", "SWITCHBOARD_REQUEST_TIMEOUT_MS", "Per-request deadline in ms (504) [default: 30000]"),
    spec("body_limit_bytes", "body-limit-bytes", "SWITCHBOARD_BODY_LIMIT_BYTES", "Request body limit (413) [default: 65536]"),
    spec("cache_max_entries", "cache-max-entries", "SWITCHBOARD_CACHE_MAX_ENTRIES", "Cache entry bound [default: 10000]"),
    spec("cache_max_bytes", "cache-max-bytes", "SWITCHBOARD_CACHE_MAX_BYTES", "Cache byte bound [default: 67108864]"),
    spec("cache_ttl_seconds", "cache-ttl-seconds", "SWITCHBOARD_CACHE_TTL_SECONDS", "Cache entry time to live [default: 300]"),
    spec("cache_invalidation", "cache-invalidation", "SWITCHBOARD_CACHE_INVALIDATION", "How other instances' writes reach this cache: postgres (LISTEN/NOTIFY) or none [default: postgres on PostgreSQL, none on SQLite]"),
    spec("fetch_allow_hosts", "fetch-allow-hosts", "SWITCHBOARD_FETCH_ALLOW_HOSTS", "Comma-separated host or host:port that /fetch may reach [default: none]"),
    spec("fetch_max_urls", "fetch-max-urls", "SWITCHBOARD_FETCH_MAX_URLS", "URLs per /fetch request [default: 20]"),
    spec("fetch_timeout_ms", "fetch-timeout-ms", "SWITCHBOARD_FETCH_TIMEOUT_MS", "Per-attempt upstream timeout in ms [default: 10000]"),
    spec("fetch_max_attempts", "fetch-max-attempts", "SWITCHBOARD_FETCH_MAX_ATTEMPTS", "Attempts per URL [default: 3]"),
    spec("fetch_max_body_bytes", "fetch-max-body-bytes", "SWITCHBOARD_FETCH_MAX_BODY_BYTES", "Upstream body limit [default: 1048576]"),
    spec("fetch_host_concurrency", "fetch-host-concurrency", "SWITCHBOARD_FETCH_HOST_CONCURRENCY", "Attempts in flight to one upstream host [default: 32]"),
    spec("fetch_breaker_threshold", "fetch-breaker-threshold", "SWITCHBOARD_FETCH_BREAKER_THRESHOLD", "Consecutive failures that open a host's circuit [default: 5]"),
    spec("fetch_breaker_cooldown_ms", "fetch-breaker-cooldown-ms", "SWITCHBOARD_FETCH_BREAKER_COOLDOWN_MS", "Open-circuit time before one probe in ms [default: 5000]"),
    spec("shutdown_delay_ms", "shutdown-delay-ms", "SWITCHBOARD_SHUTDOWN_DELAY_MS", "On shutdown, time between readiness turning 503 and the listener closing, in ms [default: 5000]"),
    spec("shutdown_timeout_seconds", "shutdown-timeout-seconds", "SWITCHBOARD_SHUTDOWN_TIMEOUT_SECONDS", "Drain time on SIGTERM [default: 30]"),
    spec("cors_origins", "cors-origins", "SWITCHBOARD_CORS_ORIGINS", "Comma-separated origins (https://app.example.com) browsers may call from [default: none: CORS off]"),
    spec("log_format", "log-format", "SWITCHBOARD_LOG_FORMAT", "pretty or json [default: pretty]"),
    spec("log_filter", "log-filter", "RUST_LOG", "Log levels, as RUST_LOG [default: info]"),
    spec("chaos", "chaos", "SWITCHBOARD_CHAOS", "Enable the fault drills under /debug [default: false]"),
    spec("metrics", "metrics", "SWITCHBOARD_METRICS", "Record metrics for /metrics and /stats [default: true]"),
];

/// Settings whose values may hold a password: never shown by `--help`,
/// never echoed whole in an error.
const SECRETS: [&str; 2] = ["database_url", "redis_url"];

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
        .help("TOML file of settings (keys as in the README)");
    SPECS.iter().fold(
        Command::new("switchboard")
            .version(env!("CARGO_PKG_VERSION"))
            .about("An actor-based REST service: users API and outbound fetch API")
            .arg(config),
        |cmd, s| {
            cmd.arg(
                Arg::new(s.key)
                    .long(s.flag)
                    .env(s.env)
                    .hide_env_values(SECRETS.contains(&s.key))
                    .help(s.help)
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

fn read_toml(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
    table
        .into_iter()
        .map(|(key, value)| {
            if !SPECS.iter().any(|s| s.key == key) {
                return Err(file_error(format!("unknown setting {key:?}")));
            }
            let text = match value {
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
            };
            Ok((key, text))
        })
        .collect()
}

struct Sources {
    matches: ArgMatches,
    file: BTreeMap<String, String>,
}

impl Sources {
    /// The winning raw value of a setting and a description of where it came from.
    fn raw(&self, key: &str) -> Option<(String, String)> {
        let spec = SPECS
            .iter()
            .find(|s| s.key == key)
            .expect("every key has a spec");
        if let Some(value) = self.matches.get_one::<String>(key) {
            let origin = match self.matches.value_source(key) {
                Some(ValueSource::CommandLine) => format!("flag --{}", spec.flag),
                _ => "environment".to_owned(),
            };
            return Some((value.clone(), origin));
        }
        self.file
            .get(key)
            .map(|value| (value.clone(), format!("config file key {key}")))
    }

    /// Parses one setting, or keeps `default` when no source sets it.
    fn get<T>(
        &self,
        key: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((value, origin)) => parse(value.trim()).map_err(|reason| ConfigError::Invalid {
                env: SPECS.iter().find(|s| s.key == key).map_or("", |s| s.env),
                origin,
                value: if SECRETS.contains(&key) {
                    redacted(&value)
                } else {
                    value
                },
                reason,
            }),
        }
    }

    /// PostgreSQL's channel by default on PostgreSQL; SQLite serves one
    /// instance and has no channel.
    fn cache_invalidation(&self) -> Result<CacheInvalidation, ConfigError> {
        let url = self.get(
            "database_url",
            Settings::default().database_url,
            DatabaseUrl::parse,
        )?;
        let default = match url {
            DatabaseUrl::Postgres(_) => CacheInvalidation::Postgres,
            DatabaseUrl::Sqlite(_) => CacheInvalidation::None,
        };
        self.get("cache_invalidation", default, |v| {
            match (v.to_ascii_lowercase().as_str(), &url) {
                ("postgres", DatabaseUrl::Postgres(_)) => Ok(CacheInvalidation::Postgres),
                ("postgres", DatabaseUrl::Sqlite(_)) => {
                    Err("needs a PostgreSQL DATABASE_URL".into())
                }
                ("none", _) => Ok(CacheInvalidation::None),
                _ => Err("is neither postgres nor none".into()),
            }
        })
    }

    fn settings(&self) -> Result<Settings, ConfigError> {
        let d = Settings::default();
        Ok(Settings {
            bind: self.get("bind", d.bind, |v| {
                v.parse()
                    .map_err(|_| "is not an address such as 127.0.0.1:8080".into())
            })?,
            database_url: self.get("database_url", d.database_url, DatabaseUrl::parse)?,
            db_pool_size: self.get("db_pool_size", d.db_pool_size, |v| positive(v).map(Some))?,
            workers: self.get("workers", d.workers, positive)?,
            rate_limit_per_second: self.get(
                "rate_limit_per_second",
                d.rate_limit_per_second,
                number,
            )?,
            rate_limit_burst: self.get("rate_limit_burst", d.rate_limit_burst, positive)?,
            rate_limit_backend: self.get(
                "rate_limit_backend",
                d.rate_limit_backend,
                |v| match v.to_ascii_lowercase().as_str() {
                    "memory" => Ok(RateLimitBackend::Memory),
                    "redis" => Ok(RateLimitBackend::Redis),
                    _ => Err("is neither memory nor redis".into()),
                },
            )?,
            redis_url: self.get("redis_url", d.redis_url, |v| {
                if v.starts_with("redis://") || v.starts_with("rediss://") {
                    Ok(v.to_owned())
                } else {
                    Err("is not a redis:// URL".into())
                }
            })?,
            trust_proxy: self.get("trust_proxy", d.trust_proxy, boolean)?,
            trusted_hops: self.get("trusted_hops", d.trusted_hops, positive)?,
            forwarded_header: self.get("forwarded_header", d.forwarded_header, |v| {
                match v.to_ascii_lowercase().as_str() {
                    "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
                    "forwarded" => Ok(ForwardedHeader::Forwarded),
                    _ => Err("is neither x-forwarded-for nor forwarded".into()),
                }
            })?,
            client_ipv6_prefix: self.get("client_ipv6_prefix", d.client_ipv6_prefix, |v| {
                positive(v).and_then(|n: u8| {
                    (n <= 128)
                        .then_some(n)
                        .ok_or_else(|| "must be from 1 to 128".to_owned())
                })
            })?,
            max_in_flight: self.get("max_in_flight", d.max_in_flight, positive)?,
            max_in_flight_per_client: self.get(
                "max_in_flight_per_client",
                d.max_in_flight_per_client,
                |v| positive(v).map(Some),
            )?,
            body_read_timeout: self.get("body_read_timeout_ms", d.body_read_timeout, millis)?,
            request_timeout: self.get("request_timeout_ms", d.request_timeout, millis)?,
            body_limit_bytes: self.get("body_limit_bytes", d.body_limit_bytes, positive)?,
            cache_max_entries: self.get("cache_max_entries", d.cache_max_entries, number)?,
            cache_max_bytes: self.get("cache_max_bytes", d.cache_max_bytes, number)?,
            cache_ttl: self.get("cache_ttl_seconds", d.cache_ttl, seconds)?,
            cache_invalidation: self.cache_invalidation()?,
            fetch_allow_hosts: self.get("fetch_allow_hosts", d.fetch_allow_hosts, host_list)?,
            fetch_max_urls: self.get("fetch_max_urls", d.fetch_max_urls, positive)?,
            fetch_timeout: self.get("fetch_timeout_ms", d.fetch_timeout, millis)?,
            fetch_max_attempts: self.get("fetch_max_attempts", d.fetch_max_attempts, positive)?,
            fetch_max_body_bytes: self.get(
                "fetch_max_body_bytes",
                d.fetch_max_body_bytes,
                positive,
            )?,
            fetch_host_concurrency: self.get(
                "fetch_host_concurrency",
                d.fetch_host_concurrency,
                positive,
            )?,
            fetch_breaker_threshold: self.get(
                "fetch_breaker_threshold",
                d.fetch_breaker_threshold,
                positive,
            )?,
            fetch_breaker_cooldown: self.get(
                "fetch_breaker_cooldown_ms",
                d.fetch_breaker_cooldown,
                millis,
            )?,
            shutdown_timeout: self.get("shutdown_timeout_seconds", d.shutdown_timeout, seconds)?,
            shutdown_delay: self.get("shutdown_delay_ms", d.shutdown_delay, |v| {
                number(v).map(Duration::from_millis)
            })?,
            cors_origins: self.get("cors_origins", d.cors_origins, origin_list)?,
            log_format: self.get("log_format", d.log_format, |v| {
                match v.to_ascii_lowercase().as_str() {
                    "pretty" => Ok(LogFormat::Pretty),
                    "json" => Ok(LogFormat::Json),
                    _ => Err("is neither pretty nor json".into()),
                }
            })?,
            log_filter: self.get("log_filter", d.log_filter, |v| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| v.to_owned())
                    .map_err(|e| format!("is not a log filter: {e}"))
            })?,
            chaos: self.get("chaos", d.chaos, boolean)?,
            metrics: self.get("metrics", d.metrics, boolean)?,
        })
    }
}

fn number<T: FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| "is not a whole number".into())
}

fn positive<T: FromStr + PartialOrd + Default + Display>(v: &str) -> Result<T, String> {
    let n: T = number(v)?;
    if n > T::default() {
        Ok(n)
    } else {
        Err("must be at least 1".into())
    }
}

fn millis(v: &str) -> Result<Duration, String> {
    positive(v).map(Duration::from_millis)
}

fn seconds(v: &str) -> Result<Duration, String> {
    positive(v).map(Duration::from_secs)
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("is not true or false".into()),
    }
}

fn origin_list(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|origin| {
            let (scheme, host) = origin.split_once("://").ok_or_else(|| {
                format!("has {origin:?}, which is not an origin such as https://app.example.com")
            })?;
            let valid = matches!(scheme, "http" | "https")
                && !host.is_empty()
                && !host.contains('/')
                && host_list(host).is_ok();
            if valid {
                Ok(origin.to_owned())
            } else {
                Err(format!(
                    "has {origin:?}, which is not an origin such as https://app.example.com"
                ))
            }
        })
        .collect()
}

fn host_list(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            let valid = h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if valid {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(format!("has {h:?}, which is not a host or host:port"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Settings, ConfigError> {
        Settings::load_from(std::iter::once("switchboard").chain(args.iter().copied()))
    }

    #[test]
    fn flags_override_defaults() {
        let s = load(&["--workers", "3", "--database-url", "postgres://u@h/db"]).unwrap();
        assert_eq!(s.workers, 3);
        assert_eq!(
            s.database_url,
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(s.pool_size(), 16);
    }

    #[test]
    fn toml_file_sits_below_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, "workers = 5\nmax_in_flight = 7\nfetch_allow_hosts = [\"a.example\", \"b.example:81\"]\n").unwrap();
        let s = load(&["--config", path.to_str().unwrap(), "--workers", "2"]).unwrap();
        assert_eq!(s.workers, 2);
        assert_eq!(s.max_in_flight, 7);
        assert_eq!(s.fetch_allow_hosts, vec!["a.example", "b.example:81"]);
    }

    #[test]
    fn bad_value_names_the_setting() {
        let err = load(&["--max-in-flight", "lots"]).unwrap_err().to_string();
        assert!(err.contains("SWITCHBOARD_MAX_IN_FLIGHT"), "{err}");
        assert!(err.contains("--max-in-flight"), "{err}");
    }

    #[test]
    fn unknown_toml_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "wrokers = 5\n").unwrap();
        let err = load(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrokers"), "{err}");
    }

    #[test]
    fn unknown_rate_limit_backend_is_refused() {
        let err = load(&["--rate-limit-backend", "memcached"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SWITCHBOARD_RATE_LIMIT_BACKEND"), "{err}");
        assert!(load(&["--rate-limit-backend", "Redis"]).is_ok());
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
    fn sqlite_urls_become_paths() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db").unwrap(),
            DatabaseUrl::Sqlite("data/x.db".into())
        );
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
        assert!(DatabaseUrl::parse(":memory:").is_err());
    }
}
