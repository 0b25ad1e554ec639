//! A registry served in-process on 127.0.0.1:0, on SQLite or on a fresh PostgreSQL database,
//! with a filesystem location in a temp dir.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quay_core::{LocationId, Registry, RegistryConfig, StorageEngine};
use quay_storage::testkit::postgres::{fresh_database, TestDatabase};
use quay_storage::{OpendalStorage, SqlMetadataStore};
use sha2::Digest as _;

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub storage_root: PathBuf,
    pub db_url: String,
    pub registry: Registry,
    dir: Arc<tempfile::TempDir>,
    task: tokio::task::JoinHandle<()>,
    pg: Option<Arc<TestDatabase>>,
    setup: Setup,
}

/// Optional parts of a test server.
#[derive(Clone, Default)]
pub struct Setup {
    /// Access control.
    pub auth: Option<Arc<quay_http::auth::AuthConfig>>,
    /// The limit on open upload sessions per repository.
    pub max_uploads: Option<u64>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        // The last instance on a test database drops it (on a thread of its own: no async drop).
        if let Some(db) = self.pg.take().and_then(|pg| Arc::try_unwrap(pg).ok()) {
            let _ = db.drop_database_blocking();
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Self::start_setup(backend, Setup::default()).await
    }

    pub async fn start_setup(backend: Backend, setup: Setup) -> Server {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display()),
                None,
            ),
            Backend::Postgres => {
                let db = fresh_database()
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL is needed for this test: {e}"));
                (db.url.clone(), Some(Arc::new(db)))
            }
        };
        Self::start_on(dir, db_url, pg, setup).await
    }

    /// A second instance on the same database and storage folder (another process, in effect).
    pub async fn sibling(&self) -> Server {
        Self::start_on(
            self.dir.clone(),
            self.db_url.clone(),
            self.pg.clone(),
            self.setup.clone(),
        )
        .await
    }

    async fn start_on(
        dir: Arc<tempfile::TempDir>,
        db_url: String,
        pg: Option<Arc<TestDatabase>>,
        setup: Setup,
    ) -> Server {
        let storage_root = dir.path().join("storage");
        let metadata = SqlMetadataStore::connect(&db_url).await.unwrap();
        let local: LocationId = "local".parse().unwrap();
        let mut locations: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
        locations.insert(
            local.clone(),
            Arc::new(OpendalStorage::fs(&storage_root, "local").unwrap()),
        );
        let mut config = RegistryConfig::new(vec![local]);
        config.max_uploads_per_repository = setup.max_uploads;
        let registry = Registry::new(Arc::new(metadata), locations, config).unwrap();
        let mut quay = quay_http::Quay::builder(registry.clone());
        if let Some(auth) = &setup.auth {
            quay = quay.auth(auth.clone());
        }
        let app = quay.build().router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app).await.unwrap();
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Server {
            base: format!("http://{addr}"),
            client,
            storage_root,
            db_url,
            registry,
            dir,
            task,
            pg,
            setup,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Every object file under the storage root (temporary write files excluded).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(p) else { return };
            for e in rd.flatten() {
                let path = e.path();
                if path.file_name().is_some_and(|n| n == ".tmp") {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.storage_root, &mut out);
        out
    }

    /// Pushes a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let resp = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        digest
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &str,
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a config and one layer and an OCI image manifest referring to them (by tag).
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (String, String) {
        let manifest = self.image_manifest(repo, layer, None, None).await;
        let resp = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let digest = resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        (digest, manifest)
    }

    /// Uploads the blobs of, and returns, an OCI image manifest (not pushed).
    pub async fn image_manifest(
        &self,
        repo: &str,
        layer: &[u8],
        subject: Option<(&str, usize)>,
        artifact_type: Option<&str>,
    ) -> String {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let c = self.push_blob(repo, config).await;
        let l = self.push_blob(repo, layer).await;
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l, "size": layer.len()}],
        });
        if let Some((d, size)) = subject {
            m["subject"] =
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": size});
        }
        if let Some(a) = artifact_type {
            m["artifactType"] = serde_json::json!(a);
        }
        serde_json::to_string(&m).unwrap()
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The OCI error code of an error response.
pub async fn error_code(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.unwrap();
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Sends a raw HTTP/1.1 request line (for paths a URL library would normalise).
pub async fn raw_request(base: &str, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
