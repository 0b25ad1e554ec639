//! How many storage operations a push costs, counted through the metrics layer
//! (`quay_storage_operation_duration_seconds_count`), on the filesystem and on S3 (`s3s-fs`
//! in process).
//!
//! Each test uses locations of its own name, so the counts of one test are not mixed with
//! another's even when they share the process's recorder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeMap;
use std::sync::Arc;

use quay_core::{LocationId, Registry, StorageEngine};
use quay_storage::layers::MetricsLayer;
use quay_storage::testkit::s3::S3TestServer;
use quay_storage::{OpendalStorage, SqlMetadataStore};
use sha2::Digest as _;

/// Operation counts of one location: operation -> outcome -> count.
type Counts = BTreeMap<(String, String), f64>;

fn counts(render: &quay_http::MetricsRender, location: &str) -> Counts {
    let mut out = Counts::new();
    for line in render().lines() {
        let Some(rest) = line.strip_prefix("quay_storage_operation_duration_seconds_count{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        if label("location") != location {
            continue;
        }
        out.insert(
            (label("operation"), label("outcome")),
            value.trim().parse().unwrap(),
        );
    }
    out
}

/// What happened between two readings, without the zero rows.
fn since(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

fn ops(list: &[(&str, f64)]) -> Counts {
    list.iter()
        .map(|(op, n)| ((op.to_string(), "ok".to_string()), *n))
        .collect()
}

struct Instance {
    base: String,
    client: reqwest::Client,
    registry: Registry,
    _task: tokio::task::JoinHandle<()>,
}

async fn serve(
    db_url: &str,
    location: &str,
    engine: Arc<dyn StorageEngine>,
    render: quay_http::MetricsRender,
) -> Instance {
    let metadata = SqlMetadataStore::connect(db_url).await.unwrap();
    let id: LocationId = location.parse().unwrap();
    let registry = Registry::builder(Arc::new(metadata))
        .location(id.clone(), engine)
        .layer(MetricsLayer)
        .preference([id])
        .finish()
        .unwrap();
    let app = quay_http::Quay::builder(registry.clone())
        .metrics(render)
        .build()
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    Instance {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        registry,
        _task: task,
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

impl Instance {
    /// `POST ?digest=` with the body.
    async fn post_blob(&self, repo: &str, data: &[u8], digest: &str) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/v2/{repo}/blobs/uploads/?digest={digest}",
                self.base
            ))
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// `POST`, then `PUT ?digest=` with the body.
    async fn post_put_blob(&self, repo: &str, data: &[u8], digest: &str) -> reqwest::Response {
        let started = self
            .client
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        self.client
            .put(format!("{}{location}?digest={digest}", self.base))
            .body(data.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn get_blob(&self, repo: &str, digest: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .send()
            .await
            .unwrap()
    }
}

/// Every monolithic push (both request shapes, small and large) is one write and nothing
/// else; a digest mismatch stores nothing, answers `DIGEST_INVALID` and leaves no session.
async fn monolithic_push_is_one_write(location: &str, engine: Arc<dyn StorageEngine>) {
    let render = quay_http::prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
    let quay = serve(&db, location, engine.clone(), render.clone()).await;

    for (n, size) in [64 * 1024, 9 * 1024 * 1024].into_iter().enumerate() {
        for post_only in [true, false] {
            let data = blob(size, n as u8 * 2 + post_only as u8);
            let digest = sha256(&data);
            let before = counts(&render, location);
            let resp = if post_only {
                quay.post_blob("ops/mono", &data, &digest).await
            } else {
                quay.post_put_blob("ops/mono", &data, &digest).await
            };
            assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
            let done = since(&before, &counts(&render, location));
            assert_eq!(
                done,
                ops(&[("write", 1.0)]),
                "{size} bytes, POST only: {post_only}"
            );
            let got = quay.get_blob("ops/mono", &digest).await;
            assert_eq!(got.status(), 200);
            assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
        }
    }

    // The wrong digest: nothing stored, no session left, the error of the spec.
    for size in [1000, 9 * 1024 * 1024] {
        let data = blob(size, 99);
        let wrong = sha256(b"something else");
        for post_only in [true, false] {
            let resp = if post_only {
                quay.post_blob("ops/mono", &data, &wrong).await
            } else {
                quay.post_put_blob("ops/mono", &data, &wrong).await
            };
            assert_eq!(resp.status(), 400);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID", "{body}");
            let wrong_digest: quay_core::Digest = wrong.parse().unwrap();
            assert!(
                engine.stat(&wrong_digest.object_path()).await.is_err(),
                "no object at the claimed digest"
            );
            let right: quay_core::Digest = sha256(&data).parse().unwrap();
            assert!(
                engine.stat(&right.object_path()).await.is_err(),
                "no object at the real digest either"
            );
        }
    }
    let sweep = quay.registry.expire_uploads(i64::MAX, true).await.unwrap();
    assert_eq!(
        sweep.sessions, 0,
        "a failed monolithic push leaves no session"
    );
    assert_eq!(
        engine.list("uploads/").await.unwrap(),
        Vec::<String>::new(),
        "and no upload data"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monolithic_push_on_fs_is_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(OpendalStorage::fs(&dir.path().join("storage"), "fs-ops").unwrap());
    monolithic_push_is_one_write("fs-ops", engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn monolithic_push_on_s3_is_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path().join("s3"), &["ops"]).unwrap();
    let id: LocationId = "s3-ops".parse().unwrap();
    let engine =
        quay_storage::build_location(&id, &server.driver_config("ops", "registry")).unwrap();
    monolithic_push_is_one_write("s3-ops", engine).await;
}

const PART: usize = quay_core::registry::MULTIPART_PART_SIZE as usize;

/// Leftovers of multipart uploads in an `s3s-fs` folder (it keeps parts beside the buckets).
fn multipart_leftovers(root: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

impl Instance {
    async fn start_session(&self, repo: &str) -> String {
        let started = self
            .client
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        started.headers()["location"].to_str().unwrap().to_owned()
    }

    /// One `PATCH` at `offset`; returns the session's size after it.
    async fn patch(&self, location: &str, offset: usize, chunk: &[u8]) -> u64 {
        let resp = self
            .client
            .patch(format!("{}{location}", self.base))
            .header(
                "content-range",
                format!("{offset}-{}", offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        let range = resp.headers()["range"].to_str().unwrap().to_owned();
        range.split('-').nth(1).unwrap().parse::<u64>().unwrap() + 1
    }

    async fn put_digest(&self, location: &str, digest: &str) -> reqwest::Response {
        self.client
            .put(format!("{}{location}?digest={digest}", self.base))
            .send()
            .await
            .unwrap()
    }
}

/// A chunked push of N parts on S3 is N part uploads and one completion, one server-side copy
/// to the blob's path, no write and no read through the registry; nothing is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_push_on_s3_streams_into_one_multipart_upload() {
    let render = quay_http::prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path().join("s3"), &["ops"]).unwrap();
    let id: LocationId = "s3-chunked".parse().unwrap();
    let engine =
        quay_storage::build_location(&id, &server.driver_config("ops", "registry")).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
    let quay = serve(&db, "s3-chunked", engine.clone(), render.clone()).await;

    let n = 3;
    let data = blob(n * PART, 7);
    let digest = sha256(&data);
    let before = counts(&render, "s3-chunked");
    let location = quay.start_session("ops/chunked").await;
    for i in 0..n {
        let size = quay
            .patch(&location, i * PART, &data[i * PART..(i + 1) * PART])
            .await;
        assert_eq!(size as usize, (i + 1) * PART);
    }
    let resp = quay.put_digest(&location, &digest).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let done = since(&before, &counts(&render, "s3-chunked"));
    let get = |op: &str| {
        done.get(&(op.to_string(), "ok".to_string()))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(get("multipart_part"), n as f64, "{done:?}");
    assert_eq!(get("multipart_complete"), 1.0, "{done:?}");
    assert!(get("copy") <= 1.0, "{done:?}");
    assert_eq!(get("write"), 0.0, "{done:?}");
    assert_eq!(get("read"), 0.0, "no byte read back: {done:?}");
    assert!(done.keys().all(|(_, outcome)| outcome == "ok"), "{done:?}");

    let got = quay.get_blob("ops/chunked", &digest).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    assert_eq!(engine.list("uploads/").await.unwrap(), Vec::<String>::new());
    assert_eq!(multipart_leftovers(server.dir()), Vec::<String>::new());
}

/// Chunks of uneven sizes alternating between two instances on one database and one S3
/// location make one blob; a wrong digest at the end is refused and leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_upload_alternating_between_instances_on_s3() {
    let render = quay_http::prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path().join("s3"), &["ops"]).unwrap();
    let id: LocationId = "s3-alternate".parse().unwrap();
    let config = server.driver_config("ops", "registry");
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
    let a = serve(
        &db,
        "s3-alternate",
        quay_storage::build_location(&id, &config).unwrap(),
        render.clone(),
    )
    .await;
    let b = serve(
        &db,
        "s3-alternate",
        quay_storage::build_location(&id, &config).unwrap(),
        render.clone(),
    )
    .await;
    let sizes = [3 << 20, 7 << 20, 9 << 20, 1 << 20, 8 << 20];
    let total: usize = sizes.iter().sum();
    for wrong in [false, true] {
        let data = blob(total, 11 + wrong as u8);
        let digest = if wrong {
            sha256(b"not these bytes")
        } else {
            sha256(&data)
        };
        let location = a.start_session("ops/alternate").await;
        let mut offset = 0;
        for (i, size) in sizes.iter().enumerate() {
            let instance = if i % 2 == 0 { &a } else { &b };
            let now = instance
                .patch(&location, offset, &data[offset..offset + size])
                .await;
            offset += size;
            assert_eq!(now as usize, offset);
        }
        let resp = b.put_digest(&location, &digest).await;
        if wrong {
            assert_eq!(resp.status(), 400);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID", "{body}");
        } else {
            assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
            let got = a.get_blob("ops/alternate", &digest).await;
            assert_eq!(got.status(), 200);
            assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
        }
        let engine = a.registry.locations()[&id].clone();
        assert_eq!(engine.list("uploads/").await.unwrap(), Vec::<String>::new());
        assert_eq!(multipart_leftovers(server.dir()), Vec::<String>::new());
    }
}

/// An abandoned chunked upload on S3 expires with its multipart upload and its tail.
#[tokio::test(flavor = "multi_thread")]
async fn expired_chunked_upload_on_s3_aborts_its_multipart_upload() {
    let render = quay_http::prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path().join("s3"), &["ops"]).unwrap();
    let id: LocationId = "s3-expiry".parse().unwrap();
    let engine =
        quay_storage::build_location(&id, &server.driver_config("ops", "registry")).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
    let quay = serve(&db, "s3-expiry", engine.clone(), render).await;
    let location = quay.start_session("ops/expiry").await;
    let data = blob(PART + 1000, 3);
    quay.patch(&location, 0, &data).await;
    assert!(
        !multipart_leftovers(server.dir()).is_empty(),
        "a part is stored"
    );
    assert!(
        !engine.list("uploads/").await.unwrap().is_empty(),
        "a tail is stored"
    );

    let sweep = quay.registry.expire_uploads(i64::MAX, true).await.unwrap();
    assert_eq!(sweep.sessions, 1);
    assert_eq!(engine.list("uploads/").await.unwrap(), Vec::<String>::new());
    assert_eq!(multipart_leftovers(server.dir()), Vec::<String>::new());
}
