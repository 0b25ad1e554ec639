//! [`Quay::from_config`]: a registry instance from a Quay `config.yaml`, as `quay-server` runs
//! it.
//!
//! In order: the metadata store (`DB_URI`, else SQLite in the data folder), one location per
//! `DISTRIBUTED_STORAGE_CONFIG` entry with the timeout and metrics layers
//! (`QUAY_STORAGE_TIMEOUT_SECS`), the replication queue (the store's outbox, or Redis with a
//! relay from the outbox), the engine, access control (users, htpasswd, token key), TLS,
//! the health checks (database, every location, Redis), metrics, and the background duties.
//! Files the configuration names (`QUAY_AUTH_HTPASSWD`, `QUAY_TLS_*`, Quay's `ssl.cert` and
//! `ssl.key`) are read relative to [`ConfigOptions::config_dir`]; nothing is read from the
//! environment.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quay_core::auth::TokenKey;
use quay_core::config::{QuayConfig, QueueBackend};
use quay_core::registry::GcPolicy;
use quay_core::{Actions, Error, ErrorKind, JobQueue, Registry, Result, RetryPolicy};
use quay_replication::collector::CollectorConfig;
use quay_replication::redis::{OutboxRelay, OutboxedRedisQueue, RedisJobQueue, RedisQueueConfig};
use quay_replication::webhooks::Webhooks;
use quay_replication::worker::WorkerConfig;
use quay_replication::{CheckRole, QueueProbe};
use quay_storage::layers::{MetricsLayer, TimeoutLayer};
use quay_storage::{build_location, SqlMetadataStore};
use tracing::info;

use crate::auth::AuthConfig;
use crate::body::BodyLimits;
use crate::serve::{load_tls, ServeOptions, DEFAULT_MAX_HEADER_BYTES};
use crate::users::{parse_htpasswd, NamespaceGrant, StaticUsers, StaticUsersConfig};
use crate::{Quay, QuayBuilder};

/// What [`Quay::from_config`] needs beside the configuration.
#[derive(Debug, Clone)]
pub struct ConfigOptions {
    /// The folder of the embedded default's SQLite database (`metadata.db`) when the
    /// configuration has no `DB_URI`.
    pub data_dir: PathBuf,
    /// The folder of `config.yaml`: relative file names in it are relative to this folder, and
    /// Quay's `ssl.cert`/`ssl.key` are looked for there.
    pub config_dir: Option<PathBuf>,
    /// A certificate chain and key (PEM) to serve TLS with, before those of the configuration.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Serve `/metrics` from a Prometheus recorder installed for the process (once).
    pub metrics: bool,
    /// Create the SQLite database (and data folder) when missing. Admin tools say no, so that
    /// a wrong folder is an error instead of an empty registry.
    pub create_database: bool,
    /// Idle time after which an upload session expires with its data.
    pub upload_expiry: Duration,
    /// Time between health probes.
    pub health_interval: Duration,
    /// The largest request head accepted, in bytes.
    pub max_header_bytes: usize,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        ConfigOptions {
            data_dir: PathBuf::from("./quay-data"),
            config_dir: None,
            tls_files: None,
            metrics: true,
            create_database: true,
            upload_expiry: Duration::from_secs(24 * 3600),
            health_interval: Duration::from_secs(2),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

impl ConfigOptions {
    /// The defaults, for the configuration file `config_file` (its folder resolves relative
    /// file names; `None` for the embedded default) and the data folder `data_dir`.
    pub fn new(config_file: Option<&Path>, data_dir: &Path) -> Self {
        let config_dir = config_file.and_then(Path::parent).map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d.to_path_buf()
            }
        });
        ConfigOptions {
            data_dir: data_dir.to_path_buf(),
            config_dir,
            ..ConfigOptions::default()
        }
    }

    /// The path of a file the configuration names: as given when absolute, else relative to
    /// the configuration's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match &self.config_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The URL of the metadata database: `DB_URI`, else SQLite in the data folder.
    /// Without [`ConfigOptions::create_database`], a SQLite database must exist (its URL is
    /// opened read-write, never create), whether it is the embedded default's or `DB_URI`'s.
    pub fn database_url(&self, config: &QuayConfig) -> Result<String> {
        if let Some(uri) = &config.db_uri {
            if self.create_database {
                create_sqlite_folder(uri)?;
                return Ok(uri.clone());
            }
            return existing_sqlite(uri);
        }
        let path = self.data_dir.join("metadata.db");
        if self.create_database {
            std::fs::create_dir_all(&self.data_dir).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("cannot create data directory {}", self.data_dir.display()),
                )
                .with_source(e)
            })?;
            return Ok(format!("sqlite://{}?mode=rwc", path.to_string_lossy()));
        }
        if !path.is_file() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "no registry database at {}: pass the --config of the registry (its DB_URI) \
                     or the --data-dir it runs with",
                    path.display()
                ),
            ));
        }
        Ok(format!("sqlite://{}?mode=rw", path.to_string_lossy()))
    }
}

/// The path and query of a SQLite URL naming a file (`None` for another database, or an
/// in-memory one).
fn sqlite_file(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let memory = path.is_empty() || path == ":memory:" || query.contains("mode=memory");
    (!memory).then_some((path, query))
}

/// Creates the folder of a SQLite database that its URL asks to create (`mode=rwc`).
fn create_sqlite_folder(uri: &str) -> Result<()> {
    let Some((path, query)) = sqlite_file(uri) else {
        return Ok(());
    };
    match Path::new(path).parent() {
        Some(dir) if query.contains("mode=rwc") && !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("cannot create the database folder {}", dir.display()),
                )
                .with_source(e)
            })
        }
        _ => Ok(()),
    }
}

/// `uri` unchanged unless it names a SQLite file: then the file must exist, and it is opened
/// without `mode=rwc` (never created).
fn existing_sqlite(uri: &str) -> Result<String> {
    let Some((path, query)) = sqlite_file(uri) else {
        return Ok(uri.to_owned());
    };
    if !Path::new(path).is_file() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "no registry database at {path} (DB_URI): check that --config names the \
                 registry's config.yaml, and run from the folder its relative paths are \
                 relative to"
            ),
        ));
    }
    let query: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("mode="))
        .chain(["mode=rw"])
        .collect();
    Ok(format!("sqlite://{path}?{}", query.join("&")))
}

/// The storage location `id` of `config`, with the timeout layer
/// (`QUAY_STORAGE_TIMEOUT_SECS`) that [`Quay::from_config`] puts on it, without a database
/// or a registry: for tools that work on storage alone (`quayctl bench`).
pub fn configured_location(
    config: &QuayConfig,
    id: &quay_core::LocationId,
) -> Result<Arc<dyn quay_core::StorageEngine>> {
    use quay_core::registry::layers::StorageLayer;
    let driver = config.locations.get(id).ok_or_else(|| {
        let known: Vec<&str> = config.locations.keys().map(|l| l.as_str()).collect();
        Error::new(
            ErrorKind::Config,
            format!(
                "no storage location {id} in DISTRIBUTED_STORAGE_CONFIG (it has: {})",
                known.join(", ")
            ),
        )
    })?;
    let timeout = Duration::from_secs(config.storage_timeout_secs);
    Ok(TimeoutLayer::new(timeout, timeout).layer(id, build_location(id, driver)?))
}

impl Quay {
    /// A registry instance from `config` (see the [module docs](self)).
    pub async fn from_config(config: &QuayConfig, options: &ConfigOptions) -> Result<Quay> {
        Ok(Self::builder_from_config(config, options).await?.build())
    }

    /// The builder [`Quay::from_config`] finishes, to change a part before building.
    pub async fn builder_from_config(
        config: &QuayConfig,
        options: &ConfigOptions,
    ) -> Result<QuayBuilder> {
        let policy = RetryPolicy {
            max_attempts: config.replication_settings.max_attempts,
            ..RetryPolicy::default()
        };
        let store = SqlMetadataStore::connect_with_timeout(
            &options.database_url(config)?,
            Duration::from_secs(config.database_timeout_secs),
        )
        .await?
        .with_retry_policy(policy.clone());
        let timeout = Duration::from_secs(config.storage_timeout_secs);
        let mut builder = Registry::builder(Arc::new(store.clone()))
            .layer(TimeoutLayer::new(timeout, timeout))
            .layer(MetricsLayer)
            .preference(config.preference.iter().cloned())
            .default_locations(config.default_locations.iter().cloned())
            .proxy_storage(config.proxy_storage)
            .presign_expiry(Duration::from_secs(config.presign_expiry_secs))
            .max_uploads_per_repository(config.max_uploads_per_repository)
            .durability(config.durability)
            .upload_part_buffers(config.upload_part_buffers);
        for (id, driver) in &config.locations {
            info!(location = %id, driver = ?driver, "storage location");
            builder = builder.location(id.clone(), build_location(id, driver)?);
        }
        if config.replication {
            builder = builder.replicate_to(config.default_locations.iter().cloned());
        }
        let mut relay = None;
        let mut redis_probe = None;
        if config.replication && config.replication_settings.queue == QueueBackend::Redis {
            let (queue, outbox_relay) = redis_queue(config, &store, policy).await?;
            redis_probe = Some(queue.clone());
            builder = builder.queue(queue);
            relay = Some(outbox_relay);
        }
        let registry = builder.finish()?;
        let tls = match tls_files(config, options) {
            Some((cert, key)) => Some(load_tls(&cert, &key)?),
            None => None,
        };
        let auth = auth_config(config, options, tls.is_some())?;
        let settings = &config.replication_settings;
        let webhooks = (!config.webhooks.is_empty()).then(|| {
            Webhooks::new(
                registry.clone(),
                Arc::new(store.clone()),
                config.webhooks.clone(),
            )
            .interval(Duration::from_secs(config.webhook_interval_secs))
            .window(Duration::from_secs(config.webhook_window_secs))
        });
        let mut quay = Quay::builder(registry)
            .webhooks(webhooks)
            .health_check(
                Arc::new(store),
                CheckRole {
                    instance: true,
                    endtoend_critical: true,
                },
            )
            .health_timing(
                options.health_interval.max(Duration::from_millis(100)),
                timeout.min(Duration::from_secs(10)),
            )
            .body_limits(BodyLimits {
                idle_timeout: Duration::from_secs(config.client_body_timeout_secs),
                min_bytes_per_sec: config.client_body_min_bytes_per_sec,
            })
            .serve_options(ServeOptions {
                tls,
                max_header_bytes: options.max_header_bytes,
            })
            .worker(config.replication.then(|| WorkerConfig {
                concurrency: settings.workers,
                lease: Duration::from_secs(settings.lease_secs),
                ..WorkerConfig::default()
            }))
            .reconcile_every(
                config
                    .replication
                    .then(|| Duration::from_secs(settings.reconcile_interval_secs)),
            )
            .relay(relay)
            .upload_expiry(Some(options.upload_expiry))
            .clean_upload_folder(config.gc.clean_upload_folder)
            .collector(collector_config(config))
            .scrubber((config.scrub_bytes_per_sec > 0).then(|| {
                (
                    config.scrub_bytes_per_sec,
                    Duration::from_secs(config.scrub_interval_secs),
                )
            }))
            .write_mode(match (config.read_only, config.disable_pushes) {
                (true, _) => crate::write_gate::WriteMode::ReadOnly,
                (false, true) => crate::write_gate::WriteMode::NoPushes,
                _ => crate::write_gate::WriteMode::Normal,
            });
        if let Some(queue) = redis_probe {
            // Reported on /health/endtoend; a Redis outage delays replication but fails nothing.
            quay = quay.health_check(
                Arc::new(QueueProbe::new("redis", queue)),
                CheckRole {
                    instance: false,
                    endtoend_critical: false,
                },
            );
        }
        if let Some(auth) = auth {
            quay = quay.auth(auth);
        }
        if options.metrics {
            quay = quay.metrics(crate::prometheus()?);
        }
        Ok(quay)
    }
}

/// The garbage collector's settings (`FEATURE_GARBAGE_COLLECTION` and the keys around it).
pub fn collector_config(config: &QuayConfig) -> Option<CollectorConfig> {
    let gc = &config.gc;
    gc.enabled.then(|| CollectorConfig {
        policy: gc_policy(config),
        every: Duration::from_secs(gc.frequency_secs),
        orphans: (gc.orphan_sweep_interval_secs > 0).then(|| {
            (
                Duration::from_secs(gc.orphan_grace_secs),
                Duration::from_secs(gc.orphan_sweep_interval_secs),
            )
        }),
    })
}

/// What a collection pass may collect, from the configuration (no orphan sweep, not dry).
pub fn gc_policy(config: &QuayConfig) -> GcPolicy {
    GcPolicy {
        tag_expiration: Duration::from_secs(config.gc.tag_expiration_secs),
        push_protection: Duration::from_secs(config.gc.push_protection_secs),
        orphan_grace: None,
        dry_run: false,
    }
}

/// The Redis queue, counting the outbox too, and the relay that feeds it from the outbox.
async fn redis_queue(
    config: &QuayConfig,
    store: &SqlMetadataStore,
    policy: RetryPolicy,
) -> Result<(Arc<dyn JobQueue>, OutboxRelay)> {
    use quay_core::JobOutbox;
    let settings = &config.replication_settings;
    let server = settings.redis.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "QUAY_REPLICATION_QUEUE is redis but no Redis is configured",
        )
    })?;
    let mut redis_config = RedisQueueConfig::new(server);
    if let Some(prefix) = &settings.redis_prefix {
        redis_config = redis_config.with_prefix(prefix.clone());
    }
    let redis = RedisJobQueue::connect(&redis_config, policy).await?;
    let outbox = store
        .outbox()
        .ok_or_else(|| Error::internal("the SQL store has no outbox"))?;
    let relay = OutboxRelay::new(outbox.clone(), redis.clone());
    Ok((Arc::new(OutboxedRedisQueue::new(redis, outbox)), relay))
}

/// Where the certificate and key come from: the options, the config keys, or Quay's `ssl.cert`
/// and `ssl.key` in the config folder.
fn tls_files(config: &QuayConfig, options: &ConfigOptions) -> Option<(PathBuf, PathBuf)> {
    if let Some(files) = &options.tls_files {
        return Some(files.clone());
    }
    if let Some(files) = &config.tls {
        return Some((options.resolve(&files.cert), options.resolve(&files.key)));
    }
    let dir = options.config_dir.as_ref()?;
    let (cert, key) = (dir.join("ssl.cert"), dir.join("ssl.key"));
    (cert.is_file() && key.is_file()).then_some((cert, key))
}

/// Access control from the configuration: `None` when no user is configured. The token realm's
/// scheme is `https` when this server serves TLS, or when `PREFERRED_URL_SCHEME` is `https`
/// (TLS ended by a load balancer in front).
fn auth_config(
    config: &QuayConfig,
    options: &ConfigOptions,
    tls: bool,
) -> Result<Option<Arc<AuthConfig>>> {
    let settings = &config.auth;
    if !settings.enabled() {
        return Ok(None);
    }
    let mut users = settings.users.clone();
    if let Some(file) = &settings.htpasswd {
        let path = options.resolve(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("QUAY_AUTH_HTPASSWD: cannot read {}", path.display()),
            )
            .with_source(e)
        })?;
        for (user, hash) in parse_htpasswd(&text)? {
            users.entry(user).or_insert(hash);
        }
    }
    let grants = settings
        .permissions
        .iter()
        .map(|(user, namespaces)| {
            let grants = namespaces
                .iter()
                .map(|(namespace, actions)| NamespaceGrant {
                    namespace: namespace.clone(),
                    actions: Actions::from_names(actions.iter().map(String::as_str)),
                })
                .collect();
            (user.clone(), grants)
        })
        .collect();
    let users = Arc::new(StaticUsers::new(StaticUsersConfig {
        users,
        super_users: settings.super_users.clone(),
        grants,
        public_repositories: settings.public_repositories.clone(),
        anonymous_pull: settings.anonymous_pull,
    })?);
    let key = settings.token_key.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "QUAY_AUTH_TOKEN_KEY (or SECRET_KEY) is not set",
        )
    })?;
    let mut auth = AuthConfig::new(
        users,
        TokenKey::new(key.expose().as_bytes()),
        settings.service.clone(),
    );
    auth.realm = settings.realm.clone();
    auth.server_hostname = config.server_hostname.clone();
    auth.tls = tls || config.preferred_url_scheme.as_deref() == Some("https");
    auth.token_ttl = Duration::from_secs(settings.token_expiry_secs);
    Ok(Some(Arc::new(auth)))
}
