//! Push latency of one blob under push-time durability (`QUAY_REPLICATION_DURABILITY`):
//! `async` (the baseline of the same run), `quorum` and `all`, through the HTTP API of an
//! in-process registry on SQLite with three locations, on the filesystem or on three `s3s-fs`
//! servers on loopback. With three locations, `quorum` waits for one copy and `all` for two.
//!
//! Each push is a `POST` then one streamed `PUT ?digest=` of the whole blob; its latency runs
//! from the `POST` to the `201`. Each mode pushes `QUAY_BENCH_RUNS` (3) distinct blobs; the
//! median is printed with its ratio to `async`. Nothing is asserted.
//!
//! `cargo bench -p quay-benches --bench durability` (size: `QUAY_BENCH_MIB`, default 64;
//! backends: `QUAY_BENCH_PAIRS`, default `fs,s3`).

#![allow(clippy::expect_used)] // a benchmark: a failure should stop it loudly

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use quay_core::registry::Durability;
use quay_core::{LocationId, Registry, StorageEngine};
use quay_storage::testkit::s3::S3TestServer;
use quay_storage::{build_location, OpendalStorage, SqlMetadataStore};
use sha2::Digest as _;

const CHUNK: usize = 1024 * 1024;
const BUCKET: &str = "quay";

fn id(s: &str) -> LocationId {
    s.parse().expect("location id")
}

fn chunk(seed: usize, i: usize) -> Bytes {
    let mut v = vec![0u8; CHUNK];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(131) ^ i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8;
    }
    Bytes::from(v)
}

/// Pushes `mib` MiB of blob number `seed`; returns the seconds from POST to 201.
async fn push(client: &reqwest::Client, base: &str, mib: usize, seed: usize) -> f64 {
    let chunks: Vec<Bytes> = (0..8).map(|i| chunk(seed, i)).collect();
    let mut hasher = sha2::Sha256::new();
    for i in 0..mib {
        hasher.update(&chunks[i % chunks.len()]);
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
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
    let stream = futures::stream::iter(0..mib)
        .map(move |i| Ok::<_, std::io::Error>(chunks[i % chunks.len()].clone()));
    let resp = client
        .put(format!("{base}{location}?digest={digest}"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("push");
    assert_eq!(
        resp.status(),
        201,
        "push failed: {}",
        resp.text().await.unwrap_or_default()
    );
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (mib, runs) = (env("QUAY_BENCH_MIB", 64), env("QUAY_BENCH_RUNS", 3).max(1));
    let pairs = std::env::var("QUAY_BENCH_PAIRS").unwrap_or_else(|_| "fs,s3".to_owned());
    for backend in pairs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = ["a", "b", "c"];
        let mut servers = Vec::new();
        let mut locations: BTreeMap<LocationId, Arc<dyn StorageEngine>> = BTreeMap::new();
        for name in names {
            let storage: Arc<dyn StorageEngine> = match backend {
                "fs" => Arc::new(OpendalStorage::fs(&dir.path().join(name), name).expect("fs")),
                "s3" => {
                    let server =
                        S3TestServer::start(dir.path().join(format!("s3-{name}")), &[BUCKET])
                            .expect("S3 server");
                    let storage =
                        build_location(&id(name), &server.driver_config(BUCKET, "registry"))
                            .expect("S3 location");
                    servers.push(server);
                    storage
                }
                other => panic!("QUAY_BENCH_PAIRS: unknown backend {other:?} (fs, s3)"),
            };
            locations.insert(id(name), storage);
        }
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
        let store = SqlMetadataStore::connect(&db).await.expect("sqlite");
        println!(
            "durability: push latency of one {mib} MiB blob, SQLite + 3 {backend} locations, \
             loopback HTTP, median of {runs}"
        );
        let mut baseline = None;
        let mut seed = 0;
        for mode in [Durability::Async, Durability::Quorum, Durability::All] {
            let registry = locations
                .iter()
                .fold(
                    Registry::builder(Arc::new(store.clone()))
                        .preference(names.iter().map(|n| id(n)))
                        .default_locations(names.iter().map(|n| id(n)))
                        .replicate_to(names.iter().map(|n| id(n)))
                        .durability(mode),
                    |b, (l, s)| b.location(l.clone(), s.clone()),
                )
                .finish()
                .expect("registry");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let server = tokio::spawn(async move {
                let _ = axum::serve(
                    listener,
                    quay_http::Quay::builder(registry).build().router(),
                )
                .await;
            });
            let client = reqwest::Client::new();
            let mut times = Vec::new();
            for _ in 0..runs {
                seed += 1;
                times.push(push(&client, &base, mib, seed).await);
            }
            server.abort();
            let m = median(times.clone());
            let base_secs = *baseline.get_or_insert(m);
            let shown: Vec<String> = times.iter().map(|t| format!("{:.0}", t * 1000.0)).collect();
            println!(
                "  {:<7} {:>7.0} ms  ({:>6.1} MB/s, {:.2}x async's latency; runs: {} ms)",
                mode.as_str(),
                m * 1000.0,
                (mib * CHUNK) as f64 / 1e6 / m,
                m / base_secs,
                shown.join(", ")
            );
        }
        drop(servers);
    }
}
