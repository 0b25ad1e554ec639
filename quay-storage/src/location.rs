//! Storage locations from their configuration: one [`OpendalStorage`] per
//! `DISTRIBUTED_STORAGE_CONFIG` entry.

use std::sync::Arc;

use quay_core::config::DriverConfig;
use quay_core::{LocationId, Result, StorageEngine};

use crate::opendal::OpendalStorage;

/// Builds the storage engine of one location, without layers (the registry builder adds
/// them). Nothing is contacted: a wrong endpoint or credential shows in the location's health
/// probe, not here.
pub fn build_location(id: &LocationId, config: &DriverConfig) -> Result<Arc<dyn StorageEngine>> {
    let name = id.as_str();
    let storage = match config {
        DriverConfig::Local { storage_path } => OpendalStorage::fs(storage_path, name),
        DriverConfig::Memory => OpendalStorage::memory(name),
        DriverConfig::S3(s) => OpendalStorage::s3(s, name),
        DriverConfig::Azure(s) => OpendalStorage::azure(s, name),
        DriverConfig::Swift(s) => OpendalStorage::swift(s, name),
    };
    let storage = storage.map_err(|e| {
        e.with_context(
            "key",
            format!("DISTRIBUTED_STORAGE_CONFIG.{id} ({})", config.driver_name()),
        )
    })?;
    Ok(Arc::new(storage))
}
