//! The validated settings of the object-store drivers, built from checked parameters.

use super::params::{is_base64, Problems, Secret, Values};

/// The endpoint of Google Cloud Storage's S3-interoperable XML API.
pub const GCS_ENDPOINT: &str = "https://storage.googleapis.com";
/// The signing region of S3-compatible servers that have none of their own.
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// The signing region Google Cloud Storage expects with HMAC keys.
pub const GCS_REGION: &str = "auto";

/// An S3 or S3-compatible bucket (`S3Storage`, `RadosGWStorage`, `RHOCSStorage`,
/// `IBMCloudStorage`, `GoogleCloudStorage`), reached through OpenDAL's s3 service.
///
/// `Debug` shows the secret key as `<redacted>` and only the last four characters of the
/// access key id.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Quay's driver name, for logs.
    pub driver: String,
    /// The bucket.
    pub bucket: String,
    /// The folder inside the bucket (`storage_path`); empty for the bucket's root.
    pub root: String,
    /// The access key id (it names the key; kept out of logs all the same).
    pub access_key: String,
    /// The secret key.
    pub secret_key: Secret,
    /// The signing region.
    pub region: String,
    /// The service's URL; `None` for AWS's endpoint of the region.
    pub endpoint: Option<String>,
    /// Address the bucket as `bucket.host` rather than `host/bucket` (AWS only, and only for
    /// bucket names without dots, which would not match AWS's certificate).
    pub virtual_host_style: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail: String = {
            let chars: Vec<char> = self.access_key.chars().collect();
            chars[chars.len().saturating_sub(4)..].iter().collect()
        };
        f.debug_struct("S3Settings")
            .field("driver", &self.driver)
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .field("access_key", &format_args!("…{tail}"))
            .field("secret_key", &self.secret_key)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("virtual_host_style", &self.virtual_host_style)
            .finish()
    }
}

/// How an Azure storage account is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureCredential {
    /// The account's shared key (`azure_account_key`).
    AccountKey(Secret),
    /// A SAS token (`sas_token`), without its leading `?`.
    SasToken(Secret),
}

/// An Azure Blob container (`AzureStorage`), reached through OpenDAL's azblob service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    /// The container.
    pub container: String,
    /// The storage account.
    pub account_name: String,
    /// Its credential.
    pub credential: AzureCredential,
    /// The blob service's URL: `endpoint_url`, else `https://<account>.blob.core.windows.net`.
    pub endpoint: String,
    /// The folder inside the container (`storage_path`).
    pub root: String,
}

/// An OpenStack Swift container (`SwiftStorage`), reached through OpenDAL's swift service.
///
/// OpenDAL's swift service takes the account's storage URL and a token: it cannot log in to
/// Keystone (or TempAuth) with `auth_url`, `swift_user` and `swift_password`. This engine
/// therefore needs its own keys `swift_storage_url` and `swift_auth_token`; Quay's login keys
/// are accepted but not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwiftSettings {
    /// The container.
    pub container: String,
    /// The account's storage URL, e.g. `https://swift.example.com/v1/AUTH_account`.
    pub storage_url: String,
    /// A token issued for the account.
    pub token: Secret,
    /// The folder inside the container (`storage_path`).
    pub root: String,
    /// The TempURL key (`temp_url_key`): with it, reads can be presigned.
    pub temp_url_key: Option<Secret>,
}

fn problem(problems: &mut Problems, key: &str, message: impl Into<String>) {
    problems.push((key.to_owned(), message.into()));
}

/// Checks that an `endpoint_url`-like value is an http(s) URL with a host.
fn url(values: &Values, key: &str, problems: &mut Problems) -> Option<String> {
    let value = values.text(key)?;
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
            Some(value.trim_end_matches('/').to_owned())
        }
        _ => {
            problem(
                problems,
                key,
                "must be a URL starting with http:// or https://",
            );
            None
        }
    }
}

/// Quay's rule for a self-hosted endpoint: `host` may carry its scheme; otherwise `is_secure`
/// picks https (the default) or http. `port` is added unless `host` already names one.
pub(crate) fn endpoint_from_host(host: &str, port: Option<u16>, secure: bool) -> String {
    let host = host.trim_end_matches('/');
    let with_scheme = if host.starts_with("http://") || host.starts_with("https://") {
        host.to_owned()
    } else {
        format!("{}://{host}", if secure { "https" } else { "http" })
    };
    let authority = with_scheme.split_once("://").map_or("", |(_, a)| a);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match port {
        Some(port) if !has_port => format!("{with_scheme}:{port}"),
        _ => with_scheme,
    }
}

impl S3Settings {
    /// `S3Storage`: AWS S3 by default, or any S3 server given by `endpoint_url` or
    /// `host`/`port`.
    pub(crate) fn s3_storage(values: &Values, problems: &mut Problems) -> Option<Self> {
        let endpoint = match (values.has("endpoint_url"), values.has("host")) {
            (true, true) => {
                problem(
                    problems,
                    "endpoint_url",
                    "set either endpoint_url or host (with port), not both",
                );
                None
            }
            (true, false) => {
                if values.has("port") {
                    problem(problems, "port", "is only used with host, not endpoint_url");
                }
                url(values, "endpoint_url", problems)
            }
            (false, true) => Some(endpoint_from_host(
                &values.text("host").unwrap_or_default(),
                values.port("port"),
                true,
            )),
            (false, false) => {
                if values.has("port") {
                    problem(problems, "port", "is only used with host");
                }
                None
            }
        };
        let bucket = values.text("s3_bucket")?;
        Some(S3Settings {
            driver: "S3Storage".into(),
            virtual_host_style: endpoint.is_none() && !bucket.contains('.'),
            bucket,
            root: values.text("storage_path").unwrap_or_default(),
            access_key: values.text("s3_access_key")?,
            secret_key: values.secret("s3_secret_key")?,
            region: values
                .text("s3_region")
                .unwrap_or_else(|| DEFAULT_S3_REGION.into()),
            endpoint,
        })
    }

    /// `RadosGWStorage`, `RHOCSStorage`, `IBMCloudStorage`: a self-hosted S3 API at
    /// `hostname`, path-style.
    pub(crate) fn s3_compatible(driver: &str, values: &Values) -> Option<Self> {
        let endpoint = endpoint_from_host(
            &values.text("hostname")?,
            values.port("port"),
            values.bool("is_secure").unwrap_or(true),
        );
        Some(S3Settings {
            driver: driver.into(),
            bucket: values.text("bucket_name")?,
            root: values.text("storage_path").unwrap_or_default(),
            access_key: values.text("access_key")?,
            secret_key: values.secret("secret_key")?,
            region: DEFAULT_S3_REGION.into(),
            endpoint: Some(endpoint),
            virtual_host_style: false,
        })
    }

    /// `GoogleCloudStorage`: the bucket through GCS's S3-interoperable API with HMAC keys.
    /// `endpoint_url` (ours) replaces [`GCS_ENDPOINT`], e.g. to test against a local server.
    pub(crate) fn google(values: &Values, problems: &mut Problems) -> Option<Self> {
        let endpoint = match values.has("endpoint_url") {
            true => url(values, "endpoint_url", problems),
            false => Some(GCS_ENDPOINT.to_owned()),
        };
        Some(S3Settings {
            driver: "GoogleCloudStorage".into(),
            bucket: values.text("bucket_name")?,
            root: values.text("storage_path").unwrap_or_default(),
            access_key: values.text("access_key")?,
            secret_key: values.secret("secret_key")?,
            region: GCS_REGION.into(),
            endpoint,
            virtual_host_style: false,
        })
    }
}

impl AzureSettings {
    /// `AzureStorage`.
    pub(crate) fn new(values: &Values, problems: &mut Problems) -> Option<Self> {
        let key = values.secret("azure_account_key");
        let sas = values.secret("sas_token");
        let credential = match (key, sas) {
            (Some(_), Some(_)) => {
                problem(
                    problems,
                    "sas_token",
                    "set either azure_account_key or sas_token, not both",
                );
                None
            }
            (Some(key), None) if !is_base64(key.expose()) => {
                problem(
                    problems,
                    "azure_account_key",
                    "must be base64 (the key as the Azure portal shows it)",
                );
                None
            }
            (Some(key), None) => Some(AzureCredential::AccountKey(key)),
            (None, Some(sas)) => Some(AzureCredential::SasToken(Secret::new(
                sas.expose().trim_start_matches('?'),
            ))),
            (None, None) => {
                problem(
                    problems,
                    "azure_account_key",
                    "AzureStorage requires azure_account_key or sas_token",
                );
                None
            }
        };
        let endpoint = url(values, "endpoint_url", problems);
        let account_name = values.text("azure_account_name")?;
        Some(AzureSettings {
            container: values.text("azure_container")?,
            endpoint: endpoint
                .unwrap_or_else(|| format!("https://{account_name}.blob.core.windows.net")),
            account_name,
            credential: credential?,
            root: values.text("storage_path").unwrap_or_default(),
        })
    }
}

impl SwiftSettings {
    /// `SwiftStorage`, which needs this engine's `swift_storage_url` and `swift_auth_token`.
    pub(crate) fn new(values: &Values, problems: &mut Problems) -> Option<Self> {
        let storage_url = url(values, "swift_storage_url", problems);
        let token = values.secret("swift_auth_token");
        for (key, present) in [
            ("swift_storage_url", values.has("swift_storage_url")),
            ("swift_auth_token", token.is_some()),
        ] {
            if !present {
                problem(
                    problems,
                    key,
                    "SwiftStorage requires swift_storage_url and swift_auth_token: this engine \
                     cannot log in to auth_url with swift_user/swift_password (OpenDAL's swift \
                     service takes only a storage URL and a token)",
                );
            }
        }
        Some(SwiftSettings {
            container: values.text("swift_container")?,
            storage_url: storage_url?,
            token: token?,
            root: values.text("storage_path").unwrap_or_default(),
            temp_url_key: values.secret("temp_url_key"),
        })
    }
}
