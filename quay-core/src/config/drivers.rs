//! Storage drivers, with Quay's names and parameters: `[DriverName, {params}]`.
//!
//! | Driver | Service | Parameters (required in bold) |
//! |---|---|---|
//! | `LocalStorage` | fs | **`storage_path`** |
//! | `S3Storage` | s3 | **`s3_bucket`**, **`s3_access_key`**, **`s3_secret_key`**, `storage_path`, `s3_region` (`us-east-1`), `endpoint_url` or `host` + `port` |
//! | `RadosGWStorage`, `RHOCSStorage`, `IBMCloudStorage` | s3, path-style | **`hostname`**, **`access_key`**, **`secret_key`**, **`bucket_name`**, `is_secure` (`true`), `port`, `storage_path` |
//! | `GoogleCloudStorage` | s3 at `https://storage.googleapis.com` | **`access_key`**, **`secret_key`** (HMAC), **`bucket_name`**, `storage_path`, `endpoint_url` (ours) |
//! | `AzureStorage` | azblob | **`azure_container`**, **`azure_account_name`**, `azure_account_key` or `sas_token`, `endpoint_url`, `storage_path` |
//! | `SwiftStorage` | swift | **`swift_container`**, **`swift_storage_url`** and **`swift_auth_token`** (ours), `temp_url_key`, `storage_path`; Quay's `auth_url`, `auth_version`, `swift_user`, `swift_password`, `os_options` are accepted and not used |
//! | `MemoryStorage` | memory (ours, for tests) | none |
//!
//! Credentials are only read from the parameters: never from the environment, profile files
//! or cloud instance metadata.

use std::fmt;
use std::path::PathBuf;

use serde_yaml::Value;

use super::params::{opt, req, req_because, Kind, Param, Problems, Values};
use super::settings::{AzureSettings, S3Settings, SwiftSettings};

/// One location's driver and its validated parameters. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum DriverConfig {
    /// `LocalStorage`: `storage_path`.
    Local {
        /// Folder holding the objects.
        storage_path: PathBuf,
    },
    /// `MemoryStorage` (ours, for tests): nothing kept after the process ends.
    Memory,
    /// `S3Storage`, `RadosGWStorage`, `RHOCSStorage`, `IBMCloudStorage`, `GoogleCloudStorage`.
    S3(S3Settings),
    /// `AzureStorage`.
    Azure(AzureSettings),
    /// `SwiftStorage`.
    Swift(SwiftSettings),
}

impl fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverConfig::Local { storage_path } => f
                .debug_struct("LocalStorage")
                .field("storage_path", storage_path)
                .finish(),
            DriverConfig::Memory => f.write_str("MemoryStorage"),
            DriverConfig::S3(s) => s.fmt(f),
            DriverConfig::Azure(s) => s.fmt(f),
            DriverConfig::Swift(s) => s.fmt(f),
        }
    }
}

/// A driver: its name, its parameters, and Quay's parameters of it that this engine does not
/// implement (named as such in the error rather than as unknown).
struct DriverSpec {
    name: &'static str,
    params: &'static [Param],
    unsupported: &'static [&'static str],
}

const NO_ENV_CREDENTIALS: &str =
    " (this engine reads no credentials from the environment or instance metadata)";

/// The parameters of `RadosGWStorage`, `RHOCSStorage` and `IBMCloudStorage`.
const S3_COMPATIBLE: &[Param] = &[
    req("hostname", Kind::Text),
    opt("is_secure", Kind::Bool),
    opt("port", Kind::Port),
    req_because("access_key", Kind::Text, NO_ENV_CREDENTIALS),
    req_because("secret_key", Kind::Secret, NO_ENV_CREDENTIALS),
    req("bucket_name", Kind::Text),
    opt("storage_path", Kind::Text),
];

/// Every driver this build knows.
const DRIVERS: &[DriverSpec] = &[
    DriverSpec {
        name: "LocalStorage",
        params: &[req("storage_path", Kind::Text)],
        unsupported: &[],
    },
    DriverSpec {
        name: "S3Storage",
        params: &[
            req("s3_bucket", Kind::Text),
            opt("storage_path", Kind::Text),
            req_because("s3_access_key", Kind::Text, NO_ENV_CREDENTIALS),
            req_because("s3_secret_key", Kind::Secret, NO_ENV_CREDENTIALS),
            opt("s3_region", Kind::Text),
            opt("host", Kind::Text),
            opt("port", Kind::Port),
            opt("endpoint_url", Kind::Text),
        ],
        unsupported: &[
            "maximum_chunk_size_mb",
            "signature_version",
            "server_side_encryption",
        ],
    },
    DriverSpec {
        name: "RadosGWStorage",
        params: S3_COMPATIBLE,
        unsupported: &["maximum_chunk_size_mb", "server_side_encryption"],
    },
    DriverSpec {
        name: "RHOCSStorage",
        params: S3_COMPATIBLE,
        unsupported: &["maximum_chunk_size_mb", "server_side_encryption"],
    },
    DriverSpec {
        name: "IBMCloudStorage",
        params: S3_COMPATIBLE,
        unsupported: &["maximum_chunk_size_mb"],
    },
    DriverSpec {
        name: "GoogleCloudStorage",
        params: &[
            req("access_key", Kind::Text),
            req("secret_key", Kind::Secret),
            req("bucket_name", Kind::Text),
            opt("storage_path", Kind::Text),
            // Ours: where the S3-interoperable API is (tests point it at a local server).
            opt("endpoint_url", Kind::Text),
        ],
        unsupported: &["boto_timeout"],
    },
    DriverSpec {
        name: "AzureStorage",
        params: &[
            req("azure_container", Kind::Text),
            req("azure_account_name", Kind::Text),
            opt("azure_account_key", Kind::Secret),
            opt("sas_token", Kind::Secret),
            opt("endpoint_url", Kind::Text),
            opt("storage_path", Kind::Text),
        ],
        unsupported: &["is_emulated", "socket_timeout"],
    },
    DriverSpec {
        name: "SwiftStorage",
        params: &[
            req("swift_container", Kind::Text),
            opt("storage_path", Kind::Text),
            // Quay's login keys: accepted, not used (see SwiftSettings).
            opt("auth_url", Kind::Text),
            opt("auth_version", Kind::Text),
            opt("swift_user", Kind::Text),
            opt("swift_password", Kind::Secret),
            opt("os_options", Kind::Mapping),
            opt("temp_url_key", Kind::Secret),
            // Ours: the account's storage URL and a token issued for it.
            opt("swift_storage_url", Kind::Text),
            opt("swift_auth_token", Kind::Secret),
        ],
        unsupported: &["ca_cert_path"],
    },
    DriverSpec {
        name: "MemoryStorage",
        params: &[],
        unsupported: &[],
    },
];

/// The names of the drivers this build supports.
pub fn driver_names() -> impl Iterator<Item = &'static str> {
    DRIVERS.iter().map(|d| d.name)
}

impl DriverConfig {
    /// Parses and validates `[DriverName, {params}]`. Every problem is returned, each with the
    /// parameter it concerns (empty for the location itself).
    pub(crate) fn from_value(value: &Value) -> std::result::Result<Self, Problems> {
        let Some(seq) = value.as_sequence() else {
            return Err(vec![(
                String::new(),
                "must be a list [DriverName, {parameters}]".into(),
            )]);
        };
        let Some(driver) = seq.first().and_then(Value::as_str) else {
            return Err(vec![(
                String::new(),
                "must start with a driver name".into(),
            )]);
        };
        let Some(spec) = DRIVERS.iter().find(|d| d.name == driver) else {
            return Err(vec![(
                String::new(),
                format!(
                    "unknown storage driver {driver:?}; this build supports {}",
                    driver_names().collect::<Vec<_>>().join(", ")
                ),
            )]);
        };
        let mut problems: Problems = Vec::new();
        if seq.len() > 2 {
            problems.push((
                String::new(),
                "must be a list of two items [DriverName, {parameters}]".into(),
            ));
        }
        let empty = serde_yaml::Mapping::new();
        let mapping = match seq.get(1) {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(m)) => m,
            Some(_) => {
                problems.push((String::new(), "parameters must be a mapping".into()));
                &empty
            }
        };
        let values = Values::check(
            spec.name,
            spec.params,
            spec.unsupported,
            mapping,
            &mut problems,
        );
        let config = match spec.name {
            "LocalStorage" => values.text("storage_path").map(|p| DriverConfig::Local {
                storage_path: PathBuf::from(p),
            }),
            "MemoryStorage" => Some(DriverConfig::Memory),
            "S3Storage" => S3Settings::s3_storage(&values, &mut problems).map(DriverConfig::S3),
            "GoogleCloudStorage" => {
                S3Settings::google(&values, &mut problems).map(DriverConfig::S3)
            }
            "AzureStorage" => AzureSettings::new(&values, &mut problems).map(DriverConfig::Azure),
            "SwiftStorage" => SwiftSettings::new(&values, &mut problems).map(DriverConfig::Swift),
            // RadosGWStorage, RHOCSStorage, IBMCloudStorage.
            name => S3Settings::s3_compatible(name, &values).map(DriverConfig::S3),
        };
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ if problems.is_empty() => Err(vec![(
                String::new(),
                format!("{driver} parameters are incomplete"),
            )]),
            _ => Err(problems),
        }
    }

    /// Quay's name of this driver.
    pub fn driver_name(&self) -> &str {
        match self {
            DriverConfig::Local { .. } => "LocalStorage",
            DriverConfig::Memory => "MemoryStorage",
            DriverConfig::S3(s) => &s.driver,
            DriverConfig::Azure(_) => "AzureStorage",
            DriverConfig::Swift(_) => "SwiftStorage",
        }
    }
}
