//! Push and pull throughput of one large blob through the HTTP API (SQLite + filesystem
//! location), next to a baseline measured in the same run: a plain file write then read of the
//! same bytes on the same disk. Figures are printed as MB/s and as a ratio to the baseline;
//! nothing is asserted (these machines are shared and noisy).
//!
//! `cargo bench -p quay-benches --bench push_pull` (size: `QUAY_BENCH_MIB`, default 256).

#![allow(clippy::expect_used)] // a benchmark: a failure should stop it loudly

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use quay_core::{LocationId, Registry, RegistryConfig, StorageEngine};
use quay_storage::{OpendalStorage, SqlMetadataStore};
use sha2::Digest as _;

const CHUNK: usize = 1024 * 1024;

fn chunk(i: usize) -> Bytes {
    // Cheap, non-repeating content (not all zeros, so nothing can shortcut it).
    let mut v = vec![0u8; CHUNK];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8;
    }
    Bytes::from(v)
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("QUAY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total = (mib * CHUNK) as u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let chunks: Vec<Bytes> = (0..16).map(chunk).collect();
    let mut hasher = sha2::Sha256::new();
    for i in 0..mib {
        hasher.update(&chunks[i % chunks.len()]);
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));

    // Baseline: write the bytes to a file, fsync-free, then read them back.
    let path = dir.path().join("baseline.bin");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path).expect("create");
        for i in 0..mib {
            f.write_all(&chunks[i % chunks.len()]).expect("write");
        }
    }
    let base_write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    {
        let mut f = std::fs::File::open(&path).expect("open");
        let mut buf = vec![0u8; CHUNK];
        while f.read(&mut buf).expect("read") > 0 {}
    }
    let base_read = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).expect("remove");

    // The registry, in-process on loopback.
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
    let metadata = SqlMetadataStore::connect(&db).await.expect("sqlite");
    let local: LocationId = "local".parse().expect("id");
    let mut locations: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
    locations.insert(
        local.clone(),
        Arc::new(OpendalStorage::fs(&dir.path().join("storage"), "local").expect("fs")),
    );
    let registry = Registry::new(
        Arc::new(metadata),
        locations,
        RegistryConfig::new(vec![local]),
    )
    .expect("registry");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            quay_http::Quay::builder(registry).build().router(),
        )
        .await;
    });
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");

    let t = Instant::now();
    let start = client
        .post(format!("{base}/v2/bench/blobs/uploads/"))
        .send()
        .await
        .expect("start");
    let location = start.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let body_chunks = chunks.clone();
    let stream = futures::stream::iter(0..mib)
        .map(move |i| Ok::<_, std::io::Error>(body_chunks[i % body_chunks.len()].clone()));
    let resp = client
        .put(format!("{base}{location}?digest={digest}"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("push");
    assert_eq!(resp.status(), 201, "push failed");
    let push = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let resp = client
        .get(format!("{base}/v2/bench/blobs/{digest}"))
        .send()
        .await
        .expect("pull");
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(c) = body.next().await {
        got += c.expect("chunk").len() as u64;
    }
    assert_eq!(got, total, "short pull");
    let pull = t.elapsed().as_secs_f64();

    println!("push_pull: one blob of {mib} MiB, SQLite + filesystem location, loopback HTTP");
    println!(
        "  baseline file write {:>8.1} MB/s   read {:>8.1} MB/s",
        mbps(total, base_write),
        mbps(total, base_read)
    );
    println!(
        "  registry push       {:>8.1} MB/s   (ratio to file write {:.2})",
        mbps(total, push),
        base_write / push
    );
    println!(
        "  registry pull       {:>8.1} MB/s   (ratio to file read  {:.2})",
        mbps(total, pull),
        base_read / pull
    );
}
