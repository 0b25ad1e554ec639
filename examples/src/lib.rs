//! Wiring shared by the reference binaries: turn a Quay `config.yaml` (or the embedded
//! default) into a running [`quay_core::Registry`].
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quay_core::{
    Error, ErrorKind, JobQueue, LocationId, Registry, RegistryConfig, Result, RetryPolicy,
    StorageEngine,
};
use quay_replication::redis::{OutboxRelay, OutboxedRedisQueue, RedisJobQueue, RedisQueueConfig};
use quay_storage::config::{build_location, DriverConfig, QuayConfig, QueueBackend};
use quay_storage::{SqlJobQueue, SqlMetadataStore};

pub mod serve;

/// The environment variable that overrides `DISTRIBUTED_STORAGE_PREFERENCE` per instance.
pub const PREFERENCE_ENV: &str = "QUAY_DISTRIBUTED_STORAGE_PREFERENCE";

/// Reads and validates a config file, applying the preference override from the environment.
pub fn load_config(path: &Path) -> Result<QuayConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot read config file {}", path.display()),
        )
        .with_source(e)
    })?;
    let preference = std::env::var(PREFERENCE_ENV).ok();
    QuayConfig::from_yaml(&text, preference.as_deref())
}

/// The embedded default: one local location `local` under `<data_dir>/storage`, SQLite in
/// `<data_dir>/metadata.db`.
pub fn default_config(data_dir: &Path) -> Result<QuayConfig> {
    let storage = data_dir.join("storage");
    let yaml = format!(
        "DISTRIBUTED_STORAGE_CONFIG:\n  local:\n    - LocalStorage\n    - storage_path: {:?}\n\
         DISTRIBUTED_STORAGE_PREFERENCE: [local]\nDISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [local]\n",
        storage.to_string_lossy()
    );
    QuayConfig::from_yaml(&yaml, None)
}

/// The database URL: `DB_URI`, else SQLite in `data_dir`.
pub fn database_url(config: &QuayConfig, data_dir: &Path) -> Result<String> {
    if let Some(uri) = &config.db_uri {
        return Ok(uri.clone());
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot create data directory {}", data_dir.display()),
        )
        .with_source(e)
    })?;
    let path: PathBuf = data_dir.join("metadata.db");
    Ok(format!("sqlite://{}?mode=rwc", path.to_string_lossy()))
}

/// Builds every configured location.
pub fn build_locations(
    config: &QuayConfig,
) -> Result<BTreeMap<LocationId, Arc<dyn StorageEngine>>> {
    let mut out = BTreeMap::new();
    for (id, driver) in &config.locations {
        let engine = build_location(id, driver)?;
        let timeout = std::time::Duration::from_secs(config.storage_timeout_secs);
        let engine: Arc<dyn StorageEngine> = Arc::new(quay_storage::layers::TimeoutStorage::new(
            engine,
            id.as_str(),
            timeout,
            timeout,
        ));
        out.insert(
            id.clone(),
            Arc::new(quay_storage::layers::MeteredStorage::new(engine, id))
                as Arc<dyn StorageEngine>,
        );
    }
    Ok(out)
}

/// The engine and what it runs on.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The engine.
    pub registry: Registry,
    /// The metadata store (for the SQL job queue, which shares its database).
    pub store: SqlMetadataStore,
}

/// Connects the metadata store and builds the engine.
pub async fn open_registry(config: &QuayConfig, data_dir: &Path) -> Result<Opened> {
    let url = database_url(config, data_dir)?;
    let store = SqlMetadataStore::connect_with_timeout(
        &url,
        std::time::Duration::from_secs(config.database_timeout_secs),
    )
    .await?;
    let locations = build_locations(config)?;
    let mut engine = RegistryConfig::new(config.preference.clone());
    engine.proxy_storage = config.proxy_storage;
    engine.replication = config.replication;
    engine.default_locations = config.default_locations.clone();
    engine.presign_expiry = std::time::Duration::from_secs(config.presign_expiry_secs);
    engine.max_uploads_per_repository = Some(config.max_uploads_per_repository);
    let registry = Registry::new(Arc::new(store.clone()), locations, engine)?;
    Ok(Opened { registry, store })
}

/// `path` as given when absolute, else relative to `base` (the config file's folder).
pub fn relative_to(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}

/// Access control from the configuration: `None` when no user is configured. `config_dir`
/// resolves a relative `QUAY_AUTH_HTPASSWD`; `tls` says whether this server serves TLS. The token
/// realm's scheme is `https` when it does, or when `PREFERRED_URL_SCHEME` is `https` (TLS ended
/// by a load balancer in front).
pub fn auth_config(
    config: &QuayConfig,
    config_dir: Option<&Path>,
    tls: bool,
) -> Result<Option<Arc<quay_http::auth::AuthConfig>>> {
    use quay_core::auth::TokenKey;
    use quay_http::users::{parse_htpasswd, NamespaceGrant, StaticUsers, StaticUsersConfig};
    let settings = &config.auth;
    if !settings.enabled() {
        return Ok(None);
    }
    let mut users = settings.users.clone();
    if let Some(file) = &settings.htpasswd {
        let path = relative_to(config_dir, file);
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
                    actions: quay_core::Actions::from_names(actions.iter().map(String::as_str)),
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
    Ok(Some(Arc::new(quay_http::auth::AuthConfig {
        authenticator: users.clone(),
        authorizer: users,
        key: TokenKey::new(key.expose().as_bytes()),
        service: settings.service.clone(),
        issuer: "quay-rs".to_owned(),
        realm: settings.realm.clone(),
        server_hostname: config.server_hostname.clone(),
        tls: tls || config.preferred_url_scheme.as_deref() == Some("https"),
        token_ttl: std::time::Duration::from_secs(settings.token_expiry_secs),
        logins: Default::default(),
    })))
}

/// The retry policy from the configuration.
pub fn retry_policy(config: &QuayConfig) -> RetryPolicy {
    RetryPolicy {
        max_attempts: config.replication_settings.max_attempts,
        ..RetryPolicy::default()
    }
}

/// The replication job queue the configuration asks for.
pub async fn open_queue(
    config: &QuayConfig,
    store: &SqlMetadataStore,
) -> Result<Arc<dyn JobQueue>> {
    Ok(open_queues(config, store).await?.0)
}

/// The queue, and for the Redis queue the relay that feeds it from the SQL outbox (the table
/// that blob commits write their jobs to).
pub async fn open_queues(
    config: &QuayConfig,
    store: &SqlMetadataStore,
) -> Result<(Arc<dyn JobQueue>, Option<OutboxRelay>)> {
    let sql = SqlJobQueue::new(store, retry_policy(config));
    match config.replication_settings.queue {
        QueueBackend::Sql => Ok((Arc::new(sql), None)),
        QueueBackend::Redis => {
            let server = config.replication_settings.redis.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "QUAY_REPLICATION_QUEUE is redis but no Redis is configured",
                )
            })?;
            let mut redis_config = RedisQueueConfig::new(server);
            if let Some(prefix) = &config.replication_settings.redis_prefix {
                redis_config = redis_config.with_prefix(prefix.clone());
            }
            let redis = RedisJobQueue::connect(&redis_config, retry_policy(config)).await?;
            let relay = OutboxRelay::new(sql.clone(), redis.clone());
            Ok((Arc::new(OutboxedRedisQueue::new(redis, sql)), Some(relay)))
        }
    }
}

/// A one-line description of a location for start-up logs (no secrets).
pub fn describe(driver: &DriverConfig) -> String {
    format!("{driver:?}")
}

/// Resolves when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Starts the replication worker and the reconciler; they stop when `stop` turns true.
pub fn spawn_replication(
    config: &QuayConfig,
    registry: &Registry,
    queue: Arc<dyn JobQueue>,
    relay: Option<OutboxRelay>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(relay) = relay {
        tasks.push(tokio::spawn(
            relay.run(std::time::Duration::from_millis(250), stopped(stop.clone())),
        ));
    }
    let worker_config = quay_replication::worker::WorkerConfig {
        concurrency: config.replication_settings.workers,
        lease: std::time::Duration::from_secs(config.replication_settings.lease_secs),
        ..Default::default()
    };
    let worker = quay_replication::worker::ReplicationWorker::new(
        registry.clone(),
        queue.clone(),
        worker_config,
    );
    let reconcile = quay_replication::reconciler::run(
        registry.metadata().clone(),
        queue,
        config.default_locations.clone(),
        std::time::Duration::from_secs(config.replication_settings.reconcile_interval_secs),
        stopped(stop.clone()),
    );
    tasks.push(tokio::spawn(worker.run(stopped(stop))));
    tasks.push(tokio::spawn(reconcile));
    tasks
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
