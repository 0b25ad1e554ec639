//! Wiring shared by the reference binaries: turn a Quay `config.yaml` (or the embedded
//! default) into a running [`quay_core::Registry`].
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quay_core::{Error, ErrorKind, LocationId, Registry, RegistryConfig, Result, StorageEngine};
use quay_storage::config::{build_location, DriverConfig, QuayConfig};
use quay_storage::SqlMetadataStore;

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
        out.insert(id.clone(), build_location(id, driver)?);
    }
    Ok(out)
}

/// Connects the metadata store and builds the engine.
pub async fn open_registry(config: &QuayConfig, data_dir: &Path) -> Result<Registry> {
    let url = database_url(config, data_dir)?;
    let metadata = SqlMetadataStore::connect(&url).await?;
    let locations = build_locations(config)?;
    let mut engine = RegistryConfig::new(config.preference.clone());
    engine.proxy_storage = config.proxy_storage;
    Registry::new(Arc::new(metadata), locations, engine)
}

/// A one-line description of a location for start-up logs (no secrets).
pub fn describe(driver: &DriverConfig) -> String {
    format!("{driver:?}")
}
