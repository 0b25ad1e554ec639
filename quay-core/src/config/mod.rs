//! Quay's `config.yaml`, read as it is: the storage keys, the database, Redis, and the feature
//! flags this engine uses. Parsing is two stages: [`RawConfig`] is what serde reads,
//! [`QuayConfig::from_yaml`] validates it in one pass and reports every problem with its key.
//!
//! Keys Quay has and this engine does not use are accepted and listed in
//! [`QuayConfig::ignored_keys`]; a key that looks like a misspelling of one of ours is an error
//! with a "did you mean".

mod drivers;
mod gc;
mod keys;
mod params;
mod settings;

use std::collections::BTreeMap;
use std::fmt;

use crate::{Error, ErrorKind, LocationId, Result};
use serde::Deserialize;

pub use drivers::{driver_names, DriverConfig};
pub use gc::{parse_duration, GcSettings};
pub use params::Secret;
pub use settings::{
    AzureCredential, AzureSettings, S3Settings, SwiftSettings, DEFAULT_S3_REGION, GCS_ENDPOINT,
    GCS_REGION,
};

/// Connection settings of a Redis (`BUILDLOGS_REDIS`, `USER_EVENTS_REDIS`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct RedisConfig {
    /// Host name or address.
    pub host: String,
    /// Port (6379 when absent).
    #[serde(default = "default_redis_port")]
    pub port: u16,
    /// Password, if any.
    #[serde(default)]
    pub password: Option<String>,
}

fn default_redis_port() -> u16 {
    6379
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A validated configuration.
#[derive(Clone)]
pub struct QuayConfig {
    /// Storage locations by id (`DISTRIBUTED_STORAGE_CONFIG`).
    pub locations: BTreeMap<LocationId, DriverConfig>,
    /// This instance's preference, nearest first (`DISTRIBUTED_STORAGE_PREFERENCE`, overridden
    /// per instance by the environment variable `QUAY_DISTRIBUTED_STORAGE_PREFERENCE`, which the
    /// binaries read and pass to [`QuayConfig::from_yaml`]).
    pub preference: Vec<LocationId>,
    /// Where every blob should end up (`DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS`).
    pub default_locations: Vec<LocationId>,
    /// `FEATURE_STORAGE_REPLICATION`.
    pub replication: bool,
    /// `FEATURE_PROXY_STORAGE`.
    pub proxy_storage: bool,
    /// `DB_URI`: the metadata database (SQLAlchemy-style `postgresql://` is accepted).
    pub db_uri: Option<String>,
    /// `BUILDLOGS_REDIS`.
    pub buildlogs_redis: Option<RedisConfig>,
    /// `USER_EVENTS_REDIS`.
    pub user_events_redis: Option<RedisConfig>,
    /// `SERVER_HOSTNAME`.
    pub server_hostname: Option<String>,
    /// `SUPER_USERS`.
    pub super_users: Vec<String>,
    /// Replication settings (keys of ours, `QUAY_REPLICATION_*`).
    pub replication_settings: ReplicationSettings,
    /// `QUAY_STORAGE_TIMEOUT_SECS`: the longest a storage call (or a stalled transfer) may
    /// take before it fails and counts against the location's health (30).
    pub storage_timeout_secs: u64,
    /// `QUAY_DATABASE_TIMEOUT_SECS`: the longest an operation waits for a database connection
    /// (5).
    pub database_timeout_secs: u64,
    /// Access control (`SUPER_USERS` and keys of ours, `QUAY_AUTH_*`).
    pub auth: AuthSettings,
    /// `QUAY_TLS_CERT` and `QUAY_TLS_KEY`: PEM files of the server's certificate chain and
    /// private key (relative paths are relative to the config file's folder).
    pub tls: Option<TlsFiles>,
    /// `PREFERRED_URL_SCHEME`: `http` or `https` (how clients reach the registry).
    pub preferred_url_scheme: Option<String>,
    /// `QUAY_PRESIGN_EXPIRY_SECS`: how long a presigned storage URL stays valid (600).
    pub presign_expiry_secs: u64,
    /// `QUAY_MAX_UPLOADS_PER_REPOSITORY`: open upload sessions one repository may have (100).
    pub max_uploads_per_repository: u64,
    /// `QUAY_UPLOAD_PART_BUFFERS`: part buffers (8 MiB each) that chunked uploads into S3
    /// multipart uploads may hold at once in one process (8); a chunk waits for a free one.
    pub upload_part_buffers: usize,
    /// `QUAY_CLIENT_BODY_TIMEOUT_SECS`: the longest wait for the next bytes of a request body
    /// (30); a client that stalls longer gets `408` and its upload step is undone.
    pub client_body_timeout_secs: u64,
    /// `QUAY_CLIENT_BODY_MIN_BYTES_PER_SEC`: the lowest average rate of a request body over
    /// each stretch of `QUAY_CLIENT_BODY_TIMEOUT_SECS` spent waiting for it (1024; 0: none).
    pub client_body_min_bytes_per_sec: u64,
    /// Garbage collection and the time machine (Quay's keys, and two of ours).
    pub gc: GcSettings,
    /// `REGISTRY_STATE: readonly` (Quay's read-only mode): every write is refused, reads work,
    /// and this instance's background duties that write are off.
    pub read_only: bool,
    /// `DISABLE_PUSHES: true` (Quay's): pushes are refused, reads and deletes work.
    pub disable_pushes: bool,
    /// `QUAY_SCRUB_BYTES_PER_SEC`: the background scrubber's read rate (0: no background
    /// scrub, the default).
    pub scrub_bytes_per_sec: u64,
    /// `QUAY_SCRUB_INTERVAL_SECS`: one background scrub of every location per this many
    /// seconds across the registry (86400).
    pub scrub_interval_secs: u64,
    /// `QUAY_LOG_FORMAT`: how the binaries write their logs, `text` (default) or `json`
    /// (their `--log-format` overrides it).
    pub log_format: LogFormat,
    /// `QUAY_REPLICATION_DURABILITY`: `async` (default), `quorum` or `all`; how many default
    /// locations hold a blob before its push is acknowledged (needs replication on).
    pub durability: crate::registry::Durability,
    /// `QUAY_REPLICATION_WEBHOOKS`: where replication events are posted.
    pub webhooks: Vec<WebhookConfig>,
    /// `QUAY_REPLICATION_WEBHOOK_INTERVAL_SECS`: how often the background runner looks for
    /// events and deliveries due (5).
    pub webhook_interval_secs: u64,
    /// `QUAY_REPLICATION_WEBHOOK_WINDOW_SECS`: images pushed (tagged) within this many seconds
    /// are watched for their "fully replicated" event (86400).
    pub webhook_window_secs: u64,
    /// Quay keys present in the file that this engine does not use.
    pub ignored_keys: Vec<String>,
}

/// One webhook of `QUAY_REPLICATION_WEBHOOKS`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are posted (`http://` or `https://`), as JSON.
    pub url: String,
    /// Which events: `image_replicated`, `blob_dead_lettered` (default: both).
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
    /// Seconds one delivery may take (10).
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    /// Failed deliveries before an event is given up (20; the pause doubles from 1 s up to
    /// 5 minutes between them).
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
    /// A secret: when set, each delivery carries `X-Quay-Signature: sha256=<hex HMAC-SHA256
    /// of the body>`.
    #[serde(default)]
    pub secret: Option<Secret>,
}

fn default_webhook_events() -> Vec<String> {
    vec!["image_replicated".into(), "blob_dead_lettered".into()]
}

fn default_webhook_timeout() -> u64 {
    10
}

fn default_webhook_attempts() -> u32 {
    20
}

/// The events a webhook may ask for.
pub const WEBHOOK_EVENTS: &[&str] = &["image_replicated", "blob_dead_lettered"];

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_attempts", &self.max_attempts)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How logs are written (`QUAY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("unknown log format {other:?}: text or json"),
            )),
        }
    }
}

/// Certificate and key files for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// The private key (PEM).
    pub key: std::path::PathBuf,
}

/// Access control settings. Access control is on when any user is configured
/// (`QUAY_AUTH_USERS` or `QUAY_AUTH_HTPASSWD`).
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// `QUAY_AUTH_USERS`: user name to bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// `QUAY_AUTH_HTPASSWD`: an htpasswd file of bcrypt hashes (relative paths are relative to
    /// the config file's folder).
    pub htpasswd: Option<std::path::PathBuf>,
    /// `SUPER_USERS`: users who may do everything.
    pub super_users: Vec<String>,
    /// `QUAY_AUTH_PERMISSIONS`: user to namespace to actions (`pull`, `push`, `delete`, `*`).
    pub permissions: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// `QUAY_AUTH_PUBLIC_REPOSITORIES`: repositories every user may pull (names, `ns/*`, `*`).
    pub public_repositories: Vec<String>,
    /// `QUAY_AUTH_ANONYMOUS_PULL`: anonymous callers may pull the public repositories (false).
    pub anonymous_pull: bool,
    /// The token signing key: `QUAY_AUTH_TOKEN_KEY`, else Quay's `SECRET_KEY`. Every instance
    /// must have the same.
    pub token_key: Option<Secret>,
    /// `QUAY_AUTH_SERVICE`: the token audience and challenge `service` (else
    /// `SERVER_HOSTNAME`, else `quay`).
    pub service: String,
    /// `QUAY_AUTH_REALM`: the token endpoint URL for challenges (else built per request).
    pub realm: Option<String>,
    /// `QUAY_AUTH_TOKEN_EXPIRY_SECS`: lifetime of issued tokens (300).
    pub token_expiry_secs: u64,
}

impl AuthSettings {
    /// Whether access control is on.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty() || self.htpasswd.is_some()
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("htpasswd", &self.htpasswd)
            .field("super_users", &self.super_users)
            .field("permissions", &self.permissions)
            .field("public_repositories", &self.public_repositories)
            .field("anonymous_pull", &self.anonymous_pull)
            .field("token_key", &self.token_key)
            .field("service", &self.service)
            .field("realm", &self.realm)
            .field("token_expiry_secs", &self.token_expiry_secs)
            .finish()
    }
}

/// Which job queue replication uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// The `replication_jobs` table of the metadata database (the default).
    #[default]
    Sql,
    /// Redis (`QUAY_REPLICATION_REDIS`, else `BUILDLOGS_REDIS`), fed from the SQL outbox.
    Redis,
}

/// Replication settings, from keys of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// `QUAY_REPLICATION_QUEUE`: `sql` (default) or `redis`.
    pub queue: QueueBackend,
    /// The Redis of the queue: `QUAY_REPLICATION_REDIS`, else `BUILDLOGS_REDIS`.
    pub redis: Option<RedisConfig>,
    /// `QUAY_REPLICATION_REDIS_PREFIX`: the prefix of the queue's keys (`quay:jobs:`), so that
    /// several registries can share one Redis.
    pub redis_prefix: Option<String>,
    /// `QUAY_REPLICATION_WORKERS`: copies run at once by one worker (default 8).
    pub workers: usize,
    /// `QUAY_REPLICATION_MAX_ATTEMPTS`: failed attempts before a job is dead-lettered (10).
    pub max_attempts: u32,
    /// `QUAY_RECONCILE_INTERVAL_SECS`: how often the reconciler runs (300).
    pub reconcile_interval_secs: u64,
    /// `QUAY_REPLICATION_LEASE_SECS`: how long a worker holds a job between heartbeats before
    /// another worker may take it over (6: heartbeats every 2 s, so a worker killed mid-copy
    /// hands its jobs over within about 6 s).
    pub lease_secs: u64,
}

/// The default of `QUAY_REPLICATION_LEASE_SECS`: short, so that another worker takes over the
/// jobs of a vanished one within seconds; heartbeats renew it every third of it.
pub const DEFAULT_LEASE_SECS: u64 = 6;

impl fmt::Debug for QuayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuayConfig")
            .field("locations", &self.locations)
            .field("preference", &self.preference)
            .field("default_locations", &self.default_locations)
            .field("replication", &self.replication)
            .field("proxy_storage", &self.proxy_storage)
            .field("db_uri", &self.db_uri.as_ref().map(|_| "<redacted>"))
            .field("buildlogs_redis", &self.buildlogs_redis)
            .field("user_events_redis", &self.user_events_redis)
            .field("server_hostname", &self.server_hostname)
            .field("super_users", &self.super_users)
            .field("replication_settings", &self.replication_settings)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("log_format", &self.log_format)
            .field("durability", &self.durability)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

/// The file as serde reads it, before validation.
#[derive(Debug, Deserialize, Default)]
#[allow(non_snake_case)]
struct RawConfig {
    #[serde(default)]
    DISTRIBUTED_STORAGE_CONFIG: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    DISTRIBUTED_STORAGE_PREFERENCE: Vec<String>,
    #[serde(default)]
    DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: Vec<String>,
    #[serde(default)]
    FEATURE_STORAGE_REPLICATION: bool,
    #[serde(default)]
    FEATURE_PROXY_STORAGE: bool,
    #[serde(default)]
    DB_URI: Option<String>,
    #[serde(default)]
    BUILDLOGS_REDIS: Option<RedisConfig>,
    #[serde(default)]
    USER_EVENTS_REDIS: Option<RedisConfig>,
    #[serde(default)]
    SERVER_HOSTNAME: Option<String>,
    #[serde(default)]
    SUPER_USERS: Vec<String>,
    #[serde(default)]
    QUAY_REPLICATION_QUEUE: QueueBackend,
    #[serde(default)]
    QUAY_REPLICATION_REDIS: Option<RedisConfig>,
    #[serde(default)]
    QUAY_REPLICATION_REDIS_PREFIX: Option<String>,
    #[serde(default)]
    QUAY_REPLICATION_WORKERS: Option<usize>,
    #[serde(default)]
    QUAY_REPLICATION_MAX_ATTEMPTS: Option<u32>,
    #[serde(default)]
    QUAY_RECONCILE_INTERVAL_SECS: Option<u64>,
    #[serde(default)]
    QUAY_REPLICATION_LEASE_SECS: Option<u64>,
    #[serde(default)]
    QUAY_STORAGE_TIMEOUT_SECS: Option<u64>,
    #[serde(default)]
    QUAY_DATABASE_TIMEOUT_SECS: Option<u64>,
    #[serde(default)]
    QUAY_AUTH_USERS: BTreeMap<String, String>,
    #[serde(default)]
    QUAY_AUTH_HTPASSWD: Option<String>,
    #[serde(default)]
    QUAY_AUTH_PERMISSIONS: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    QUAY_AUTH_PUBLIC_REPOSITORIES: Vec<String>,
    #[serde(default)]
    QUAY_AUTH_ANONYMOUS_PULL: bool,
    #[serde(default)]
    QUAY_AUTH_TOKEN_KEY: Option<Secret>,
    #[serde(default)]
    SECRET_KEY: Option<Secret>,
    #[serde(default)]
    QUAY_AUTH_SERVICE: Option<String>,
    #[serde(default)]
    QUAY_AUTH_REALM: Option<String>,
    #[serde(default)]
    QUAY_AUTH_TOKEN_EXPIRY_SECS: Option<u64>,
    #[serde(default)]
    QUAY_TLS_CERT: Option<String>,
    #[serde(default)]
    QUAY_TLS_KEY: Option<String>,
    #[serde(default)]
    PREFERRED_URL_SCHEME: Option<String>,
    #[serde(default)]
    QUAY_PRESIGN_EXPIRY_SECS: Option<u64>,
    #[serde(default)]
    QUAY_MAX_UPLOADS_PER_REPOSITORY: Option<u64>,
    #[serde(default)]
    QUAY_UPLOAD_PART_BUFFERS: Option<usize>,
    #[serde(default)]
    QUAY_CLIENT_BODY_TIMEOUT_SECS: Option<u64>,
    #[serde(default)]
    QUAY_CLIENT_BODY_MIN_BYTES_PER_SEC: Option<u64>,
    #[serde(default)]
    FEATURE_GARBAGE_COLLECTION: Option<serde_yaml::Value>,
    #[serde(default)]
    GARBAGE_COLLECTION_FREQUENCY: Option<serde_yaml::Value>,
    #[serde(default)]
    PUSH_TEMP_TAG_EXPIRATION_SEC: Option<serde_yaml::Value>,
    #[serde(default)]
    DEFAULT_TAG_EXPIRATION: Option<serde_yaml::Value>,
    #[serde(default)]
    TAG_EXPIRATION_OPTIONS: Option<serde_yaml::Value>,
    #[serde(default)]
    CLEAN_BLOB_UPLOAD_FOLDER: Option<serde_yaml::Value>,
    #[serde(default)]
    REGISTRY_STATE: Option<String>,
    #[serde(default)]
    DISABLE_PUSHES: Option<bool>,
    #[serde(default)]
    QUAY_SCRUB_BYTES_PER_SEC: Option<u64>,
    #[serde(default)]
    QUAY_SCRUB_INTERVAL_SECS: Option<u64>,
    #[serde(default)]
    QUAY_GC_ORPHAN_GRACE_SECS: Option<u64>,
    #[serde(default)]
    QUAY_GC_ORPHAN_SWEEP_INTERVAL_SECS: Option<u64>,
    #[serde(default)]
    QUAY_LOG_FORMAT: LogFormat,
    #[serde(default)]
    QUAY_REPLICATION_DURABILITY: Option<String>,
    #[serde(default)]
    QUAY_REPLICATION_WEBHOOKS: Vec<WebhookConfig>,
    #[serde(default)]
    QUAY_REPLICATION_WEBHOOK_INTERVAL_SECS: Option<u64>,
    #[serde(default)]
    QUAY_REPLICATION_WEBHOOK_WINDOW_SECS: Option<u64>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_yaml::Value>,
}

/// Problems found while validating, each with the key it concerns.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, key: &str, message: impl fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }
}

impl QuayConfig {
    /// Reads and validates the `config.yaml` at `path` (see [`QuayConfig::from_yaml`]).
    pub fn from_file(path: &std::path::Path, preference_override: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("cannot read config file {}", path.display()),
            )
            .with_source(e)
        })?;
        QuayConfig::from_yaml(&text, preference_override)
    }

    /// The embedded default: one local location `local` under `<data_dir>/storage`, and (no
    /// `DB_URI`) SQLite in `<data_dir>/metadata.db`.
    pub fn embedded_default(data_dir: &std::path::Path) -> Result<Self> {
        let storage = data_dir.join("storage");
        let yaml = format!(
            "DISTRIBUTED_STORAGE_CONFIG:\n  local:\n    - LocalStorage\n    - storage_path: {:?}\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [local]\nDISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [local]\n",
            storage.to_string_lossy()
        );
        QuayConfig::from_yaml(&yaml, None)
    }

    /// Parses and validates a `config.yaml`. `preference_override` is the value of
    /// `QUAY_DISTRIBUTED_STORAGE_PREFERENCE` (location ids separated by white space), if set.
    /// Every problem is reported at once, each naming its key.
    pub fn from_yaml(text: &str, preference_override: Option<&str>) -> Result<Self> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                Error::new(ErrorKind::Config, format!("config file is not valid: {e}"))
            })?
        };
        let mut problems = Problems::default();
        let mut ignored = Vec::new();
        for key in raw.rest.keys() {
            match keys::classify(key) {
                keys::KeyClass::QuayIgnored => ignored.push(key.clone()),
                keys::KeyClass::Misspelt(ours) => {
                    problems.push(key, format_args!("unknown key; did you mean {ours}?"))
                }
                keys::KeyClass::Unknown => ignored.push(key.clone()),
            }
        }

        let mut locations = BTreeMap::new();
        for (id, value) in &raw.DISTRIBUTED_STORAGE_CONFIG {
            let key = format!("DISTRIBUTED_STORAGE_CONFIG.{id}");
            let parsed_id = match id.parse::<LocationId>() {
                Ok(i) => i,
                Err(e) => {
                    problems.push(&key, e.message());
                    continue;
                }
            };
            match DriverConfig::from_value(value) {
                Ok(driver) => {
                    locations.insert(parsed_id, driver);
                }
                Err(msgs) => {
                    for (sub, m) in msgs {
                        let k = if sub.is_empty() {
                            key.clone()
                        } else {
                            format!("{key}.{sub}")
                        };
                        problems.push(&k, m);
                    }
                }
            }
        }
        if raw.DISTRIBUTED_STORAGE_CONFIG.is_empty() {
            problems.push(
                "DISTRIBUTED_STORAGE_CONFIG",
                "no storage location is configured",
            );
        }

        let (pref_key, pref_list): (&str, Vec<String>) = match preference_override {
            Some(v) if !v.trim().is_empty() => (
                "QUAY_DISTRIBUTED_STORAGE_PREFERENCE (environment)",
                v.split_whitespace().map(str::to_owned).collect(),
            ),
            _ => (
                "DISTRIBUTED_STORAGE_PREFERENCE",
                raw.DISTRIBUTED_STORAGE_PREFERENCE.clone(),
            ),
        };
        let mut preference = check_ids(pref_key, &pref_list, &raw, &mut problems);
        if preference.is_empty() && problems.0.is_empty() {
            // Quay falls back to the configured order; so do we, but only when nothing is
            // wrong, and it is the documented behaviour, not a silent fallback.
            preference = locations.keys().cloned().collect();
        }
        let default_locations = check_ids(
            "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS",
            &raw.DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS,
            &raw,
            &mut problems,
        );
        if let Some(uri) = &raw.DB_URI {
            if uri.trim().is_empty() {
                problems.push("DB_URI", "is empty");
            }
        }
        let replication_redis = raw
            .QUAY_REPLICATION_REDIS
            .clone()
            .or_else(|| raw.BUILDLOGS_REDIS.clone());
        if raw.QUAY_REPLICATION_QUEUE == QueueBackend::Redis && replication_redis.is_none() {
            problems.push(
                "QUAY_REPLICATION_QUEUE",
                "is redis, but neither QUAY_REPLICATION_REDIS nor BUILDLOGS_REDIS names a Redis",
            );
        }
        if raw.QUAY_REPLICATION_WORKERS == Some(0) {
            problems.push("QUAY_REPLICATION_WORKERS", "must be at least 1");
        }
        if raw.QUAY_REPLICATION_MAX_ATTEMPTS == Some(0) {
            problems.push("QUAY_REPLICATION_MAX_ATTEMPTS", "must be at least 1");
        }
        if raw.QUAY_DATABASE_TIMEOUT_SECS == Some(0) {
            problems.push("QUAY_DATABASE_TIMEOUT_SECS", "must be at least 1");
        }
        if raw.QUAY_STORAGE_TIMEOUT_SECS == Some(0) {
            problems.push("QUAY_STORAGE_TIMEOUT_SECS", "must be at least 1");
        }
        if raw.QUAY_REPLICATION_LEASE_SECS == Some(0) {
            problems.push("QUAY_REPLICATION_LEASE_SECS", "must be at least 1");
        }
        if raw.QUAY_RECONCILE_INTERVAL_SECS == Some(0) {
            problems.push("QUAY_RECONCILE_INTERVAL_SECS", "must be at least 1");
        }
        let auth = check_auth(&raw, &mut problems);
        let tls = match (&raw.QUAY_TLS_CERT, &raw.QUAY_TLS_KEY) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            _ => {
                problems.push(
                    "QUAY_TLS_CERT",
                    "QUAY_TLS_CERT and QUAY_TLS_KEY go together",
                );
                None
            }
        };
        if let Some(scheme) = &raw.PREFERRED_URL_SCHEME {
            if scheme != "http" && scheme != "https" {
                problems.push("PREFERRED_URL_SCHEME", "must be http or https");
            }
        }
        if raw.QUAY_PRESIGN_EXPIRY_SECS == Some(0) {
            problems.push("QUAY_PRESIGN_EXPIRY_SECS", "must be at least 1");
        }
        if raw.QUAY_MAX_UPLOADS_PER_REPOSITORY == Some(0) {
            problems.push("QUAY_MAX_UPLOADS_PER_REPOSITORY", "must be at least 1");
        }
        if raw.QUAY_UPLOAD_PART_BUFFERS == Some(0) {
            problems.push("QUAY_UPLOAD_PART_BUFFERS", "must be at least 1");
        }
        if raw.QUAY_CLIENT_BODY_TIMEOUT_SECS == Some(0) {
            problems.push("QUAY_CLIENT_BODY_TIMEOUT_SECS", "must be at least 1");
        }
        let read_only = match raw.REGISTRY_STATE.as_deref() {
            None | Some("normal") => false,
            Some("readonly") => true,
            Some(other) => {
                problems.push(
                    "REGISTRY_STATE",
                    format_args!("is {other:?}; Quay's states are normal and readonly"),
                );
                false
            }
        };
        if raw.QUAY_SCRUB_INTERVAL_SECS == Some(0) {
            problems.push("QUAY_SCRUB_INTERVAL_SECS", "must be at least 1");
        }
        let durability = match raw.QUAY_REPLICATION_DURABILITY.as_deref().map(str::parse) {
            None => crate::registry::Durability::Async,
            Some(Ok(d)) => d,
            Some(Err(_)) => {
                problems.push(
                    "QUAY_REPLICATION_DURABILITY",
                    "must be async, quorum or all",
                );
                crate::registry::Durability::Async
            }
        };
        if durability != crate::registry::Durability::Async && !raw.FEATURE_STORAGE_REPLICATION {
            problems.push(
                "QUAY_REPLICATION_DURABILITY",
                "quorum and all need FEATURE_STORAGE_REPLICATION: true",
            );
        }
        for (i, hook) in raw.QUAY_REPLICATION_WEBHOOKS.iter().enumerate() {
            let key = format!("QUAY_REPLICATION_WEBHOOKS[{i}]");
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                problems.push(&format!("{key}.url"), "must be an http:// or https:// URL");
            }
            for event in &hook.events {
                if !WEBHOOK_EVENTS.contains(&event.as_str()) {
                    problems.push(
                        &format!("{key}.events"),
                        format_args!(
                            "unknown event {event:?} (image_replicated, blob_dead_lettered)"
                        ),
                    );
                }
            }
            if hook.timeout_secs == 0 {
                problems.push(&format!("{key}.timeout_secs"), "must be at least 1");
            }
            if hook.max_attempts == 0 {
                problems.push(&format!("{key}.max_attempts"), "must be at least 1");
            }
        }
        if raw.QUAY_REPLICATION_WEBHOOK_INTERVAL_SECS == Some(0) {
            problems.push(
                "QUAY_REPLICATION_WEBHOOK_INTERVAL_SECS",
                "must be at least 1",
            );
        }
        let gc = gc::check(
            gc::RawGc {
                feature: raw.FEATURE_GARBAGE_COLLECTION.as_ref(),
                frequency: raw.GARBAGE_COLLECTION_FREQUENCY.as_ref(),
                push_temp: raw.PUSH_TEMP_TAG_EXPIRATION_SEC.as_ref(),
                default_expiration: raw.DEFAULT_TAG_EXPIRATION.as_ref(),
                options: raw.TAG_EXPIRATION_OPTIONS.as_ref(),
                clean_upload_folder: raw.CLEAN_BLOB_UPLOAD_FOLDER.as_ref(),
                orphan_grace: raw.QUAY_GC_ORPHAN_GRACE_SECS,
                orphan_sweep_interval: raw.QUAY_GC_ORPHAN_SWEEP_INTERVAL_SECS,
            },
            &mut problems,
        );
        if !problems.0.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("invalid configuration:\n  {}", problems.0.join("\n  ")),
            ));
        }
        Ok(QuayConfig {
            locations,
            preference,
            default_locations,
            replication: raw.FEATURE_STORAGE_REPLICATION,
            proxy_storage: raw.FEATURE_PROXY_STORAGE,
            db_uri: raw.DB_URI.map(|u| normalize_db_uri(&u)),
            buildlogs_redis: raw.BUILDLOGS_REDIS,
            user_events_redis: raw.USER_EVENTS_REDIS,
            server_hostname: raw.SERVER_HOSTNAME,
            super_users: raw.SUPER_USERS,
            storage_timeout_secs: raw.QUAY_STORAGE_TIMEOUT_SECS.unwrap_or(30),
            database_timeout_secs: raw.QUAY_DATABASE_TIMEOUT_SECS.unwrap_or(5),
            replication_settings: ReplicationSettings {
                queue: raw.QUAY_REPLICATION_QUEUE,
                redis: replication_redis,
                redis_prefix: raw.QUAY_REPLICATION_REDIS_PREFIX.clone(),
                workers: raw.QUAY_REPLICATION_WORKERS.unwrap_or(8),
                max_attempts: raw.QUAY_REPLICATION_MAX_ATTEMPTS.unwrap_or(10),
                reconcile_interval_secs: raw.QUAY_RECONCILE_INTERVAL_SECS.unwrap_or(300),
                lease_secs: raw
                    .QUAY_REPLICATION_LEASE_SECS
                    .unwrap_or(DEFAULT_LEASE_SECS),
            },
            auth,
            tls,
            preferred_url_scheme: raw.PREFERRED_URL_SCHEME,
            presign_expiry_secs: raw.QUAY_PRESIGN_EXPIRY_SECS.unwrap_or(600),
            max_uploads_per_repository: raw.QUAY_MAX_UPLOADS_PER_REPOSITORY.unwrap_or(100),
            upload_part_buffers: raw
                .QUAY_UPLOAD_PART_BUFFERS
                .unwrap_or(crate::registry::DEFAULT_UPLOAD_PART_BUFFERS),
            client_body_timeout_secs: raw.QUAY_CLIENT_BODY_TIMEOUT_SECS.unwrap_or(30),
            client_body_min_bytes_per_sec: raw.QUAY_CLIENT_BODY_MIN_BYTES_PER_SEC.unwrap_or(1024),
            gc,
            read_only,
            disable_pushes: raw.DISABLE_PUSHES.unwrap_or(false),
            scrub_bytes_per_sec: raw.QUAY_SCRUB_BYTES_PER_SEC.unwrap_or(0),
            scrub_interval_secs: raw.QUAY_SCRUB_INTERVAL_SECS.unwrap_or(86_400),
            log_format: raw.QUAY_LOG_FORMAT,
            durability,
            webhooks: raw.QUAY_REPLICATION_WEBHOOKS,
            webhook_interval_secs: raw.QUAY_REPLICATION_WEBHOOK_INTERVAL_SECS.unwrap_or(5),
            webhook_window_secs: raw.QUAY_REPLICATION_WEBHOOK_WINDOW_SECS.unwrap_or(86_400),
            ignored_keys: ignored,
        })
    }
}

/// The shortest token signing key accepted, in bytes.
const MIN_TOKEN_KEY_LEN: usize = 16;

fn check_auth(raw: &RawConfig, problems: &mut Problems) -> AuthSettings {
    let mut permissions = BTreeMap::new();
    for (user, namespaces) in &raw.QUAY_AUTH_PERMISSIONS {
        for (namespace, actions) in namespaces {
            for action in actions {
                if !matches!(action.as_str(), "pull" | "push" | "delete" | "*") {
                    problems.push(
                        &format!("QUAY_AUTH_PERMISSIONS.{user}.{namespace}"),
                        format_args!("unknown action {action:?} (pull, push, delete or *)"),
                    );
                }
            }
        }
        permissions.insert(user.clone(), namespaces.clone());
    }
    for (user, hash) in &raw.QUAY_AUTH_USERS {
        if !crate::auth::is_bcrypt(hash) {
            problems.push(
                &format!("QUAY_AUTH_USERS.{user}"),
                "must be a bcrypt hash (htpasswd -nB USER, or python -c 'import bcrypt; ...')",
            );
        }
    }
    let token_key = raw
        .QUAY_AUTH_TOKEN_KEY
        .clone()
        .or_else(|| raw.SECRET_KEY.clone());
    let settings = AuthSettings {
        users: raw.QUAY_AUTH_USERS.clone(),
        htpasswd: raw.QUAY_AUTH_HTPASSWD.as_ref().map(Into::into),
        super_users: raw.SUPER_USERS.clone(),
        permissions,
        public_repositories: raw.QUAY_AUTH_PUBLIC_REPOSITORIES.clone(),
        anonymous_pull: raw.QUAY_AUTH_ANONYMOUS_PULL,
        token_key,
        service: raw
            .QUAY_AUTH_SERVICE
            .clone()
            .or_else(|| raw.SERVER_HOSTNAME.clone())
            .unwrap_or_else(|| "quay".to_owned()),
        realm: raw.QUAY_AUTH_REALM.clone(),
        token_expiry_secs: raw.QUAY_AUTH_TOKEN_EXPIRY_SECS.unwrap_or(300),
    };
    if settings.enabled() {
        match &settings.token_key {
            None => problems.push(
                "QUAY_AUTH_TOKEN_KEY",
                "users are configured, so tokens must be signed: set QUAY_AUTH_TOKEN_KEY \
                 (or SECRET_KEY) to the same secret on every instance",
            ),
            Some(k) if k.expose().len() < MIN_TOKEN_KEY_LEN => problems.push(
                "QUAY_AUTH_TOKEN_KEY",
                format_args!("is shorter than {MIN_TOKEN_KEY_LEN} bytes"),
            ),
            Some(_) => {}
        }
    }
    if raw.QUAY_AUTH_TOKEN_EXPIRY_SECS == Some(0) {
        problems.push("QUAY_AUTH_TOKEN_EXPIRY_SECS", "must be at least 1");
    }
    settings
}

fn check_ids(
    key: &str,
    ids: &[String],
    raw: &RawConfig,
    problems: &mut Problems,
) -> Vec<LocationId> {
    let mut out = Vec::new();
    for id in ids {
        if !raw.DISTRIBUTED_STORAGE_CONFIG.contains_key(id) {
            problems.push(
                key,
                format_args!("names {id:?}, which DISTRIBUTED_STORAGE_CONFIG does not configure"),
            );
            continue;
        }
        match id.parse::<LocationId>() {
            Ok(i) if !out.contains(&i) => out.push(i),
            Ok(_) => {}
            Err(e) => problems.push(key, e.message()),
        }
    }
    out
}

/// Quay writes SQLAlchemy URIs (`postgresql://`, `postgresql+psycopg2://`); sea-orm wants
/// `postgres://`.
fn normalize_db_uri(uri: &str) -> String {
    let uri = uri.trim();
    for prefix in ["postgresql+psycopg2://", "postgresql://"] {
        if let Some(rest) = uri.strip_prefix(prefix) {
            return format!("postgres://{rest}");
        }
    }
    uri.to_owned()
}

#[cfg(test)]
mod tests;
