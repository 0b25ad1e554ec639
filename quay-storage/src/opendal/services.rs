//! [`OpendalStorage`] on the object-store services: s3 (and S3-compatible), azblob, swift.
//!
//! Each location gets its own HTTP client (reqwest on the system's OpenSSL). With OpenDAL's
//! default features off nothing installs a process-wide one, and a shared one would be a trap:
//! a pooled connection belongs to the Tokio runtime that opened it, and is dead for any other
//! (each `#[tokio::test]` has its own runtime).

use std::time::Duration;

use opendal::{HttpTransporter, OperationContext, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;
use quay_core::{Error, ErrorKind, Result};

use super::{error, multipart, OpendalStorage};
use quay_core::config::{AzureCredential, AzureSettings, S3Settings, SwiftSettings};

/// Idle connections are closed before servers close them: Node.js servers (Azurite) do after
/// 5 s, and a request sent on a connection the server is closing fails.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// An unreachable endpoint fails in this time rather than in the system's (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Gives `op` an HTTP client of its own.
fn with_http(op: Operator, name: &str) -> Result<Operator> {
    let client = reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| {
            Error::new(ErrorKind::Config, "cannot create an HTTP client")
                .with_context("location", name)
                .with_source(e)
        })?;
    let transport = HttpTransporter::new(ReqwestTransport::new(client));
    Ok(op.with_context(OperationContext::new().with_http_transport(transport)))
}

/// OpenDAL wants the root as an absolute path inside the bucket.
fn root(storage_path: &str) -> String {
    format!("/{}", storage_path.trim_matches('/'))
}

impl OpendalStorage {
    /// A bucket of S3 or of an S3-compatible service (RadosGW, Ceph/ODF, IBM COS, GCS with HMAC
    /// keys, MinIO, `s3s-fs`...). Reads can be presigned; `copy` is server-side within the
    /// bucket. No credential, region or endpoint is read from the environment or from instance
    /// metadata.
    pub fn s3(settings: &S3Settings, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let mut builder = opendal::services::S3::default()
            .bucket(&settings.bucket)
            .root(&root(&settings.root))
            .region(&settings.region)
            .access_key_id(&settings.access_key)
            .secret_access_key(settings.secret_key.expose())
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if settings.virtual_host_style {
            builder = builder.enable_virtual_host_style();
        }
        let op = Operator::new(builder)
            .map_err(|e| error::map(e, &name, "configure", &settings.bucket))?;
        let multipart = multipart::S3Multipart::new(settings, &name);
        let mut storage = Self::new(with_http(op, &name)?, name);
        storage.multipart = multipart;
        Ok(storage)
    }

    /// A container of Azure Blob Storage (or Azurite). Presigned reads are not offered: the
    /// URL OpenDAL signs carries write and delete rights (`sp=racwd`), so blobs are streamed.
    pub fn azure(settings: &AzureSettings, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let mut builder = opendal::services::Azblob::default()
            .container(&settings.container)
            .root(&root(&settings.root))
            .endpoint(&settings.endpoint)
            .account_name(&settings.account_name);
        builder = match &settings.credential {
            AzureCredential::AccountKey(key) => builder.account_key(key.expose()),
            AzureCredential::SasToken(token) => builder.sas_token(token.expose()),
        };
        let op = Operator::new(builder)
            .map_err(|e| error::map(e, &name, "configure", &settings.container))?;
        Ok(Self::new(with_http(op, &name)?, name).with_presign(false))
    }

    /// A container of OpenStack Swift, reached with a pre-issued token at the account's storage
    /// URL (OpenDAL's swift service does not log in). Reads can be presigned when a TempURL key
    /// is given.
    pub fn swift(settings: &SwiftSettings, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let mut builder = opendal::services::Swift::default()
            .endpoint(&settings.storage_url)
            .container(&settings.container)
            .root(&root(&settings.root))
            .token(settings.token.expose());
        if let Some(key) = &settings.temp_url_key {
            builder = builder.temp_url_key(key.expose());
        }
        let op = Operator::new(builder)
            .map_err(|e| error::map(e, &name, "configure", &settings.container))?;
        Ok(Self::new(with_http(op, &name)?, name))
    }
}
