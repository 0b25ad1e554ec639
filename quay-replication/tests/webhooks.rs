//! Replication webhooks against a real HTTP receiver on loopback that is down at first: the
//! "image fully replicated" event fires once per image and the "dead-lettered" event once per
//! dead job, retried until the receiver answers, with two instances' runners (and a worker)
//! working on one database, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quay_core::config::WebhookConfig;
use quay_core::events::{EventStore, BLOB_DEAD_LETTERED, IMAGE_REPLICATED};
use quay_core::{
    ByteStream, Digest, JobKind, JobQueue, JobSpec, LocationId, Reference, Registry,
    RepositoryName, RetryPolicy, StorageEngine,
};
use quay_replication::webhooks::Webhooks;
use quay_replication::worker::WorkerConfig;
use quay_replication::Background;
use quay_storage::testkit::postgres::fresh_database;
use quay_storage::{OpendalStorage, SqlJobQueue, SqlMetadataStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

fn body(data: &[u8]) -> ByteStream {
    Box::pin(futures::stream::iter(vec![Ok(Bytes::copy_from_slice(
        data,
    ))]))
}

/// What the receiver got: (event id header, body), in order.
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// A minimal HTTP/1.1 receiver on `addr`: answers 200 to every POST and records it.
async fn receiver(listener: tokio::net::TcpListener, received: Received) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let event_id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-quay-event-id:"))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default();
            let json: serde_json::Value =
                serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
            received.lock().unwrap().push((event_id, json));
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
    }
}

async fn fires_once_retried_while_down(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pg = if postgres {
        Some(
            fresh_database()
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is needed for this test: {e}")),
        )
    } else {
        None
    };
    let url = pg.as_ref().map_or_else(
        || format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
        |db| db.url.clone(),
    );
    let store = SqlMetadataStore::connect(&url).await.unwrap();
    let mut storages: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
    for name in ["us", "eu"] {
        storages.insert(
            id(name),
            Arc::new(OpendalStorage::fs(&dir.path().join(name), name).unwrap()),
        );
    }
    let registry = |pref: [&str; 2]| {
        storages
            .iter()
            .fold(
                Registry::builder(Arc::new(store.clone()))
                    .preference(pref.iter().map(|p| id(p)))
                    .default_locations([id("us"), id("eu")])
                    .replicate_to([id("us"), id("eu")]),
                |b, (l, s)| b.location(l.clone(), s.clone()),
            )
            .finish()
            .unwrap()
    };
    let (us, eu) = (registry(["us", "eu"]), registry(["eu", "us"]));

    // The receiver's port, closed for now: deliveries are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = WebhookConfig {
        url: format!("http://127.0.0.1:{port}/hook"),
        events: vec![IMAGE_REPLICATED.into(), BLOB_DEAD_LETTERED.into()],
        timeout_secs: 2,
        max_attempts: 50,
        secret: None,
    };

    // A dead-lettered job, before anything else is queued.
    let dead_queue = SqlJobQueue::new(
        &store,
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
    );
    let lost = Digest::sha256_of(b"a blob that never existed");
    dead_queue
        .enqueue(&[JobSpec {
            kind: JobKind::Replicate,
            digest: lost.clone(),
            target: id("eu"),
        }])
        .await
        .unwrap();
    let lease = dead_queue
        .claim(1, Duration::from_secs(10))
        .await
        .unwrap()
        .pop()
        .unwrap();
    dead_queue.fail(&lease, "the source is gone").await.unwrap();
    assert_eq!(dead_queue.stats().await.unwrap().dead, 1);

    // Two images, pushed to us.
    let repo: RepositoryName = "demo/app".parse().unwrap();
    let mut images = Vec::new();
    for (tag, layer) in [("v1", &b"layer one"[..]), ("v2", &b"layer two"[..])] {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        for blob in [&config[..], layer] {
            us.put_blob(&repo, &Digest::sha256_of(blob), body(blob))
                .await
                .unwrap();
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": Digest::sha256_of(config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": Digest::sha256_of(layer), "size": layer.len()}],
        }))
        .unwrap();
        let put = us
            .put_manifest(
                &repo,
                &Reference::Tag(tag.parse().unwrap()),
                Some("application/vnd.oci.image.manifest.v1+json"),
                manifest.into(),
            )
            .await
            .unwrap();
        images.push(put.digest);
    }

    // Two instances, each with a worker and a webhook runner.
    let fast = |r: &Registry| {
        Webhooks::new(r.clone(), Arc::new(store.clone()), vec![hook.clone()])
            .interval(Duration::from_millis(100))
    };
    let worker = WorkerConfig {
        poll_interval: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    let handles = [
        Background::new(us.clone())
            .worker(worker.clone())
            .webhooks(fast(&us))
            .spawn(futures::future::pending()),
        Background::new(eu.clone())
            .worker(worker)
            .webhooks(fast(&eu))
            .spawn(futures::future::pending()),
    ];
    assert!(handles[0].parts().contains(&"webhooks"));

    // While the receiver is down: events recorded, deliveries failing and rescheduled.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = store.deliveries("").await.unwrap();
        if states.len() == 3 && states.iter().all(|s| s.attempts >= 1) {
            assert!(states.iter().all(|s| s.delivered_at.is_none()));
            assert!(states
                .iter()
                .all(|s| s.last_error.as_deref() == Some("cannot connect to the receiver")));
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempts: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The receiver comes up on that port.
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(receiver(listener, received.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = store.deliveries("").await.unwrap();
        if states.len() == 3 && states.iter().all(|s| s.delivered_at.is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More passes of both runners change nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for h in handles {
        h.stop().await;
    }
    server.abort();

    let got = received.lock().unwrap().clone();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (event_id, _) in &got {
        *by_id.entry(event_id.clone()).or_default() += 1;
    }
    assert_eq!(got.len(), 3, "one delivery per event: {got:#?}");
    assert!(by_id.values().all(|n| *n == 1), "{by_id:?}");
    for digest in &images {
        let (_, json) = got
            .iter()
            .find(|(_, j)| j["event"] == IMAGE_REPLICATED && j["digest"] == digest.to_string())
            .unwrap_or_else(|| panic!("no event for {digest}: {got:#?}"));
        assert_eq!(json["repository"], "demo/app");
        assert_eq!(json["blobs"], 2);
        assert_eq!(json["locations"], serde_json::json!(["us", "eu"]));
        // And the image is indeed complete.
        assert!(
            us.image_status(&repo, &Reference::Digest(digest.clone()))
                .await
                .unwrap()
                .complete
        );
    }
    let (_, dead) = got
        .iter()
        .find(|(_, j)| j["event"] == BLOB_DEAD_LETTERED)
        .unwrap();
    assert_eq!(dead["digest"], lost.to_string());
    assert_eq!(dead["target"], "eu");
    assert_eq!(dead["error"], "the source is gone");

    drop((us, eu, store));
    if let Some(db) = pg {
        db.drop_database().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_fires_once_per_image_sqlite() {
    fires_once_retried_while_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_fires_once_per_image_postgres() {
    fires_once_retried_while_down(true).await;
}
