//! Storage drivers, with Quay's names and parameters: `[DriverName, {params}]`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use quay_core::{Error, ErrorKind, LocationId, Result, StorageEngine};
use serde_yaml::Value;

use crate::opendal::OpendalStorage;

/// One location's driver and its parameters.
#[derive(Clone, PartialEq, Eq)]
pub enum DriverConfig {
    /// `LocalStorage`: `storage_path`.
    Local {
        /// Folder holding the objects.
        storage_path: PathBuf,
    },
    /// `MemoryStorage` (ours, for tests): nothing kept after the process ends.
    Memory,
    /// A driver this build recognises but cannot run yet, kept so the error names it.
    Other {
        /// Quay's driver name.
        driver: String,
        /// Its parameters (values may be secrets: never printed).
        params: BTreeMap<String, String>,
    },
}

impl fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverConfig::Local { storage_path } => f
                .debug_struct("LocalStorage")
                .field("storage_path", storage_path)
                .finish(),
            DriverConfig::Memory => f.write_str("MemoryStorage"),
            DriverConfig::Other { driver, params } => f
                .debug_struct(driver)
                .field("keys", &params.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Problems as (parameter key, message).
type Problems = Vec<(String, String)>;

/// Known drivers with their required and optional parameters.
const DRIVERS: &[(&str, &[&str], &[&str])] = &[
    ("LocalStorage", &["storage_path"], &[]),
    ("MemoryStorage", &[], &[]),
];

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

impl DriverConfig {
    /// Parses `[DriverName, {params}]`.
    pub(crate) fn from_value(value: &Value) -> std::result::Result<Self, Problems> {
        let mut problems: Problems = Vec::new();
        let Some(seq) = value.as_sequence() else {
            return Err(vec![(
                String::new(),
                "must be a list [DriverName, {parameters}]".into(),
            )]);
        };
        let driver = match seq.first().and_then(Value::as_str) {
            Some(d) => d.to_owned(),
            None => {
                return Err(vec![(
                    String::new(),
                    "must start with a driver name".into(),
                )]);
            }
        };
        let mut params = BTreeMap::new();
        match seq.get(1) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let Some(k) = k.as_str() else {
                        problems.push((String::new(), "parameter names must be strings".into()));
                        continue;
                    };
                    match scalar(v) {
                        Some(s) => {
                            params.insert(k.to_owned(), s);
                        }
                        None => problems.push((k.to_owned(), "must be a single value".into())),
                    }
                }
            }
            Some(_) => problems.push((String::new(), "parameters must be a mapping".into())),
        }
        let Some((_, required, optional)) = DRIVERS.iter().find(|(n, _, _)| *n == driver) else {
            let names: Vec<&str> = DRIVERS.iter().map(|(n, _, _)| *n).collect();
            return Err(vec![(
                String::new(),
                format!(
                    "unknown storage driver {driver:?}; this build supports {}",
                    names.join(", ")
                ),
            )]);
        };
        for r in *required {
            if params.get(*r).is_none_or(|v| v.is_empty()) {
                problems.push(((*r).to_owned(), format!("{driver} requires {r}")));
            }
        }
        for k in params.keys() {
            if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
                problems.push((k.clone(), format!("unknown parameter for {driver}")));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        Ok(match driver.as_str() {
            "LocalStorage" => DriverConfig::Local {
                storage_path: PathBuf::from(get("storage_path")),
            },
            "MemoryStorage" => DriverConfig::Memory,
            _ => DriverConfig::Other { driver, params },
        })
    }
}

/// Builds the storage engine of one location.
pub fn build_location(id: &LocationId, config: &DriverConfig) -> Result<Arc<dyn StorageEngine>> {
    match config {
        DriverConfig::Local { storage_path } => {
            Ok(Arc::new(OpendalStorage::fs(storage_path, id.as_str())?))
        }
        DriverConfig::Memory => Ok(Arc::new(OpendalStorage::memory(id.as_str())?)),
        DriverConfig::Other { driver, .. } => Err(Error::new(
            ErrorKind::Config,
            format!("DISTRIBUTED_STORAGE_CONFIG.{id}: driver {driver} cannot be built"),
        )),
    }
}
