//! Per-image replication status over HTTP (`GET /v2/<name>/replication/<reference>`) and
//! push-time durability (`QUAY_REPLICATION_DURABILITY`), on two regions in-process: "us" and
//! "eu" instances on one database (SQLite or PostgreSQL), each preferring its own filesystem
//! location, with a fault switch per location.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use quay_core::auth::TokenKey;
use quay_core::registry::Durability;
use quay_core::{BlobIndex, Digest, LocationId, Registry, StorageEngine};
use quay_http::auth::AuthConfig;
use quay_http::users::{StaticUsers, StaticUsersConfig};
use quay_storage::layers::{Fault, FaultLayer, FaultSwitch};
use quay_storage::testkit::postgres::{fresh_database, TestDatabase};
use quay_storage::{OpendalStorage, SqlMetadataStore};
use sha2::Digest as _;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

struct Instance {
    base: String,
    registry: Registry,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Regions {
    us: Instance,
    eu: Instance,
    switches: BTreeMap<&'static str, FaultSwitch>,
    client: reqwest::Client,
    store: SqlMetadataStore,
    dir: tempfile::TempDir,
    _pg: DropsDatabase,
}

/// The test's PostgreSQL database, dropped with the test's regions (on a thread of its own:
/// there is no async drop; `WITH (FORCE)` ends the connections still open on it).
struct DropsDatabase(Option<TestDatabase>);

impl Drop for DropsDatabase {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = db.drop_database_blocking();
        }
    }
}

#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

impl Regions {
    async fn new(db: Db, durability: Durability, auth: Option<Arc<AuthConfig>>) -> Regions {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
                None,
            ),
            Db::Postgres => {
                let db = fresh_database()
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL is needed for this test: {e}"));
                (db.url.clone(), Some(db))
            }
        };
        let store = SqlMetadataStore::connect(&url).await.unwrap();
        let switches: BTreeMap<&'static str, FaultSwitch> = [
            ("us", FaultSwitch::default()),
            ("eu", FaultSwitch::default()),
        ]
        .into();
        let instance = |pref: [&'static str; 2]| {
            let mut faults = FaultLayer::new();
            for (name, switch) in &switches {
                faults = faults.location(id(name), switch.clone());
            }
            let mut builder = Registry::builder(Arc::new(store.clone()))
                .layer(faults)
                .preference(pref.iter().map(|p| id(p)))
                .default_locations([id("us"), id("eu")])
                .replicate_to([id("us"), id("eu")])
                .durability(durability);
            for name in ["us", "eu"] {
                let storage: Arc<dyn StorageEngine> =
                    Arc::new(OpendalStorage::fs(&dir.path().join(name), name).unwrap());
                builder = builder.location(id(name), storage);
            }
            builder.finish().unwrap()
        };
        let us = serve(instance(["us", "eu"]), auth.clone()).await;
        let eu = serve(instance(["eu", "us"]), auth).await;
        Regions {
            us,
            eu,
            switches,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            store,
            dir,
            _pg: DropsDatabase(pg),
        }
    }

    fn root(&self, location: &str) -> PathBuf {
        self.dir.path().join(location)
    }

    async fn push_blob(&self, at: &Instance, repo: &str, data: &[u8]) -> reqwest::Response {
        let digest = sha256(data);
        self.client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={digest}",
                at.base
            ))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// A chunked push: POST, PATCH, then the final PUT (the PUT is what durability delays).
    async fn push_blob_chunked(&self, at: &Instance, repo: &str, data: &[u8]) -> reqwest::Response {
        let resp = self
            .client
            .post(format!("{}/v2/{repo}/blobs/uploads/", at.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let url = |l: &str| {
            if l.starts_with("http") {
                l.to_owned()
            } else {
                format!("{}{l}", at.base)
            }
        };
        let resp = self
            .client
            .patch(url(&location))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        self.client
            .put(format!("{}{sep}digest={}", url(&location), sha256(data)))
            .send()
            .await
            .unwrap()
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.us.base))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// Pushes config + layer to us and an image manifest under `reference`.
    async fn push_image(
        &self,
        repo: &str,
        reference: Option<&str>,
        layer: &[u8],
    ) -> (String, usize) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        for blob in [&config[..], layer] {
            let resp = self.push_blob(&self.us, repo, blob).await;
            assert_eq!(resp.status(), 201);
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256(layer), "size": layer.len()}],
        }))
        .unwrap();
        let reference = reference.map_or_else(|| sha256(&manifest), str::to_owned);
        let digest = self
            .put_manifest(repo, &reference, OCI_MANIFEST, &manifest)
            .await;
        (digest, manifest.len())
    }

    async fn status(&self, at: &Instance, repo: &str, reference: &str) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .get(format!("{}/v2/{repo}/replication/{reference}", at.base))
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap())
    }

    /// Copies every blob the us instance knows into eu (what the worker does).
    async fn replicate_everything(&self) {
        let mut after: Option<Digest> = None;
        loop {
            let page = quay_core::PlacementIndex::missing_placements(
                &self.store,
                &[id("eu")],
                after.as_ref(),
                100,
            )
            .await
            .unwrap();
            if page.is_empty() {
                break;
            }
            for (blob, _) in &page {
                self.us
                    .registry
                    .replicate_blob(&blob.digest, &id("eu"), false)
                    .await
                    .unwrap();
            }
            after = page.last().map(|(b, _)| b.digest.clone());
        }
    }
}

async fn serve(registry: Registry, auth: Option<Arc<AuthConfig>>) -> Instance {
    let mut quay = quay_http::Quay::builder(registry.clone());
    if let Some(auth) = auth {
        quay = quay.auth(auth);
    }
    let app = quay.build().router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    Instance {
        base: format!("http://{addr}"),
        registry,
        task,
    }
}

fn missing(status: &serde_json::Value, location: &str) -> Vec<String> {
    status["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["location"] == location)
        .unwrap_or_else(|| panic!("no {location} in {status}"))["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Object files under a location's `sha256/` folder.
fn blob_files(root: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("sha256"), &mut out);
    out
}

async fn image_index_and_missing_layer(db: Db) {
    let r = Regions::new(db, Durability::Async, None).await;
    let (image, _) = r.push_image("demo/app", Some("v1"), b"app layer").await;
    let (code, status) = r.status(&r.eu, "demo/app", "v1").await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["complete"], false);
    assert_eq!(status["digest"], image.as_str());
    assert_eq!(status["blobs"], 2);
    assert!(missing(&status, "us").is_empty());
    assert_eq!(missing(&status, "eu").len(), 2);

    // An index of two images (pushed by digest), by tag.
    let (amd, amd_size) = r.push_image("demo/multi", None, b"amd64 layer").await;
    let (arm, arm_size) = r.push_image("demo/multi", None, b"arm64 layer").await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_size},
            {"mediaType": OCI_MANIFEST, "digest": arm, "size": arm_size},
        ],
    }))
    .unwrap();
    let index_digest = r.put_manifest("demo/multi", "v1", OCI_INDEX, &index).await;
    let (_, status) = r.status(&r.us, "demo/multi", &index_digest).await;
    assert_eq!(status["manifests"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(
        status["blobs"], 3,
        "one shared config, two layers: {status}"
    );
    assert_eq!(missing(&status, "eu").len(), 3);

    r.replicate_everything().await;
    for (repo, reference) in [("demo/app", "v1"), ("demo/multi", "v1")] {
        let (code, status) = r.status(&r.eu, repo, reference).await;
        assert_eq!(code, 200);
        assert_eq!(status["complete"], true, "{status}");
        assert!(missing(&status, "eu").is_empty());
    }
    // The library answers the same.
    let lib =
        r.us.registry
            .image_status(&"demo/multi".parse().unwrap(), &"v1".parse().unwrap())
            .await
            .unwrap();
    assert!(lib.complete);
    assert_eq!(lib.manifests.len(), 3);

    // A new image sharing the config: only its layer is missing in eu.
    r.push_image("demo/app", Some("v2"), b"new layer").await;
    let (_, status) = r.status(&r.us, "demo/app", "v2").await;
    assert_eq!(status["complete"], false);
    assert_eq!(missing(&status, "eu"), [sha256(b"new layer")], "{status}");
    assert!(missing(&status, "us").is_empty());

    // Unknown images answer as a manifest pull does.
    for (repo, reference) in [
        ("demo/app", "nope"),
        ("demo/none", "v1"),
        ("demo/app", "sha256:abc"),
    ] {
        let resp = r
            .client
            .get(format!("{}/v2/{repo}/replication/{reference}", r.us.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{repo}:{reference}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_status_sqlite() {
    image_index_and_missing_layer(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_status_postgres() {
    image_index_and_missing_layer(Db::Postgres).await;
}

fn auth() -> Arc<AuthConfig> {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut users = StaticUsersConfig::default();
    for user in ["usera", "userb"] {
        users.users.insert(user.into(), hash.clone());
    }
    let users = Arc::new(StaticUsers::new(users).unwrap());
    Arc::new(AuthConfig::new(
        users,
        TokenKey::new(b"replication-test-signing-key"),
        "registry.test",
    ))
}

fn basic(user: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
    format!("Basic {encoded}")
}

/// The status endpoint is behind a pull's access check: a caller who may not pull gets what a
/// manifest pull would get, status, error code and challenge alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_status_needs_pull_access() {
    let r = Regions::new(Db::Sqlite, Durability::Async, Some(auth())).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"private layer";
    for blob in [&config[..], layer] {
        let resp = r
            .client
            .post(format!(
                "{}/v2/usera/priv/blobs/uploads/?digest={}",
                r.us.base,
                sha256(blob)
            ))
            .header("authorization", basic("usera"))
            .body(blob.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer), "size": layer.len()}],
    }))
    .unwrap();
    let resp = r
        .client
        .put(format!("{}/v2/usera/priv/manifests/v1", r.us.base))
        .header("authorization", basic("usera"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let get = |path: &str, user: Option<&str>| {
        let mut req = r.client.get(format!("{}{path}", r.us.base));
        if let Some(user) = user {
            req = req.header("authorization", basic(user));
        }
        req.send()
    };
    for user in [None, Some("userb")] {
        let pull = get("/v2/usera/priv/manifests/v1", user).await.unwrap();
        let status = get("/v2/usera/priv/replication/v1", user).await.unwrap();
        assert!(pull.status() == 401 || pull.status() == 403, "{user:?}");
        assert_eq!(status.status(), pull.status(), "{user:?}");
        let challenge = |r: &reqwest::Response| {
            r.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (pull_challenge, status_challenge) = (challenge(&pull), challenge(&status));
        assert_eq!(
            status_challenge.map(|c| c.contains("repository:usera/priv:pull")),
            pull_challenge.map(|c| c.contains("repository:usera/priv:pull")),
            "{user:?}"
        );
        let code = |v: serde_json::Value| v["errors"][0]["code"].as_str().unwrap().to_owned();
        assert_eq!(
            code(status.json().await.unwrap()),
            code(pull.json().await.unwrap()),
            "{user:?}"
        );
    }
    // The owner gets the answer.
    let resp = get("/v2/usera/priv/replication/v1", Some("usera"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["blobs"], 2, "{body}");
}

async fn durability_all_survives_the_first_site(db: Db) {
    let r = Regions::new(db, Durability::All, None).await;
    let data = vec![7u8; 300_000];
    let resp = r.push_blob_chunked(&r.us, "demo/app", &data).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    // Right after the PUT returns, us's storage dies.
    r.switches["us"].set(Fault::Error);
    let digest = sha256(&data);
    let blob = r
        .store
        .get_blob(&digest.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        blob.locations.len(),
        2,
        "both placements recorded: {blob:?}"
    );
    let resp = r
        .client
        .get(format!("{}/v2/demo/app/blobs/{digest}", r.eu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-storage-location"], "eu");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);
    // A monolithic push is held to the same rule.
    r.switches["us"].set(Fault::None);
    let other = b"monolithic".to_vec();
    let resp = r.push_blob(&r.us, "demo/app", &other).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        blob_files(&r.root("eu")).len(),
        2,
        "both blobs in eu before any worker ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_all_sqlite() {
    durability_all_survives_the_first_site(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_all_postgres() {
    durability_all_survives_the_first_site(Db::Postgres).await;
}

async fn durability_all_refuses_when_a_site_is_down(db: Db) {
    let r = Regions::new(db, Durability::All, None).await;
    r.switches["eu"].set(Fault::Error);
    let data = vec![9u8; 100_000];
    let digest = sha256(&data);
    for chunked in [true, false] {
        let resp = if chunked {
            r.push_blob_chunked(&r.us, "demo/app", &data).await
        } else {
            r.push_blob(&r.us, "demo/app", &data).await
        };
        assert_eq!(resp.status(), 503, "chunked: {chunked}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("durability") && message.contains("eu"),
            "{message}"
        );
        // Nothing visible: no row, no pull, no object, no session.
        assert!(r
            .store
            .get_blob(&digest.parse().unwrap())
            .await
            .unwrap()
            .is_none());
        for at in [&r.us, &r.eu] {
            let head = r
                .client
                .head(format!("{}/v2/demo/app/blobs/{digest}", at.base))
                .send()
                .await
                .unwrap();
            assert_eq!(head.status(), 404);
        }
        assert!(
            blob_files(&r.root("us")).is_empty(),
            "{:?}",
            blob_files(&r.root("us"))
        );
        assert!(blob_files(&r.root("eu")).is_empty());
        let mut uploads = 0;
        if let Ok(rd) = std::fs::read_dir(r.root("us").join("uploads")) {
            uploads = rd.count();
        }
        assert_eq!(uploads, 0, "no upload session data left");
    }
    // eu back: the same push succeeds.
    r.switches["eu"].set(Fault::None);
    r.eu.registry.health().record_success(&id("eu"));
    r.us.registry.health().record_success(&id("eu"));
    let resp = r.push_blob(&r.us, "demo/app", &data).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let blob = r
        .store
        .get_blob(&digest.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob.locations.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_refused_sqlite() {
    durability_all_refuses_when_a_site_is_down(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_refused_postgres() {
    durability_all_refuses_when_a_site_is_down(Db::Postgres).await;
}

/// A mount is acknowledged once enough locations hold the blob, like a push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_applies_to_mounts() {
    // Pushed with async durability first: only us holds it.
    let r = Regions::new(Db::Sqlite, Durability::Async, None).await;
    let data = b"mounted layer".to_vec();
    assert_eq!(r.push_blob(&r.us, "demo/src", &data).await.status(), 201);
    drop(r.us);
    let store = r.store.clone();
    let digest = sha256(&data);
    let regions = Regions {
        us: serve(rebuild(&store, &r.dir, &r.switches, Durability::All), None).await,
        ..r
    };
    let mount = |to: &'static str| {
        regions.client.post(format!(
            "{}/v2/{to}/blobs/uploads/?mount={digest}&from=demo/src",
            regions.us.base
        ))
    };
    regions.switches["eu"].set(Fault::Error);
    let resp = mount("demo/dst").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(regions
        .store
        .repository_blob(&"demo/dst".parse().unwrap(), &digest.parse().unwrap())
        .await
        .unwrap()
        .is_none());
    regions.switches["eu"].set(Fault::None);
    regions.us.registry.health().record_success(&id("eu"));
    let resp = mount("demo/dst").send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let blob = store
        .get_blob(&digest.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob.locations.len(), 2);
}

fn rebuild(
    store: &SqlMetadataStore,
    dir: &tempfile::TempDir,
    switches: &BTreeMap<&'static str, FaultSwitch>,
    durability: Durability,
) -> Registry {
    let mut faults = FaultLayer::new();
    for (name, switch) in switches {
        faults = faults.location(id(name), switch.clone());
    }
    let mut builder = Registry::builder(Arc::new(store.clone()))
        .layer(faults)
        .preference([id("us"), id("eu")])
        .default_locations([id("us"), id("eu")])
        .replicate_to([id("us"), id("eu")])
        .durability(durability);
    for name in ["us", "eu"] {
        let storage: Arc<dyn StorageEngine> =
            Arc::new(OpendalStorage::fs(&dir.path().join(name), name).unwrap());
        builder = builder.location(id(name), storage);
    }
    builder.finish().unwrap()
}
